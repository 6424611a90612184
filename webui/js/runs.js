// A job's run records (one per attempt) and its artifacts, as the job page shows them.
// Everything here builds DOM from data (text only); the one network call, asking for an
// artifact's download URL, is passed in by the page.
import { agoIso, h } from "./dom.js";

const TOKEN_KINDS = [["input", "input"], ["output", "output"], ["cacheRead", "cache read"], ["cacheWrite", "cache write"]];

// An outcome is coloured like the stage it resembles (the .s-* classes of the stage badges).
const OUTCOME_STAGE = {
  shipped: "shipped", failed: "failed", timeout: "failed", budget_exceeded: "failed",
  retry: "queued", released: "blocked", taken_back: "blocked", fenced: "cancelled",
};

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

/** 950, 12.3k, 12k, 4.5M */
export function compact(n) {
  if (!isNumber(n)) return "—";
  for (const [unit, size] of [["G", 1e9], ["M", 1e6], ["k", 1e3]]) {
    if (Math.abs(n) >= size * 0.9995) { // 999999 is "1M", not "1000k"
      const scaled = n / size;
      return `${(Math.abs(scaled) < 100 ? scaled.toFixed(1) : scaled.toFixed(0)).replace(/\.0$/, "")}${unit}`;
    }
  }
  return String(Math.round(n));
}

/** "$0.42"; "unknown" when the cost was not reported (null): never "$0.00" for unknown. */
export function runCost(cost) {
  if (!isNumber(cost)) return "unknown";
  if (cost > 0 && cost < 0.01) return "<$0.01";
  return `$${cost.toFixed(2)}`;
}

export function bytes(n) {
  if (!isNumber(n)) return "not uploaded";
  if (n < 1000) return `${n} B`;
  for (const [unit, size] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (n >= size) return `${(n / size).toFixed(1).replace(/\.0$/, "")} ${unit}`;
  }
  return `${n} B`;
}

