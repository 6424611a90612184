// The product's event log (GET /fleet/events): job transitions, fleet operations (factories,
// commands, tokens, budgets, settings, profiles, the tracker) and alerts, newest first, with
// who did it and why. Filters by type, factory, job and operator live in the URL
// (#/events?type=a,b&factory=F&job=J&operator=alice) so a filtered log can be linked to.
// A page of PAGE events; "Older events" asks for the page before it (`before=CURSOR`); new
// events arrive at the top while the page is open (`after=` the newest one, at each live tick).
//
// A coordinator whose feed only reads forward (no `before`: its reply carries no `more`) is
// read from the start, a few pages of 500, and filtered and paged here.
import { enc, get } from "../api.js";
import { emptyBox, errorBox, fill, h, loadingBox, stageBadge, time, timeEl } from "../dom.js";
import { state } from "../live.js";

const PAGE = 50;
const FORWARD_PAGES = 20; // forward-only feed: at most this many pages of 500 read at mount
export const FILTERS = ["type", "factory", "job", "operator"];
export const FLEET_TYPES = ["factory_registered", "factory_deregistered", "factory_pruned", "factory_live",
  "factory_stale", "factory_down", "command_queued", "command_acked", "enrollment_token_created",
  "enrollment_token_revoked", "scaler_token_created", "scaler_token_revoked", "factory_enrolled", "token_rotated", "token_revoked", "budget_set",
  "budget_paused", "budget_resumed", "budget_adjusted", "settings_changed", "channel_changed",
  "channel_deleted", "profile_saved", "tracker_bound", "tracker_unbound"];
const JOB_TYPES = ["submit", "unblock", "decompose", "deps_failed", "assign", "expire", "expire_final",
  "take_back", "take_back_final",
  "preempt", "start", "submit_review", "test", "complete", "fail", "retry", "retry_final", "release",
  "approve_quorum", "review_reject", "review_exhausted", "cancel", "requeue", "ship", "reject",
  "reprioritize", "children", "preempted_for", "review_request", "review_vote", "stalled",
  "stall_cleared"];
const ALERT_TYPES = ["alert_raised", "alert_cleared"];

/** The filters of a hash's query string: {type, factory, job, operator}, blanks dropped. */
export function parseFilters(query) {
  const params = new URLSearchParams(query || "");
  const out = {};
  for (const key of FILTERS) {
    const v = (params.get(key) || "").trim();
    if (v) out[key] = v;
  }
  return out;
}

/** "alice" is operator:alice; an actor with a kind ("factory:f1") is kept as it is. */
export const actorOf = (operator) => (operator.includes(":") ? operator : `operator:${operator}`);

function filterQuery(filters) {
  return FILTERS.filter((k) => filters[k])
    .map((k) => `&${k}=${enc(k === "operator" ? actorOf(filters[k]) : filters[k])}`).join("");
}

export function kindOf(ev) {
  return ev.alert ? "alert" : ev.fleet ? "fleet" : "job";
}

/** One identity per event, across pages and polls (the live cursor repeats its instant). */
export function keyOf(ev) {
  if (ev.alert) return `a|${ev.seq}|${ev.type}|${ev.at}`;
  if (ev.fleet) return `f|${ev.seq}|${ev.type}|${ev.at}`;
  return `j|${ev.jobId}|${ev.seq}`;
}

/** The filters applied here, for a feed that cannot filter (and as its reply would). */
function matches(ev, filters) {
  if (filters.type && !filters.type.split(",").map((t) => t.trim()).includes(ev.type)) return false;
  if (filters.job && ev.jobId !== filters.job) return false;
  if (filters.factory && ev.factory !== filters.factory && ev.holder !== filters.factory &&
    ev.actor !== `factory:${filters.factory}`) return false;
  if (filters.operator && ev.actor !== actorOf(filters.operator)) return false;
  return true;
}

const newestFirst = (a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : (b.seq ?? 0) - (a.seq ?? 0));

function jobLink(jobId) {
  const known = state.jobs.get(jobId);
  return h("a", { href: `#/jobs/${jobId}`, class: "ev-job", title: jobId }, known ? known.title : jobId);
}

function factoryLink(factory) {
  return h("a", { href: `#/fleet/${enc(factory)}`, class: "ev-factory", title: `${factory} on the fleet map` }, factory);
}

function detailsText(details) {
  if (!details || typeof details !== "object") return null;
  const entries = Object.entries(details).filter(([, v]) => v !== null && v !== undefined && v !== "");
  if (!entries.length) return null;
  const text = entries.map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("; ");
  return h("div", { class: "muted small ev-details", title: text }, text.length > 200 ? `${text.slice(0, 199)}…` : text);
}

function subject(ev) {
  const parts = [];
  if (ev.jobId) parts.push(jobLink(ev.jobId));
  const factory = ev.factory || (ev.alert ? null : ev.holder);
  if (factory) parts.push(parts.length ? " · " : null, factoryLink(factory));
  if (ev.alert) parts.push(h("code", null, ev.key));
  return parts.length ? parts : h("span", { class: "muted" }, "the product");
}

