// Small DOM helpers: build elements, format ages, money and stages, confirm, notify.
import { serverNow } from "./api.js";

/** h("a", {href, class, onclick}, children...): an element. Strings become text, never HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      // Through the CSSOM: the Content-Security-Policy (style-src 'self') refuses style attributes.
      else if (key === "style") el.style.cssText = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key in el && typeof value !== "string") el[key] = value;
      else el.setAttribute(key, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export const STAGES = ["queued", "blocked", "assigned", "building", "review", "testing",
  "shipped", "failed", "dead_letter", "cancelled"];
export const LEASED = new Set(["assigned", "building", "testing"]);
export const TERMINAL = new Set(["shipped", "failed", "dead_letter", "cancelled"]);

// Which operator action each stage allows: a mirror of fleet/domain/stages.py, used only to
// enable buttons (the coordinator decides; a refusal is shown as it says).
const ACTIONS = {
  cancel: new Set(["queued", "blocked", "assigned", "building", "review", "testing"]),
  requeue: new Set(["assigned", "building", "testing", "review", "failed", "dead_letter", "cancelled"]),
  ship: new Set(["review", "testing", "building"]),
  reject: new Set(["review", "testing"]),
  reprioritize: new Set(["queued", "blocked", "assigned", "building", "review", "testing"]),
};
export const allows = (action, stage) => ACTIONS[action].has(stage);

export const stageLabel = (stage) => String(stage || "").replace("_", " ");
export const stageBadge = (stage) => h("span", { class: `stage s-${stage}`, text: stageLabel(stage) });

export function secondsSince(iso) {
  const t = Date.parse(iso || "");
  return Number.isNaN(t) ? null : Math.max(0, (serverNow() - t) / 1000);
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export const agoIso = (iso) => ago(secondsSince(iso));

export function usd(value) {
  if (value === null || value === undefined) return "—";
  return `$${Number(value).toFixed(Math.abs(value) < 10 ? 2 : 0)}`;
}

export function time(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso || "") : d.toLocaleString();
}

export function timeEl(iso) {
  return h("time", { datetime: iso, title: time(iso) }, agoIso(iso));
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** Confirm an action in a modal dialog; resolves to {reason} or null. `extra`: more fields
 * (shown under the body); `validate()`: an error message that keeps the dialog open, or null. */
export function confirmAction({ title, body, confirmLabel = "Confirm", danger = false, reason = true, extra = null, validate = null }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  const bodyEl = document.getElementById("confirm-body");
  bodyEl.replaceChildren(...[].concat(body || []).map((b) => (b instanceof Node ? b : h("p", null, b))));
  const extraEl = document.getElementById("confirm-extra");
  const errorEl = document.getElementById("confirm-error");
  extraEl.replaceChildren(...[].concat(extra || []));
  errorEl.textContent = "";
  const input = document.getElementById("confirm-reason");
  input.value = "";
  input.hidden = !reason;
  document.getElementById("confirm-reason-label").hidden = !reason;
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirmLabel;
  ok.className = danger ? "danger" : "primary";
  const opener = document.activeElement;
  // A field the coordinator would refuse keeps the dialog open, its problem said in it.
  const check = (event) => {
    const problem = validate ? validate() : null;
    if (problem) {
      event.preventDefault();
      errorEl.textContent = problem;
    }
  };
  ok.addEventListener("click", check);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      ok.removeEventListener("click", check);
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === "ok" ? { reason: input.value.trim() || undefined } : null);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (reason ? input : ok).focus();
  });
}

let noticeTimer = 0;
/** A short message in the notice area (a polite live region); errors stay until replaced. */
export function notify(message, kind = "ok") {
  const el = document.getElementById("notice");
  el.className = `notice ${kind}`;
  el.textContent = message;
  clearTimeout(noticeTimer);
  if (kind === "ok") noticeTimer = setTimeout(() => { el.textContent = ""; el.className = "notice"; }, 8000);
}

/** An error box for a view whose data could not be loaded: an error, never "nothing here". */
export function errorBox(what, err) {
  return h("div", { class: "error-box", role: "alert" },
    h("strong", null, `Could not load ${what}.`), " ",
    err && err.describe ? err.describe() : String(err && err.message ? err.message : err),
    " The page retries by itself.");
}

export function emptyBox(...text) {
  return h("div", { class: "empty" }, ...text);
}

export function loadingBox(what) {
  return h("div", { class: "empty", "aria-busy": "true" }, `Loading ${what}…`);
}

/** Marks (once per page load) when a view first painted real data: read by the e2e tests. */
const marked = new Set();
export function markPainted(name) {
  if (marked.has(name)) return;
  marked.add(name);
  requestAnimationFrame(() => performance.mark(`fleet:${name}`));
}

/** el.replaceChildren(...) that skips null, undefined and false (the DOM would print "null"). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}
