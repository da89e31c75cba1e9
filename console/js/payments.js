// payments.js: the Payments page, the one /console/ opens on.  A form of the
// list's filters, the table of one page, cursor paging (next: the API's
// links.next; previous: the pages this tab came through), a box that jumps to
// a payment by id, and "Download CSV" of the filtered list (the API streams
// every page when asked with Accept: text/csv).  The filters and cursor live
// in the hash (#/payments?filter[...]=...&page[after]=N), so a page can be
// bookmarked and the browser's back button works.

import {blob, get, linkPath} from "./api.js";
import {errorBox, h, replace, table} from "./dom.js";

const PAGE_SIZE = 25;

// The filters the list API takes, as the form shows them.
const FILTERS = [
  {name: "filter[organisation_id]", label: "Organisation", type: "org"},
  {name: "filter[currency]", label: "Currency (e.g. EUR,GBP)", type: "text", size: 12},
  {name: "filter[payment_scheme]", label: "Scheme", type: "select",
   options: ["", "FPS", "BACS", "SEPA", "SWIFT", "CHAPS"]},
  {name: "filter[amount][from]", label: "Amount from", type: "text", inputmode: "decimal"},
  {name: "filter[amount][to]", label: "Amount to", type: "text", inputmode: "decimal"},
  {name: "filter[processing_date_from]", label: "Processing date from", type: "date"},
  {name: "filter[processing_date_to]", label: "Processing date to", type: "date"},
  {name: "filter[reference]", label: "Reference", type: "text"},
];

// Queries of the pages before the shown one (for "Previous"), and the
// filters they belong to.
let trail = [];
let trailFilters = null;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function filterParams(params) {
  const out = new URLSearchParams();
  for (const f of FILTERS) {
    const v = (params.get(f.name) || "").trim();
    if (v) out.set(f.name, v);
  }
  return out;
}

// The API keeps brackets literal in its links; so does the console's hash.
function qs(params) {
  return params.toString().replace(/%5B/g, "[").replace(/%5D/g, "]");
}

function filterInput(f, value, me) {
  const id = "f-" + f.name.replace(/[^a-z_]+/g, "-");
  let input;
  if (f.type === "select") {
    input = h("select", {id, name: f.name},
      f.options.map(o => h("option", {value: o, selected: o === value}, o || "any")));
  } else if (f.type === "org" && Array.isArray(me.organisations)) {
    input = h("select", {id, name: f.name},
      h("option", {value: ""}, "any of mine"),
      me.organisations.map(o => h("option", {value: o, selected: o === value}, o)));
  } else {
    input = h("input", {id, name: f.name, value, type: f.type === "date" ? "date" : "text",
                        inputmode: f.inputmode, size: f.size, autocomplete: "off"});
  }
  return h("div", null, h("label", {for: id}, f.label), input);
}

function filterForm(params, me) {
  const form = h("form", {class: "filters", "aria-label": "Filters"},
    FILTERS.map(f => filterInput(f, params.get(f.name) || "", me)),
    h("div", {class: "actions"},
      h("button", {type: "submit"}, "Apply"),
      h("button", {type: "button", class: "secondary", id: "filters-clear",
                   onclick: () => { window.location.hash = "#/payments"; }}, "Clear")));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) p.set(k, String(v).trim());
    trail = [];
    window.location.hash = "#/payments" + (p.toString() ? "?" + qs(p) : "");
  });
  return form;
}

function jumpBox() {
  const status = h("span", {class: "error", id: "jump-error", role: "alert"});
  const input = h("input", {id: "jump-id", name: "id", autocomplete: "off", spellcheck: "false",
                            placeholder: "payment id (UUID)"});
  const form = h("form", {class: "jump", role: "search", "aria-label": "Open a payment by id"},
    h("div", null, h("label", {for: "jump-id", class: "sr-only"}, "Payment id"), input),
    h("button", {type: "submit"}, "Open"), status);
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const id = input.value.trim();
    if (!UUID.test(id)) {
      status.textContent = "An id is a UUID (8-4-4-4-12 hex digits).";
      return;
    }
    window.location.hash = "#/payments/" + id.toLowerCase();
  });
  return form;
}

