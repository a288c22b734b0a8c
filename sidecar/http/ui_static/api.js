// The admin JSON API, as the page calls it. The page is served from the admin port, so every
// path here is that API's own. Where the sidecar runs with --admin-token, the API answers 401
// until a request carries "authorization: Bearer TOKEN": the first 401 asks for the token (once:
// requests that meet a 401 meanwhile wait for the same answer), which is kept in sessionStorage
// (this tab, until it closes) and sent with every request below, the live tail's included.

const TOKEN_KEY = "durable-sidecar.admin-token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionChanged();
}

function sessionChanged() {
  window.dispatchEvent(new CustomEvent("sidecar-session"));
}

function withAuth(headers = {}) {
  const t = token();
  return t ? {...headers, Authorization: `Bearer ${t}`} : headers;
}

let asking = null;

/** Ask for the token (one form for all who ask at once); rejects if the operator declines. */
function askToken(refused) {
  if (asking === null) {
    asking = new Promise((resolve, reject) => {
      const dialog = document.getElementById("token-dialog");
      const form = document.getElementById("token-form");
      const input = document.getElementById("token-input");
      const why = document.getElementById("token-why");
      why.textContent = refused
        ? "The admin API refused that token. Enter the sidecar's --admin-token."
        : "This sidecar's admin API needs its token (--admin-token). It is kept in this browser tab's session only.";
      const done = (ok) => {
        form.removeEventListener("submit", submitted);
        document.getElementById("token-cancel").removeEventListener("click", cancelled);
        dialog.removeEventListener("cancel", cancelled);
        if (dialog.open) dialog.close();
        asking = null;
        if (ok) resolve();
        else reject(new ApiError(401, "the admin API needs its token: reload the page to enter it"));
      };
      const submitted = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        sessionStorage.setItem(TOKEN_KEY, value);
        input.value = "";
        sessionChanged();
        done(true);
      };
      const cancelled = (event) => {
        event.preventDefault();
        done(false);
      };
      form.addEventListener("submit", submitted);
      document.getElementById("token-cancel").addEventListener("click", cancelled);
      dialog.addEventListener("cancel", cancelled);
      dialog.showModal();
      input.focus();
    });
  }
  return asking;
}

/** fetch() with the token; a 401 asks for it and tries again. */
async function authorized(url, init) {
  for (;;) {
    const sent = token();
    const response = await fetch(url, {...init, headers: withAuth(init.headers)});
    if (response.status !== 401) return response;
    await response.body?.cancel();
    if (token() !== sent) continue; // another request got a new token meanwhile
    if (sent !== null) sessionStorage.removeItem(TOKEN_KEY);
    await askToken(sent !== null);
  }
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") params.set(name, value);
  }
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

/** One API call: the decoded JSON answer, or an ApiError carrying the API's message. */
export async function api(method, path, {query, body, json} = {}) {
  const init = {method, headers: {Accept: "application/json"}};
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = "application/json";
  }
  const response = await authorized(url(path, query), init);
  const text = await response.text();
  let value = text;
  if ((response.headers.get("Content-Type") || "").includes("json")) {
    try {
      value = text ? JSON.parse(text) : null;
    } catch {
      value = text;
    }
  }
  if (!response.ok) {
    const message = value && typeof value === "object" && "message" in value ? String(value.message) : text;
    throw new ApiError(response.status, `${response.status}: ${message || response.statusText}`, value);
  }
  return value;
}

export const get = (path, query) => api("GET", path, {query});

/** A blob's bytes, downloaded with the token (a plain link cannot send it). */
export async function downloadBlob(sha256) {
  const response = await authorized(`/blobs/${sha256}`, {method: "GET"});
  if (!response.ok) throw new ApiError(response.status, `${response.status}: ${await response.text()}`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${sha256}.bin`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/**
 * Follow an invocation's Server-Sent Events with fetch() and a streamed body (EventSource cannot
 * send the Authorization header). Calls onEvent({id, event, data}) for each event, "end" last;
 * onState(text) as the connection comes and goes; reconnects with Last-Event-ID until the end or
 * until signal aborts.
 */
export async function tail(path, {signal, onEvent, onState}) {
  let lastId = null;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const headers = {Accept: "text/event-stream"};
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await authorized(path, {method: "GET", headers, signal});
      if (!response.ok) {
        const text = await response.text();
        let message = text;
        try {
          message = JSON.parse(text).message;
        } catch { /* not JSON */ }
        onState(`not streaming: ${response.status} ${message}`, "error");
        return;
      }
      onState("live", "live");
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          const message = parse(block);
          if (message === null) continue;
          if (message.id !== null) lastId = message.id;
          onEvent(message);
          if (message.event === "end") {
            onState("ended", "ended");
            return;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) {
        onState(error.message, "error");
        return;
      }
    }
    if (signal.aborted) return;
    onState("reconnecting…", "waiting");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

function parse(block) {
  let id = null;
  let event = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line === "" || line.startsWith(":")) continue; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "id") id = value;
    else if (name === "event") event = value;
    else if (name === "data") data.push(value);
  }
  if (data.length === 0 && id === null) return null;
  return {id, event, data: data.join("\n")};
}
