"""A payment's history: GET /v1/payments/{id}/history and
/history/{version}.  Every write that changes a payment (create, PUT,
PATCH, DELETE; synchronous, or applied by a worker from the broker) records
exactly one event, with who made it (the API key), the request (its
X-Request-Id and Idempotency-Key), the operation of an asynchronous write,
the payment after the change (as it was, for a delete) and, for an update,
the attribute paths it changed; replays and failed writes record none.
Paging by version, a deleted payment's history, tenancy and malformed
parameters."""

import hashlib
import os
import subprocess
import time

from harness import (Server, check, create, default_store, eq, expect_error, expect_status,
                     link_path, new_id, payment, short, test, UUID_RE, TIME_RE)

NATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "broker", "nats.sh")
ASYNC = {"Prefer": "respond-async"}
ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SECRETS = {"alpha": "alpha-secret-h1st", "beta": "beta-secret-h1st", "root": "root-secret-h1st"}
APPLY_S = 30.0  # bound on the wait for a worker to apply an operation


def _as(key):
    return {"Authorization": "Bearer %s" % SECRETS[key]}


def _keys_file(d):
    path = os.path.join(d, "keys")
    with open(path, "w") as f:
        f.write("alpha %s %s\n" % (hashlib.sha256(SECRETS["alpha"].encode()).hexdigest(), ORG_A))
        f.write("beta %s %s\n" % (hashlib.sha256(SECRETS["beta"].encode()).hexdigest(), ORG_B))
        f.write("root %s *\n" % hashlib.sha256(SECRETS["root"].encode()).hexdigest())
    return path


def _history(c, pid, headers=None, what="history"):
    """Every event of pid's history, following the next links from a first
    page of 1000; fails on anything but 200."""
    events = []
    path = "/v1/payments/%s/history?page[size]=1000" % pid
    while path:
        r = c.get(path, headers=headers)
        expect_status(r, 200, "%s: GET %s" % (what, path))
        events += r.json["data"]
        nxt = r.json["links"].get("next")
        path = link_path(nxt) if nxt else None
    return events


def _version_event(c, pid, v, headers=None):
    r = c.get("/v1/payments/%s/history/%d" % (pid, v), headers=headers)
    expect_status(r, 200, "GET history/%d" % v)
    eq(r.json["links"], {"self": "/v1/payments/%s/history/%d" % (pid, v)}, "links of history/%d" % v)
    return r.json["data"]


def _check_event(e, kind, pid, org, version, payment_doc, what, actor=None, request_id=None,
                 key=None, operation=None, changes=None):
    """One event as the API renders it: every member, exactly."""
    check(isinstance(e, dict), "%s: not an object: %s" % (what, short(e)))
    eq(sorted(e), sorted(["type", "id", "event_type", "organisation_id", "payment_id", "version",
                          "occurred_at", "position", "actor", "request_id", "idempotency_key",
                          "operation_id", "data"]), "%s: members" % what)
    eq(e["type"], "events", "%s: type" % what)
    check(UUID_RE.match(e["id"]) and e["id"][14] == "7", "%s: id %r is not a UUIDv7" % (what, e["id"]))
    eq(e["event_type"], kind, "%s: event_type" % what)
    eq(e["organisation_id"], org, "%s: organisation_id" % what)
    eq(e["payment_id"], pid, "%s: payment_id" % what)
    eq(e["version"], version, "%s: version" % what)
    check(TIME_RE.match(e["occurred_at"]), "%s: occurred_at %r" % (what, e["occurred_at"]))
    check(isinstance(e["position"], int) and e["position"] > 0, "%s: position %r" % (what, e["position"]))
    eq(e["actor"], {"api_key_id": actor} if actor else None, "%s: actor" % what)
    eq(e["request_id"], request_id, "%s: request_id" % what)
    eq(e["idempotency_key"], key, "%s: idempotency_key" % what)
    eq(e["operation_id"], operation, "%s: operation_id" % what)
    want = {"payment": payment_doc}
    if kind == "payment.updated":
        want["changes"] = changes
    eq(e["data"], want, "%s: data" % what)


def _rid():
    return "req-" + new_id()


