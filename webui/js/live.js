// Live state of one product, kept fresh with no manual refresh:
// - every 2 s, GET /fleet/queue-state (one point read) and GET /fleet/events?after=CURSOR;
// - the job and factory lists are fetched again when the queue-state version moved, when an
//   event names a job not seen yet, or every 10 s; other events are applied to the jobs in
//   place (stage changes other than submit/requeue do not move the version);
// - the connection state (live / reconnecting / offline / signed out) is always shown.
// The job list comes in pages newest first (GET /fleet/jobs?limit=&cursor=): the first JOB_PAGE jobs,
// and a page more each time the operator asks (loadMoreJobs). The fleet list carries each
// factory's last heartbeat (one call for the whole fleet, never one per factory).
import { ApiError, enc, get, session } from "./api.js";

const TICK_MS = 2000;
const FULL_MS = 10000;
export const JOB_PAGE = 200; // jobs a page (the API's default; at most 1000)

export const state = {
  status: "idle", // idle (signed out) | connecting | live | reconnecting | offline | unauthorized
  error: null, // the last ApiError while not live
  failures: 0,
  jobs: new Map(), // id -> job summary
  jobsLoaded: false,
  jobsWanted: JOB_PAGE, // how many jobs the list holds (a page more per "load more")
  jobsMore: false, // the product has more jobs than the list holds
  factories: [],
  factoriesLoaded: false,
  listError: null, // the error of the last list fetch, kept until one succeeds
  heartbeats: new Map(), // factory id -> {hb, none, fetchedAt}: from the fleet list
  version: null,
  lastFull: 0,
  lastOk: 0,
  since: Date.now(), // when the status last changed (this browser's clock)
  cursor: null,
  rev: 0, // bumped whenever jobs or factories changed
};

const listeners = new Set();
/** fn(kind, detail): kind "status" | "data" | "events" | "reset". */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function emit(kind, detail) {
  for (const fn of [...listeners]) {
    try { fn(kind, detail); } catch (err) { console.error(err); }
  }
}

let timer = 0;
let running = false;
let generation = 0; // a product switch or sign-out drops answers to older requests

export function reset() {
  generation += 1;
  Object.assign(state, {
    status: session.token() ? "connecting" : "idle", error: null, failures: 0, jobs: new Map(),
    jobsLoaded: false, jobsWanted: JOB_PAGE, jobsMore: false, factories: [], factoriesLoaded: false, listError: null,
    heartbeats: new Map(), version: null, lastFull: 0, lastOk: 0, cursor: null, since: Date.now(),
  });
  state.rev += 1;
  emit("reset");
  emit("status");
  clearTimeout(timer);
  timer = setTimeout(tick, 0);
}

/** Fetch the lists at the next tick, now (after an operator action, for instance). */
export function refreshSoon() {
  state.lastFull = 0;
  clearTimeout(timer);
  timer = setTimeout(tick, 50);
}

export function jobList() {
  return [...state.jobs.values()];
}

/** Hold a page more of jobs from now on (fetched at once). */
export function loadMoreJobs() {
  state.jobsWanted = state.jobs.size + JOB_PAGE;
  refreshSoon();
}

/** The newest `wanted` jobs, following the pages' `next`. */
async function fetchJobs(wanted) {
  const jobs = [];
  let cursor = null;
  do {
    const limit = Math.min(1000, wanted - jobs.length);
    const page = await get(`/fleet/jobs?limit=${limit}${cursor ? `&cursor=${enc(cursor)}` : ""}`);
    jobs.push(...page.jobs);
    cursor = page.next;
  } while (cursor && jobs.length < wanted);
  return { jobs, more: Boolean(cursor) };
}

