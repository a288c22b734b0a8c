// Building the page: every string becomes a text node, never markup. Payloads, keys, names and
// error messages come from handlers and clients, so nothing here parses markup.

const SAFE_HREF = /^(#\/|\/blobs\/|\/ui(\/|$))/;

/** An element: h("a", {href: "#/x", class: "id"}, "text", child, [more]). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "on") for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "href") {
      if (SAFE_HREF.test(value)) el.setAttribute("href", value); // only links this UI made
    } else if (name === "value") el.value = value;
    else if (name === "checked" || name === "disabled" || name === "selected" || name === "open") el[name] = true;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A path part or hash part, encoded (an object key may hold any character, "/" included). */
export const enc = encodeURIComponent;

export function isoTime(text) {
  if (!text) return "—";
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? String(text) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function msTime(ms) {
  return ms === null || ms === undefined ? "—" : isoTime(new Date(ms).toISOString());
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const sign = ms < 0 ? "-" : "";
  ms = Math.abs(ms);
  if (ms < 1000) return `${sign}${Math.round(ms)} ms`;
  if (ms < 60_000) return `${sign}${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  if (ms < 3_600_000) return `${sign}${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${sign}${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`;
}

export function money(x) {
  if (x === null || x === undefined) return "—";
  return "$" + (Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(2) : x.toPrecision(2));
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function statusBadge(status) {
  return h("span", {class: `status status-${String(status).replace(/[^a-z-]/g, "")}`, "data-status": status}, status);
}

/** A message line in a view: kind "error", "ok" or "info". */
export function note(kind, ...text) {
  return h("p", {class: `note note-${kind}`, role: kind === "error" ? "alert" : "status"}, ...text);
}

/** A table from rows of cells; head: column titles. It scrolls sideways where the window is narrow. */
export function table(head, rows, props = {}) {
  return h("div", {class: "table-wrap"}, h("table", props,
    h("thead", {}, h("tr", {}, head.map((title) => h("th", {scope: "col"}, title)))),
    h("tbody", {}, rows)));
}

export function field(label, control) {
  return h("label", {class: "field"}, h("span", {}, label), control);
}