@test
def history_records_each_synchronous_write(t):
    """Create, PUT, PATCH and DELETE each record one event: the payment
    after the change, the request's id and key, an update's changes."""
    c = t.c
    org = new_id()
    rids = [_rid() for _ in range(4)]
    keys = ["hk-" + new_id(), None, "hk-" + new_id(), "hk-" + new_id()]

    def h(i):
        d = {"X-Request-Id": rids[i]}
        if keys[i]:
            d["Idempotency-Key"] = keys[i]
        return d
    body = payment(org=org, reference="first", beneficiary_party={"name": "Ann", "account_number": "1"})
    r = c.post("/v1/payments", body, headers=h(0))
    expect_status(r, 201, "create")
    eq(r.header("X-Request-Id"), rids[0], "X-Request-Id echoed")
    created = r.data
    pid = created["id"]
    put = payment(org=org, amount="12.50", reference="first",
                  beneficiary_party={"name": "Bob", "account_number": "1"})
    put["data"]["version"] = 0
    r = c.put("/v1/payments/%s" % pid, put, headers=h(1))
    expect_status(r, 200, "PUT")
    replaced = r.data
    patch = {"data": {"version": 1, "attributes": {"reference": None, "end_to_end_reference": "e2e",
                                                    "beneficiary_party": {"account_number": "2"}}}}
    r = c.patch("/v1/payments/%s" % pid, patch, headers=h(2))
    expect_status(r, 200, "PATCH")
    patched = r.data
    expect_status(c.delete("/v1/payments/%s?version=2" % pid, headers=h(3)), 204, "DELETE")
    events = _history(c, pid)
    eq([e["version"] for e in events], [0, 1, 2, 3], "versions of the history")
    _check_event(events[0], "payment.created", pid, org, 0, created, "create's event",
                 request_id=rids[0], key=keys[0])
    _check_event(events[1], "payment.updated", pid, org, 1, replaced, "PUT's event",
                 request_id=rids[1], changes=["attributes.amount", "attributes.beneficiary_party.name"])
    _check_event(events[2], "payment.updated", pid, org, 2, patched, "PATCH's event",
                 request_id=rids[2], key=keys[2],
                 changes=["attributes.beneficiary_party.account_number",
                          "attributes.end_to_end_reference", "attributes.reference"])
    _check_event(events[3], "payment.deleted", pid, org, 3, patched, "DELETE's event",
                 request_id=rids[3], key=keys[3])
    eq(len(set(e["id"] for e in events)), 4, "distinct event ids")
    pos = [e["position"] for e in events]
    eq(pos, sorted(set(pos)), "positions increase along the history")
    for e in events:
        eq(_version_event(c, pid, e["version"]), e, "history/%d" % e["version"])
    # Without an X-Request-Id the event holds the id the server made, the
    # one its answer carried.
    r = c.post("/v1/payments", payment(org=org))
    expect_status(r, 201, "create without X-Request-Id")
    made = r.header("X-Request-Id")
    check(made, "no X-Request-Id in the answer")
    eq(_history(c, r.data["id"])[0]["request_id"], made, "request_id the server made")


