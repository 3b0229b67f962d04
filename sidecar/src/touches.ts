// Activity of edge-learned sessions, written to Redis in batches. The plugin reports a session it
// routed (`a` events, at most once a minute per session and instance); this keeps each session
// once per interval and renews its record's TTL with one command, so a record learned at the edge
// lives as long as its session is used (never past the maximum age), and an abandoned one expires.
export interface EdgeTouchOptions {
  touch: (id: string) => Promise<boolean>;
  onResult: (result: "renewed" | "skipped" | "dropped" | "error", n: number) => void;
  /** At most this many sessions wait for the next flush (more are dropped and counted). */
  maxPending?: number;
}

export class EdgeTouches {
  private pending = new Set<string>();
  private flushing: Promise<void> | null = null;

  constructor(private readonly o: EdgeTouchOptions) {}

  add(id: string): void {
    if (this.pending.has(id)) return;
    if (this.pending.size >= (this.o.maxPending ?? 100_000)) return this.o.onResult("dropped", 1);
    this.pending.add(id);
  }

  get size(): number {
    return this.pending.size;
  }

  /** Writes what is pending (one command per session), 8 at a time. */
  flush(): Promise<void> {
    this.flushing ??= (async () => {
      const ids = [...this.pending];
      this.pending.clear();
      for (let i = 0; i < ids.length; i += 8) {
        const results = await Promise.allSettled(ids.slice(i, i + 8).map((id) => this.o.touch(id)));
        for (const r of results)
          this.o.onResult(r.status === "rejected" ? "error" : r.value ? "renewed" : "skipped", 1);
      }
    })().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }
}
