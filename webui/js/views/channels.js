// Channel limits: a token bucket (rate per minute, burst) and a cap on running jobs, per
// channel; bucket levels and running counts as the coordinator sees them. Admins set and
// remove limits; everyone else reads.
import { ApiError, can, del, enc, get, put } from "../api.js";
import { confirmAction, emptyBox, errorBox, fill, h, loadingBox, notify } from "../dom.js";
import { jobList, state } from "../live.js";

const FIELDS = ["channel", "ratePerMinute", "burst", "maxRunning"];

export function mount(root) {
  const manages = can("admin");
  const list = h("div");
  const errs = Object.fromEntries(FIELDS.map((f) => [f, h("p", { id: `ch-${f}-err`, class: "field-error" })]));
  const input = (name, attrs) => h("input", { id: `ch-${name}`, name, "aria-describedby": `ch-${name}-err`, ...attrs });
  const inputs = {
    channel: input("channel", { required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", placeholder: "ci", autocomplete: "off" }),
    ratePerMinute: input("ratePerMinute", { type: "number", min: 0, step: "any", placeholder: "no rate limit" }),
    burst: input("burst", { type: "number", min: 1, step: 1, value: 1 }),
    maxRunning: input("maxRunning", { type: "number", min: 0, step: 1, placeholder: "no cap" }),
  };
  const labels = { channel: "Channel", ratePerMinute: "Starts per minute", burst: "Burst", maxRunning: "Max running" };
  const form = h("form", { class: "row-form", novalidate: true },
    FIELDS.map((f) => h("div", { class: "field" }, h("label", { for: `ch-${f}` }, labels[f]), inputs[f], errs[f])),
    h("button", { type: "submit", class: "primary" }, "Save limits"));
  fill(root, h("h1", null, "Channels"),
    h("p", { class: "muted" }, "A job naming a channel starts only when the channel has a token and a free slot; limits take effect on the next claim."),
    list, manages ? h("section", { "aria-labelledby": "s-chform" }, h("h2", { id: "s-chform" }, "Set a channel's limits"), form) : null);
  fill(list, loadingBox("the channels"));
  let alive = true;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of FIELDS) { errs[f].textContent = ""; inputs[f].removeAttribute("aria-invalid"); }
    const name = inputs.channel.value.trim();
    const num = (v) => (v.trim() === "" ? null : Number(v));
    if (!name) { errs.channel.textContent = "A channel name is needed."; inputs.channel.setAttribute("aria-invalid", "true"); inputs.channel.focus(); return; }
    try {
      await put(`/fleet/channels/${enc(name)}`, {
        ratePerMinute: num(inputs.ratePerMinute.value), burst: num(inputs.burst.value) ?? 1, maxRunning: num(inputs.maxRunning.value),
      });
      notify(`Limits of ${name} saved.`);
      load();
    } catch (err) {
      const problems = err instanceof ApiError ? err.problems : [];
      let first = null;
      for (const p of problems) {
        const field = FIELDS.includes(p.path) ? p.path : "channel";
        errs[field].textContent = `${labels[field]}: ${p.message}`;
        inputs[field].setAttribute("aria-invalid", "true");
        first = first || inputs[field];
      }
      if (!problems.length) errs.channel.textContent = err.describe();
      (first || inputs.channel).focus();
    }
  });

  function edit(c) {
    inputs.channel.value = c.channel;
    inputs.ratePerMinute.value = c.ratePerMinute ?? "";
    inputs.burst.value = c.burst;
    inputs.maxRunning.value = c.maxRunning ?? "";
    inputs.ratePerMinute.focus();
  }

  async function remove(c) {
    const ok = await confirmAction({ title: `Remove the limits of ${c.channel}?`, body: ["Its jobs then start without limit."], confirmLabel: "Remove limits", danger: true, reason: false });
    if (!ok) return;
    try { await del(`/fleet/channels/${enc(c.channel)}`); notify(`Limits of ${c.channel} removed.`); } catch (err) { notify(err.describe(), "error"); }
    load();
  }

  async function load() {
    try {
      const out = await get("/fleet/channels");
      if (!alive) return;
      const limited = new Set(out.channels.map((c) => c.channel));
      const unlimited = [...new Set(jobList().map((j) => j.channel).filter((c) => c && !limited.has(c)))].sort();
      const parts = [];
      if (out.channels.length) {
        const numeric = new Set(["Starts/min", "Burst", "Tokens now", "Running", "Max running"]);
        parts.push(h("table", { class: "channels" }, h("caption", { class: "sr-only" }, "Channel limits"),
          h("thead", null, h("tr", null, ["Channel", "Starts/min", "Burst", "Tokens now", "Running", "Max running", "Blocked", ...(manages ? ["Actions"] : [])].map((t) =>
            h("th", { class: numeric.has(t) ? "num" : null }, t)))),
          h("tbody", null, out.channels.map((c) => h("tr", { "data-channel": c.channel },
            h("td", null, c.channel), h("td", { class: "num" }, c.ratePerMinute ?? "∞"), h("td", { class: "num" }, String(c.burst)),
            h("td", { class: "num" }, c.tokens.toFixed(1)), h("td", { class: "num" }, String(c.running)), h("td", { class: "num" }, c.maxRunning ?? "∞"),
            h("td", null, c.blocked || h("span", { class: "ok" }, "open")),
            manages ? h("td", null, h("button", { type: "button", onclick: () => edit(c) }, "Edit"), " ",
              h("button", { type: "button", class: "danger", onclick: () => remove(c) }, "Remove")) : null)))));
      } else {
        parts.push(emptyBox("No channel has limits in this product: every job starts as soon as a factory claims it."));
      }
      if (unlimited.length) parts.push(h("p", { class: "muted" }, `Channels named by jobs with no limits: ${unlimited.join(", ")}.`));
      fill(list, ...parts);
    } catch (err) {
      if (alive) fill(list, errorBox("the channels", err));
    }
  }
  load();
  let lastTick = Date.now();
  return {
    update(kind) {
      if (kind === "data" && state.status === "live" && Date.now() - lastTick > 5000) { lastTick = Date.now(); load(); }
    },
    unmount() { alive = false; },
  };
}
