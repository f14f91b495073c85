/**
 * The cluster lock's password is shown nowhere and stored nowhere another
 * user can read, and never travels in an argv: a URL that holds one is
 * refused without being echoed, and a password given in `PGPASSWORD` or
 * `--lock-password-file` reaches the keeper (which logs in with it, against
 * a PostgreSQL that asks for it) and nothing `nobody` can read: no process's
 * argv or environment, no state file, no status answer, not the program's
 * environment.
 */

import assert from "node:assert/strict";
import { installed, Postgres } from "../../testing/cluster.ts";
import { assertCleanError, marker, Sandbox, SOURCE, sr } from "./harness.ts";

const ROOT = Deno.uid() === 0;
const PG = Postgres.bin() !== undefined && installed("setpriv") && ROOT;
const SECRET = "Zq7-lock-Secret-4711";

/** Everything `nobody` can read of every process: argv and environment. */
async function readableByNobody(): Promise<string> {
  const out = await new Deno.Command("setpriv", {
    args: [
      "--reuid=nobody",
      "--regid=nogroup",
      "--clear-groups",
      "--",
      "sh",
      "-c",
      "cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null; true",
    ],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

/** A file with the password, owned by `owner`, with `mode`. */
function passwordFile(sb: Sandbox, name: string, mode = 0o600, owner = 0): string {
  const path = sb.path(name);
  Deno.writeTextFileSync(path, `${SECRET}\n`, { mode });
  Deno.chmodSync(path, mode);
  Deno.chownSync(path, owner, owner === 0 ? 0 : owner);
  return path;
}

Deno.test("a password in a --lock URL is refused in one line that does not show it, and nothing starts", async () => {
  await using sb = await Sandbox.create();
  const urls = [
    `postgres://locker:${SECRET}@127.0.0.1:1/postgres?name=x`,
    `postgresql://locker:${SECRET}@127.0.0.1/postgres?name=x`,
    // Not percent-encoded: the "/" ends the authority, and the password must still not show.
    `postgres://locker:${SECRET.slice(0, 6)}/${SECRET.slice(6)}@127.0.0.1/postgres?name=x`,
    `etcd://root:${SECRET}@127.0.0.1:1/x`,
  ];
  for (const url of urls) {
    for (
      const args of [
        ["start", "--pidfile", sb.pidfile, "--lock", url, "--", "sleep", marker()],
        ["run", "--pidfile", sb.pidfile, "--lock", url, "--", "sleep", marker()],
        ["status", "--lock", url, "--json"],
      ]
    ) {
      const r = await sr(SOURCE, args);
      assertCleanError(r, 2, /bad --lock ".*:\*\*\*@/);
      assert.ok(
        !r.stderr.includes(SECRET.slice(0, 6)),
        `${args[0]} shows the password: ${r.stderr}`,
      );
      assert.ok(!r.stderr.includes(SECRET.slice(6)), `${args[0]} shows the password: ${r.stderr}`);
      assert.deepEqual(sb.list(), [], `${args[0]} left files behind`);
    }
  }
  // etcd's client takes no user at all: said so, without the password either.
  const etcd = await sr(SOURCE, ["status", "--lock", `etcd://root:${SECRET}@127.0.0.1:1/x`]);
  assertCleanError(etcd, 2, /takes no USER\[:PASSWORD\]@/);
});

Deno.test({
  name:
    "--lock-password-file must be a regular file of one name, owned by the caller or root, that nobody else can read",
  ignore: !ROOT,
  async fn() {
    await using sb = await Sandbox.create();
    const url = "postgres://locker@127.0.0.1:1/postgres?name=x";
    const start = (file: string, lock = url) =>
      sr(SOURCE, [
        "start",
        "--pidfile",
        sb.path("d.pid"),
        "--lock",
        lock,
        "--lock-password-file",
        file,
        "--",
        "sleep",
        marker(),
      ]);
    const nobody = Number(
      new TextDecoder().decode(
        new Deno.Command("id", { args: ["-u", "nobody"] }).outputSync().stdout,
      ),
    );
    const cases: [string, RegExp][] = [
      [
        passwordFile(sb, "readable", 0o644),
        /has mode 0644: group and other users must have no access/,
      ],
      [passwordFile(sb, "group", 0o640), /has mode 0640/],
      [
        passwordFile(sb, "theirs", 0o600, nobody),
        /is owned by user "nobody" \(uid \d+\): it must be owned by root/,
      ],
      [
        sb.path("missing"),
        /--lock-password-file ".*missing" does not exist/,
      ],
    ];
    Deno.symlinkSync(passwordFile(sb, "target"), sb.path("link"));
    cases.push([sb.path("link"), /symbolic link, which is never followed/]);
    Deno.linkSync(sb.path("target"), sb.path("hardlink"));
    cases.push([sb.path("hardlink"), /has 2 hard links/]);
    new Deno.Command("mkfifo", { args: [sb.path("fifo")] }).outputSync();
    cases.push([sb.path("fifo"), /is a FIFO, not a regular file/]);
    Deno.writeTextFileSync(sb.path("empty"), "\n", { mode: 0o600 });
    cases.push([sb.path("empty"), /first line is empty/]);
    const before = sb.list();
    for (const [file, why] of cases) {
      const r = await start(file);
      assertCleanError(r, 2, why);
      assert.ok(!r.stderr.includes(SECRET), r.stderr);
      assert.deepEqual(sb.list(), before, `left files behind for ${file}`);
    }
    // A password file goes with PostgreSQL only (etcd's client takes no password).
    const own = passwordFile(sb, "own");
    const etcd = await start(own, "etcd://127.0.0.1:1/x");
    assertCleanError(etcd, 2, /--lock-password-file needs a postgres:\/\/ --lock URL/);
    // Without --lock, the option is a mistake of its own.
    const stray = await sr(SOURCE, [
      "status",
      "--pidfile",
      sb.path("d.pid"),
      "--lock-password-file",
      own,
    ]);
    assertCleanError(stray, 2, /--lock-password-file needs --lock/);
  },
});

Deno.test({
  name:
    "PostgreSQL asking for a password: the keeper logs in with the file's or PGPASSWORD's, and nobody can read it anywhere",
  ignore: !PG,
  async fn() {
    await using pg = await Postgres.start();
    await pg.passwordRole("locker", SECRET);
    await using sb = await Sandbox.create();
    const file = passwordFile(sb, "password");
    const url = pg.url("guarded", "127.0.0.1", "locker");
    const program = (tag: string) => [
      "bash",
      "-c",
      `env > ${sb.path(`${tag}.env`)}; exec sleep ${marker()}`,
    ];
    const startArgs = (tag: string, extra: string[]) => [
      "start",
      "--pidfile",
      sb.path(`${tag}.pid`),
      "--lock",
      url,
      ...extra,
      "--",
      ...program(tag),
    ];

    // No password: the server refuses the keeper, so the test below means something.
    const refused = await sr(SOURCE, startArgs("none", []));
    assertCleanError(refused, 1, /password/);

    // Relative to the caller's directory, though the keeper runs in /.
    const a = await sr(SOURCE, startArgs("a", ["--lock-password-file", "password"]), {
      cwd: sb.dir,
    });
    assert.equal(a.code, 0, a.stderr);
    sb.track(Number(a.stdout.trim()));
    const status = await sr(SOURCE, ["status", "--json", "--pidfile", sb.path("a.pid")]);
    assert.equal(status.code, 0, status.stderr);
    sb.track(JSON.parse(status.stdout).keeper);
    assert.match(status.stdout, /"lock":\{"url":"postgres:\/\/locker@/);
    const held = await sr(SOURCE, [
      "status",
      "--lock",
      url,
      "--lock-password-file",
      file,
      "--json",
    ]);
    assert.equal(held.code, 0, held.stdout + held.stderr);

    // The same lock through PGPASSWORD: held already, so 3, after a login that worked.
    const b = await sr(SOURCE, startArgs("b", []), { env: { PGPASSWORD: SECRET } });
    assert.equal(b.code, 3, b.stderr);

    await new Promise((r) => setTimeout(r, 200));
    const env = Deno.readTextFileSync(sb.path("a.env"));
    assert.match(env, /^SINGLETON_RUN_LOCK_URL=postgres:\/\/locker@127\.0\.0\.1:/m);
    const seen = [
      await readableByNobody(),
      env,
      status.stdout,
      held.stdout,
      held.stderr,
      a.stderr,
      b.stderr,
      ...sb.list().filter((f) => f.endsWith(".state")).map((f) =>
        Deno.readTextFileSync(sb.path(f))
      ),
    ].join("\n");
    assert.ok(!seen.includes(SECRET), "the password is readable somewhere");

    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.path("a.pid")]);
    assert.equal(stop.code, 0, stop.stderr);
  },
});
