/**
 * The bench's bar chart, written by hand as SVG: one panel per comparison,
 * one bar per tool (median), each panel scaled to its own longest bar.
 * singleton-run in blue, peers in grey, floors in light grey.
 *
 * @module
 */

/** What the chart needs of a bench row. */
export interface ChartRow {
  /** The comparison. */
  readonly group: string;
  /** The tool. */
  readonly name: string;
  /** floor, ours or peer. */
  readonly kind: "floor" | "ours" | "peer";
  /** The unit of the median. */
  readonly unit: string;
  /** The median; undefined or NaN when nothing was measured. */
  readonly median?: number;
}

const esc = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll(
    '"',
    "&quot;",
  );

const COLORS = { ours: "#2563eb", peer: "#6b7280", floor: "#cbd5e1" } as const;

/**
 * Render the chart.
 *
 * @param rows the bench rows, in table order
 * @param subtitle the machine line
 * @returns an SVG document
 */
export function renderSvg(rows: readonly ChartRow[], subtitle: string): string {
  const width = 960;
  const labelW = 430;
  const barMax = width - labelW - 110;
  const barH = 16;
  const gap = 4;
  const out: string[] = [];
  let y = 56;
  const groups = [...new Set(rows.map((r) => r.group))];
  for (const group of groups) {
    const members = rows.filter((r) =>
      r.group === group && r.median !== undefined && Number.isFinite(r.median)
    );
    if (!members.length) continue;
    const max = Math.max(...members.map((r) => r.median!), 1e-9);
    out.push(
      `<text x="10" y="${y}" font-weight="bold" font-size="13">${esc(group)}</text>`,
    );
    y += 8;
    for (const r of members) {
      const w = Math.max(1, (r.median! / max) * barMax);
      const value = r.median! >= 100
        ? r.median!.toFixed(0)
        : r.median!.toFixed(r.median! >= 10 ? 1 : 2);
      out.push(
        `<text x="${labelW - 6}" y="${y + barH - 4}" text-anchor="end" font-size="11">${
          esc(r.name)
        }</text>`,
        `<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${
          COLORS[r.kind]
        }"><title>${esc(`${r.name}: ${value} ${r.unit}`)}</title></rect>`,
        `<text x="${labelW + w + 6}" y="${y + barH - 4}" font-size="11">${
          esc(`${value} ${r.unit}`)
        }</text>`,
      );
      y += barH + gap;
    }
    y += 22;
  }
  const height = y + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="16" font-weight="bold">singleton-run vs its peers (median; shorter is better)</text>`,
    `<text x="10" y="40" font-size="11" fill="#444">${esc(subtitle)}</text>`,
    ...out,
    `</svg>`,
    "",
  ].join("\n");
}
