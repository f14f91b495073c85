/**
 * A full disk under `--supervise --output FILE`: the output file on a 1 MiB
 * tmpfs (mounted in a private mount namespace, so the machine's mounts are
 * untouched) is filled up, then freed. Output trouble must never cost the
 * service: the supervisor and its child run on (same pids), the lines that
 * cannot be written are dropped and counted (`status --json`), the file says
 * so once, where the gap is, and lines are written again once space returns.
 * Without root (mount) it says `skipped: ...`.
 */

import assert from "node:assert/strict";
import { eventually, exists, isAlive, LineChild, sleep } from "../../testing/process.ts";
import { type Result, Sandbox, SOURCE, sr, STARTS_FINE } from "./harness.ts";

const CAN_MOUNT = Deno.uid() === 0 && exists("/usr/bin/unshare") && exists("/usr/bin/nsenter");

/** A private mount namespace holding a small tmpfs at `dir`, kept alive by one process. */
class SmallDisk implements AsyncDisposable {
  readonly #holder: LineChild;
  private constructor(holder: LineChild, readonly dir: string) {
    this.#holder = holder;
  }

  /** Mount a tmpfs of `size` at `dir` in a new private mount namespace. */
  static async mount(dir: string, size: string): Promise<SmallDisk> {
    const holder = new LineChild("unshare", [
      "-m",
      "--propagation",
      "private",
      "--",
      "sh",
      "-c",
      'mount -t tmpfs -o "size=$2,mode=0755" tmpfs "$1" && echo mounted && exec sleep 3600',
      "sh",
      dir,
      size,
    ]);
    const disk = new SmallDisk(holder, dir);
    const said = await holder.line(10_000).catch(() => undefined);
    if (said !== "mounted") {
      await disk[Symbol.asyncDispose]();
      throw new Error(`cannot mount a tmpfs at ${dir} in a private namespace`);
    }
    return disk;
  }

  /** Run a command inside the namespace. */
  get prefix(): string[] {
    return ["nsenter", "-t", String(this.#holder.pid), "-m", "--"];
  }

  /** The path, inside the namespace, of a file on the small disk, as this process reaches it. */
  inside(name: string): string {
    return `/proc/${this.#holder.pid}/root${this.dir}/${name}`;
  }

  /** Fill what is left of the disk with one file. */
  fill(name: string): void {
    const f = Deno.openSync(this.inside(name), { write: true, create: true });
    const chunk = new Uint8Array(65536);
    try {
      for (;;) f.writeSync(chunk);
    } catch (err) {
      if (!(err instanceof Error && /space/i.test(err.message))) throw err;
    } finally {
      f.close();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#holder[Symbol.asyncDispose](); // the namespace, and its tmpfs, go with it
  }
}

function show(r: Result): string {
  return `exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
}

Deno.test({
  name:
    "--supervise --output on a full disk: the child runs on, lines are dropped and counted, said once, written again when space returns",
  ignore: !CAN_MOUNT,
  async fn() {
    await using sb = await Sandbox.create();
    const mountpoint = sb.path("small");
    Deno.mkdirSync(mountpoint);
    await using disk = await SmallDisk.mount(mountpoint, "1m");
    const out = `${mountpoint}/out.log`;
    const status = async () => {
      const r = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
      return { r, json: JSON.parse(r.stdout || "{}") };
    };
    // Ten numbered lines every 10 ms, so the gap shows as missing numbers.
    const lines =
      'i=0; while :; do for j in 0 1 2 3 4 5 6 7 8 9; do echo "line $i"; i=$((i+1)); done; sleep 0.01; done';
    const args = ["--supervise", "--output", out, "--pidfile", sb.pidfile, "--", "bash", "-c"];
    const start = await sr(SOURCE, ["start", ...STARTS_FINE, ...args, lines], {
      prefix: disk.prefix,
    });
    assert.equal(start.code, 0, show(start));
    const supervisor = Number(start.stdout.trim());
    sb.track(supervisor);
    const { json: first } = await status();
    const child = first.supervisor?.childPid;
    assert.ok(child > 0 && isAlive(child), `a child runs: ${JSON.stringify(first)}`);
    sb.track(child);
    const text = () => Deno.readTextFileSync(disk.inside("out.log"));
    await eventually("the first lines", () => /line 9\n/.test(text()), 10_000);

    disk.fill("filler");
    // The last page of the output file fills up first; then lines are dropped.
    let dropped = 0;
    await eventually("status --json to count dropped lines", async () => {
      const { json } = await status();
      dropped = json.supervisor?.dropped ?? 0;
      return dropped > 0 || !isAlive(supervisor);
    }, 30_000);
    await sleep(500);
    assert.ok(
      isAlive(supervisor) && isAlive(child),
      `with the disk full, supervisor ${supervisor} runs: ${isAlive(supervisor)}, child ${child} ` +
        `runs: ${isAlive(child)}; the state file: ${Deno.readTextFileSync(`${sb.pidfile}.state`)}`,
    );
    const { r: full, json: during } = await status();
    assert.equal(full.code, 0, show(full));
    assert.equal(during.supervisor?.childPid, child, `the same child: ${show(full)}`);
    assert.ok(during.supervisor?.dropped > 0, `dropped lines counted: ${show(full)}`);

    const lastBefore = Math.max(...[...text().matchAll(/^line (\d+)$/gm)].map((m) => +m[1]!));
    Deno.removeSync(disk.inside("filler"));
    await eventually(
      "lines written again after space returned",
      () => [...text().matchAll(/^line (\d+)$/gm)].some((m) => +m[1]! > lastBefore + 100),
      10_000,
    );
    assert.ok(isAlive(child), "the same child still runs");

    const written = text().split("\n");
    assert.equal(written.pop(), "", "the file ends with a whole line");
    const notices = written.filter((l) => l.startsWith("singleton-run[") && /dropped/.test(l));
    assert.equal(notices.length, 1, `one notice of the drop in the file: ${notices.join(" | ")}`);
    const numbers: number[] = [];
    for (const l of written) {
      if (l.startsWith("singleton-run[")) continue;
      const m = /^line (\d+)$/.exec(l);
      assert.ok(m, `only whole lines in the file, not ${JSON.stringify(l)}`);
      numbers.push(Number(m[1]));
    }
    for (let i = 1; i < numbers.length; i++) {
      assert.ok(numbers[i]! > numbers[i - 1]!, `lines in order: ${numbers[i - 1]}, ${numbers[i]}`);
    }
    const missing = numbers.at(-1)! - numbers[0]! + 1 - numbers.length;
    assert.ok(missing > 0, "some lines were dropped");
    // The state is rewritten at most once a second while only the count moves.
    await eventually("status --json to count every missing line", async () => {
      const { json } = await status();
      return json.supervisor?.dropped === missing;
    }, 5000).catch(async () => {
      const { r } = await status();
      assert.fail(`${missing} lines missing from the file, status --json says: ${show(r)}`);
    });

    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile], { prefix: disk.prefix });
    assert.equal(stop.code, 0, show(stop));
    assert.ok(!isAlive(child) && !isAlive(supervisor), "stop ended both");
  },
});
