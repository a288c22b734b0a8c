// #/invocations/ID: one invocation: its status and reason, the operator actions, its journal as a
// timeline, and a live tail of its events.

import {h, replace, enc, isoTime, msTime, duration, money, statusBadge, note, field} from "./dom.js";
import {api, get, tail} from "./api.js";
import {payloadBlock, failureBlock, preview, isBlob} from "./payload.js";
import {invocationLink, listHash} from "./invocations.js";
import {flash} from "./nav.js";

const FINISHED = new Set(["completed", "failed", "cancelled", "killed"]);
const POLL_MS = 2000;

/** The operator actions: what each asks before it acts, and when it applies. */
const ACTIONS = {
  Cancel: {
    applies: (inv) => !FINISHED.has(inv.status),
    ask: "The handler sees a cancellation at its next await, may compensate, and ends cancelled.",
    call: (id) => api("POST", `/invocations/${enc(id)}/cancel`),
  },
  Kill: {
    applies: (inv) => !FINISHED.has(inv.status),
    ask: "It ends killed at once: no more handler code runs, and its key's inbox moves on.",
    call: (id) => api("POST", `/invocations/${enc(id)}/kill`),
  },
  Pause: {
    applies: (inv) => !FINISHED.has(inv.status) && !["paused", "pending", "suspended"].includes(inv.status),
    ask: "It stops trying (a running attempt is dropped) until it is resumed.",
    call: (id) => api("POST", `/invocations/${enc(id)}/pause`),
  },
  Resume: {
    applies: (inv) => inv.status === "paused",
    ask: "It is tried again from where its journal is.",
    call: (id, options) => api("POST", `/invocations/${enc(id)}/resume`,
      {json: options.budget === "" ? {} : {budget: Number(options.budget)}}),
  },
  Restart: {
    applies: (inv) => FINISHED.has(inv.status),
    ask: "A new invocation starts with the same input, keeping this one's first N journal entries.",
    call: (id, options) => api("POST", `/invocations/${enc(id)}/restart`, {query: {from: options.from}}),
  },
  Purge: {
    applies: (inv) => FINISHED.has(inv.status),
    ask: "This finished invocation and its journal are deleted for good.",
    call: (id) => api("DELETE", `/invocations/${enc(id)}`),
  },
};

/** What an action that the API took says (the page then shows the status as it is now). */
const DONE = {
  Cancel: "Cancellation asked for: the handler sees it at its next await.",
  Kill: "Killed.",
  Pause: "Paused: no more attempts until it is resumed.",
  Resume: "Resumed: it is tried again.",
};

/** An entry's name as the journal view shows it ("" for kinds that have none). */
export function entryName(entry) {
  if (typeof entry.name === "string") return entry.name;
  if (entry.kind === "Call" || entry.kind === "Send") {
    return [entry.service, entry.key, entry.handler].filter((p) => p !== null && p !== undefined).join("/");
  }
  if (typeof entry.id === "string") return entry.id;
  return "";
}

function since(inv, ms) {
  const start = Date.parse(inv.created_at);
  return Number.isNaN(start) ? "" : ` (${duration(ms - start)} after it was created)`;
}

function facts(inv, entry) {
  const out = [];
  if (entry.kind === "Run") {
    out.push(h("span", {class: `fact${entry.attempts > 1 ? " retried" : ""}`,
      title: `tries of this step; the ${entry.variant} function gave its outcome`}, `attempts ${entry.attempts}`));
    if (entry.duration_ms !== null && entry.duration_ms !== undefined) {
      out.push(h("span", {class: "fact", title: "from its first try's start to its outcome, backoffs included"},
        duration(entry.duration_ms)));
    }
    if (entry.cost !== null && entry.cost !== undefined) out.push(h("span", {class: "fact cost", title: "cost, all tries"}, money(entry.cost)));
    if (entry.variant !== "primary") out.push(h("span", {class: "fact variant-fallback", title: "variant"}, String(entry.variant)));
  }
  if (entry.kind === "Sleep") out.push(h("span", {class: "fact"}, `until ${msTime(entry.wake_at_ms)}${since(inv, entry.wake_at_ms)}`));
  if (entry.kind === "Now") out.push(h("span", {class: "fact"}, `${msTime(entry.ms)}${since(inv, entry.ms)}`));
  if (entry.kind === "Send" && entry.delay_ms) out.push(h("span", {class: "fact"}, `delay ${duration(entry.delay_ms)}`));
  if ("done" in entry && entry.done === false) out.push(h("span", {class: "fact waiting"}, "waiting"));
  if (entry.failure) out.push(h("span", {class: "fact failed"}, `failed ${entry.failure.code}`));
  if ((entry.kind === "Call" || entry.kind === "Send") && entry.invocation_id) {
    out.push(h("span", {class: "fact"}, "→ ", invocationLink(entry.invocation_id)));
  }
  return out;
}

