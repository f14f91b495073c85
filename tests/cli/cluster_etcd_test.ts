/**
 * etcds://: the lock over TLS with a client certificate, against a real
 * etcd that accepts nothing else. The TLS files are given relative to the
 * caller's directory, which the keeper (running in COMMAND's directory)
 * does not share.
 */

import assert from "node:assert/strict";
import { TlsEtcd, tlsEtcdSupported } from "../../testing/etcd_tls.ts";
import { exists } from "../../testing/process.ts";
import { assertCleanError, Sandbox, SOURCE, sr, waitFor } from "./harness.ts";

const HOST = Deno.hostname();
const TLS = ["--lock-cacert", "ca.pem", "--lock-cert", "client.pem", "--lock-key", "client.key"];

Deno.test({
  name:
    "etcds: start --lock holds the lock with a client certificate; status --lock sees it; files relative to the caller",
  ignore: !tlsEtcdSupported(),
  async fn() {
    await using etcd = await TlsEtcd.start();
    await using sb = await Sandbox.create();
    const url = `etcds://${etcd.endpoint}/secure`;
    const token = sb.path("token");
    const r = await sr(SOURCE, [
      "start",
      "--pidfile",
      sb.pidfile,
      "--lock",
      url,
      ...TLS,
      "--lock-ttl",
      "4",
      "--stop-schedule",
      "TERM/1/KILL/1",
      "--",
      "bash",
      "-c",
      `echo "$SINGLETON_RUN_FENCING_TOKEN $ETCD_LOCK_KEY" > ${token}; exec sleep 600`,
    ], { cwd: etcd.dir });
    assert.equal(r.code, 0, r.stderr);
    sb.track(Number(r.stdout.trim()));
    await waitFor(() => {
      try {
        return Deno.readTextFileSync(token).trim() !== "";
      } catch {
        return false;
      }
    });
    const [rev, key] = Deno.readTextFileSync(token).trim().split(" ");
    assert.match(rev!, /^[1-9][0-9]*$/);
    assert.match(key!, /^secure\/[0-9a-f]+$/);
    const st = await sr(SOURCE, ["status", "--lock", url, ...TLS], { cwd: etcd.dir });
    assert.equal(st.code, 0, st.stdout + st.stderr);
    assert.match(st.stdout, new RegExp(`^held by ${HOST} \\(pid \\d+\\)`));
    assert.ok(st.stdout.includes(key!), st.stdout);
    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
    assert.equal(stop.code, 0, stop.stderr);
    const free = await sr(SOURCE, ["status", "--lock", url, ...TLS], { cwd: etcd.dir });
    assert.equal(free.code, 3, free.stdout + free.stderr);
  },
});

Deno.test({
  name:
    "etcds: without a client certificate, or over plain etcd://, start fails with one line and nothing runs",
  ignore: !tlsEtcdSupported(),
  async fn() {
    await using etcd = await TlsEtcd.start();
    await using sb = await Sandbox.create();
    const ran = sb.path("ran");
    const attempt = (url: string, tls: string[]) =>
      sr(SOURCE, [
        "start",
        "--pidfile",
        sb.pidfile,
        "--lock",
        url,
        ...tls,
        "--lock-timeout",
        "2",
        "--",
        "touch",
        ran,
      ], { cwd: etcd.dir });
    const noCert = await attempt(`etcds://${etcd.endpoint}/secure`, ["--lock-cacert", "ca.pem"]);
    assertCleanError(noCert, 1, new RegExp(`cannot reach etcd: https://${etcd.endpoint}: `));
    const plain = await attempt(`etcd://${etcd.endpoint}/secure`, []);
    assertCleanError(plain, 1, new RegExp(`cannot reach etcd: http://${etcd.endpoint}: `));
    const st = await sr(SOURCE, ["status", "--lock", `etcds://${etcd.endpoint}/secure`], {
      cwd: etcd.dir,
    });
    assert.equal(st.code, 4, st.stdout + st.stderr);
    assert.ok(!exists(ran), "COMMAND ran without the lock");
    assert.ok(!exists(sb.pidfile) || Deno.readTextFileSync(sb.pidfile) === "");
  },
});

Deno.test("etcds: TLS options are checked before anything is created, each mistake one line", async () => {
  await using sb = await Sandbox.create();
  const pem = sb.path("garbage.pem");
  const cases: [string, string[], RegExp][] = [
    [
      "etcds",
      ["--lock-cacert", sb.path("missing.pem")],
      /cannot read --lock-cacert ".*missing\.pem": No such file/,
    ],
    ["etcds", ["--lock-cacert", sb.dir], /cannot read --lock-cacert .*: not a regular file/],
    ["etcds", ["--lock-cacert", pem], /--lock-cacert ".*garbage\.pem" holds no PEM certificate/],
    ["etcds", ["--lock-cert", pem], /--lock-cert needs --lock-key/],
    ["etcds", ["--lock-cert", pem, "--lock-key", pem], /--lock-cert and --lock-key: /],
    ["etcd", ["--lock-cacert", pem], /--lock-cacert needs an etcds:\/\/ --lock URL/],
  ];
  for (const [scheme, tls, why] of cases) {
    Deno.writeTextFileSync(pem, "not a certificate\n");
    const r = await sr(SOURCE, [
      "start",
      "--pidfile",
      sb.pidfile,
      "--lock",
      `${scheme}://127.0.0.1:1/secure`,
      ...tls,
      "--",
      "sleep",
      "600",
    ]);
    assertCleanError(r, 2, why);
    const st = await sr(SOURCE, ["status", "--lock", `${scheme}://127.0.0.1:1/secure`, ...tls]);
    assertCleanError(st, 2, why);
    Deno.removeSync(pem);
    assert.deepEqual(sb.list(), [], `${tls.join(" ")} left files`);
  }
});
