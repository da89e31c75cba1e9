"""Webhook endpoints over HTTP (issue "Webhooks": Endpoints, Seeing and
repairing deliveries, Security): registration and its validation, versions,
the secret shown on creation and rotation only, the per-organisation limit,
lists and their paging, SSRF refusal at registration, tenancy on every
route, the deliveries list, retry and replay.  Delivery itself is tested
elsewhere (test_webhook_delivery*).  Servers run with
--webhook-allow-private true unless the case is about refusal."""

import contextlib
import hashlib
import os
import re
import time

from harness import (Server, check, eq, expect_error, expect_status,
                     expect_validation, link_path, new_id, payment, qs, test)

ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
KEYS = {"alpha": "alpha-webhooks-7c1d", "beta": "beta-webhooks-2e9f", "root": "root-webhooks-a41b"}
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]+=*$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
URL = "http://127.0.0.1:9/hook"
PRIVATE = ["--webhook-allow-private", "true"]
PUBLIC_FIELDS = {"type", "id", "version", "organisation_id", "url", "event_types", "description",
                 "status", "disabled_reason", "created_on", "modified_on"}


@contextlib.contextmanager
def _server(t, name, args=PRIVATE, keys=False):
    """A server of the test's own for the with block, stopped after it with
    exit status 0 and no sanitizer report; killed when the block raised."""
    d = t.scratch(name)
    argv = list(args)
    if keys:
        path = os.path.join(d, "keys")
        with open(path, "w") as f:
            f.write("alpha %s %s\n" % (hashlib.sha256(KEYS["alpha"].encode()).hexdigest(), ORG_A))
            f.write("beta %s %s\n" % (hashlib.sha256(KEYS["beta"].encode()).hexdigest(), ORG_B))
            f.write("root %s *\n" % hashlib.sha256(KEYS["root"].encode()).hexdigest())
        argv += ["--api-keys", path]
    srv = Server(t.binary, d, name=name, args=argv)
    srv.start()
    try:
        yield srv
        eq(srv.stop(), 0, "%s's exit status after SIGTERM" % name)
        rep = srv.sanitizer_report()
        check(rep is None, "%s: sanitizer report: %s" % (name, rep))
    finally:
        srv.ensure_dead()


def _as(key):
    return {"Authorization": "Bearer %s" % KEYS[key]} if key else None


def _body(org=None, url=URL, types=("*",), description=None, **extra):
    d = {"organisation_id": org or new_id(), "url": url, "event_types": list(types)}
    if description is not None:
        d["description"] = description
    d.update(extra)
    return {"data": d}


def _create(c, what="register", key=None, **kw):
    r = c.post("/v1/webhooks", _body(**kw), headers=_as(key))
    expect_status(r, 201, what)
    return r.data


def _check_endpoint(d, what, secret):
    """The answer's data: every public member, and a secret only when asked."""
    want = PUBLIC_FIELDS | ({"secret"} if secret else set())
    eq(set(d), want, "%s: data's members" % what)
    eq(d["type"], "webhooks", "%s: type" % what)
    check(TIME_RE.match(d["created_on"]) and TIME_RE.match(d["modified_on"]),
          "%s: times %r, %r" % (what, d["created_on"], d["modified_on"]))
    if secret:
        check(SECRET_RE.match(d["secret"]), "%s: secret %r" % (what, d["secret"]))
        # whsec_ + base64 of 24 to 64 random bytes (32 here: 44 characters).
        check(24 <= (len(d["secret"]) - 6) * 3 // 4 - d["secret"].count("=") <= 64,
              "%s: secret of %d characters" % (what, len(d["secret"])))


def _no_secret(r, secrets, what):
    check("secret" not in (r.data or {}), "%s: a secret member in %s" % (what, r.describe()))
    for s in secrets:
        check(s.encode() not in r.body, "%s: a secret in the answer" % what)


