// The deployment examples (deploy/kubernetes, deploy/compose) must configure the plugin and the
// sticky cookie exactly as traefik/dynamic.yml does: that file is what the end-to-end tests run.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { ROOT } from "../../dev/paths.ts";
import { renderDynamic, renderStatic, type RenderVars } from "../../dev/traefik-config.ts";

const read = (...p: string[]) => readFileSync(join(ROOT, ...p), "utf8");
type Any = any; // parsed YAML

/** The templates as the local stack renders them (with the plugin, template windows), parsed. */
function templates(): { dyn: Any; stat: Any } {
  const vars: RenderVars = {
    bind: "127.0.0.1",
    ports: { redis: 4, sidecar: 5, http: 1, https: 2, api: 3, nodes: [6] },
    dir: "/run",
    shared: "/shared",
    certFile: "/c.pem",
    keyFile: "/k.pem",
    logLevel: "INFO",
    nodeUrls: ["http://127.0.0.1:1"],
  };
  return {
    dyn: parseYaml(renderDynamic(vars, { plugin: true, healthIntervalMs: 1000, healthTimeoutMs: 1000 })),
    stat: parseYaml(renderStatic(vars, { accessLog: false })),
  };
}

/** Settings as the plugin sees them: the file provider gives strings, the CRD typed values. */
const normalize = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
const lowerKeys = (o: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k.toLowerCase(), typeof v === "string" ? v.toLowerCase() : v]));

const { dyn, stat } = templates();
const ref = {
  plugin: dyn.http.middlewares["mcp-affinity"].plugin["mcp-affinity"] as Record<string, unknown>,
  sticky: dyn.http.services.mcp.loadBalancer.sticky.cookie as Record<string, unknown>,
  mcpRouter: dyn.http.routers.mcp,
  defaultRouter: dyn.http.routers.default,
  // The /mcp service has no health check of Traefik's (the sidecar probes); the round-robin one does.
  mcpHealth: dyn.http.services.mcp.loadBalancer.healthCheck,
  health: dyn.http.services.nodes.loadBalancer.healthCheck,
  local: stat.experimental.localPlugins["mcp-affinity"],
};

describe("the reference (traefik/ templates)", () => {
  it("has what ADR-0066 asks for", () => {
    expect(ref.sticky).toEqual({ name: "_mcp_backend", httpOnly: true, secure: true, sameSite: "strict" });
    expect(ref.mcpRouter.rule).toBe("PathPrefix(`/mcp`)");
    expect(ref.mcpRouter.middlewares).toEqual(["mcp-affinity"]);
    expect(ref.mcpRouter.priority).toBeGreaterThan(ref.defaultRouter.priority);
    // Wrapped sessions: the same plugin and service, and the server's own id dropped from answers.
    const wrapped = dyn.http.routers["mcp-wrapped"];
    expect(wrapped.rule).toBe("PathPrefix(`/mcp`) && HeaderRegexp(`Mcp-Session-Id`, `^mw1\\.`)");
    expect(wrapped.middlewares).toEqual(["mcp-affinity", "mcp-wrapped-answers"]);
    expect(wrapped.service).toBe(ref.mcpRouter.service);
    expect(wrapped.priority).toBeGreaterThan(ref.mcpRouter.priority);
    expect(dyn.http.middlewares["mcp-wrapped-answers"]).toEqual({
      headers: { customResponseHeaders: { "Mcp-Session-Id": "" } },
    });
    expect(dyn.http.services.nodes.loadBalancer.sticky).toBeUndefined();
    expect(ref.plugin.cookieName).toBe(ref.sticky.name);
    const [, guest] = String(ref.local.settings.mounts[0]).split(":");
    expect(guest).toBe(ref.plugin.viewDir);
  });
});

