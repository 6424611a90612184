// A job's dependency graph (GET /fleet/jobs/{id}/dag) drawn as SVG: the job on top, the jobs
// it waits for in rows below it (a job shared by several waiters is drawn once), each box
// coloured by stage and linked to its job page. Text goes in through textContent only.
const NS = "http://www.w3.org/2000/svg";
const BOX_W = 210;
const BOX_H = 48;
const GAP_X = 26;
const GAP_Y = 58;
const PAD = 12;

function el(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** The tree as a graph: nodes by id (each on the row of its longest path from the root) and
 *  the edges "waits for", each once. */
export function graphOf(root) {
  const nodes = new Map();
  const edges = new Map(); // "from>to" -> {from, to, any}
  function walk(node, depth, parent, mode) {
    let known = nodes.get(node.id);
    if (!known) {
      known = { id: node.id, title: node.title ?? null, stage: node.stage ?? null, holder: node.holder ?? null,
        mode: node.mode ?? null, redacted: !!node.redacted, missing: !!node.missing, layer: depth, order: nodes.size };
      nodes.set(node.id, known);
    }
    known.layer = Math.max(known.layer, depth);
    if (parent) edges.set(`${parent}>${node.id}`, { from: parent, to: node.id, any: mode === "any" });
    for (const dep of node.deps || []) walk(dep, depth + 1, node.id, node.mode);
  }
  walk(root, 0, null, null);
  return { nodes, edges: [...edges.values()] };
}

const DUMMY_W = 14; // the width a long edge takes in a row it crosses

/** Rows of items, top (the root) first: the jobs, and a narrow stand-in on each row a long
 *  edge crosses (so it passes between the boxes, never through one); each row ordered under
 *  the items it hangs from. Returns {rows, links: [[from, to]], chains: edge -> item ids}. */
function layout(graph) {
  const rows = [];
  const items = new Map();
  for (const n of [...graph.nodes.values()].sort((a, b) => a.order - b.order)) {
    items.set(n.id, { id: n.id, w: BOX_W, layer: n.layer });
    (rows[n.layer] ||= []).push(n.id);
  }
  const links = [];
  const chains = new Map();
  graph.edges.forEach((e, k) => {
    const a = graph.nodes.get(e.from).layer, b = graph.nodes.get(e.to).layer;
    const chain = [e.from];
    for (let layer = a + 1; layer < b; layer += 1) {
      const id = `~${k}~${layer}`;
      items.set(id, { id, w: DUMMY_W, layer, dummy: true });
      rows[layer].push(id);
      chain.push(id);
    }
    chain.push(e.to);
    for (let i = 1; i < chain.length; i += 1) links.push([chain[i - 1], chain[i]]);
    chains.set(e, chain);
  });
  const x = new Map();
  rows.forEach((row, r) => {
    if (r > 0) {
      const centre = (id) => {
        const above = links.filter(([from, to]) => to === id && x.has(from)).map(([from]) => x.get(from));
        return above.length ? above.reduce((s, v) => s + v, 0) / above.length : Infinity;
      };
      const keyed = row.map((id, i) => ({ id, c: centre(id), i }));
      keyed.sort((p, q) => p.c - q.c || p.i - q.i);
      rows[r] = keyed.map((k) => k.id);
    }
    let left = 0;
    for (const id of rows[r]) { const w = items.get(id).w; x.set(id, left + w / 2); left += w + GAP_X; }
  });
  return { rows, items, chains };
}

/** The graph as an SVG element; `current` (the page's job) is outlined. */
export function dagSvg(root, current) {
  const graph = graphOf(root);
  const { rows, items, chains } = layout(graph);
  const rowWidth = (row) => row.reduce((s, id) => s + items.get(id).w, 0) + (row.length - 1) * GAP_X;
  const width = PAD * 2 + Math.max(...rows.map(rowWidth));
  const height = PAD * 2 + rows.length * BOX_H + (rows.length - 1) * GAP_Y;
  const pos = new Map(); // item -> {cx, y}: its centre's x, its row's top
  rows.forEach((row, r) => {
    const left = (width - rowWidth(row)) / 2;
    let at = left;
    for (const id of row) {
      const w = items.get(id).w;
      pos.set(id, { cx: at + w / 2, y: PAD + r * (BOX_H + GAP_Y) });
      at += w + GAP_X;
    }
  });
  const svg = el("svg", {
    class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": `Dependency graph: ${graph.nodes.size} job${graph.nodes.size === 1 ? "" : "s"}`,
  });
  const marker = `dag-arrow-${Math.random().toString(36).slice(2, 8)}`;
  const head = el("marker", {
    id: marker, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  });
  head.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrowhead" }));
  const defs = el("defs");
  defs.append(head);
  svg.append(defs);
  const edgeLayer = el("g", { class: "dag-edges" });
  for (const [e, chain] of chains) {
    // Down from the waiting job's bottom, straight through each row it crosses, into the top
    // of the job it waits for; a smooth curve between rows.
    const a = pos.get(e.from);
    let d = `M ${a.cx} ${a.y + BOX_H}`;
    let last = { x: a.cx, y: a.y + BOX_H };
    for (const id of chain.slice(1)) {
      const p = pos.get(id);
      const end = { x: p.cx, y: items.get(id).dummy ? p.y : p.y - 2 };
      const mid = (last.y + end.y) / 2;
      d += ` C ${last.x} ${mid}, ${end.x} ${mid}, ${end.x} ${end.y}`;
      if (items.get(id).dummy) d += ` L ${p.cx} ${p.y + BOX_H}`;
      last = { x: p.cx, y: p.y + BOX_H };
    }
    edgeLayer.append(el("path", {
      class: `dag-edge${e.any ? " any" : ""}`, "data-from": e.from, "data-to": e.to, d, "marker-end": `url(#${marker})`,
    }));
  }
  svg.append(edgeLayer);
  for (const n of graph.nodes.values()) {
    const { cx, y } = pos.get(n.id);
    const x = cx - BOX_W / 2;
    const stage = n.missing ? "missing" : n.stage;
    const label = n.missing ? "missing job" : n.redacted ? "(not readable)" : n.title || n.id;
    const line2 = n.missing ? n.id : `${String(stage).replace("_", " ")}${n.holder ? ` · ${n.holder}` : ""}`;
    const box = el("g", { class: `dag-node s-${stage}${n.id === current ? " current" : ""}`, "data-job": n.id, "data-stage": stage });
    box.append(
      el("title", null, `${label} (${n.id}) — ${line2}`),
      el("rect", { x, y, width: BOX_W, height: BOX_H, rx: 6 }),
      el("text", { x: x + 10, y: y + 19, class: "dag-title" }, clip(label, 30)),
      el("text", { x: x + 10, y: y + 37, class: "dag-stage" }, clip(line2, 34)));
    if (n.missing) {
      svg.append(box);
    } else {
      const link = el("a", { href: `#/jobs/${n.id}`, "aria-label": `${label}: ${line2}` });
      link.append(box);
      svg.append(link);
    }
  }
  return svg;
}

/** Every job id in the tree (to follow their events). */
export function dagIds(root) {
  return new Set(graphOf(root).nodes.keys());
}