function what(ev) {
  if (ev.alert) {
    return [h("span", { class: `ap-sev sev-${ev.severity}` }, ev.severity), " ", ev.message];
  }
  if (ev.fleet) return [ev.reason ? h("div", null, `“${ev.reason}”`) : null, detailsText(ev.details)];
  return [
    ev.fromStage ? [stageBadge(ev.fromStage), " → "] : null, ev.toStage ? stageBadge(ev.toStage) : null,
    h("span", { class: "muted small" }, ` epoch ${ev.epoch}`),
    ev.reason ? h("div", null, `“${ev.reason}”`) : null,
    detailsText(ev.data),
  ];
}

export function eventRow(ev, fresh) {
  const kind = kindOf(ev);
  return h("tr", { class: `ev-row k-${kind}${fresh ? " fresh" : ""}`, "data-type": ev.type, "data-kind": kind, "data-key": keyOf(ev) },
    h("td", { class: "when", title: time(ev.at) }, timeEl(ev.at),
      h("span", { class: "muted small" }, ` · ${new Date(ev.at).toLocaleTimeString()}`)),
    h("td", null, h("span", { class: `ev-kind k-${kind}` }, kind), " ", h("strong", { class: "ev-type" }, ev.type)),
    h("td", { class: "ev-subject" }, subject(ev)),
    h("td", { class: "ev-actor" }, ev.actor || "—"),
    h("td", { class: "ev-what" }, what(ev)));
}

