// The shell: sign-in, product, the live indicator, the error banner and a hash router
// (#/fleet, #/jobs, #/jobs/<id>, #/new, #/budgets, #/channels). Views live in views/.
import { apiBase, get, session } from "./api.js";
import { ago, fill, h } from "./dom.js";
import { refreshSoon, reset, state, subscribe } from "./live.js";
import * as budgets from "./views/budgets.js";
import * as channels from "./views/channels.js";
import * as fleet from "./views/fleet.js";
import * as job from "./views/job.js";
import * as jobs from "./views/jobs.js";
import * as newjob from "./views/newjob.js";

const $ = (id) => document.getElementById(id);
const ROUTES = [
  [/^#\/fleet$/, fleet, "fleet"],
  [/^#\/jobs$/, jobs, "jobs"],
  [/^#\/jobs\/([A-Za-z0-9]+)$/, job, "jobs"],
  [/^#\/new$/, newjob, "new"],
  [/^#\/budgets$/, budgets, "budgets"],
  [/^#\/channels$/, channels, "channels"],
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
  reconnecting: "reconnecting…", offline: "offline", unauthorized: "token refused",
};

function showStatus() {
  const live = $("live");
  live.className = `live ${state.status}`;
  live.textContent = STATUS_TEXT[state.status] || state.status;
  live.title = state.lastOk ? `last answer ${ago((Date.now() - state.lastOk) / 1000)}` : "no answer yet";
  const banner = $("banner");
  if (state.error && state.status !== "live") {
    const since = state.lastOk ? ` Showing what was known ${ago((Date.now() - state.lastOk) / 1000)}.` : "";
    const retry = state.status === "unauthorized" ? "" : " Retrying…";
    banner.textContent = `${state.status === "offline" ? "Offline" : "API error"}: ${state.error.describe()}${since}${retry}`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  const signedIn = !!session.token();
  $("signin").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
}

subscribe((kind, detail) => {
  if (kind === "status") showStatus();
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
  try {
    // The event feed is operator-only: a factory or unknown token is refused here.
    await get("/fleet/events?limit=1");
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      session.setToken("");
      $("banner").textContent = err.status === 403
        ? "That is not an operator token (403): the control plane needs a flo_… token."
        : "The token was refused (401): check it and sign in again.";
      $("banner").hidden = false;
      $("token").focus();
      return;
    }
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
window.fleetRefresh = refreshSoon; // for the console
reset();
route();
showStatus();
