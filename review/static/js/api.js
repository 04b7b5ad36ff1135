// The review API (docs/review-api.md): JSON calls, the CSRF header on every mutating request,
// and a sign-in redirect on 401.

const BASE = "/review/api";
let csrfToken = "";

/** An API error carrying the HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Remember the session's CSRF token (from /me or /login). */
export function setCsrfToken(token) {
  csrfToken = token || "";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.detail || body.error || body.message || JSON.stringify(body);
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

/** Send a request; JSON in and out. A 401 sends the browser to the sign-in page. */
export async function request(method, path, body, { redirect = true } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(BASE + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && redirect) {
    const back = encodeURIComponent(location.pathname + location.hash);
    location.assign(`/review/login?next=${back}`);
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) throw new ApiError(response.status, await errorText(response));
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response;
}

/** GET a binary resource (pixels, PNGs) as a Response, raising ApiError when not OK. */
export async function fetchBinary(path) {
  const response = await fetch(BASE + path, { credentials: "same-origin" });
  if (response.status === 401) {
    location.assign("/review/login");
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) throw new ApiError(response.status, await errorText(response));
  return response;
}

export const api = {
  me: () => request("GET", "/me", undefined, { redirect: false }),
  login: (username, password) =>
    request("POST", "/login", { username, password }, { redirect: false }),
  logout: () => request("POST", "/logout", {}),
  cases: (params) => request("GET", `/cases?${new URLSearchParams(params)}`),
  next: (after) => request("GET", `/cases/next${after ? `?after=${encodeURIComponent(after)}` : ""}`),
  getCase: (id) => request("GET", `/cases/${encodeURIComponent(id)}`),
  act: (id, action) => request("POST", `/cases/${encodeURIComponent(id)}/actions`, action),
  audit: (id) => request("GET", `/cases/${encodeURIComponent(id)}/audit`),
  casePath: (id, rest) => `/cases/${encodeURIComponent(id)}/${rest}`,
};