@test
def webhooks_register_fetch_patch_delete(t):
    with _server(t, "wh_crud") as srv:
        c = srv.client()
        org = new_id()
        r = c.post("/v1/webhooks", _body(org=org, types=["payment.created", "payment.deleted"],
                                         description="ledger sync"))
        expect_status(r, 201, "register")
        d = r.data
        _check_endpoint(d, "register", secret=True)
        eq((d["version"], d["organisation_id"], d["url"], d["event_types"], d["description"],
            d["status"], d["disabled_reason"]),
           (0, org, URL, ["payment.created", "payment.deleted"], "ledger sync", "enabled", None),
           "register: the endpoint")
        wid = d["id"]
        check(re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-", wid), "id %r is no UUIDv7" % wid)
        eq(link_path(r.header("Location")), "/v1/webhooks/%s" % wid, "Location")
        eq(r.json["links"], {"self": "/v1/webhooks/%s" % wid,
                             "deliveries": "/v1/webhooks/%s/deliveries" % wid}, "links")

        r = c.get("/v1/webhooks/%s" % wid)
        expect_status(r, 200, "fetch")
        _check_endpoint(r.data, "fetch", secret=False)
        eq({k: v for k, v in r.data.items()}, {k: v for k, v in d.items() if k != "secret"},
           "fetch: the endpoint as registered")
        eq(r.header("ETag"), '"0"', "fetch: ETag")
        expect_error(c.get("/v1/webhooks/%s" % new_id()), 404, "not_found", "unknown id")
        expect_error(c.get("/v1/webhooks/nope"), 400, "invalid_id", "malformed id")

        # PATCH: a merge patch naming the version read.
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 0, "description": None,
                                                       "url": "http://127.0.0.1:9/other",
                                                       "event_types": ["*"]}})
        expect_status(r, 200, "patch")
        _check_endpoint(r.data, "patch", secret=False)
        eq((r.data["version"], r.data["url"], r.data["event_types"], r.data["description"],
            r.data["created_on"], r.data["organisation_id"]),
           (1, "http://127.0.0.1:9/other", ["*"], None, d["created_on"], org), "patched")
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 0, "description": "x"}})
        j = expect_error(r, 409, "version_conflict", "patch of a stale version")
        eq(j.get("current_version"), 1, "409's current_version")
        expect_error(c.patch("/v1/webhooks/%s" % wid, {"data": {"description": "x"}}), 428,
                     "version_required", "patch without a version")
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"description": "x"}},
                    headers={"If-Match": '"1"'})
        expect_status(r, 200, "patch with If-Match")
        eq(r.data["version"], 2, "version after If-Match patch")
        # Disabled by the caller, with a reason; enabled again, without.
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 2, "status": "disabled"}})
        expect_status(r, 200, "disable")
        eq(r.data["status"], "disabled", "status")
        check(isinstance(r.data["disabled_reason"], str) and "caller" in r.data["disabled_reason"],
              "disabled_reason %r" % r.data["disabled_reason"])
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 3, "status": "enabled"}})
        expect_status(r, 200, "enable")
        eq((r.data["status"], r.data["disabled_reason"]), ("enabled", None), "enabled again")
        # The organisation cannot change; the same one may be named.
        expect_validation(c.patch("/v1/webhooks/%s" % wid,
                                  {"data": {"version": 4, "organisation_id": new_id()}}),
                          ["data.organisation_id"], "patch to another organisation")
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 4, "organisation_id": org}})
        expect_status(r, 200, "patch naming its own organisation")
        expect_error(c.patch("/v1/webhooks/%s" % new_id(), {"data": {"version": 0}}), 404,
                     "not_found", "patch of an unknown id")

        # DELETE with ?version or If-Match, as payments.
        expect_error(c.delete("/v1/webhooks/%s?version=0" % wid), 409, "version_conflict",
                     "delete of a stale version")
        expect_error(c.delete("/v1/webhooks/%s" % wid, headers={"If-Match": '"1"'}), 409,
                     "version_conflict", "delete with a stale If-Match")
        expect_error(c.delete("/v1/webhooks/%s?version=x" % wid), 400, "bad_request",
                     "delete with a malformed version")
        r = c.delete("/v1/webhooks/%s?version=5" % wid)
        expect_status(r, 204, "delete")
        expect_error(c.get("/v1/webhooks/%s" % wid), 404, "not_found", "fetch after delete")
        expect_error(c.delete("/v1/webhooks/%s" % wid), 404, "not_found", "delete again")
        # Without a version, unconditional.
        wid2 = _create(c, org=org)["id"]
        expect_status(c.delete("/v1/webhooks/%s" % wid2), 204, "delete without a version")


