"""A dependency that stops answering without going away (a process frozen by
SIGSTOP keeps its connections open and silent) holds up only the requests
that need it.  With --threads 1, a single HTTP event-loop thread: /healthz,
/metrics and every request that needs no frozen service answer at once
while requests that do are in flight; those answer 503 with Retry-After
after their timeout; after SIGCONT everything works again.

NATS is frozen under the embedded store (the asynchronous writes and
GET /v1/operations need it; reads and synchronous writes, keyed ones
included, do not); the MongoDB test double is frozen under the MongoDB
store (every payment route and /readyz need it)."""

import os
import signal
import subprocess
import threading
import time

from harness import (Double, Fail, Server, check, create, eq, expect_error, expect_status,
                     freeze, metrics_text, mongo_test, new_id, payment, sqlite_test)

NATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "broker", "nats.sh")
ASYNC = {"Prefer": "respond-async"}
AT_ONCE = 1.0      # seconds: "at once", generous for an ASan build on a busy machine
TIMED_OUT = 30.0   # seconds: a request needing the frozen service answers within this
# MongoDB timeouts for the test: its answers come sooner than with the defaults.
MONGO_FAST = "serverSelectionTimeoutMS=1000&socketTimeoutMS=2000&connectTimeoutMS=1000"


def _nats(cmd, d):
    p = subprocess.run([NATS, cmd, d], capture_output=True, timeout=60)
    check(p.returncode == 0, "nats.sh %s: %s" % (cmd, p.stderr.decode("utf-8", "replace")[-300:]))
    return p.stdout.decode().strip().splitlines()[-1] if p.stdout.strip() else ""


def _timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


class InFlight:
    """Requests sent on threads of their own (each on its own connection),
    recorded with how long each took."""

    def __init__(self, srv):
        self.srv = srv
        self.results = []  # (what, response or exception, seconds)
        self.threads = []
        self.lock = threading.Lock()

    def send(self, what, method, path, body=None, headers=None):
        def run():
            t0 = time.monotonic()
            try:
                r = self.srv.client().request(method, path, body=body, headers=headers)
            except Exception as e:  # recorded, judged by the test
                r = e
            with self.lock:
                self.results.append((what, r, time.monotonic() - t0))
        th = threading.Thread(target=run, daemon=True)
        th.start()
        self.threads.append(th)

    def wait(self, within):
        deadline = time.monotonic() + within
        for th in self.threads:
            th.join(max(0.0, deadline - time.monotonic()))
        alive = [th for th in self.threads if th.is_alive()]
        if alive:
            raise Fail("%d requests to the frozen service still unanswered after %.0fs"
                       % (len(alive), within))
        return self.results


def _expect_prompt(c, what, method, path, status, body=None, headers=None):
    r, took = _timed(c.request, method, path, body=body, headers=headers)
    expect_status(r, status, what)
    check(took < AT_ONCE, "%s took %.2fs while a service was frozen (expected under %.1fs)"
          % (what, took, AT_ONCE))
    return r


def _expect_metrics_prompt(srv):
    _body, took = _timed(metrics_text, srv.port)
    check(took < AT_ONCE, "/metrics took %.2fs while a service was frozen (expected under %.1fs)"
          % (took, AT_ONCE))


def _expect_timed_out(results, code, srv=None):
    """Each of results answered 503 code with Retry-After, in time.  A wrong
    answer's message tells when it came, and srv's log tail (when given)."""
    for what, r, took in results:
        if isinstance(r, Exception):
            raise Fail("%s: no answer (%r)" % (what, r))
        if r.status != 503 and srv is not None:
            raise Fail("%s: expected 503 %s, got %d after %.2fs: %s; server log: %s"
                       % (what, code, r.status, took, r.body[:300], srv.stderr_tail(1500)))
        expect_error(r, 503, code, what)
        check(r.header("Retry-After"), "%s: 503 without Retry-After" % what)
        check(took < TIMED_OUT, "%s: answered after %.1fs" % (what, took))


