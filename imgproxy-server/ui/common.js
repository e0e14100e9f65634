// What every page of imgproxy's web UI shares: the key (typed in, kept in this tab's
// sessionStorage only, sent as a Bearer header), calls to the API that turn its error
// envelope into an exception, and a small DOM builder that only ever sets text.

const KEY_STORAGE = "imgproxy.key";

export function currentKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

/** An API answer that is not 2xx: OpenAI's error envelope, with the status and request id. */
export class ApiError extends Error {
  constructor(status, error, requestId) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
    this.type = error.type || null;
    this.requestId = requestId;
  }
}

/** Headers of a call: the key as a Bearer token, when one is set. */
export function authHeaders(extra = {}) {
  const key = currentKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

/** Calls the API; answers the fetch Response for 2xx, throws ApiError otherwise. */
export async function call(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

/** The ApiError of a non-2xx answer (its envelope, or its status when it has none). */
export async function failure(response) {
  let error = { message: `HTTP ${response.status}` };
  try {
    const body = await response.json();
    if (body && body.error) error = body.error;
  } catch {
    // Not JSON: the status says it all.
  }
  return new ApiError(response.status, error, response.headers.get("x-request-id"));
}

/** `call` for JSON answers. */
export async function getJson(path, options) {
  return (await call(path, options)).json();
}

/** An element with attributes (`class`, `data-*`, properties such as `hidden`) and children
 *  (strings become text nodes: nothing is ever parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name in node && !name.startsWith("data-") && name !== "list") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Unix seconds as a local date and time. */
export function when(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return new Date(seconds * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

/** A human title for an API error: what the status means for the person at the page. */
export function errorTitle(error) {
  if (!(error instanceof ApiError)) return "Could not reach the server";
  if (error.status === 0) return "The stream ended with an error";
  if (error.status === 401) return "The key was refused (401)";
  if (error.status === 402) return "Out of credits (402)";
  if (error.status === 403) return "Not allowed for this key (403)";
  if (error.status === 429) return "Slow down: a limit was reached (429)";
  if (error.status >= 500) return `The server or the upstream failed (${error.status})`;
  return `Refused (${error.status}${error.code ? ` · ${error.code}` : ""})`;
}

/** A banner for `error`, with its request id. */
export function errorBanner(error) {
  return el("div", { class: "banner", role: "alert", "data-status": error.status },
    el("strong", {}, errorTitle(error)),
    error.message,
    error.requestId ? el("div", { class: "hint mono" }, `request id ${error.requestId}`) : null);
}

/** Wires the key bar of the page: typing a key keeps it for this tab; `onChange` runs when
 *  it changes (and once at start). */
export function mountKeyBar(onChange) {
  const form = document.getElementById("keybar");
  const input = document.getElementById("key");
  const state = document.getElementById("key-state");
  const show = () => {
    const key = currentKey();
    state.textContent = key ? `key …${key.slice(-4)} (this tab only)` : "no key";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    input.value = "";
    show();
    onChange();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    show();
    onChange();
  });
  show();
  onChange();
}

/** Copies `text`; falls back to selecting `node` where the clipboard API is not offered
 *  (pages over plain HTTP on another host). */
export async function copyText(text, node) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return document.execCommand("copy");
  }
}