@test
def webhooks_validation_names_each_field(t):
    with _server(t, "wh_valid") as srv:
        c = srv.client()
        org = new_id()

        def refused(data, fields, what):
            expect_validation(c.post("/v1/webhooks", {"data": data}), fields, what)

        base = _body(org=org)["data"]
        refused({k: v for k, v in base.items() if k != "url"}, ["data.url"], "no url")
        refused({k: v for k, v in base.items() if k != "event_types"}, ["data.event_types"],
                "no event_types")
        refused({k: v for k, v in base.items() if k != "organisation_id"},
                ["data.organisation_id"], "no organisation_id")
        refused({}, ["data.url", "data.event_types", "data.organisation_id"], "empty data")
        refused(dict(base, organisation_id="nope"), ["data.organisation_id"], "organisation_id")
        for url in ["", "nope", "/relative", "ftp://127.0.0.1/x", "file:///etc/passwd",
                    "http://user:pw@127.0.0.1/", "http://", "http://a b/", 42, None,
                    "http://127.0.0.1/" + "a" * 2100]:
            refused(dict(base, url=url), ["data.url"], "url %r" % (url if url is None or
                                                                  len(str(url)) < 40 else "long"))
        r = c.post("/v1/webhooks", _body(org=org, url="ftp://127.0.0.1/x"))
        check("http" in r.json["errors"][0]["message"], "scheme message: %s" % r.describe())
        refused(dict(base, event_types=[]), ["data.event_types"], "no types")
        refused(dict(base, event_types="*"), ["data.event_types"], "types not an array")
        refused(dict(base, event_types=["payment.created", "payment.nope", 3]),
                ["data.event_types[1]", "data.event_types[2]"], "unknown types")
        refused(dict(base, event_types=["*", "payment.created"]), ["data.event_types[0]"],
                "* with others")
        refused(dict(base, description=5), ["data.description"], "description not a string")
        refused(dict(base, description="d" * 1025), ["data.description"], "long description")
        refused(dict(base, secret="whsec_AAAA", colour="red"), ["data.secret", "data.colour"],
                "unknown members")
        refused(dict(base, status="disabled"), ["data.status"], "status on create")
        refused(dict(base, type="payments"), ["data.type"], "type")
        expect_validation(c.post("/v1/webhooks", {"data": [1]}), ["data"], "data not an object")
        expect_validation(c.post("/v1/webhooks", {"nodata": {}}), ["data"], "no data")
        expect_error(c.post("/v1/webhooks", b"{nope"), 400, "bad_request", "malformed JSON")
        expect_error(c.post("/v1/webhooks", base, ctype="text/plain"), 415,
                     "unsupported_media_type", "not JSON", codes=["unsupported_media_type"])
        # What is valid: a description at the limit, each known type.
        r = c.post("/v1/webhooks", _body(org=org, description="d" * 1024,
                                         types=["payment.created", "payment.updated",
                                                "payment.deleted"], type="webhooks"))
        expect_status(r, 201, "valid at the limits")
        wid = r.data["id"]
        # PATCH's members, each named.
        for data, fields in [({"version": 0, "url": "gopher://x/"}, ["data.url"]),
                             ({"version": 0, "event_types": ["nope"]}, ["data.event_types[0]"]),
                             ({"version": 0, "status": "paused"}, ["data.status"]),
                             ({"version": 0, "url": None}, ["data.url"]),
                             ({"version": 0, "status": None}, ["data.status"]),
                             ({"version": -1}, ["data.version"]),
                             ({"version": 0, "id": new_id()}, ["data.id"]),
                             ({"version": 0, "secret": "x", "created_on": "x"},
                              ["data.secret", "data.created_on"])]:
            expect_validation(c.patch("/v1/webhooks/%s" % wid, {"data": data}), fields,
                              "patch %r" % data)
        eq(c.get("/v1/webhooks/%s" % wid).data["version"], 0, "refused patches change nothing")


