// app.js: the console's entry point.  Learns who it acts as (GET /v1/me),
// asks for an API key when the server wants one, and routes the hash
// (#/payments, #/payments/<id>, #/webhooks, #/webhooks/<id>, #/overview) to
// the page that draws it into #view.  One page is shown at a time; a page
// that polls (the overview) is stopped when another replaces it.

import {ApiError, forgetKey, get, storeKey, storedKey} from "./api.js";
import {errorBox, replace} from "./dom.js";
import {paymentsPage} from "./payments.js";
import {paymentPage} from "./payment.js";
import {webhooksPage, webhookPage} from "./webhooks.js";
import {overviewPage} from "./overview.js";

const view = document.getElementById("view");
const signin = document.getElementById("signin");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signOut = document.getElementById("sign-out");

// What the current key may do: /v1/me's data ({key_id, organisations, write, open}).
let me = null;
// The shown page's stop function (or null).
let stopPage = null;

// Routes: a pattern on the hash's path and the page that draws it.
const ROUTES = [
  [/^\/payments\/([^/]+)$/, "payments", (m, q) => paymentPage(view, me, decodeURIComponent(m[1]), q)],
  [/^\/payments$/, "payments", (m, q) => paymentsPage(view, me, q)],
  [/^\/webhooks\/([^/]+)$/, "webhooks", (m, q) => webhookPage(view, me, decodeURIComponent(m[1]), q)],
  [/^\/webhooks$/, "webhooks", (m, q) => webhooksPage(view, me, q)],
  [/^\/overview$/, "overview", () => overviewPage(view, me)],
];

function splitHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/payments";
  const i = raw.indexOf("?");
  return i < 0 ? [raw, ""] : [raw.slice(0, i), raw.slice(i + 1)];
}

async function route() {
  if (!me) return;
  if (stopPage) stopPage();
  stopPage = null;
  delete document.body.dataset.loaded;
  const [path, query] = splitHash();
  for (const [re, section, draw] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of nav.querySelectorAll("a")) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    try {
      stopPage = (await draw(m, query)) || null;
      performance.mark("console:" + section);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return signedOut("The key was refused.");
      replace(view, errorBox(err));
    }
    return;
  }
  replace(view, errorBox("No such page: " + path));
}

function showSignedIn() {
  signin.hidden = true;
  nav.hidden = false;
  signOut.hidden = me.open;
  who.textContent = me.open ? "open mode (no API keys)" :
    "key " + me.key_id + (me.write ? "" : " (read only)") + " · " +
    (me.organisations === "*" ? "all organisations" : me.organisations.length + " organisation(s)");
  document.body.dataset.write = me.write ? "yes" : "no";
}

function signedOut(message) {
  me = null;
  if (stopPage) stopPage();
  stopPage = null;
  forgetKey();
  replace(view);
  nav.hidden = true;
  signOut.hidden = true;
  who.textContent = "";
  signin.hidden = false;
  document.getElementById("signin-error").textContent = message || "";
  document.getElementById("signin-key").focus();
}

// Asks /v1/me with the stored key (or none): true when the server accepts it.
async function whoAmI() {
  try {
    me = (await get("/v1/me")).data;
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    throw err;
  }
}

async function start() {
  document.getElementById("signin-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const input = document.getElementById("signin-key");
    storeKey(input.value.trim());
    input.value = "";
    if (await whoAmI()) {
      showSignedIn();
      route();
    } else {
      signedOut("That key was refused (401): check it and try again.");
    }
  });
  signOut.addEventListener("click", () => signedOut("Signed out."));
  window.addEventListener("hashchange", () => {
    route();
    document.getElementById("main").focus({preventScroll: true});
  });
  try {
    if (await whoAmI()) {
      showSignedIn();
      route();
    } else {
      signedOut(storedKey() ? "The stored key was refused." : "");
    }
  } catch (err) {
    replace(view, errorBox(err));
  }
}

start();
