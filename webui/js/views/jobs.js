// Jobs: counts per stage, filters (stage, channel, capability, text), a sortable table,
// and the operator's actions on the selected jobs (cancel, requeue, ship, reject,
// reprioritize), each confirmed and reported job by job; a viewer sees no selection and no
// action. The list holds the first pages of
// the product's jobs newest first; "Load more" adds a page of older ones. Counts, filters and sorting
// are of the jobs loaded, and say so while more remain.
import { can, enc, post, session } from "../api.js";
import { STAGES, agoIso, allows, confirmAction, emptyBox, errorBox, fill, h, loadingBox, markPainted, notify, stageBadge, stageLabel } from "../dom.js";
import { JOB_PAGE, jobList, loadMoreJobs, refreshSoon, state } from "../live.js";

const view = { stage: "", channel: "", capability: "", text: "", sort: "updatedAt", dir: -1 };
const selected = new Set();

const COLUMNS = [
  ["title", "Title"], ["stage", "Stage"], ["priority", "Pri."], ["channel", "Channel"],
  ["capabilities", "Capabilities"], ["holder", "Holder"], ["epoch", "Epoch"],
  ["attempts", "Attempts"], ["updatedAt", "Updated"],
];

function value(job, key) {
  if (key === "capabilities") return (job.capabilities || []).join(",");
  if (key === "stage") return STAGES.indexOf(job.stage);
  const v = job[key];
  return v === null || v === undefined ? "" : v;
}

function filtered(jobs) {
  const text = view.text.toLowerCase();
  return jobs.filter((j) =>
    (!view.stage || j.stage === view.stage) &&
    (!view.channel || (view.channel === "-" ? !j.channel : j.channel === view.channel)) &&
    (!view.capability || (j.capabilities || []).includes(view.capability)) &&
    (!text || j.title.toLowerCase().includes(text) || j.id.includes(text) || (j.holder || "").toLowerCase().includes(text)));
}

function sorted(jobs) {
  const { sort, dir } = view;
  return jobs.sort((a, b) => {
    const x = value(a, sort), y = value(b, sort);
    return (x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : 1) * dir;
  });
}

/** Run one action on many jobs, four at a time; report what happened to each. */
export async function runBulk(action, ids, body) {
  const results = { ok: [], failed: [] };
  const queue = [...ids];
  async function worker() {
    while (queue.length) {
      const id = queue.shift();
      try {
        const job = await post(`/fleet/jobs/${enc(id)}/${action}`, body);
        results.ok.push(job);
        if (state.jobs.has(id)) Object.assign(state.jobs.get(id), job);
      } catch (err) {
        results.failed.push({ id, err });
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(4, ids.length) }, worker));
  state.rev += 1;
  refreshSoon();
  return results;
}

const ACTION_TEXT = {
  cancel: ["Cancel", "cancelled"], requeue: ["Requeue", "requeued"], ship: ["Ship", "shipped"],
  reject: ["Reject", "rejected"], reprioritize: ["Reprioritize", "reprioritized"],
};

/** The checkpoint field of a requeue (the job page): empty keeps the job's checkpoint, a JSON
 * object replaces it. Returns {fields, value()}: value() is undefined, an object, or an Error. */
function checkpointField(current) {
  const area = h("textarea", {
    id: "requeue-checkpoint", rows: 5, spellcheck: "false", class: "mono",
    placeholder: '{"branch": "wip/fix", "step": 2}', "aria-describedby": "requeue-checkpoint-help",
  });
  const fields = [
    h("label", { for: "requeue-checkpoint" }, "Checkpoint (optional)"), area,
    h("p", { id: "requeue-checkpoint-help", class: "help" },
      "Empty: the next attempt resumes from the job's own checkpoint. A JSON object replaces it.",
      current === null || current === undefined ? null : [" ",
        h("button", { type: "button", class: "linkish", onclick: () => { area.value = JSON.stringify(current, null, 2); area.focus(); } },
          "Start from the current one")]),
  ];
  function value() {
    const text = area.value.trim();
    if (!text) return undefined;
    let parsed;
    try { parsed = JSON.parse(text); } catch (err) { return new Error(`Checkpoint: not JSON (${err.message}).`); }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return new Error("Checkpoint: a JSON object is needed ({…}).");
    return parsed;
  }
  return { fields, value, area };
}