@test
def webhooks_secret_shown_on_create_and_rotate_only(t):
    with _server(t, "wh_secret") as srv:
        c = srv.client()
        org = new_id()
        d = _create(c, org=org)
        wid = d["id"]
        first = d["secret"]
        r = c.post("/v1/webhooks/%s/secret/rotate" % wid)
        expect_status(r, 200, "rotate")
        _check_endpoint(r.data, "rotate", secret=True)
        second = r.data["secret"]
        check(second != first, "rotation gave the same secret")
        eq(r.data["version"], 1, "version after rotation")
        secrets = [first, second]
        _no_secret(c.get("/v1/webhooks/%s" % wid), secrets, "fetch")
        _no_secret(c.get("/v1/webhooks"), secrets, "list")
        _no_secret(c.get("/v1/webhooks?%s" % qs({"filter[organisation_id]": org})), secrets,
                   "filtered list")
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 1, "description": "x"}})
        expect_status(r, 200, "patch")
        _no_secret(r, secrets, "patch")
        _no_secret(c.get("/v1/webhooks/%s/deliveries" % wid), secrets, "deliveries")
    log = srv.stderr_text()
    check(log, "the server logged nothing at all")
    for s in secrets:
        check(s not in log and s[6:] not in log, "a secret is in the server's log")


@test
def webhooks_rotate(t):
    with _server(t, "wh_rotate") as srv:
        c = srv.client()
        d = _create(c)
        wid = d["id"]
        seen = {d["secret"]}
        for v in range(1, 4):
            r = c.post("/v1/webhooks/%s/secret/rotate" % wid)
            expect_status(r, 200, "rotation %d" % v)
            eq(r.data["version"], v, "version after rotation %d" % v)
            check(r.data["secret"] not in seen, "rotation %d repeated a secret" % v)
            seen.add(r.data["secret"])
            eq({k: r.data[k] for k in ("url", "event_types", "status", "created_on")},
               {k: d[k] for k in ("url", "event_types", "status", "created_on")},
               "rotation %d keeps the endpoint" % v)
        r = c.post("/v1/webhooks/%s/secret/rotate" % wid, headers={"If-Match": '"1"'})
        j = expect_error(r, 409, "version_conflict", "rotation with a stale If-Match")
        eq(j.get("current_version"), 3, "409's current_version")
        r = c.post("/v1/webhooks/%s/secret/rotate" % wid, headers={"If-Match": '"3"'})
        expect_status(r, 200, "rotation with the current If-Match")
        expect_error(c.post("/v1/webhooks/%s/secret/rotate" % new_id()), 404, "not_found",
                     "rotation of an unknown endpoint")


@test
def webhooks_at_most_twenty_per_organisation(t):
    with _server(t, "wh_limit") as srv:
        c = srv.client()
        org = new_id()
        ids = [_create(c, "endpoint %d" % (i + 1), org=org)["id"] for i in range(20)]
        r = c.post("/v1/webhooks", _body(org=org))
        expect_validation(r, ["data.organisation_id"], "the 21st endpoint")
        check("20" in r.json["errors"][0]["message"], "message without 20: %s" % r.describe())
        _create(c, "another organisation's first", org=new_id())
        expect_status(c.delete("/v1/webhooks/%s" % ids[0]), 204, "delete one")
        _create(c, "the 20th again", org=org)


