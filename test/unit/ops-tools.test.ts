// The ops artefacts checked by the real tools (pinned in scripts/go-tools.mjs, built by
// `npm test`'s preparation): promtool for the Prometheus config, the alert rules and their unit
// tests (ops/tests/), every Grafana expression and the sidecar's own /metrics; kubeconform -strict
// with offline schemas (scripts/k8s-schemas.mjs) for the Kubernetes manifests.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { goTool } from "../../scripts/go-tools.mjs";
import { k8sSchemas, schemaLocations } from "../../scripts/k8s-schemas.mjs";
import { Registry } from "prom-client";
import { AffinityMetrics } from "../../node/src/metrics.ts";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";
import { ROOT } from "../../dev/paths.ts";

type Any = any; // parsed YAML / JSON

let promtool: string;
let tmp: string;

beforeAll(() => {
  promtool = goTool("promtool");
  tmp = mkdtempSync(join(tmpdir(), "mcpa-ops-tools-"));
}, 600_000);

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs a tool; returns its exit status and output (never throws on a non-zero exit). */
function run(cmd: string, args: string[], input?: string): { status: number; out: string } {
  const r = spawnSync(cmd, args, { cwd: ROOT, input, encoding: "utf8", timeout: 120_000 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

describe("promtool", () => {
  it("accepts the scrape config and the alert rules it loads", () => {
    const r = run(promtool, ["check", "config", "ops/prometheus-scrape.yml"]);
    const rules = (readFileSync(join(ROOT, "ops/prometheus-alerts.yml"), "utf8").match(/^\s+- alert: /gm) ?? []).length;
    expect(rules).toBeGreaterThan(15);
    expect(r.out).toContain(`SUCCESS: ${rules} rules found`);
    expect(r.status, r.out).toBe(0);
  });

  it("passes the alert unit tests", () => {
    const r = run(promtool, ["test", "rules", "ops/tests/alerts.test.yml"]);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain("SUCCESS");
  });

  it("the unit tests make every alert fire and stay silent, with its text", () => {
    const rules = (parseYaml(readFileSync(join(ROOT, "ops", "prometheus-alerts.yml"), "utf8")) as Any).groups.flatMap(
      (g: Any) => g.rules,
    );
    const tests = (parseYaml(readFileSync(join(ROOT, "ops", "tests", "alerts.test.yml"), "utf8")) as Any).tests.flatMap(
      (t: Any) => t.alert_rule_test,
    );
    for (const r of rules) {
      const mine = tests.filter((t: Any) => t.alertname === r.alert);
      const fired = mine.filter((t: Any) => t.exp_alerts.length > 0);
      expect(fired.length, `${r.alert} fires in a test`).toBeGreaterThan(0);
      expect(
        mine.some((t: Any) => t.exp_alerts.length === 0),
        `${r.alert} stays silent in a test`,
      ).toBe(true);
      // The rendered text is asserted, so a wrong figure ($value of the wrong side) fails.
      for (const t of fired) for (const a of t.exp_alerts) expect(a.exp_annotations?.summary, r.alert).toBeTruthy();
    }
  });

  it("a wrong figure in an alert's text fails the unit tests", () => {
    const rulesFile = join(tmp, "prometheus-alerts.yml");
    mkdirSync(join(tmp, "tests"), { recursive: true });
    const testFile = join(tmp, "tests", "alerts.test.yml"); // its rule_files: ../prometheus-alerts.yml
    const bad = readFileSync(join(ROOT, "ops", "prometheus-alerts.yml"), "utf8").replace(
      "{{ $value | humanizePercentage }} of requests carrying",
      "{{ $value | humanize }} of requests carrying",
    );
    writeFileSync(rulesFile, bad);
    writeFileSync(testFile, readFileSync(join(ROOT, "ops", "tests", "alerts.test.yml"), "utf8"));
    const r = run(promtool, ["test", "rules", testFile]);
    expect(r.status).not.toBe(0);
    // Exactly the changed alert fails: every other test still passes against the copy.
    expect(r.out.match(/alertname: (\w+)/g)).toEqual(["alertname: McpAffinityLostSessionSpike"]);
    expect(r.out).toContain('description="16.67% of requests');
    expect(r.out).toContain('description="166.7m of requests');
  });

  it("parses every Grafana dashboard expression", () => {
    const d = JSON.parse(readFileSync(join(ROOT, "ops", "grafana-dashboard.json"), "utf8"));
    const exprs: Array<{ title: string; expr: string }> = [];
    const walk = (ps: Any[]) => {
      for (const p of ps) {
        for (const t of p.targets ?? []) if (t.expr) exprs.push({ title: p.title, expr: t.expr });
        walk(p.panels ?? []);
      }
    };
    walk(d.panels);
    expect(exprs.length).toBeGreaterThan(20);
    // Grafana's variables as Grafana substitutes them (a regex for multi-value, a range for intervals).
    const grafana = (e: string) =>
      e.replace(/\$__rate_interval|\$__interval|\$__range/g, "5m").replace(/\$\{?instance\}?/g, ".*");
    const rules = {
      groups: [
        {
          name: "dashboard",
          rules: exprs.map((e, i) => ({
            record: `dashboard:expr_${i}`,
            expr: grafana(e.expr),
            labels: { panel: e.title },
          })),
        },
      ],
    };
    const file = join(tmp, "dashboard-rules.yml");
    writeFileSync(file, stringifyYaml(rules));
    const r = run(promtool, ["check", "rules", file]);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain(`SUCCESS: ${exprs.length} rules found`);
    // The parse is real: a broken expression is refused.
    writeFileSync(
      file,
      stringifyYaml({ groups: [{ name: "x", rules: [{ record: "x:y", expr: "sum(rate(mcp_affinity_ready[5m])" }] }] }),
    );
    expect(run(promtool, ["check", "rules", file]).status).not.toBe(0);
  });

  it("the dashboard can be imported: a datasource input, bound by every query", () => {
    const d = JSON.parse(readFileSync(join(ROOT, "ops", "grafana-dashboard.json"), "utf8"));
    expect(d.__inputs).toEqual([
      expect.objectContaining({ name: "DS_PROMETHEUS", type: "datasource", pluginId: "prometheus" }),
    ]);
    const ds = d.templating.list.find((v: Any) => v.type === "datasource");
    expect(ds.current.value).toBe("${DS_PROMETHEUS}");
  });

  describe("the sidecar's /metrics", () => {
    let sidecar: Sidecar;
    let dir: string;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "mcpa-metrics-"));
      sidecar = await startSidecar({ dir, port: 0, logLevel: "silent" });
    }, 20_000);
    afterAll(async () => {
      await sidecar?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it("passes promtool check metrics", async () => {
      const text = await (await fetch(`${sidecar.url}/metrics`)).text();
      expect(text).toContain("mcp_affinity_edge_decisions_total");
      const r = run(promtool, ["check", "metrics"], text);
      expect(r.out).toBe("");
      expect(r.status).toBe(0);
      // The linter is real: a gauge named like a counter is refused.
      expect(
        run(promtool, ["check", "metrics"], "# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n").status,
      ).not.toBe(0);
    });
  });
});

describe("the node library's metrics", () => {
  it("pass promtool check metrics", async () => {
    const registry = new Registry();
    new AffinityMetrics(
      registry,
      () => 3,
      () => "up",
    );
    const text = await registry.metrics();
    expect(text).toContain("mcp_affinity_node_registrations_total");
    const r = run(promtool, ["check", "metrics"], text);
    expect(r.out).toBe("");
    expect(r.status).toBe(0);
  });
});

describe("kubeconform", () => {
  it("accepts the Kubernetes manifests with -strict and offline schemas", () => {
    const kubeconform = goTool("kubeconform");
    const schemas = k8sSchemas();
    const kustomization = parseYaml(
      readFileSync(join(ROOT, "deploy", "kubernetes", "kustomization.yaml"), "utf8"),
    ) as Any;
    const files = (kustomization.resources as string[]).map((f) => join("deploy", "kubernetes", f));
    // Every manifest in the folder is part of the kustomization (the Helm values are not a manifest).
    const inFolder = readdirSync(join(ROOT, "deploy", "kubernetes")).filter(
      (f) => f.endsWith(".yaml") && f !== "kustomization.yaml" && f !== "traefik-values.yaml",
    );
    expect([...kustomization.resources].sort()).toEqual(inFolder.sort());
    const args = [
      "-strict",
      "-summary",
      "-output",
      "json",
      ...schemaLocations(schemas).flatMap((l) => ["-schema-location", l]),
    ];
    const r = run(kubeconform, [...args, ...files]);
    expect(r.status, r.out).toBe(0);
    const summary = JSON.parse(r.out).summary;
    expect(summary).toMatchObject({ invalid: 0, errors: 0, skipped: 0 });
    expect(summary.valid).toBeGreaterThanOrEqual(6);
    // -strict is real with these schemas: an unknown field in a core kind and in a Traefik CRD is refused.
    const bad = join(tmp, "bad.yaml");
    writeFileSync(
      bad,
      "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {portz: []}\n---\napiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata: {name: m}\nspec: {plugn: {}}\n",
    );
    const b = run(kubeconform, [...args, bad]);
    expect(b.status).not.toBe(0);
    expect(JSON.parse(b.out).summary).toMatchObject({ invalid: 2 });
  });
});
