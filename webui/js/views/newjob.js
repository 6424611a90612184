// New job: a form that writes the manifest (YAML front matter + markdown body), or the
// manifest edited as markdown directly. The capability picker lists what the live fleet
// advertises, and a warning says at once when no factory can take the job. The coordinator
// validates: each problem it reports (details.problems[].path) is shown at its field.
import { ApiError, can, request, session } from "../api.js";
import { fill, h, notify } from "../dom.js";
import { state } from "../live.js";
import { health } from "./fleet.js";

const FIELDS = [
  // name, label, attrs, help
  ["title", "Title", { required: true, maxlength: 200, autocomplete: "off" }, "What the agent should do, in a line."],
  ["priority", "Priority", { type: "number", min: 0, max: 9, step: 1, value: 5 }, "0..9, 9 most urgent."],
  ["channel", "Channel", { autocomplete: "off", placeholder: "e.g. ci" }, "Optional: rate limits and caps apply per channel."],
  ["budget", "Budget estimate (USD)", { type: "number", min: 0, step: "0.01" }, "Reserved against the product's budget when it starts."],
  ["persona", "Persona", { autocomplete: "off" }, "A profile name; its current version is snapshotted."],
  ["deps", "Depends on", { autocomplete: "off", placeholder: "job ids, space separated" }, "Blocked until they ship."],
  ["maxAttempts", "Max attempts", { type: "number", min: 1, max: 20, step: 1, value: 3 }, "Then dead letter (1..20)."],
  ["leaseSeconds", "Lease seconds", { type: "number", min: 30, max: 3600, step: 1, value: 300 }, "30..3600; the factory renews every third."],
  ["verify", "Verify command", { autocomplete: "off", placeholder: "e.g. pytest -q" }, "Optional."],
  ["idempotencyKey", "Idempotency key", { autocomplete: "off" }, "Submitting the same key twice makes one job."],
];
const NUMERIC = new Set(["priority", "budget", "maxAttempts", "leaseSeconds"]);

