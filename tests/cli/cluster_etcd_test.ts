/**
 * etcds://: the lock over TLS with a client certificate, against a real
 * etcd that accepts nothing else. The TLS files are given relative to the
 * caller's directory, which the keeper (running in COMMAND's directory)
 * does not share.
 */

import assert from "node:assert/strict";
import { Etcd, installed } from "../../testing/cluster.ts";
import { TlsEtcd, tlsEtcdSupported } from "../../testing/etcd_tls.ts";
import { exists } from "../../testing/process.ts";
import { alive, assertCleanError, Sandbox, SOURCE, sr, startFine, waitFor } from "./harness.ts";

const HOST = Deno.hostname();
/**
 * `start --lock` with a short lease (and a stop schedule that fits it);
 * the program's pid, tracked by the sandbox.
 */
async function startLocked(
  sb: Sandbox,
  lock: string[],
  command: string[],
  cwd?: string,
): Promise<number> {
  const r = await startFine(SOURCE, sb.pidfile, [
    "--lock",
    ...lock,
    "--lock-ttl",
    "4",
    "--stop-schedule",
    "TERM/1/KILL/1",
    "--",
    ...command,
  ], cwd === undefined ? {} : { cwd });
  assert.equal(r.code, 0, r.stderr);
  const program = Number(r.stdout.trim());
  sb.track(program);
  return program;
}

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
    await startLocked(sb, [url, ...TLS], [
      "bash",
      "-c",
      `echo "$SINGLETON_RUN_FENCING_TOKEN $ETCD_LOCK_KEY" > ${token}; exec sleep 600`,
    ], etcd.dir);
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

/** The index of a member that is not the leader. */
Deno.test({
  name:
    "etcd: the member the keeper talks to freezes (SIGSTOP) past the TTL: its keepalives go to another, nothing is fenced",
  ignore: !installed("etcd"),
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const f = await etcd.follower();
    // The frozen member first: the keeper starts with it, as it would with any first endpoint.
    const order = [f, ...[0, 1, 2].filter((i) => i !== f)];
    const url = `etcd://${order.map((i) => etcd.members[i]!.client).join(",")}/frozen`;
    const program = await startLocked(sb, [url], ["sleep", "600"]);
    const before = await sr(SOURCE, ["status", "--lock", url, "--json"]);
    assert.equal(before.code, 0, before.stdout + before.stderr);
    const frozen = etcd.members[f]!.process!.pid;
    Deno.kill(frozen, "SIGSTOP");
    try {
      await new Promise((r) => setTimeout(r, 6000)); // 1.5 x the TTL
      assert.ok(alive(program), "fenced while two of three members answered");
    } finally {
      Deno.kill(frozen, "SIGCONT");
    }
    const after = await sr(SOURCE, ["status", "--lock", url, "--json"]);
    assert.equal(after.code, 0, after.stdout + after.stderr);
    const [was, is] = [JSON.parse(before.stdout), JSON.parse(after.stdout)];
    assert.deepEqual([is.key, is.token, is.pid], [was.key, was.token, was.pid], "the same holder");
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  },
});

Deno.test({
  name:
    "etcd: start --supervise --lock-wait forever fences a run whose lock is lost, waits for the lock again, and starts a new run with a greater token",
  ignore: !installed("etcd") || !installed("etcdctl"),
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const runs = sb.path("runs");
    await startLocked(sb, [etcd.url("again"), "--supervise", "--lock-wait", "forever"], [
      "bash",
      "-c",
      `echo "$$ $SINGLETON_RUN_FENCING_TOKEN" >> ${runs}; exec sleep 600`,
    ]);
    const lines = () => exists(runs) ? Deno.readTextFileSync(runs).trim().split("\n") : [];
    await waitFor(() => lines().length === 1);
    // An operator deletes the lock's key: the lock is lost under a live lease.
    const del = await new Deno.Command("etcdctl", {
      args: ["--endpoints", etcd.endpoints, "del", "again/", "--prefix"],
      env: { ETCDCTL_API: "3" },
      stdout: "null",
    }).output();
    assert.ok(del.success);
    await waitFor(() => lines().length === 2, 10_000, "a second run");
    const [first, second] = lines().map((l) => l.split(" ").map(BigInt));
    assert.ok(!alive(Number(first![0])), "the first run still runs");
    assert.ok(second![1]! > first![1]!, `tokens ${first![1]} then ${second![1]}`);
    sb.track(Number(second![0]));
    const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`supervising pid ${second![0]}.*\\(token ${second![1]},`));
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  },
});
