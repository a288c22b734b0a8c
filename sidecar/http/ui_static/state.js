// #/state and #/state/OBJECT/KEY: a key's state, to view and edit (PUT / DELETE one name).
// An edit waits in the key's line like an invocation would, so it never races a running handler.

import {h, replace, enc, note, table, field} from "./dom.js";
import {api, get} from "./api.js";
import {listHash} from "./invocations.js";

/** JSON text: on one line where it is short, indented where not. */
function pretty(value) {
  const compact = JSON.stringify(value) ?? String(value);
  return compact.length <= 100 ? compact : JSON.stringify(value, null, 2);
}

function checkJson(text) {
  try {
    JSON.parse(text);
    return null;
  } catch (error) {
    return `not JSON: ${error.message}`;
  }
}

function picker(navigate, object = "", key = "") {
  const objects = h("input", {name: "object", id: "state-object", list: "state-objects", value: object,
    placeholder: "Object", required: true, autocomplete: "off"});
  const keyInput = h("input", {name: "key", id: "state-key", value: key, placeholder: "key", required: true,
    autocomplete: "off"});
  const names = h("datalist", {id: "state-objects"});
  get("/services").then((answer) => {
    replace(names, answer.services.filter((s) => s.kind !== "service").map((s) => h("option", {value: s.name})));
  }).catch(() => {});
  return h("form", {class: "filters", on: {submit: (event) => {
    event.preventDefault();
    navigate(`#/state/${enc(objects.value.trim())}/${enc(keyInput.value)}`);
  }}}, field("Object or workflow", objects), names, field("Key", keyInput),
  h("button", {type: "submit", class: "primary"}, "Show state"));
}

export async function stateView(root, {parts, query, signal, navigate}) {
  if (parts.length < 2) {
    replace(root, h("h1", {}, "State"),
      h("p", {class: "muted"}, "Each key of a virtual object or workflow has its own state. Pick one:"),
      picker(navigate, query.get("object") || parts[0] || ""));
    return;
  }
  const [object, key] = parts;
  const messages = h("div", {class: "messages"});
  const body = h("div", {}, note("info", "Loading…"));
  replace(root,
    h("p", {class: "crumbs"}, h("a", {href: "#/state"}, "State"), " / ", object, " / ", h("span", {class: "mono"}, key)),
    h("div", {class: "title-row"}, h("h1", {}, "State of ", h("span", {class: "mono", id: "state-title"}, `${object}/${key}`)),
      h("a", {href: listHash({service: object, key}), class: "button-link"}, "Invocations on this key")),
    picker(navigate, object, key), messages, body);

  const base = `/state/${enc(object)}/${enc(key)}`;

  async function load() {
    let answer;
    try {
      answer = await get(base);
    } catch (error) {
      replace(body, note("error", `Could not read the state: ${error.message}`));
      return;
    }
    if (signal.aborted) return;
    const names = Object.keys(answer.state).sort();
    replace(body,
      names.length
        ? table(["Name", "Value", ""], names.map((name) => row(name, answer.state[name])), {class: "list state", id: "state"})
        : h("p", {class: "muted", id: "state-empty"}, "This key has no state."),
      addForm());
  }

  async function write(name, text) {
    const problem = checkJson(text);
    if (problem) {
      replace(messages, note("error", `${name}: ${problem}`));
      return false;
    }
    try {
      await api("PUT", `${base}/${enc(name)}`, {body: text});
      replace(messages, note("ok", `Set ${name}.`));
      return true;
    } catch (error) {
      replace(messages, note("error", `Could not set ${name}: ${error.message}`));
      return false;
    }
  }

  function row(name, value) {
    const shown = h("pre", {class: "payload-text"}, pretty(value));
    const cell = h("td", {class: "value"}, shown);
    const edit = h("button", {type: "button", class: "small", on: {click: () => {
      const area = h("textarea", {class: "edit", name: `value-${name}`, rows: "6", spellcheck: "false",
        "aria-label": `New value of ${name}`});
      area.value = pretty(value);
      replace(cell, area, h("div", {class: "buttons"},
        h("button", {type: "button", class: "primary small", on: {click: async () => {
          if (await write(name, area.value)) await load();
        }}}, "Save"),
        h("button", {type: "button", class: "small", on: {click: () => replace(cell, shown)}}, "Discard")));
      area.focus();
    }}}, "Edit");
    const remove = h("button", {type: "button", class: "small danger", on: {click: async () => {
      if (!window.confirm(`Delete ${name} from the state of ${object}/${key}?`)) return;
      try {
        await api("DELETE", `${base}/${enc(name)}`);
        replace(messages, note("ok", `Deleted ${name}.`));
      } catch (error) {
        replace(messages, note("error", `Could not delete ${name}: ${error.message}`));
      }
      await load();
    }}}, "Delete");
    return h("tr", {"data-name": name}, h("th", {scope: "row", class: "mono"}, name), cell,
      h("td", {class: "row-actions"}, edit, " ", remove));
  }

  function addForm() {
    const name = h("input", {name: "name", id: "new-name", required: true, autocomplete: "off"});
    const value = h("textarea", {name: "value", id: "new-value", rows: "3", spellcheck: "false", required: true,
      placeholder: '{"any": "JSON"}'});
    return h("form", {class: "add-state", on: {submit: async (event) => {
      event.preventDefault();
      if (await write(name.value, value.value)) await load();
    }}}, h("h2", {}, "Set a value"), field("Name", name), field("Value (JSON)", value),
    h("button", {type: "submit", class: "primary"}, "Set"));
  }

  await load();
}
