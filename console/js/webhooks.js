// webhooks.js: the Webhooks pages.  The list shows each endpoint with its
// health, worked out from its delivery list (success rate of the deliveries
// that finished, the last failed attempt, how many are pending); an endpoint's
// page shows its delivery log (filtered by status, cursor-paged, attempts
// expandable) with retry per delivery and a replay of a time range, both only
// for a key that may write.

import {get, getAll, linkPath, post} from "./api.js";
import {badge, h, replace, table, when} from "./dom.js";
import {deliveriesTable, failureText} from "./deliveries.js";

const SAMPLE = 1000;  // deliveries read per endpoint for its health

// {rate, lastFailure, pending, total} of a list of deliveries.
function health(deliveries) {
  let ok = 0, failed = 0, pending = 0, lastFailure = null;
  for (const d of deliveries) {
    if (d.status === "succeeded") ok++;
    else if (d.status === "failed") failed++;
    else if (d.status === "pending") pending++;
    for (const a of d.attempts || []) {
      const bad = !(a.status_code >= 200 && a.status_code < 300);
      if (bad && (!lastFailure || a.at > lastFailure.at)) lastFailure = a;
    }
  }
  const done = ok + failed;
  return {rate: done ? ok / done : null, lastFailure, pending, total: deliveries.length};
}

async function endpointRow(w) {
  const page = await get("/v1/webhooks/" + w.id + "/deliveries?page[size]=" + SAMPLE);
  const hl = health(page.data);
  const more = page.links && page.links.next ? " (latest " + SAMPLE + ")" : "";
  return [
    h("a", {href: "#/webhooks/" + w.id}, w.url),
    badge(w.status),
    {cell: hl.rate === null ? "–" : (hl.rate * 100).toFixed(1) + "%", class: "num"},
    hl.lastFailure ? h("span", null, failureText(hl.lastFailure), " · ", when(hl.lastFailure.at)) : "none",
    {cell: String(hl.pending), class: "num"},
    {cell: hl.total + more, class: "num"},
    (w.event_types || []).join(", "),
  ];
}

export async function webhooksPage(view, me) {
  replace(view, h("h1", null, "Webhooks"), h("p", {class: "status"}, "Loading…"));
  const endpoints = await getAll("/v1/webhooks?page[size]=100");
  const rows = await Promise.all(endpoints.map(endpointRow));
  replace(view, h("h1", null, "Webhooks"),
    rows.length ? table("Webhook endpoints", ["Endpoint", "Status", "Success rate", "Last failure",
                                              "Pending", "Deliveries", "Events"], rows)
      : h("p", {class: "note"}, "No webhook endpoints."));
  document.body.dataset.loaded = "webhooks";
  return null;
}

function replayForm(w) {
  const status = h("span", {class: "status", role: "status", id: "replay-status"});
  const from = h("input", {id: "replay-from", type: "datetime-local", required: true, step: "1"});
  const to = h("input", {id: "replay-to", type: "datetime-local", required: true, step: "1"});
  const form = h("form", {class: "inline-form", id: "replay-form", "aria-label": "Replay a time range"},
    h("div", null, h("label", {for: "replay-from"}, "From (local time)"), from),
    h("div", null, h("label", {for: "replay-to"}, "To"), to),
    h("button", {type: "submit"}, "Replay"), status);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      const body = {data: {from: new Date(from.value).toISOString().replace(/\.\d+Z$/, "Z"),
                           to: new Date(to.value).toISOString().replace(/\.\d+Z$/, "Z")}};
      const r = await post("/v1/webhooks/" + w.id + "/replay", body);
      status.textContent = "Replaying " + r.data.events + " event(s).";
    } catch (err) {
      status.textContent = "Replay refused: " + err.message;
    }
  });
  return [h("h2", null, "Replay"),
          h("p", {class: "note"}, "Sends every event of the range again to this endpoint."), form];
}

export async function webhookPage(view, me, id, query) {
  const params = new URLSearchParams(query);
  const status = params.get("status") || "";
  const w = (await get("/v1/webhooks/" + id)).data;
  const api = "/v1/webhooks/" + id + "/deliveries?page[size]=50" +
    (status ? "&filter[status]=" + status : "") +
    (params.get("after") ? "&page[after]=" + encodeURIComponent(params.get("after")) : "");
  const page = await get(api);
  const select = h("select", {id: "delivery-status"},
    ["", "pending", "succeeded", "failed"].map(v => h("option", {value: v, selected: v === status}, v || "any")));
  select.addEventListener("change", () => {
    window.location.hash = "#/webhooks/" + id + (select.value ? "?status=" + select.value : "");
  });
  const rows = page.data.map(d => ({endpoint: w, delivery: d, event: d.event_id}));
  const shown = window.location.hash;
  const log = deliveriesTable(me, rows, () => setTimeout(() => {
    if (window.location.hash === shown) webhookPage(view, me, id, query);
  }, 500), true);
  let next = null;
  if (page.links && page.links.next && page.data.length) {
    const after = new URL(linkPath(page.links.next), window.location.origin).searchParams.get("page[after]");
    next = h("a", {href: "#/webhooks/" + id + "?" + (status ? "status=" + status + "&" : "") +
                   "after=" + encodeURIComponent(after)}, "Older deliveries →");
  }
  replace(view,
    h("p", null, h("a", {href: "#/webhooks"}, "← Webhooks")),
    h("h1", null, "Endpoint ", h("span", {class: "mono"}, w.url)),
    h("p", {class: "health"}, badge(w.status), w.disabled_reason ? " " + w.disabled_reason : "",
      h("span", null, "events: " + (w.event_types || []).join(", ")),
      h("span", {class: "mono"}, "id " + w.id), w.description ? h("span", null, w.description) : null),
    h("h2", null, "Delivery log"),
    h("div", {class: "toolbar"}, h("div", null, h("label", {for: "delivery-status"}, "Status "), select)),
    page.data.length ? log : h("p", {class: "note"}, "No deliveries."),
    next ? h("p", null, next) : null,
    me.write ? replayForm(w) : null);
  document.body.dataset.loaded = "webhook";
  return null;
}
