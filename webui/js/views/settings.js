// The product's settings, in three tabs: the scheduler's weights, the preemption rule, the alert
// rules and the default attempt timeout (GET/PUT /fleet/settings); the profiles (personas) with
// their versions, one shown, and a line diff between two computed here; the GitHub tracker
// bindings and where the echo of stage changes stands. Everyone reads; admins change the
// settings and the bindings (the coordinator refuses the rest anyway). A change refused is shown
// at its field: the coordinator's 400 names it (details.problems[].path).
import { ApiError, can, del, enc, get, put, session } from "../api.js";
import { confirmAction, emptyBox, errorBox, fill, h, loadingBox, notify, timeEl } from "../dom.js";

const TABS = [["", "Scheduler and alerts"], ["profiles", "Profiles"], ["tracker", "Tracker"]];

export function mount(root, tab = "") {
  const current = tab || "";
  root.append(h("h1", null, `Settings of ${session.product()}`),
    h("nav", { class: "subnav", "aria-label": "Settings" }, h("ul", null, TABS.map(([key, label]) =>
      h("li", null, h("a", { href: key ? `#/settings/${key}` : "#/settings", "aria-current": key === current ? "page" : null }, label))))));
  const panel = h("div");
  root.append(panel);
  if (current === "profiles") return profilesTab(panel);
  if (current === "tracker") return trackerTab(panel);
  return schedulerTab(panel);
}

// --- scheduler, preemption, alerts -----------------------------------------------------

const WEIGHT_HELP = {
  capability: "matching capabilities", affinity: "the factory worked the job before", load: "free seats",
  cost: "cheaper factories", health: "healthy factories", starvation: "jobs waiting long",
  priority: "the job's priority", aging_seconds: "seconds for waiting to count fully",
  tie_band: "scores this close are a tie", exclude_after_failures: "failures on a factory before it is avoided",
  outcome: "learned routing (0: shadow mode, recorded, not applied)",
};
const PREEMPTION = [
  ["enabled", "Preemption on", "bool", "a critical job with no free seat may evict the lowest-priority running job"],
  ["minPriority", "Critical from priority", "int", "0–9"],
  ["afterSeconds", "After waiting (s)", "num", "how long a critical job waits before evicting"],
];
const ALERTS = [
  ["enabled", "Alerts on", "bool", "the metrics timer raises and clears alerts"],
  ["starvationSeconds", "Oldest queued job (s)", "num", "0: off"],
  ["staleFactories", "Stale factories", "int", "0: off"],
  ["stalledJobs", "Stalled jobs", "int", "0: off"],
  ["unroutableJobs", "Unroutable jobs", "int", "0: off"],
  ["reviewWaitingSeconds", "Review waiting (s)", "num", "0: off"],
  ["budgetFraction", "Budget fraction", "num", "of the ceiling spent or reserved (0.9: 90%)"],
  ["noLiveFactories", "No live factory", "bool", "alert when no factory is live"],
];

/** A form value as the API takes it: a number, or the text itself (the coordinator says why). */
function numberOrText(raw) {
  const text = raw.trim();
  if (text === "") return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : text;
}

