#!/usr/bin/env bash
# Builds the pinned Traefik release from the Go module proxy and caches the binary in .cache/bin.
# `go install traefik@version` refuses the module's replace directives, so we download the module
# source and build ./cmd/traefik in a writable copy of it.
# Honours TRAEFIK_BIN (a binary the user already has) and a `traefik` on PATH of the pinned version.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=${TRAEFIK_VERSION:-v3.7.9}
out="$here/.cache/bin/traefik-$version"

if [ -n "${TRAEFIK_BIN:-}" ]; then
  [ -x "$TRAEFIK_BIN" ] || { echo "install-traefik: TRAEFIK_BIN=$TRAEFIK_BIN is not an executable file" >&2; exit 2; }
  echo "$TRAEFIK_BIN"; exit 0
fi
if [ -x "$out" ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "install-traefik: Go is needed to build Traefik $version" >&2; exit 2; }
work=$(mktemp -d "$here/.cache/traefik-build.XXXXXX" 2>/dev/null || { mkdir -p "$here/.cache"; mktemp -d "$here/.cache/traefik-build.XXXXXX"; })
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
echo "install-traefik: downloading github.com/traefik/traefik/v3@$version (module proxy)" >&2
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/traefik/traefik/v3@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
[ -d "$dir" ] || { echo "install-traefik: module download gave no source directory" >&2; exit 1; }
cp -r "$dir" "$work/src"; chmod -R u+w "$work/src"
# The module zip leaves out the nested module that go.mod replaces with ./pkg/config/dynamic/ext
# (a separate module is never packed into its parent's zip). It only declares two extension
# points, both empty in the upstream release; give the replace directive an empty package.
ext="$work/src/pkg/config/dynamic/ext"
if [ ! -f "$ext/go.mod" ]; then
  mkdir -p "$ext"
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' > "$ext/go.mod"
  printf 'package ext\n\n// HTTP extends dynamic.HTTP (empty in the open-source build).\ntype HTTP struct{}\n\n// Router extends dynamic.Router (empty in the open-source build).\ntype Router struct{}\n' > "$ext/ext.go"
fi
echo "install-traefik: building (several minutes on 2 cores)" >&2
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${version#v}" -o "$out.tmp" ./cmd/traefik)
mv "$out.tmp" "$out"
echo "$out"
