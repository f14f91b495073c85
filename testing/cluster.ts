/**
 * Real servers for the cluster-lock tests: a 3-member etcd on loopback and
 * a throwaway PostgreSQL, each in a temporary directory on free ports,
 * stopped (by pid) when disposed; and a network namespace joined to this
 * one by a veth pair, whose link can be cut, for partitions.
 *
 * @module
 */

/** Whether a program is on PATH (or at that path). */
export function installed(program: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${program}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A port nobody listens on now (the kernel's choice, released at once). */
export function freePort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Wait until `check` resolves true, at most `ms`. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** One etcd member: its process, and how to start it again. */
interface Member {
  name: string;
  client: string;
  start: () => Deno.ChildProcess;
  process: Deno.ChildProcess | undefined;
}

/** A 3-member etcd cluster on `host` (loopback by default). */
export class Etcd implements AsyncDisposable {
  readonly dir: string;
  readonly members: Member[];

  private constructor(dir: string, members: Member[]) {
    this.dir = dir;
    this.members = members;
  }

  /**
   * Start the cluster and wait until it answers.
   *
   * @param host the address the members listen on
   * @param options `anyAddress`: clients may connect through any address of
   *   this namespace (hosts in several network namespaces, each through its
   *   own veth: see {@link Etcd.urlVia})
   */
  static async start(
    host = "127.0.0.1",
    options: { readonly anyAddress?: boolean } = {},
  ): Promise<Etcd> {
    const dir = await Deno.makeTempDir({ prefix: "singleton-run-etcd-" });
    const ports = [0, 1, 2].map(() => [freePort(host), freePort(host)] as const);
    const peers = ports.map(([, peer], i) => `m${i}=http://${host}:${peer}`).join(",");
    const members: Member[] = ports.map(([client, peer], i) => {
      const args = [
        "--name",
        `m${i}`,
        "--data-dir",
        `${dir}/m${i}`,
        "--listen-client-urls",
        `http://${options.anyAddress ? "0.0.0.0" : host}:${client}`,
        "--advertise-client-urls",
        `http://${host}:${client}`,
        "--listen-peer-urls",
        `http://${host}:${peer}`,
        "--initial-advertise-peer-urls",
        `http://${host}:${peer}`,
        "--initial-cluster",
        peers,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        dir,
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
      ];
      const member: Member = {
        name: `m${i}`,
        client: `${host}:${client}`,
        process: undefined,
        start: () =>
          new Deno.Command("etcd", { args, stdout: "null", stderr: "null", stdin: "null" })
            .spawn(),
      };
      return member;
    });
    const etcd = new Etcd(dir, members);
    try {
      for (const m of members) m.process = m.start();
      await etcd.healthy(20_000);
    } catch (err) {
      await etcd[Symbol.asyncDispose]();
      throw err;
    }
    return etcd;
  }

  /** `HOST:PORT,HOST:PORT,HOST:PORT`. */
  get endpoints(): string {
    return this.members.map((m) => m.client).join(",");
  }

  /** The lock URL for a name. */
  url(name: string): string {
    return `etcd://${this.endpoints}/${name}`;
  }

  /** The lock URL for a name, every member reached through `address` (with `anyAddress`). */
  urlVia(address: string, name: string): string {
    const ends = this.members.map((m) =>
      `${address}:${m.client.slice(m.client.lastIndexOf(":") + 1)}`
    );
    return `etcd://${ends.join(",")}/${name}`;
  }

  /** Wait until a write through the cluster succeeds (it has a leader and a quorum). */
  async healthy(ms = 10_000): Promise<void> {
    await until(
      async () => {
        for (const m of this.members) {
          if (!m.process) continue;
          const r = await fetch(`http://${m.client}/v3/kv/put`, {
            method: "POST",
            body: JSON.stringify({ key: btoa("health"), value: btoa("ok") }),
            signal: AbortSignal.timeout(1000),
          }).catch(() => undefined);
          const ok = r?.ok ?? false;
          await r?.body?.cancel();
          if (ok) return true;
        }
        return false;
      },
      ms,
      "etcd to elect a leader",
    );
  }

  /**
   * A member that is not the leader (etcd's maintenance status says which
   * member leads): losing it costs no election.
   *
   * @returns its index
   */
  async follower(): Promise<number> {
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[i]!;
      if (!m.process) continue;
      const r = await fetch(`http://${m.client}/v3/maintenance/status`, {
        method: "POST",
        body: "{}",
        signal: AbortSignal.timeout(2000),
      }).catch(() => undefined);
      if (!r?.ok) {
        await r?.body?.cancel();
        continue;
      }
      const status = await r.json() as { header?: { member_id?: string }; leader?: string };
      if (status.header?.member_id !== undefined && status.header.member_id !== status.leader) {
        return i;
      }
    }
    throw new Error("no follower found");
  }

  /** SIGKILL member `i`. */
  async kill(i: number): Promise<void> {
    const m = this.members[i]!;
    if (!m.process) return;
    try {
      m.process.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    await m.process.status;
    m.process = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (let i = 0; i < this.members.length; i++) await this.kill(i);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** A throwaway PostgreSQL server, run as user `postgres`, trust authentication. */
export class Postgres implements AsyncDisposable {
  readonly dir: string;
  readonly host: string;
  readonly port: number;
  readonly #process: Deno.ChildProcess;

  private constructor(dir: string, host: string, port: number, process: Deno.ChildProcess) {
    this.dir = dir;
    this.host = host;
    this.port = port;
    this.#process = process;
  }

  /** Where Debian puts the server's programs, or undefined when it is not installed. */
  static bin(): string | undefined {
    try {
      const versions = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name).sort();
      const v = versions[versions.length - 1];
      return v === undefined ? undefined : `/usr/lib/postgresql/${v}/bin`;
    } catch {
      return undefined;
    }
  }

  /**
   * Start a server on `host` (and 127.0.0.1) and wait until it answers.
   *
   * @param host an extra address to listen on (a veth's, for partitions), or several
   */
  static async start(host: string | readonly string[] = "127.0.0.1"): Promise<Postgres> {
    const hosts = typeof host === "string" ? [host] : host;
    const bin = Postgres.bin()!;
    const dir = await Deno.makeTempDir({ prefix: "singleton-run-pg-" });
    await Deno.chmod(dir, 0o755);
    const data = `${dir}/data`;
    const asPostgres = (args: string[]) =>
      new Deno.Command("setpriv", {
        args: ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", ...args],
        stdout: "null",
        stderr: "piped",
        stdin: "null",
      });
    await Deno.mkdir(data);
    await new Deno.Command("chown", { args: ["postgres:postgres", data] }).output();
    const init = await asPostgres([`${bin}/initdb`, "-D", data, "-A", "trust", "-U", "postgres"])
      .output();
    if (!init.success) throw new Error(`initdb: ${new TextDecoder().decode(init.stderr)}`);
    // Trust the network namespaces' addresses too (initdb trusts loopback only).
    await Deno.writeTextFile(`${data}/pg_hba.conf`, "host all all 10.200.0.0/16 trust\n", {
      append: true,
    });
    const port = freePort();
    const listen = ["127.0.0.1", ...hosts.filter((h) => h !== "127.0.0.1")].join(",");
    const process = asPostgres([
      `${bin}/postgres`,
      "-D",
      data,
      "-k",
      data,
      "-h",
      listen,
      "-p",
      String(port),
    ]).spawn();
    const pg = new Postgres(dir, hosts[0]!, port, process);
    try {
      await until(
        async () => {
          const c = await Deno.connect({ hostname: "127.0.0.1", port });
          c.close();
          return true;
        },
        20_000,
        "PostgreSQL to listen",
      );
      // Listening is not accepting sessions yet ("the database system is starting up").
      await until(
        () => pg.psql("select 1").then(() => true, () => false),
        20_000,
        "PostgreSQL to accept sessions",
      );
    } catch (err) {
      await pg[Symbol.asyncDispose]();
      throw err;
    }
    return pg;
  }

  /** The lock URL for a name, through `host` (127.0.0.1 by default), as `user`. */
  url(name: string, host = "127.0.0.1", user = "postgres"): string {
    return `postgres://${user}@${host}:${this.port}/postgres?name=${name}`;
  }

  /**
   * One statement through the server's own psql, as the superuser over the
   * socket in its directory (trusted).
   *
   * @returns what it printed, trimmed
   */
  async psql(query: string): Promise<string> {
    const out = await new Deno.Command(`${Postgres.bin()}/psql`, {
      args: ["-h", `${this.dir}/data`, "-p", String(this.port), "-U", "postgres", "-XAtc", query],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    if (!out.success) throw new Error(`psql: ${new TextDecoder().decode(out.stderr)}`);
    return new TextDecoder().decode(out.stdout).trim();
  }

  /**
   * A login role with a password that the server asks for (SCRAM) on
   * loopback, ahead of the trust rules initdb wrote.
   *
   * @param role the role's name
   * @param password its password
   */
  async passwordRole(role: string, password: string): Promise<void> {
    await this.psql(`create role ${role} login password '${password.replaceAll("'", "''")}'`);
    const hba = `${this.dir}/data/pg_hba.conf`;
    const rules = await Deno.readTextFile(hba);
    await Deno.writeTextFile(hba, `host all ${role} 127.0.0.1/32 scram-sha-256\n${rules}`);
    await this.psql("select pg_reload_conf()");
    // The reload is asynchronous: wait until a login without the password is refused.
    await until(
      async () =>
        !(await new Deno.Command(`${Postgres.bin()}/psql`, {
          args: [
            "-h",
            "127.0.0.1",
            "-p",
            String(this.port),
            "-U",
            role,
            "-d",
            "postgres",
            "-wXc",
            "select 1",
          ],
          env: { PGCONNECT_TIMEOUT: "2" },
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).output()).success,
      10_000,
      "PostgreSQL to ask for the password",
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#process.kill("SIGQUIT"); // immediate shutdown
    } catch {
      // Gone already.
    }
    const done = await Promise.race([
      this.#process.status.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
    ]);
    if (!done) {
      try {
        this.#process.kill("SIGKILL");
      } catch {
        // Gone.
      }
      await this.#process.status;
    }
    await this.#process.stderr.cancel().catch(() => {});
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * A network namespace joined to this one by a veth pair: `outside` is this
 * side's address, `inside` the namespace's. `cut()` takes the link down.
 */
export class Netns implements AsyncDisposable {
  readonly name: string;
  readonly outside: string;
  readonly inside: string;
  readonly #dev: string;

  private constructor(name: string, dev: string, outside: string, inside: string) {
    this.name = name;
    this.#dev = dev;
    this.outside = outside;
    this.inside = inside;
  }

  /** Make one with a fresh name and a /30 of 10.200.X.Y. */
  static create(): Netns {
    const id = Math.floor(Math.random() * 60000) + 1;
    const name = `srt${id}`;
    const dev = `vsr${id}`;
    const a = Math.floor(id / 64) % 250;
    const b = (id % 64) * 4;
    const outside = `10.200.${a}.${b + 1}`;
    const inside = `10.200.${a}.${b + 2}`;
    const ns = new Netns(name, dev, outside, inside);
    const steps = [
      ["netns", "add", name],
      ["link", "add", dev, "type", "veth", "peer", "name", `${dev}p`],
      ["link", "set", `${dev}p`, "netns", name],
      ["addr", "add", `${outside}/30`, "dev", dev],
      ["link", "set", dev, "up"],
      ["-n", name, "addr", "add", `${inside}/30`, "dev", `${dev}p`],
      ["-n", name, "link", "set", `${dev}p`, "up"],
      ["-n", name, "link", "set", "lo", "up"],
    ];
    try {
      for (const args of steps) ip(args);
    } catch (err) {
      ns.#remove();
      throw err;
    }
    return ns;
  }

  /** Whether network namespaces can be made here (root, iproute2). */
  static supported(): boolean {
    return Deno.uid() === 0 && installed("ip");
  }

  /** The argv prefix that runs a command inside the namespace. */
  get exec(): string[] {
    return ["ip", "netns", "exec", this.name];
  }

  /** Cut the link: nothing crosses between the namespace and this side. */
  cut(): void {
    ip(["link", "set", this.#dev, "down"]);
  }

  /** Join them again after a cut. */
  heal(): void {
    ip(["link", "set", this.#dev, "up"]);
  }

  #remove(): void {
    for (const args of [["link", "del", this.#dev], ["netns", "del", this.name]]) {
      try {
        ip(args);
      } catch {
        // Never made, or gone.
      }
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#remove();
    return Promise.resolve();
  }
}

function ip(args: string[]): void {
  const r = new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!r.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}