describe("deploy/compose", () => {
  const cdyn: Any = parseYaml(read("deploy", "compose", "dynamic.yml"));
  const cstat: Any = parseYaml(read("deploy", "compose", "traefik.yml"));
  const compose: Any = parseYaml(read("deploy", "compose", "docker-compose.yml"), { merge: true });

  it("plugin settings and sticky cookie match traefik/dynamic.yml", () => {
    expect(normalize(cdyn.http.middlewares["mcp-affinity"].plugin["mcp-affinity"])).toEqual(normalize(ref.plugin));
    expect(cdyn.http.services.mcp.loadBalancer.sticky.cookie).toEqual(ref.sticky);
    expect(ref.mcpHealth).toBeUndefined();
    expect(cdyn.http.services.mcp.loadBalancer.healthCheck).toBeUndefined();
    expect(cdyn.http.services.nodes.loadBalancer.healthCheck.path).toBe(ref.health.path);
    expect(cdyn.http.middlewares["mcp-wrapped-answers"]).toEqual(dyn.http.middlewares["mcp-wrapped-answers"]);
    for (const r of ["mcp", "mcp-wrapped", "default"]) {
      const { rule, priority, middlewares, entryPoints } = cdyn.http.routers[r];
      const want = dyn.http.routers[r];
      expect({ rule, priority, middlewares, entryPoints }, r).toEqual({
        rule: want.rule,
        priority: want.priority,
        middlewares: want.middlewares,
        entryPoints: want.entryPoints,
      });
    }
    expect(cdyn.http.services.nodes.loadBalancer.sticky).toBeUndefined();
  });

  it("the plugin is loaded and mounted as the templates do it", () => {
    const local = cstat.experimental.localPlugins["mcp-affinity"];
    expect(local.moduleName).toBe(ref.local.moduleName);
    const [host, guest] = String(local.settings.mounts[0]).split(":");
    expect(guest).toBe(ref.plugin.viewDir);
    const traefik = compose.services.traefik;
    expect(traefik.volumes).toContain(`../../plugin/build/local:/plugins-local/src/${ref.local.moduleName}:ro`);
    // Traefik and the sidecar share one volume, at the mount's host side and the sidecar's --dir.
    const shared = traefik.volumes.find((v: string) => v.endsWith(`:${host}`));
    expect(shared, "Traefik mounts the shared volume").toBeTruthy();
    const volume = shared.split(":")[0];
    expect(compose.volumes).toHaveProperty(volume);
    expect(compose.services.sidecar.volumes).toContain(
      `${volume}:${compose.services.sidecar.environment.MCP_AFFINITY_DIR}`,
    );
  });

  it("every node registers the server URL Traefik uses for it", () => {
    const servers = cdyn.http.services.mcp.loadBalancer.servers.map((s: { url: string }) => s.url).sort();
    const nodeUrls = Object.values(compose.services as Record<string, Any>)
      .map((s) => s.environment?.MCP_NODE_URL)
      .filter(Boolean)
      .sort();
    expect(nodeUrls).toEqual(servers);
    expect(cdyn.http.services.nodes.loadBalancer.servers.map((s: { url: string }) => s.url).sort()).toEqual(servers);
    expect(compose.services.sidecar.environment.MCP_AFFINITY_TRAEFIK_SERVICES).toBe("mcp@file");
  });
});

