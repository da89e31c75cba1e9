#!/usr/bin/python3
"""How long the console's pages take to load against a large store.

    /usr/bin/python3 tests/browser/measure_load.py --binary build/paymentd [--payments 100000]

Starts paymentd on a new SQLite store, fills it with N payments (POSTs from
16 threads on keep-alive connections, over 50 organisations and three
currencies), then loads /console/ in headless chromium several times and
prints, for each page, the median and worst time from the start of the
navigation to the page drawn with its data (the performance mark the console
sets when a page is done).  A measurement, not a test: it asserts nothing
but that the pages load.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "api"))

import harness  # noqa: E402
from harness import Server  # noqa: E402
from test_console import Browser  # noqa: E402

THREADS = 16
ORGS = [str(uuid.UUID(int=i + 1)) for i in range(50)]
CURRENCIES = ["EUR", "GBP", "USD"]


def fill(port, total):
    """POSTs total payments from THREADS threads; answers the elapsed seconds."""
    counter = iter(range(total))
    lock = threading.Lock()
    errors = []

    def worker():
        c = http.client.HTTPConnection(harness.HOST, port, timeout=30)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = json.dumps({"data": {"organisation_id": ORGS[i % len(ORGS)], "attributes": {
                "amount": "%d.%02d" % (1 + i % 5000, i % 100), "currency": CURRENCIES[i % 3],
                "payment_scheme": "FPS", "reference": "load %d" % i}}})
            c.request("POST", "/v1/payments", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                errors.append(r.status)
                break
        c.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit("fill: statuses %s" % errors[:5])
    return time.monotonic() - t0


def timed(b, hash_, section, runs):
    out = []
    for _ in range(runs):
        b.driver.get("about:blank")
        b.open(hash_)
        b.until("console:" + section, lambda: b.driver.execute_script(
            "return performance.getEntriesByName(arguments[0]).length", "console:" + section))
        out.append(b.driver.execute_script(
            "return performance.getEntriesByName(arguments[0])[0].startTime", "console:" + section))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--payments", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="paymentd-load-")
    srv = Server(os.path.abspath(args.binary), root, name="load", args=["--log-level", "warn"])
    srv.start()
    b = None
    try:
        secs = fill(srv.port, args.payments)
        print("filled %d payments in %.1fs (%.0f/s)" % (args.payments, secs, args.payments / secs))
        b = Browser(root, "http://%s:%d" % (harness.HOST, srv.port))
        first = b.driver.execute_script("return 1")  # the browser is up
        assert first == 1
        some = json.loads(srv.client().get("/v1/payments?page[size]=1").body)["data"][0]["id"]
        pages = [("payments, first page", "", "payments"),
                 ("payments, filtered (org and currency)",
                  "#/payments?filter[organisation_id]=%s&filter[currency]=GBP" % ORGS[7], "payments"),
                 ("payments, amount range", "#/payments?filter[amount][from]=100&filter[amount][to]=120",
                  "payments"),
                 ("a payment", "#/payments/%s" % some, "payments")]
        print("page load (navigation start to data drawn), %d runs, ms:" % args.runs)
        for name, hash_, section in pages:
            ms = timed(b, hash_, section, args.runs)
            print("  %-40s median %6.0f  worst %6.0f" % (name, statistics.median(ms), max(ms)))
    finally:
        if b is not None:
            b.quit()
        srv.stop()
        harness.kill_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