@test
def webhooks_list_filters_and_pages(t):
    with _server(t, "wh_list") as srv:
        c = srv.client()
        orgs = [new_id() for _ in range(3)]
        # Listed in id order: UUIDv7s, creation order to the millisecond.
        made = {o: sorted(_create(c, org=o)["id"] for _ in range(3)) for o in orgs}
        every = sorted(i for ids in made.values() for i in ids)
        r = c.get("/v1/webhooks")
        expect_status(r, 200, "list")
        eq([d["id"] for d in r.data], every, "the list, in id order")
        for d in r.data:
            _check_endpoint(d, "listed", secret=False)
        eq(r.json["links"]["next"], None, "links.next of the last page")
        # Filter by organisation.
        r = c.get("/v1/webhooks?" + qs({"filter[organisation_id]": orgs[1]}))
        expect_status(r, 200, "filtered")
        eq([d["id"] for d in r.data], made[orgs[1]], "filter[organisation_id]")
        r = c.get("/v1/webhooks?" + qs({"filter[organisation_id]": "%s,%s" % (orgs[0], orgs[2])}))
        eq(sorted(d["id"] for d in r.data), sorted(made[orgs[0]] + made[orgs[2]]), "two orgs")
        r = c.get("/v1/webhooks?" + qs({"filter[organisation_id]": new_id()}))
        eq(r.data, [], "an organisation without endpoints")
        # Pages of 2, following links.next to the end.
        got, path, pages = [], "/v1/webhooks?" + qs({"page[size]": 2}), 0
        while path:
            r = c.get(path)
            expect_status(r, 200, "page %d" % pages)
            check(len(r.data) <= 2, "page of %d" % len(r.data))
            got += [d["id"] for d in r.data]
            nxt = r.json["links"]["next"]
            path = link_path(nxt) if nxt else None
            pages += 1
            check(pages < 10, "pages do not end")
        eq(got, every, "every endpoint once, across pages")
        eq(pages, 5, "pages of 2 of 9")
        # A filtered page carries its filter on.
        r = c.get("/v1/webhooks?" + qs({"filter[organisation_id]": orgs[2], "page[size]": 2}))
        nxt = c.get(link_path(r.json["links"]["next"]))
        eq([d["id"] for d in r.data + nxt.data], made[orgs[2]], "filtered pages")
        for params, field in [({"page[size]": 0}, "page[size]"), ({"page[size]": 1001}, "page[size]"),
                              ({"page[size]": "x"}, "page[size]"), ({"page[after]": "x"}, "page[after]"),
                              ({"filter[organisation_id]": "nope"}, "filter[organisation_id]")]:
            expect_validation(c.get("/v1/webhooks?" + qs(params)), [field], "list %r" % params)
        expect_error(c.get("/v1/webhooks?colour=red"), 400, "bad_request", "unknown parameter")
        expect_error(c.get("/v1/webhooks?filter[status]=failed"), 400, "bad_request",
                     "a deliveries filter on the endpoints list")


