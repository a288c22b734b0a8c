// #/invocations?status=&service=&key=&cursor=: the invocation list, newest first, a page at a time.

import {h, replace, enc, isoTime, statusBadge, note, table, field} from "./dom.js";
import {get} from "./api.js";

export const STATUSES = ["pending", "running", "suspended", "backing-off", "paused",
  "completed", "failed", "cancelled", "killed"];

/** Rows a page shows. */
export const PAGE = 50;
/** The API may answer a short page (it reads a bounded slice of the store per call): the list asks
 * again, going on from the cursor, up to this many times to fill a page. */
const MAX_CALLS = 10;

export function listHash(filters, cursor) {
  const params = new URLSearchParams();
  for (const name of ["status", "service", "key"]) if (filters[name]) params.set(name, filters[name]);
  if (cursor) params.set("cursor", cursor);
  const q = params.toString();
  return q ? `#/invocations?${q}` : "#/invocations";
}

export function invocationLink(id) {
  return h("a", {href: `#/invocations/${enc(id)}`, class: "inv-id"}, id);
}

export async function invocationsView(root, {query, signal, navigate}) {
  const filters = {status: query.get("status") || "", service: query.get("service") || "",
    key: query.get("key") || ""};
  const cursor = query.get("cursor") || "";

  const status = h("select", {name: "status", id: "filter-status"},
    h("option", {value: ""}, "any status"),
    STATUSES.map((s) => h("option", {value: s, selected: s === filters.status}, s)));
  const service = h("input", {name: "service", id: "filter-service", list: "service-names", value: filters.service,
    placeholder: "any service", autocomplete: "off"});
  const key = h("input", {name: "key", id: "filter-key", value: filters.key, placeholder: "any key", autocomplete: "off"});
  const names = h("datalist", {id: "service-names"});
  const form = h("form", {class: "filters", on: {submit: (event) => {
    event.preventDefault();
    navigate(listHash({status: status.value, service: service.value.trim(), key: key.value.trim()}));
  }}},
  field("Status", status), field("Service", service), field("Key", key), names,
  h("button", {type: "submit", class: "primary"}, "Filter"),
  h("a", {href: "#/invocations", class: "button-link"}, "Clear"));

  const goto = h("input", {name: "id", id: "goto-id", placeholder: "inv_…", autocomplete: "off", spellcheck: "false"});
  const jump = h("form", {class: "filters goto", on: {submit: (event) => {
    event.preventDefault();
    const id = goto.value.trim();
    if (id) navigate(`#/invocations/${enc(id)}`);
  }}}, field("Invocation ID", goto), h("button", {type: "submit"}, "Open"));

  const results = h("div", {class: "results"}, note("info", "Loading…"));
  replace(root,
    h("div", {class: "title-row"}, h("h1", {}, "Invocations"),
      h("button", {type: "button", on: {click: () => navigate(location.hash || "#/invocations")}}, "Refresh")),
    h("div", {class: "toolbar"}, form, jump), results);

  get("/services").then((answer) => {
    replace(names, answer.services.map((s) => h("option", {value: s.name})));
  }).catch(() => { /* the list works without the suggestions */ });

  const rows = [];
  let next = cursor || null;
  let calls = 0;
  try {
    do {
      const page = await get("/invocations", {...filters, limit: PAGE - rows.length, cursor: next || undefined});
      rows.push(...page.invocations);
      next = page.next_cursor || null;
      calls += 1;
    } while (rows.length < PAGE && next !== null && calls < MAX_CALLS && !signal.aborted);
  } catch (error) {
    replace(results, note("error", `Could not list invocations: ${error.message}`));
    return;
  }
  if (signal.aborted) return;

  const filtered = filters.status || filters.service || filters.key;
  const summary = rows.length === 0
    ? (next ? "None found yet in the part of the store searched so far." : filtered ? "No invocation matches." : "No invocations.")
    : `${rows.length} invocation${rows.length === 1 ? "" : "s"}${cursor ? " (an older page)" : ", newest first"}.`;
  const pager = h("nav", {class: "pager", "aria-label": "Pages"},
    cursor ? h("a", {href: listHash(filters), class: "button-link"}, "« Newest") : null,
    next ? h("a", {href: listHash(filters, next), class: "button-link", rel: "next", id: "older"}, "Older »") : null);

  replace(results,
    h("p", {class: "muted"}, summary),
    rows.length ? table(["Invocation", "Target", "Status", "Reason", "Attempts", "Created", "Modified"],
      rows.map((inv) => h("tr", {"data-id": inv.id},
        h("td", {}, invocationLink(inv.id)),
        h("td", {class: "target", title: inv.target}, inv.target),
        h("td", {}, statusBadge(inv.status)),
        h("td", {class: "reason", title: inv.reason || ""}, inv.reason || ""),
        h("td", {class: "num"}, String(inv.attempts)),
        h("td", {class: "time"}, isoTime(inv.created_at)),
        h("td", {class: "time"}, isoTime(inv.modified_at)))),
      {class: "list", id: "invocations"}) : null,
    pager);
  performance.mark("invocations-listed"); // for benchmarks.ui_list: the list is on screen
}
