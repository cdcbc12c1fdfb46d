// The hub's REST API as the pages call it: JSON in and out, the session cookie, the CSRF
// header on changes, and the server's own words when it says no.

const CSRF_COOKIE = "fieldhub_csrf";
const CSRF_HEADER = "X-CSRF-Token";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** A refusal or failure of the API: `status` and the server's message. */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

/** The CSRF token the login left in its readable cookie ("" when there is none). */
export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return "";
}

/** The server's reason, from FastAPI's `detail` (a string, or a list of field errors). */
export function detailText(body, fallback) {
  const detail = body && typeof body === "object" ? body.detail : null;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const where = Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${e.msg}` : String(e.msg);
      })
      .join("; ");
  }
  return fallback;
}

/** Send the browser to the login page, to come back here afterwards. */
export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
}

function urlOf(path, query) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    for (const item of [value].flat()) {
      if (item !== null && item !== undefined && item !== "") {
        url.searchParams.append(key, String(item));
      }
    }
  }
  return url;
}

/**
 * Call the API. Resolves to the JSON answer (null for 204); rejects with ApiError.
 * A 401 sends the browser to the login page unless `options.login` is false.
 *
 * @param {string} path e.g. "/api/devices"
 * @param {{method?: string, body?: any, query?: object, login?: boolean, signal?: AbortSignal}} options
 */
export async function api(path, options = {}) {
  return (await call(path, options)).data;
}

/**
 * A page of a list: `{items, total}`, the total from the `X-Total-Count` header (how many the
 * query matches in all). Options as for `api`.
 */
export async function apiPage(path, options = {}) {
  const { data, response } = await call(path, options);
  return { items: data, total: Number(response.headers.get("X-Total-Count") ?? data.length) };
}

async function call(path, options) {
  const method = (options.method ?? "GET").toUpperCase();
  const headers = { Accept: "application/json" };
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  if (!SAFE.has(method)) headers[CSRF_HEADER] = csrfToken();
  let response;
  try {
    response = await fetch(urlOf(path, options.query), {
      method,
      headers,
      body,
      credentials: "same-origin",
      cache: "no-store",
      signal: options.signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the hub cannot be reached (network error)");
  }
  if (response.status === 204) return { data: null, response };
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && options.login !== false) {
    toLogin();
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      detailText(data, `${response.status} ${response.statusText}`.trim()),
      data,
    );
  }
  return { data, response };
}
