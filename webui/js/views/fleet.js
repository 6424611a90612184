// The fleet map: every factory with its health, load and seats, capabilities, version, the
// jobs it holds and its last heartbeat's age; drain / pause / resume / restart engine /
// revoke / deregister, each confirmed first (operators; revoking a factory's tokens: admins).
import { can, del, enc, post, session } from "../api.js";
import { LEASED, ago, confirmAction, emptyBox, errorBox, fill, h, loadingBox, markPainted, notify, secondsSince, stageBadge } from "../dom.js";
import { jobList, refreshSoon, state } from "../live.js";
import { mountAlerts } from "../alerts.js";
import { mountRouting } from "../routing.js";

export function health(f) {
  if (f.deregistered) return "deregistered";
  if (f.revoked) return "revoked";
  return f.status || "live";
}

const COMMANDS = {
  drain: { label: "Drain", title: "Drain", text: "It finishes what it holds and takes nothing new." },
  pause: { label: "Pause", title: "Pause", text: "It takes no new job until resumed." },
  resume: { label: "Resume", title: "Resume", text: "It takes jobs again." },
  "restart-engine": { label: "Restart engine", title: "Restart the engine of", text: "Its agent engine is restarted on its next heartbeat." },
};

async function command(f, kind) {
  const spec = COMMANDS[kind];
  const ok = await confirmAction({
    title: `${spec.title} ${f.id}?`, body: [spec.text, "The command waits in its queue until the factory acknowledges it on a heartbeat."],
    confirmLabel: spec.label,
  });
  if (!ok) return;
  try {
    await post(`/fleet/factories/${enc(f.id)}/commands`, { command: kind, reason: ok.reason });
    notify(`${spec.label} sent to ${f.id}: pending until its next heartbeat.`);
  } catch (err) {
    notify(`${spec.label} ${f.id} failed: ${err.describe()}`, "error");
  }
  refreshSoon();
}

async function revoke(f) {
  const ok = await confirmAction({
    title: `Revoke ${f.id}?`, danger: true, confirmLabel: "Revoke every token",
    body: ["Every token of this factory is refused from its next request; the jobs it holds are requeued at a new epoch.", "It can only come back by enrolling again."],
  });
  if (!ok) return;
  try {
    const out = await post(`/fleet/factories/${enc(f.id)}/token/revoke`, { reason: ok.reason });
    notify(`${f.id} revoked (${out.revokedTokens} token${out.revokedTokens === 1 ? "" : "s"}).`);
  } catch (err) {
    notify(`Revoking ${f.id} failed: ${err.describe()}`, "error");
  }
  refreshSoon();
}

async function deregister(f) {
  const ok = await confirmAction({
    title: `Deregister ${f.id}?`, danger: true, confirmLabel: "Deregister", reason: false,
    body: ["It leaves the fleet: its tokens stop working, its heartbeat and pending commands are removed, and the reaper requeues what it held."],
  });
  if (!ok) return;
  try {
    await del(`/fleet/factories/${enc(f.id)}`);
    notify(`${f.id} deregistered.`);
  } catch (err) {
    notify(`Deregistering ${f.id} failed: ${err.describe()}`, "error");
  }
  refreshSoon();
}

// Each factory's last heartbeat comes with the fleet list (`heartbeat`: age, load, seats,
// held jobs with their idle seconds, pending commands); ages move on between fetches here.
function heartbeatAge(f) {
  const entry = state.heartbeats.get(f.id);
  if (!entry) return { text: "…", title: "fetching the last heartbeat" };
  if (entry.none) return { text: "never", title: "no heartbeat recorded" };
  const hb = entry.hb;
  if (hb.ageSeconds === null || hb.ageSeconds === undefined) return { text: "never", title: "no heartbeat recorded" };
  return { text: ago(hb.ageSeconds + (Date.now() - entry.fetchedAt) / 1000), title: hb.at };
}

