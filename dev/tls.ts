// A throwaway certificate authority and a server certificate it signed, for 127.0.0.1 and
// localhost: what the TLS tests give redis-server (and the client trusts through the CA file).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestCa {
  /** The CA's certificate (PEM): what a client trusts (--redis-tls-ca-file). */
  caFile: string;
  /** The server's certificate and key, signed by the CA. */
  certFile: string;
  keyFile: string;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** Makes the CA and the server certificate in `dir` (`name` keeps several CAs apart in one dir). */
export function makeTestCa(dir: string, name = "test"): TestCa {
  const f = (s: string) => join(dir, `${name}-${s}`);
  const ca: TestCa = { caFile: f("ca.pem"), certFile: f("server.pem"), keyFile: f("server-key.pem") };
  openssl([
    "req",
    "-x509",
    ...EC,
    "-keyout",
    f("ca-key.pem"),
    "-out",
    ca.caFile,
    "-days",
    "2",
    "-subj",
    `/CN=${name} CA`,
  ]);
  writeFileSync(f("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl(["req", ...EC, "-keyout", ca.keyFile, "-out", f("server.csr"), "-subj", "/CN=localhost"]);
  openssl([
    "x509",
    "-req",
    "-in",
    f("server.csr"),
    "-CA",
    ca.caFile,
    "-CAkey",
    f("ca-key.pem"),
    "-CAcreateserial",
    "-out",
    ca.certFile,
    "-days",
    "2",
    "-extfile",
    f("server.ext"),
  ]);
  return ca;
}
