import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // End-to-end suites share ports and processes: run files one at a time on a 2-core machine.
    fileParallelism: false,
    reporters: ["default"],
  },
});
