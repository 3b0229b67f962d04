// The Grafana dashboard, the Prometheus alerts and the status page may use only metrics the sidecar
// really exports: the names are read from a started sidecar's /metrics, not from a copied list.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { startSidecar, type Sidecar } from "../../sidecar/src/index.ts";
import { ROOT } from "../../dev/paths.ts";

const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "inf",
  "nan",
  "Inf",
  "NaN",
]);

/** Metric names a PromQL expression selects (functions, labels, keywords and Grafana variables removed). */
function promqlMetricNames(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  s = s.replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, "");
  s = s.replace(/\{[^}]*\}/g, " ");
  s = s.replace(/\[[^\]]*\]/g, " ");
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names: string[] = [];
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const before = s[m.index! - 1];
    if (before !== undefined && /[0-9.]/.test(before)) continue; // exponent of a number literal (1e3)
    if (
      s
        .slice(m.index! + m[0].length)
        .trimStart()
        .startsWith("(")
    )
      continue; // a function
    if (KEYWORDS.has(m[0])) continue;
    names.push(m[0]);
  }
  return names;
}

/** Series names a Prometheus exposition offers: histograms as _bucket/_sum/_count, summaries as base/_sum/_count. */
function exportedSeries(exposition: string): Set<string> {
  const out = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m;
    if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) out.add(name! + suffix);
    else if (type === "summary") for (const suffix of ["", "_sum", "_count"]) out.add(name! + suffix);
    else out.add(name!);
  }
  return out;
}

interface Panel {
  type?: string;
  title?: string;
  targets?: Array<{ expr?: string }>;
  panels?: Panel[];
}

function dashboardExprs(d: {
  panels: Panel[];
  templating?: { list: Array<{ query?: unknown; definition?: string }> };
}): string[] {
  const out: string[] = [];
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push(t.expr);
      if (p.panels) walk(p.panels);
    }
  };
  walk(d.panels);
  for (const v of d.templating?.list ?? []) {
    const q = typeof v.query === "string" ? v.query : (v.query as { query?: string } | undefined)?.query;
    // label_values(metric, label): the metric is the first argument.
    const m = q ? /^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)/.exec(q) : null;
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Series the alerts use besides the sidecar's: Traefik's own, and Prometheus's `up`. */
const TRAEFIK_SERIES = ["traefik_service_requests_total", "up"];

let sidecar: Sidecar;
let dir: string;
let exported: Set<string>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mcpa-ops-"));
  sidecar = await startSidecar({ dir, port: 0, logLevel: "silent" });
  const res = await fetch(`${sidecar.url}/metrics`);
  expect(res.status).toBe(200);
  exported = exportedSeries(await res.text());
}, 20_000);

afterAll(async () => {
  await sidecar?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("PromQL name extraction", () => {
  it("finds metric names and skips functions, labels, keywords and variables", () => {
    expect(
      promqlMetricNames(
        'sum by (reason) (rate(mcp_affinity_edge_decisions_total{instance=~"$instance",reason!="x"}[$__rate_interval]))',
      ),
    ).toEqual(["mcp_affinity_edge_decisions_total"]);
    expect(
      promqlMetricNames("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 1e3 and b == 1 or absent(c)"),
    ).toEqual(["a_bucket", "b", "c"]);
  });

  it("would catch a metric the sidecar does not export", () => {
    const names = promqlMetricNames("rate(mcp_affinity_no_such_metric_total[5m]) / ignoring(x) mcp_affinity_ready");
    expect(names.filter((n) => !exported.has(n))).toEqual(["mcp_affinity_no_such_metric_total"]);
  });
});

describe("ops files use only exported metrics", () => {
  it("the sidecar exports its mcp_affinity_ metrics", () => {
    for (const n of [
      "mcp_affinity_edge_decisions_total",
      "mcp_affinity_view_age_seconds",
      "mcp_affinity_node_state",
      "mcp_affinity_redis_errors_total",
    ]) {
      expect(exported.has(n), n).toBe(true);
    }
  });

  it("grafana-dashboard.json", () => {
    const d = JSON.parse(readFileSync(join(ROOT, "ops", "grafana-dashboard.json"), "utf8"));
    const exprs = dashboardExprs(d);
    expect(exprs.length).toBeGreaterThan(15);
    const used = new Set(exprs.flatMap(promqlMetricNames));
    expect(used.size).toBeGreaterThan(10);
    expect([...used].filter((n) => !exported.has(n))).toEqual([]);
    // Every panel that queries has a datasource the importer can bind.
    const walk = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...walk(p.panels ?? [])]);
    for (const p of walk(d.panels))
      if (p.targets?.length) expect((p as { datasource?: unknown }).datasource, p.title).toBeTruthy();
  });

  it("prometheus-alerts.yml", () => {
    const doc = parseYaml(readFileSync(join(ROOT, "ops", "prometheus-alerts.yml"), "utf8")) as {
      groups: Array<{
        name: string;
        rules: Array<{
          alert: string;
          expr: string;
          for?: string;
          labels: { severity: string };
          annotations: { summary: string };
        }>;
      }>;
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThan(5);
    for (const r of rules) {
      expect(r.alert, JSON.stringify(r)).toMatch(/^McpAffinity[A-Za-z]+$/);
      expect(["warning", "critical"]).toContain(r.labels?.severity);
      expect(r.annotations?.summary).toBeTruthy();
      if (r.for !== undefined) expect(r.for).toMatch(/^\d+[smh]$/);
      const names = promqlMetricNames(r.expr);
      expect(names.length, r.alert).toBeGreaterThan(0);
      // Traefik's own series (test/e2e/metrics.test.ts reads them from the real Traefik).
      expect(
        names.filter((n) => !exported.has(n) && !TRAEFIK_SERIES.includes(n)),
        r.alert,
      ).toEqual([]);
    }
    // The four an operator needs first: lost-session spikes, view stale, Redis errors, a node gone.
    const uses = (metric: string, fragment = "") =>
      rules.some((r) => promqlMetricNames(r.expr).includes(metric) && r.expr.includes(fragment));
    expect(uses("mcp_affinity_edge_decisions_total", 'reason="lost"')).toBe(true);
    expect(uses("mcp_affinity_view_age_seconds")).toBe(true);
    expect(uses("mcp_affinity_redis_errors_total")).toBe(true);
    expect(uses("mcp_affinity_node_state", 'state="gone"')).toBe(true);
  });

  it("the status page (sidecar/ui/status.js)", () => {
    const js = readFileSync(join(ROOT, "sidecar", "ui", "status.js"), "utf8");
    const names = [...new Set([...js.matchAll(/"(mcp_affinity_[a-z0-9_]+)"/g)].map((m) => m[1]!))];
    expect(names.length).toBeGreaterThan(5);
    expect(names.filter((n) => !exported.has(n))).toEqual([]);
  });
});