function schedulerTab(panel) {
  const admin = can("admin");
  const fields = new Map(); // API path ("weights.load") -> {input, kind, error}
  const summary = h("div", { class: "error-summary", role: "alert", hidden: true });
  const body = h("div");
  let alive = true;

  function field(path, label, kind, help) {
    const id = `set-${path.replace(/[^A-Za-z0-9]/g, "-")}`;
    const input = kind === "bool"
      ? h("input", { id, type: "checkbox", disabled: !admin })
      : h("input", { id, inputmode: "decimal", class: "num-input", autocomplete: "off", readonly: !admin, "aria-describedby": `${id}-help ${id}-err` });
    const error = h("p", { id: `${id}-err`, class: "field-error", "data-error-for": path });
    fields.set(path, { input, kind, error });
    return h("div", { class: `field${kind === "bool" ? " check" : ""}`, "data-field": path },
      kind === "bool" ? h("label", { for: id }, input, ` ${label}`) : [h("label", { for: id }, label), input],
      help ? h("p", { id: `${id}-help`, class: "help" }, help) : null, error);
  }

  function setValues(settings) {
    for (const [path, { input, kind }] of fields) {
      const [group, key] = path.includes(".") ? path.split(".") : [null, path];
      const v = group ? (settings[group] || {})[key] : settings[key];
      if (kind === "bool") input.checked = !!v;
      else input.value = v === null || v === undefined ? "" : String(v);
    }
  }

  function build(settings) {
    const weights = Object.keys(settings.weights || {});
    const form = h("form", { class: "settings-form", novalidate: true },
      summary,
      h("fieldset", { class: "group" }, h("legend", null, "Scheduler weights"),
        h("p", { class: "help" }, "How much each term counts when the scheduler ranks factories for a job (0–100)."),
        h("div", { class: "form-grid" }, weights.map((k) => field(`weights.${k}`, k, "num", WEIGHT_HELP[k] || null)))),
      h("fieldset", { class: "group" }, h("legend", null, "Preemption"),
        h("div", { class: "form-grid" }, PREEMPTION.map(([k, label, kind, help]) => field(`preemption.${k}`, label, kind, help)))),
      h("fieldset", { class: "group" }, h("legend", null, "Alert rules"),
        h("div", { class: "form-grid" }, ALERTS.map(([k, label, kind, help]) => field(`alerts.${k}`, label, kind, help)))),
      h("fieldset", { class: "group" }, h("legend", null, "Attempts"),
        h("div", { class: "form-grid" }, field("timeoutSeconds", "Default attempt timeout (s)", "num", "when a job's manifest names none; empty: none"))),
      admin
        ? h("div", { class: "buttons left" }, h("button", { type: "submit", class: "primary" }, "Save settings"),
          h("span", { class: "muted small" }, "Instances pick a change up within 30 s."))
        : h("p", { class: "muted" }, "Changing the settings needs an admin token."));
    form.addEventListener("submit", (event) => { event.preventDefault(); save(); });
    return form;
  }

  function clearErrors() {
    summary.hidden = true;
    fill(summary);
    for (const { input, error } of fields.values()) { error.textContent = ""; input.removeAttribute("aria-invalid"); }
  }

  async function save() {
    clearErrors();
    const out = { weights: {}, preemption: {}, alerts: {} };
    for (const [path, { input, kind }] of fields) {
      const [group, key] = path.includes(".") ? path.split(".") : [null, path];
      const value = kind === "bool" ? input.checked : numberOrText(input.value);
      if (group) { if (value !== undefined) out[group][key] = value; } else out[key] = value === undefined ? null : value;
    }
    try {
      const saved = await put("/fleet/settings", out);
      setValues(saved);
      notify("Settings saved: instances use them within 30 s.");
    } catch (err) {
      const problems = err instanceof ApiError ? err.problems : [];
      const unplaced = [];
      let first = null;
      for (const p of problems) {
        const f = fields.get(p.path);
        if (f) {
          f.error.textContent = f.error.textContent ? `${f.error.textContent} ${p.message}` : p.message;
          f.input.setAttribute("aria-invalid", "true");
          first ||= f.input;
        } else {
          unplaced.push(`${p.path || "body"}: ${p.message}`);
        }
      }
      fill(summary, h("strong", null, `The coordinator refused the settings: ${err.describe ? err.describe() : err}`),
        unplaced.length ? h("ul", null, unplaced.map((u) => h("li", null, u))) : null);
      summary.hidden = false;
      (first || summary).focus?.();
    }
  }

  async function load() {
    try {
      const settings = await get("/fleet/settings");
      if (!alive) return;
      fill(body, build(settings));
      setValues(settings);
    } catch (err) {
      if (alive) fill(body, errorBox("the settings", err));
    }
  }

  fill(panel, h("section", { "aria-labelledby": "s-settings", class: "settings" },
    h("h2", { id: "s-settings" }, "Scheduler, preemption and alerts"), body));
  fill(body, loadingBox("the settings"));
  load();
  return { unmount() { alive = false; } };
}

