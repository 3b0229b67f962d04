export declare const KUBERNETES_VERSION: string;
export declare const TRAEFIK_VERSION: string;
export declare function schemaLocations(dir: string): string[];
export declare function k8sSchemas(): string;
