// #/services: the registered services and the deployments that serve them (active, draining,
// drained: an in-flight invocation stays on the deployment it started on).

import {h, replace, enc, isoTime, statusBadge, note, table} from "./dom.js";
import {get} from "./api.js";
import {listHash} from "./invocations.js";

export async function servicesView(root, {signal}) {
  const body = h("div", {}, note("info", "Loading…"));
  replace(root, h("h1", {}, "Services and deployments"), body);
  let services, deployments;
  try {
    [services, deployments] = await Promise.all([get("/services"), get("/deployments")]);
  } catch (error) {
    replace(body, note("error", `Could not read the registry: ${error.message}`));
    return;
  }
  if (signal.aborted) return;
  replace(body,
    h("h2", {}, "Services"),
    services.services.length ? table(["Service", "Kind", "Handlers", "Deployment", ""],
      services.services.map((s) => h("tr", {"data-service": s.name},
        h("th", {scope: "row"}, h("a", {href: listHash({service: s.name})}, s.name)),
        h("td", {}, s.kind),
        h("td", {}, h("div", {class: "chips"}, s.handlers.map((handler) => h("span", {class: "chip", title: handler.kind},
          handler.name, s.kind !== "service" && handler.kind !== "exclusive" ? h("small", {}, ` ${handler.kind}`) : null)))),
        h("td", {class: "mono"}, s.deployment_id),
        h("td", {}, s.kind !== "service" ? h("a", {href: `#/state?object=${enc(s.name)}`}, "state") : null))),
    {class: "list", id: "services"}) : h("p", {class: "muted"}, "No services are registered."),
    h("h2", {}, "Deployments"),
    deployments.deployments.length ? table(["Deployment", "Status", "URI", "Transport", "Services", "Pinned", "Created"],
      deployments.deployments.map((d) => h("tr", {"data-deployment": d.id},
        h("th", {scope: "row", class: "mono"}, d.id),
        h("td", {}, statusBadge(d.status)),
        h("td", {class: "mono"}, d.uri),
        h("td", {}, d.transport),
        h("td", {}, d.services.join(", ")),
        h("td", {class: "num", title: "unfinished invocations pinned to it"}, String(d.pinned_invocations)),
        h("td", {class: "time"}, isoTime(d.created_at)))),
    {class: "list", id: "deployments"}) : h("p", {class: "muted"}, "No deployments."));
}
