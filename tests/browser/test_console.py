#!/usr/bin/python3
"""Browser tests of the operator console, in a real browser.

    /usr/bin/python3 tests/browser/test_console.py --binary build/asan/paymentd [-k NAME] [-v]

Drives Debian's chromium (headless) through chromium-driver and
python3-selenium against the real paymentd serving /console/ itself (same
origin), on a SQLite store of its own, with --api-keys holding a key that
may write ("ops") and a read-only key ("viewer"), and a webhook receiver
(tests/webhook/receiver.py) on loopback.  The tests run in order on one
browser: sign in; filter and page; open a payment and see its timeline and a
diff; download the CSV and compare it with the API's JSON list; retry a
delivery and see the receiver get it again; the read-only key sees no write
action; the overview draws its charts; open mode needs no sign-in; the CSP
header is on the console's answers.  After every test the browser's console
log must hold no error (the one expected entry is the 401 of the page's
first GET /v1/me without a key, which is how it learns that a key is needed).
A screenshot of each page is saved under build/screenshots/.

A missing browser, driver or selenium is a failure, never a skip.  Prints
one line per failing test, then `browser: N passed, M failed`.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "api"))

import harness  # noqa: E402
from harness import Fail, Server, check, eq, new_id, payment  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RECEIVER = os.path.join(REPO, "tests", "webhook", "receiver.py")
SHOTS = os.path.join(REPO, "build", "screenshots")
WAIT = 20.0  # seconds for the page to show what a step expects (ASan builds are slow)

ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
KEYS = {"ops": ("ops-secret-5b1d9e", "*", "write"),
        "viewer": ("viewer-secret-07c2aa", "*", "read")}

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def auth(key):
    return {"Authorization": "Bearer %s" % KEYS[key][0]}


# --------------------------------------------------------------------------
# the browser

def selenium_modules():
    """The selenium pieces, or Fail naming what is missing (never a skip)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        missing.append("python3-selenium")
        webdriver = Service = By = WebDriverWait = None
    if missing:
        raise Fail("browser tests need %s (scripts/setup.sh installs chromium, chromium-driver "
                   "and python3-selenium)" % ", ".join(missing))
    return webdriver, Service, By, WebDriverWait


class Browser:
    """One headless chromium, its downloads in a folder of its own."""

    def __init__(self, workdir, base):
        webdriver, Service, self.By, self.Wait = selenium_modules()
        self.base = base
        self.downloads = os.path.join(workdir, "downloads")
        os.makedirs(self.downloads, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                  "--user-data-dir=" + os.path.join(workdir, "profile")):
            opts.add_argument(a)
        opts.add_experimental_option("prefs", {"download.default_directory": self.downloads,
                                               "download.prompt_for_download": False})
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(WAIT)
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": self.downloads})
        self.expected_401 = 0  # GET /v1/me probes without a key that the test caused
        self.key = None        # the key signed in on the server's origin

    def quit(self):
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 (a browser that died already)
            pass

    def open(self, hash_=""):
        self.driver.get(self.base + "/console/" + hash_)

    def go(self, hash_):
        self.driver.execute_script("window.location.hash = arguments[0]", hash_)

    def until(self, what, fn):
        # An element read while the page redraws it is gone (stale) or not
        # there yet: asked again at the next poll, not a failure.
        from selenium.common.exceptions import (NoSuchElementException,
                                                StaleElementReferenceException)
        try:
            return self.Wait(self.driver, WAIT, poll_frequency=0.05,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException)).until(
                lambda d: fn())
        except Exception as e:  # noqa: BLE001 (TimeoutException, or fn's own)
            raise Fail("%s: not seen within %.0fs (%s)" % (what, WAIT, type(e).__name__))

    def loaded(self, page):
        self.until("page %s loaded" % page,
                   lambda: self.driver.execute_script("return document.body.dataset.loaded") == page)

    def find(self, css):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def all(self, css):
        return self.driver.find_elements(self.By.CSS_SELECTOR, css)

    def visible(self, css):
        els = self.all(css)
        return bool(els) and els[0].is_displayed()

    def text(self, css):
        return self.find(css).text

    def fill(self, css, value):
        el = self.find(css)
        el.clear()
        el.send_keys(value)

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.driver.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def errors(self):
        """The browser log's errors since the last call, minus the expected
        401s of GET /v1/me without a key."""
        out = []
        for e in self.driver.get_log("browser"):
            if e.get("level") not in ("SEVERE", "ERROR"):
                continue
            msg = e.get("message", "")
            if "/v1/me" in msg and " 401 " in msg and self.expected_401 > 0:
                self.expected_401 -= 1
                continue
            out.append(msg)
        return out

    def sign_in(self, key):
        self.until("the sign-in form", lambda: self.visible("#signin-key"))
        self.fill("#signin-key", KEYS[key][0])
        self.find("#signin-form button[type=submit]").click()
        self.loaded("payments")
        self.key = key

    def session(self, key):
        """Signed in with key on the server's console (a test run alone with -k
        starts here)."""
        if self.key == key and self.driver.current_url.startswith(self.base + "/console/"):
            return
        if self.key is None:
            self.expected_401 += 1
            self.open()
            self.sign_in(key)
            return
        self.open("#/payments")
        self.loaded("payments")
        self.find("#sign-out").click()
        self.sign_in(key)


