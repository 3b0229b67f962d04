#!/usr/bin/env bash
# Builds a pinned Go command from the Go module proxy and caches it as .cache/bin/<name>-<version>.
# Usage: install-go-tool.sh <name> <package@version>; prints the binary's path.
# The binary is written under a temporary name and renamed, so concurrent installs (the cache is
# shared between working copies) never see a half-written file.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
name=$1 pkg=$2
version=${pkg##*@}
out="$here/.cache/bin/$name-$version"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || { echo "install-go-tool: Go is needed to build $name $version" >&2; exit 2; }
mkdir -p "$here/.cache/bin"
gobin=$(mktemp -d "$here/.cache/bin/.$name-build.XXXXXX")
trap 'rm -rf "$gobin"' EXIT
echo "install-go-tool: building $pkg (module proxy)" >&2
GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" "$pkg" >&2
mv "$gobin/$name" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "$out"
