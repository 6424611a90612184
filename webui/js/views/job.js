// One job: manifest and body, stage, lease holder and epoch, checkpoint, attempts, its runs
// (one record per attempt) and artifacts, the live timeline (the job's transitions merged
// with its agent's events), cost per attempt, the explain panel, its dependencies and
// children, and the operator's actions (none for a viewer).
import { can, enc, get, post } from "../api.js";
import { LEASED, TERMINAL, allows, emptyBox, errorBox, fill, h, json, loadingBox, markPainted, notify, stageBadge, time, timeEl, usd } from "../dom.js";
import { state } from "../live.js";
import { dagIds, dagSvg } from "../dag.js";
import { artifactsTable, branchUrl, githubRepo, httpUrl, runsTable } from "../runs.js";
import { act } from "./jobs.js";

const MANIFEST_FIELDS = ["title", "persona", "capabilities", "priority", "budgetUsd", "channel", "deps",
  "idempotencyKey", "maxAttempts", "leaseSeconds", "verify", "review", "repo", "base", "pr",
  "timeoutSeconds", "maxCostUsd"];

function frontMatter(job) {
  const lines = ["---"];
  for (const key of MANIFEST_FIELDS) {
    let v = job[key];
    if (v === null || v === undefined || (Array.isArray(v) && !v.length)) continue;
    if (key === "deps") v = v.mode === "all" ? v.jobs : v;
    lines.push(`${key === "budgetUsd" ? "budget" : key}: ${JSON.stringify(v)}`);
  }
  lines.push("---");
  return lines.join("\n");
}

function fact(label, ...value) {
  return h("div", null, h("dt", null, label), h("dd", null, ...value));
}

const isSet = (v) => v !== null && v !== undefined && v !== "";

/** The repository facts of a job that has them: repo (linked when on GitHub), base, pr, limits. */
function repoFacts(job) {
  const gh = githubRepo(job.repo);
  return [
    isSet(job.repo) ? h("div", { class: "wide" }, h("dt", null, "Repository"), h("dd", { class: "repo" },
      gh ? h("a", { href: httpUrl(job.repo), target: "_blank", rel: "noopener noreferrer" }, job.repo) : h("code", null, job.repo))) : null,
    isSet(job.base) ? fact("Base", gh ? h("a", { href: branchUrl(gh, job.base), target: "_blank", rel: "noopener noreferrer" }, h("code", null, job.base)) : h("code", null, job.base)) : null,
    job.pr ? fact("Pull request", "opened when shipped") : null,
    isSet(job.timeoutSeconds) ? fact("Timeout per attempt", `${job.timeoutSeconds} s`) : null,
    isSet(job.maxCostUsd) ? fact("Max cost per attempt", `$${Number(job.maxCostUsd).toFixed(2)}`) : null,
  ];
}

function describeData(data) {
  if (!data || !Object.keys(data).length) return null;
  if (data.score && typeof data.score === "object") {
    const { total, ...terms } = data.score;
    return h("div", { class: "muted small" }, `score ${total}: `, Object.entries(terms).map(([k, v]) => `${k} ${v}`).join(", "));
  }
  return h("div", { class: "muted small" }, Object.entries(data).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("; "));
}

function transitionItem(ev) {
  return h("li", { class: "ev transition", "data-seq": ev.seq, "data-type": ev.type },
    h("time", { datetime: ev.at, title: ev.at }, time(ev.at)),
    h("div", null,
      h("strong", null, ev.type), " ",
      ev.fromStage ? [stageBadge(ev.fromStage), " → "] : null, stageBadge(ev.toStage),
      h("span", { class: "muted" }, ` · #${ev.seq} · epoch ${ev.epoch} · ${ev.actor}`, ev.holder ? ` · holder ${ev.holder}` : ""),
      ev.reason ? h("div", null, `“${ev.reason}”`) : null,
      describeData(ev.data)));
}

function agentItem(ev) {
  const payload = typeof ev.payload === "string" ? ev.payload : JSON.stringify(ev.payload);
  const short = payload.length > 160 ? `${payload.slice(0, 160)}…` : payload;
  return h("li", { class: "ev agent", "data-key": ev.key, "data-type": ev.eventType },
    h("time", { datetime: ev.at, title: ev.at }, time(ev.at)),
    h("div", null,
      h("span", { class: "tag" }, "agent"), " ", h("strong", null, ev.eventType),
      h("span", { class: "muted" }, ` · ${ev.factory} · epoch ${ev.epoch} · #${ev.seq}`),
      payload.length > 160
        ? h("details", null, h("summary", null, short), h("pre", null, JSON.stringify(ev.payload, null, 2)))
        : h("div", { class: "payload" }, short)));
}

