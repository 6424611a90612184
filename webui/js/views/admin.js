// Admin: the people's operator tokens (name, role, products; admins of every product only)
// and the product's enrollment tokens. A new token is shown once, here, and nowhere else;
// listings show a short id. Revoking asks first.
import { ApiError, can, del, enc, everyProduct, get, post, session } from "../api.js";
import { confirmAction, emptyBox, errorBox, fill, h, loadingBox, notify, timeEl } from "../dom.js";

const DAY = 24 * 3600;
const ROLE_TEXT = {
  viewer: "reads everything, changes nothing",
  operator: "also submits jobs, acts on jobs and factories, reviews, pauses",
  admin: "also manages tokens, budget ceilings and adjustments, channels and settings",
};

/** A token just created, shown this once: a read-only field to copy it from. */
function onceBox(what, token, onDone) {
  const field = h("input", { class: "mono once-token", readonly: true, value: token, "aria-label": `The new ${what}`, size: 60, spellcheck: "false" });
  const box = h("div", { class: "once", role: "status" },
    h("p", null, h("strong", null, `The new ${what}: copy it now.`), " It is shown this once; the coordinator keeps only its hash."),
    h("div", { class: "inline" }, field,
      h("button", {
        type: "button", onclick: async () => {
          field.select();
          try { await navigator.clipboard.writeText(token); notify("Copied."); } catch { notify("Select the token and copy it.", "error"); }
        },
      }, "Copy"),
      h("button", { type: "button", onclick: () => { fill(box); box.hidden = true; onDone(); } }, "Done")));
  return box;
}

/** Problems of a refused create, at the form: each field's message, or the error's. */
function showProblems(errEl, err) {
  const problems = err instanceof ApiError ? err.problems : [];
  fill(errEl, problems.length
    ? h("ul", null, problems.map((p) => h("li", null, `${p.path || "body"}: ${p.message}`)))
    : (err.describe ? err.describe() : String(err)));
}

const words = (text) => text.split(/[\s,]+/).map((w) => w.trim()).filter(Boolean);

function statusTag(status) {
  return h("span", { class: `tag ${status === "active" ? "" : "warn"}`, "data-status": status }, status);
}