# --------------------------------------------------------------------------
# the world the browser sees: a server with keys, payments and a receiver

class World:
    def __init__(self, binary, root):
        self.root = root
        keys = os.path.join(root, "keys")
        with open(keys, "w") as f:
            for kid, (secret, orgs, right) in KEYS.items():
                f.write("%s %s %s %s\n" % (kid, hashlib.sha256(secret.encode()).hexdigest(), orgs, right))
        self.srv = Server(binary, root, name="console",
                          args=["--api-keys", keys, "--webhook-allow-private", "true",
                                "--webhook-retry-schedule", "0s,1s"])
        self.srv.start()
        self.c = self.srv.client()
        self.base = "http://%s:%d" % (harness.HOST, self.srv.port)
        self.receiver = None
        self.receiver_log = os.path.join(root, "receiver.log")

    def start_receiver(self):
        port_file = os.path.join(self.root, "receiver.port")
        self.control = os.path.join(self.root, "receiver.json")
        self.trust({})
        self.receiver = subprocess.Popen(
            [harness.PYTHON, RECEIVER, "--log", self.receiver_log, "--port-file", port_file,
             "--control", self.control],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.track(self.receiver)
        deadline = time.monotonic() + 10
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.monotonic() > deadline or self.receiver.poll() is not None:
                raise Fail("the webhook receiver did not start")
            time.sleep(0.05)
        return int(open(port_file).read().strip())

    def trust(self, secrets):
        """Writes the receiver's control file: answer 200, accept these secrets."""
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"secrets": secrets, "behaviour": {"status": 200}}, f)
        os.replace(tmp, self.control)

    def received(self, webhook_id):
        try:
            with open(self.receiver_log) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [x for x in lines if x.get("webhook_id") == webhook_id]

    def api(self, method, path, body=None, key="ops"):
        r = self.c.request(method, path, body, headers=auth(key))
        check(200 <= r.status < 300, "%s %s: %s" % (method, path, r.describe()))
        return r.json

    def stop(self):
        if self.receiver is not None and self.receiver.poll() is None:
            self.receiver.terminate()
            self.receiver.wait(timeout=10)
        return self.srv.stop()