function entryPayloads(entry) {
  const out = [];
  const add = (label, value) => {
    if (value !== null && value !== undefined) out.push(payloadBlock(label, value));
  };
  if (entry.kind === "Call" || entry.kind === "Send") {
    add("input", entry.input);
    add("result", entry.value);
  } else if (entry.kind === "Input") add("input", entry.value);
  else if (entry.kind === "Output") add("output", entry.value);
  else {
    add("value", entry.value);
    add("event", entry.event);
    if (Array.isArray(entry.keys) && entry.keys.length) add("keys", entry.keys);
  }
  return out;
}

function mainPayload(entry) {
  for (const name of ["value", "event", "input"]) {
    if (entry[name] !== null && entry[name] !== undefined && entry[name] !== "") return entry[name];
  }
  return undefined;
}

function entryItem(inv, entry) {
  const name = entryName(entry);
  const body = entryPayloads(entry);
  const main = mainPayload(entry);
  const short = main === undefined ? "" : preview(main);
  const opened = body.length > 1 || (main !== undefined && (isBlob(main) || short.endsWith("…")));
  return h("li", {class: `entry kind-${entry.kind}${entry.failure ? " entry-failed" : ""}`,
    "data-index": String(entry.index)},
  h("div", {class: "entry-head"},
    h("span", {class: "entry-index"}, String(entry.index)),
    h("span", {class: "entry-kind"}, entry.kind),
    h("span", {class: "entry-name"}, name),
    h("span", {class: "entry-facts"}, facts(inv, entry)),
    main !== undefined ? h("span", {class: "entry-preview"}, short) : null),
  failureBlock("error", entry.failure),
  failureBlock("outcome", entry.outcome),
  opened ? h("details", {class: "entry-body"}, h("summary", {}, "payload"), body) : null);
}

function summaryList(inv) {
  const rows = [];
  const add = (label, ...value) => rows.push(h("dt", {}, label), h("dd", {}, ...value));
  const keyed = inv.key !== null && inv.key !== undefined;
  add("Target", h("a", {href: listHash({service: inv.service}), class: "target"}, inv.target));
  if (keyed) add("Key", inv.key, " · ", h("a", {href: `#/state/${enc(inv.service)}/${enc(inv.key)}`}, "state"),
    " · ", h("a", {href: listHash({service: inv.service, key: inv.key})}, "its invocations"));
  add("Deployment", inv.deployment_id || "—");
  if (inv.idempotency_key) add("Idempotency key", inv.idempotency_key);
  add("Attempts", String(inv.attempts), inv.failures ? ` (${inv.failures} failed since its last progress)` : "");
  add("Created", isoTime(inv.created_at));
  add("Modified", isoTime(inv.modified_at));
  if (inv.start_at) add("Starts at", isoTime(inv.start_at));
  if (inv.next_retry_at) add("Next retry", isoTime(inv.next_retry_at));
  if (inv.completed_at) add("Completed", isoTime(inv.completed_at));
  const end = inv.completed_at ? Date.parse(inv.completed_at) : Date.now();
  add("Duration", duration(end - Date.parse(inv.created_at)), inv.completed_at ? "" : " so far");
  add("Cost", money(inv.cost), inv.budget !== null && inv.budget !== undefined ? ` of a budget of ${money(inv.budget)}` : "");
  if (inv.last_error) add("Last error", h("span", {class: "error-text"}, inv.last_error));
  return h("dl", {class: "summary"}, rows);
}

function journalList(inv) {
  const count = inv.journal.length;
  return [
    h("h2", {}, "Journal ", h("span", {class: "muted"}, `${count} entr${count === 1 ? "y" : "ies"}`)),
    inv.warnings && inv.warnings.length ? inv.warnings.map((w) => note("info", `warning: ${w.message}`)) : null,
    h("ol", {class: "journal", id: "journal"}, inv.journal.map((entry) => entryItem(inv, entry))),
  ];
}