// --- profiles --------------------------------------------------------------------------

/** A profile version as the text its diff compares: its front matter, then its preamble. */
export function profileText(p) {
  const lines = ["---"];
  if (p.engine) lines.push(`engine: ${p.engine}`);
  if (p.capabilities && p.capabilities.length) lines.push(`capabilities: ${JSON.stringify(p.capabilities)}`);
  if (p.description) lines.push(`description: ${p.description}`);
  lines.push("---", ...String(p.preamble || "").split("\n"));
  return lines;
}

/** A line diff (longest common subsequence): [{op: " " | "-" | "+", text}]. */
export function lineDiff(a, b) {
  const n = a.length, m = b.length;
  if (n * m > 4e6) { // too big to align: all out, all in
    return [...a.map((text) => ({ op: "-", text })), ...b.map((text) => ({ op: "+", text }))];
  }
  const w = m + 1;
  const lcs = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      lcs[i * w + j] = a[i] === b[j] ? lcs[(i + 1) * w + j + 1] + 1 : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push({ op: " ", text: a[i] }); i += 1; j += 1; }
    else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) { out.push({ op: "-", text: a[i] }); i += 1; }
    else { out.push({ op: "+", text: b[j] }); j += 1; }
  }
  while (i < n) out.push({ op: "-", text: a[i++] });
  while (j < m) out.push({ op: "+", text: b[j++] });
  return out;
}

function diffView(lines) {
  const added = lines.filter((l) => l.op === "+").length;
  const removed = lines.filter((l) => l.op === "-").length;
  return [
    h("p", { class: "diff-stat" }, h("span", { class: "ins" }, `+${added}`), " ", h("span", { class: "del" }, `−${removed}`),
      added || removed ? " lines" : " — the two versions are the same"),
    h("ol", { class: "line-diff", "aria-label": "Line diff" }, lines.map((l) =>
      h("li", { class: l.op === "+" ? "add" : l.op === "-" ? "rm" : "same", "data-op": l.op },
        h("span", { class: "op", "aria-hidden": "true" }, l.op), h("span", { class: "sr-only" }, l.op === "+" ? "added: " : l.op === "-" ? "removed: " : ""),
        h("span", { class: "text" }, l.text || " ")))),
  ];
}

