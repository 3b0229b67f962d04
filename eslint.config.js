// Lint gate run by `npm test`: rules that catch real bugs (floating and misused promises above
// all), not layout; the formatter (prettier) owns layout. The AssemblyScript plugin is checked by
// its own compiler (asc), the Go and Rust test clients by theirs.
import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  {
    ignores: [
      "node_modules/",
      ".cache/",
      ".run/",
      ".venv/",
      "dist/",
      "coverage/",
      "plugin/",
      "test/clients/",
      "test/conformance/",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  { files: ["**/*.{js,mjs}"], languageOptions: { globals: globals.node } },
  {
    rules: {
      // `_`-prefixed names are deliberately unused (a parameter a signature requires, a key left out)
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" },
      ],
      // a `let` read by a closure before its one assignment cannot be a `const`
      "prefer-const": ["error", { ignoreReadBeforeAssign: true }],
    },
  },
  { files: ["sidecar/ui/**/*.js"], languageOptions: { globals: globals.browser } },
  {
    files: ["**/*.ts"],
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ["vitest.config.ts"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
    },
  },
  // tests read parsed JSON and YAML documents whose shape is what they assert
  { files: ["test/**/*.ts"], rules: { "@typescript-eslint/no-explicit-any": "off" } },
);
