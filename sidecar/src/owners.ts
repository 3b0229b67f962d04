// The owner table: what the view calls a node id. An owner is one (cookie, boot) pair, counted by
// the sessions and tombstones that name it; it stays listed while anything does, and its id is
// never reused within the epoch.

/**
 * boot null = "whatever boot the node has now" (edge-learned sessions and nodes without the
 * library never know the boot).
 */
export interface Owner {
  readonly id: number;
  readonly cookie: string;
  readonly boot: string | null;
  /** A later boot of the same node was seen: this incarnation's sessions are gone. */
  readonly retired: boolean;
  /** Live sessions (metrics). */
  readonly live: number;
  /** Live sessions plus tombstones: the owner stays in the view while > 0. */
  readonly refs: number;
}

type OwnerRecord = { -readonly [K in keyof Owner]: Owner[K] };

const keyOf = (cookie: string, boot: string | null) => cookie + "\0" + (boot ?? "");

export class OwnerTable {
  readonly #byId = new Map<number, OwnerRecord>();
  readonly #byKey = new Map<string, number>();
  #nextId = 1;
  #liveTotal = 0;
  /** Bumped whenever the table the meta lists changes (an owner added, dropped or retired). */
  #version = 0;

  get version(): number {
    return this.#version;
  }
  /** Live sessions over all owners. */
  get liveTotal(): number {
    return this.#liveTotal;
  }
  get size(): number {
    return this.#byId.size;
  }
  get(id: number): Owner | undefined {
    return this.#byId.get(id);
  }
  has(id: number): boolean {
    return this.#byId.has(id);
  }
  values(): IterableIterator<Owner> {
    return this.#byId.values();
  }

  /** The owner of (cookie, boot), created when new; `retiredAtBirth`: its boot is known to be over. */
  acquire(cookie: string, boot: string | null, retiredAtBirth: boolean): Owner {
    const k = keyOf(cookie, boot);
    const known = this.#byKey.get(k);
    if (known !== undefined) return this.#byId.get(known)!;
    const o: OwnerRecord = { id: this.#nextId++, cookie, boot, retired: retiredAtBirth, live: 0, refs: 0 };
    this.#byId.set(o.id, o);
    this.#byKey.set(k, o.id);
    this.#version++;
    return o;
  }

  /** Adds to an owner's counts; an owner nothing refers to any more leaves the table. */
  ref(id: number, live: number, refs: number): void {
    const o = this.#byId.get(id)!;
    o.live += live;
    o.refs += refs;
    this.#liveTotal += live;
    if (o.refs <= 0) {
      this.#byId.delete(o.id);
      this.#byKey.delete(keyOf(o.cookie, o.boot));
      this.#version++;
    }
  }

  /** That boot of the node is over: its owner (if listed) is retired. */
  retire(cookie: string, boot: string): void {
    const id = this.#byKey.get(keyOf(cookie, boot));
    const o = id === undefined ? undefined : this.#byId.get(id);
    if (o && !o.retired) {
      o.retired = true;
      this.#version++;
    }
  }

  /** Continues ids above those of a view left by a previous process (same epoch). */
  reserveIds(maxUsed: number): void {
    this.#nextId = Math.max(this.#nextId, maxUsed + 1);
  }
}
