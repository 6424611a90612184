// The shell: sign-in (who is signed in: name and role), product, the live indicator (live,
// reconnecting, offline or stale, and since when), the error banner and a hash router (#/fleet,
// #/fleet/<factory>, #/jobs, #/jobs/<id>, #/new, #/events?filters, #/budgets, #/channels,
// #/settings[/profiles|/tracker], #/admin). Views live in views/; each shows only what the signed-in role may do, and so does
// the navigation (elements marked data-needs="operator" or "admin").
import { apiBase, can, get, session } from "./api.js";
import { ago, fill, h, notify } from "./dom.js";
import { refreshSoon, reset, state, subscribe } from "./live.js";
import * as admin from "./views/admin.js";
import * as budgets from "./views/budgets.js";
import * as channels from "./views/channels.js";
import * as events from "./views/events.js";
import * as fleet from "./views/fleet.js";
import * as job from "./views/job.js";
import * as jobs from "./views/jobs.js";
import * as newjob from "./views/newjob.js";
import * as settings from "./views/settings.js";

const $ = (id) => document.getElementById(id);
const ROUTES = [
  [/^#\/fleet$/, fleet, "fleet"],
  [/^#\/fleet\/([^/?#]+)$/, fleet, "fleet"],
  [/^#\/jobs$/, jobs, "jobs"],
  [/^#\/jobs\/([A-Za-z0-9]+)$/, job, "jobs"],
  [/^#\/new$/, newjob, "new"],
  [/^#\/events(?:\?(.*))?$/, events, "events"],
  [/^#\/budgets$/, budgets, "budgets"],
  [/^#\/channels$/, channels, "channels"],
  [/^#\/settings(?:\/(profiles|tracker))?$/, settings, "settings"],
  [/^#\/admin$/, admin, "admin"],
];
let current = null; // {view, instance}

function route() {
  const hash = location.hash || "#/fleet";
  let match = null;
  for (const [pattern, view, nav] of ROUTES) {
    const m = hash.match(pattern);
    if (m) { match = { view, nav, params: m.slice(1) }; break; }
  }
  if (current && current.instance.unmount) current.instance.unmount();
  const root = $("view");
  fill(root);
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (match && a.dataset.nav === match.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!match) {
    root.append(h("h1", null, "Not found"), h("p", null, "No such page. ", h("a", { href: "#/fleet" }, "Go to the fleet map.")));
    current = null;
    return;
  }
  if (!session.token()) {
    root.append(h("h1", { tabindex: "-1" }, "Sign in"),
      h("p", null, "Enter an operator token (", h("code", null, "flo_…"),
        ") in the header. `make up` prints one; it is kept in this tab only (sessionStorage) and never put in a URL."),
      h("p", { class: "muted" }, `API: ${apiBase()}`));
    current = null;
    return;
  }
  const instance = match.view.mount(root, ...match.params) || {};
  current = { view: match.view, instance };
  document.title = `${root.querySelector("h1")?.textContent || "agent-fleet"} · agent-fleet`;
  const heading = root.querySelector("h1");
  if (heading && document.activeElement !== $("token")) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

const STATUS_TEXT = {
  idle: "signed out", connecting: "connecting…", live: "live",
  reconnecting: "reconnecting…", offline: "offline", unauthorized: "token refused", stale: "stale",
};
// Live, yet no answer for this long (a tick every 2 s): what is on screen is stale, and said so.
const STALE_MS = 12000;

/** What the indicator says: the status, or "stale" when live has not answered for a while. */
function liveState() {
  if (state.status === "live" && state.lastOk && Date.now() - state.lastOk > STALE_MS) {
    return { status: "stale", since: state.lastOk };
  }
  return { status: state.status, since: state.since };
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

function showStatus() {
  const shown = liveState();
  const live = $("live");
  // Set only when changed: the indicator is a live region, read out on each change.
  const text = STATUS_TEXT[shown.status] || shown.status;
  if (live.textContent !== text) live.textContent = text;
  live.className = `live ${shown.status}`;
  live.title = state.lastOk ? `last answer ${ago((Date.now() - state.lastOk) / 1000)}` : "no answer yet";
  const since = $("live-since");
  since.hidden = shown.status === "idle";
  since.textContent = `since ${clock(shown.since)}`;
  since.title = `${STATUS_TEXT[shown.status] || shown.status} since ${new Date(shown.since).toLocaleString()}` +
    (state.lastOk ? `; last answer ${ago((Date.now() - state.lastOk) / 1000)}` : "; no answer yet");
  const banner = $("banner");
  const known = state.lastOk ? ` Showing what was known ${ago((Date.now() - state.lastOk) / 1000)}.` : "";
  if (state.error && state.status !== "live") {
    const retry = state.status === "unauthorized" ? "" : " Retrying…";
    banner.textContent = `${state.status === "offline" ? "Offline" : "API error"}: ${state.error.describe()}${known}${retry}`;
    banner.hidden = false;
  } else if (shown.status === "stale") {
    banner.textContent = `Stale: the coordinator has not answered for ${ago((Date.now() - state.lastOk) / 1000).replace(" ago", "")}.${known} Waiting…`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  const signedIn = !!session.token();
  $("signin").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  showWho();
}

/** Who is signed in, in the header; what the role may not reach, out of the navigation. */
function showWho() {
  const me = session.who();
  const label = $("who");
  if (me) {
    const scope = me.products.includes("*") ? "every product" : me.products.join(", ");
    fill(label, "Signed in as ", h("strong", null, me.name), ` (${me.role})`);
    label.title = `${me.role} of ${scope}`;
    label.dataset.role = me.role;
  } else {
    fill(label, "Signed in");
    label.title = "";
    delete label.dataset.role;
  }
  for (const el of document.querySelectorAll("[data-needs]")) el.hidden = !can(el.dataset.needs);
}

/** Ask who the token is (GET /fleet/whoami). A token the coordinator refuses, or one that is
 * not an operator's, is dropped and said so; unreachable, the UI stays read-only until the
 * coordinator answers. A product-scoped token moves to its first product. */
async function identify() {
  let me;
  try {
    me = await get("/fleet/whoami");
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      session.setToken("");
      $("banner").textContent = "The token was refused (401): check it and sign in again.";
      $("banner").hidden = false;
    }
    return false;
  }
  if (me.kind !== "operator") {
    session.setToken("");
    $("banner").textContent = "That is not an operator token: the control plane needs a flo_… token.";
    $("banner").hidden = false;
    return false;
  }
  session.setWho(me);
  if (!me.products.includes("*") && !me.products.includes(session.product())) {
    session.setProduct(me.products[0]);
    $("product").value = session.product();
  }
  return true;
}

let asking = false;
subscribe((kind, detail) => {
  if (kind === "status") showStatus();
  // Signed in while the coordinator could not say who: ask again once it answers.
  if (kind === "status" && state.status === "live" && !session.who() && !asking) {
    asking = true;
    identify().then((known) => { asking = false; if (known) { showStatus(); route(); } });
  }
  if (current && current.instance.update) current.instance.update(kind, detail);
});

$("product").value = session.product();
$("product-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("product");
  const value = input.value.trim();
  if (!input.checkValidity() || !value) {
    input.setAttribute("aria-invalid", "true");
    input.reportValidity();
    return;
  }
  const me = session.who();
  if (me && !me.products.includes("*") && !me.products.includes(value)) {
    // The coordinator would refuse every call (403): say so here instead.
    input.setAttribute("aria-invalid", "true");
    notify(`${me.name}'s token is for ${me.products.join(", ")} only, not ${value}.`, "error");
    input.focus();
    return;
  }
  input.removeAttribute("aria-invalid");
  session.setProduct(value);
  reset();
  route();
});

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (!token) return;
  session.setToken(token);
  $("banner").hidden = true;
  await identify();
  if (!session.token()) {
    showStatus();
    $("token").focus();
    return;
  }
  reset();
  route();
});

$("signout").addEventListener("click", () => {
  session.setToken("");
  reset();
  route();
  $("token").focus();
});

window.addEventListener("hashchange", route);
// The indicator's ages move on (and "stale" shows) between ticks too.
setInterval(() => { if (session.token()) showStatus(); }, 1000);
window.fleetRefresh = refreshSoon; // for the console
showStatus();
// A token kept from before a reload: who it is decides what the views show.
if (session.token()) await identify();
reset();
route();
showStatus();