def seed(w):
    """30 payments of ORG_A in EUR and GBP, 10 of ORG_B; one of them changed
    twice; an endpoint on the receiver, registered before the payment it
    delivers.  Answers (the changed payment's id, the delivered one's id)."""
    port = w.start_receiver()
    endpoint = w.api("POST", "/v1/webhooks", {"data": {
        "organisation_id": ORG_B, "url": "http://127.0.0.1:%d/hook" % port,
        "event_types": ["payment.created"], "description": "console test receiver"}})["data"]
    w.webhook_id = endpoint["id"]
    w.trust({"endpoint": endpoint["secret"]})
    time.sleep(0.3)  # the receiver reads its control file again when it changes
    for i in range(30):
        w.api("POST", "/v1/payments", payment(org=ORG_A, amount="%d.00" % (i + 1),
                                              currency="GBP" if i % 3 == 0 else "EUR",
                                              payment_scheme="FPS", reference="rent %d" % i))
    delivered = None
    for i in range(10):
        d = w.api("POST", "/v1/payments", payment(org=ORG_B, amount="5.00", currency="EUR",
                                                  reference="org b %d" % i))["data"]
        delivered = delivered or d["id"]
    changed = w.api("POST", "/v1/payments", payment(org=ORG_A, amount="99.00", currency="EUR",
                                                    reference="before"))["data"]
    p = w.api("PATCH", "/v1/payments/%s" % changed["id"],
              {"data": {"version": 0, "attributes": {"reference": "after"}}})["data"]
    w.api("PATCH", "/v1/payments/%s" % changed["id"],
          {"data": {"version": p["version"], "attributes": {"amount": "100.00"}}})
    return changed["id"], delivered


def api_list(w, params):
    """Every payment of the JSON list for these filters, following links.next."""
    out = []
    path = "/v1/payments?" + urllib.parse.urlencode(dict(params, **{"page[size]": "1000"}))
    while path:
        j = w.api("GET", path)
        out += j["data"]
        nxt = j["links"].get("next") if j["data"] else None
        path = harness.link_path(nxt) if nxt else None
    return out


# --------------------------------------------------------------------------
# the tests, in order, on one browser

@test
def csp_header(w, b):
    for path in ("/console/", "/console/js/app.js", "/console/css/console.css"):
        r = w.c.get(path)
        eq(r.status, 200, "GET %s" % path)
        csp = r.header("Content-Security-Policy") or ""
        for part in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"):
            check(part in csp, "%s: CSP %r lacks %s" % (path, csp, part))
        check("unsafe-inline" not in csp, "%s: CSP allows inline code" % path)
    html = w.c.get("/console/").body.decode()
    check("<script>" not in html and " style=" not in html, "index.html has inline script or style")


@test
def sign_in(w, b):
    b.expected_401 += 1  # the first /v1/me, without a key
    b.open()
    b.until("the sign-in form", lambda: b.visible("#signin-key"))
    check(not b.visible("#nav"), "the sections are shown before signing in")
    b.shot("signin")
    b.fill("#signin-key", "not-a-key")
    b.expected_401 += 1
    b.find("#signin-form button[type=submit]").click()
    b.until("the refusal of a wrong key", lambda: "refused" in b.text("#signin-error"))
    b.sign_in("ops")
    check("ops" in b.text("#who"), "who: %r" % b.text("#who"))
    key = b.driver.execute_script("return sessionStorage.getItem('paymentd.console.key')")
    eq(key, KEYS["ops"][0], "the key in sessionStorage")
    local = b.driver.execute_script("return localStorage.length")
    eq(local, 0, "localStorage entries (the key must stay in the tab)")
    rows = b.all("#payments-results tbody tr")
    eq(len(rows), 25, "rows of the first page")
    b.shot("payments")


