#!/usr/bin/env node
// The sidecar runs its TypeScript sources through tsx (no build step).
import { register } from "tsx/esm/api";

register();
await import("../sidecar/src/main.ts");
