import assert from "node:assert/strict";
import {
  bindUnixDatagram,
  C,
  close,
  libc,
  monotonicMicros,
  open,
  pidfdOpen,
  pipe,
  pollNow,
  pollWait,
  read,
  reap,
  recvNow,
  SystemError,
} from "../src/ffi/mod.ts";
import { spawn } from "../src/launch/spawn.ts";
import {
  notifyReady,
  notifyReloading,
  notifyStatus,
  notifyStopping,
} from "../src/service/notify.ts";

const fixture = new URL("./fixtures/notify_client.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

async function runClient(env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fixture],
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  assert.equal(out.code, 0, decoder.decode(out.stderr));
  return JSON.parse(decoder.decode(out.stdout));
}

function drain(fd: number): string[] {
  const got: string[] = [];
  for (;;) {
    const d = recvNow(fd, 4096);
    if (d === undefined) return got;
    got.push(decoder.decode(d));
  }
}

function checkDatagrams(got: string[], before: bigint): void {
  assert.equal(got.length, 5, JSON.stringify(got));
  assert.equal(got[0], "READY=1\nSTATUS=up 100%");
  assert.equal(got[1], "READY=1");
  assert.equal(got[2], "STATUS=serving requests");
  const m = /^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$/.exec(got[3]!);
  assert.ok(m, got[3]);
  const usec = BigInt(m[1]!);
  assert.ok(usec >= before && usec <= monotonicMicros(), "MONOTONIC_USEC is CLOCK_MONOTONIC now");
  assert.equal(got[4], "STOPPING=1");
}