export async function act(action, ids, { priority, checkpoint } = {}) {
  const [verb, done] = ACTION_TEXT[action];
  const jobs = ids.map((id) => state.jobs.get(id)).filter(Boolean);
  const refused = jobs.filter((j) => !allows(action, j.stage));
  const body = [
    ids.length === 1 && jobs[0] ? `“${jobs[0].title}” (${stageLabel(jobs[0].stage)})` : `${ids.length} jobs.`,
  ];
  if (action === "reprioritize") body.push(`New priority: ${priority}.`);
  if (refused.length) body.push(`${refused.length} of them are in a stage that does not allow it and will be refused.`);
  const cp = action === "requeue" && checkpoint ? checkpointField(checkpoint.current) : null;
  const ok = await confirmAction({
    title: `${verb} ${ids.length === 1 ? "this job" : `${ids.length} jobs`}?`, body,
    confirmLabel: verb, danger: action === "cancel" || action === "reject",
    extra: cp ? cp.fields : null,
    validate: cp ? () => {
      const v = cp.value();
      if (v instanceof Error) { cp.area.setAttribute("aria-invalid", "true"); return v.message; }
      cp.area.removeAttribute("aria-invalid");
      return null;
    } : null,
  });
  if (!ok) return null;
  const payload = action === "reprioritize" ? { priority, reason: ok.reason } : { reason: ok.reason };
  const given = cp ? cp.value() : undefined;
  if (given !== undefined) payload.checkpoint = given;
  const results = await runBulk(action, ids, payload);
  if (results.failed.length) {
    const first = results.failed[0].err;
    notify(`${results.ok.length} ${done}; ${results.failed.length} refused: ${first.describe()}`, "error");
  } else {
    notify(`${results.ok.length} job${results.ok.length === 1 ? "" : "s"} ${done}${given !== undefined ? " with the checkpoint given" : ""}.`);
  }
  return results;
}