@sqlite_test
def frozen_broker_holds_up_only_broker_requests(t):
    d = t.scratch("stall-nats")
    port = _nats("start", d)
    srv = Server(t.binary, d, name="stall-nats",
                 args=["--threads", "1", "--broker", "nats://127.0.0.1:%s" % port])
    pid = int(open(os.path.join(d, "pid")).read().strip())
    frozen = False
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        p = create(c, payment(org=org))
        r = c.post("/v1/payments", payment(org=org), headers=ASYNC)
        expect_status(r, 202, "asynchronous create before the freeze")
        op = r.json["data"]["id"]

        frozen = True  # before: a failed freeze may leave it stopped
        freeze(pid)
        slow = InFlight(srv)
        for i in range(3):
            slow.send("asynchronous create %d" % i, "POST", "/v1/payments", payment(org=org),
                      ASYNC)
        slow.send("GET of a pending operation", "GET", "/v1/operations/%s" % op)
        key = {"Idempotency-Key": "stall-" + new_id()}
        slow.send("keyed asynchronous create", "POST", "/v1/payments", payment(org=org),
                  dict(ASYNC, **key))
        time.sleep(0.3)  # they are in flight, waiting on the broker

        _expect_prompt(c, "/healthz", "GET", "/healthz", 200)
        _expect_metrics_prompt(srv)
        _expect_prompt(c, "/readyz", "GET", "/readyz", 200)
        _expect_prompt(c, "GET of a payment", "GET", "/v1/payments/%s" % p["id"], 200)
        _expect_prompt(c, "list", "GET", "/v1/payments?filter[organisation_id]=%s" % org, 200)
        _expect_prompt(c, "synchronous create", "POST", "/v1/payments", 201,
                       body=payment(org=org))
        _expect_prompt(c, "keyed synchronous create", "POST", "/v1/payments", 201,
                       body=payment(org=org), headers={"Idempotency-Key": "sync-" + new_id()})
        _expect_prompt(c, "synchronous PATCH", "PATCH", "/v1/payments/%s" % p["id"], 200,
                       body={"data": {"version": 0, "attributes": {"reference": "frozen"}}})
        _expect_timed_out(slow.wait(TIMED_OUT), "broker_unavailable", srv)
        _expect_prompt(c, "/healthz after the timeouts", "GET", "/healthz", 200)

        os.kill(pid, signal.SIGCONT)
        frozen = False
        deadline = time.monotonic() + TIMED_OUT
        while True:
            r = c.post("/v1/payments", payment(org=org), headers=ASYNC)
            if r.status == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect_status(r, 202, "asynchronous create after SIGCONT")
        g = c.get("/v1/operations/%s" % r.json["data"]["id"])
        expect_status(g, 200, "GET of an operation after SIGCONT")
        eq(g.json["data"]["status"], "pending", "status of the new operation")
        rc = srv.stop()
        check(rc == 0, "exit status %s after SIGTERM: %s" % (rc, srv.stderr_tail()))
        check(srv.sanitizer_report() is None, "sanitizer: %s" % srv.sanitizer_report())
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        srv.ensure_dead()
        subprocess.run([NATS, "stop", d], capture_output=True, timeout=30)


@mongo_test
def frozen_mongodb_holds_up_only_store_requests(t):
    d = t.scratch("stall-mongo")
    dbl = Double(d).start()
    srv = Server(t.binary, d, name="stall-mongo", store=dbl.uri("stall", MONGO_FAST),
                 args=["--threads", "1"])
    frozen = False
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        p = create(c, payment(org=org))

        frozen = True  # before: a failed freeze may leave it stopped
        freeze(dbl.proc.pid)
        slow = InFlight(srv)
        slow.send("GET of a payment", "GET", "/v1/payments/%s" % p["id"])
        slow.send("list", "GET", "/v1/payments?filter[organisation_id]=%s" % org)
        slow.send("create", "POST", "/v1/payments", payment(org=org))
        slow.send("keyed create", "POST", "/v1/payments", payment(org=org),
                  {"Idempotency-Key": "stall-" + new_id()})
        slow.send("PATCH", "PATCH", "/v1/payments/%s" % p["id"],
                  {"data": {"version": 0, "attributes": {"reference": "frozen"}}})
        time.sleep(0.3)  # they are in flight, waiting on MongoDB

        _expect_prompt(c, "/healthz", "GET", "/healthz", 200)
        _expect_metrics_prompt(srv)
        _expect_prompt(c, "/v1", "GET", "/v1", 200)
        r, took = _timed(c.get, "/readyz")
        expect_error(r, 503, "store_unavailable", "/readyz while MongoDB is frozen")
        check(took < TIMED_OUT, "/readyz answered after %.1fs" % took)
        _expect_prompt(c, "/healthz after /readyz", "GET", "/healthz", 200)
        results = slow.wait(TIMED_OUT)
        _expect_timed_out([x for x in results if x[0] != "create"], "store_unavailable")
        # The create's 503 names the payment it may have written.
        for what, r, _took in results:
            if what == "create":
                expect_error(r, 503, "store_unavailable", what)
                check(r.header("Retry-After"), "create: 503 without Retry-After")
                check(r.json.get("payment_id") and r.header("Location"),
                      "create: 503 without the payment's id: %s" % r.describe())

        dbl.proc.send_signal(signal.SIGCONT)
        frozen = False
        deadline = time.monotonic() + TIMED_OUT
        while True:
            r = c.get("/v1/payments/%s" % p["id"])
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect_status(r, 200, "GET after SIGCONT")
        create(c, payment(org=org), "create after SIGCONT")
        expect_status(c.get("/readyz"), 200, "/readyz after SIGCONT")
        rc = srv.stop()
        check(rc == 0, "exit status %s after SIGTERM: %s" % (rc, srv.stderr_tail()))
        check(srv.sanitizer_report() is None, "sanitizer: %s" % srv.sanitizer_report())
    finally:
        if frozen:
            dbl.proc.send_signal(signal.SIGCONT)
        srv.ensure_dead()
        dbl.ensure_dead()