@test
def history_replays_and_failures_record_nothing(t):
    """A replayed Idempotency-Key, and every refused or failed write (404,
    409, 400, 422), leave the history as it was."""
    c = t.c
    org = new_id()
    key = "hk-" + new_id()
    body = payment(org=org)
    r1 = c.post("/v1/payments", body, headers={"Idempotency-Key": key, "X-Request-Id": "first-try"})
    expect_status(r1, 201, "keyed create")
    pid = r1.data["id"]
    r2 = c.post("/v1/payments", body, headers={"Idempotency-Key": key, "X-Request-Id": "retry"})
    expect_status(r2, 201, "replayed create")
    eq(r2.header("Idempotent-Replayed"), "true", "the retry is a replay")
    pkey = "hk-" + new_id()
    patch = {"data": {"version": 0, "attributes": {"reference": "once"}}}
    expect_status(c.patch("/v1/payments/%s" % pid, patch, headers={"Idempotency-Key": pkey}), 200,
                  "keyed PATCH")
    r = c.patch("/v1/payments/%s" % pid, patch, headers={"Idempotency-Key": pkey})
    expect_status(r, 200, "replayed PATCH")
    eq(r.header("Idempotent-Replayed"), "true", "the PATCH retry is a replay")
    stale = payment(org=org, amount="99.00")
    stale["data"]["version"] = 0
    expect_error(c.put("/v1/payments/%s" % pid, stale), 409, "version_conflict", "stale PUT")
    expect_error(c.patch("/v1/payments/%s" % pid, {"data": {"version": 0, "attributes": {}}}), 409,
                 "version_conflict", "stale PATCH")
    expect_error(c.delete("/v1/payments/%s?version=0" % pid), 409, "version_conflict",
                 "stale DELETE")
    expect_error(c.patch("/v1/payments/%s" % pid,
                         {"data": {"version": 1, "attributes": {"amount": "-1"}}}), 400,
                 "validation_failed", "invalid PATCH")
    expect_error(c.put("/v1/payments/%s" % pid, {"data": {"version": 1}}), 400,
                 "validation_failed", "invalid PUT")
    expect_error(c.post("/v1/payments", payment(org=org, pid=pid)), 409, "duplicate_id",
                 "create of an existing id")
    expect_error(c.post("/v1/payments", payment(org=org, amount="1.00"),
                        headers={"Idempotency-Key": key}), 422, "idempotency_key_reused",
                 "a key reused with another body")
    events = _history(c, pid)
    eq([(e["event_type"], e["version"]) for e in events],
       [("payment.created", 0), ("payment.updated", 1)], "history after replays and failures")
    eq(events[0]["request_id"], "first-try", "the create's event is the first request's")
    eq(events[1]["data"]["changes"], ["attributes.reference"], "the PATCH's changes")
    # Writes to a payment that does not exist record nothing either.
    ghost = new_id()
    missing = payment(org=org)
    missing["data"]["version"] = 0
    expect_error(c.put("/v1/payments/%s" % ghost, missing), 404, "not_found", "PUT of an unknown id")
    expect_error(c.delete("/v1/payments/%s" % ghost), 404, "not_found", "DELETE of an unknown id")
    expect_error(c.get("/v1/payments/%s/history" % ghost), 404, "not_found",
                 "history of a payment never written")
    # A delete after its payment is gone records nothing more.
    expect_status(c.delete("/v1/payments/%s" % pid), 204, "DELETE")
    expect_error(c.delete("/v1/payments/%s" % pid), 404, "not_found", "second DELETE")
    eq([e["version"] for e in _history(c, pid)], [0, 1, 2], "history after two DELETEs")


@test
def history_pages_by_version(t):
    c = t.c
    p = create(c, payment())
    pid = p["id"]
    for v in range(5):
        r = c.patch("/v1/payments/%s" % pid, {"data": {"version": v, "attributes": {"reference": "r%d" % v}}})
        expect_status(r, 200, "PATCH %d" % v)
    base = "/v1/payments/%s/history" % pid
    r = c.get(base)
    expect_status(r, 200, "first page, default size")
    eq([e["version"] for e in r.json["data"]], list(range(6)), "default page: every version, oldest first")
    eq(r.json["links"], {"self": base + "?page[size]=100"}, "links of a page without more")
    pages = []
    path = base + "?page[size]=2"
    while path:
        r = c.get(path)
        expect_status(r, 200, "GET %s" % path)
        eq(link_path(r.json["links"]["self"]), path, "self link of %s" % path)
        pages.append([e["version"] for e in r.json["data"]])
        nxt = r.json["links"].get("next")
        path = link_path(nxt) if nxt else None
        check(len(pages) < 10, "the next links never end")
    eq(pages, [[0, 1], [2, 3], [4, 5]], "pages of 2")
    r = c.get(base + "?page[size]=2&page[after]=1")
    eq([e["version"] for e in r.json["data"]], [2, 3], "page after version 1")
    eq(link_path(r.json["links"]["next"]), base + "?page[size]=2&page[after]=3", "next link")
    r = c.get(base + "?page[after]=5")
    expect_status(r, 200, "page after the last version")
    eq(r.json["data"], [], "no version after the last")
    check("next" not in r.json["links"], "a next link after the last version")
    r = c.get(base + "?page[after]=0&page[size]=1000")
    eq([e["version"] for e in r.json["data"]], [1, 2, 3, 4, 5], "page after version 0")
    expect_error(c.get(base + "/6"), 404, "not_found", "a version not made yet")


