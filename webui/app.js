// A read-only view of one product: polls the queue-state gate (one cheap read) and
// refetches jobs and factories only when it changed or every 15 s. Errors are shown.
// The operator token is kept in sessionStorage (this tab only, gone when it closes) and
// sent as a bearer token; it never goes into the URL.
"use strict";
const TOKEN_KEY = "fleet.operatorToken";
const api = (window.FLEET_API_BASE || "") + "/api";
const $ = (id) => document.getElementById(id);
let lastVersion = null, lastFull = 0, failures = 0;

function headers() {
  const out = { "X-Fleet-Product": $("product").value.trim() || "default" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function getJson(path) {
  const response = await fetch(api + path, { headers: headers(), cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    throw new Error(`${body.message || "unauthorized"}: enter the operator token the stack printed`);
  }
  if (!response.ok) throw new Error(`${path}: ${response.status} ${body.message || ""}`);
  return body;
}

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function render(jobs, factories) {
  const counts = {};
  for (const job of jobs) counts[job.stage] = (counts[job.stage] || 0) + 1;
  $("stages").replaceChildren(...Object.entries(counts).map(([stage, n]) => {
    const li = document.createElement("li"); li.textContent = `${stage}: ${n}`; return li;
  }));
  $("jobs").replaceChildren(...jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.append(cell(job.title), cell(job.stage), cell(job.holder || "—"), cell(job.epoch),
      cell(job.attempts), cell((job.capabilities || []).join(", ")));
    return tr;
  }));
  $("jobs-empty").hidden = jobs.length > 0;
  $("factories").replaceChildren(...factories.map((f) => {
    const tr = document.createElement("tr");
    tr.append(cell(f.id), cell(f.live ? "live" : "stale"), cell(f.capabilities.join(", ")),
      cell(`${f.load}/${f.seats}`), cell(f.lastSeen));
    return tr;
  }));
  $("factories-empty").hidden = factories.length > 0;
}

function status(kind, text) { const b = $("live"); b.className = "badge " + kind; b.textContent = text; }

async function tick() {
  try {
    const state = await getJson("/fleet/queue-state");
    const stale = Date.now() - lastFull > 15000;
    if (state.version !== lastVersion || stale) {
      const [jobs, factories] = await Promise.all([getJson("/fleet/jobs"), getJson("/fleet/factories")]);
      render(jobs.jobs, factories.factories);
      lastVersion = state.version; lastFull = Date.now();
    }
    failures = 0; $("error").hidden = true; status("live", "live");
  } catch (err) {
    failures += 1;
    status(failures > 3 ? "offline" : "reconnecting", failures > 3 ? "offline" : "reconnecting…");
    $("error").textContent = String(err.message || err); $("error").hidden = false;
  }
}

$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  lastVersion = null; tick();
});
$("product").addEventListener("change", () => { lastVersion = null; tick(); });
tick();
setInterval(tick, 2000);