function idleText(f, jobId) {
  const entry = state.heartbeats.get(f.id);
  const p = entry && entry.hb && entry.hb.jobs.find((j) => j.jobId === jobId);
  return p ? `idle ${ago(p.idleSeconds + (Date.now() - entry.fetchedAt) / 1000)}` : null;
}

function card(f, held) {
  const hstate = health(f);
  const entry = state.heartbeats.get(f.id);
  const hb = entry && entry.hb && entry.hb.at ? entry.hb : null;
  const load = hb ? hb.load : f.load;
  const seats = hb ? hb.seats : f.seats;
  const pct = seats ? Math.min(100, Math.round((100 * load) / seats)) : 0;
  const pending = (entry && entry.hb && entry.hb.pendingKinds) || [];
  // Jobs its heartbeat reports that the loaded job pages do not show: by id.
  const listed = new Set(held.map((j) => j.id));
  const unlisted = hb ? hb.jobs.filter((j) => !listed.has(j.jobId)) : [];
  const age = heartbeatAge(f);
  const gone = f.revoked || f.deregistered;
  const nameId = `f-${f.id}`;
  return h("article", { class: `factory h-${hstate}`, "aria-labelledby": nameId, "data-factory": f.id },
    h("header", null,
      h("h2", { id: nameId }, f.id),
      h("span", { class: `health h-${hstate}`, "data-health": hstate }, hstate),
      f.paused ? h("span", { class: "flag" }, "paused") : null,
      f.draining ? h("span", { class: "flag" }, "draining") : null),
    h("dl", { class: "facts" },
      h("div", null, h("dt", null, "Load"), h("dd", null,
        h("meter", { min: 0, max: seats || 1, value: load, "aria-label": `load ${load} of ${seats} seats` }),
        ` ${load}/${seats} (${pct}%)`)),
      h("div", null, h("dt", null, "Heartbeat"), h("dd", { title: age.title, class: "hb-age" }, age.text)),
      h("div", null, h("dt", null, "Version"), h("dd", null, f.version || "—")),
      h("div", null, h("dt", null, "Capabilities"), h("dd", null,
        f.capabilities.length ? f.capabilities.map((c) => h("span", { class: "chip" }, c)) : h("span", { class: "muted" }, "none"))),
      h("div", { class: "wide" }, h("dt", null, "Holds"), h("dd", { class: "held" },
        held.length || unlisted.length
          ? [
            ...held.map((j) => h("a", { href: `#/jobs/${j.id}`, title: [j.title, idleText(f, j.id)].filter(Boolean).join(" · ") }, stageBadge(j.stage), " ", j.title)),
            ...unlisted.map((j) => h("a", { href: `#/jobs/${j.jobId}`, title: idleText(f, j.jobId) }, j.jobId)),
          ]
          : h("span", { class: "muted" }, "no job"))),
      pending.length
        ? h("div", { class: "wide" }, h("dt", null, "Pending"), h("dd", { class: "pending" },
          pending.map((kind) => h("span", { class: "chip pending", title: "waiting for the factory's acknowledgement" }, `${kind} pending`))))
        : null),
    h("p", { class: "small card-links" }, h("a", { href: `#/events?factory=${encodeURIComponent(f.id)}` }, `Events of ${f.id}`)),
    gone || !can("operator") ? null : h("div", { class: "actions", role: "group", "aria-label": `Actions for ${f.id}` },
      h("button", { type: "button", onclick: () => command(f, "drain"), disabled: f.draining }, "Drain"),
      f.paused || f.draining
        ? h("button", { type: "button", onclick: () => command(f, "resume") }, "Resume")
        : h("button", { type: "button", onclick: () => command(f, "pause") }, "Pause"),
      h("button", { type: "button", onclick: () => command(f, "restart-engine") }, "Restart engine"),
      can("admin") ? h("button", { type: "button", class: "danger", onclick: () => revoke(f) }, "Revoke") : null,
      h("button", { type: "button", class: "danger", onclick: () => deregister(f) }, "Deregister")));
}