@test
def filter_and_page(w, b):
    b.session("ops")
    b.go("#/payments")
    b.loaded("payments")
    b.fill("#f-filter-currency-", "GBP")
    b.find("form.filters button[type=submit]").click()
    b.until("the GBP list", lambda: "currency]=GBP" in b.driver.current_url)
    b.loaded("payments")
    want = [p["id"] for p in api_list(w, {"filter[currency]": "GBP"})]
    got = [a.text for a in b.all("#payments-results tbody td.id a")]
    eq(got, want, "the GBP payments shown")
    cur = [td.text for td in b.all("#payments-results tbody tr td:nth-child(3)")]
    check(cur and all(c == "GBP" for c in cur), "currencies shown: %r" % cur)
    # Paging: 41 payments in all, 25 a page; next, then previous.
    b.go("#/payments")
    b.loaded("payments")
    first = [a.text for a in b.all("#payments-results tbody td.id a")]
    b.find("#page-next").click()
    b.until("page 2", lambda: "page 2" in b.text("#page-status"))
    b.loaded("payments")
    second = [a.text for a in b.all("#payments-results tbody td.id a")]
    everything = [p["id"] for p in api_list(w, {})]
    eq(first + second, everything, "pages 1 and 2 against the API's list")
    check(not b.find("#page-next").is_enabled(), "next is enabled on the last page")
    b.find("#page-prev").click()
    b.until("page 1 again", lambda: "page 1" in b.text("#page-status"))
    b.loaded("payments")
    eq([a.text for a in b.all("#payments-results tbody td.id a")], first, "page 1 after previous")
    # An amount range and an organisation, through the form.
    b.go("#/payments?filter[organisation_id]=%s&filter[amount][from]=10&filter[amount][to]=12.50" % ORG_A)
    b.loaded("payments")
    want = [p["id"] for p in api_list(w, {"filter[organisation_id]": ORG_A,
                                          "filter[amount][from]": "10", "filter[amount][to]": "12.50"})]
    eq([a.text for a in b.all("#payments-results tbody td.id a")], want, "amount range")
    eq(len(want), 3, "payments of 10.00 to 12.50")


@test
def payment_timeline_and_diff(w, b):
    b.session("ops")
    b.go("#/payments")
    b.loaded("payments")
    b.fill("#jump-id", w.changed)
    b.find("form.jump button[type=submit]").click()
    b.loaded("payment")
    doc = json.loads(b.text("#payment-doc"))
    eq((doc["id"], doc["version"], doc["attributes"]["amount"]), (w.changed, 2, "100.00"),
       "the current document")
    rows = [[td.text for td in tr.find_elements(b.By.TAG_NAME, "td")]
            for tr in b.all("#timeline tbody tr")]
    history = w.api("GET", "/v1/payments/%s/history" % w.changed)["data"]
    eq([r[0] for r in rows], ["0", "1", "2"], "versions in the timeline")
    eq([r[3] for r in rows], ["ops"] * 3, "who: the API key")
    eq([r[4] for r in rows], [e["request_id"] for e in history], "request ids")
    # The diff: by default the last two versions (the amount), then 0 to 2.
    def diff_cells():
        return {r[0]: r[1:] for r in ([td.text for td in tr.find_elements(b.By.TAG_NAME, "td")]
                                      for tr in b.all("#diff-result tbody tr"))}
    b.until("the diff", lambda: b.all("#diff-result tbody tr"))
    cells = diff_cells()
    eq(cells.get("attributes.amount"), ['"99.00"', '"100.00"'], "amount 1 -> 2")
    eq(cells.get("version"), ["1", "2"], "version 1 -> 2")
    check("attributes.reference" not in cells, "reference in diff 1 -> 2: %r" % cells)
    from selenium.webdriver.support.ui import Select
    Select(b.find("#diff-from")).select_by_value("0")
    b.until("the diff 0 to 2", lambda: "attributes.reference" in diff_cells())
    cells = diff_cells()
    eq(cells["attributes.reference"], ['"before"', '"after"'], "reference 0 -> 2")
    eq(cells["attributes.amount"], ['"99.00"', '"100.00"'], "amount 0 -> 2")
    eq(cells["version"], ["0", "2"], "version 0 -> 2")
    b.shot("payment")