@test
def history_outlives_the_payment(t):
    """A deleted payment's history stays readable; the delete is a version
    of its own, holding the payment as it was."""
    c = t.c
    p = create(c, payment(reference="kept"))
    pid = p["id"]
    r = c.patch("/v1/payments/%s" % pid, {"data": {"version": 0, "attributes": {"reference": "last"}}})
    expect_status(r, 200, "PATCH")
    last = r.data
    expect_status(c.delete("/v1/payments/%s" % pid, headers={"If-Match": '"1"'}), 204, "DELETE")
    expect_error(c.get("/v1/payments/%s" % pid), 404, "not_found", "GET of the deleted payment")
    events = _history(c, pid)
    eq([(e["event_type"], e["version"]) for e in events],
       [("payment.created", 0), ("payment.updated", 1), ("payment.deleted", 2)],
       "history of a deleted payment")
    eq(events[2]["data"], {"payment": last}, "the deleted event holds the payment as it was")
    eq(events[2]["data"]["payment"]["version"], 1, "its payment keeps its last version")
    eq(_version_event(c, pid, 2), events[2], "history/2 of the deleted payment")
    eq(_version_event(c, pid, 0)["data"]["payment"], p, "history/0: the payment as created")
    expect_error(c.get("/v1/payments/%s/history/3" % pid), 404, "not_found", "beyond the delete")
    # An unconditional delete too.
    q = create(c, payment())
    expect_status(c.delete("/v1/payments/%s" % q["id"]), 204, "unconditional DELETE")
    e = _history(c, q["id"])[-1]
    eq((e["event_type"], e["version"], e["data"]["payment"]), ("payment.deleted", 1, q),
       "an unconditional delete's event")


@test
def history_refuses_malformed_parameters(t):
    c = t.c
    pid = create(c, payment())["id"]
    base = "/v1/payments/%s/history" % pid
    for q, field in [("page[size]=0", "page[size]"), ("page[size]=1001", "page[size]"),
                     ("page[size]=x", "page[size]"), ("page[size]=-1", "page[size]"),
                     ("page[size]=01", "page[size]"), ("page[after]=-1", "page[after]"),
                     ("page[after]=abc", "page[after]"), ("page[after]=1.0", "page[after]"),
                     ("page[after]=", "page[after]"),
                     ("page[after]=1&page[after]=2", "page[after]"),
                     ("page[size]=1&page[size]=1", "page[size]"),
                     ("page[number]=1", "page[number]"), ("filter[x]=1", "filter[x]")]:
        r = c.get(base + "?" + q)
        expect_error(r, 400, "validation_failed", "history?%s" % q)
        eq([e.get("field") for e in r.json.get("errors", [])], [field], "field named for %s" % q)
    for v in ["x", "-1", "01", "1.5", "%20", "99999999999999999999"]:
        r = c.get("%s/%s" % (base, v))
        expect_error(r, 400, "validation_failed", "history/%s" % v)
        eq([e.get("field") for e in r.json.get("errors", [])], ["version"], "field for history/%s" % v)
    expect_status(c.get(base + "?page[size]=1000&page[after]=0"), 200, "the largest page")
    expect_error(c.get("/v1/payments/not-a-uuid/history"), 400, "invalid_id", "history of a bad id")
    expect_error(c.get("/v1/payments/not-a-uuid/history/0"), 400, "invalid_id", "a bad id's version")
    expect_error(c.get("/v1/payments/%s/history/0" % new_id()), 404, "not_found",
                 "a version of an unknown payment")
    r = c.request("POST", base, {"data": {}})
    expect_error(r, 405, "method_not_allowed", "POST to a history")


