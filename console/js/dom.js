// dom.js: building the page from data without HTML strings.  Every text the
// API returns reaches the page as a text node (never innerHTML), so nothing a
// payment holds can run as script; attributes are set one by one, never a
// style attribute (the CSP forbids inline styles: classes only).

const SVG_NS = "http://www.w3.org/2000/svg";

// Appends children (strings, nodes, arrays of them; null and false skipped).
function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

// Sets attributes: "class", "text", on<event> handlers, booleans as present
// or absent, anything else as an attribute.
function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "style") throw new Error("inline styles are forbidden by the CSP");
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  return el;
}

// h("a", {href: "#/x"}, "text", child...): an HTML element.
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

// s("path", {d: ...}): an SVG element.
export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

// Replaces every child of el with children.
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A table: headers (strings) and rows (arrays of cells: a node, a string, or
// {cell, class} for a classed cell); caption names it for screen readers.
export function table(caption, headers, rows, rowClass) {
  const body = h("tbody");
  rows.forEach((row, i) => {
    const tr = h("tr", {class: rowClass ? rowClass(i) : null});
    for (const c of row) {
      if (c && typeof c === "object" && "cell" in c) tr.appendChild(h("td", {class: c.class}, c.cell));
      else tr.appendChild(h("td", null, c));
    }
    body.appendChild(tr);
  });
  return h("div", {class: "table-wrap"},
    h("table", null,
      h("caption", {class: "sr-only"}, caption),
      h("thead", null, h("tr", null, headers.map(t => h("th", {scope: "col"}, t)))),
      body));
}

// A time as the operator's local time, with the exact UTC value as a title.
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h("time", {datetime: iso, title: iso}, d.toLocaleString());
}

// A status badge (the word is the content: colour is never the only sign).
export function badge(word, kind) {
  return h("span", {class: "badge " + (kind || word)}, word);
}

// An error as a page can show it.
export function errorBox(err) {
  return h("p", {class: "error", role: "alert"}, err && err.message ? err.message : String(err));
}
