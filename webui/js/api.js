// The one place that talks HTTP to the coordinator. Every call carries the operator token
// (kept in this tab's sessionStorage, never in a URL) and the product header. A failure is an
// ApiError: the API's own {error, message, details}, or status 0 when it could not be reached.
// Who is signed in (GET /fleet/whoami: name, role, products) is kept here too, in memory:
// views ask can(role) to show only what the role may do (the coordinator decides anyway).
const TOKEN_KEY = "fleet.operatorToken";
const PRODUCT_KEY = "fleet.product";
export const DEFAULT_PRODUCT = "default";
const REQUEST_TIMEOUT_MS = 30000;

export function apiBase() {
  return String(window.FLEET_API_BASE || "").replace(/\/+$/, "") + "/api";
}

// Roles, least first: each may do what the ones before it may.
export const ROLES = ["viewer", "operator", "admin"];
let who = null; // {kind, name, role, products} of the signed-in token, once asked

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY) || "",
  setToken(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    who = null;
  },
  who: () => who,
  setWho(value) { who = value; },
  product: () => sessionStorage.getItem(PRODUCT_KEY) || DEFAULT_PRODUCT,
  setProduct: (product) => sessionStorage.setItem(PRODUCT_KEY, product || DEFAULT_PRODUCT),
};

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
  get problems() {
    return Array.isArray(this.details.problems) ? this.details.problems : [];
  }
  /** One line for people: what failed and why. */
  describe() {
    if (this.status === 0) return this.message;
    if (this.status === 401) return "The operator token was refused (401): sign in again with the token the stack printed.";
    const problems = this.problems.slice(0, 3).map((p) => `${p.path || "body"}: ${p.message}`);
    return `${this.message} (${this.status} ${this.code})${problems.length ? ` — ${problems.join("; ")}` : ""}`;
  }
}

// Server time is the only clock: ages are computed from the offset to the API's Date header.
let skewMs = 0;
export const serverNow = () => Date.now() + skewMs;

export async function request(method, path, { json, markdown, signal } = {}) {
  const headers = { "X-Fleet-Product": session.product() };
  const token = session.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (markdown !== undefined) {
    headers["Content-Type"] = "text/markdown; charset=utf-8";
    body = markdown;
  } else if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    // A request that never answers is an outage too: given up after REQUEST_TIMEOUT_MS.
    response = await fetch(apiBase() + path, { method, headers, body, cache: "no-store", signal: signal || AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    if (err && err.name === "TimeoutError") {
      throw new ApiError(0, "timeout", `The coordinator API at ${apiBase()} did not answer ${method} ${path} within ${REQUEST_TIMEOUT_MS / 1000} s.`);
    }
    throw new ApiError(0, "unreachable", `Cannot reach the coordinator API at ${apiBase()} (${err.message || err}).`);
  }
  const date = Date.parse(response.headers.get("Date") || "");
  if (!Number.isNaN(date)) skewMs = date + 500 - Date.now(); // Date has whole seconds
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const err = data && typeof data === "object" ? data : {};
    throw new ApiError(response.status, err.error || `http_${response.status}`,
      err.message || `${method} ${path} answered ${response.status} ${response.statusText}`, err.details);
  }
  if (text && data === null) {
    throw new ApiError(response.status, "bad_response", `${method} ${path} did not answer JSON: is FLEET_API_BASE right?`);
  }
  return data;
}

/** Whether the signed-in operator's role allows what `role` may do. */
export function can(role) {
  return !!who && who.kind === "operator" && ROLES.indexOf(who.role) >= ROLES.indexOf(role);
}

/** Whether the signed-in token may touch every product (it may manage people's tokens). */
export const everyProduct = () => !!who && who.products.includes("*");

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, json) => request("POST", path, { json: json ?? {} });
export const put = (path, json) => request("PUT", path, { json });
export const del = (path) => request("DELETE", path);
export const enc = encodeURIComponent;