@test
def history_actor_and_tenancy_with_api_keys(t):
    """With --api-keys every event names the key that made the change, and
    another organisation's key gets 404 on both routes, as for an unknown
    payment."""
    d = t.scratch("history-keys")
    srv = Server(t.binary, d, name="hkeys", args=["--api-keys", _keys_file(d)])
    srv.start()
    try:
        c = srv.client()
        r = c.post("/v1/payments", payment(org=ORG_A), headers=_as("alpha"))
        expect_status(r, 201, "create as alpha")
        pid = r.data["id"]
        r = c.patch("/v1/payments/%s" % pid, {"data": {"version": 0, "attributes": {"reference": "root"}}},
                    headers=_as("root"))
        expect_status(r, 200, "PATCH as root")
        expect_status(c.delete("/v1/payments/%s" % pid, headers=_as("alpha")), 204, "DELETE as alpha")
        events = _history(c, pid, headers=_as("alpha"))
        eq([e["actor"] for e in events],
           [{"api_key_id": "alpha"}, {"api_key_id": "root"}, {"api_key_id": "alpha"}],
           "actors of the history")
        eq(_history(c, pid, headers=_as("root")), events, "the history as root sees it")
        unknown = new_id()
        for path in ["/v1/payments/%s/history" % pid, "/v1/payments/%s/history/0" % pid,
                     "/v1/payments/%s/history/9" % pid]:
            theirs = c.get(path, headers=_as("beta"))
            expect_error(theirs, 404, "not_found", "beta: GET %s" % path)
            none = c.get(path.replace(pid, unknown), headers=_as("beta"))
            eq(theirs.body, none.body, "beta: %s answered as an unknown payment" % path)
            expect_error(c.get(path), 401, "unauthorized", "GET %s without a key" % path)
        # Another organisation's history stays hidden after a failed write too.
        r = c.post("/v1/payments", payment(org=ORG_B), headers=_as("beta"))
        expect_status(r, 201, "create as beta")
        expect_error(c.get("/v1/payments/%s/history" % r.data["id"], headers=_as("alpha")), 404,
                     "not_found", "alpha: beta's history")
        srv.stop()
        check(srv.proc.returncode == 0, "exit status %s: %s" % (srv.proc.returncode, srv.stderr_tail()))
    finally:
        srv.ensure_dead()


def _nats(cmd, d):
    p = subprocess.run([NATS, cmd, d], capture_output=True, timeout=60)
    check(p.returncode == 0, "nats.sh %s: %s" % (cmd, p.stderr.decode("utf-8", "replace")[-300:]))
    return p.stdout.decode().strip().splitlines()[-1] if p.stdout.strip() else ""


def _applied(c, op, headers):
    """The operation's outcome once a worker applied it."""
    deadline = time.monotonic() + APPLY_S
    while True:
        r = c.get("/v1/operations/%s" % op, headers=headers)
        expect_status(r, 200, "GET /v1/operations/%s" % op)
        if r.json["data"]["status"] != "pending":
            return r.json["data"]
        check(time.monotonic() < deadline, "operation %s still pending after %.0fs" % (op, APPLY_S))
        time.sleep(0.05)


