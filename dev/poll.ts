// The one polling helper of the stack, the benchmarks and the tests.
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Thrown by a condition to stop waiting at once: what is awaited can no longer happen (its process exited). */
export class GiveUp extends Error {
  constructor(
    message: string,
    readonly code = "ERR_GAVE_UP",
  ) {
    super(message);
  }
}

type Truthy<T> = Exclude<T, null | undefined | false | 0 | "">;

/**
 * Calls `fn` every `everyMs` until it returns something truthy, and returns that. A throw counts as
 * "not yet" (a server still starting refuses connections), except GiveUp, which ends the wait; after
 * `timeoutMs` the error names `what` and the last throw.
 */
export async function waitUntil<T>(
  what: string,
  fn: () => T | Promise<T>,
  timeoutMs = 3000,
  everyMs = 20,
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as Truthy<T>;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message ?? last}` : ""}`,
      );
    await sleep(everyMs);
  }
}