@test
def csv_download(w, b):
    b.session("ops")
    b.go("#/payments?filter[organisation_id]=%s&filter[currency]=EUR" % ORG_A)
    b.loaded("payments")
    for f in os.listdir(b.downloads):
        os.remove(os.path.join(b.downloads, f))
    b.find("#csv-download").click()
    path = os.path.join(b.downloads, "payments.csv")
    b.until("payments.csv downloaded", lambda: os.path.exists(path) and os.path.getsize(path) > 0
            and not any(f.endswith(".crdownload") for f in os.listdir(b.downloads)))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(io.StringIO(f.read())))
    eq(rows[0][:3], ["id", "organisation_id", "version"], "CSV header")
    want = api_list(w, {"filter[organisation_id]": ORG_A, "filter[currency]": "EUR"})
    eq([r[0] for r in rows[1:]], [p["id"] for p in want], "CSV ids against the JSON list")
    col = {name: i for i, name in enumerate(rows[0])}
    for r, p in zip(rows[1:], want):
        eq((r[col["amount"]], r[col["currency"]], r[col["reference"]], r[col["version"]]),
           (p["attributes"]["amount"], "EUR", p["attributes"]["reference"], str(p["version"])),
           "CSV row of %s" % p["id"])
    b.until("the export's status", lambda: "%d payment" % len(want) in b.text("#csv-status"))


@test
def retry_delivery(w, b):
    b.session("ops")
    events = w.api("GET", "/v1/payments/%s/history" % w.delivered)["data"]
    event_id = events[0]["id"]
    deadline = time.monotonic() + WAIT
    while not w.received(event_id):
        check(time.monotonic() < deadline, "the receiver never got event %s" % event_id)
        time.sleep(0.1)
    b.go("#/payments/%s" % w.delivered)
    b.loaded("payment")
    buttons = b.all("#payment-deliveries button.retry")
    eq(len(buttons), 1, "retry buttons of the delivered payment")
    before = len(w.received(event_id))
    buttons[0].click()
    b.until("the retry's acknowledgement", lambda: "Retry sent" in buttons[0].text)
    deadline = time.monotonic() + WAIT
    while len(w.received(event_id)) <= before:
        check(time.monotonic() < deadline, "the retried delivery never reached the receiver")
        time.sleep(0.1)
    check(all(x["valid"] for x in w.received(event_id)), "a delivery failed the receiver's checks")
    # The endpoint's pages: health and its log.
    b.go("#/webhooks")
    b.loaded("webhooks")
    row = b.text("table tbody tr")
    check("127.0.0.1" in row and "100.0%" in row, "the endpoint's health row: %r" % row)
    b.shot("webhooks")
    b.go("#/webhooks/%s" % w.webhook_id)
    b.loaded("webhook")
    check(b.all("#replay-form"), "no replay form for a key that may write")
    eq(len(b.all("button.retry")), 10, "retry buttons in the delivery log")
    b.shot("webhook")


@test
def read_only_key_sees_no_write_action(w, b):
    b.session("ops")
    b.go("#/payments")
    b.loaded("payments")
    b.find("#sign-out").click()
    b.until("signed out", lambda: b.visible("#signin-key"))
    eq(b.driver.execute_script("return sessionStorage.length"), 0, "sessionStorage after sign-out")
    b.sign_in("viewer")
    check("read only" in b.text("#who"), "who: %r" % b.text("#who"))
    b.go("#/payments/%s" % w.delivered)
    b.loaded("payment")
    check(b.all("#payment-deliveries tbody tr"), "the viewer sees no deliveries")
    eq(b.all("button.retry"), [], "retry buttons for a read-only key")
    b.go("#/webhooks/%s" % w.webhook_id)
    b.loaded("webhook")
    eq(b.all("button.retry") + b.all("#replay-form"), [], "write actions for a read-only key")
    check(b.all("tbody tr"), "the viewer sees no delivery log")


