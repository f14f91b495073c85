/**
 * A one-member etcd that speaks only TLS and asks clients for a
 * certificate, with a throwaway CA made by openssl: for `etcds://` lock
 * URLs. Stopped (by pid) and its files removed when disposed.
 *
 * @module
 */

import { freePort, installed } from "./cluster.ts";
import { eventually, sleep } from "./process.ts";

/** A new P-256 key, unencrypted (openssl req arguments). */
const NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Whether etcd and openssl are here. */
export function tlsEtcdSupported(): boolean {
  return installed("etcd") && installed("openssl");
}

function openssl(dir: string, args: string[]): void {
  const r = new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
    .outputSync();
  if (!r.success) {
    throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}

/** Make a key and a certificate for `name`, signed by the CA in `dir`. */
function issue(dir: string, name: string, extensions: string): void {
  Deno.writeTextFileSync(`${dir}/${name}.ext`, extensions);
  openssl(dir, [
    "req",
    ...NEW_KEY,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${name}`,
  ]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.pem`,
  ]);
}

/** The TLS etcd: its directory holds ca.pem, client.pem and client.key. */
export class TlsEtcd implements AsyncDisposable {
  /** The directory with the CA and the client's files. */
  readonly dir: string;
  /** `127.0.0.1:PORT`. */
  readonly endpoint: string;
  readonly #process: Deno.ChildProcess;

  private constructor(dir: string, endpoint: string, process: Deno.ChildProcess) {
    this.dir = dir;
    this.endpoint = endpoint;
    this.#process = process;
  }

  /** Make the CA and the certificates, start the member, and wait until it answers. */
  static async start(): Promise<TlsEtcd> {
    const dir = await Deno.makeTempDir({ prefix: "singleton-run-etcds-" });
    let etcd: TlsEtcd | undefined;
    try {
      openssl(dir, [
        "req",
        "-x509",
        ...NEW_KEY,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=singleton-run test CA",
      ]);
      // etcd's own gateway dials its gRPC side with the server's certificate: it is a client too.
      issue(dir, "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
      issue(dir, "client", "extendedKeyUsage=clientAuth\n");
      const [client, peer] = [freePort(), freePort()];
      const endpoint = `127.0.0.1:${client}`;
      const process = new Deno.Command("etcd", {
        args: [
          "--name",
          "m0",
          "--data-dir",
          `${dir}/data`,
          "--listen-client-urls",
          `https://${endpoint}`,
          "--advertise-client-urls",
          `https://${endpoint}`,
          "--listen-peer-urls",
          `http://127.0.0.1:${peer}`,
          "--initial-advertise-peer-urls",
          `http://127.0.0.1:${peer}`,
          "--initial-cluster",
          `m0=http://127.0.0.1:${peer}`,
          "--cert-file",
          `${dir}/server.pem`,
          "--key-file",
          `${dir}/server.key`,
          "--trusted-ca-file",
          `${dir}/ca.pem`,
          "--client-cert-auth",
        ],
        stdout: "null",
        stderr: "null",
        stdin: "null",
      }).spawn();
      etcd = new TlsEtcd(dir, endpoint, process);
      await etcd.#healthy(20_000);
      return etcd;
    } catch (err) {
      if (etcd) await etcd[Symbol.asyncDispose]();
      else await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  async #healthy(ms: number): Promise<void> {
    const client = Deno.createHttpClient({
      caCerts: [Deno.readTextFileSync(`${this.dir}/ca.pem`)],
      cert: Deno.readTextFileSync(`${this.dir}/client.pem`),
      key: Deno.readTextFileSync(`${this.dir}/client.key`),
    });
    try {
      await eventually("the TLS etcd to answer", async () => {
        const r = await fetch(`https://${this.endpoint}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({ key: btoa("health"), value: btoa("ok") }),
          signal: AbortSignal.timeout(1000),
          client,
        }).catch(() => undefined);
        await r?.body?.cancel();
        if (r?.ok) return true;
        await sleep(100);
        return false;
      }, ms);
    } finally {
      client.close();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#process.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    await this.#process.status;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