/** {owner, name} of a GitHub https URL (https://github.com/o/r[.git][/]); null for any other. */
export function githubRepo(url) {
  const m = /^https:\/\/github\.com\/([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+?)(?:\.git)?\/?$/.exec(String(url || ""));
  return m ? { owner: m[1], name: m[2] } : null;
}

const GITHUB = (gh) => `https://github.com/${encodeURIComponent(gh.owner)}/${encodeURIComponent(gh.name)}`;
export const branchUrl = (gh, branch) => `${GITHUB(gh)}/tree/${String(branch).split("/").map(encodeURIComponent).join("/")}`;
export const commitUrl = (gh, sha) => `${GITHUB(gh)}/commit/${encodeURIComponent(sha)}`;
const SHA = /^[0-9a-f]{7,64}$/i;

/** The URL when it is http(s), else null: a factory-reported URL never becomes a javascript: link. */
export function httpUrl(value) {
  try {
    const url = new URL(String(value || ""));
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

export function truncate(text, max) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function when(iso) {
  return iso ? h("time", { datetime: iso, title: iso }, agoIso(iso)) : null;
}

export function outcomeBadge(outcome) {
  const label = outcome ? String(outcome).replace(/_/g, " ") : "running";
  const stage = outcome ? OUTCOME_STAGE[outcome] || "blocked" : "building";
  return h("span", { class: `stage s-${stage}`, "data-outcome": outcome || "running" }, label);
}

/** Text that copies in full with one click (a branch or sha when it cannot be linked). */
function copyable(shown, full) {
  return h("span", { class: "copyable" },
    h("code", { title: full }, shown),
    h("button", {
      type: "button", class: "copy", title: `Copy ${full}`, "aria-label": `Copy ${full}`,
      onclick: async (ev) => {
        const button = ev.currentTarget;
        try {
          await navigator.clipboard.writeText(full);
          button.textContent = "copied";
        } catch {
          button.textContent = "select it";
        }
      },
    }, "copy"));
}

function tokensCell(tokens) {
  const t = tokens || {};
  if (!TOKEN_KINDS.some(([k]) => isNumber(t[k]))) return h("td", { class: "num tokens" }, "—");
  const cache = (isNumber(t.cacheRead) ? t.cacheRead : 0) + (isNumber(t.cacheWrite) ? t.cacheWrite : 0);
  const title = TOKEN_KINDS.map(([k, label]) => `${label} ${isNumber(t[k]) ? t[k].toLocaleString("en") : "—"}`).join(" · ");
  return h("td", { class: "num tokens", title },
    `${compact(t.input)} / ${compact(t.output)} / ${compact(cache)}`);
}

function diffCell(diff) {
  if (!diff) return h("td", { class: "diff" }, "—");
  const files = isNumber(diff.files) ? diff.files : 0;
  return h("td", { class: "diff" },
    h("span", { class: "ins" }, `+${isNumber(diff.insertions) ? diff.insertions : 0}`), " ",
    h("span", { class: "del" }, `−${isNumber(diff.deletions) ? diff.deletions : 0}`),
    ` in ${files} file${files === 1 ? "" : "s"}`);
}

// Branch over commit in one cell: a fleet branch (fleet/<job id>) is long, the table is wide.
function gitCell(run, gh) {
  if (!run.branch && !run.commit) return h("td", { class: "git" }, "—");
  const short = String(run.commit || "").slice(0, 7);
  return h("td", { class: "git" },
    run.branch ? h("div", { class: "branch" }, gh
      ? h("a", { href: branchUrl(gh, run.branch), target: "_blank", rel: "noopener noreferrer", title: run.branch }, h("code", null, run.branch))
      : copyable(run.branch, run.branch)) : null,
    run.commit ? h("div", { class: "commit" }, gh && SHA.test(run.commit)
      ? h("a", { href: commitUrl(gh, run.commit), target: "_blank", rel: "noopener noreferrer", title: run.commit }, h("code", null, short))
      : copyable(short, run.commit)) : null);
}

function whenCell(run) {
  const ended = run.endedAt
    ? ["ended ", when(run.endedAt), isNumber(run.durationSeconds) ? ` · took ${duration(run.durationSeconds)}` : null]
    : [run.outcome ? "not ended" : "running"];
  return h("td", { class: "when" },
    h("div", { class: "started" }, when(run.startedAt) || "—"),
    h("div", { class: "ended muted small" }, ...ended));
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function prCell(run) {
  const url = httpUrl(run.prUrl);
  const note = run.prNote ? h("div", { class: "muted small", title: run.prNote }, truncate(run.prNote, 40)) : null;
  if (url) {
    const number = /\/pull\/(\d+)/.exec(url);
    return h("td", { class: "pr" }, h("a", { href: url, target: "_blank", rel: "noopener noreferrer", title: url }, number ? `#${number[1]}` : "PR"), note);
  }
  return h("td", { class: "pr" }, run.prUrl ? h("code", { title: run.prUrl }, truncate(run.prUrl, 30)) : (note ? null : "—"), note);
}

/** A button that fetches the artifact's short-lived URL on click (none is kept in the page). */
export function downloadButton(artifact, open, label) {
  const uploaded = isNumber(artifact.size);
  return h("button", {
    type: "button", class: "linkish", "data-artifact": artifact.id, disabled: !uploaded,
    title: uploaded ? `Download ${artifact.name} (a link valid for a few minutes is fetched on click)` : `${artifact.name} was not uploaded`,
    onclick: () => open(artifact),
  }, label || artifact.name);
}

function artifactsCell(run, byKey, open) {
  const names = Array.isArray(run.artifacts) ? run.artifacts : [];
  const errors = Array.isArray(run.artifactErrors) ? run.artifactErrors : [];
  if (!names.length && !errors.length) return h("td", { class: "artifacts" }, "—");
  return h("td", { class: "artifacts" },
    h("ul", { class: "plain" }, names.map((name) => {
      const artifact = byKey.get(`${run.epoch}/${name}`);
      return h("li", null, artifact ? downloadButton(artifact, open) : h("span", { title: "listed by the run, not in the artifacts list" }, name));
    })),
    errors.length ? h("div", { class: "bad small", title: errors.join("\n") }, `${errors.length} upload error${errors.length === 1 ? "" : "s"}`) : null);
}

/** The runs table, oldest first. `job` gives the repo (for GitHub links); `artifacts` the
 *  job's artifact list; `open(artifact)` fetches and opens one. */
export function runsTable(runs, job, artifacts, open) {
  const gh = githubRepo(job.repo);
  const byKey = new Map(artifacts.map((a) => [`${a.epoch}/${a.name}`, a]));
  const sorted = [...runs].sort((a, b) => a.epoch - b.epoch);
  return h("div", { class: "scroll-x" }, h("table", { class: "runs" },
    h("caption", { class: "sr-only" }, "One row per attempt, oldest first"),
    h("thead", null, h("tr", null,
      h("th", { class: "num" }, "Epoch"),
      ["Factory", "Engine", "Started / ended", "Outcome", "Reason"].map((t) => h("th", null, t)),
      h("th", { class: "num", title: "input / output / cache (read + write)" }, "Tokens", h("div", { class: "muted small" }, "in / out / cache")),
      h("th", { class: "num" }, "Cost"),
      ["Diff", "Branch / commit", "PR", "Artifacts"].map((t) => h("th", null, t)))),
    h("tbody", null, sorted.map((run) => h("tr", { "data-epoch": run.epoch, "data-outcome": run.outcome || "running" },
      h("td", { class: "num" }, String(run.epoch)),
      h("td", null, run.factory || "—"),
      h("td", null, run.engine ? `${run.engine}${run.engineVersion ? ` ${run.engineVersion}` : ""}` : "—"),
      whenCell(run),
      h("td", null, outcomeBadge(run.outcome),
        isNumber(run.exitCode) ? h("span", { class: "muted small" }, ` exit ${run.exitCode}`) : null),
      h("td", { class: "reason", title: run.reason || null }, run.reason ? truncate(run.reason, 60) : "—"),
      tokensCell(run.tokens),
      h("td", { class: `num cost${isNumber(run.costUsd) ? "" : " muted"}`, title: isNumber(run.costUsd) ? `$${run.costUsd}` : "the engine reported no cost" }, runCost(run.costUsd)),
      diffCell(run.diff),
      gitCell(run, gh),
      prCell(run),
      artifactsCell(run, byKey, open))))));
}

/** The job's artifacts: name, attempt, size, uploaded by, with a download button each. */
export function artifactsTable(artifacts, open) {
  return h("table", { class: "artifacts" },
    h("caption", { class: "sr-only" }, "The job's artifacts, by attempt"),
    h("thead", null, h("tr", null, h("th", null, "Name"), h("th", { class: "num" }, "Attempt (epoch)"),
      h("th", { class: "num" }, "Size"), h("th", null, "Uploaded by"), h("th", null, "Uploaded"))),
    h("tbody", null, artifacts.map((a) => h("tr", { "data-artifact-row": a.id },
      h("td", null, downloadButton(a, open)),
      h("td", { class: "num" }, String(a.epoch)),
      h("td", { class: "num", title: isNumber(a.size) ? `${a.size} bytes` : null }, bytes(a.size)),
      h("td", null, a.uploadedBy || "—"),
      h("td", null, when(a.createdAt) || "—")))));
}
