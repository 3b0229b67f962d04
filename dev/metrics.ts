// The one reader of Prometheus text (the sidecar's and Traefik's /metrics) for the benchmarks and the tests.
import { httpGet } from "./net.ts";

/** The text of a /metrics endpoint; throws naming it when it does not answer 200. */
export async function scrapeMetrics(url: string, timeoutMs = 2000): Promise<string> {
  const r = await httpGet(url, timeoutMs);
  if (!r || r.status !== 200) throw new Error(`${url} answered ${r?.status ?? "nothing"}`);
  return r.text;
}

/**
 * The values of the series of `name` whose label text contains every fragment (`reason="lost"`, or
 * a whole label set with its braces, `{result="quarantined"}`); none when no series matches.
 */
export function metricValues(text: string, name: string, ...fragments: string[]): number[] {
  const values: number[] = [];
  for (const line of text.split("\n")) {
    if (!(line.startsWith(`${name}{`) || line.startsWith(`${name} `))) continue;
    if (fragments.every((f) => line.includes(f))) values.push(Number(line.split(" ").pop()));
  }
  return values;
}

/** Sum of metricValues: 0 when no series matches. */
export const metricSum = (text: string, name: string, ...fragments: string[]): number =>
  metricValues(text, name, ...fragments).reduce((a, b) => a + b, 0);

/** metricSum of one scrape; NaN when the endpoint does not answer (a poll waits through that). */
export async function scrapeMetric(url: string, name: string, ...fragments: string[]): Promise<number> {
  try {
    return metricSum(await scrapeMetrics(url), name, ...fragments);
  } catch {
    return NaN;
  }
}