async function fetchLists(gen) {
  try {
    const [jobs, factories] = await Promise.all([fetchJobs(state.jobsWanted), get("/fleet/factories")]);
    if (gen !== generation) return;
    state.jobs = new Map(jobs.jobs.map((j) => [j.id, j]));
    state.jobsMore = jobs.more;
    state.factories = factories.factories;
    const now = Date.now();
    state.heartbeats = new Map(factories.factories.map((f) => [f.id, f.heartbeat ? { hb: f.heartbeat, fetchedAt: now } : { none: true, fetchedAt: now }]));
    state.jobsLoaded = state.factoriesLoaded = true;
    state.listError = null;
    state.lastFull = Date.now();
    if (state.cursor === null) {
      // Follow the event feed from the newest event the list shows (server time), not from
      // the beginning of history. Events at that very instant come again: applied by seq.
      let newest = "";
      for (const j of state.jobs.values()) if (j.lastEventAt > newest) newest = j.lastEventAt;
      state.cursor = newest ? `${newest}||0` : "";
    }
    state.rev += 1;
    emit("data");
  } catch (err) {
    if (gen === generation) state.listError = err;
    throw err;
  }
}

/** Whether the status is now `status`; `since` moves only when it changes. */
function setStatus(status) {
  if (state.status !== status) state.since = Date.now();
  state.status = status;
}

/** Apply job events in place; true when the lists must be fetched again (a job not in the
 *  list, or a fleet event: a factory came, went or changed). */
function applyEvents(events) {
  let unknown = false;
  let changed = false;
  for (const ev of events) {
    if (ev.alert) continue; // an alert raised or cleared (the alerts panel follows these)
    if (ev.fleet) { unknown = true; continue; } // factories, tokens, settings: fetch again
    const job = state.jobs.get(ev.jobId);
    if (!job) { unknown = true; continue; }
    if (ev.seq <= (job.seq || 0)) continue;
    Object.assign(job, {
      seq: ev.seq, stage: ev.toStage, epoch: ev.epoch, holder: ev.holder ?? null,
      lastEventAt: ev.at, updatedAt: ev.at,
    }); // attempts, lease and costs come with the next full fetch (at most 10 s)
    changed = true;
  }
  if (changed) state.rev += 1;
  return unknown;
}

async function tick() {
  clearTimeout(timer);
  if (running) return;
  if (!session.token()) {
    setStatus("idle");
    emit("status");
    return;
  }
  running = true;
  const gen = generation;
  let delay = TICK_MS;
  try {
    const gate = await get("/fleet/queue-state");
    if (gen !== generation) return;
    let full = gate.version !== state.version || Date.now() - state.lastFull > FULL_MS || !state.jobsLoaded;
    if (state.cursor !== null) {
      const feed = await get(`/fleet/events?limit=500${state.cursor ? `&after=${enc(state.cursor)}` : ""}`);
      if (gen !== generation) return;
      state.cursor = feed.cursor || state.cursor;
      if (feed.events.length) {
        // A job not in the list is new, unless the list holds only the first pages: then
        // most jobs are not in it, and the gate and the 10 s refresh bring the changes.
        if (applyEvents(feed.events) && (!state.jobsMore || feed.events.some((e) => e.fleet))) full = true;
        emit("events", feed.events);
        if (feed.events.length >= 500) delay = 50; // more waiting: catch up
      }
    }
    if (full) await fetchLists(gen);
    if (gen !== generation) return;
    state.version = gate.version;
    state.failures = 0;
    state.error = null;
    state.lastOk = Date.now();
    setStatus("live");
    emit("data");
  } catch (err) {
    if (gen !== generation) return;
    state.failures += 1;
    state.error = err instanceof ApiError ? err : new ApiError(0, "client", String(err && err.message ? err.message : err));
    if (err.status === 401 || err.status === 403) setStatus("unauthorized");
    else setStatus(state.failures >= 3 ? "offline" : "reconnecting");
    delay = Math.min(TICK_MS * state.failures, 10000);
    emit("data");
  } finally {
    running = false;
    emit("status");
    if (gen === generation && session.token()) timer = setTimeout(tick, delay);
  }
}

export function start() {
  reset();
}
