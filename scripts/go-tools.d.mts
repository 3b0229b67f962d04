export declare const GO_TOOLS: Record<"promtool" | "kubeconform", string>;
export declare function goTool(name: "promtool" | "kubeconform"): string;