function operatorSection() {
  const list = h("div");
  const once = h("div");
  const errEl = h("div", { id: "op-err", class: "field-error", role: "alert" });
  const name = h("input", { id: "op-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}", autocomplete: "off", spellcheck: "false", placeholder: "alice", "aria-describedby": "op-err" });
  const role = h("select", { id: "op-role" }, ["viewer", "operator", "admin"].map((r) => h("option", { value: r }, r)));
  const roleHelp = h("span", { id: "op-role-help", class: "muted small" });
  role.setAttribute("aria-describedby", "op-role-help");
  const describeRole = () => { roleHelp.textContent = ROLE_TEXT[role.value]; };
  role.addEventListener("change", describeRole);
  describeRole();
  const products = h("input", { id: "op-products", value: session.product(), autocomplete: "off", spellcheck: "false", "aria-describedby": "op-products-help" });
  const days = h("input", { id: "op-days", type: "number", min: 1, max: 366, step: 1, class: "narrow", placeholder: "never" });
  const form = h("form", { class: "row-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "op-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "op-role" }, "Role"), role, roleHelp),
    h("div", { class: "field" }, h("label", { for: "op-products" }, "Products"), products,
      h("span", { id: "op-products-help", class: "muted small" }, "names, space separated, or * for every product")),
    h("div", { class: "field" }, h("label", { for: "op-days" }, "Expires in (days)"), days),
    h("button", { type: "submit", class: "primary" }, "Create operator token"),
    errEl);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errEl);
    const body = { name: name.value.trim(), role: role.value, products: words(products.value) };
    if (days.value.trim()) body.expiresInSeconds = Math.round(Number(days.value) * DAY);
    try {
      const out = await post("/fleet/operator-tokens", body);
      fill(once, onceBox(`operator token of ${out.name} (${out.role})`, out.token, () => {}));
      once.hidden = false;
      name.value = "";
      notify(`Operator token ${out.id} created for ${out.name}.`);
      load();
    } catch (err) {
      showProblems(errEl, err);
    }
  });

  async function revoke(t) {
    const ok = await confirmAction({
      title: `Revoke the token of ${t.name}?`, danger: true, confirmLabel: "Revoke", reason: false,
      body: [`Token ${t.id} (${t.role} of ${t.products.join(", ")}) is refused from its next request.`],
    });
    if (!ok) return;
    try {
      await del(`/fleet/operator-tokens/${enc(t.id)}`);
      notify(`Token ${t.id} of ${t.name} revoked.`);
    } catch (err) {
      notify(`Revoking ${t.id} failed: ${err.describe()}`, "error");
    }
    load();
  }

  async function load() {
    try {
      const out = await get("/fleet/operator-tokens");
      fill(list, out.tokens.length
        ? h("table", { class: "tokens operator-tokens" }, h("caption", { class: "sr-only" }, "Operator tokens"),
          h("thead", null, h("tr", null, ["Name", "Role", "Products", "Status", "Id", "Created", "Expires", ""].map((t) => h("th", null, t)))),
          h("tbody", null, out.tokens.map((t) => h("tr", { "data-token": t.id, "data-name": t.name },
            h("td", null, t.name), h("td", null, t.role), h("td", null, t.products.join(", ")),
            h("td", null, statusTag(t.status)), h("td", null, h("code", null, t.id)),
            h("td", null, timeEl(t.createdAt), h("span", { class: "muted small" }, ` by ${t.createdBy}`)),
            h("td", null, t.expiresAt ? timeEl(t.expiresAt) : "never"),
            h("td", null, t.status === "active"
              ? h("button", { type: "button", class: "danger", onclick: () => revoke(t) }, "Revoke")
              : t.revokedBy ? h("span", { class: "muted small" }, `by ${t.revokedBy}`) : null)))))
        : emptyBox("No operator token yet besides the bootstrap ones (FLEET_OPERATOR_TOKENS, never listed)."));
    } catch (err) {
      fill(list, errorBox("the operator tokens", err));
    }
  }

  fill(list, loadingBox("the operator tokens"));
  load();
  return h("section", { "aria-labelledby": "s-ops", class: "admin-operators" },
    h("h2", { id: "s-ops" }, "Operator tokens"),
    h("p", { class: "muted" }, "One per person: every event they cause names them (operator:NAME). A token used for a product outside its list is refused."),
    form, once, list);
}

