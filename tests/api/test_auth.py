"""--api-keys: bearer authentication and tenant isolation."""

import hashlib
import os

from harness import (Server, check, eq, expect_error, expect_status, new_id, payment, run_binary,
                     short, test)

ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SECRETS = {"alpha": "alpha-secret-1f0c", "beta": "beta-secret-77aa", "root": "root-secret-9e3d"}


def _keys_server(t, name):
    d = t.scratch(name)
    path = os.path.join(d, "keys")
    with open(path, "w") as f:
        f.write("# id  sha256(secret)  organisations\n")
        f.write("alpha %s %s\n" % (hashlib.sha256(SECRETS["alpha"].encode()).hexdigest(), ORG_A))
        f.write("beta %s %s\n" % (hashlib.sha256(SECRETS["beta"].encode()).hexdigest(), ORG_B))
        f.write("root %s *\n" % hashlib.sha256(SECRETS["root"].encode()).hexdigest())
    srv = Server(t.binary, d, name=name, args=["--api-keys", path])
    srv.start()
    return srv


def _as(key):
    return {"Authorization": "Bearer %s" % SECRETS[key]}


@test
def api_keys_required(t):
    srv = _keys_server(t, "keys401")
    try:
        c = srv.client()
        for method, path in [("GET", "/v1/payments"), ("GET", "/v1"),
                             ("GET", "/v1/payments/%s" % new_id()),
                             ("DELETE", "/v1/payments/%s" % new_id())]:
            for headers in [None, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Basic %s" % SECRETS["root"]},
                            {"Authorization": "Bearer"}]:
                r = c.request(method, path, headers=headers)
                expect_error(r, 401, "unauthorized", "%s %s with %r" % (method, path, headers))
                check((r.header("WWW-Authenticate") or "").startswith("Bearer"),
                      "401 without WWW-Authenticate: Bearer")
        r = c.post("/v1/payments", payment(org=ORG_A))
        expect_error(r, 401, "unauthorized", "POST without a key")
        for path in ["/healthz", "/readyz"]:
            expect_status(c.get(path), 200, "%s needs no key" % path)
        # A bad id with no key: the key is checked first.
        expect_error(c.get("/v1/payments/not-a-uuid"), 401, "unauthorized", "bad id, no key")
    finally:
        srv.stop()
    log = open(srv.stderr_path, encoding="utf-8", errors="replace").read()
    for secret in SECRETS.values():
        check(secret not in log, "a secret appears in the log")


@test
def tenants_are_isolated(t):
    srv = _keys_server(t, "tenants")
    try:
        c = srv.client()
        r = c.post("/v1/payments", payment(org=ORG_A), headers=_as("alpha"))
        expect_status(r, 201, "alpha creates in its organisation")
        pa = r.data["id"]
        expect_error(c.post("/v1/payments", payment(org=ORG_B), headers=_as("alpha")), 403,
                     "forbidden", "alpha creates in another organisation")
        r = c.post("/v1/payments", payment(org=ORG_B), headers=_as("beta"))
        expect_status(r, 201, "beta creates in its organisation")
        pb = r.data["id"]
        # Reading another tenant's payment: 404, as if it did not exist.
        expect_error(c.get("/v1/payments/%s" % pa, headers=_as("beta")), 404, "not_found",
                     "beta reads alpha's payment")
        expect_status(c.get("/v1/payments/%s" % pa, headers=_as("alpha")), 200, "alpha reads")
        expect_status(c.get("/v1/payments/%s" % pa, headers=_as("root")), 200, "root reads")
        # Changing it: 403 for a body naming alpha's organisation, else 404 as if it did
        # not exist.
        body = payment(org=ORG_A)
        body["data"]["version"] = 0
        expect_error(c.put("/v1/payments/%s" % pa, body, headers=_as("beta")), 403, "forbidden",
                     "beta replaces alpha's payment")
        expect_error(c.patch("/v1/payments/%s" % pa, {"data": {"version": 0}},
                             headers=_as("beta")), 404, "not_found", "beta patches")
        expect_error(c.delete("/v1/payments/%s" % pa, headers=_as("beta")), 404, "not_found",
                     "beta deletes alpha's payment")
        expect_status(c.get("/v1/payments/%s" % pa, headers=_as("alpha")), 200,
                      "alpha's payment survived")
        # Lists hold only the caller's organisations.
        r = c.get("/v1/payments", headers=_as("beta"))
        expect_status(r, 200, "beta lists")
        ids = [p["id"] for p in r.json["data"]]
        check(pb in ids and pa not in ids, "beta's list: %s" % short(ids))
        check(all(p["organisation_id"] == ORG_B for p in r.json["data"]),
              "beta's list holds another organisation")
        r = c.get("/v1/payments?filter[organisation_id]=%s" % ORG_A, headers=_as("beta"))
        expect_status(r, 200, "beta filters on alpha's organisation")
        eq(r.json["data"], [], "beta's list filtered on alpha's organisation")
        check(ORG_A in r.json["links"]["self"],
              "the links of a filtered-out list drop the filter: %s" % r.json["links"])
        r = c.get("/v1/payments", headers=_as("root"))
        ids = [p["id"] for p in r.json["data"]]
        check(pa in ids and pb in ids, "root's list lacks a payment: %s" % short(ids))
        # Deleting one's own still works, and an unknown id is 404 for a limited key.
        expect_status(c.delete("/v1/payments/%s" % pb, headers=_as("beta")), 204, "beta deletes")
        expect_error(c.delete("/v1/payments/%s" % new_id(), headers=_as("beta")), 404,
                     "not_found", "beta deletes an unknown id")
    finally:
        srv.stop()


