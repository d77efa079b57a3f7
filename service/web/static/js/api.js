// The dashboard's only door to the service: GET/POST under /api/v1 with the bearer token.
//
// The token lives in sessionStorage (gone when the tab closes). A `?token=` query parameter is
// accepted once, stored, and removed from the address bar so it does not linger in history.

const TOKEN_KEY = "tinyfleet.token";
export const API_BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code || (status === 401 ? "unauthorized" : "http-error");
    this.problem = problem;
  }
}

export function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    setToken(token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function getToken() {
  return window.sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  window.sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  window.sessionStorage.removeItem(TOKEN_KEY);
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function request(method, path, params, body) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API_BASE + path + query(params), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const payload = isJson ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

export const get = (path, params) => request("GET", path, params);
export const post = (path, body) => request("POST", path, undefined, body);

// Follow `next_after` cursors; stop after `maxPages` so a huge fleet cannot hang the page.
export async function getAll(path, params = {}, maxPages = 20) {
  const items = [];
  let after = null;
  for (let page = 0; page < maxPages; page += 1) {
    const result = await get(path, { ...params, limit: 1000, after });
    items.push(...result.items);
    after = result.next_after;
    if (!after) return { items, complete: true };
  }
  return { items, complete: false };
}
