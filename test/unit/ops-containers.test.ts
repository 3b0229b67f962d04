// Every container of the deployment examples starts a program its image has: the argv is worked
// out as Kubernetes and Compose do it (command replaces ENTRYPOINT, args/command replace CMD), then
// checked against the image. Our image is read from deploy/compose/Dockerfile (its base image's
// programs, the files it copies); third-party images by their documented entrypoints.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { parseConfig } from "../../sidecar/src/config.ts";
import { ROOT } from "../../dev/paths.ts";

const read = (...p: string[]) => readFileSync(join(ROOT, ...p), "utf8");
type Any = any; // parsed YAML

interface Image {
  entrypoint: string[];
  cmd: string[];
  /** Programs found on PATH in the image. */
  programs: Set<string>;
  /** Path of a file in the image -> the file in this repository it is copied from. */
  files: (path: string) => string | null;
  workdir: string;
}

/** Our image: the last stage of the Dockerfile (JSON-form ENTRYPOINT/CMD, COPY lines). */
function ourImage(): Image {
  const lines = read("deploy", "compose", "Dockerfile").split("\n");
  const last = lines
    .map((l, i) => (/^FROM\s/.test(l) ? i : -1))
    .filter((i) => i >= 0)
    .pop()!;
  const stage = lines.slice(last);
  const from = /^FROM\s+(\S+)/.exec(stage[0]!)![1]!;
  // The official node images (Debian based) have node, npm and the Debian base's coreutils and sh.
  expect(from).toMatch(/^node:\d+-(bookworm|trixie)(-slim)?$/);
  const programs = new Set(["node", "npm", "npx", "sh", "cp", "cat", "ls", "mkdir"]);
  const json = (key: string): string[] | undefined => {
    const l = stage.filter((x) => x.startsWith(`${key} `)).pop();
    return l === undefined ? undefined : JSON.parse(l.slice(key.length + 1));
  };
  const workdir = /^WORKDIR\s+(\S+)/.exec(stage.find((l) => l.startsWith("WORKDIR "))!)![1]!;
  const copies: Array<{ src: string[]; dest: string }> = [];
  for (const l of stage) {
    const m = /^COPY\s+(?!--from)(.+)$/.exec(l);
    if (!m) continue;
    const parts = m[1]!.trim().split(/\s+/);
    copies.push({ src: parts.slice(0, -1), dest: parts.at(-1)! });
  }
  const files = (path: string): string | null => {
    const abs = path.startsWith("/") ? path : join(workdir, path);
    for (const c of copies) {
      const dest = c.dest.startsWith("/") ? c.dest : join(workdir, c.dest);
      for (const src of c.src) {
        // `COPY a b dir/`: files land in dir by their base name; `COPY dir ./dir`: the tree.
        if (c.dest.endsWith("/") && abs === join(dest, src.split("/").pop()!)) return src;
        if (!c.dest.endsWith("/") && (abs === dest || abs.startsWith(dest + "/")))
          return join(src, abs.slice(dest.length));
      }
    }
    return null;
  };
  return { entrypoint: json("ENTRYPOINT") ?? [], cmd: json("CMD") ?? [], programs, files, workdir };
}

const OUR_IMAGE = ourImage();

/** Third-party images: ENTRYPOINT, CMD, and what their entrypoint script runs. */
const OTHER_IMAGES: Record<string, { entrypoint: string[]; cmd: string[]; runs: (argv: string[]) => string }> = {
  // traefik's /entrypoint.sh runs `traefik "$@"` when the first argument is a flag, else the argument.
  traefik: {
    entrypoint: ["/entrypoint.sh"],
    cmd: ["traefik"],
    runs: (a) => (a[1]?.startsWith("-") ? "traefik" : a[1]!),
  },
  // redis's docker-entrypoint.sh runs `redis-server "$@"` for a flag or a .conf file, else the argument.
  redis: {
    entrypoint: ["docker-entrypoint.sh"],
    cmd: ["redis-server"],
    runs: (a) => (a[1]?.startsWith("-") ? "redis-server" : a[1]!),
  },
};
const OTHER_PROGRAMS: Record<string, string[]> = { traefik: ["traefik"], redis: ["redis-server", "redis-cli"] };

/** Kubernetes: command replaces ENTRYPOINT (and drops CMD), args replace CMD. */
const k8sArgv = (img: { entrypoint: string[]; cmd: string[] }, c: Any): string[] =>
  c.command ? [...c.command, ...(c.args ?? [])] : [...img.entrypoint, ...(c.args ?? img.cmd)];
/** Compose: entrypoint replaces ENTRYPOINT (and drops CMD), command replaces CMD. */
const composeArgv = (img: { entrypoint: string[]; cmd: string[] }, s: Any): string[] =>
  s.entrypoint ? [...[s.entrypoint].flat(), ...(s.command ?? [])] : [...img.entrypoint, ...(s.command ?? img.cmd)];

/** Node's options that take the next argument as their value. */
const NODE_OPTIONS_WITH_VALUE = new Set(["--import", "--require", "-r", "--loader"]);