describe("deploy/kubernetes", () => {
  const docs = (f: string): Any[] => parseAllDocuments(read("deploy", "kubernetes", f)).map((d) => d.toJS());
  const middleware = docs("middleware.yaml").find((d) => d.kind === "Middleware" && d.spec.plugin);
  const stripMiddleware = docs("middleware.yaml").find((d) => d.kind === "Middleware" && d.spec.headers);
  const routes = docs("ingressroutes.yaml").filter((d) => d.kind === "IngressRoute");
  const values: Any = parseYaml(read("deploy", "kubernetes", "traefik-values.yaml"));
  const nodes = docs("mcp-nodes.yaml");
  const mcpRoute = routes.map((r) => r.spec.routes.find((x: Any) => x.match === ref.mcpRouter.rule)).find(Boolean);
  const defaultRoute = routes
    .map((r) => r.spec.routes.find((x: Any) => x.match === ref.defaultRouter.rule))
    .find(Boolean);

  it("the Middleware CRD carries the plugin settings of traefik/dynamic.yml", () => {
    expect(middleware.apiVersion).toBe("traefik.io/v1alpha1");
    expect(normalize(middleware.spec.plugin["mcp-affinity"])).toEqual(normalize(ref.plugin));
  });

  it("the /mcp IngressRoute has the sticky cookie, the middleware and the priority of the templates", () => {
    expect(mcpRoute, "a route matching PathPrefix(`/mcp`)").toBeTruthy();
    expect(mcpRoute.priority).toBe(ref.mcpRouter.priority);
    expect(mcpRoute.middlewares.map((m: Any) => m.name)).toEqual([middleware.metadata.name]);
    expect(mcpRoute.services).toHaveLength(1);
    // CRD field names are the same as the file provider's; sameSite compared case-insensitively.
    expect(lowerKeys(mcpRoute.services[0].sticky.cookie)).toEqual(lowerKeys(ref.sticky));
    expect(defaultRoute, "a default route").toBeTruthy();
    expect(defaultRoute.priority).toBe(ref.defaultRouter.priority);
    expect(defaultRoute.middlewares).toBeUndefined();
    expect(defaultRoute.services.every((s: Any) => s.sticky === undefined)).toBe(true);
    expect(defaultRoute.services[0].name).toBe(mcpRoute.services[0].name);
  });

  it("the wrapped-session route: the plugin, the header-stripping Middleware, the /mcp route's service", () => {
    const wrapped = routes
      .map((r) => r.spec.routes.find((x: Any) => x.match === dyn.http.routers["mcp-wrapped"].rule))
      .find(Boolean);
    expect(wrapped, "a route matching the templates' mcp-wrapped rule").toBeTruthy();
    expect(wrapped.priority).toBe(dyn.http.routers["mcp-wrapped"].priority);
    expect(wrapped.middlewares.map((m: Any) => m.name)).toEqual([
      middleware.metadata.name,
      stripMiddleware.metadata.name,
    ]);
    expect(stripMiddleware.spec).toEqual(dyn.http.middlewares["mcp-wrapped-answers"]);
    expect(wrapped.services).toEqual(mcpRoute.services);
  });

  it("the Helm values load the plugin with the shared emptyDir in settings.mounts, beside the sidecar", () => {
    const local = values.experimental.localPlugins["mcp-affinity"];
    expect(local.moduleName).toBe(ref.local.moduleName);
    expect(local.mountPath).toBe(`/plugins-local/src/${ref.local.moduleName}`);
    const mountsArg = values.additionalArguments.find((a: string) =>
      a.startsWith("--experimental.localPlugins.mcp-affinity.settings.mounts="),
    );
    const [host, guest] = mountsArg.split("=")[1].split(":");
    expect(guest).toBe(ref.plugin.viewDir);
    const traefikMount = values.additionalVolumeMounts.find((m: Any) => m.mountPath === host);
    expect(traefikMount, "Traefik mounts the shared volume at the mount's host side").toBeTruthy();
    const volume = values.deployment.additionalVolumes.find((v: Any) => v.name === traefikMount.name);
    expect(volume.emptyDir).toBeDefined();
    const sidecar = values.deployment.additionalContainers.find((c: Any) => c.name === "mcp-affinity-sidecar");
    expect(sidecar.volumeMounts).toContainEqual({ name: traefikMount.name, mountPath: host });
    expect(sidecar.args).toContain(`--dir=${host}`);
    // The sidecar watches the service the /mcp IngressRoute creates: <namespace>-<service>-<port>@kubernetescrd.
    const svc = mcpRoute.services[0];
    const ns = routes.find((r) => r.spec.routes.includes(mcpRoute)).metadata.namespace;
    expect(sidecar.args).toContain(`--traefik-services=${ns}-${svc.name}-${svc.port}@kubernetescrd`);
    expect(
      values.deployment.initContainers.some((c: Any) => c.volumeMounts.some((m: Any) => m.name === local.volumeName)),
    ).toBe(true);
  });

  it("nodes register the URL Traefik builds for their endpoint", () => {
    const dep = nodes.find((d) => d.kind === "Deployment");
    const service = nodes.find((d) => d.kind === "Service");
    const env = Object.fromEntries(dep.spec.template.spec.containers[0].env.map((e: Any) => [e.name, e.value]));
    expect(env.MCP_NODE_URL).toBe(`http://$(POD_IP):${service.spec.ports[0].port}`);
    expect(service.metadata.name).toBe(mcpRoute.services[0].name);
    expect(dep.spec.template.spec.containers[0].readinessProbe.httpGet.path).toBe(ref.health.path);
  });
});
