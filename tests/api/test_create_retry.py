"""A create answered 5xx may still have been written: here the broker's
acknowledgement does not come (nats-server frozen by SIGSTOP) while the
publish sits in its socket, and lands once the broker runs again.  The 503
names the payment's id (Location and payment_id), and a retry sending that
id leaves exactly one payment, whichever of the two requests made it."""

import os
import signal
import subprocess
import time

from harness import (Server, check, eq, expect_error, expect_status, freeze, new_id, payment, qs,
                     sqlite_test)

NATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "broker", "nats.sh")
ASYNC = {"Prefer": "respond-async"}
SETTLE_S = 60.0


def _nats(cmd, d):
    p = subprocess.run([NATS, cmd, d], capture_output=True, timeout=60)
    check(p.returncode == 0, "nats.sh %s: %s" % (cmd, p.stderr.decode("utf-8", "replace")[-300:]))
    return p.stdout.decode().strip().splitlines()[-1] if p.stdout.strip() else ""


def _until(what, fn):
    deadline = time.monotonic() + SETTLE_S
    while True:
        r = fn()
        if r is not None:
            return r
        check(time.monotonic() < deadline, "%s: not within %.0fs" % (what, SETTLE_S))
        time.sleep(0.2)


@sqlite_test
def create_503_names_its_id_and_a_retry_with_it_makes_one(t):
    d = t.scratch("create-retry")
    url = "nats://127.0.0.1:%s" % _nats("start", d)
    store = "sqlite:" + os.path.join(d, "payments.db")
    srv = Server(t.binary, d, name="create-retry", store=store, args=["--broker", url])
    worker = Server(t.binary, d, name="create-retry-worker", store=store,
                    args=["worker", "--store", store, "--worker-id", "w1", "--broker", url],
                    listen_flag=False, store_flag=False)
    pid = int(open(os.path.join(d, "pid")).read().strip())
    frozen = False
    try:
        srv.start()
        worker.start(wait=False)
        c = srv.client()
        org = new_id()
        frozen = True  # before: a failed freeze may leave it stopped
        freeze(pid)
        r = c.post("/v1/payments", payment(org=org), headers=ASYNC)
        expect_error(r, 503, "broker_unavailable", "create while the broker does not ack")
        payment_id = r.json.get("payment_id")
        check(payment_id, "the 503 of a create names no payment_id: %s" % r.describe())
        eq(r.header("Location"), "/v1/payments/%s" % payment_id, "Location of the 503")
        os.kill(pid, signal.SIGCONT)
        frozen = False

        # The honest retry: the same payment, with the id the 503 named.
        def retry():
            r = c.post("/v1/payments", payment(org=org, pid=payment_id), headers=ASYNC)
            return r if r.status == 202 else None
        op = _until("a retried create accepted", retry).json["data"]["id"]

        def settled():
            g = c.get("/v1/operations/%s" % op)
            expect_status(g, 200, "GET of the retry's operation")
            return g.json["data"] if g.json["data"]["status"] != "pending" else None
        outcome = _until("the retry's operation applied", settled)
        check(outcome["status"] == "succeeded" or outcome.get("error_code") == "duplicate_id",
              "the retry's operation: %s" % outcome)
        lst = c.get("/v1/payments?" + qs({"filter[organisation_id]": org}))
        expect_status(lst, 200, "list of the organisation")
        eq([p["id"] for p in lst.json["data"]], [payment_id], "the organisation's payments")
        for s in (srv, worker):
            rc = s.stop()
            check(rc == 0, "%s: exit status %s: %s" % (s.name, rc, s.stderr_tail()))
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        srv.ensure_dead()
        worker.ensure_dead()
        subprocess.run([NATS, "stop", d], capture_output=True, timeout=30)


@sqlite_test
def keyed_async_create_retry_names_the_first_payment(t):
    """A keyed asynchronous create without an id: its retry, refused while
    the broker does not answer, names the payment the first attempt's
    operation creates (derived from the key), not a new one that would never
    exist and that a client retrying with it would then create beside it."""
    d = t.scratch("create-retry-keyed")
    url = "nats://127.0.0.1:%s" % _nats("start", d)
    store = "sqlite:" + os.path.join(d, "payments.db")
    srv = Server(t.binary, d, name="create-retry-keyed", store=store, args=["--broker", url])
    pid = int(open(os.path.join(d, "pid")).read().strip())
    frozen = False
    try:
        srv.start()
        c = srv.client()
        body = payment(org=new_id())
        headers = dict(ASYNC)
        headers["Idempotency-Key"] = "keyed-retry-" + new_id()
        r = c.post("/v1/payments", body, headers=headers)
        expect_status(r, 202, "keyed asynchronous create")
        first = r.json["data"]["payment_id"]
        # No worker runs: the operation stays pending, and with the broker
        # frozen the retry can neither see it nor publish.
        frozen = True  # before: a failed freeze may leave it stopped
        freeze(pid)
        r = c.post("/v1/payments", body, headers=headers)
        expect_error(r, 503, "broker_unavailable", "the retry while the broker does not answer")
        eq(r.json.get("payment_id"), first, "the payment the retry's 503 names")
        eq(r.header("Location"), "/v1/payments/%s" % first, "Location of the 503")
        os.kill(pid, signal.SIGCONT)
        frozen = False
        r = c.post("/v1/payments", body, headers=headers)
        expect_status(r, 202, "the retry once the broker answers")
        eq(r.json["data"]["payment_id"], first, "the payment of the replayed operation")
        rc = srv.stop()
        check(rc == 0, "exit status %s: %s" % (rc, srv.stderr_tail()))
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        srv.ensure_dead()
        subprocess.run([NATS, "stop", d], capture_output=True, timeout=30)