export function mount(root) {
  const acts = can("operator"); // a viewer reads: no selection, no action
  const counts = h("div", { class: "stage-filter", role: "group", "aria-label": "Filter by stage (counts per stage)" });
  const channelSel = h("select", { id: "f-channel" });
  const capSel = h("select", { id: "f-cap" });
  const text = h("input", { id: "f-text", type: "search", placeholder: "title, id or factory", value: view.text });
  const shown = h("p", { class: "muted", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "load-more", onclick: () => { more.disabled = true; loadMoreJobs(); } }, `Load ${JOB_PAGE} more jobs`);
  const selCount = h("span", { class: "sel-count" });
  const prio = h("input", { id: "bulk-priority", type: "number", min: 0, max: 9, value: 5, class: "narrow" });
  const bulkButtons = ["cancel", "requeue", "ship", "reject"].map((a) =>
    h("button", { type: "button", "data-action": a, class: a === "cancel" || a === "reject" ? "danger" : "", onclick: () => bulk(a) }, ACTION_TEXT[a][0]));
  const reprioBtn = h("button", { type: "button", "data-action": "reprioritize", onclick: () => bulk("reprioritize") }, "Set priority");
  const bulkBar = h("div", { class: "bulk", role: "group", "aria-label": "Actions on the selected jobs" },
    selCount, ...bulkButtons, h("label", { for: "bulk-priority" }, "Priority"), prio, reprioBtn);
  const allBox = h("input", { type: "checkbox", "aria-label": "Select every job shown" });
  const thead = h("thead");
  const tbody = h("tbody");
  const table = h("table", { class: "jobs" }, h("caption", { class: "sr-only" }, "Jobs of the product"), thead, tbody);
  const body = h("div");
  fill(root,
    h("div", { class: "title-row" }, h("h1", null, "Jobs"), acts ? h("a", { href: "#/new", class: "button" }, "New job") : null),
    counts,
    h("div", { class: "filters" },
      h("label", { for: "f-text" }, "Search"), text,
      h("label", { for: "f-channel" }, "Channel"), channelSel,
      h("label", { for: "f-cap" }, "Capability"), capSel),
    acts ? bulkBar : null, shown, body, more);

  text.addEventListener("input", () => { view.text = text.value.trim(); renderRows(); });
  channelSel.addEventListener("change", () => { view.channel = channelSel.value; renderRows(); });
  capSel.addEventListener("change", () => { view.capability = capSel.value; renderRows(); });
  allBox.addEventListener("change", () => {
    for (const tr of tbody.rows) {
      if (allBox.checked) selected.add(tr.dataset.id); else selected.delete(tr.dataset.id);
    }
    renderRows();
  });
  tbody.addEventListener("change", (event) => {
    const box = event.target;
    if (box.type !== "checkbox") return;
    const id = box.closest("tr").dataset.id;
    if (box.checked) selected.add(id); else selected.delete(id);
    updateBulk();
  });

  async function bulk(action) {
    const ids = [...selected].filter((id) => state.jobs.has(id));
    if (!ids.length) return;
    const priority = Number(prio.value);
    if (action === "reprioritize" && !(Number.isInteger(priority) && priority >= 0 && priority <= 9)) {
      prio.setAttribute("aria-invalid", "true");
      notify("Priority must be a whole number from 0 to 9.", "error");
      prio.focus();
      return;
    }
    prio.removeAttribute("aria-invalid");
    const results = await act(action, ids, { priority });
    if (results) { for (const j of results.ok) selected.delete(j.id); renderRows(); }
  }

  function updateBulk() {
    const ids = [...selected].filter((id) => state.jobs.has(id));
    selCount.textContent = ids.length ? `${ids.length} selected` : "Select jobs to act on them";
    for (const b of [...bulkButtons, reprioBtn]) {
      const action = b.dataset.action;
      b.disabled = !ids.some((id) => allows(action, state.jobs.get(id).stage));
    }
  }

  function renderHead() {
    fill(thead, h("tr", null, acts ? h("th", { class: "check" }, allBox) : null, COLUMNS.map(([key, label]) => {
      const active = view.sort === key;
      return h("th", { "aria-sort": active ? (view.dir > 0 ? "ascending" : "descending") : "none" },
        h("button", {
          type: "button", class: "sort", onclick: () => {
            if (view.sort === key) view.dir = -view.dir; else { view.sort = key; view.dir = key === "updatedAt" || key === "priority" ? -1 : 1; }
            renderHead(); renderRows();
          },
        }, label, h("span", { "aria-hidden": "true", class: "arrow" }, active ? (view.dir > 0 ? " ▲" : " ▼") : "")));
    })));
  }

  function options(select, values, all, current) {
    fill(select, h("option", { value: "" }, all), ...values.map(([v, label]) => h("option", { value: v, selected: v === current }, label)));
    select.value = current;
  }

  function renderControls(jobs) {
    const perStage = Object.fromEntries(STAGES.map((s) => [s, 0]));
    for (const j of jobs) perStage[j.stage] += 1;
    const chip = (stage, label, n) => h("button", {
      type: "button", class: `count ${stage ? `s-${stage}` : ""}`, "aria-pressed": String(view.stage === stage), "data-stage": stage || "all",
      onclick: () => { view.stage = view.stage === stage ? "" : stage; renderControls(jobList()); renderRows(); },
    }, h("span", { class: "n" }, String(n)), " ", label);
    fill(counts, chip("", "all", jobs.length), ...STAGES.map((s) => chip(s, stageLabel(s), perStage[s])));
    const channels = [...new Set(jobs.map((j) => j.channel).filter(Boolean))].sort();
    options(channelSel, [["-", "(none)"], ...channels.map((c) => [c, c])], "any", view.channel);
    const caps = new Set(jobs.flatMap((j) => j.capabilities || []));
    for (const f of state.factories) for (const c of f.capabilities) caps.add(c);
    options(capSel, [...caps].sort().map((c) => [c, c]), "any", view.capability);
  }

  function row(j) {
    const tags = [];
    if (j.unroutable) tags.push(h("span", { class: "tag warn", title: "no known factory advertises every capability" }, "unroutable"));
    if (j.stalled) tags.push(h("span", { class: "tag warn" }, "stalled"));
    return h("tr", { "data-id": j.id, "data-stage": j.stage },
      acts ? h("td", { class: "check" }, h("input", { type: "checkbox", checked: selected.has(j.id), "aria-label": `Select ${j.title}` })) : null,
      h("td", { class: "title" }, h("a", { href: `#/jobs/${j.id}` }, j.title), " ", tags),
      h("td", null, stageBadge(j.stage)),
      h("td", { class: "num" }, String(j.priority)),
      h("td", null, j.channel || ""),
      h("td", null, (j.capabilities || []).join(", ")),
      h("td", null, j.holder || ""),
      h("td", { class: "num" }, String(j.epoch)),
      h("td", { class: "num" }, `${j.attempts}/${j.maxAttempts}`),
      h("td", null, h("time", { datetime: j.updatedAt, title: j.updatedAt }, agoIso(j.updatedAt))));
  }

  function renderRows() {
    if (!state.jobsLoaded) {
      table.hidden = true;
      more.hidden = true;
      fill(body, (state.listError || state.error) ? errorBox("the jobs", state.listError || state.error) : loadingBox("jobs"));
      shown.textContent = "";
      updateBulk();
      return;
    }
    const all = jobList();
    const rows = sorted(filtered(all));
    fill(tbody, ...rows.map(row));
    allBox.checked = rows.length > 0 && rows.every((j) => selected.has(j.id));
    table.hidden = rows.length === 0;
    if (!all.length) {
      fill(body, emptyBox(h("strong", null, `No jobs in product “${session.product()}” yet.`), " ",
        acts ? [h("a", { href: "#/new" }, "Submit one"), " — it appears here as soon as it is queued."] : "A job appears here as soon as it is queued."));
    } else if (!rows.length) {
      fill(body, emptyBox(`No job matches these filters (${all.length} jobs ${state.jobsMore ? "loaded" : "in the product"}).`));
    } else {
      fill(body, table);
    }
    shown.textContent = !all.length ? ""
      : state.jobsMore ? `Showing ${rows.length} of the newest ${all.length} jobs; the product has older ones — counts and filters cover the jobs loaded.`
      : `Showing ${rows.length} of ${all.length} jobs.`;
    more.hidden = !state.jobsMore;
    more.disabled = false;
    updateBulk();
    if (all.length) markPainted("jobs");
  }

  let lastRev = -1;
  function render() {
    lastRev = state.rev;
    // Counts of a list that never loaded would say "0": hide them instead.
    counts.hidden = !state.jobsLoaded;
    counts.setAttribute("aria-label", state.jobsMore ? "Filter by stage (counts of the jobs loaded)" : "Filter by stage (counts per stage)");
    bulkBar.hidden = !state.jobsLoaded || !acts;
    renderControls(jobList());
    const focused = tbody.contains(document.activeElement) ? document.activeElement.closest("tr")?.dataset.id : null;
    renderRows();
    if (focused) tbody.querySelector(`tr[data-id="${focused}"] input`)?.focus();
  }
  renderHead();
  render();
  return {
    update(kind) {
      if ((kind === "data" || kind === "reset") && (state.rev !== lastRev || !state.jobsLoaded || kind === "reset")) render();
    },
  };
}
