// Every pair of a lifecycle's states as one test each: a step its table draws is taken, any other
// one throws the lifecycle's error (with its code, from and to) and leaves the state as it was.
// The sidecar's and the node library's lifecycle tests share it.
import { expect, it } from "vitest";

export interface Steps<S extends string> {
  readonly state: S;
  to(next: S): void;
}

export function itStepsOnlyAlongTheTable<S extends string>(o: {
  states: readonly S[];
  /** The allowed steps, as "from>to". */
  legal: ReadonlySet<string>;
  /** A lifecycle walked to `state` along allowed steps. */
  at: (state: S) => Steps<S>;
  error: abstract new (...args: never[]) => Error;
  code: string;
}): void {
  for (const from of o.states) {
    for (const to of o.states) {
      const legal = o.legal.has(`${from}>${to}`);
      it(`${from} -> ${to} is ${legal ? "allowed" : "refused"}`, () => {
        const l = o.at(from);
        if (legal) {
          l.to(to);
          expect(l.state).toBe(to);
        } else {
          let err: unknown = null;
          try {
            l.to(to);
          } catch (e) {
            err = e;
          }
          expect(err).toBeInstanceOf(o.error);
          expect(err).toMatchObject({ code: o.code, from, to });
          expect(l.state, "a refused step changes nothing").toBe(from);
        }
      });
    }
  }
}
