"""Idempotency-Key: safe retries of POST, PUT, PATCH and DELETE."""

import hashlib
import os
import threading
import time
import uuid

from harness import (Server, check, create, eq, expect_error, expect_status, new_id, payment,
                     short, test)


def _key():
    return "k-" + str(uuid.uuid4())


def _count(c, org):
    r = c.get("/v1/payments?filter[organisation_id]=%s&page[size]=1000" % org)
    expect_status(r, 200, "list")
    return len(r.json["data"])


@test
def idempotent_create_replays(t):
    c = t.c
    org = new_id()
    key = _key()
    body = payment(org=org)
    r1 = c.post("/v1/payments", body, headers={"Idempotency-Key": key})
    expect_status(r1, 201, "first create with a key")
    check(r1.header("Idempotent-Replayed") is None, "a first answer marked as a replay")
    r2 = c.post("/v1/payments", body, headers={"Idempotency-Key": key})
    expect_status(r2, 201, "retried create")
    eq(r2.header("Idempotent-Replayed"), "true", "Idempotent-Replayed on the retry")
    eq(r2.body, r1.body, "replayed body")
    eq(r2.header("Location"), r1.header("Location"), "replayed Location")
    eq(r2.header("ETag"), r1.header("ETag"), "replayed ETag")
    eq(_count(c, org), 1, "payments after a retried create")
    # Same key, another request: 422, and nothing happens.
    other = payment(org=org, amount="11.00")
    expect_error(c.post("/v1/payments", other, headers={"Idempotency-Key": key}), 422,
                 "idempotency_key_reused", "same key, other body")
    expect_error(c.post("/v1/payment", body, headers={"Idempotency-Key": key}), 422,
                 "idempotency_key_reused", "same key, other path")
    eq(_count(c, org), 1, "payments after a reused key")


@test
def idempotency_key_syntax(t):
    for bad in ["", "a" * 256, "caf\u00e9", "with space", "tab\there"]:
        r = t.c.post("/v1/payments", payment(),
                     headers={"Idempotency-Key": bad.encode("utf-8").decode("latin-1")})
        expect_error(r, 400, "bad_request", "Idempotency-Key %r" % short(bad, 20))
    expect_status(t.c.post("/v1/payments", payment(), headers={"Idempotency-Key": "a" * 255}),
                  201, "a 255-character key")


@test
def rejected_requests_store_nothing(t):
    org = new_id()
    key = _key()
    bad = payment(org=org, amount="-1")
    expect_error(t.c.post("/v1/payments", bad, headers={"Idempotency-Key": key}), 400,
                 "validation_failed", "invalid create with a key")
    good = payment(org=org)
    r = t.c.post("/v1/payments", good, headers={"Idempotency-Key": key})
    expect_status(r, 201, "valid create with the key a rejected request used")
    check(r.header("Idempotent-Replayed") is None, "the valid create was a replay")
    # A write refused by the store (duplicate id) stores nothing either.
    d = create(t.c, payment(org=org))
    key2 = _key()
    dup = payment(org=org, pid=d["id"])
    expect_error(t.c.post("/v1/payments", dup, headers={"Idempotency-Key": key2}), 409,
                 "duplicate_id", "duplicate with a key")
    expect_error(t.c.post("/v1/payments", dup, headers={"Idempotency-Key": key2}), 409,
                 "duplicate_id", "the same duplicate again: decided again, not replayed")


