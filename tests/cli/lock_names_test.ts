/**
 * Lock names: a malformed `%` sequence or an etcd NAME holding `/` is a
 * usage error (one line, exit 2, nothing left), never an internal error;
 * and a percent-encoded NAME is the lock `etcdctl lock` takes by its decoded
 * spelling.
 */

import assert from "node:assert/strict";
import { Etcd, installed } from "../../testing/cluster.ts";
import { assertCleanError, marker, Sandbox, SOURCE, sr } from "./harness.ts";

const ETCD = installed("etcd") && installed("etcdctl");

Deno.test('a lock NAME with a bad % sequence or a "/" is one line and exit 2, and nothing is left', async () => {
  await using sb = await Sandbox.create();
  const cases: [string, RegExp][] = [
    ["etcd://127.0.0.1:1/%", /not valid percent-encoding \(write % as %25\)/],
    ["etcd://127.0.0.1:1/%zz", /not valid percent-encoding/],
    ["etcd://127.0.0.1:1/job/x", /the lock NAME "job\/x" holds "\/"/],
    ["etcd://127.0.0.1:1/job%2Fx", /the lock NAME "job\/x" holds "\/"/],
  ];
  for (const [url, why] of cases) {
    for (
      const args of [
        ["start", "--pidfile", sb.pidfile, "--lock", url, "--", "sleep", marker()],
        ["run", "--pidfile", sb.pidfile, "--lock", url, "--", "sleep", marker()],
        ["status", "--lock", url],
        ["status", "--lock", url, "--json"],
      ]
    ) {
      const r = await sr(SOURCE, args);
      assertCleanError(r, 2, why);
      assert.deepEqual(sb.list(), [], `${args.join(" ")} left files behind`);
    }
  }
});

Deno.test({
  name: "a percent-encoded NAME is the lock etcdctl takes by its decoded spelling",
  ignore: !ETCD,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const theirs = new Deno.Command("etcdctl", {
      args: ["--endpoints", etcd.endpoints, "lock", "nightly report", "--", "sleep", "3"],
      env: { ETCDCTL_API: "3" },
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      // etcdctl holds it once its key is there.
      for (let i = 0; i < 50; i++) {
        const held = await sr(SOURCE, ["status", "--lock", etcd.url("nightly%20report")]);
        if (held.code === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const r = await sr(SOURCE, [
        "start",
        "--pidfile",
        sb.pidfile,
        "--lock",
        etcd.url("nightly%20report"),
        "--",
        "sleep",
        marker(),
      ]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /already running on key nightly report\//);
    } finally {
      await theirs.status;
    }
  },
});
