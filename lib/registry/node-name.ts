// What a node is called, on every side: the node library names itself by these rules when it is
// given no name, and the sidecar shows nodes by them (a node it knows only from session records
// or from Traefik has no heartbeat name).

/** How metrics and logs label a node: its server URL, or its cookie while the URL is unknown. */
export const nodeLabel = (n: { url: string; cookie: string }): string => n.url || n.cookie;

/** How people see a node (/v1/nodes, the status page, logs, whoami): its given name, else its label. */
export const nodeName = (n: { name: string; url: string; cookie: string }): string => n.name || nodeLabel(n);