function profilesTab(panel) {
  const list = h("div");
  const detail = h("div");
  let alive = true;
  let selected = null; // the latest version of the profile shown
  const versions = new Map(); // `${name}@${version}` -> profile version

  async function version(name, v) {
    const key = `${name}@${v}`;
    if (!versions.has(key)) versions.set(key, await get(`/fleet/profiles/${enc(name)}?version=${v}`));
    return versions.get(key);
  }

  function versionOptions(latest, chosen) {
    return Array.from({ length: latest }, (_, i) => latest - i).map((v) =>
      h("option", { value: String(v), selected: v === chosen }, `v${v}${v === latest ? " (latest)" : ""}`));
  }

  async function show(profile) {
    selected = profile;
    for (const tr of list.querySelectorAll("tr[data-profile]")) tr.classList.toggle("selected", tr.dataset.profile === profile.name);
    const latest = profile.version;
    const pick = h("select", { id: "pf-version" }, versionOptions(latest, latest));
    const from = h("select", { id: "pf-from" }, versionOptions(latest, Math.max(1, latest - 1)));
    const to = h("select", { id: "pf-to" }, versionOptions(latest, latest));
    const shown = h("div", { class: "profile-version" });
    const diff = h("div", { class: "profile-diff" });
    fill(detail, h("section", { "aria-labelledby": "s-pf", class: "profile-detail" },
      h("h2", { id: "s-pf" }, `Profile ${profile.name}`),
      h("div", { class: "inline" }, h("label", { for: "pf-version" }, "Version"), pick),
      shown,
      h("h3", null, "Compare two versions"),
      latest < 2
        ? h("p", { class: "muted" }, "Only one version so far: nothing to compare.")
        : h("form", { class: "inline diff-form", novalidate: true, onsubmit: (e) => { e.preventDefault(); compare(); } },
          h("label", { for: "pf-from" }, "From"), from, h("label", { for: "pf-to" }, "to"), to,
          h("button", { type: "submit" }, "Compare")),
      diff));

    async function showVersion() {
      const v = Number(pick.value);
      fill(shown, loadingBox(`version ${v}`));
      try {
        const p = await version(profile.name, v);
        if (!alive || selected !== profile) return;
        fill(shown, h("dl", { class: "facts grid2" },
          h("div", null, h("dt", null, "Version"), h("dd", { "data-version": p.version }, `v${p.version}`)),
          h("div", null, h("dt", null, "Created"), h("dd", null, timeEl(p.createdAt))),
          h("div", null, h("dt", null, "Engine"), h("dd", null, p.engine || "any")),
          h("div", null, h("dt", null, "Capabilities"), h("dd", null,
            p.capabilities && p.capabilities.length ? p.capabilities.map((c) => h("span", { class: "chip" }, c)) : "none")),
          h("div", { class: "wide" }, h("dt", null, "Description"), h("dd", null, p.description || "—"))),
        h("pre", { class: "preamble", "aria-label": `Preamble of v${p.version}` }, p.preamble));
      } catch (err) {
        if (alive) fill(shown, errorBox(`version ${v}`, err));
      }
    }

    async function compare() {
      const a = Number(from.value), b = Number(to.value);
      fill(diff, loadingBox("the two versions"));
      try {
        const [pa, pb] = await Promise.all([version(profile.name, a), version(profile.name, b)]);
        if (!alive || selected !== profile) return;
        fill(diff, h("p", { class: "muted small" }, `v${a} → v${b}`), ...diffView(lineDiff(profileText(pa), profileText(pb))));
      } catch (err) {
        if (alive) fill(diff, errorBox("the versions to compare", err));
      }
    }

    pick.addEventListener("change", showVersion);
    showVersion();
  }

  async function load() {
    try {
      const out = await get("/fleet/profiles");
      if (!alive) return;
      const profiles = [...out.profiles].sort((a, b) => a.name.localeCompare(b.name));
      if (!profiles.length) {
        fill(list, emptyBox("No profile in this product yet: ", h("code", null, "PUT /api/fleet/profiles/NAME"),
          " (or ", h("code", null, "fleet-factory profile put"), ") creates one; each change is a new version."));
        return;
      }
      fill(list, h("table", { class: "profiles" }, h("caption", { class: "sr-only" }, "Profiles, latest versions"),
        h("thead", null, h("tr", null, ["Name", "Latest", "Engine", "Capabilities", "Description", "Created"].map((t) => h("th", null, t)))),
        h("tbody", null, profiles.map((p) => h("tr", { "data-profile": p.name },
          h("td", null, h("button", { type: "button", class: "linkish", onclick: () => show(p) }, p.name)),
          h("td", { class: "num" }, `v${p.version}`),
          h("td", null, p.engine || "any"),
          h("td", null, (p.capabilities || []).join(", ") || "—"),
          h("td", null, p.description || "—"),
          h("td", null, timeEl(p.createdAt)))))));
    } catch (err) {
      if (alive) fill(list, errorBox("the profiles", err));
    }
  }

  fill(panel, h("section", { "aria-labelledby": "s-profiles" }, h("h2", { id: "s-profiles" }, "Profiles"),
    h("p", { class: "muted" }, "A job's persona names a profile: its preamble and engine. Versions are immutable; a job records the version it ran with."),
    list), detail);
  fill(list, loadingBox("the profiles"));
  load();
  return { unmount() { alive = false; } };
}

// --- tracker ---------------------------------------------------------------------------

