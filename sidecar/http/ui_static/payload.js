// Payloads as the admin API shows them: a JSON value (or text, for bytes that are not JSON), or
// for a large one {"blob": sha256, "size": n, "preview": "first 256 bytes"}. Shown as text only.

import {h, bytes, note} from "./dom.js";
import {downloadBlob} from "./api.js";

const SHOWN = 4000; // characters of a payload shown before "show all"

export function isBlob(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    && typeof value.blob === "string" && /^[0-9a-f]{64}$/.test(value.blob)
    && typeof value.size === "number" && Object.keys(value).length === 3 && "preview" in value;
}

export function blobLink(view) {
  const status = h("span", {class: "muted"});
  const link = h("a", {href: `/blobs/${view.blob}`, class: "blob-link", on: {click: (event) => {
    event.preventDefault();
    status.textContent = " downloading…";
    downloadBlob(view.blob).then(() => { status.textContent = ""; },
      (error) => { status.textContent = ` ${error.message}`; });
  }}}, `blob ${view.blob.slice(0, 12)}… (${bytes(view.size)})`);
  return h("span", {}, link, status);
}

/** JSON text: on one line where it is short, indented where not. */
function text(value) {
  const compact = JSON.stringify(value) ?? String(value);
  return compact.length <= 100 || typeof value !== "object" || value === null ? compact : JSON.stringify(value, null, 2);
}

/** A payload in one short line: the start of its JSON, or of a blob's preview. */
export function preview(value, length = 120) {
  const shown = isBlob(value) ? `${value.preview}` : (JSON.stringify(value) ?? String(value));
  return shown.length > length ? shown.slice(0, length) + "…" : shown;
}

/** A labelled payload: a <pre> of its JSON, long ones cut with "show all"; a blob's preview and link. */
export function payloadBlock(label, value) {
  if (isBlob(value)) {
    return h("div", {class: "payload"},
      h("div", {class: "payload-label"}, label, " ", blobLink(value)),
      h("pre", {class: "payload-text", title: "the first 256 bytes"}, value.preview, "…"));
  }
  const full = text(value);
  const pre = h("pre", {class: "payload-text"}, full.length > SHOWN ? full.slice(0, SHOWN) + "…" : full);
  const more = full.length > SHOWN
    ? h("button", {type: "button", class: "small", on: {click: () => {
      pre.textContent = full;
      more.remove();
    }}}, `show all ${full.length} characters`)
    : null;
  return h("div", {class: "payload"}, h("div", {class: "payload-label"}, label), pre, more);
}

export function failureBlock(label, failure) {
  if (!failure) return null;
  return note("error", `${label}: ${failure.code} ${failure.message}`,
    failure.terminal === false ? " (retryable)" : failure.terminal ? " (terminal)" : "");
}
