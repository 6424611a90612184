// The product's budget: ceiling, spent, reserved, remaining, the pause / resume kill-switch
// and a burndown chart. Sane with no ceiling (nothing is limited; spend is still shown).
// Operators pause and resume; admins also set the ceiling; viewers read.
import { ApiError, can, enc, get, post, put, session } from "../api.js";
import { burndownChart } from "../chart.js";
import { confirmAction, errorBox, fill, h, loadingBox, notify, time, usd } from "../dom.js";
import { state } from "../live.js";

export function mount(root) {
  const product = session.product();
  const stateLine = h("p", { class: "budget-state", role: "status" });
  const cards = h("div", { class: "cards" });
  const switchBox = h("div", { class: "switch" });
  const chart = h("div", { class: "chart-box" });
  const errorEl = h("div");
  const ceiling = h("input", { id: "ceiling", type: "number", min: 0, step: "0.01", inputmode: "decimal", "aria-describedby": "ceiling-help ceiling-err" });
  const ceilingErr = h("p", { id: "ceiling-err", class: "field-error" });
  const form = h("form", { class: "ceiling-form", novalidate: true },
    h("label", { for: "ceiling" }, "Ceiling (USD)"), ceiling,
    h("button", { type: "submit", class: "primary" }, "Save ceiling"),
    h("button", { type: "button", onclick: () => save(null) }, "Remove ceiling"),
    h("p", { id: "ceiling-help", class: "muted" }, "Leave it empty (or remove it) for no ceiling: jobs then start whatever they cost, and spend is still tracked."),
    ceilingErr);
  fill(root, h("h1", null, `Budget of ${product}`), errorEl, stateLine, cards, can("operator") ? switchBox : null,
    can("admin") ? h("section", { "aria-labelledby": "s-ceiling" }, h("h2", { id: "s-ceiling" }, "Ceiling"), form) : null,
    h("section", { "aria-labelledby": "s-burn" }, h("h2", { id: "s-burn" }, "Burndown"), chart));
  fill(cards, loadingBox("the budget"));

  let budget = null;
  let alive = true;
  let lastFull = 0;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const raw = ceiling.value.trim();
    save(raw === "" ? null : Number(raw));
  });

  async function save(value) {
    ceilingErr.textContent = "";
    ceiling.removeAttribute("aria-invalid");
    try {
      budget = await put(`/fleet/budgets/${enc(product)}`, { ceilingUsd: value });
      notify(value === null ? "Ceiling removed: no limit." : `Ceiling set to ${usd(value)}.`);
      render(true);
      loadChart();
    } catch (err) {
      const problem = err instanceof ApiError && err.problems.find((p) => p.path === "ceilingUsd");
      ceilingErr.textContent = problem ? `Ceiling: ${problem.message}` : err.describe();
      ceiling.setAttribute("aria-invalid", "true");
      ceiling.focus();
    }
  }

  async function toggle(pause) {
    if (pause) {
      const ok = await confirmAction({
        title: `Pause every start in ${product}?`, confirmLabel: "Pause the product", danger: true, reason: false,
        body: ["No job of this product may start until it is resumed. Jobs already running carry on."],
      });
      if (!ok) return;
    }
    try {
      budget = await post(`/fleet/budgets/${enc(product)}/${pause ? "pause" : "resume"}`);
      notify(pause ? `${product} paused: no job starts.` : `${product} resumed.`);
      render(false);
    } catch (err) {
      notify(`${pause ? "Pausing" : "Resuming"} failed: ${err.describe()}`, "error");
    }
  }

  function card(label, value, note) {
    return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), note ? h("div", { class: "muted small" }, note) : null);
  }

  function render(setInput) {
    const b = budget;
    const hasCeiling = b.ceilingUsd !== null && b.ceilingUsd !== undefined;
    if (setInput || document.activeElement !== ceiling) ceiling.value = hasCeiling ? String(b.ceilingUsd) : "";
    stateLine.className = `budget-state ${b.paused ? "paused" : b.autoPaused ? "paused" : "running"}`;
    stateLine.textContent = b.paused
      ? "Paused by an operator: no job of this product starts."
      : b.autoPaused
        ? "Auto-paused: spend and reservations reached the ceiling. Raise the ceiling to lift it."
        : hasCeiling ? "Running: jobs start while they fit under the ceiling." : "Running with no ceiling: jobs are not limited by cost.";
    const used = b.usedFraction === null || b.usedFraction === undefined ? null : Math.round(b.usedFraction * 100);
    fill(cards,
      card("Ceiling", hasCeiling ? usd(b.ceilingUsd) : "none", b.exists ? null : "no budget set for this product"),
      card("Spent", usd(b.spentUsd)),
      card("Reserved", usd(b.reservedUsd), `${b.reservations} running reservation${b.reservations === 1 ? "" : "s"}`),
      card("Remaining", hasCeiling ? usd(b.remainingUsd) : "unlimited",
        used === null ? null : h("span", null, h("meter", { min: 0, max: 100, value: Math.min(100, used), high: 80, optimum: 0, "aria-label": `${used}% of the ceiling used` }), ` ${used}% used`)));
    fill(switchBox, b.paused
      ? h("button", { type: "button", class: "primary", onclick: () => toggle(false) }, "Resume the product")
      : h("button", { type: "button", class: "danger", onclick: () => toggle(true) }, "Pause the product"),
    h("span", { class: "muted" }, "Kill-switch: while paused, no job of this product starts; running ones carry on."));
  }

  function legend() {
    return h("p", { class: "legend" }, h("span", { class: "key spent" }), "spent ", h("span", { class: "key committed" }), "spent + reserved ",
      h("span", { class: "key ceiling" }), "ceiling");
  }

  async function loadChart() {
    try {
      const out = await get(`/fleet/budgets/${enc(product)}/burndown`);
      if (!alive) return;
      const points = [...out.points];
      if (budget && budget.exists) {
        points.push({ at: new Date().toISOString(), spentUsd: budget.spentUsd, reservedUsd: budget.reservedUsd, ceilingUsd: budget.ceilingUsd });
      }
      if (!out.points.length) {
        fill(chart, h("p", { class: "empty" }, budget && budget.exists
          ? "No burndown point recorded yet: the metrics timer records one per run (every 5 minutes by default). The line starts now."
          : "No budget for this product yet, so nothing to burn down. Set a ceiling above (or report costs) to start the curve."));
        if (points.length) chart.append(burndownChart(points), legend());
        return;
      }
      fill(chart, burndownChart(points), legend(),
        h("details", null, h("summary", null, `The ${out.points.length} points as a table`),
          h("table", null, h("thead", null, h("tr", null, h("th", null, "At"), h("th", null, "Spent"), h("th", null, "Reserved"), h("th", null, "Ceiling"))),
            h("tbody", null, out.points.map((p) => h("tr", null, h("td", null, time(p.at)), h("td", null, usd(p.spentUsd)), h("td", null, usd(p.reservedUsd)), h("td", null, p.ceilingUsd === null ? "none" : usd(p.ceilingUsd))))))));
    } catch (err) {
      if (alive) fill(chart, errorBox("the burndown", err));
    }
  }

  async function load(first) {
    try {
      budget = await get(`/fleet/budgets/${enc(product)}`);
      if (!alive) return;
      fill(errorEl);
      render(first);
      if (first || Date.now() - lastFull > 60000) { lastFull = Date.now(); loadChart(); }
    } catch (err) {
      if (!alive) return;
      fill(errorEl, errorBox("the budget", err));
      if (!budget) fill(cards);
    }
  }

  load(true);
  let lastTick = Date.now();
  return {
    update(kind) {
      if (kind === "data" && state.status === "live" && Date.now() - lastTick > 5000) { lastTick = Date.now(); load(false); }
    },
    unmount() { alive = false; },
  };
}
