// The console's only way to the service: the JSON API, with the operator's bearer token.
// The token lives in sessionStorage (this tab only, gone when it closes), never in a cookie,
// so no other site can make the browser send it.

const TOKEN_KEY = "credits.console.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error as the API words it: {error: {code, message, details}} and the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

let unauthorized = () => {};

/** What to do when the API answers 401 (the token was revoked, expired or is not valid). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** A query string from an object; an array value repeats its key (`kind=add&kind=deduct`).
 *  Empty values are left out. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== "") search.append(name, String(one));
    }
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

/** Call the API; resolves to the parsed JSON body (null for an empty one), rejects with an
 *  ApiError. A 401 clears the token and calls the onUnauthorized handler first. */
export async function api(method, path, options = {}) {
  const headers = { Accept: "application/json" };
  const current = token();
  if (current) headers.Authorization = "Bearer " + current;
  if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path + query(options.query), init);
  } catch (e) {
    throw new ApiError(0, "network_error", "the service did not answer (" + e.message + ")");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "http_" + response.status, message: "HTTP " + response.status };
    const failure = new ApiError(response.status, error.code, error.message, error.details);
    if (response.status === 401) {
      clearToken();
      unauthorized(failure);
    }
    throw failure;
  }
  return data;
}