export async function invocationView(root, {parts, signal, navigate}) {
  const id = parts[0];
  const heading = h("div", {class: "title-row"});
  const reason = h("p", {class: "reason-line", id: "inv-reason"});
  const messages = h("div", {class: "messages"});
  const details = h("div", {class: "details"});
  const journal = h("section", {class: "journal-section"});
  const events = h("ol", {class: "events", id: "events"});
  const tailState = h("span", {class: "tail-state", id: "tail-state"}, "connecting…");

  const fromInput = h("input", {type: "number", min: "1", value: "1", id: "restart-from", name: "from", class: "narrow"});
  const budgetInput = h("input", {type: "number", min: "0", step: "any", id: "resume-budget", name: "budget",
    class: "narrow", placeholder: "unchanged"});
  const buttons = {};
  for (const name of Object.keys(ACTIONS)) {
    buttons[name] = h("button", {type: "button", class: `action action-${name.toLowerCase()}`,
      on: {click: () => act(name)}}, name);
  }
  const actions = h("section", {class: "actions", "aria-label": "Operator actions"},
    h("div", {class: "buttons"}, Object.values(buttons)),
    h("div", {class: "action-options"},
      field("Restart from entry", fromInput), field("Resume with budget", budgetInput)));

  replace(root,
    h("p", {class: "crumbs"}, h("a", {href: "#/invocations"}, "Invocations"), " / ", h("span", {class: "mono"}, id)),
    heading, reason, actions, messages, details, journal,
    h("section", {class: "tail"}, h("h2", {}, "Events ", tailState), events));

  let shown = null;
  let shownJournal = "";
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    let inv;
    try {
      inv = await get(`/invocations/${enc(id)}`);
    } catch (error) {
      if (signal.aborted) return;
      if (error.status === 404) {
        replace(heading, h("h1", {class: "mono"}, id));
        replace(reason, note("error", "No such invocation (it may have been purged, or swept after its retention)."));
        actions.hidden = true;
        return;
      }
      replace(messages, note("error", `Could not read the invocation: ${error.message}`));
      timer = setTimeout(refresh, POLL_MS * 2);
      return;
    }
    if (signal.aborted) return;
    shown = inv;
    replace(heading, h("h1", {class: "mono", id: "inv-id"}, inv.id),
      h("span", {id: "inv-status", class: "status-slot"}, statusBadge(inv.status)));
    replace(reason, inv.reason && inv.reason !== inv.status ? inv.reason : "");
    for (const [name, action] of Object.entries(ACTIONS)) {
      buttons[name].disabled = !action.applies(inv);
      buttons[name].title = buttons[name].disabled ? `not while ${inv.status}` : action.ask;
    }
    fromInput.max = String(Math.max(1, inv.journal.filter((e) => e.kind !== "Output").length));
    replace(details, summaryList(inv),
      h("div", {class: "io"},
        inv.input !== null && inv.input !== undefined ? payloadBlock("Input", inv.input) : null,
        inv.output !== null && inv.output !== undefined ? payloadBlock("Output", inv.output) : null,
        failureBlock("Failure", inv.failure)));
    const journalText = JSON.stringify(inv.journal);
    if (journalText !== shownJournal) { // rebuilt only when it changed: opened payloads stay open
      shownJournal = journalText;
      replace(journal, journalList(inv));
    }
    if (!FINISHED.has(inv.status) && !signal.aborted) {
      // A long journal is re-read less often: each read brings all of it.
      timer = setTimeout(refresh, inv.journal.length > 1000 ? POLL_MS * 5 : POLL_MS);
    }
  }
  signal.addEventListener("abort", () => clearTimeout(timer));

  async function act(name) {
    const action = ACTIONS[name];
    const options = {from: fromInput.value || "1", budget: budgetInput.value.trim()};
    let question = `${name} invocation ${id}?\n\n${action.ask}`;
    if (name === "Restart") question += `\n\nN = ${options.from}.`;
    if (name === "Resume" && options.budget !== "") question += `\n\nIts budget becomes ${options.budget}.`;
    if (!window.confirm(question)) return;
    buttons[name].disabled = true;
    try {
      const answer = await action.call(id, options);
      if (name === "Purge") {
        flash("ok", `Purged ${id}.`);
        navigate("#/invocations");
        return;
      }
      if (name === "Restart") {
        replace(messages, note("ok", "Restarted as ", invocationLink(answer.id), "."));
      } else {
        replace(messages, note("ok", DONE[name]));
      }
    } catch (error) {
      replace(messages, note("error", `${name} failed: ${error.message}`));
    }
    await refresh();
  }

  await refresh();
  if (signal.aborted || shown === null) return;

  let pending = null;
  tail(`/invocations/${enc(id)}/events`, {
    signal,
    onState: (text, kind) => {
      tailState.textContent = text;
      tailState.className = `tail-state tail-${kind}`;
    },
    onEvent: (message) => {
      events.appendChild(eventItem(message));
      if (events.children.length > 500) events.firstElementChild.remove();
      if (message.event !== "token") { // a milestone is a journal entry, the end a new status
        clearTimeout(pending);
        pending = setTimeout(refresh, message.event === "end" ? 0 : 300);
      }
    },
  });
}

function eventItem(message) {
  let shown = message.data;
  try {
    const value = JSON.parse(message.data);
    shown = typeof value === "string" ? value : JSON.stringify(value);
  } catch { /* not JSON: as it came */ }
  return h("li", {class: `event event-${message.event.replace(/[^a-z]/g, "")}`},
    h("span", {class: "event-id"}, message.id ?? ""),
    h("span", {class: "event-kind"}, message.event),
    h("span", {class: "event-data"}, shown));
}