@test
def overview_draws_charts(w, b):
    b.session("ops")
    b.go("#/overview")
    b.until("five charts", lambda: len(b.all("#charts svg path.chart-line")) >= 5 and
            "Updated" in b.text("p.status"))
    for cid in ("rate", "errors", "latency", "batch", "backlog"):
        svg = b.find("#chart-%s svg" % cid)
        check(svg.get_attribute("aria-label"), "chart %s has no label" % cid)
    for _ in range(60):  # traffic for the charts to show: 20 a second for 3 s
        w.api("GET", "/v1/payments?page[size]=5")
        time.sleep(0.05)
    b.until("three points drawn", lambda: int(b.find("#charts").get_attribute("data-points") or 0) >= 3)
    rate = b.find("#chart-rate text.chart-label").text  # "max N/s": the chart's peak
    check(rate.startswith("max ") and float(rate[4:].rstrip("/s")) >= 5,
          "the request rate's peak after 20 requests a second: %r" % rate)
    latency = b.text("#chart-latency p.value")
    check("p50" in latency and "no data" not in latency, "latency: %r" % latency)
    errors = b.text("#chart-errors p.value")
    check(errors.startswith("5xx 0.0%"), "error rate: %r" % errors)
    check(b.find("#chart-rate path.chart-line").get_attribute("d").count("L") >= 2,
          "the rate line of three points: %r" % b.find("#chart-rate path.chart-line").get_attribute("d"))
    b.shot("overview")
    b.driver.set_window_size(390, 844)
    b.go("#/payments")
    b.loaded("payments")
    width = b.driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= 400, "the payments page is %dpx wide at a phone's 390px" % width)
    b.shot("payments-phone")
    b.driver.set_window_size(1280, 900)


@test
def open_mode_needs_no_sign_in(w, b):
    d = os.path.join(w.root, "open")
    os.makedirs(d)
    srv = Server(w.srv.binary, d, name="open")
    srv.start()
    try:
        srv.client().post("/v1/payments", payment(org=new_id()))
        b.driver.get("http://%s:%d/console/" % (harness.HOST, srv.port))
        b.loaded("payments")
        check(not b.visible("#signin-key"), "sign-in shown in open mode")
        check("open mode" in b.text("#who"), "who: %r" % b.text("#who"))
        eq(len(b.all("#payments-results tbody tr")), 1, "rows in open mode")
    finally:
        eq(srv.stop(), 0, "the open server's exit status")


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("-k", default="")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    root = tempfile.mkdtemp(prefix="paymentd-browser-")
    passed = failed = 0
    w = b = None
    try:
        w = World(binary, root)
        w.changed, w.delivered = seed(w)
        b = Browser(root, w.base)
    except Fail as e:
        print("FAIL setup: %s" % e)
        failed += 1
    except Exception:  # noqa: BLE001 (the browser's own errors)
        print("FAIL setup:\n%s" % traceback.format_exc())
        failed += 1
    if b is not None:
        for fn in TESTS:
            if args.k not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn(w, b)
                errs = b.errors()
                check(not errs, "the browser console has errors: %s" % errs)
                passed += 1
                if args.v:
                    print("ok %s (%.1fs)" % (fn.__name__, time.monotonic() - t0))
            except Exception as e:  # noqa: BLE001 (a test's failure, whatever it raised)
                failed += 1
                msg = str(e) if isinstance(e, Fail) else traceback.format_exc()
                print("FAIL %s: %s" % (fn.__name__, msg))
                try:
                    b.shot("FAILED-" + fn.__name__)
                except Exception:  # noqa: BLE001
                    pass
        b.quit()
    if w is not None:
        rc = w.stop()
        if rc != 0:
            print("FAIL server exit status %s: %s" % (rc, w.srv.stderr_tail()))
            failed += 1
        rep = w.srv.sanitizer_report()
        if rep:
            print("FAIL sanitizer report: %s" % rep)
            failed += 1
    harness.kill_all()
    if failed == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("kept %s" % root)
    print("browser: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
