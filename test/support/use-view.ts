// vitest hooks around the plugin fixture (kept apart: the bench imports the fixture without vitest).
import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { clearEvents, makeViewDir, publish, republishMeta, type TempDir, type ViewSpec } from "./plugin-fixture.ts";

/**
 * A temp shared directory with `spec` published, for one test file. `shared`: one directory for
 * the file, events cleared and the meta re-stamped before each test; `per-test`: a new directory
 * for every test.
 */
export function useView(spec: ViewSpec, mode: "shared" | "per-test" = "shared"): { readonly dir: string } {
  let t: TempDir | undefined;
  const make = async () => {
    t = makeViewDir();
    await publish(t.dir, spec);
  };
  if (mode === "shared") {
    beforeAll(make);
    afterAll(() => t?.cleanup());
    beforeEach(async () => {
      clearEvents(t!.dir);
      await republishMeta(t!.dir, spec);
    });
  } else {
    beforeEach(make);
    afterEach(() => t?.cleanup());
  }
  return {
    get dir() {
      return t!.dir;
    },
  };
}