@test
def open_mode_warns_and_bad_key_files_fail(t):
    d = t.scratch("openwarn")
    srv = Server(t.binary, d, name="open")
    srv.start()
    srv.stop()
    log = open(srv.stderr_path, encoding="utf-8", errors="replace").read()
    check("api-keys" in log and '"warn"' in log, "no warning about running open: %s" % log[:500])
    bad = os.path.join(d, "bad-keys")
    with open(bad, "w") as f:
        f.write("alpha nothex *\n")
    rc, out, err = run_binary(t.binary, ["--api-keys", bad, "--listen", "127.0.0.1:0",
                                         "--store", "sqlite:%s/p.db" % d])
    check(rc != 0, "a malformed key file must stop the server (rc %d)" % rc)
    eq(len(err.strip().splitlines()), 1, "lines on stderr for a bad key file")
    check("bad-keys:1" in err, "the message should name the file and line: %r" % err)


@test
def rate_limit_per_caller(t):
    d = t.scratch("ratelimit")
    srv = Server(t.binary, d, name="ratelimit", args=["--rate-limit", "5/s"])
    srv.start()
    try:
        c = srv.client()
        codes = [c.get("/v1/payments?page[size]=1").status for _ in range(12)]
        check(codes.count(200) >= 5 and 429 in codes,
              "12 quick requests at 5/s: statuses %s" % codes)
        r = c.get("/v1/payments?page[size]=1")
        if r.status == 429:
            expect_error(r, 429, "rate_limited", "over the rate")
            check((r.header("Retry-After") or "").isdigit(), "429 without a Retry-After")
        for _ in range(10):
            expect_status(c.get("/healthz"), 200, "/healthz is never limited")
    finally:
        srv.stop()
    # Failed authentication counts against the address: guessing is limited.
    d2 = t.scratch("guessrl")
    path = os.path.join(d2, "keys")
    with open(path, "w") as f:
        f.write("alpha %s %s\n" % (hashlib.sha256(SECRETS["alpha"].encode()).hexdigest(), ORG_A))
    srv = Server(t.binary, d2, name="guessrl", args=["--api-keys", path, "--rate-limit", "3/s"])
    srv.start()
    try:
        c = srv.client()
        codes = [c.get("/v1/payments", headers={"Authorization": "Bearer guess%d" % i}).status
                 for i in range(10)]
        check(401 in codes and 429 in codes, "10 quick wrong keys at 3/s: %s" % codes)
    finally:
        srv.stop()
    rc, out, err = run_binary(t.binary, ["--rate-limit", "fast"])
    check(rc != 0 and "--rate-limit" in err, "a bad --rate-limit must stop the server: %r" % err)