export function mount(root, focusId) {
  let focus = null; // #/fleet/<factory>: that factory's card, shown and outlined once painted
  try { focus = focusId ? decodeURIComponent(focusId) : null; } catch { focus = null; }
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const body = h("div");
  const alertsBox = h("section", { class: "ap", "aria-label": "Alerts and metrics", "aria-live": "polite" });
  const routingBox = h("section", { class: "lr", "aria-label": "Learned routing" });
  root.append(h("div", { class: "title-row" }, h("h1", null, "Fleet"), summary), alertsBox, routingBox, body);
  const leaveAlerts = mountAlerts(alertsBox);
  const leaveRouting = mountRouting(routingBox);
  let lastRev = -1;

  function render() {
    if (!state.factoriesLoaded) {
      fill(body, (state.listError || state.error) ? errorBox("the factories", state.listError || state.error) : loadingBox("the fleet"));
      summary.textContent = "";
      return;
    }
    const held = new Map();
    for (const j of jobList()) {
      if (j.holder && LEASED.has(j.stage)) {
        if (!held.has(j.holder)) held.set(j.holder, []);
        held.get(j.holder).push(j);
      }
    }
    const present = state.factories.filter((f) => !f.deregistered);
    const gone = state.factories.filter((f) => f.deregistered);
    const counts = {};
    let seats = 0, load = 0;
    for (const f of present) {
      counts[health(f)] = (counts[health(f)] || 0) + 1;
      if (!f.revoked && f.status === "live") {
        const beat = state.heartbeats.get(f.id)?.hb;
        const hb = beat && beat.at ? beat : null;
        seats += hb ? hb.seats : f.seats;
        load += hb ? hb.load : f.load;
      }
    }
    summary.textContent = present.length
      ? `${present.length} factories: ${["live", "stale", "down", "revoked"].filter((k) => counts[k]).map((k) => `${counts[k]} ${k}`).join(", ")} · ${load}/${seats} live seats busy · product ${session.product()}`
      : "";
    if (!state.factories.length) {
      fill(body, emptyBox(
        h("p", null, h("strong", null, `No factory has joined product “${session.product()}” yet.`)),
        h("p", null, "Create an enrollment token (",
          can("admin") ? h("a", { href: "#/admin" }, "on the admin page") : "an admin can, on the admin page",
          ") and run ", h("code", null, "fleet-factory enroll"), " on a worker machine; it shows up here on its first heartbeat.")));
      return;
    }
    const grid = h("div", { class: "grid" }, present.map((f) => card(f, held.get(f.id) || [])));
    const parts = [grid];
    if (!present.length) parts.unshift(emptyBox("Every factory of this product has left the fleet."));
    if (gone.length) {
      parts.push(h("details", { class: "departed" }, h("summary", null, `${gone.length} deregistered`),
        h("ul", null, gone.map((f) => h("li", null, `${f.id} — last seen ${ago(secondsSince(f.lastSeen))}`)))));
    }
    fill(body, ...parts);
    markPainted("fleet");
    if (focus) {
      const el = [...body.querySelectorAll("[data-factory]")].find((c) => c.dataset.factory === focus);
      if (el) {
        el.classList.add("focused");
        el.scrollIntoView({ block: "center" });
        focus = null;
      } else if (gone.some((f) => f.id === focus)) {
        body.querySelector("details.departed").open = true;
        focus = null;
      }
    }
  }

  render();
  return {
    unmount() { leaveAlerts(); leaveRouting(); },
    update(kind) {
      if (kind === "data" || kind === "reset") {
        if (state.rev !== lastRev || kind === "reset") { lastRev = state.rev; render(); }
        else for (const el of body.querySelectorAll("[data-factory]")) {
          const f = state.factories.find((x) => x.id === el.dataset.factory);
          const age = f && heartbeatAge(f);
          const dd = el.querySelector(".hb-age");
          if (age && dd) { dd.textContent = age.text; dd.title = age.title; }
        }
      }
    },
  };
}
