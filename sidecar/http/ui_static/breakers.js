// #/breakers: the circuit breakers (with Reset) and what steps cost (GET /costs with its filters).

import {h, replace, enc, msTime, money, statusBadge, note, table, field} from "./dom.js";
import {api, get} from "./api.js";

const COST_FILTERS = ["service", "handler", "key", "step", "since"];

export async function breakersView(root, {query, signal, navigate}) {
  const messages = h("div", {class: "messages"});
  const breakers = h("div", {}, note("info", "Loading…"));
  const costs = h("div", {}, note("info", "Loading…"));
  const inputs = Object.fromEntries(COST_FILTERS.map((name) => [name,
    h("input", {name, id: `cost-${name}`, value: query.get(name) || "", autocomplete: "off",
      placeholder: name === "since" ? "2025-01-31T09:00:00Z" : `any ${name}`})]));
  const form = h("form", {class: "filters", on: {submit: (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of COST_FILTERS) if (inputs[name].value.trim()) params.set(name, inputs[name].value.trim());
    navigate(params.toString() ? `#/breakers?${params}` : "#/breakers");
  }}}, COST_FILTERS.map((name) => field(name[0].toUpperCase() + name.slice(1), inputs[name])),
  h("button", {type: "submit", class: "primary"}, "Sum costs"));

  replace(root, h("h1", {}, "Breakers and costs"), messages,
    h("h2", {}, "Circuit breakers"), breakers,
    h("h2", {}, "Costs"), form, costs);

  async function loadBreakers() {
    let answer;
    try {
      answer = await get("/breakers");
    } catch (error) {
      replace(breakers, note("error", `Could not read the breakers: ${error.message}`));
      return;
    }
    if (signal.aborted) return;
    replace(breakers, answer.breakers.length
      ? table(["Breaker", "State", "Failures", "Open until", ""], answer.breakers.map((b) => h("tr", {"data-breaker": b.name},
        h("th", {scope: "row", class: "mono"}, b.name),
        h("td", {}, statusBadge(b.state)),
        h("td", {class: "num"}, String(b.failures)),
        h("td", {class: "time"}, b.open_until_ms ? msTime(b.open_until_ms) : "—"),
        h("td", {}, h("button", {type: "button", class: "small", on: {click: () => reset(b.name)}}, "Reset")))),
      {class: "list", id: "breakers"})
      : h("p", {class: "muted"}, "No breakers yet: one appears once a step that names it has run."));
  }

  async function reset(name) {
    if (!window.confirm(`Reset breaker ${name}? It closes, and steps that name it run again.`)) return;
    try {
      await api("POST", `/breakers/${enc(name)}/reset`);
      replace(messages, note("ok", `Breaker ${name} is closed.`));
    } catch (error) {
      replace(messages, note("error", `Could not reset ${name}: ${error.message}`));
    }
    await loadBreakers();
  }

  async function loadCosts() {
    const filter = {};
    for (const name of COST_FILTERS) if (query.get(name)) filter[name] = query.get(name);
    let answer;
    try {
      answer = await get("/costs", filter);
    } catch (error) {
      replace(costs, note("error", `Could not sum the costs: ${error.message}`));
      return;
    }
    if (signal.aborted) return;
    const steps = Object.entries(answer.by_step).sort((a, b) => b[1] - a[1]);
    replace(costs,
      h("p", {class: "cost-total"}, h("strong", {id: "cost-total"}, money(answer.total)),
        ` spent by ${answer.invocations} invocation${answer.invocations === 1 ? "" : "s"}`),
      steps.length ? table(["Step", "Cost"], steps.map(([step, cost]) => h("tr", {},
        h("th", {scope: "row", class: "mono"}, step), h("td", {class: "num"}, money(cost)))), {class: "list narrow-table"})
        : null);
  }

  await Promise.all([loadBreakers(), loadCosts()]);
}