Deno.test("notifyReady() and friends send sd_notify datagrams to a NOTIFY_SOCKET path", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/notify.sock`;
  const fd = bindUnixDatagram(path);
  try {
    const before = monotonicMicros();
    const result = await runClient({ NOTIFY_SOCKET: path });
    assert.deepEqual(result, {
      ready: true,
      notifyFdAfter: null,
      fdClosed: null,
      readyAgain: true,
      status: true,
      reloading: true,
      stopping: true,
    });
    checkDatagrams(drain(fd), before);
  } finally {
    close(fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("notifyReady() reaches an abstract NOTIFY_SOCKET (@name)", async () => {
  const name = `singleton-run-test-${crypto.randomUUID()}`;
  const fd = libc().socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK, 0);
  assert.ok(fd >= 0);
  try {
    const addr = new Uint8Array(C.SIZEOF_SOCKADDR_UN);
    new DataView(addr.buffer).setUint16(0, C.AF_UNIX, true);
    const bytes = new TextEncoder().encode(name);
    addr.set(bytes, 3);
    assert.equal(libc().bind(fd, addr, 3 + bytes.length), 0);
    const before = monotonicMicros();
    await runClient({ NOTIFY_SOCKET: `@${name}` });
    checkDatagrams(drain(fd), before);
  } finally {
    close(fd);
  }
});

Deno.test("notifyReady() writes a newline to NOTIFY_FD, closes it and forgets it", async () => {
  const dir = await Deno.makeTempDir();
  const [readEnd, writeEnd] = pipe();
  let pidfd: number | undefined;
  try {
    const out = open(`${dir}/out`, C.O_WRONLY | C.O_CREAT | C.O_CLOEXEC, 0o600);
    let pid: number;
    try {
      pid = spawn({
        path: Deno.execPath(),
        argv: [Deno.execPath(), "run", "-A", fixture],
        env: { ...Deno.env.toObject(), NOTIFY_FD: "5" },
        fds: { 1: out, 2: out, 5: writeEnd },
      });
    } finally {
      close(out);
      close(writeEnd);
    }
    pidfd = pidfdOpen(pid);
    assert.ok(pidfd !== undefined);
    let got = "";
    const deadline = performance.now() + 15_000;
    for (;;) {
      assert.ok(performance.now() < deadline, "no readiness within 15 s");
      await pollWait([{ fd: readEnd, events: C.POLLIN }], 1000);
      if (pollNow([{ fd: readEnd, events: C.POLLIN }])[0] === 0) continue;
      const chunk = read(readEnd, 16);
      if (chunk.length === 0) break; // EOF: the client closed its only copy
      got += decoder.decode(chunk);
    }
    assert.equal(got, "\n");
    await pollWait([{ fd: pidfd, events: C.POLLIN }], 15_000);
    assert.deepEqual(reap(pid), { exited: true, code: 0 });
    const result = JSON.parse(await Deno.readTextFile(`${dir}/out`));
    assert.deepEqual(result, {
      ready: true,
      notifyFdAfter: null,
      fdClosed: true,
      readyAgain: false,
      status: false,
      reloading: false,
      stopping: false,
    });
  } finally {
    if (pidfd !== undefined) close(pidfd);
    close(readEnd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("with neither NOTIFY_FD nor NOTIFY_SOCKET every notify call is a no-op", () => {
  const saved = [Deno.env.get("NOTIFY_FD"), Deno.env.get("NOTIFY_SOCKET")];
  Deno.env.delete("NOTIFY_FD");
  Deno.env.delete("NOTIFY_SOCKET");
  try {
    assert.equal(notifyReady("x"), false);
    assert.equal(notifyStatus("x"), false);
    assert.equal(notifyReloading(), false);
    assert.equal(notifyStopping(), false);
  } finally {
    if (saved[0] !== undefined) Deno.env.set("NOTIFY_FD", saved[0]);
    if (saved[1] !== undefined) Deno.env.set("NOTIFY_SOCKET", saved[1]);
  }
});

Deno.test("a NOTIFY_FD that is not open or a dead NOTIFY_SOCKET is a clear error", async () => {
  Deno.env.set("NOTIFY_FD", "987");
  try {
    assert.throws(() => notifyReady(), (e: unknown) => {
      assert.ok(e instanceof SystemError);
      assert.match(e.message, /NOTIFY_FD=987 is not an open descriptor/);
      return true;
    });
    assert.equal(Deno.env.get("NOTIFY_FD"), undefined, "the variable is used once");
  } finally {
    Deno.env.delete("NOTIFY_FD");
  }
  const dir = await Deno.makeTempDir();
  Deno.env.set("NOTIFY_SOCKET", `${dir}/nobody.sock`);
  try {
    assert.throws(() => notifyStatus("x"), (e: unknown) => {
      assert.ok(e instanceof SystemError);
      assert.equal(e.code, "ENOENT");
      assert.match(e.message, /nobody\.sock/);
      return true;
    });
    Deno.env.set("NOTIFY_SOCKET", "relative.sock");
    assert.throws(() => notifyStopping(), /neither an absolute path nor an @abstract name/);
  } finally {
    Deno.env.delete("NOTIFY_SOCKET");
    await Deno.remove(dir, { recursive: true });
  }
});

for (const flag of ["--notify-fd", "--notify-socket"]) {
  Deno.test(`notifyReady() readies a service under 'singleton-run start ${flag}'`, async () => {
    const cli = new URL("../cli.ts", import.meta.url).pathname;
    const service = new URL("./fixtures/notify_service.ts", import.meta.url).pathname;
    const dir = await Deno.makeTempDir();
    const pidFile = `${dir}/svc.pid`;
    const sr = (...args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, ...args],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
    try {
      const notifyArgs = flag === "--notify-fd" ? [flag, "5"] : [flag];
      const t0 = performance.now();
      const start = await sr(
        "start",
        "--pidfile",
        pidFile,
        ...notifyArgs,
        "--",
        Deno.execPath(),
        "run",
        "-A",
        service,
        dir,
      );
      const ms = performance.now() - t0;
      assert.equal(start.code, 0, decoder.decode(start.stderr));
      assert.ok(ms >= 400, `start returned after ${ms} ms, before the service was ready`);
      const pid = Number(decoder.decode(start.stdout).trim());
      assert.ok(pid > 0);
      const stop = await sr("stop", "--pidfile", pidFile);
      assert.equal(stop.code, 0, decoder.decode(stop.stderr));
      assert.equal(await Deno.readTextFile(`${dir}/bye`), "bye", "onShutdown ran on stop");
    } finally {
      await sr("stop", "--pidfile", pidFile);
      await Deno.remove(dir, { recursive: true });
    }
  });
}
