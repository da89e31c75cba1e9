// overview.js: the Overview page.  Scrapes /metrics every few seconds, keeps
// the last few minutes of points, and draws each measure as a small SVG line
// chart (the latest value beside it in words, for screen readers and for
// reading): request rate, error rate, latency percentiles, write batch size
// and delivery backlog.  Stops polling when another page replaces it.

import {metricsText} from "./api.js";
import {errorBox, h, replace, s} from "./dom.js";
import {parse, point} from "./prom.js";

const EVERY_MS = 3000;
const KEEP = 100;  // points: five minutes at one per three seconds
const W = 300, H = 90, PAD = 4;

// Each chart: its title, the point members it draws, how a value reads.
const CHARTS = [
  {id: "rate", title: "Requests per second", series: ["rate"], fmt: v => v.toFixed(1) + "/s"},
  {id: "errors", title: "Error rate (% of requests)", series: ["err5xx", "err4xx"], names: ["5xx", "4xx"],
   fmt: v => v.toFixed(1) + "%"},
  {id: "latency", title: "Latency percentiles", series: ["p50", "p95", "p99"], names: ["p50", "p95", "p99"],
   fmt: v => v >= 1 ? v.toFixed(2) + " s" : (v * 1000).toFixed(v < 0.01 ? 2 : 1) + " ms"},
  {id: "batch", title: "Write batch size (writes per commit)", series: ["batch"], fmt: v => v.toFixed(1)},
  {id: "backlog", title: "Delivery backlog (pending deliveries)", series: ["backlog"], fmt: v => String(Math.round(v))},
];

function path(values, max, n) {
  let d = "";
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const x = PAD + (W - 2 * PAD) * (n > 1 ? i / (n - 1) : 1);
    const y = H - PAD - (H - 2 * PAD) * (max > 0 ? v / max : 0);
    d += (d && values[i - 1] !== null && values[i - 1] !== undefined ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
  });
  return d;
}

// A dot on a series' latest value, so that a line of one point shows too.
function lastDot(values, max, n, i) {
  const k = values.length - 1;
  if (k < 0 || values[k] === null || values[k] === undefined) return null;
  const x = PAD + (W - 2 * PAD) * (n > 1 ? k / (n - 1) : 1);
  const y = H - PAD - (H - 2 * PAD) * (max > 0 ? values[k] / max : 0);
  return s("circle", {class: "chart-dot s" + i, cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5});
}

function chart(c, points) {
  const all = c.series.map(k => points.map(p => p[k]));
  const max = Math.max(0, ...all.flat().filter(v => v !== null && v !== undefined)) * 1.1;
  const last = c.series.map(k => {
    for (let i = points.length - 1; i >= 0; i--) if (points[i][k] !== null) return points[i][k];
    return null;
  });
  const words = c.series.map((k, i) => (c.names ? c.names[i] + " " : "") +
                                       (last[i] === null ? "no data" : c.fmt(last[i]))).join(", ");
  const svg = s("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": c.title + ": " + words},
    s("title", null, c.title),
    s("rect", {class: "chart-bg", x: 0, y: 0, width: W, height: H}),
    s("line", {class: "chart-axis", x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD}),
    all.map((vals, i) => s("path", {class: "chart-line s" + i, d: path(vals, max, KEEP) || "M0 0"})),
    all.map((vals, i) => lastDot(vals, max, KEEP, i)),
    s("text", {class: "chart-label", x: PAD + 2, y: 12}, max > 0 ? "max " + c.fmt(max / 1.1) : ""));
  return h("section", {class: "card", id: "chart-" + c.id, "aria-labelledby": "chart-" + c.id + "-t"},
    h("h2", {id: "chart-" + c.id + "-t"}, c.title),
    h("p", {class: "value"}, words),
    svg,
    c.names ? h("p", {class: "legend", "aria-hidden": "true"},
                c.names.map((n, i) => h("span", {class: "k" + i}, n))) : null);
}

export async function overviewPage(view) {
  const cards = h("div", {class: "cards", id: "charts"});
  const status = h("p", {class: "status", role: "status"}, "Reading /metrics…");
  replace(view, h("h1", null, "Overview"),
    h("p", {class: "note"}, "The last five minutes of this server, from /metrics, every " + EVERY_MS / 1000 + " s."),
    status, cards);
  const points = [];
  let prev = null, prevAt = 0, timer = null, stopped = false;
  const padded = () => Array(Math.max(0, KEEP - points.length)).fill({}).concat(points);
  async function tick() {
    try {
      const now = performance.now();
      const samples = parse(await metricsText());
      if (stopped) return;
      if (prev) {
        points.push(point(prev, samples, (now - prevAt) / 1000));
        if (points.length > KEEP) points.shift();
      }
      prev = samples;
      prevAt = now;
      const shown = padded().map(p => Object.fromEntries(Object.entries(p).map(([k, v]) => [k, v])));
      for (const p of shown) for (const c of CHARTS) for (const k of c.series) if (!(k in p)) p[k] = null;
      replace(cards, CHARTS.map(c => chart(c, shown)));
      cards.dataset.points = String(points.length);
      status.textContent = points.length ? "Updated " + new Date().toLocaleTimeString() + "." : "Waiting for a second reading…";
      document.body.dataset.loaded = "overview";
    } catch (err) {
      replace(status, errorBox(err));
    }
    if (!stopped) timer = setTimeout(tick, points.length ? EVERY_MS : 1000);
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