function scoreBars(score) {
  if (!score) return h("span", { class: "muted" }, "—");
  const { total, ...terms } = score;
  return h("div", { class: "score" },
    h("strong", null, String(total)),
    h("ul", { class: "terms" }, Object.entries(terms).map(([k, v]) =>
      h("li", { title: `${k}: ${v}` },
        h("span", { class: "term" }, k),
        h("span", { class: `bar ${v < 0 ? "neg" : "pos"}`, style: `width:${Math.min(60, Math.abs(v) * 40)}px` }),
        h("span", { class: "v" }, String(v))))));
}

function explainPanel(ex) {
  const verdicts = [...ex.factories].sort((a, b) =>
    (b.eligible - a.eligible) || ((b.score?.total ?? -1e9) - (a.score?.total ?? -1e9)));
  return [
    h("p", { class: ex.unroutable ? "callout warn" : "callout" }, h("strong", null, ex.unroutable ? "Unroutable. " : ""), ex.summary),
    ex.blockers && ex.blockers.length ? h("div", null, h("h3", null, "Blockers"), h("ul", null, ex.blockers.map((b) => h("li", null, b)))) : null,
    ex.failedBy && ex.failedBy.length ? h("p", null, "Failed before on: ", ex.failedBy.join(", ")) : null,
    ex.stalled ? h("p", { class: "callout warn" }, "Stalled: its holder heartbeats but its progress has not moved.") : null,
    verdicts.length
      ? h("table", { class: "explain" },
        h("caption", { class: "sr-only" }, "The scheduler's verdict per factory"),
        h("thead", null, h("tr", null, h("th", null, "Factory"), h("th", null, "Verdict"), h("th", null, "Why"), h("th", null, "Score"))),
        h("tbody", null, verdicts.map((v) => h("tr", { "data-factory": v.factory },
          h("td", null, v.factory),
          h("td", null, h("span", { class: v.eligible ? "ok" : "bad" }, v.eligible ? "eligible" : "not eligible")),
          h("td", null, v.reasons.length ? h("ul", { class: "reasons" }, v.reasons.map((r) => h("li", null, r))) : "—",
            v.missingCapabilities.length ? h("div", null, "missing: ", v.missingCapabilities.map((c) => h("span", { class: "chip missing" }, c))) : null),
          h("td", null, scoreBars(v.score))))))
      : h("p", { class: "muted" }, "No factory in this product to judge against."),
  ];
}