/** Checks an argv for our image; returns the script or program it runs. */
function checkOurs(argv: string[], what: string): string {
  expect(argv.length, `${what}: an empty command`).toBeGreaterThan(0);
  const [prog, ...rest] = argv;
  expect(prog!.startsWith("-"), `${what} would exec the flag ${prog}`).toBe(false);
  expect(OUR_IMAGE.programs.has(prog!), `${what}: ${prog} is not a program of the image`).toBe(true);
  if (prog === "node") {
    let i = 0;
    while (rest[i]?.startsWith("-")) i += NODE_OPTIONS_WITH_VALUE.has(rest[i]!) ? 2 : 1;
    const script = rest[i];
    expect(script, `${what}: node without a script`).toBeTruthy();
    const src = OUR_IMAGE.files(script!);
    expect(src, `${what}: ${script} is not copied into the image`).toBeTruthy();
    expect(existsSync(join(ROOT, src!)), `${what}: ${src} missing in the repository`).toBe(true);
    return script!;
  }
  if (prog === "cp") {
    for (const f of rest.slice(0, -1)) {
      const src = OUR_IMAGE.files(f);
      expect(src, `${what}: ${f} is not in the image`).toBeTruthy();
    }
  }
  return prog!;
}

const SIDECAR_SCRIPT = "bin/mcp-affinity-sidecar.js";

/** The sidecar accepts the arguments and environment it is given (secrets as placeholders). */
function sidecarAccepts(argv: string[], env: Record<string, string>, what: string): void {
  const script = argv.indexOf(SIDECAR_SCRIPT);
  expect(() => parseConfig(argv.slice(script + 1), env), what).not.toThrow();
}

describe("the image (deploy/compose/Dockerfile)", () => {
  it("has an empty ENTRYPOINT and the sidecar as CMD", () => {
    expect(OUR_IMAGE.entrypoint).toEqual([]);
    expect(checkOurs(OUR_IMAGE.cmd, "CMD")).toBe(SIDECAR_SCRIPT);
  });

  it("the check catches the crash loop of args without a command", () => {
    const argv = k8sArgv(OUR_IMAGE, { args: ["--dir=/x"] });
    expect(argv).toEqual(["--dir=/x"]);
    expect(() => checkOurs(argv, "args only")).toThrow(/would exec the flag --dir=\/x/);
  });
});

describe("deploy/kubernetes", () => {
  const values: Any = parseYaml(read("deploy", "kubernetes", "traefik-values.yaml"));
  const containers: Any[] = [...values.deployment.initContainers, ...values.deployment.additionalContainers];
  const manifests = (parseAllDocuments(read("deploy", "kubernetes", "mcp-nodes.yaml")).map((d) => d.toJS()) as Any[])
    .filter((d) => d?.spec?.template?.spec)
    .flatMap((d) => [...(d.spec.template.spec.initContainers ?? []), ...d.spec.template.spec.containers]);

  it("every container of our image in the Helm values and manifests execs a program of the image", () => {
    const ours = [...containers, ...manifests].filter((c) => /\/mcp-affinity:/.test(c.image));
    expect(ours.length).toBeGreaterThanOrEqual(3);
    for (const c of ours) checkOurs(k8sArgv(OUR_IMAGE, c), `container ${c.name}`);
  });

  it("the sidecar container runs the sidecar with settings it accepts", () => {
    const c = containers.find((x) => x.name === "mcp-affinity-sidecar");
    const argv = k8sArgv(OUR_IMAGE, c);
    expect(checkOurs(argv, c.name)).toBe(SIDECAR_SCRIPT);
    // Secrets the operator creates (kustomization.yaml): a Redis URL and a token.
    const secret = (e: Any) =>
      e.valueFrom.secretKeyRef.key === "url" ? "redis://redis.example:6379" : "a-token-of-at-least-16-characters";
    const env = Object.fromEntries(c.env.map((e: Any) => [e.name, e.value ?? secret(e)]));
    sidecarAccepts(argv, env, c.name);
  });
});

describe("deploy/compose", () => {
  const compose: Any = parseYaml(read("deploy", "compose", "docker-compose.yml"), { merge: true });

  it("every service execs a program its image has", () => {
    for (const [name, s] of Object.entries(compose.services as Record<string, Any>)) {
      if (s.build) {
        expect(s.build.dockerfile, name).toBe("deploy/compose/Dockerfile");
        checkOurs(composeArgv(OUR_IMAGE, s), `service ${name}`);
        continue;
      }
      const key = Object.keys(OTHER_IMAGES).find((k) => String(s.image).startsWith(`${k}:`));
      expect(key, `service ${name}: image ${s.image} unknown to this test`).toBeTruthy();
      const img = OTHER_IMAGES[key!]!;
      const argv = composeArgv(img, s);
      expect(OTHER_PROGRAMS[key!]).toContain(img.runs(argv));
    }
  });

  it("the sidecar service runs the sidecar with settings it accepts", () => {
    const s = compose.services.sidecar;
    const argv = composeArgv(OUR_IMAGE, s);
    expect(checkOurs(argv, "sidecar")).toBe(SIDECAR_SCRIPT);
    sidecarAccepts(argv, s.environment, "sidecar");
  });
});
