"""Tenant isolation: another organisation's payment is invisible on every
route.  For a key limited to its organisations, GET, PUT, PATCH and DELETE
of another organisation's payment answer exactly as an unknown id does,
byte for byte apart from the request id; a body naming an organisation the
key may not act for is 403 whether or not the payment exists."""

import hashlib
import os

from harness import Server, check, eq, expect_error, expect_status, new_id, payment, test

ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SECRETS = {"alpha": "alpha-isolation-5b1e", "beta": "beta-isolation-c0d2"}
IGNORED_HEADERS = {"x-request-id", "date"}


def _server(t, name):
    d = t.scratch(name)
    path = os.path.join(d, "keys")
    with open(path, "w") as f:
        f.write("alpha %s %s\n" % (hashlib.sha256(SECRETS["alpha"].encode()).hexdigest(), ORG_A))
        f.write("beta %s %s\n" % (hashlib.sha256(SECRETS["beta"].encode()).hexdigest(), ORG_B))
    srv = Server(t.binary, d, name=name, args=["--api-keys", path])
    srv.start()
    return srv


def _as(key, extra=None):
    h = {"Authorization": "Bearer %s" % SECRETS[key]}
    h.update(extra or {})
    return h


def _answer(r, pid):
    """What a client sees of r, but the request id; pid (the id asked for)
    is written as <id> so that two ids can be compared."""
    headers = sorted((k.lower(), v.replace(pid, "<id>")) for k, v in r.headers
                     if k.lower() not in IGNORED_HEADERS)
    return r.status, headers, r.body.replace(pid.encode(), b"<id>")


def _same(c, what, method, theirs, unknown, body=None, headers=None):
    """Sends the request for another organisation's payment and for an
    unknown id; both answers must be the same.  Returns the first."""
    r1 = c.request(method, "/v1/payments/%s" % theirs, body=body, headers=headers)
    r2 = c.request(method, "/v1/payments/%s" % unknown, body=body, headers=headers)
    eq(_answer(r1, theirs), _answer(r2, unknown),
       "%s: another organisation's payment and an unknown id" % what)
    return r1


@test
def another_organisations_payment_is_unknown(t):
    srv = _server(t, "isolation")
    try:
        c = srv.client()
        r = c.post("/v1/payments", payment(org=ORG_A), headers=_as("alpha"))
        expect_status(r, 201, "alpha creates")
        pa = r.data["id"]
        unknown = new_id()
        beta = _as("beta")

        r = _same(c, "GET", "GET", pa, unknown, headers=beta)
        expect_error(r, 404, "not_found", "beta reads alpha's payment")
        r = _same(c, "GET If-None-Match", "GET", pa, unknown,
                  headers=_as("beta", {"If-None-Match": '"0"'}))
        expect_error(r, 404, "not_found", "beta revalidates alpha's payment")
        # Writes that name no organisation, or the caller's own: 404.
        for org in (None, ORG_B):
            body = payment(org=org) if org else {"data": {"attributes": {"amount": "1.00",
                                                                        "currency": "EUR"}}}
            body["data"]["version"] = 0
            if org is None:
                r = _same(c, "PUT without organisation_id", "PUT", pa, unknown, body, beta)
                check(r.status in (400, 404), "PUT without organisation_id: %s" % r.describe())
                continue
            r = _same(c, "PUT naming beta's organisation", "PUT", pa, unknown, body, beta)
            expect_error(r, 404, "not_found", "beta replaces alpha's payment in its own org")
        r = _same(c, "PATCH", "PATCH", pa, unknown,
                  {"data": {"version": 0, "attributes": {"reference": "x"}}}, beta)
        expect_error(r, 404, "not_found", "beta patches alpha's payment")
        r = _same(c, "PATCH without a version", "PATCH", pa, unknown,
                  {"data": {"attributes": {"reference": "x"}}}, beta)
        expect_error(r, 428, "version_required", "beta patches without a version")
        r = _same(c, "PATCH with a bad version", "PATCH", pa, unknown,
                  {"data": {"version": 7, "attributes": {"reference": "x"}}}, beta)
        expect_error(r, 404, "not_found", "beta patches at another version")
        key = {"Idempotency-Key": "iso-" + new_id()}
        r = _same(c, "keyed PATCH", "PATCH", pa, unknown,
                  {"data": {"version": 0, "attributes": {"reference": "y"}}},
                  _as("beta", key))
        expect_error(r, 404, "not_found", "beta's keyed PATCH")
        r = _same(c, "DELETE", "DELETE", pa, unknown, headers=beta)
        expect_error(r, 404, "not_found", "beta deletes alpha's payment")
        r = c.request("DELETE", "/v1/payments/%s?version=0" % pa, headers=beta)
        r2 = c.request("DELETE", "/v1/payments/%s?version=0" % unknown, headers=beta)
        eq(_answer(r, pa), _answer(r2, unknown), "conditional DELETE")
        expect_error(r, 404, "not_found", "beta deletes alpha's payment at its version")

        # A body naming alpha's organisation: 403 for beta, whether or not
        # the payment exists.
        body = payment(org=ORG_A)
        body["data"]["version"] = 0
        r = _same(c, "PUT naming alpha's organisation", "PUT", pa, unknown, body, beta)
        expect_error(r, 403, "forbidden", "beta's PUT naming alpha's organisation")
        r = _same(c, "PATCH naming alpha's organisation", "PATCH", pa, unknown,
                  {"data": {"version": 0, "organisation_id": ORG_A,
                            "attributes": {"reference": "z"}}}, beta)
        expect_error(r, 403, "forbidden", "beta's PATCH naming alpha's organisation")
        r1 = c.post("/v1/payments", payment(org=ORG_A, pid=pa), headers=beta)
        r2 = c.post("/v1/payments", payment(org=ORG_A, pid=unknown), headers=beta)
        eq(_answer(r1, pa), _answer(r2, unknown), "create naming alpha's organisation")
        expect_error(r1, 403, "forbidden", "beta creates in alpha's organisation")

        # Nothing beta sent changed alpha's payment.
        r = c.get("/v1/payments/%s" % pa, headers=_as("alpha"))
        expect_status(r, 200, "alpha reads its payment")
        eq(r.data["version"], 0, "version of alpha's payment")
        r = c.get("/v1/payments/%s" % unknown, headers=_as("alpha"))
        expect_error(r, 404, "not_found", "the unknown id stayed unknown")
    finally:
        srv.stop()
