// A small hand-drawn SVG line chart for the budget burndown: spent, spent + reserved, and
// the ceiling when there is one. No library, no build step.
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** points: [{at, spentUsd, reservedUsd, ceilingUsd}] oldest first (at least one). */
export function burndownChart(points, { width = 640, height = 220 } = {}) {
  const pad = { l: 56, r: 16, t: 14, b: 28 };
  const times = points.map((p) => Date.parse(p.at));
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 === t0) { t0 -= 60000; t1 += 60000; }
  const peak = Math.max(1, ...points.map((p) => Math.max(p.spentUsd + p.reservedUsd, p.ceilingUsd ?? 0))) * 1.1;
  const rough = peak / 4;
  const mag = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= rough);
  const top = step * 4;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - (v / top) * (height - pad.t - pad.b);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-labelledby": "burn-title" });
  const last = points[points.length - 1];
  svg.append(el("title", { id: "burn-title" },
    `Budget burndown: spent $${last.spentUsd.toFixed(2)}, reserved $${last.reservedUsd.toFixed(2)}` +
    (last.ceilingUsd === null || last.ceilingUsd === undefined ? ", no ceiling" : ` of a $${last.ceilingUsd.toFixed(2)} ceiling`)));
  for (let i = 0; i <= 4; i += 1) {
    const v = (top / 4) * i;
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, `$${Number.isInteger(v) ? v : v.toFixed(2)}`));
  }
  for (const t of [t0, t1]) {
    svg.append(el("text", { x: x(t), y: height - 8, "text-anchor": t === t0 ? "start" : "end", class: "axis" },
      new Date(t).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })));
  }
  const path = (values, cls) => {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(times[i]).toFixed(1)},${y(values(p)).toFixed(1)}`).join(" ");
    svg.append(el("path", { d, class: cls }));
  };
  // The ceiling as a step line: each point's ceiling holds until the next point (the last
  // one to the right edge); no segment where there was no ceiling.
  const has = (p) => p.ceilingUsd !== null && p.ceilingUsd !== undefined;
  const segments = [];
  points.forEach((p, i) => {
    if (!has(p)) return;
    const x1 = i + 1 < points.length ? x(times[i + 1]) : width - pad.r;
    const x0 = i === 0 && points.length === 1 ? pad.l : x(times[i]);
    segments.push(`M${x0.toFixed(1)},${y(p.ceilingUsd).toFixed(1)} H${x1.toFixed(1)}`);
  });
  if (segments.length) svg.append(el("path", { d: segments.join(" "), class: "ceiling" }));
  path((p) => p.spentUsd + p.reservedUsd, "committed");
  path((p) => p.spentUsd, "spent");
  for (let i = 0; i < points.length; i += 1) {
    svg.append(el("circle", { cx: x(times[i]), cy: y(points[i].spentUsd), r: 2.5, class: "dot" }));
  }
  return svg;
}
