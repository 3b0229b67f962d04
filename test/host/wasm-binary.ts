// A minimal reader of a Wasm binary's type, import, function and export sections: enough to check
// exact export signatures (WebAssembly.Module.exports gives names and kinds only) the way wazero's
// compileGuest does in http-wasm-host-go.

export type ValType = "i32" | "i64" | "f32" | "f64" | "v128" | "funcref" | "externref";
export interface FuncType {
  params: ValType[];
  results: ValType[];
}
export interface ImportEntry {
  module: string;
  name: string;
  kind: "function" | "table" | "memory" | "global" | "tag";
  type?: FuncType;
}
export interface ExportEntry {
  name: string;
  kind: "function" | "table" | "memory" | "global" | "tag";
  index: number;
  type?: FuncType;
}
export interface WasmInfo {
  types: FuncType[];
  imports: ImportEntry[];
  exports: ExportEntry[];
  startFunction?: number;
  memoryPages?: { min: number; max?: number };
}

const VALTYPES: Record<number, ValType> = {
  0x7f: "i32",
  0x7e: "i64",
  0x7d: "f32",
  0x7c: "f64",
  0x7b: "v128",
  0x70: "funcref",
  0x6f: "externref",
};
const KINDS = ["function", "table", "memory", "global", "tag"] as const;

export function readWasm(bytes: Uint8Array): WasmInfo {
  let p = 0;
  const u8 = () => {
    if (p >= bytes.length) throw new Error("wasm: unexpected end");
    return bytes[p++]!;
  };
  const u32 = () => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = u8();
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
      shift += 7;
      if (shift > 35) throw new Error("wasm: bad leb128");
    }
  };
  const name = () => {
    const n = u32();
    const s = Buffer.from(bytes.subarray(p, p + n)).toString("utf8");
    p += n;
    return s;
  };
  const valtype = (): ValType => {
    const b = u8();
    const t = VALTYPES[b];
    if (!t) throw new Error(`wasm: unknown value type 0x${b.toString(16)}`);
    return t;
  };
  const limits = () => {
    const flags = u8();
    const min = u32();
    const max = flags & 1 ? u32() : undefined;
    return { min, max };
  };

  if (u32le(bytes, 0) !== 0x6d736100) throw new Error("wasm: bad magic");
  p = 8;
  const info: WasmInfo = { types: [], imports: [], exports: [] };
  const funcTypeIdx: number[] = []; // imported functions first, then defined ones
  while (p < bytes.length) {
    const id = u8();
    const size = u32();
    const end = p + size;
    switch (id) {
      case 1: {
        for (let n = u32(); n > 0; n--) {
          const form = u8();
          if (form !== 0x60) throw new Error(`wasm: unsupported type form 0x${form.toString(16)}`);
          const params = Array.from({ length: u32() }, valtype);
          const results = Array.from({ length: u32() }, valtype);
          info.types.push({ params, results });
        }
        break;
      }
      case 2: {
        for (let n = u32(); n > 0; n--) {
          const module = name();
          const field = name();
          const kind = u8();
          const entry: ImportEntry = { module, name: field, kind: KINDS[kind]! };
          if (kind === 0) {
            const t = u32();
            funcTypeIdx.push(t);
            entry.type = info.types[t];
          } else if (kind === 1) {
            valtype();
            limits();
          } else if (kind === 2) {
            info.memoryPages = limits();
          } else if (kind === 3) {
            valtype();
            u8();
          } else if (kind === 4) {
            u8();
            u32();
          } else throw new Error(`wasm: unknown import kind ${kind}`);
          info.imports.push(entry);
        }
        break;
      }
      case 3: {
        for (let n = u32(); n > 0; n--) funcTypeIdx.push(u32());
        break;
      }
      case 5: {
        const n = u32();
        if (n > 0) info.memoryPages = limits();
        break;
      }
      case 7: {
        for (let n = u32(); n > 0; n--) {
          const field = name();
          const kind = u8();
          const index = u32();
          info.exports.push({ name: field, kind: KINDS[kind]!, index });
        }
        break;
      }
      case 8:
        info.startFunction = u32();
        break;
      default:
        break;
    }
    p = end;
  }
  for (const e of info.exports) if (e.kind === "function") e.type = info.types[funcTypeIdx[e.index]!];
  return info;
}

function u32le(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

export const sig = (t: FuncType | undefined): string => (t ? `(${t.params.join(",")})->(${t.results.join(",")})` : "?");
