// api.js: the console's one way to paymentd: its public API (/v1/...) and
// /metrics, on the same origin.  The API key lives in sessionStorage (this
// tab only, gone when it closes) and goes out as Authorization: Bearer.
// A non-2xx answer becomes an ApiError with the API's error_code and message.

const KEY_NAME = "paymentd.console.key";

export function storedKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || ("HTTP " + status));
    this.status = status;  // the HTTP status
    this.code = code;      // the API's error_code, or "http_<status>"
  }
}

function headers(accept, withBody) {
  const out = {Accept: accept};
  const key = storedKey();
  if (key) out.Authorization = "Bearer " + key;
  if (withBody) out["Content-Type"] = "application/json";
  return out;
}

// A link of the API (a path, or a URL under --public-url) as a same-origin path.
export function linkPath(link) {
  const u = new URL(link, window.location.origin);
  return u.pathname + u.search;
}

async function failure(r) {
  let body = null;
  try {
    body = await r.json();
  } catch (e) {
    body = null;
  }
  const code = body && body.error_code ? body.error_code : "http_" + r.status;
  const msg = body && body.error_message ? body.error_message : r.status + " " + r.statusText;
  return new ApiError(r.status, code, msg);
}

// Sends a request; answers the parsed JSON body (null for 204).
export async function request(method, path, body) {
  const r = await fetch(path, {
    method, cache: "no-store", headers: headers("application/json", body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) throw await failure(r);
  return r.status === 204 ? null : r.json();
}

export const get = path => request("GET", path);
export const post = (path, body) => request("POST", path, body);

// Every item of a paged list, following links.next (at most maxPages pages).
export async function getAll(path, maxPages = 50) {
  const items = [];
  let next = path;
  for (let i = 0; next && i < maxPages; i++) {
    const page = await get(next);
    items.push(...page.data);
    next = page.links && page.links.next && page.data.length ? linkPath(page.links.next) : null;
  }
  return items;
}

// The body of a non-JSON answer as a Blob (the CSV export).
export async function blob(path, accept) {
  const r = await fetch(path, {cache: "no-store", headers: headers(accept, false)});
  if (!r.ok) throw await failure(r);
  return r.blob();
}

// /metrics as text (needs no key, but sending one does no harm).
export async function metricsText() {
  const r = await fetch("/metrics", {cache: "no-store", headers: headers("text/plain", false)});
  if (!r.ok) throw await failure(r);
  return r.text();
}