export function mount(root, query) {
  const filters = parseFilters(query);
  const inputs = {
    type: h("input", { id: "ev-type", list: "ev-types", value: filters.type || "", placeholder: "any, or a,b,c", autocomplete: "off", spellcheck: "false", "aria-describedby": "ev-help" }),
    factory: h("input", { id: "ev-factory", list: "ev-factories", value: filters.factory || "", placeholder: "any", autocomplete: "off", spellcheck: "false" }),
    job: h("input", { id: "ev-job", value: filters.job || "", placeholder: "any (a job id)", autocomplete: "off", spellcheck: "false", pattern: "j[0-9a-z]{26}" }),
    operator: h("input", { id: "ev-operator", value: filters.operator || "", placeholder: "any (alice)", autocomplete: "off", spellcheck: "false", "aria-describedby": "ev-help" }),
  };
  const labels = { type: "Type", factory: "Factory", job: "Job", operator: "Operator" };
  const typeList = h("datalist", { id: "ev-types" }, [...FLEET_TYPES, ...JOB_TYPES, ...ALERT_TYPES].sort().map((t) => h("option", { value: t })));
  const factoryList = h("datalist", { id: "ev-factories" }, state.factories.map((f) => h("option", { value: f.id })));
  const form = h("form", { class: "row-form ev-filters", novalidate: true, role: "search", "aria-label": "Filter the events" },
    FILTERS.map((k) => h("div", { class: "field" }, h("label", { for: `ev-${k}` }, labels[k]), inputs[k])),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("button", { type: "button", onclick: () => { location.hash = "#/events"; } }, "Clear"),
    h("p", { id: "ev-help", class: "help" }, "Types: one, or several separated by commas (command_queued, requeue…). Operator: a name (alice) or an actor (factory:f1)."),
    typeList, factoryList);
  const summary = h("p", { class: "muted ev-summary", "aria-live": "polite" });
  const liveNote = h("p", { class: "ev-live", role: "status" });
  const tbody = h("tbody");
  const table = h("table", { class: "events" },
    h("caption", { class: "sr-only" }, "The product's events, newest first"),
    h("thead", null, h("tr", null, ["When", "Event", "Job / factory", "Actor", "What"].map((t) => h("th", null, t)))),
    tbody);
  const body = h("div");
  const older = h("button", { type: "button", class: "load-more", hidden: true, onclick: () => loadOlder() }, "Older events");
  fill(root, h("div", { class: "title-row" }, h("h1", null, "Events"), summary), form, liveNote, body, older);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const k of FILTERS) if (inputs[k].value.trim()) params.set(k, inputs[k].value.trim());
    const q = params.toString();
    location.hash = q ? `#/events?${q}` : "#/events";
  });

  let alive = true;
  let mode = null; // "paged": the coordinator pages backwards; "forward": it reads forward only
  const seen = new Map(); // key -> event
  let shown = []; // events shown, newest first
  let olderCursor = null; // `before` of the next older page (paged)
  let more = false;
  let liveCursor = null; // `after` for new events
  let allForward = []; // forward mode: every event read, newest first, filtered here
  let limit = PAGE; // forward mode: how many are shown
  let loadError = null;
  let liveError = null;
  let busy = false;
  const fresh = new Set();

  function render() {
    if (loadError && !shown.length) {
      fill(body, errorBox("the events", loadError));
      summary.textContent = "";
      older.hidden = true;
      return;
    }
    if (mode === null) { fill(body, loadingBox("the events")); return; }
    const filtered = FILTERS.some((k) => filters[k]);
    if (!shown.length) {
      fill(body, emptyBox(filtered ? "No event matches these filters." : "No event in this product yet."));
    } else {
      fill(tbody, ...shown.map((ev) => eventRow(ev, fresh.has(keyOf(ev)))));
      fill(body, h("div", { class: "scroll-x" }, table));
    }
    older.hidden = !more;
    older.disabled = busy;
    summary.textContent = `${shown.length} event${shown.length === 1 ? "" : "s"}${more ? " (older ones on request)" : ""}, newest first${filtered ? ", filtered" : ""}`;
    renderNote();
  }

  // Whether new events are arriving, said beside the list: an outage is never a quiet log.
  function renderNote() {
    const describe = (err) => (err && err.describe ? err.describe() : String(err));
    if (loadError) fill(liveNote, h("span", { class: "bad" }, `Could not load older events: ${describe(loadError)}`));
    else if (liveError) fill(liveNote, h("span", { class: "bad" }, `New events are not arriving: ${describe(liveError)} Retrying…`));
    else if (state.status !== "live") fill(liveNote, h("span", { class: "bad" }, `Not live (${state.status}): new events will not appear until the coordinator answers again.`));
    else fill(liveNote, h("span", { class: "muted small" }, "Live: new events appear at the top as they happen."));
    liveNote.dataset.live = String(!liveError && state.status === "live");
  }

  function add(events, isNew) {
    const added = [];
    for (const ev of events) {
      const key = keyOf(ev);
      if (seen.has(key)) continue;
      seen.set(key, ev);
      added.push(ev);
      if (isNew) fresh.add(key);
    }
    return added;
  }

  async function first() {
    try {
      const out = await get(`/fleet/events?before=&limit=${PAGE}${filterQuery(filters)}`);
      if (!alive) return;
      if (typeof out.more === "boolean") {
        mode = "paged";
        shown = add(out.events, false).sort(newestFirst);
        olderCursor = out.cursor;
        more = out.more && !!out.cursor;
        liveCursor = shown.length ? `${shown[0].at}||0` : "";
      } else {
        mode = "forward";
        let page = out;
        let events = [...page.events];
        for (let n = 1; n < FORWARD_PAGES && page.events.length >= PAGE && page.cursor; n += 1) {
          page = await get(`/fleet/events?limit=500&after=${enc(page.cursor)}`);
          if (!alive) return;
          events = events.concat(page.events);
          if (page.events.length < 500) break;
        }
        liveCursor = page.cursor || "";
        allForward = add(events, false).filter((ev) => matches(ev, filters)).sort(newestFirst);
        showForward();
      }
      loadError = null;
    } catch (err) {
      if (!alive) return;
      loadError = err;
    }
    render();
  }

  function showForward() {
    shown = allForward.slice(0, limit);
    more = allForward.length > limit;
  }

  async function loadOlder() {
    if (busy) return;
    if (mode === "forward") { limit += PAGE; showForward(); render(); return; }
    busy = true;
    older.disabled = true;
    try {
      const out = await get(`/fleet/events?before=${enc(olderCursor || "")}&limit=${PAGE}${filterQuery(filters)}`);
      if (!alive) return;
      shown = shown.concat(add(out.events, false)).sort(newestFirst);
      olderCursor = out.cursor;
      more = out.more && !!out.cursor;
      loadError = null;
    } catch (err) {
      loadError = err;
    } finally {
      busy = false;
    }
    if (alive) render();
  }

  async function poll() {
    if (busy || mode === null || liveCursor === null) return;
    busy = true;
    try {
      let incoming;
      if (mode === "paged") {
        try {
          const out = await get(`/fleet/events?after=${enc(liveCursor)}&limit=200${filterQuery(filters)}`);
          incoming = out.events;
          liveCursor = out.cursor || liveCursor;
        } catch (err) {
          if (err.status !== 400) throw err;
          // The cursor made from the newest event's time was refused: the newest page instead.
          incoming = (await get(`/fleet/events?before=&limit=${PAGE}${filterQuery(filters)}`)).events;
        }
      } else {
        const out = await get(`/fleet/events?after=${enc(liveCursor)}&limit=500`);
        incoming = out.events.filter((ev) => matches(ev, filters));
        liveCursor = out.cursor || liveCursor;
      }
      if (!alive) return;
      const added = add(incoming, true);
      if (mode === "forward") {
        allForward = added.concat(allForward).sort(newestFirst);
        limit += added.length;
        showForward();
      } else {
        shown = added.concat(shown).sort(newestFirst);
      }
      const recovered = liveError !== null;
      liveError = null;
      if (added.length || recovered) render();
      else renderNote();
      if (added.length) setTimeout(() => { for (const ev of added) fresh.delete(keyOf(ev)); }, 4000);
    } catch (err) {
      if (!alive) return;
      liveError = err;
      render();
    } finally {
      busy = false;
    }
  }

  fill(body, loadingBox("the events"));
  first();
  return {
    update(kind) {
      if (kind === "data" && state.status === "live") {
        fill(factoryList, state.factories.map((f) => h("option", { value: f.id })));
        poll();
      } else if (kind === "status" && mode !== null) {
        renderNote();
      }
    },
    unmount() { alive = false; },
  };
}
