"""--broker: asynchronous writes answered 202 Accepted once the broker
acknowledged them (the HTTP side; the workers' tests are in tests/broker)."""

import os
import subprocess
import time

from harness import (Server, check, create, eq, expect_error, expect_status, new_id,
                     payment, test)

NATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "broker", "nats.sh")
ASYNC = {"Prefer": "respond-async"}


def _nats(cmd, d):
    p = subprocess.run([NATS, cmd, d], capture_output=True, timeout=60)
    check(p.returncode == 0, "nats.sh %s: %s" % (cmd, p.stderr.decode("utf-8", "replace")[-300:]))
    return p.stdout.decode().strip().splitlines()[-1] if p.stdout.strip() else ""


@test
def async_writes_are_accepted_and_pending(t):
    d = t.scratch("async")
    port = _nats("start", d)
    srv = Server(t.binary, d, name="async", args=["--broker", "nats://127.0.0.1:%s" % port])
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        r = c.post("/v1/payments", payment(org=org), headers=ASYNC)
        expect_status(r, 202, "POST with Prefer: respond-async")
        op = r.json["data"]
        eq(op["type"], "operations", "type of the 202 body")
        eq(op["status"], "pending", "status of a new operation")
        eq(op["organisation_id"], org, "organisation of the operation")
        eq(r.header("Location"), "/v1/operations/%s" % op["id"], "Location of the 202")
        eq(r.json["links"]["payment"], "/v1/payments/%s" % op["payment_id"], "payment link")
        g = c.get("/v1/operations/%s" % op["id"])
        expect_status(g, 200, "GET of a pending operation")
        eq(g.json["data"]["status"], "pending", "operation status before any worker")
        expect_error(c.get("/v1/operations/%s" % new_id()), 404, "not_found", "unknown operation")
        # Validation still answers at once, and without Prefer writes stay synchronous.
        expect_error(c.post("/v1/payments", payment(org=org, amount="-1"), headers=ASYNC), 400,
                     "validation_failed", "an invalid asynchronous create")
        p = create(c, payment(org=org))
        body = payment(org=org, amount="5.00")
        expect_error(c.put("/v1/payments/%s" % p["id"], body, headers=ASYNC), 428,
                     "version_required", "asynchronous PUT without a version")
        body["data"]["version"] = 0
        expect_status(c.put("/v1/payments/%s" % p["id"], body, headers=ASYNC), 202,
                      "asynchronous PUT")
        expect_status(c.delete("/v1/payments/%s" % p["id"], headers=ASYNC), 202,
                      "asynchronous DELETE")
        expect_error(c.delete("/v1/payments/%s" % new_id(), headers=ASYNC), 404, "not_found",
                     "asynchronous DELETE of an unknown payment")
        # A write naming its organisation may follow a create not applied yet.
        expect_status(c.patch("/v1/payments/%s" % new_id(),
                              {"data": {"version": 0, "organisation_id": org,
                                        "attributes": {"reference": "early"}}}, headers=ASYNC),
                      202, "asynchronous PATCH of a payment not stored yet, naming its organisation")
        expect_error(c.patch("/v1/payments/%s" % new_id(),
                             {"data": {"version": 0, "attributes": {"reference": "early"}}},
                             headers=ASYNC), 404, "not_found",
                     "asynchronous PATCH of an unknown payment without an organisation")
        # The same Idempotency-Key publishes the same operation once.
        key = {"Idempotency-Key": "async-" + new_id()}
        body = payment(org=org, pid=new_id())
        r1 = c.post("/v1/payments", body, headers=dict(ASYNC, **key))
        r2 = c.post("/v1/payments", body, headers=dict(ASYNC, **key))
        expect_status(r2, 202, "retried asynchronous create")
        eq(r2.json["data"]["id"], r1.json["data"]["id"], "operation id of a keyed retry")
        eq(r2.header("Idempotent-Replayed"), "true", "a keyed retry is a replay")
        eq(r2.json["data"]["status"], "pending", "status of the replayed pending operation")
        # Without Prefer the write is synchronous and the broker is not asked:
        # the store's record of the key decides once (the pending operation,
        # applied later, fails with idempotency_key_in_use and writes nothing).
        r3 = c.post("/v1/payments", body, headers=key)
        expect_status(r3, 201, "synchronous retry of a pending keyed create")
        eq(r3.json["data"]["id"], body["data"]["id"], "payment of the synchronous retry")
        expect_error(c.post("/v1/payments", payment(org=org, pid=new_id()),
                            headers=dict(ASYNC, **key)), 422, "idempotency_key_reused",
                     "a pending operation's key with another body")
        # Broker away: 503 broker_unavailable within the publish timeout.
        _nats("stop", d)
        started = time.monotonic()
        r = c.post("/v1/payments", payment(org=org), headers=ASYNC)
        expect_error(r, 503, "broker_unavailable", "asynchronous create without a broker")
        check(time.monotonic() - started < 4, "503 took %.1fs" % (time.monotonic() - started))
        expect_status(c.post("/v1/payments", payment(org=org)), 201,
                      "synchronous create while the broker is away")
        srv.stop()
    finally:
        srv.ensure_dead()
        subprocess.run([NATS, "stop", d], capture_output=True, timeout=30)
