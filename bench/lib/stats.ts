// Latency samples and percentiles for the benchmark (microseconds, exact: every sample is kept).

export class Samples {
  private buf = new Float64Array(1 << 16);
  n = 0;

  add(v: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = v;
  }

  merge(o: Samples): void {
    for (let i = 0; i < o.n; i++) this.add(o.buf[i]!);
  }

  /** Sorted copy of the samples. */
  sorted(): Float64Array {
    return this.buf.slice(0, this.n).sort();
  }
}

/** Nearest-rank percentile of sorted values (p in 0..100); NaN when empty. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export function summarize(s: Samples): LatencySummary {
  const v = s.sorted();
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i]!;
  return {
    count: v.length,
    p50: percentile(v, 50),
    p99: percentile(v, 99),
    p999: percentile(v, 99.9),
    max: v.length ? v[v.length - 1]! : NaN,
    mean: v.length ? sum / v.length : NaN,
  };
}

export const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
};
