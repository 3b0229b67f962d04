// Programmatic API of the sidecar (tests, the stack runner).
export { startSidecar, SidecarError, type Sidecar } from "./sidecar.ts";
export { LifecycleError, type SidecarState } from "./lifecycle.ts";
export {
  parseConfig,
  makeConfig,
  helpText,
  ConfigError,
  type SidecarConfig,
  type SidecarRuntimeOptions,
} from "./config.ts";
