// payment.js: one payment.  Its current document (pretty, with a copy
// button), its version timeline from /v1/payments/{id}/history (who, when,
// request id, idempotency key), a field-level diff between any two versions
// (each version's document from /v1/payments/{id}/history/{version}), the
// asynchronous operations named by its events, and the webhook deliveries of
// its events (every endpoint of its organisation, their deliveries matched by
// event id).  A deleted payment still shows its history.

import {ApiError, get, getAll} from "./api.js";
import {badge, errorBox, h, replace, table, when} from "./dom.js";
import {diff, show} from "./diff.js";
import {deliveriesTable} from "./deliveries.js";

// Documents of versions already fetched, by "id/version".
const versions = new Map();

async function versionDoc(id, version) {
  const key = id + "/" + version;
  if (!versions.has(key)) {
    const ev = (await get("/v1/payments/" + id + "/history/" + version)).data;
    versions.set(key, ev.data && ev.data.payment ? ev.data.payment : null);
  }
  return versions.get(key);
}

function copyButton(text, label) {
  const status = h("span", {class: "status", role: "status"});
  const b = h("button", {type: "button", class: "secondary", id: "copy-doc"}, label);
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
    } catch (err) {
      const pre = document.getElementById("payment-doc");
      window.getSelection().selectAllChildren(pre);
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
  });
  return h("span", null, b, " ", status);
}

async function documentSection(id) {
  try {
    const p = (await get("/v1/payments/" + id)).data;
    const text = JSON.stringify(p, null, 2);
    return [h("h2", null, "Current document ", copyButton(text, "Copy JSON")),
            h("pre", {class: "doc", id: "payment-doc", tabindex: "0", "aria-label": "Payment document"}, text)];
  } catch (err) {
    if (err instanceof ApiError && err.status === 404)
      return [h("h2", null, "Current document"),
              h("p", {class: "note", id: "payment-doc"}, "This payment does not exist now (deleted, or never made); its history follows if it has one.")];
    throw err;
  }
}

function timeline(events) {
  const rows = events.map(e => [
    {cell: String(e.version), class: "num"},
    e.event_type.replace("payment.", ""),
    when(e.occurred_at),
    e.actor && e.actor.api_key_id ? e.actor.api_key_id : h("span", {class: "note"}, "open"),
    {cell: e.request_id || "", class: "mono"},
    {cell: e.idempotency_key || "", class: "mono"},
    e.data && e.data.changes ? e.data.changes.join(", ") : "",
  ]);
  const t = table("Version timeline", ["Version", "Change", "When", "API key", "Request id",
                                     "Idempotency key", "Fields changed"], rows);
  t.id = "timeline";
  return [h("h2", null, "Versions"), t];
}

function diffTable(rows) {
  if (!rows.length) return h("p", {class: "note", id: "diff-result"}, "These versions are the same.");
  const t = table("Differences", ["Field", "Before", "After"],
    rows.map(d => [{cell: d.path, class: "mono"},
                   {cell: show(d.before), class: "before mono"},
                   {cell: show(d.after), class: "after mono"}]),
    i => rows[i].kind);
  t.id = "diff-result";
  return t;
}

function diffSection(id, events) {
  const vs = events.map(e => e.version);
  const pick = (name, label, selected) => h("div", {class: "field"},
    h("label", {for: "diff-" + name}, label),
    h("select", {id: "diff-" + name}, vs.map(v => h("option", {value: v, selected: v === selected}, "version " + v))));
  const out = h("div", {id: "diff-out", "aria-live": "polite"});
  const from = pick("from", "From", vs.length > 1 ? vs[vs.length - 2] : vs[0]);
  const to = pick("to", "To", vs[vs.length - 1]);
  async function run() {
    const a = Number(from.querySelector("select").value), b = Number(to.querySelector("select").value);
    try {
      replace(out, diffTable(diff(await versionDoc(id, a), await versionDoc(id, b))));
    } catch (err) {
      replace(out, errorBox(err));
    }
  }
  from.addEventListener("change", run);
  to.addEventListener("change", run);
  run();
  return [h("h2", null, "Compare versions"), h("div", {class: "diff-pick"}, from, to), out];
}

async function operationsSection(events) {
  const ids = [...new Set(events.map(e => e.operation_id).filter(Boolean))];
  if (!ids.length) return [];
  const ops = await Promise.all(ids.map(async op => {
    try {
      return (await get("/v1/operations/" + op)).data;
    } catch (err) {
      return {id: op, status: "unknown: " + err.message};
    }
  }));
  return [h("h2", null, "Asynchronous operations"),
          table("Operations", ["Operation", "Status", "Document"],
            ops.map(o => [{cell: o.id, class: "mono"}, badge(String(o.status || ""), "warn"),
                          h("details", null, h("summary", null, "show"),
                            h("pre", {class: "doc"}, JSON.stringify(o, null, 2)))]))];
}

async function deliveriesSection(me, org, events) {
  const byEvent = new Map(events.map(e => [e.id, e]));
  const endpoints = await getAll("/v1/webhooks?filter[organisation_id]=" + encodeURIComponent(org) + "&page[size]=100");
  const rows = [];
  for (const endpoint of endpoints) {
    const ds = await getAll("/v1/webhooks/" + endpoint.id + "/deliveries?page[size]=1000", 10);
    for (const d of ds)
      if (byEvent.has(d.event_id)) {
        const e = byEvent.get(d.event_id);
        rows.push({endpoint, delivery: d, event: "v" + e.version + " " + e.event_type});
      }
  }
  const box = h("div", {id: "payment-deliveries"});
  if (!rows.length) replace(box, h("p", {class: "note"}, endpoints.length ?
    "No deliveries of this payment's events." : "Its organisation has no webhook endpoints."));
  else replace(box, deliveriesTable(me, rows));
  return [h("h2", null, "Webhook deliveries"), box];
}

export async function paymentPage(view, me, id) {
  replace(view, h("p", {class: "status"}, "Loading…"));
  const [doc, events] = await Promise.all([
    documentSection(id),
    getAll("/v1/payments/" + id + "/history?page[size]=1000").catch(err => {
      if (err instanceof ApiError && err.status === 404) return [];
      throw err;
    }),
  ]);
  for (const e of events) if (e.data && e.data.payment) versions.set(id + "/" + e.version, e.data.payment);
  const parts = [h("p", null, h("a", {href: "#/payments"}, "← Payments")),
                 h("h1", null, "Payment ", h("span", {class: "mono", id: "payment-id"}, id)), doc];
  if (!events.length) {
    parts.push(h("p", {class: "note"}, "No history for this id."));
    replace(view, ...parts);
    document.body.dataset.loaded = "payment";
    return null;
  }
  parts.push(...timeline(events), ...diffSection(id, events));
  const org = events[events.length - 1].organisation_id;
  const extra = h("div", null, h("p", {class: "status"}, "Loading operations and deliveries…"));
  parts.push(extra);
  replace(view, ...parts);
  try {
    replace(extra, ...(await operationsSection(events)), ...(await deliveriesSection(me, org, events)));
  } catch (err) {
    replace(extra, errorBox(err));
  }
  document.body.dataset.loaded = "payment";
  return null;
}
