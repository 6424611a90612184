// The learned routing panel on the fleet map: whether learned routing applies (mode and
// weights.outcome), how often the learned ranking agreed with the claims' in shadow mode, and
// the recommendations in plain sentences. All of it from GET /fleet/recommendations: one point
// read of what the metrics pass keeps (it changes at most once a METRICS_SCHEDULE period), so
// it is fetched once a minute while the panel is on screen. Reading it never changes routing.
import { get } from "./api.js";
import { agoIso, fill, h } from "./dom.js";
import { state, subscribe } from "./live.js";

const EVERY_MS = 60000;

let panel = null;
let routing = null;
let failed = null; // the last error (shown quietly: the header's banner reports outages)
let lastFetch = 0;
let inflight = false;
let generation = 0; // a product switch drops the answer to an older request

function agreement(a) {
  if (!a || !a.claims) return "no claim compared yet";
  return `${Math.round(a.rate * 100)}% (${a.agreed} of ${a.claims} claims)`;
}

function strip() {
  const items = [
    ["Mode", routing.mode === "on" ? "on" : "shadow (not applied)", "mode"],
    ["Weight", `weights.outcome ${routing.weight}`, "weight"],
    ["Shadow agreement", agreement(routing.agreement), "agreement"],
    ["Learned", routing.learnedAt ? `${agoIso(routing.learnedAt)}, from ${routing.jobs} jobs` : "never", "learned"],
  ];
  return h("dl", { class: "ap-strip" },
    items.map(([label, value, key]) => h("div", { class: "ap-metric", "data-routing": key }, h("dt", null, label), h("dd", null, value))));
}

function render() {
  if (!panel) return;
  if (!routing) {
    fill(panel, h("h2", { class: "ap-title" }, "Learned routing"),
      h("p", { class: "lr-empty muted" }, failed ? `Learned routing unavailable: ${failed}` : "Loading learned routing…"));
    return;
  }
  const empty = !routing.recommendations.length;
  fill(panel,
    h("h2", { class: "ap-title" }, "Learned routing"),
    strip(),
    h("ul", { class: `lr-sentences${empty ? " lr-empty" : ""}` },
      routing.sentences.map((s) => h("li", { class: "lr-sentence" }, s))),
    h("p", { class: "small muted" }, "Recommendations only: they never change routing by themselves. ",
      h("a", { href: "#/settings" }, "weights.outcome"), " sets how much the learned term counts."));
}

async function refresh(force = false) {
  if (!panel || inflight || state.status === "idle" || state.status === "unauthorized") return;
  if (!force && Date.now() - lastFetch < EVERY_MS) return;
  inflight = true;
  lastFetch = Date.now();
  const asked = generation;
  let answer = null;
  let error = null;
  try {
    answer = await get("/fleet/recommendations");
  } catch (err) {
    error = err && err.describe ? err.describe() : String(err);
  }
  if (asked !== generation) return; // another product, or the panel left: not this answer
  inflight = false;
  if (error === null) routing = answer;
  failed = error;
  render();
}

/** Show the panel in ``el`` (the fleet map); returns what to call when leaving the view. */
export function mountRouting(el) {
  panel = el;
  routing = null;
  failed = null;
  lastFetch = 0;
  generation += 1;
  render();
  refresh(true);
  const off = subscribe((kind) => {
    if (kind === "reset") {
      generation += 1;
      inflight = false;
      routing = null;
      failed = null;
      lastFetch = 0;
      render();
    } else if (kind === "data") refresh();
  });
  return () => { off(); panel = null; generation += 1; };
}