@test
def history_records_asynchronous_writes(t):
    """Writes applied by a worker from the broker record one event each,
    naming the operation, the key, the request and its Idempotency-Key;
    an operation that fails, and a replayed one, record none."""
    d = t.scratch("history-async")
    urls = "nats://127.0.0.1:%s" % _nats("start", d)
    store = default_store(d, "hasync")
    srv = Server(t.binary, d, name="hasync", store=store,
                 args=["--api-keys", _keys_file(d), "--broker", urls])
    worker = Server(t.binary, d, name="hworker", store=store, listen_flag=False, store_flag=False,
                    args=["worker", "--store", store, "--worker-id", "hworker", "--broker", urls])
    try:
        srv.start()
        worker.start(wait=False)
        c = srv.client()
        alpha = dict(ASYNC, **_as("alpha"))
        key = "hk-" + new_id()
        h = dict(alpha, **{"X-Request-Id": "async-create", "Idempotency-Key": key})
        body = payment(org=ORG_A, reference="async")
        r = c.post("/v1/payments", body, headers=h)
        expect_status(r, 202, "asynchronous create")
        op_create = r.json["data"]["id"]
        pid = r.json["data"]["payment_id"]
        eq(_applied(c, op_create, alpha)["status"], "succeeded", "the create's outcome")
        r = c.post("/v1/payments", body, headers=h)
        expect_status(r, 202, "replayed asynchronous create")
        eq(r.header("Idempotent-Replayed"), "true", "the retry is a replay")
        patch = {"data": {"version": 0, "attributes": {"reference": "patched", "amount": "3.00"}}}
        r = c.patch("/v1/payments/%s" % pid, patch,
                    headers=dict(ASYNC, **dict(_as("root"), **{"X-Request-Id": "async-patch"})))
        expect_status(r, 202, "asynchronous PATCH")
        op_patch = r.json["data"]["id"]
        eq(_applied(c, op_patch, alpha)["status"], "succeeded", "the PATCH's outcome")
        # Checked against the payment as it is now, applied against it later:
        # the second of two PATCHes on version 1 fails in the worker.
        stale = {"data": {"version": 1, "attributes": {"reference": "a"}}}
        r1 = c.patch("/v1/payments/%s" % pid, stale, headers=alpha)
        r2 = c.patch("/v1/payments/%s" % pid, stale, headers=alpha)
        expect_status(r1, 202, "first PATCH on version 1")
        expect_status(r2, 202, "second PATCH on version 1")
        eq(_applied(c, r1.json["data"]["id"], alpha)["status"], "succeeded", "first PATCH")
        failed = _applied(c, r2.json["data"]["id"], alpha)
        eq((failed["status"], failed.get("error_code")), ("failed", "version_conflict"),
           "second PATCH's outcome")
        r = c.delete("/v1/payments/%s" % pid, headers=dict(alpha, **{"X-Request-Id": "async-delete"}))
        expect_status(r, 202, "asynchronous DELETE")
        op_delete = r.json["data"]["id"]
        eq(_applied(c, op_delete, alpha)["status"], "succeeded", "the DELETE's outcome")
        events = _history(c, pid, headers=_as("alpha"))
        eq([(e["event_type"], e["version"]) for e in events],
           [("payment.created", 0), ("payment.updated", 1), ("payment.updated", 2),
            ("payment.deleted", 3)], "history of the asynchronous writes")
        created = events[0]["data"]["payment"]
        eq((created["id"], created["organisation_id"], created["attributes"]["reference"]),
           (pid, ORG_A, "async"), "the created payment")
        _check_event(events[0], "payment.created", pid, ORG_A, 0, created, "async create's event",
                     actor="alpha", request_id="async-create", key=key, operation=op_create)
        updated = events[1]["data"]["payment"]
        eq((updated["version"], updated["attributes"]["reference"], updated["attributes"]["amount"]),
           (1, "patched", "3.00"), "the patched payment")
        _check_event(events[1], "payment.updated", pid, ORG_A, 1, updated, "async PATCH's event",
                     actor="root", request_id="async-patch", operation=op_patch,
                     changes=["attributes.amount", "attributes.reference"])
        eq(events[2]["operation_id"], r1.json["data"]["id"], "the applied PATCH's event")
        eq(events[2]["data"]["changes"], ["attributes.reference"], "its changes")
        eq(events[2]["request_id"], r1.header("X-Request-Id"), "the request id the server made")
        _check_event(events[3], "payment.deleted", pid, ORG_A, 3, events[2]["data"]["payment"],
                     "async DELETE's event", actor="alpha", request_id="async-delete",
                     operation=op_delete)
        expect_error(c.get("/v1/payments/%s/history" % pid, headers=_as("beta")), 404, "not_found",
                     "beta: the history of alpha's payment")
        worker.stop()
        srv.stop()
        for p in (srv, worker):
            check(p.proc.returncode == 0 and not p.sanitizer_report(),
                  "%s: exit status %s: %s" % (p.name, p.proc.returncode,
                                             p.sanitizer_report() or p.stderr_tail()))
    finally:
        worker.ensure_dead()
        srv.ensure_dead()
        subprocess.run([NATS, "stop", d], capture_output=True, timeout=30)
