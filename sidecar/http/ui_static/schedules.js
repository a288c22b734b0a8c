// #/schedules: the durable schedules (GET /schedules), when each fires next, the invocation it
// made last (a link to it), and Delete (with a confirmation).

import {h, replace, enc, msTime, note, table} from "./dom.js";
import {api, get} from "./api.js";

function when(s) {
  return s.cron !== null ? `${s.cron} (${s.timezone})` : `every ${s.every}`;
}

export async function schedulesView(root, {signal}) {
  const messages = h("div", {class: "messages"});
  const list = h("div", {}, note("info", "Loading…"));
  replace(root, h("h1", {}, "Schedules"), messages, list);

  async function load() {
    let answer;
    try {
      answer = await get("/schedules");
    } catch (error) {
      replace(list, note("error", `Could not read the schedules: ${error.message}`));
      return;
    }
    if (signal.aborted) return;
    replace(list, answer.schedules.length
      ? table(["Schedule", "When", "Target", "Next fire", "Last invocation", "Fired", "Skipped", ""],
        answer.schedules.map((s) => h("tr", {"data-schedule": s.name},
          h("th", {scope: "row", class: "mono"}, s.name),
          h("td", {class: "mono"}, when(s)),
          h("td", {class: "mono"}, s.target),
          h("td", {class: "time"}, s.next_fire_ms !== null ? msTime(s.next_fire_ms) : "never"),
          h("td", {class: "mono"}, s.last_invocation_id
            ? h("a", {href: `#/invocations/${enc(s.last_invocation_id)}`}, s.last_invocation_id) : "—"),
          h("td", {class: "num"}, String(s.fired)),
          h("td", {class: "num"}, String(s.skipped)),
          h("td", {}, h("button", {type: "button", class: "small", on: {click: () => remove(s.name)}}, "Delete")))),
        {class: "list", id: "schedules"})
      : h("p", {class: "muted"}, "No schedules: set one with PUT /schedules/NAME or `sidecar schedules set`."));
  }

  async function remove(name) {
    if (!window.confirm(`Delete schedule ${name}? It fires no more; invocations it made go on.`)) return;
    try {
      await api("DELETE", `/schedules/${enc(name)}`);
      replace(messages, note("ok", `Schedule ${name} is deleted.`));
    } catch (error) {
      replace(messages, note("error", `Could not delete ${name}: ${error.message}`));
    }
    await load();
  }

  await load();
}
