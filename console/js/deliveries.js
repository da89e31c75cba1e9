// deliveries.js: webhook deliveries as the payment and endpoint pages show
// them: a table of deliveries (endpoint, event, status, attempts, last
// attempt) with a Retry button per delivery only for a key that may write
// (POST /v1/webhooks/{id}/deliveries/{did}/retry).

import {post} from "./api.js";
import {badge, h, table, when} from "./dom.js";

// An attempt's outcome in words: its HTTP status, or the error that stopped it.
export function failureText(a) {
  return a ? (a.status_code ? "HTTP " + a.status_code : a.error || "error") : "none";
}

function lastAttempt(d) {
  const a = d.attempts && d.attempts.length ? d.attempts[d.attempts.length - 1] : null;
  if (!a) return "none yet";
  return h("span", null, failureText(a), " · ", when(a.at));
}

// Every attempt of a delivery, folded.
function attemptsList(d) {
  if (!d.attempts || !d.attempts.length) return "0";
  return h("details", {class: "attempts"}, h("summary", null, String(d.attempts.length)),
    h("ol", null, d.attempts.map(a => h("li", null, failureText(a), " · ", when(a.at),
      a.latency_ms !== undefined && a.latency_ms !== null ? " · " + a.latency_ms + " ms" : ""))));
}

function retryButton(endpoint, d, onRetried) {
  const b = h("button", {type: "button", class: "secondary retry", "data-delivery": d.id,
                         "aria-label": "Retry delivery " + d.id}, "Retry");
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await post("/v1/webhooks/" + endpoint.id + "/deliveries/" + d.id + "/retry");
      b.textContent = "Retry sent";
      if (onRetried) onRetried();
    } catch (err) {
      b.textContent = "Retry failed: " + err.message;
      b.disabled = false;
    }
  });
  return b;
}

// rows: [{endpoint, delivery, event (a label of the event)}]; withAttempts
// lists each attempt (the endpoint's log) rather than only their count.
export function deliveriesTable(me, rows, onRetried, withAttempts) {
  const headers = ["Endpoint", "Event", "Status", "Attempts", "Last attempt"];
  if (me.write) headers.push("Action");
  return table("Deliveries", headers, rows.map(({endpoint, delivery: d, event}) => {
    const cells = [
      h("a", {href: "#/webhooks/" + endpoint.id}, endpoint.url),
      {cell: event || d.event_id, class: "mono"},
      badge(d.status),
      withAttempts ? attemptsList(d) : {cell: String(d.attempts ? d.attempts.length : 0), class: "num"},
      lastAttempt(d),
    ];
    if (me.write) cells.push(retryButton(endpoint, d, onRetried));
    return cells;
  }));
}