@test
def idempotent_update_and_delete(t):
    c = t.c
    d = create(c)
    pid = d["id"]
    key = _key()
    body = payment(org=d["organisation_id"], amount="12.00")
    body["data"]["version"] = 0
    r1 = c.put("/v1/payments/%s" % pid, body, headers={"Idempotency-Key": key})
    expect_status(r1, 200, "PUT with a key")
    r2 = c.put("/v1/payments/%s" % pid, body, headers={"Idempotency-Key": key})
    expect_status(r2, 200, "retried PUT")
    eq(r2.header("Idempotent-Replayed"), "true", "replayed PUT")
    eq(r2.body, r1.body, "replayed PUT body")
    eq(c.get("/v1/payments/%s" % pid).data["version"], 1, "version after a retried PUT")
    key = _key()
    patch = {"data": {"version": 1, "attributes": {"reference": "retried"}}}
    expect_status(c.patch("/v1/payments/%s" % pid, patch, headers={"Idempotency-Key": key}), 200,
                  "PATCH with a key")
    r = c.patch("/v1/payments/%s" % pid, patch, headers={"Idempotency-Key": key})
    expect_status(r, 200, "retried PATCH")
    eq(r.header("Idempotent-Replayed"), "true", "replayed PATCH")
    eq(c.get("/v1/payments/%s" % pid).data["version"], 2, "version after a retried PATCH")
    key = _key()
    expect_status(c.delete("/v1/payments/%s" % pid, headers={"Idempotency-Key": key}), 204,
                  "DELETE with a key")
    r = c.delete("/v1/payments/%s" % pid, headers={"Idempotency-Key": key})
    expect_status(r, 204, "retried DELETE is replayed, not 404")
    eq(r.header("Idempotent-Replayed"), "true", "replayed DELETE")
    expect_error(c.delete("/v1/payments/%s?version=2" % pid, headers={"Idempotency-Key": key}),
                 422, "idempotency_key_reused", "same key, other query")


@test
def concurrent_requests_with_one_key(t):
    org = new_id()
    key = _key()
    body = payment(org=org)
    results = []
    lock = threading.Lock()

    def worker():
        r = t.c.post("/v1/payments", body, headers={"Idempotency-Key": key})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    firsts = [r for r in results if r.status == 201 and r.header("Idempotent-Replayed") is None]
    replays = [r for r in results if r.status == 201 and r.header("Idempotent-Replayed") == "true"]
    in_use = [r for r in results if r.status == 409]
    eq(len(firsts), 1, "first answers among 12 concurrent requests with one key")
    eq(len(firsts) + len(replays) + len(in_use), 12, "statuses %s" % [r.status for r in results])
    for r in in_use:
        expect_error(r, 409, "idempotency_key_in_use", "concurrent request")
    for r in replays:
        eq(r.body, firsts[0].body, "replay of the concurrent create")
    eq(_count(t.c, org), 1, "payments made by 12 concurrent requests with one key")


@test
def keys_are_scoped_per_api_key_and_survive_restart(t):
    d = t.scratch("idemscope")
    path = os.path.join(d, "keys")
    with open(path, "w") as f:
        for name in ["one", "two"]:
            f.write("%s %s *\n" % (name, hashlib.sha256(name.encode()).hexdigest()))
    srv = Server(t.binary, d, name="idemscope", args=["--api-keys", path])
    srv.start()
    try:
        c = srv.client()
        org = new_id()
        key = _key()
        r1 = c.post("/v1/payments", payment(org=org),
                    headers={"Idempotency-Key": key, "Authorization": "Bearer one"})
        expect_status(r1, 201, "key one")
        r2 = c.post("/v1/payments", payment(org=org, amount="3.00"),
                    headers={"Idempotency-Key": key, "Authorization": "Bearer two"})
        expect_status(r2, 201, "same idempotency key under another API key")
        check(r2.header("Idempotent-Replayed") is None, "scopes leaked into each other")
        srv.stop()
        srv.start()
        c = srv.client()
        r3 = c.post("/v1/payments", payment(org=org),
                    headers={"Idempotency-Key": key, "Authorization": "Bearer one"})
        expect_status(r3, 201, "retry after a restart")
        eq(r3.header("Idempotent-Replayed"), "true", "replay after a restart")
        eq(r3.body, r1.body, "body replayed after a restart")
    finally:
        srv.stop()


@test
def records_expire_after_the_ttl(t):
    d = t.scratch("idemttl")
    srv = Server(t.binary, d, name="idemttl", args=["--idempotency-ttl", "1s"])
    srv.start()
    try:
        c = srv.client()
        key = _key()
        body = payment()
        expect_status(c.post("/v1/payments", body, headers={"Idempotency-Key": key}), 201,
                      "create with a 1 s TTL")
        r = c.post("/v1/payments", body, headers={"Idempotency-Key": key})
        eq(r.header("Idempotent-Replayed"), "true", "replay within the TTL")
        deadline = time.monotonic() + 5
        replayed = True
        while replayed and time.monotonic() < deadline:
            time.sleep(0.3)
            r = c.post("/v1/payments", body, headers={"Idempotency-Key": key})
            expect_status(r, 201, "create after the TTL")
            replayed = r.header("Idempotent-Replayed") == "true"
        check(not replayed, "the record was never purged")
    finally:
        srv.stop()
