// The web UI: hash routes (#/invocations, #/invocations/ID, #/state/OBJECT/KEY, #/services,
// #/breakers, #/schedules), each a view that reads the admin JSON API. The server serves only these files.

import {h, replace, note} from "./dom.js";
import {token, forgetToken} from "./api.js";
import {navigate, takeFlash} from "./nav.js";
import {invocationsView} from "./invocations.js";
import {invocationView} from "./invocation.js";
import {stateView} from "./state.js";
import {servicesView} from "./services.js";
import {breakersView} from "./breakers.js";
import {schedulesView} from "./schedules.js";

let current = null; // the shown view's AbortController: navigating away stops its polls and tail

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/invocations";
  const [path, search = ""] = raw.split("?", 2);
  const parts = path.split("/").filter((p) => p !== "").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return {parts, query: new URLSearchParams(search)};
}

const VIEWS = {
  invocations: (parts) => (parts.length > 1 ? invocationView : invocationsView),
  state: () => stateView,
  services: () => servicesView,
  deployments: () => servicesView,
  breakers: () => breakersView,
  costs: () => breakersView,
  schedules: () => schedulesView,
};

function route() {
  current?.abort();
  current = new AbortController();
  const {parts, query} = parseHash();
  const section = parts[0] || "invocations";
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    const on = link.dataset.section === section || (section === "costs" && link.dataset.section === "breakers")
      || (section === "deployments" && link.dataset.section === "services");
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("view");
  const root = h("div", {class: "view"});
  const message = takeFlash();
  replace(main, message ? note(message.kind, message.text) : null, root);
  const pick = VIEWS[section];
  if (!pick) {
    replace(root, h("h1", {}, "Not found"), note("error", "No such page in this UI. "),
      h("a", {href: "#/invocations"}, "Invocations"));
    return;
  }
  const view = pick(parts);
  const signal = current.signal;
  Promise.resolve(view(root, {parts: parts.slice(1), query, signal, navigate})).catch((error) => {
    if (!signal.aborted) root.appendChild(note("error", error.message || String(error)));
  });
}

function showSession() {
  const session = document.getElementById("session");
  if (token() === null) {
    replace(session);
    return;
  }
  replace(session, h("span", {class: "muted"}, "admin token set"), " ",
    h("button", {type: "button", class: "small", on: {click: () => {
      forgetToken();
      route();
    }}}, "Forget token"));
}

window.addEventListener("hashchange", route);
window.addEventListener("sidecar-session", showSession);
showSession();
route();