const ASSOCIATIONS = ["OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER", "MANNEQUIN", "NONE"];
const DEFAULT_ASSOCIATIONS = new Set(["OWNER", "MEMBER", "COLLABORATOR"]);

function trackerTab(panel) {
  const admin = can("admin");
  const list = h("div");
  const echo = h("div");
  let alive = true;
  const errs = {};
  const errorFor = (name) => (errs[name] = h("p", { id: `tr-${name}-err`, class: "field-error", "data-error-for": name }));
  const repo = h("input", { id: "tr-repository", placeholder: "owner/name", autocomplete: "off", spellcheck: "false", "aria-describedby": "tr-repository-err" });
  const secret = h("input", { id: "tr-secret", type: "password", autocomplete: "new-password", spellcheck: "false", "aria-describedby": "tr-secret-help tr-secret-err" });
  const label = h("input", { id: "tr-label", placeholder: "any label", autocomplete: "off", spellcheck: "false", "aria-describedby": "tr-label-err" });
  const boxes = ASSOCIATIONS.map((a) => h("input", { type: "checkbox", value: a, checked: DEFAULT_ASSOCIATIONS.has(a) }));
  const formError = h("div", { class: "field-error", role: "alert" });
  const form = h("form", { class: "tracker-form", novalidate: true },
    h("div", { class: "form-grid" },
      h("div", { class: "field" }, h("label", { for: "tr-repository" }, "Repository"), repo, errorFor("repository")),
      h("div", { class: "field" }, h("label", { for: "tr-secret" }, "Webhook secret"), secret,
        h("p", { id: "tr-secret-help", class: "help" }, "As set on GitHub (16+ characters). Needed to bind; leave empty to keep the current one when changing a binding. Never shown again."),
        errorFor("secret")),
      h("div", { class: "field" }, h("label", { for: "tr-label" }, "Only issues labelled"), label,
        h("p", { class: "help" }, "empty: every issue"), errorFor("label"))),
    h("fieldset", { class: "caps" }, h("legend", null, "Whose issues become jobs (author association)"),
      h("div", { class: "cap-list" }, boxes.map((b) => h("label", { class: "cap" }, b, ` ${b.value}`))), errorFor("allowedAssociations")),
    h("div", { class: "buttons left" }, h("button", { type: "submit", class: "primary" }, "Bind repository")),
    formError);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const e of Object.values(errs)) e.textContent = "";
    for (const i of [repo, secret, label]) i.removeAttribute("aria-invalid");
    fill(formError);
    const body = {
      repository: repo.value.trim(),
      allowedAssociations: boxes.filter((b) => b.checked).map((b) => b.value),
      label: label.value.trim() || null,
    };
    if (secret.value) body.secret = secret.value;
    try {
      const out = await put("/fleet/tracker/github", body);
      secret.value = "";
      notify(`${out.repository} is bound to ${out.product}.`);
      load();
    } catch (err) {
      const problems = err instanceof ApiError ? err.problems : [];
      const inputs = { repository: repo, secret, label };
      const unplaced = [];
      for (const p of problems) {
        const name = String(p.path || "").split(/[.[]/)[0];
        if (errs[name]) {
          errs[name].textContent = p.message;
          inputs[name]?.setAttribute("aria-invalid", "true");
        } else {
          unplaced.push(`${p.path || "body"}: ${p.message}`);
        }
      }
      fill(formError, `Not bound: ${err.describe ? err.describe() : err}`, unplaced.length ? h("ul", null, unplaced.map((u) => h("li", null, u))) : null);
    }
  });

  function edit(b) {
    repo.value = b.repository;
    label.value = b.label || "";
    for (const box of boxes) box.checked = b.allowedAssociations.includes(box.value);
    secret.value = "";
    repo.focus();
  }

  async function unbind(b) {
    const ok = await confirmAction({
      title: `Unbind ${b.repository}?`, danger: true, confirmLabel: "Unbind", reason: false,
      body: ["Its webhook's deliveries are refused from now on; the jobs it made stay."],
    });
    if (!ok) return;
    try {
      await del(`/fleet/tracker/github?repository=${enc(b.repository)}`);
      notify(`${b.repository} unbound.`);
    } catch (err) {
      notify(`Unbinding ${b.repository} failed: ${err.describe()}`, "error");
    }
    load();
  }

  async function load() {
    try {
      const out = await get("/fleet/tracker/github");
      if (!alive) return;
      fill(list, out.bindings.length
        ? h("table", { class: "bindings" }, h("caption", { class: "sr-only" }, "GitHub repositories bound to the product"),
          h("thead", null, h("tr", null, ["Repository", "Whose issues", "Label", "Secret", "Changed", admin ? "" : null].filter((t) => t !== null).map((t) => h("th", null, t)))),
          h("tbody", null, out.bindings.map((b) => h("tr", { "data-repository": b.repository },
            h("td", null, h("a", { href: `https://github.com/${b.repository.split("/").map(encodeURIComponent).join("/")}`, target: "_blank", rel: "noopener noreferrer" }, b.repository)),
            h("td", null, b.allowedAssociations.join(", ")),
            h("td", null, b.label || "any"),
            h("td", null, "set ", timeEl(b.secretSetAt), h("span", { class: "muted small" }, ` by ${b.secretSetBy}`)),
            h("td", null, timeEl(b.updatedAt), h("span", { class: "muted small" }, ` by ${b.updatedBy}`)),
            admin ? h("td", { class: "row-actions" },
              h("button", { type: "button", onclick: () => edit(b) }, "Edit"), " ",
              h("button", { type: "button", class: "danger", onclick: () => unbind(b) }, "Unbind")) : null))))
        : emptyBox("No GitHub repository is bound to this product: its issues cannot become jobs here."));
    } catch (err) {
      if (alive) fill(list, errorBox("the tracker bindings", err));
    }
    try {
      const e = await get("/fleet/tracker/echo");
      if (!alive) return;
      const failing = e.attempts > 0 || !!e.lastError;
      fill(echo, h("p", { class: `echo-state ${!e.configured ? "off" : failing ? "failing" : "ok"}`, "data-configured": String(e.configured) },
        !e.configured ? "Not configured: TRACKER_ECHO_URL is not set, so stage changes are not echoed."
          : failing ? `Failing: ${e.attempts} failed attempt${e.attempts === 1 ? "" : "s"} at the next stage change.` : "Delivering: stage changes are echoed as they happen."),
      h("dl", { class: "facts grid2" },
        h("div", null, h("dt", null, "Last delivered"), h("dd", { class: "mono" }, e.cursor || "none yet")),
        h("div", null, h("dt", null, "Failed attempts"), h("dd", null, String(e.attempts ?? 0))),
        h("div", null, h("dt", null, "Next try"), h("dd", null, e.nextAttemptAt ? timeEl(e.nextAttemptAt) : "—")),
        h("div", { class: "wide" }, h("dt", null, "Last error"), h("dd", null, e.lastError || "none"))));
    } catch (err) {
      if (alive) fill(echo, errorBox("the echo state", err));
    }
  }

  fill(panel,
    h("section", { "aria-labelledby": "s-bind", class: "tracker-bindings" }, h("h2", { id: "s-bind" }, "GitHub repositories"),
      h("p", { class: "muted" }, "An issue of a bound repository becomes a job of this product (its issues webhook, verified with the secret)."),
      list),
    admin ? h("section", { "aria-labelledby": "s-bindform" }, h("h2", { id: "s-bindform" }, "Bind a repository"), form) : null,
    h("section", { "aria-labelledby": "s-echo", class: "tracker-echo" }, h("h2", { id: "s-echo" }, "Echo of stage changes"), echo));
  fill(list, loadingBox("the bindings"));
  fill(echo, loadingBox("the echo state"));
  load();
  return { unmount() { alive = false; } };
}
