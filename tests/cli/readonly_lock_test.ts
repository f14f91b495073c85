/**
 * The descriptor a daemon inherits holds the pid file's lock but is opened
 * read-only: the daemon (and a supervised child) cannot rewrite the file
 * that names it, which systemd's PIDFile= and `kill $(cat FILE)` trust.
 */

import assert from "node:assert/strict";
import { locked, readPid, Sandbox, SOURCE, sr, startFine, waitFor } from "./harness.ts";

const ROOT = Deno.uid() === 0;

for (
  const c of [
    { name: "a daemon", options: [] as string[], fd: 3 },
    { name: "a daemon run as nobody", options: ["--user", "nobody"], fd: 3, root: true },
    { name: "a supervised child", options: ["--supervise"], fd: 63 },
  ]
) {
  Deno.test({
    name:
      `${c.name} holds the lock through a read-only descriptor: writing it fails, the file stays`,
    ignore: c.root === true && !ROOT,
    async fn() {
      await using sb = await Sandbox.create();
      await Deno.chmod(sb.dir, 0o755);
      const report = `/tmp/singleton-run-ro-${crypto.randomUUID()}`;
      try {
        const r = await startFine(SOURCE, sb.pidfile, [
          ...c.options,
          "--",
          "bash",
          "-c",
          `printf 1 >&${c.fd} 2>${report}; echo "status=$?" >>${report}; exec sleep 400.5`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        const pid = Number(r.stdout.trim());
        sb.track(pid);
        await waitFor(() => {
          try {
            return Deno.readTextFileSync(report).includes("status=");
          } catch {
            return false;
          }
        });
        const said = Deno.readTextFileSync(report);
        assert.match(said, /Bad file descriptor/);
        assert.match(said, /status=1/);
        assert.equal(readPid(sb.pidfile), pid, "the daemon changed the pid file");
        assert.ok(locked(sb.pidfile), "the lock is not held");
        assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 0);
        assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
        assert.equal(Deno.readTextFileSync(sb.pidfile), "");
        assert.ok(!locked(sb.pidfile));
      } finally {
        await Deno.remove(report).catch(() => {});
      }
    },
  });
}