function enrollmentSection() {
  const product = session.product();
  const list = h("div");
  const once = h("div");
  const errEl = h("div", { id: "en-err", class: "field-error", role: "alert" });
  const days = h("input", { id: "en-days", type: "number", min: 1, max: 365, step: 1, value: 7, class: "narrow" });
  const caps = h("input", { id: "en-caps", autocomplete: "off", spellcheck: "false", placeholder: "any", "aria-describedby": "en-caps-help" });
  const seats = h("input", { id: "en-seats", type: "number", min: 1, max: 256, step: 1, class: "narrow", placeholder: "any" });
  const kind = h("input", { id: "en-kind", autocomplete: "off", spellcheck: "false", placeholder: "as it says", size: 12, "aria-describedby": "en-kind-help" });
  const form = h("form", { class: "row-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "en-days" }, "Expires in (days)"), days),
    h("div", { class: "field" }, h("label", { for: "en-caps" }, "Capabilities allowed"), caps,
      h("span", { id: "en-caps-help", class: "muted small" }, "space separated; empty: any")),
    h("div", { class: "field" }, h("label", { for: "en-seats" }, "Max seats"), seats),
    h("div", { class: "field" }, h("label", { for: "en-kind" }, "Review kind"), kind,
      h("span", { id: "en-kind-help", class: "muted small" }, "fixed for its factory (distinct-kind reviews)")),
    h("button", { type: "submit", class: "primary" }, "Create enrollment token"),
    errEl);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errEl);
    const body = {};
    if (days.value.trim()) body.expiresInSeconds = Math.round(Number(days.value) * DAY);
    if (caps.value.trim()) body.capabilities = words(caps.value);
    if (seats.value.trim()) body.maxSeats = Number(seats.value);
    if (kind.value.trim()) body.kind = kind.value.trim();
    try {
      const out = await post("/fleet/enrollment-tokens", body);
      fill(once, onceBox(`enrollment token for ${out.product}`, out.token, () => {}),
        h("p", { class: "muted small" }, "On the worker: ", h("code", null, "fleet-factory enroll"), " with it; it works once."));
      once.hidden = false;
      notify(`Enrollment token ${out.id} created.`);
      load();
    } catch (err) {
      showProblems(errEl, err);
    }
  });

  async function revoke(t) {
    const ok = await confirmAction({
      title: `Revoke enrollment token ${t.id}?`, danger: true, confirmLabel: "Revoke", reason: false,
      body: ["No factory can enroll with it any more (factories already enrolled keep their own tokens)."],
    });
    if (!ok) return;
    try {
      await del(`/fleet/enrollment-tokens/${enc(t.id)}`);
      notify(`Enrollment token ${t.id} revoked.`);
    } catch (err) {
      notify(`Revoking ${t.id} failed: ${err.describe()}`, "error");
    }
    load();
  }

  async function load() {
    try {
      const out = await get("/fleet/enrollment-tokens");
      fill(list, out.tokens.length
        ? h("table", { class: "tokens enrollment-tokens" }, h("caption", { class: "sr-only" }, `Enrollment tokens of ${product}`),
          h("thead", null, h("tr", null, ["Id", "Status", "Created", "Expires", "Capabilities", "Max seats", "Kind", "Used by", ""].map((t) => h("th", null, t)))),
          h("tbody", null, out.tokens.map((t) => h("tr", { "data-token": t.id },
            h("td", null, h("code", null, t.id)), h("td", null, statusTag(t.status)),
            h("td", null, timeEl(t.createdAt), h("span", { class: "muted small" }, ` by ${t.createdBy}`)),
            h("td", null, t.expiresAt ? timeEl(t.expiresAt) : "never"),
            h("td", null, t.capabilities ? t.capabilities.join(", ") : "any"),
            h("td", { "data-col": "seats" }, t.maxSeats ?? "any"),
            h("td", { "data-col": "kind" }, t.kind || "—"),
            h("td", null, t.usedBy || "—"),
            h("td", null, t.status === "active"
              ? h("button", { type: "button", class: "danger", onclick: () => revoke(t) }, "Revoke")
              : null)))))
        : emptyBox(`No enrollment token in ${product} yet.`));
    } catch (err) {
      fill(list, errorBox("the enrollment tokens", err));
    }
  }

  fill(list, loadingBox("the enrollment tokens"));
  load();
  return h("section", { "aria-labelledby": "s-enr", class: "admin-enrollment" },
    h("h2", { id: "s-enr" }, `Enrollment tokens of ${product}`),
    h("p", { class: "muted" }, "A factory exchanges one, once, for its own token. They expire (7 days unless you say otherwise)."),
    form, once, list);
}

export function mount(root) {
  root.append(h("h1", null, "Admin"));
  if (!can("admin")) {
    const me = session.who();
    root.append(h("p", { class: "callout" },
      `Managing tokens needs an admin token; ${me ? `${me.name} is a ${me.role}` : "yours is not one"}.`));
    return {};
  }
  root.append(everyProduct()
    ? operatorSection()
    : h("section", null, h("h2", null, "Operator tokens"),
      h("p", { class: "muted" }, "People's tokens are managed by admins of every product; yours is for some products only.")),
  enrollmentSection());
  return {};
}
