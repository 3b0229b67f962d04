// Worker bootstrap: registers tsx so the TypeScript worker body can be imported.
import { register } from "tsx/esm/api";
register();
await import("./pool-worker.ts");