@test
def webhooks_private_destinations_refused_at_registration(t):
    with _server(t, "wh_ssrf", args=[]) as srv:
        c = srv.client()
        for url in ["http://127.0.0.1:9/x", "http://10.0.0.1/", "http://169.254.169.254/",
                    "http://[::1]/", "http://localhost/", "http://192.168.1.1/",
                    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/"]:
            r = c.post("/v1/webhooks", _body(url=url))
            expect_validation(r, ["data.url"], "registering %s" % url)
            check("non-public" in r.json["errors"][0]["message"],
                  "%s: message %s" % (url, r.describe()))
        # A public address is allowed (no connection is made to register it).
        r = c.post("/v1/webhooks", _body(url="https://93.184.216.34/hooks"))
        expect_status(r, 201, "a public address")
        wid = r.data["id"]
        # Moving an endpoint to a private address is refused too.
        r = c.patch("/v1/webhooks/%s" % wid, {"data": {"version": 0, "url": "http://10.1.2.3/"}})
        expect_validation(r, ["data.url"], "patch to a private address")
    with _server(t, "wh_ssrf_allowed") as srv:
        c = srv.client()
        for url in ["http://127.0.0.1:9/x", "http://[::1]/", "http://localhost/"]:
            expect_status(c.post("/v1/webhooks", _body(url=url)), 201,
                          "%s with --webhook-allow-private" % url)


@test
def webhooks_tenancy_on_every_route(t):
    with _server(t, "wh_tenancy", keys=True) as srv:
        c = srv.client()
        expect_error(c.get("/v1/webhooks"), 401, "unauthorized", "no key")
        expect_error(c.post("/v1/webhooks", _body(org=ORG_B), headers=_as("alpha")), 403,
                     "forbidden", "alpha registers for another organisation")
        a = _create(c, "alpha registers", key="alpha", org=ORG_A)["id"]
        b = _create(c, "beta registers", key="beta", org=ORG_B)["id"]
        unknown = new_id()
        day = {"data": {"from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}}
        routes = [("GET", "/v1/webhooks/%s", None),
                  ("PATCH", "/v1/webhooks/%s", {"data": {"version": 0, "description": "x"}}),
                  ("POST", "/v1/webhooks/%s/secret/rotate", None),
                  ("GET", "/v1/webhooks/%s/deliveries", None),
                  ("POST", "/v1/webhooks/%%s/deliveries/%s/retry" % new_id(), None),
                  ("POST", "/v1/webhooks/%s/replay", day),
                  ("DELETE", "/v1/webhooks/%s", None)]
        for method, pattern, body in routes:
            for key, theirs in [("beta", a), ("alpha", b)]:
                r = c.request(method, pattern % theirs, body=body, headers=_as(key))
                j = expect_error(r, 404, "not_found", "%s %s of another organisation's endpoint"
                                 % (method, pattern))
                r2 = c.request(method, pattern % unknown, body=body, headers=_as(key))
                eq(j["error_message"], r2.json["error_message"],
                   "%s %s: another organisation's and an unknown id" % (method, pattern))
        # Nothing changed: both are at version 0 still.
        for key, wid in [("alpha", a), ("beta", b)]:
            r = c.get("/v1/webhooks/%s" % wid, headers=_as(key))
            expect_status(r, 200, "%s reads its own" % key)
            eq(r.data["version"], 0, "%s's endpoint untouched" % key)
        # Lists show one's own organisations only.
        eq([d["id"] for d in c.get("/v1/webhooks", headers=_as("alpha")).data], [a], "alpha's list")
        eq([d["id"] for d in c.get("/v1/webhooks", headers=_as("beta")).data], [b], "beta's list")
        r = c.get("/v1/webhooks?" + qs({"filter[organisation_id]": ORG_B}), headers=_as("alpha"))
        expect_status(r, 200, "alpha filters on beta's organisation")
        eq(r.data, [], "alpha's list filtered on beta's organisation")
        eq(sorted(d["id"] for d in c.get("/v1/webhooks", headers=_as("root")).data), sorted([a, b]),
           "root's list")
        # Their own routes work for them.
        expect_status(c.get("/v1/webhooks/%s/deliveries" % a, headers=_as("alpha")), 200,
                      "alpha's deliveries")
        expect_status(c.post("/v1/webhooks/%s/replay" % a, day, headers=_as("alpha")), 202,
                      "alpha's replay")
        expect_status(c.post("/v1/webhooks/%s/secret/rotate" % a, headers=_as("alpha")), 200,
                      "alpha's rotation")
        expect_status(c.delete("/v1/webhooks/%s" % b, headers=_as("root")), 204,
                      "root deletes beta's")


@test
def webhooks_deliveries_and_retry(t):
    with _server(t, "wh_deliveries") as srv:
        c = srv.client()
        wid = _create(c)["id"]
        r = c.get("/v1/webhooks/%s/deliveries" % wid)
        expect_status(r, 200, "deliveries of a new endpoint")
        eq(r.data, [], "a new endpoint's deliveries")
        check(link_path(r.json["links"]["self"]).startswith("/v1/webhooks/%s/deliveries" % wid),
              "links.self %r" % r.json["links"]["self"])
        eq(r.json["links"]["next"], None, "links.next")
        for status in ["pending", "succeeded", "failed", "pending,failed"]:
            r = c.get("/v1/webhooks/%s/deliveries?%s" % (wid, qs({"filter[status]": status})))
            expect_status(r, 200, "filter[status]=%s" % status)
            eq(r.data, [], "filter[status]=%s" % status)
        for params, field in [({"filter[status]": "done"}, "filter[status]"),
                              ({"page[size]": 0}, "page[size]"),
                              ({"page[after]": "x"}, "page[after]")]:
            expect_validation(c.get("/v1/webhooks/%s/deliveries?%s" % (wid, qs(params))), [field],
                              "deliveries %r" % params)
        expect_error(c.get("/v1/webhooks/%s/deliveries?filter[organisation_id]=%s"
                           % (wid, new_id())), 400, "bad_request", "an endpoints filter")
        expect_error(c.get("/v1/webhooks/%s/deliveries" % new_id()), 404, "not_found",
                     "deliveries of an unknown endpoint")
        r = c.post("/v1/webhooks/%s/deliveries/%s/retry" % (wid, new_id()))
        expect_error(r, 404, "not_found", "retry of an unknown delivery")
        expect_error(c.post("/v1/webhooks/%s/deliveries/nope/retry" % wid), 400, "invalid_id",
                     "retry of a malformed delivery id")
        expect_error(c.post("/v1/webhooks/%s/deliveries/%s/retry" % (new_id(), new_id())), 404,
                     "not_found", "retry on an unknown endpoint")


@test
def webhooks_replay(t):
    with _server(t, "wh_replay") as srv:
        c = srv.client()
        org = new_id()
        t0 = time.time()
        before = c.post("/v1/payments", payment(org=org))
        expect_status(before, 201, "a payment before the endpoint")
        wid = _create(c, org=org, types=["payment.created"])["id"]
        made = []
        for _ in range(3):
            r = c.post("/v1/payments", payment(org=org))
            expect_status(r, 201, "a payment after the endpoint")
            made.append(r.data["id"])
        expect_status(c.post("/v1/payments", payment(org=new_id())), 201, "another org's payment")
        p = c.get("/v1/payments/%s" % made[0]).data
        r = c.patch("/v1/payments/%s" % made[0], {"data": {"version": p["version"],
                                                           "attributes": {"reference": "x"}}})
        expect_status(r, 200, "an update (a type the endpoint does not want)")

        def stamp(s):
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))

        path = "/v1/webhooks/%s/replay" % wid
        r = c.post(path, {"data": {"from": stamp(t0 - 3600), "to": stamp(time.time() + 3600)}})
        expect_status(r, 202, "replay")
        eq((r.data["type"], r.data["webhook_id"], r.data["events"]),
           ("webhook_replays", wid, 3), "replay: the endpoint's events since it was created")
        check(TIME_RE.match(r.data["from"]) and TIME_RE.match(r.data["to"]), "times %s" % r.data)
        # Each replayed event has its delivery.
        events = c.get("/v1/events?" + qs({"filter[organisation_id]": org,
                                           "filter[event_type]": "payment.created"})).data
        want = {e["id"] for e in events if e["payment_id"] in made}
        eq(len(want), 3, "the events to replay")
        r = c.get("/v1/webhooks/%s/deliveries" % wid)
        expect_status(r, 200, "deliveries after the replay")
        got = {d["event_id"] for d in r.data}
        eq(got, want, "a delivery per replayed event")
        for d in r.data:
            eq(d["type"], "webhook_deliveries", "delivery type")
            check(d["status"] in ("pending", "succeeded", "failed"), "status %r" % d["status"])
            check(isinstance(d["attempts"], list), "attempts %r" % d["attempts"])
            check(TIME_RE.match(d["created_on"]), "created_on %r" % d["created_on"])
            check((d["next_attempt_at"] is None) == (d["status"] != "pending"),
                  "next_attempt_at %r with status %s" % (d["next_attempt_at"], d["status"]))
        # A retry of one of them: 202 with the delivery, as listed.
        one = r.data[0]["id"]
        r = c.post("/v1/webhooks/%s/deliveries/%s/retry" % (wid, one))
        expect_status(r, 202, "retry")
        eq((r.data["id"], r.data["type"]), (one, "webhook_deliveries"), "the retried delivery")
        # A range before the endpoint's events replays none.
        r = c.post(path, {"data": {"from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z"}})
        expect_status(r, 202, "replay of an empty range")
        eq(r.data["events"], 0, "events of an empty range")
        # Validation: each field named.
        for data, fields in [({}, ["data.from", "data.to"]),
                             ({"from": "2026-01-01T00:00:00Z"}, ["data.to"]),
                             ({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, ["data.from"]),
                             ({"from": "2026-01-01T00:00:00Z", "to": "2026-13-01T00:00:00Z"},
                              ["data.to"]),
                             ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                              ["data.from"]),
                             ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                              ["data.from"]),
                             ({"from": 5, "to": "2026-01-01T00:00:00Z"}, ["data.from"]),
                             ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                               "all": True}, ["data.all"])]:
            expect_validation(c.post(path, {"data": data}), fields, "replay %r" % data)
        expect_validation(c.post(path, {"data": 1}), ["data"], "replay without a data object")
        expect_error(c.post("/v1/webhooks/%s/replay" % new_id(),
                            {"data": {"from": "2026-01-01T00:00:00Z",
                                      "to": "2026-01-02T00:00:00Z"}}), 404, "not_found",
                     "replay of an unknown endpoint")
