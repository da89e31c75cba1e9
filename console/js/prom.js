// prom.js: reading paymentd's /metrics (Prometheus text format 0.0.4) and
// turning two scrapes into the rates the overview draws.  A sample is
// {name, labels: {k: v}, value}; comments and blank lines are skipped.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parse(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(LINE);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const l of m[3].matchAll(LABEL)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    const value = m[4] === "+Inf" ? Infinity : Number(m[4]);
    out.push({name: m[1], labels, value});
  }
  return out;
}

function sum(samples, name, keep) {
  let total = 0;
  for (const s of samples) if (s.name === name && (!keep || keep(s.labels))) total += s.value;
  return total;
}

// The cumulative buckets of a histogram summed over its series: [[le, count]] by le.
function buckets(samples, name) {
  const by = new Map();
  for (const s of samples)
    if (s.name === name + "_bucket") {
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      by.set(le, (by.get(le) || 0) + s.value);
    }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

// The q-quantile of the observations between two scrapes of a histogram,
// interpolated inside its bucket (as Prometheus' histogram_quantile does); null with none.
export function quantile(q, before, after, name) {
  const b0 = new Map(buckets(before, name));
  const b1 = buckets(after, name).map(([le, c]) => [le, c - (b0.get(le) || 0)]);
  if (!b1.length) return null;
  const total = b1[b1.length - 1][1];
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, c] of b1) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = c - prevCount;
      return inBucket > 0 ? prevLe + (le - prevLe) * ((rank - prevCount) / inBucket) : le;
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

const REQ = "paymentd_http_request_duration_seconds";
const BATCH = "paymentd_store_commit_batch_size";

// What the overview charts, between scrapes before and after, dt seconds apart.
export function point(before, after, dt) {
  const count = (ss, keep) => sum(ss, REQ + "_count", keep);
  const requests = count(after) - count(before);
  const is5xx = l => Number(l.status) >= 500;
  const is4xx = l => Number(l.status) >= 400 && Number(l.status) < 500;
  const batches = sum(after, BATCH + "_count") - sum(before, BATCH + "_count");
  const writes = sum(after, BATCH + "_sum") - sum(before, BATCH + "_sum");
  return {
    rate: Math.max(0, requests) / dt,
    err5xx: requests > 0 ? (count(after, is5xx) - count(before, is5xx)) / requests * 100 : 0,
    err4xx: requests > 0 ? (count(after, is4xx) - count(before, is4xx)) / requests * 100 : 0,
    p50: quantile(0.5, before, after, REQ),
    p95: quantile(0.95, before, after, REQ),
    p99: quantile(0.99, before, after, REQ),
    batch: batches > 0 ? writes / batches : null,
    backlog: sum(after, "paymentd_webhook_pending_deliveries"),
  };
}
