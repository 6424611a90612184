// The alerts panel on the fleet map (the main view): a metrics strip (utilization, queue
// depth, oldest queued job, spend vs ceiling) and the active alerts (key, severity, message,
// since), with the recent raise/clear events. Both come from what the metrics timer stored:
// GET /fleet/metrics and GET /fleet/alerts (point reads), fetched every 10 s while the panel
// is on screen and at once when an alert event arrives in the live event feed.
import { get } from "./api.js";
import { ago, fill, h, secondsSince, timeEl, usd } from "./dom.js";
import { state, subscribe } from "./live.js";

const EVERY_MS = 10000;
const RECENT = 8;

let panel = null;
let metrics = null;
let alerts = null;
let failed = null; // the last error (shown quietly: the header's banner reports outages)
let lastFetch = 0;
let inflight = false;

const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(x * 100)}%`);

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "none";
  return ago(seconds).replace(" ago", "");
}

function strip() {
  if (!metrics) return h("p", { class: "ap-strip muted" }, failed ? `Metrics unavailable: ${failed}` : "No metrics yet.");
  const u = metrics.utilization || {};
  const depth = metrics.queueDepth || {};
  const spend = metrics.spend;
  const items = [
    ["Utilization", `${pct(u.fraction)} (${u.held ?? 0} of ${u.seats ?? 0} seats)`, "utilization"],
    ["Queued", String(depth.queued ?? 0), "queued"],
    ["Running", String((depth.assigned ?? 0) + (depth.building ?? 0) + (depth.testing ?? 0)), "running"],
    ["Oldest queued", duration(metrics.oldestQueuedSeconds), "oldest"],
    ["In review", `${depth.review ?? 0}${metrics.review && metrics.review.oldestSeconds != null ? ` (oldest ${duration(metrics.review.oldestSeconds)})` : ""}`, "review"],
    ["Spend", spend ? `${usd(spend.spentUsd)} + ${usd(spend.reservedUsd)} reserved of ${spend.ceilingUsd === null ? "no ceiling" : usd(spend.ceilingUsd)}${spend.fraction === null ? "" : ` (${pct(spend.fraction)})`}` : "no budget", "spend"],
  ];
  return h("dl", { class: "ap-strip", title: `metrics of ${metrics.at}` },
    items.map(([label, value, key]) => h("div", { class: "ap-metric", "data-metric": key }, h("dt", null, label), h("dd", null, value))),
    h("div", { class: "ap-metric muted" }, h("dt", null, "As of"), h("dd", null, ago(secondsSince(metrics.at)))));
}

function activeList() {
  const active = (alerts && alerts.active) || [];
  if (!alerts) return null;
  if (!active.length) return h("p", { class: "ap-none" }, "No active alerts.");
  return h("ul", { class: "ap-active" }, active.map((a) =>
    h("li", { class: `ap-alert sev-${a.severity}`, "data-key": a.key },
      h("span", { class: "ap-sev" }, a.severity), " ",
      h("code", null, a.key), " ", h("span", { class: "ap-msg" }, a.message),
      h("span", { class: "muted" }, " since ", timeEl(a.since)))));
}

function recentList() {
  const recent = ((alerts && alerts.history) || []).slice(0, RECENT);
  if (!recent.length) return null;
  return h("details", { class: "ap-recent" },
    h("summary", null, `Recent alert events (${recent.length})`),
    h("ol", null, recent.map((e) =>
      h("li", { class: `ap-event ${e.kind}`, "data-key": e.key },
        h("strong", null, e.kind), " ", h("code", null, e.key), " ", e.message, " ", timeEl(e.at)))));
}

function render() {
  if (!panel) return;
  const count = alerts && alerts.active ? alerts.active.length : 0;
  fill(panel,
    h("h2", { class: "ap-title" }, count ? `Alerts (${count} active)` : "Alerts"),
    strip(), activeList(), recentList());
  panel.classList.toggle("ap-firing", count > 0);
}

async function refresh(force = false) {
  if (!panel || inflight || state.status === "idle" || state.status === "unauthorized") return;
  if (!force && Date.now() - lastFetch < EVERY_MS) return;
  inflight = true;
  lastFetch = Date.now();
  try {
    [metrics, alerts] = await Promise.all([get("/fleet/metrics"), get("/fleet/alerts?history=20")]);
    failed = null;
  } catch (err) {
    failed = err && err.describe ? err.describe() : String(err);
  } finally {
    inflight = false;
  }
  render();
}

/** Show the panel in ``el`` (the fleet map); returns what to call when leaving the view. */
export function mountAlerts(el) {
  panel = el;
  metrics = alerts = null;
  lastFetch = 0;
  render();
  refresh(true);
  const off = subscribe((kind, detail) => {
    if (kind === "reset") { metrics = alerts = null; lastFetch = 0; render(); }
    if (kind === "events" && detail.some((e) => e.alert)) refresh(true);
    else if (kind === "data") refresh();
  });
  return () => { off(); panel = null; };
}