export function mount(root, id) {
  const acts = can("operator"); // a viewer reads: no action, no vote
  const heading = h("h1", null, "Job ", h("code", null, id));
  const status = h("div", { class: "job-status" });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Actions on this job" });
  const overview = h("dl", { class: "facts grid2" });
  const review = h("div");
  const explain = h("div");
  const costs = h("div");
  const runsEl = h("div");
  const artifactsEl = h("div");
  const deps = h("div");
  const graphEl = h("div");
  const progress = h("div");
  const manifest = h("div");
  const timeline = h("ol", { class: "timeline", reversed: true });
  const timelineNote = h("p", { class: "muted", "aria-live": "polite" });
  const errorEl = h("div");
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    heading, status, errorEl,
    h("section", { "aria-labelledby": "s-runs", class: "runs-panel" },
      h("h2", { id: "s-runs" }, "Runs ", h("span", { class: "muted small" }, "one per attempt, oldest first")), runsEl),
    h("section", { "aria-labelledby": "s-art", class: "artifacts-panel" }, h("h2", { id: "s-art" }, "Artifacts"), artifactsEl),
    graphEl,
    h("div", { class: "detail" },
      h("div", { class: "col" },
        h("section", { "aria-labelledby": "s-over" }, h("h2", { id: "s-over" }, "Overview"), overview),
        review,
        h("section", { "aria-labelledby": "s-tl" }, h("h2", { id: "s-tl" }, "Timeline ", h("span", { class: "muted small" }, "newest first, live")), timelineNote, timeline),
        h("section", { "aria-labelledby": "s-man" }, h("h2", { id: "s-man" }, "Manifest"), manifest)),
      h("div", { class: "col side" },
        acts ? h("section", { "aria-labelledby": "s-act" }, h("h2", { id: "s-act" }, "Actions"), actions) : null,
        h("section", { "aria-labelledby": "s-ex", class: "explain-panel" }, h("h2", { id: "s-ex" }, "Explain"), explain),
        h("section", { "aria-labelledby": "s-cost" }, h("h2", { id: "s-cost" }, "Cost per attempt"), costs),
        progress,
        deps)));

  let job = null;
  let runs = null; // the run records, oldest first, or {error}
  let artifacts = null; // the artifact list, or {error}
  let lastSeq = 0;
  let agentCursor = null;
  const transitions = new Map(); // seq -> event
  const agents = new Map(); // key -> event
  let alive = true;
  let busy = false;
  let dirty = true;
  let lastJobFetch = 0;
  let dag = null; // the dependency tree, {error}, or null (no dependency)
  let inDag = new Set(); // the jobs drawn: their events redraw the graph

  async function loadJob() {
    job = await get(`/fleet/jobs/${enc(id)}`);
    lastJobFetch = Date.now();
    if (state.jobs.has(id)) Object.assign(state.jobs.get(id), job, { body: undefined, events: undefined });
  }

  async function loadRuns() {
    try {
      runs = (await get(`/fleet/jobs/${enc(id)}/runs`)).runs || [];
    } catch (err) {
      // A coordinator without the runs route: the newest runs are embedded in the job.
      if (err.status === 404 && err.code !== "job_not_found") runs = Array.isArray(job.runs) ? job.runs : [];
      else runs = { error: err }; // shown in its section; the rest of the page still paints
    }
  }

  async function loadDag() {
    if (!job.deps || !job.deps.jobs.length) { dag = null; inDag = new Set(); return; }
    try {
      dag = await get(`/fleet/jobs/${enc(id)}/dag`);
      inDag = dagIds(dag);
    } catch (err) {
      dag = { error: err }; // shown in its section; the rest of the page still paints
    }
  }

  function renderDag() {
    if (!dag) { fill(graphEl); return; }
    fill(graphEl, h("section", { "aria-labelledby": "s-dag", class: "dag-panel" },
      h("h2", { id: "s-dag" }, "Dependency graph ",
        h("span", { class: "muted small" }, "each job above waits for the jobs under it (dashed: for any one of them); click a job to open it")),
      dag.error ? errorBox("the dependency graph", dag.error) : h("div", { class: "scroll-x dag-box" }, dagSvg(dag, id))));
  }

  async function loadArtifacts() {
    try {
      artifacts = (await get(`/fleet/jobs/${enc(id)}/artifacts`)).artifacts || [];
    } catch (err) {
      artifacts = { error: err }; // shown in its section; the rest of the page still paints
    }
  }

  // The download URL is a short-lived SAS URL: asked for on the click, never kept in the page.
  // It answers as an attachment (the coordinator forces downloads: an artifact never renders
  // as a page), so following it saves the file and this page stays where it is.
  async function openArtifact(artifact) {
    try {
      const out = await get(`/fleet/jobs/${enc(id)}/artifacts/${enc(artifact.id)}`);
      const url = httpUrl(out.url);
      if (!url) throw new Error("the coordinator answered no download URL");
      const link = h("a", { href: url, download: "", rel: "noopener noreferrer", hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      notify(`Downloading ${artifact.name}.`);
    } catch (err) {
      notify(`Could not download ${artifact.name}: ${err.describe ? err.describe() : err.message}`, "error");
    }
  }

  async function loadEvents() {
    const out = await get(`/fleet/jobs/${enc(id)}/events?after=${lastSeq}`);
    for (const ev of out.events) transitions.set(ev.seq, ev);
    lastSeq = Math.max(lastSeq, out.last || 0);
    for (let page = 0; page < 10; page += 1) {
      const a = await get(`/fleet/jobs/${enc(id)}/agent-events?limit=500${agentCursor ? `&after=${enc(agentCursor)}` : ""}`);
      for (const ev of a.events) agents.set(ev.key, ev);
      agentCursor = a.cursor || agentCursor;
      if (a.events.length < 500) break;
    }
  }

  async function refresh() {
    if (busy || !alive) return;
    busy = true;
    try {
      const needJob = dirty || Date.now() - lastJobFetch > 10000 || !job;
      if (needJob) {
        await loadJob();
        await Promise.all([loadRuns(), loadArtifacts(), loadDag()]);
      }
      await loadEvents();
      let ex = null;
      if (needJob) ex = await get(`/fleet/jobs/${enc(id)}/explain`).catch((err) => ({ error: err }));
      let hb = null;
      if (job.holder && LEASED.has(job.stage)) {
        hb = await get(`/fleet/factories/${enc(job.holder)}/heartbeat`).catch(() => null);
      }
      if (!alive) return;
      fill(errorEl);
      dirty = false;
      render(ex, hb, needJob);
    } catch (err) {
      if (!alive) return;
      if (err.status === 404 && err.code === "job_not_found") {
        fill(errorEl, h("div", { class: "error-box", role: "alert" }, `There is no job ${id} in this product: ${err.message}.`));
      } else {
        fill(errorEl, errorBox("this job", err));
      }
      if (!job) fill(status);
    } finally {
      busy = false;
    }
  }

  function render(ex, hb, full) {
    fill(heading, job.title);
    fill(status, stageBadge(job.stage), " ",
      h("span", { class: "muted" }, `${job.id} · priority ${job.priority} · epoch ${job.epoch}`),
      job.unroutable ? h("span", { class: "tag warn" }, "unroutable") : null,
      job.stalled ? h("span", { class: "tag warn" }, "stalled") : null);
    document.title = `${job.title} · agent-fleet`;
    if (full) {
      fill(overview,
        fact("Stage", stageBadge(job.stage)),
        fact("Holder", job.holder || h("span", { class: "muted" }, "none")),
        fact("Epoch", String(job.epoch)),
        fact("Lease expires", job.lease ? timeEl(job.lease.expiresAt) : "—"),
        fact("Attempts", `${job.attempts} of ${job.maxAttempts}`),
        fact("Priority", String(job.priority)),
        fact("Capabilities", job.capabilities.length ? job.capabilities.map((c) => h("span", { class: "chip" }, c)) : "none"),
        fact("Channel", job.channel || "—"),
        fact("Persona", job.persona ? `${job.persona}${job.profile ? ` v${job.profile.version ?? ""}` : ""}` : "—"),
        fact("Created", timeEl(job.createdAt)),
        fact("Updated", timeEl(job.updatedAt)),
        fact("Failed on", job.failedBy.length ? job.failedBy.join(", ") : "—"),
        ...repoFacts(job),
        h("div", { class: "wide" }, h("dt", null, "Checkpoint"), h("dd", null,
          job.checkpoint === null || job.checkpoint === undefined ? "none" : h("pre", null, json(job.checkpoint)))),
        job.result ? h("div", { class: "wide" }, h("dt", null, "Result"), h("dd", null, h("pre", null, json(job.result)))) : null);
      fill(manifest, h("pre", { class: "manifest", "aria-label": "Front matter" }, frontMatter(job)),
        job.body ? h("pre", { class: "body", "aria-label": "Body" }, job.body) : h("p", { class: "muted" }, "No body."));
      renderActions();
      renderReview();
      renderCosts();
      renderRuns();
      renderDeps();
      renderDag();
      if (ex) fill(explain, ...(ex.error ? [errorBox("the explanation", ex.error)] : explainPanel(ex)));
    }
    renderProgress(hb);
    const items = [...[...transitions.values()].map((e) => ({ at: e.at, k: `t${e.seq}`, el: () => transitionItem(e) })),
      ...[...agents.values()].map((e) => ({ at: e.at, k: `a${e.key}`, el: () => agentItem(e) }))];
    items.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : a.k < b.k ? 1 : -1));
    if (timeline.childElementCount !== items.length) {
      fill(timeline, ...items.map((i) => i.el()));
      const latest = [...transitions.values()].at(-1);
      timelineNote.textContent = latest ? `Latest: ${latest.type} → ${latest.toStage} (${transitions.size} transitions, ${agents.size} agent events).` : "";
    }
    if (!items.length) fill(timeline, h("li", { class: "muted" }, "No event yet."));
    markPainted("job");
  }

  function button(action, label, opts = {}) {
    return h("button", {
      type: "button", "data-action": action, class: opts.danger ? "danger" : "", disabled: !allows(action, job.stage),
      title: allows(action, job.stage) ? "" : `not allowed while ${job.stage}`,
      onclick: async () => {
        const extra = action === "reprioritize" ? { priority: Number(prio.value) } : {};
        if (action === "reprioritize" && !(Number.isInteger(extra.priority) && extra.priority >= 0 && extra.priority <= 9)) {
          prio.setAttribute("aria-invalid", "true");
          prio.focus();
          return;
        }
        if (action === "requeue") extra.checkpoint = { current: job.checkpoint };
        const out = await act(action, [job.id], extra);
        if (out && out.ok.length) { dirty = true; refresh(); }
      },
    }, label);
  }
  const prio = h("input", { id: "job-priority", type: "number", min: 0, max: 9, class: "narrow" });

  function renderActions() {
    prio.value = job.priority;
    fill(actions,
      button("cancel", "Cancel", { danger: true }), button("requeue", "Requeue"),
      button("ship", "Ship"), button("reject", "Reject", { danger: true }),
      h("span", { class: "inline" }, h("label", { for: "job-priority" }, "Priority"), prio, button("reprioritize", "Set")));
  }

  function voteItem(v) {
    return h("li", { class: `vote ${v.verdict}`, "data-reviewer": v.reviewer },
      h("strong", null, v.verdict === "approve" ? "✓ approved" : "✗ rejected"), " ",
      h("span", { class: "muted" }, `${v.reviewer} (${v.kind}) · `, timeEl(v.at)),
      v.comments ? h("pre", { class: "comments" }, v.comments) : null);
  }

  const reviewKind = h("input", { id: "review-kind", value: "human", class: "narrow", "aria-describedby": "review-kind-help" });
  const reviewComments = h("textarea", { id: "review-comments", rows: 3, placeholder: "What is right, what must change" });

  async function vote(verdict) {
    try {
      const out = await post(`/fleet/jobs/${enc(job.id)}/review`,
        { verdict, comments: reviewComments.value, kind: reviewKind.value.trim() || "human" });
      reviewComments.value = "";
      notify(`Vote recorded: the job is ${out.stage}.`);
      dirty = true;
      refresh();
    } catch (err) {
      notify(`Vote refused: ${err.describe ? err.describe() : err.message}`, "error");
    }
  }

  function renderReview() {
    const st = job.reviewState;
    if (job.stage !== "review" && !st) { fill(review); return; }
    const spec = job.review || { approvals: 1, distinctKind: false, maxRounds: 3 };
    const votes = st ? st.votes : [];
    const approvals = votes.filter((v) => v.verdict === "approve").length;
    const rule = `${spec.approvals} approval${spec.approvals === 1 ? "" : "s"}${spec.distinctKind ? " from another kind than the author's" : ""}, at most ${spec.maxRounds} rounds`;
    const summary = st
      ? `Round ${st.round} of ${spec.maxRounds} · ${approvals} of ${spec.approvals} approvals · author ${st.author || "unknown"} (${st.authorKind})`
      : `Needs ${rule}.`;
    const history = st && st.history.length
      ? h("details", null, h("summary", null, `Earlier rounds (${st.history.length})`),
        h("ul", { class: "votes" }, st.history.map((r) => h("li", null,
          h("strong", null, `Round ${r.round}: ${r.outcome}`), h("span", { class: "muted" }, ` · author ${r.author || "unknown"}`),
          h("ul", { class: "votes" }, r.votes.map(voteItem))))))
      : null;
    if (job.stage !== "review") {
      fill(review, h("section", { class: "review-summary", "aria-labelledby": "s-review" },
        h("h2", { id: "s-review" }, "Review"),
        h("p", null, `${summary} · last round ${st.outcome}.`),
        votes.length ? h("ul", { class: "votes" }, votes.map(voteItem)) : null, history));
      return;
    }
    const asked = st && st.requests.length
      ? h("p", { class: "muted small" }, "Asked: ", st.requests.map((r) => `${r.by}${r.reviewers.length ? ` → ${r.reviewers.join(", ")}` : ""}${r.note ? ` (“${r.note}”)` : ""}`).join("; "))
      : null;
    fill(review, h("section", { class: "review-card", "aria-labelledby": "s-review" },
      h("h2", { id: "s-review" }, "Waiting for review"),
      h("p", { class: "review-summary" }, summary),
      h("p", { class: "muted small" }, `Rule: ${rule}. One rejection sends it back to the queue with every comment in its checkpoint.`),
      votes.length ? h("ul", { class: "votes" }, votes.map(voteItem)) : h("p", { class: "muted" }, "No vote yet in this round."),
      asked,
      acts && h("div", { class: "review-form" },
        h("label", { for: "review-comments" }, "Comments"), reviewComments,
        h("span", { class: "inline" }, h("label", { for: "review-kind" }, "Review as"), reviewKind,
          h("span", { id: "review-kind-help", class: "muted small" }, "your kind: human, or a model family")),
        h("div", { class: "actions" },
          h("button", { type: "button", "data-action": "approve-review", onclick: () => vote("approve") }, "Approve"),
          h("button", { type: "button", "data-action": "reject-review", class: "danger", onclick: () => vote("reject") }, "Request changes"))),
      history,
      acts && h("p", { class: "muted small" }, "Override the quorum: ",
        button("ship", "Ship now"), " ", button("reject", "Fail it", { danger: true }))));
  }

  function renderCosts() {
    const entries = Object.entries(job.costs || {}).sort((a, b) => Number(a[0]) - Number(b[0]));
    const total = entries.reduce((s, [, v]) => s + v, 0);
    fill(costs,
      h("p", null, `Estimate ${job.budgetUsd === null || job.budgetUsd === undefined ? "none" : usd(job.budgetUsd)} · attempts ${job.attempts} of ${job.maxAttempts}`),
      entries.length
        ? h("table", { class: "costs" }, h("caption", { class: "sr-only" }, "Cost per attempt"),
          h("thead", null, h("tr", null, h("th", null, "Attempt (epoch)"), h("th", { class: "num" }, "Cost"))),
          h("tbody", null, entries.map(([epoch, v]) => h("tr", null, h("td", null, epoch), h("td", { class: "num" }, usd(v))))),
          h("tfoot", null, h("tr", null, h("th", null, "Total"), h("td", { class: "num" }, usd(total)))))
        : h("p", { class: "muted" }, "No cost reported yet (factories report costUsd as they work)."));
  }

  function renderRuns() {
    const listed = Array.isArray(artifacts) ? artifacts : [];
    if (runs && runs.error) fill(runsEl, errorBox("the runs", runs.error));
    else if (runs && runs.length) fill(runsEl, runsTable(runs, job, listed, openArtifact));
    else fill(runsEl, emptyBox("No attempt yet: a run is recorded when a factory claims the job."));
    if (artifacts && artifacts.error) fill(artifactsEl, errorBox("the artifacts", artifacts.error));
    else if (listed.length) fill(artifactsEl, artifactsTable(listed, openArtifact));
    else fill(artifactsEl, h("p", { class: "muted" }, "No artifact yet (factories upload logs, the diff and declared outputs at each attempt's end)."));
  }

  function depItem(depId) {
    const d = state.jobs.get(depId);
    return h("li", null, d ? [stageBadge(d.stage), " "] : null, h("a", { href: `#/jobs/${depId}` }, d ? d.title : depId));
  }

  function renderDeps() {
    const depIds = job.deps ? job.deps.jobs : [];
    const children = new Set(job.children || []);
    for (const other of state.jobs.values()) if (other.deps && other.deps.jobs.includes(job.id)) children.add(other.id);
    const parts = [];
    if (depIds.length) {
      parts.push(h("h3", null, `Waits for ${job.deps.mode === "any" ? "any" : "all"} of`), h("ul", { class: "deps" }, depIds.map(depItem)));
    }
    if (job.parentId) parts.push(h("p", null, "Part of ", h("a", { href: `#/jobs/${job.parentId}` }, state.jobs.get(job.parentId)?.title || job.parentId)));
    if (children.size) parts.push(h("h3", null, "Jobs waiting on this one"), h("ul", { class: "deps" }, [...children].map(depItem)));
    fill(deps, ...(parts.length ? [h("section", { "aria-labelledby": "s-deps" }, h("h2", { id: "s-deps" }, "Dependencies"), ...parts)] : []));
  }

  function renderProgress(hb) {
    const mine = hb && (hb.jobs || []).find((p) => p.jobId === job.id);
    const parts = [];
    if (mine) {
      parts.push(h("p", null, `${mine.tokens} tokens · ${usd(mine.costUsd)} so far · idle ${Math.round(mine.idleSeconds)} s`),
        mine.lastOutputLine ? h("pre", { class: "output" }, mine.lastOutputLine) : null);
    }
    if (job.progress) parts.push(h("pre", null, json(job.progress)));
    fill(progress, ...(parts.length ? [h("section", { "aria-labelledby": "s-prog" }, h("h2", { id: "s-prog" }, "Progress"), ...parts)] : []));
  }

  fill(status, loadingBox("the job"));
  refresh();
  return {
    update(kind, detail) {
      if (kind === "events" && detail.some((e) => e.jobId === id || inDag.has(e.jobId))) { dirty = true; refresh(); return; }
      if (kind === "data" && state.status === "live") {
        // agent events are not in the product feed: poll them while the job can still run
        if (!job || !TERMINAL.has(job.stage) || Date.now() - lastJobFetch > 10000) refresh();
      }
    },
    unmount() { alive = false; },
  };
}
