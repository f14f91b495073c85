import assert from "node:assert/strict";
import { C, close, open, SystemError } from "../src/ffi/mod.ts";
import {
  listOpenFds,
  openFdCount,
  type ResourceWarning,
  rssKiB,
  setCloseOnExec,
  watchResources,
} from "../src/service/watchdog.ts";

const fixture = new URL("./fixtures/leaky.ts", import.meta.url).pathname;

async function watchChild(kind: string): Promise<ResourceWarning[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fixture, kind],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const lines = text.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.at(-1).done, true, text);
  return lines.slice(0, -1);
}

Deno.test("rssKiB() and openFdCount() read /proc/self", () => {
  const rss = rssKiB();
  assert.ok(rss > 10_000 && rss < 10_000_000, `${rss} KiB`);
  const before = openFdCount();
  const fd = open("/dev/null", C.O_RDONLY | C.O_CLOEXEC);
  try {
    assert.equal(openFdCount(), before + 1);
    const entry = listOpenFds().find((e) => e.fd === fd);
    assert.deepEqual(entry, { fd, target: "/dev/null", closeOnExec: true });
  } finally {
    close(fd);
  }
  assert.equal(openFdCount(), before);
  assert.ok(!listOpenFds().some((e) => e.fd === fd));
});

Deno.test("setCloseOnExec() sets and clears FD_CLOEXEC", () => {
  const fd = open("/dev/null", C.O_RDONLY);
  try {
    assert.equal(listOpenFds().find((e) => e.fd === fd)?.closeOnExec, false);
    setCloseOnExec(fd);
    assert.equal(listOpenFds().find((e) => e.fd === fd)?.closeOnExec, true);
    setCloseOnExec(fd, false);
    assert.equal(listOpenFds().find((e) => e.fd === fd)?.closeOnExec, false);
  } finally {
    close(fd);
  }
  assert.throws(() => setCloseOnExec(fd), (e) => e instanceof SystemError && e.code === "EBADF");
  assert.throws(() => setCloseOnExec(-1), SystemError);
});

Deno.test("watchResources() checks its options and samples on demand", () => {
  assert.throws(() => watchResources({ interval: 0 }), RangeError);
  assert.throws(() => watchResources({ maxFds: -1 }), RangeError);
  assert.throws(() => watchResources({ samples: 2.5 }), RangeError);
  const seen: ResourceWarning[] = [];
  using watch = watchResources({ maxFds: 1, onWarn: (w) => seen.push(w) });
  const s = watch.sample();
  assert.ok(s.fds > 1 && s.rssKiB > 0);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.resource, "fds");
  assert.equal(seen[0]!.reason, "limit");
  watch.sample();
  assert.equal(seen.length, 1, "a limit warns once per excursion");
});

Deno.test("the resource watch flags a deliberate descriptor leak in a child", async () => {
  const warnings = await watchChild("fds");
  const fds = warnings.filter((w) => w.resource === "fds");
  assert.ok(fds.some((w) => w.reason === "growth"), JSON.stringify(warnings));
  assert.ok(fds.some((w) => w.reason === "limit"), JSON.stringify(warnings));
  const growth = fds.find((w) => w.reason === "growth")!;
  assert.equal(growth.samples!.length, 6);
  assert.match(growth.message, /fds warning: grew at each of the last 5 samples/);
});

Deno.test("the resource watch flags a deliberate memory growth in a child", async () => {
  const warnings = await watchChild("memory");
  const rss = warnings.filter((w) => w.resource === "rss");
  assert.ok(rss.some((w) => w.reason === "growth"), JSON.stringify(warnings));
  assert.ok(rss.some((w) => w.reason === "limit"), JSON.stringify(warnings));
  assert.ok(!warnings.some((w) => w.resource === "fds"), "no descriptor leak was reported");
});

Deno.test("the resource watch stays quiet about descriptors in a child that does not leak", async () => {
  const warnings = await watchChild("steady");
  assert.deepEqual(warnings.filter((w) => w.resource === "fds"), []);
  assert.deepEqual(warnings.filter((w) => w.reason === "limit"), []);
});

Deno.test("the library's warnings go to LogTape: nothing unless the program configures a sink", async () => {
  const mod = new URL("../mod.ts", import.meta.url).href;
  const run = async (configured: boolean) => {
    const code = `
      import { configure, getConsoleSink } from "@logtape/logtape";
      import { watchResources } from ${JSON.stringify(mod)};
      if (${configured}) {
        await configure({
          sinks: { console: getConsoleSink() },
          loggers: [
            { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
            { category: ["singleton-run"], lowestLevel: "info", sinks: ["console"] },
          ],
        });
      }
      using watch = watchResources({ maxFds: 1 });
      watch.sample();
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--config", new URL("../deno.json", import.meta.url).pathname, code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  };
  assert.equal(await run(false), "", "a program that configures nothing sees nothing");
  assert.match(await run(true), /singleton-run.*watchdog.*fds warning: [0-9]+ descriptors open/);
});