function csvButton(filters) {
  const status = h("span", {class: "status", id: "csv-status", role: "status"});
  const button = h("button", {type: "button", class: "secondary", id: "csv-download"}, "Download CSV");
  button.addEventListener("click", async () => {
    button.disabled = true;
    status.textContent = "Exporting…";
    try {
      const file = await blob("/v1/payments" + (filters.toString() ? "?" + qs(filters) : ""), "text/csv");
      const url = URL.createObjectURL(file);
      const a = h("a", {href: url, download: "payments.csv", hidden: true});
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      const text = await file.text();
      const rows = Math.max(0, text.split("\r\n").filter(Boolean).length - 1);
      status.textContent = "Downloaded payments.csv: " + rows + " payment(s).";
    } catch (err) {
      status.textContent = "Export failed: " + err.message;
    } finally {
      button.disabled = false;
    }
  });
  return h("div", null, button, " ", status);
}

function paymentRow(p) {
  const a = p.attributes || {};
  return [
    {cell: h("a", {href: "#/payments/" + p.id, class: "mono"}, p.id), class: "id"},
    {cell: a.amount || "", class: "num"},
    a.currency || "",
    a.payment_scheme || "",
    a.processing_date || "",
    a.reference || "",
    {cell: h("span", {class: "mono", title: p.organisation_id}, (p.organisation_id || "").slice(0, 8)), class: "id"},
    {cell: String(p.version), class: "num"},
  ];
}

function pager(page, query, filters) {
  const prev = h("button", {type: "button", class: "secondary", id: "page-prev",
                            disabled: trail.length === 0}, "Previous");
  const next = h("button", {type: "button", class: "secondary", id: "page-next",
                            disabled: !(page.links && page.links.next)}, "Next");
  prev.addEventListener("click", () => {
    const q = trail.pop();
    window.location.hash = "#/payments" + (q ? "?" + q : "");
  });
  next.addEventListener("click", () => {
    trail.push(query);
    const u = new URL(linkPath(page.links.next), window.location.origin);
    const p = new URLSearchParams(filters);
    const after = u.searchParams.get("page[after]");
    if (after) p.set("page[after]", after);
    window.location.hash = "#/payments?" + qs(p);
  });
  return h("nav", {class: "pager", "aria-label": "Pages"}, prev, next,
           h("span", {class: "status", id: "page-status"},
             "page " + (trail.length + 1) + " · " + page.data.length + " shown"));
}

export async function paymentsPage(view, me, query) {
  const params = new URLSearchParams(query);
  const filters = filterParams(params);
  if (trailFilters !== qs(filters)) {
    trail = [];
    trailFilters = qs(filters);
  }
  const api = new URLSearchParams(filters);
  api.set("page[size]", String(PAGE_SIZE));
  if (params.get("page[after]")) api.set("page[after]", params.get("page[after]"));
  const results = h("div", {id: "payments-results", "aria-busy": "true"}, h("p", {class: "status"}, "Loading…"));
  replace(view,
    h("h1", null, "Payments"),
    filterForm(params, me),
    h("div", {class: "toolbar"}, jumpBox(), h("div", {class: "grow"}), csvButton(filters)),
    results);
  try {
    const page = await get("/v1/payments?" + qs(api));
    const rows = page.data.map(paymentRow);
    replace(results,
      rows.length ? table("Payments", ["Id", "Amount", "Currency", "Scheme", "Processing date",
                                       "Reference", "Organisation", "Version"], rows)
        : h("p", {class: "note"}, "No payments match these filters."),
      pager(page, qs(params), filters));
  } catch (err) {
    replace(results, errorBox(err));
  }
  results.setAttribute("aria-busy", "false");
  document.body.dataset.loaded = "payments";
  return null;
}