/** The front matter keys a problem path names: "capabilities[1]" -> "capabilities". */
const fieldOf = (path) => String(path || "").split(/[.[]/)[0];

/** Parse the simple front matter the form writes (key: JSON-or-plain value per line). */
export function parseManifest(text) {
  const m = /^---\r?\n([\s\S]*?)\r?\n---\r?\n?([\s\S]*)$/.exec(text);
  if (!m) return null;
  const fields = {};
  for (const line of m[1].split(/\r?\n/)) {
    if (!line.trim() || line.trim().startsWith("#")) continue;
    const kv = /^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$/.exec(line);
    if (!kv) return null; // nested YAML: the form cannot show it
    let raw = kv[2].replace(/\s+#.*$/, "").trim();
    let value;
    try { value = JSON.parse(raw); } catch {
      if (/^\[.*\]$/.test(raw)) value = raw.slice(1, -1).split(",").map((s) => s.trim().replace(/^["']|["']$/g, "")).filter(Boolean);
      else if (/^\{/.test(raw)) return null;
      else value = raw.replace(/^'(.*)'$/, "$1");
    }
    fields[kv[1]] = value;
  }
  return { fields, body: m[2] };
}

export function mount(root) {
  if (!can("operator")) {
    const me = session.who();
    root.append(h("h1", null, "New job"), h("p", { class: "callout" },
      `Submitting jobs needs an operator token; ${me ? `${me.name} is a ${me.role}` : "yours is not one"}.`));
    return {};
  }
  const errors = {};
  const inputs = {};
  const picked = new Set();
  const summary = h("div", { class: "error-summary", role: "alert", tabindex: "-1", hidden: true });
  const routing = h("div", { class: "routing", role: "status", "aria-live": "polite" });
  const capList = h("div", { class: "cap-list", role: "group", "aria-labelledby": "caps-label" });
  const capOther = h("input", { id: "cap-other", autocomplete: "off", placeholder: "another capability", "aria-describedby": "err-capabilities" });
  errors.capabilities = h("p", { id: "err-capabilities", class: "field-error" });
  const body = h("textarea", { id: "f-body", rows: 12, spellcheck: "true", "aria-describedby": "err-body help-body" });
  errors.body = h("p", { id: "err-body", class: "field-error" });
  const raw = h("textarea", { id: "f-manifest", rows: 22, spellcheck: "false", class: "mono", "aria-describedby": "err-manifest help-manifest" });
  errors[""] = h("p", { id: "err-manifest", class: "field-error" });
  const preview = h("pre", { class: "manifest", "aria-label": "The manifest that will be submitted" });
  const tabForm = h("button", { type: "button", role: "tab", id: "tab-form", "aria-selected": "true", "aria-controls": "panel-form" }, "Form");
  const tabRaw = h("button", { type: "button", role: "tab", id: "tab-raw", "aria-selected": "false", "aria-controls": "panel-raw", tabindex: "-1" }, "Markdown");
  let mode = "form";

  const fieldEls = FIELDS.map(([name, label, attrs, help]) => {
    inputs[name] = h("input", { id: `f-${name}`, name, ...attrs, "aria-describedby": `help-${name} err-${name}` });
    errors[name] = h("p", { id: `err-${name}`, class: "field-error" });
    return h("div", { class: `field f-${name}` }, h("label", { for: `f-${name}` }, label), inputs[name],
      h("p", { id: `help-${name}`, class: "help" }, help), errors[name]);
  });

  const panelForm = h("div", { id: "panel-form", role: "tabpanel", "aria-labelledby": "tab-form" },
    h("div", { class: "form-grid" }, fieldEls.slice(0, 1)),
    h("fieldset", { class: "caps" }, h("legend", { id: "caps-label" }, "Capabilities the factory must advertise"),
      capList,
      h("div", { class: "inline" }, h("label", { for: "cap-other", class: "sr-only" }, "Another capability"), capOther,
        h("button", { type: "button", onclick: addOther }, "Add")),
      errors.capabilities),
    h("div", { class: "form-grid" }, fieldEls.slice(1)),
    h("div", { class: "field" }, h("label", { for: "f-body" }, "Instructions (markdown body, handed to the agent verbatim)"), body,
      h("p", { id: "help-body", class: "help" }, "Markdown. Say what done looks like."), errors.body),
    h("details", null, h("summary", null, "Manifest preview"), preview));
  const panelRaw = h("div", { id: "panel-raw", role: "tabpanel", "aria-labelledby": "tab-raw", hidden: true },
    h("label", { for: "f-manifest" }, "Manifest: YAML front matter between --- lines, then the markdown body"), raw,
    h("p", { id: "help-manifest", class: "help" }, "The same fields as the form (title, capabilities, priority, budget, channel, deps, …)."),
    errors[""]);
  const form = h("form", { class: "newjob", novalidate: true },
    summary, routing,
    h("div", { class: "tabs", role: "tablist", "aria-label": "Edit as" }, tabForm, tabRaw),
    panelForm, panelRaw,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: "submit-job" }, "Submit job")));
  root.append(h("h1", null, "New job"), h("p", { class: "muted" }, `In product ${session.product()}.`), form);

  function addOther() {
    const value = capOther.value.trim();
    if (!value) return;
    for (const c of value.split(/[\s,]+/)) if (c) picked.add(c);
    capOther.value = "";
    renderCaps();
    changed();
  }
  capOther.addEventListener("keydown", (event) => { if (event.key === "Enter") { event.preventDefault(); addOther(); } });

  function advertised() {
    const caps = new Map(); // capability -> {live, total}
    for (const f of state.factories) {
      if (f.revoked || f.deregistered) continue;
      for (const c of f.capabilities) {
        const e = caps.get(c) || { live: 0, total: 0 };
        e.total += 1;
        if (health(f) === "live") e.live += 1;
        caps.set(c, e);
      }
    }
    return caps;
  }

  function renderCaps() {
    const caps = advertised();
    const all = [...new Set([...caps.keys(), ...picked])].sort();
    if (!all.length) {
      fill(capList, h("p", { class: "muted" }, state.factoriesLoaded
        ? "No factory advertises any capability yet: a job with none runs anywhere."
        : "Loading what the fleet advertises…"));
      return;
    }
    fill(capList, ...all.map((c) => {
      const e = caps.get(c);
      const id = `cap-${c.replace(/[^a-z0-9]/gi, "_")}`;
      const box = h("input", { type: "checkbox", id, value: c, checked: picked.has(c) });
      box.addEventListener("change", () => {
        if (box.checked) picked.add(c); else picked.delete(c);
        errors.capabilities.textContent = "";
        capOther.removeAttribute("aria-invalid");
        changed();
      });
      return h("label", { class: `cap ${e ? "" : "nobody"}`, for: id }, box, ` ${c} `,
        h("span", { class: "muted small" }, e ? `${e.live} live / ${e.total}` : "nobody has it"));
    }));
  }

  function currentCaps() {
    if (mode === "form") return [...picked];
    const parsed = parseManifest(raw.value);
    const caps = parsed && parsed.fields.capabilities;
    return Array.isArray(caps) ? caps.map(String) : parsed ? [] : null;
  }

  function renderRouting() {
    const caps = currentCaps();
    if (caps === null) { routing.className = "routing"; routing.textContent = ""; return; }
    if (!state.factoriesLoaded) {
      routing.className = "routing";
      routing.textContent = (state.listError || state.error) ? `Cannot check the fleet: ${(state.listError || state.error).describe()}` : "Checking the fleet…";
      return;
    }
    const able = state.factories.filter((f) => !f.revoked && !f.deregistered && caps.every((c) => f.capabilities.includes(c)));
    const ready = able.filter((f) => health(f) === "live" && !f.paused && !f.draining);
    const need = caps.length ? `needs ${caps.join(", ")}` : "needs no capability";
    if (!able.length) {
      routing.className = "routing warn";
      routing.textContent = `No factory can take this job: it ${need} and no factory in ${session.product()} advertises ${caps.length > 1 ? "all of them" : "it"}. It would wait as unroutable.`;
    } else if (!ready.length) {
      routing.className = "routing warn";
      routing.textContent = `Only ${able.map((f) => `${f.id} (${f.paused ? "paused" : f.draining ? "draining" : health(f)})`).join(", ")} can take this job (${need}): none is live and taking work now.`;
    } else {
      routing.className = "routing ok";
      routing.textContent = `${ready.length} live factor${ready.length === 1 ? "y" : "ies"} can take it (${need}): ${ready.slice(0, 6).map((f) => f.id).join(", ")}${ready.length > 6 ? ", …" : ""}.`;
    }
  }

  function manifestFromForm() {
    const lines = ["---"];
    const val = (name) => inputs[name].value.trim();
    const put = (key, value) => lines.push(`${key}: ${JSON.stringify(value)}`);
    put("title", val("title"));
    if (picked.size) put("capabilities", [...picked]);
    for (const [name] of FIELDS.slice(1)) {
      const v = val(name);
      if (!v) continue;
      if (name === "deps") put("deps", v.split(/[\s,]+/).filter(Boolean));
      else if (NUMERIC.has(name) && !Number.isNaN(Number(v))) lines.push(`${name}: ${Number(v)}`);
      else put(name, v);
    }
    lines.push("---");
    return `${lines.join("\n")}\n${body.value}`;
  }

  function formFromManifest(text) {
    const parsed = parseManifest(text);
    if (!parsed) return false;
    const f = parsed.fields;
    for (const [name] of FIELDS) {
      let v = f[name] ?? (name === "budget" ? f.budgetUsd : undefined);
      if (v && typeof v === "object" && !Array.isArray(v)) return false;
      if (Array.isArray(v)) v = v.join(" ");
      inputs[name].value = v === undefined || v === null ? "" : String(v);
    }
    const known = new Set([...FIELDS.map(([n]) => n), "capabilities", "budgetUsd"]);
    if (Object.keys(f).some((k) => !known.has(k))) return false;
    picked.clear();
    for (const c of [].concat(f.capabilities || [])) picked.add(String(c));
    body.value = parsed.body;
    return true;
  }

  function select(next) {
    if (next === mode) return;
    if (next === "raw") raw.value = manifestFromForm();
    else if (!formFromManifest(raw.value)) {
      notify("The form cannot show this front matter (nested YAML or unknown keys): keep editing it as markdown.", "error");
      return;
    }
    mode = next;
    tabForm.setAttribute("aria-selected", String(mode === "form"));
    tabRaw.setAttribute("aria-selected", String(mode === "raw"));
    tabForm.tabIndex = mode === "form" ? 0 : -1;
    tabRaw.tabIndex = mode === "raw" ? 0 : -1;
    panelForm.hidden = mode !== "form";
    panelRaw.hidden = mode !== "raw";
    renderCaps();
    changed();
  }
  tabForm.addEventListener("click", () => select("form"));
  tabRaw.addEventListener("click", () => select("raw"));
  for (const tab of [tabForm, tabRaw]) {
    tab.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        select(mode === "form" ? "raw" : "form");
        (mode === "form" ? tabForm : tabRaw).focus();
      }
    });
  }

  function changed() {
    if (mode === "form") preview.textContent = manifestFromForm();
    renderRouting();
  }
  form.addEventListener("input", (event) => {
    // Editing a field clears what the coordinator said about it.
    const target = event.target;
    if (target.getAttribute("aria-invalid") === "true") {
      target.removeAttribute("aria-invalid");
      for (const id of (target.getAttribute("aria-describedby") || "").split(" ")) {
        if (id.startsWith("err-")) document.getElementById(id).textContent = "";
      }
    }
    changed();
  });

  function clearErrors() {
    for (const el of Object.values(errors)) el.textContent = "";
    for (const el of [...Object.values(inputs), body, raw, capOther]) el.removeAttribute("aria-invalid");
    summary.hidden = true;
    fill(summary);
  }

  function showProblems(err) {
    const problems = err.problems.length ? err.problems : [{ path: "", code: err.code, message: err.describe() }];
    const items = [];
    let first = null;
    for (const p of problems) {
      let key = fieldOf(p.path);
      if (key === "budgetUsd") key = "budget";
      if (mode === "raw" || !(key in errors)) key = "";
      const target = key === "" ? (mode === "raw" ? raw : null) : key === "capabilities" ? capOther : key === "body" ? body : inputs[key];
      const label = p.path || "manifest";
      const el = key === "" && mode === "form" ? null : errors[key];
      if (el) {
        el.textContent = el.textContent ? `${el.textContent} ${p.message}` : `${label}: ${p.message}`;
        if (target) target.setAttribute("aria-invalid", "true");
      }
      first = first || target;
      const link = target ? h("a", { href: `#${target.id}`, onclick: (e) => { e.preventDefault(); target.focus(); } }, label) : h("strong", null, label);
      items.push(h("li", { "data-path": p.path }, link, `: ${p.message}`));
    }
    fill(summary, h("p", null, h("strong", null, `The coordinator refused the job (${err.status} ${err.code}):`)), h("ul", null, items));
    summary.hidden = false;
    (first || summary).focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const manifest = mode === "form" ? manifestFromForm() : raw.value;
    const button = form.querySelector("#submit-job");
    button.disabled = true;
    try {
      const out = await request("POST", "/fleet/jobs", { markdown: manifest });
      notify(`${out.created ? "Submitted" : "Already submitted (same idempotency key)"}: “${out.job.title}” → ${out.job.stage}${out.warning ? `. Warning: ${out.warning}` : ""}`, out.warning ? "error" : "ok");
      state.jobs.set(out.job.id, out.job);
      state.rev += 1;
      location.hash = `#/jobs/${out.job.id}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) showProblems(err);
      else {
        fill(summary, h("p", null, h("strong", null, "Not submitted: "), err.describe ? err.describe() : String(err)));
        summary.hidden = false;
        summary.focus();
      }
    } finally {
      button.disabled = false;
    }
  });

  renderCaps();
  changed();
  let lastRev = state.rev;
  return {
    update(kind) {
      if (kind === "data" && state.rev !== lastRev) {
        lastRev = state.rev;
        if (!capList.contains(document.activeElement)) renderCaps();
        renderRouting();
      }
    },
  };
}
