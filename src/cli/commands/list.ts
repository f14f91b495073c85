/**
 * `list` (`ls`): every service in the directory of services, and each
 * `--pidfile` given, as aligned rows (or a JSON array of status objects).
 * Like `status`, it never waits and loads only what a status reads.
 *
 * @module
 */

// The list module itself, not the control index (see status.ts).
import { list, type ServiceReport } from "../../control/list.ts";
import { EXIT } from "../exit.ts";
import { out } from "../output.ts";
import type { Invocation } from "../parse.ts";
import { formatUptime } from "./status.ts";

/** Run `list`. */
export function listCommand(inv: Invocation): number {
  const reports = list({ pidfiles: inv.values.pidfiles });
  if (inv.values.json) out(JSON.stringify(reports));
  else if (reports.length > 0) out(table(reports));
  return EXIT.OK;
}

/** The columns, each a heading and what it shows of a report. */
const COLUMNS: readonly [string, (r: ServiceReport) => string][] = [
  ["NAME", (r) => printable(r.name)],
  ["STATE", (r) => r.state],
  ["PID", (r) => r.pid === null ? "-" : String(r.pid)],
  ["UPTIME", (r) => r.uptimeSeconds === undefined ? "-" : formatUptime(r.uptimeSeconds)],
  ["RESTARTS", (r) => String(r.supervisor?.restarts ?? r.failed?.restarts ?? "-")],
  ["HOLDER", holderOf],
  ["LOCK", (r) => r.lock === undefined ? "-" : `${r.lock.key}#${r.lock.token}`],
  ["HEALTH", (r) => healthOf(r) ?? "-"],
  ["COMMAND", (r) => commandOf(r)],
];

/** One aligned row per report, under a heading; the health column only when one has health. */
function table(reports: readonly ServiceReport[]): string {
  const columns = COLUMNS.filter(([head]) =>
    head !== "HEALTH" || reports.some((r) => healthOf(r) !== undefined)
  );
  const rows = [
    columns.map(([head]) => head),
    ...reports.map((r) => columns.map(([, cell]) => cell(r))),
  ];
  const widths = columns.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i]!)).join("  ")
      .trimEnd()
  ).join("\n");
}

/** Who holds the lock of a running service: the program itself, a keeper or a supervisor. */
function holderOf(r: ServiceReport): string {
  if (r.state !== "running") return "-";
  if (r.supervisor !== undefined) return "supervisor";
  if (r.keeper !== undefined) return `keeper ${r.keeper}`;
  return "self";
}

/** The health a report carries (a supervisor's health check), when it has one. */
function healthOf(r: ServiceReport): string | undefined {
  const found = (r as { health?: unknown }).health ??
    (r.supervisor as { health?: unknown } | undefined)?.health;
  if (typeof found === "string") return found;
  const state = (found as { state?: unknown } | undefined)?.state;
  return typeof state === "string" ? state : undefined;
}

/** The recorded command, else what /proc shows, as a shell would quote it. */
function commandOf(r: ServiceReport): string {
  const argv = r.spec?.command ?? r.cmdline;
  if (argv === undefined) return "-";
  return argv.map((arg) =>
    /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${printable(arg).replaceAll("'", "'\\''")}'`
  ).join(" ");
}

/** Text with control characters escaped, so a row stays one line. */
function printable(text: string): string {
  const hex = (c: string) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, hex);
}
