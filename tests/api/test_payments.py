"""The payment resource: create, fetch, replace, patch, delete, tombstones,
the order in which errors win, request body syntax, the seed sample and
concurrent updates."""

import calendar
import copy
import json
import os
import threading
import time

from harness import (TIME_RE, UUID_RE, Fail, Server, check, create, eq, error_fields, expect_error,
                     expect_status, expect_validation, merge_patch, new_id, payment, raw_request,
                     short, strip_nulls, test)

SEED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "spec", "seed-payment.json")


def _ms(ts):
    """Milliseconds since the epoch of a "YYYY-MM-DDTHH:MM:SS.mmmZ" time."""
    base, _, frac = ts.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t * 1000 + int((frac or "0")[:3].ljust(3, "0"))


def _check_resource(r, what, pid=None, version=None):
    d = r.data
    check(isinstance(d, dict), "%s: no data object in %s" % (what, r.describe()))
    check(isinstance(d.get("id"), str) and UUID_RE.match(d["id"]), "%s: data.id %r" % (what, d.get("id")))
    if pid is not None:
        eq(d["id"], pid.lower(), "%s: data.id" % what)
    if version is not None:
        eq(d.get("version"), version, "%s: data.version" % what)
    for k in ("created_on", "modified_on"):
        check(isinstance(d.get(k), str) and TIME_RE.match(d[k]), "%s: data.%s %r" % (what, k, d.get(k)))
    links = (r.json or {}).get("links") or {}
    self_link = links.get("self")
    check(isinstance(self_link, str) and self_link.endswith("/v1/payments/" + d["id"]),
          "%s: links.self %r" % (what, self_link))
    return d


# --------------------------------------------------------------------------
# create

@test
def create_without_id_gets_uuidv7(t):
    org = new_id()
    before = time.time()
    r = t.c.post("/v1/payments", payment(org))
    expect_status(r, 201, "POST without id")
    d = _check_resource(r, "POST without id", version=0)
    pid = d["id"]
    eq(pid[14], "7", "UUID version nibble of generated id %s" % pid)
    check(pid[19] in "89ab", "generated id %s: variant is not RFC 4122" % pid)
    eq(r.header("ETag"), '"0"', "ETag of 201")
    loc = r.header("Location")
    check(loc is not None and loc.endswith("/v1/payments/" + pid), "Location %r" % loc)
    eq(d.get("type"), "payments", "default type")
    eq(d.get("organisation_id"), org, "organisation_id")
    eq(d.get("attributes"), {"amount": "10.00", "currency": "EUR"}, "attributes")
    created = _ms(d["created_on"]) / 1000.0
    check(abs(created - before) < 600, "created_on %s is not now" % d["created_on"])
    eq(d["modified_on"], d["created_on"], "modified_on of a new payment")
    pid2 = create(t.c)["id"]
    check(pid2 != pid and pid2[14] == "7", "second generated id %s (first %s)" % (pid2, pid))
    r = t.c.get("/v1/payments/" + pid)
    expect_status(r, 200, "GET created")
    eq(r.data, d, "GET data equals the 201 data")


@test
def create_with_client_id_upper_case(t):
    pid = new_id()
    org = new_id()
    r = t.c.post("/v1/payments", payment(org.upper(), pid=pid.upper()))
    expect_status(r, 201, "POST with an upper-case id")
    d = _check_resource(r, "POST upper-case id", pid=pid, version=0)
    eq(d["organisation_id"], org, "organisation_id returned in lower case")
    check(r.header("Location").endswith("/v1/payments/" + pid), "Location %r" % r.header("Location"))
    for p in (pid, pid.upper()):
        r = t.c.get("/v1/payments/" + p)
        expect_status(r, 200, "GET /v1/payments/%s" % p)
        eq(r.data["id"], pid, "id fetched by %s" % p)


@test
def create_ignores_client_times(t):
    body = payment()
    body["data"]["created_on"] = "2001-01-01T00:00:00.000Z"
    body["data"]["modified_on"] = "2002-02-02T00:00:00.000Z"
    r = t.c.post("/v1/payments", body)
    expect_status(r, 201, "POST with created_on/modified_on")
    d = r.data
    check(not d["created_on"].startswith("2001"), "client created_on kept: %s" % d["created_on"])
    check(not d["modified_on"].startswith("2002"), "client modified_on kept: %s" % d["modified_on"])
    check(abs(_ms(d["created_on"]) / 1000.0 - time.time()) < 600, "created_on %s not now" % d["created_on"])


@test
def create_type(t):
    for typ, want in [(None, "payments"), ("", "payments"), ("Pay_ments", "Pay_ments")]:
        body = payment()
        if typ is None:
            del body["data"]["type"]
        else:
            body["data"]["type"] = typ
        r = t.c.post("/v1/payments", body)
        expect_status(r, 201, "POST with type %r" % typ)
        eq(r.data.get("type"), want, "type stored for %r" % typ)
    for typ in ["pay-ments", "payments1", "pay ments", 5]:
        body = payment()
        body["data"]["type"] = typ
        expect_validation(t.c.post("/v1/payments", body), ["data.type"], "POST with type %r" % typ)


@test
def create_version_must_be_zero(t):
    body = payment()
    body["data"]["version"] = 0
    expect_status(t.c.post("/v1/payments", body), 201, "POST with version 0")
    for v in [1, 7, -1, "0"]:
        body = payment()
        body["data"]["version"] = v
        expect_validation(t.c.post("/v1/payments", body), ["data.version"], "POST with version %r" % v)


@test
def create_duplicate_id_409(t):
    pid = new_id()
    org = new_id()
    expect_status(t.c.post("/v1/payments", payment(org, pid=pid)), 201, "first create")
    r = t.c.post("/v1/payments", payment(org, pid=pid, reference="second"))
    expect_error(r, 409, "duplicate_id", "second create with the same id")
    r = t.c.post("/v1/payments", payment(org, pid=pid.upper()))
    expect_error(r, 409, "duplicate_id", "create with the same id in upper case")
    r = t.c.get("/v1/payments/" + pid)
    check("reference" not in r.data["attributes"], "a duplicate create changed the payment")
    eq(r.data["version"], 0, "version after duplicate creates")


@test
def null_attributes_not_stored(t):
    attrs = {"reference": None, "clearing_id": None,
             "structured_reference": {"issuer": None, "reference": "abc"},
             "my_extension": {"x": [1, None, {"n": None, "k": 2}], "y": None},
             "beneficiary_party": {"name": "B", "birth_date": None}}
    r = t.c.post("/v1/payments", payment(**attrs))
    expect_status(r, 201, "POST with null attributes")
    want = {"amount": "10.00", "currency": "EUR",
            "structured_reference": {"reference": "abc"},
            "my_extension": {"x": [1, None, {"k": 2}]},
            "beneficiary_party": {"name": "B"}}
    eq(r.data["attributes"], want, "attributes in the 201")
    r = t.c.get("/v1/payments/" + r.data["id"])
    eq(r.data["attributes"], want, "attributes fetched")


@test
def undeclared_attributes_and_relationships_kept(t):
    rel = {"anything": {"data": [{"id": "not-validated", "n": 1.5, "z": None}]}, "empty": {}}
    body = payment(custom_text="hello", custom_obj={"a": [1, 2, {"b": True}], "c": "\u00e9\u4e2d"})
    body["data"]["relationships"] = rel
    r = t.c.post("/v1/payments", body)
    expect_status(r, 201, "POST with undeclared attributes and relationships")
    r = t.c.get("/v1/payments/" + r.data["id"])
    eq(r.data["attributes"]["custom_text"], "hello", "custom_text")
    eq(r.data["attributes"]["custom_obj"], {"a": [1, 2, {"b": True}], "c": "\u00e9\u4e2d"}, "custom_obj")
    eq(r.data.get("relationships"), rel, "relationships stored as given")


# --------------------------------------------------------------------------
# fetch

@test
def fetch_etag_and_if_none_match(t):
    pid = create(t.c)["id"]
    r = t.c.get("/v1/payments/" + pid)
    expect_status(r, 200, "GET")
    eq(r.header("ETag"), '"0"', "ETag")
    r = t.c.get("/v1/payments/" + pid, headers={"If-None-Match": '"0"'})
    eq(r.status, 304, "GET with If-None-Match of the current ETag")
    eq(r.body, b"", "304 body")
    eq(r.header("ETag"), '"0"', "ETag of the 304")
    r = t.c.get("/v1/payments/" + pid, headers={"If-None-Match": '"3"'})
    expect_status(r, 200, "GET with a stale If-None-Match")
    eq(r.data["id"], pid, "id")
    # HTTP semantics: a list matches when any tag does; weak comparison
    for inm in ['"5", "0"', 'W/"0"', "*"]:
        r = t.c.get("/v1/payments/" + pid, headers={"If-None-Match": inm})
        eq(r.status, 304, "GET with If-None-Match %s (current ETag \"0\")" % inm)
    r = t.c.get("/v1/payments/" + pid, headers={"If-None-Match": '"5", "6"'})
    eq(r.status, 200, "GET with If-None-Match listing only stale tags")


@test
def fetch_invalid_id_400(t):
    pid = new_id()
    for bad in ["not-a-uuid", "123", pid.replace("-", ""), "{%s}" % pid, pid + "0", pid[:-1],
                pid[:8] + "_" + pid[9:], "g" + pid[1:], "urn:uuid:" + pid, "%20" + pid]:
        expect_error(t.c.get("/v1/payments/" + bad), 400, "invalid_id", "GET /v1/payments/%s" % bad)
    expect_error(t.c.delete("/v1/payments/nope"), 400, "invalid_id", "DELETE /v1/payments/nope")
    body = payment()
    body["data"]["version"] = 0
    expect_error(t.c.put("/v1/payments/nope", body), 400, "invalid_id", "PUT /v1/payments/nope")
    expect_error(t.c.patch("/v1/payments/nope", {"data": {"version": 0}}), 400, "invalid_id",
                 "PATCH /v1/payments/nope")


@test
def fetch_unknown_404(t):
    expect_error(t.c.get("/v1/payments/" + new_id()), 404, "not_found", "GET unknown")
    expect_error(t.c.get("/v1/payment/" + new_id()), 404, "not_found", "GET /v1/payment/unknown")


# --------------------------------------------------------------------------
# replace

def _put_body(org, version=None, **attrs):
    b = payment(org, **attrs)
    if version is not None:
        b["data"]["version"] = version
    return b


@test
def put_with_data_version(t):
    d = create(t.c, payment(reference="one", batch_id="b1"))
    pid, org = d["id"], d["organisation_id"]
    time.sleep(0.01)
    body = _put_body(org, 0, amount="20.50", currency="GBP", end_to_end_reference="e2e")
    body["data"]["relationships"] = {"r": {"data": []}}
    r = t.c.put("/v1/payments/" + pid, body)
    expect_status(r, 200, "PUT version 0")
    d2 = _check_resource(r, "PUT", pid=pid, version=1)
    eq(d2["attributes"], {"amount": "20.50", "currency": "GBP", "end_to_end_reference": "e2e"},
       "attributes replaced (not merged)")
    eq(d2.get("relationships"), {"r": {"data": []}}, "relationships replaced")
    eq(d2["created_on"], d["created_on"], "created_on kept by PUT")
    check(_ms(d2["modified_on"]) >= _ms(d["modified_on"]), "modified_on went back")
    eq(d2["type"], "payments", "type unchanged when absent")
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data, d2, "GET after PUT equals the PUT response")
    eq(r.header("ETag"), '"1"', "ETag after PUT")
    eq(t.c.get("/v1/payments/" + pid, headers={"If-None-Match": '"1"'}).status, 304,
       "If-None-Match of the new version")
    eq(t.c.get("/v1/payments/" + pid, headers={"If-None-Match": '"0"'}).status, 200,
       "If-None-Match of the old version")
    # second replace from version 1, with an upper-case id in the body
    body = _put_body(org.upper(), 1, amount="1.00")
    body["data"]["id"] = pid.upper()
    body["data"]["type"] = "Other_type"
    r = t.c.put("/v1/payments/" + pid, body)
    expect_status(r, 200, "PUT version 1 with upper-case id and organisation_id")
    eq(r.data["version"], 2, "version after second PUT")
    eq(r.data["type"], "Other_type", "type replaced when given")


@test
def put_details(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    body = _put_body(org, 0, reference="upper path")
    body["data"]["created_on"] = "2001-01-01T00:00:00.000Z"
    body["data"]["modified_on"] = "2001-01-01T00:00:00.000Z"
    r = t.c.put("/v1/payments/" + pid.upper(), body)
    expect_status(r, 200, "PUT on the upper-case id with client times")
    eq(r.data["id"], pid, "id after PUT on the upper-case path")
    eq(r.data["created_on"], d["created_on"], "created_on after PUT with a client created_on")
    check(not r.data["modified_on"].startswith("2001"), "client modified_on kept by PUT")
    for v in [1.5, "1", -1, True]:
        expect_validation(t.c.put("/v1/payments/" + pid, _put_body(org, v)), ["data.version"],
                          "PUT with data.version %r" % (v,))
    r = t.c.put("/v1/payments/" + pid, _put_body(org, 9223372036854775807))
    j = expect_error(r, 409, "version_conflict", "PUT with data.version 2^63-1")
    eq(j.get("current_version"), 1, "current_version")
    body = json.dumps(_put_body(org, 1)).replace('"version": 1', '"version": 18446744073709551616')
    expect_error(t.c.put("/v1/payments/" + pid, body), 400, None, "PUT with a version beyond 64 bits",
                 codes=["bad_request", "validation_failed"])
    body = _put_body(org, 1)
    deep = {}
    for _ in range(29):
        deep = {"d": deep}
    body["data"]["attributes"]["deep"] = deep  # level 33
    expect_error(t.c.put("/v1/payments/" + pid, body), 400, None, "PUT nested 33 deep",
                 codes=["bad_request", "validation_failed"])
    eq(t.c.get("/v1/payments/" + pid).data["version"], 1, "version after rejected PUTs")


@test
def put_over_documents_the_fast_path_leaves(t):
    """A replace of a payment whose stored document holds what the body fast
    path leaves to jansson (a real number, a key with an escape, a big
    integer) with a plain body: the replace is made (it was once a 500)."""
    for extra in [{"x_real": 1.5}, {'we"ird': "k"}, {"x_big": 1234567890123456789}]:
        d = create(t.c, payment(**extra))
        pid, org = d["id"], d["organisation_id"]
        r = t.c.put("/v1/payments/" + pid, _put_body(org, 0, amount="2.00", currency="GBP"))
        expect_status(r, 200, "PUT over a stored %r" % (extra,))
        eq(r.data["attributes"], {"amount": "2.00", "currency": "GBP"}, "attributes replaced")
        eq(t.c.get("/v1/payments/" + pid).data["version"], 1, "version after the PUT")


@test
def put_with_if_match(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    r = t.c.put("/v1/payments/" + pid, _put_body(org, None, reference="im"), headers={"If-Match": '"0"'})
    expect_status(r, 200, "PUT with If-Match \"0\" and no data.version")
    eq(r.data["version"], 1, "version")
    r = t.c.put("/v1/payments/" + pid, _put_body(org, 1), headers={"If-Match": '"1"'})
    expect_status(r, 200, "PUT with If-Match and data.version agreeing")
    eq(r.data["version"], 2, "version")


@test
def put_if_match_malformed_400(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    for im in ['W/"0"', '"0", "1"', '"0","0"', "0", '"0', "*"]:
        r = t.c.put("/v1/payments/" + pid, _put_body(org), headers={"If-Match": im})
        expect_error(r, 400, None, "PUT with If-Match %r" % im, codes=["bad_request", "validation_failed"])
    r = t.c.put("/v1/payments/" + pid, _put_body(org, 0), headers={"If-Match": '"1"'})
    expect_error(r, 400, None, "PUT with If-Match \"1\" and data.version 0",
                 codes=["bad_request", "validation_failed"])
    r = t.c.put("/v1/payments/" + pid, _put_body(org, 1), headers={"If-Match": '"0"'})
    expect_error(r, 400, None, "PUT with If-Match \"0\" and data.version 1",
                 codes=["bad_request", "validation_failed"])
    eq(t.c.get("/v1/payments/" + pid).data["version"], 0, "version after rejected PUTs")


@test
def put_without_version_428(t):
    d = create(t.c)
    r = t.c.put("/v1/payments/" + d["id"], _put_body(d["organisation_id"]))
    expect_error(r, 428, "version_required", "PUT with neither data.version nor If-Match")


@test
def put_stale_version_409(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    expect_status(t.c.put("/v1/payments/" + pid, _put_body(org, 0)), 200, "PUT v0")
    expect_status(t.c.put("/v1/payments/" + pid, _put_body(org, 1)), 200, "PUT v1")
    for v, hdr in [(0, None), (1, None), (3, None), (None, '"0"'), (None, '"7"')]:
        r = t.c.put("/v1/payments/" + pid, _put_body(org, v, reference="lost"),
                    headers={"If-Match": hdr} if hdr else None)
        what = "stale PUT (data.version %r, If-Match %r)" % (v, hdr)
        j = expect_error(r, 409, "version_conflict", what)
        eq(j.get("current_version"), 2, "%s: current_version" % what)
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data["version"], 2, "version after stale writes")
    check("reference" not in r.data["attributes"], "a stale write was applied")


@test
def put_different_id_or_org_400(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    body = _put_body(org, 0)
    body["data"]["id"] = new_id()
    expect_validation(t.c.put("/v1/payments/" + pid, body), ["data.id"], "PUT with another id in the body")
    body = _put_body(new_id(), 0)
    expect_validation(t.c.put("/v1/payments/" + pid, body), ["data.organisation_id"],
                      "PUT with another organisation_id")
    body = _put_body(org, 0)
    del body["data"]["organisation_id"]
    expect_validation(t.c.put("/v1/payments/" + pid, body), ["data.organisation_id"],
                      "PUT without organisation_id", exact=False)
    body = _put_body(org, 0)
    del body["data"]["attributes"]
    expect_validation(t.c.put("/v1/payments/" + pid, body), ["data.attributes"],
                      "PUT without attributes", exact=False)
    eq(t.c.get("/v1/payments/" + pid).data["version"], 0, "version after rejected PUTs")


@test
def put_unknown_404(t):
    r = t.c.put("/v1/payments/" + new_id(), _put_body(new_id(), 0))
    expect_error(r, 404, "not_found", "PUT unknown id")
    r = t.c.put("/v1/payments/" + new_id(), _put_body(new_id()), headers={"If-Match": '"0"'})
    expect_error(r, 404, "not_found", "PUT unknown id with If-Match")


@test
def put_result_validated(t):
    d = create(t.c)
    r = t.c.put("/v1/payments/" + d["id"], _put_body(d["organisation_id"], 0, amount="1.001"))
    expect_validation(r, ["data.attributes.amount"], "PUT with 3 decimals in EUR")


# --------------------------------------------------------------------------
# patch

@test
def patch_merge_semantics(t):
    attrs = {"reference": "keep", "end_to_end_reference": "remove me",
             "beneficiary_party": {"name": "Ben", "account_number": "123", "address": ["a", "b"]},
             "fx": {"exchange_rate": "1.5", "original_amount": "3.00"}}
    rel = {"one": {"data": [{"id": "1"}]}, "two": {"data": [{"id": "2"}], "meta": {"x": 1}}}
    body = payment(**attrs)
    body["data"]["relationships"] = rel
    d = create(t.c, body)
    pid = d["id"]
    patch_attrs = {"end_to_end_reference": None, "amount": "12.34",
                   "beneficiary_party": {"name": "Benny", "address": ["c"], "country": "GB"},
                   "fx": None, "new_field": {"deep": {"x": 1}}}
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": patch_attrs}})
    expect_status(r, 200, "PATCH")
    d1 = _check_resource(r, "PATCH", pid=pid, version=1)
    want = merge_patch(d["attributes"], patch_attrs)
    eq(d1["attributes"], want, "merged attributes")
    eq(d1.get("relationships"), rel, "relationships untouched when not given")
    eq(d1["organisation_id"], d["organisation_id"], "organisation_id kept")
    eq(d1["created_on"], d["created_on"], "created_on kept")
    eq(d1["type"], "payments", "type kept")
    # relationships merged when given; If-Match instead of data.version
    rel_patch = {"two": {"meta": None, "data": [{"id": "22"}]}, "three": {"data": []}, "one": None}
    r = t.c.patch("/v1/payments/" + pid, {"data": {"relationships": rel_patch}}, headers={"If-Match": '"1"'})
    expect_status(r, 200, "PATCH relationships with If-Match")
    eq(r.data["version"], 2, "version")
    eq(r.data.get("relationships"), merge_patch(rel, rel_patch), "merged relationships")
    eq(r.data["attributes"], want, "attributes untouched by a relationships patch")
    r2 = t.c.get("/v1/payments/" + pid)
    eq(r2.data, r.data, "GET after PATCH equals the PATCH response")


@test
def patch_result_validated(t):
    d = create(t.c, payment(reference="r"))
    pid = d["id"]
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": {"amount": None}}})
    expect_validation(r, ["data.attributes.amount"], "PATCH removing amount")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": {"currency": "JPY"}}})
    expect_validation(r, ["data.attributes.amount"], "PATCH to JPY leaving amount 10.00",
                      exact=False)
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": {"currency": "HRK",
                                                                                 "reference": "x" * 19}}})
    expect_validation(r, ["data.attributes.currency", "data.attributes.reference"],
                      "PATCH with two bad attributes")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "type": "bad-type"}})
    expect_validation(r, ["data.type"], "PATCH with a bad type")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "organisation_id": new_id()}})
    expect_validation(r, ["data.organisation_id"], "PATCH with another organisation_id")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "id": new_id()}})
    expect_validation(r, ["data.id"], "PATCH with another id")
    for bad in ["x", [], 5]:
        r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": bad}})
        expect_validation(r, ["data.attributes"], "PATCH with attributes %r" % (bad,), exact=False)
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data["version"], 0, "version after rejected patches")
    eq(r.data["attributes"], d["attributes"], "attributes after rejected patches")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": {"currency": "JPY",
                                                                                 "amount": "10"}}})
    expect_status(r, 200, "PATCH to JPY with amount 10")


@test
def patch_versions(t):
    d = create(t.c)
    pid = d["id"]
    r = t.c.patch("/v1/payments/" + pid, {"data": {"attributes": {"reference": "x"}}})
    expect_error(r, 428, "version_required", "PATCH without version")
    expect_status(t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": {}}}), 200,
                  "PATCH v0 with an empty patch")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 0, "attributes": {"reference": "x"}}})
    j = expect_error(r, 409, "version_conflict", "stale PATCH")
    eq(j.get("current_version"), 1, "current_version of stale PATCH")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"attributes": {"reference": "x"}}},
                  headers={"If-Match": 'W/"1"'})
    expect_error(r, 400, None, "PATCH with a weak If-Match", codes=["bad_request", "validation_failed"])
    r = t.c.patch("/v1/payments/" + new_id(), {"data": {"version": 0, "attributes": {"reference": "x"}}})
    expect_error(r, 404, "not_found", "PATCH unknown id")


# --------------------------------------------------------------------------
# delete and tombstones

@test
def delete_unconditional_and_tombstone(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    expect_status(t.c.put("/v1/payments/" + pid, _put_body(org, 0)), 200, "PUT before delete")
    r = t.c.delete("/v1/payments/" + pid)
    expect_status(r, 204, "DELETE without version")
    eq(r.body, b"", "204 body")
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET deleted")
    expect_error(t.c.put("/v1/payments/" + pid, _put_body(org, 1)), 404, "not_found", "PUT deleted")
    expect_error(t.c.patch("/v1/payments/" + pid, {"data": {"version": 1, "attributes": {}}}), 404,
                 "not_found", "PATCH deleted")
    expect_error(t.c.delete("/v1/payments/" + pid), 404, "not_found", "DELETE deleted")
    expect_error(t.c.delete("/v1/payments/" + pid + "?version=1"), 404, "not_found",
                 "DELETE deleted with version")
    expect_error(t.c.post("/v1/payments", payment(org, pid=pid)), 409, "duplicate_id",
                 "re-create a deleted id")
    expect_error(t.c.post("/v1/payments", payment(new_id(), pid=pid.upper())), 409, "duplicate_id",
                 "re-create a deleted id in upper case, another organisation")
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET deleted after re-create attempts")


@test
def delete_conditional_query_version(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    expect_status(t.c.put("/v1/payments/" + pid, _put_body(org, 0)), 200, "PUT")
    r = t.c.delete("/v1/payments/%s?version=0" % pid)
    j = expect_error(r, 409, "version_conflict", "DELETE ?version=0 of version 1")
    eq(j.get("current_version"), 1, "current_version")
    expect_status(t.c.get("/v1/payments/" + pid), 200, "GET after refused DELETE")
    for q in ["abc", "-1", "1.0", ""]:
        expect_error(t.c.delete("/v1/payments/%s?version=%s" % (pid, q)), 400, None,
                     "DELETE ?version=%s" % q, codes=["bad_request", "validation_failed"])
    expect_status(t.c.get("/v1/payments/" + pid), 200, "GET after malformed conditional DELETEs")
    expect_status(t.c.delete("/v1/payments/%s?version=1" % pid.upper()), 204, "DELETE ?version=1")
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET after DELETE")


@test
def delete_conditional_if_match(t):
    d = create(t.c)
    pid = d["id"]
    expect_error(t.c.delete("/v1/payments/" + pid, headers={"If-Match": '"5"'}), 409,
                 "version_conflict", "DELETE If-Match \"5\" of version 0")
    expect_error(t.c.delete("/v1/payments/" + pid, headers={"If-Match": 'W/"0"'}), 400, None,
                 "DELETE with a weak If-Match", codes=["bad_request", "validation_failed"])
    expect_status(t.c.get("/v1/payments/" + pid), 200, "GET after refused DELETEs")
    expect_status(t.c.delete("/v1/payments/" + pid, headers={"If-Match": '"0"'}), 204,
                  "DELETE If-Match \"0\"")
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET after DELETE")


@test
def delete_unknown_404(t):
    expect_error(t.c.delete("/v1/payments/" + new_id()), 404, "not_found", "DELETE unknown")
    expect_error(t.c.delete("/v1/payments/%s?version=3" % new_id()), 404, "not_found",
                 "DELETE unknown with ?version=3 (existence before version)")
    expect_error(t.c.delete("/v1/payments/" + new_id(), headers={"If-Match": '"3"'}), 404,
                 "not_found", "DELETE unknown with If-Match")


# --------------------------------------------------------------------------
# which error wins

@test
def error_order(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    unknown = new_id()
    bad_json = b'{"data": {'
    cases = [
        ("invalid id + bad content type",
         lambda: t.c.put("/v1/payments/xyz", bad_json, ctype="text/plain"), 400, "invalid_id"),
        ("invalid id + bad JSON",
         lambda: t.c.put("/v1/payments/xyz", bad_json), 400, "invalid_id"),
        ("bad content type + bad JSON (POST)",
         lambda: t.c.post("/v1/payments", bad_json, ctype="text/plain"), 415, "unsupported_media_type"),
        ("bad content type + bad JSON (PUT unknown id)",
         lambda: t.c.put("/v1/payments/" + unknown, bad_json, ctype="text/plain"), 415,
         "unsupported_media_type"),
        ("no content type + validation errors",
         lambda: t.c.post("/v1/payments", {"data": {}}, ctype=None), 415, "unsupported_media_type"),
        ("bad JSON on an unknown id",
         lambda: t.c.put("/v1/payments/" + unknown, bad_json), 400, "bad_request"),
        ("validation errors + no version",
         lambda: t.c.put("/v1/payments/" + pid, _put_body(org, None, amount="abc")), 400,
         "validation_failed"),
        ("validation errors + unknown id",
         lambda: t.c.put("/v1/payments/" + unknown, _put_body(org, 0, amount="abc")), 400,
         "validation_failed"),
        ("validation errors + stale version",
         lambda: t.c.put("/v1/payments/" + pid, _put_body(org, 9, amount="abc")), 400,
         "validation_failed"),
        ("no version + unknown id (PUT)",
         lambda: t.c.put("/v1/payments/" + unknown, _put_body(org)), 428, "version_required"),
        ("no version + unknown id (PATCH)",
         lambda: t.c.patch("/v1/payments/" + unknown, {"data": {"attributes": {}}}), 428,
         "version_required"),
        ("unknown id + stale version (PUT)",
         lambda: t.c.put("/v1/payments/" + unknown, _put_body(org, 5)), 404, "not_found"),
        ("unknown id + stale If-Match (PUT)",
         lambda: t.c.put("/v1/payments/" + unknown, _put_body(org), headers={"If-Match": '"5"'}), 404,
         "not_found"),
        ("unknown id + stale version (PATCH)",
         lambda: t.c.patch("/v1/payments/" + unknown, {"data": {"version": 5}}), 404, "not_found"),
        ("duplicate id + validation errors (POST)",
         lambda: t.c.post("/v1/payments", payment(org, pid=pid, amount="-1")), 400, "validation_failed"),
        ("duplicate id + version 1 (POST)",
         lambda: t.c.post("/v1/payments", dict(data=dict(payment(org, pid=pid)["data"], version=1))),
         400, "validation_failed"),
    ]
    for what, call, status, code in cases:
        expect_error(call(), status, code, what)
    eq(t.c.get("/v1/payments/" + pid).data["version"], 0, "version after the error cases")


# --------------------------------------------------------------------------
# request body syntax

def _nested(depth_in_attributes):
    """A create body whose deepest object sits at level 3 + depth_in_attributes
    (root is 1, data 2, attributes 3)."""
    inner = {}
    for _ in range(depth_in_attributes - 1):
        inner = {"d": inner}
    return payment(deep=inner)


@test
def body_json_syntax(t):
    for body, what in [(b"{", "truncated JSON"), (b"", "empty body"), (b"{'data': {}}", "single quotes"),
                       (b'{"data": {}} x', "trailing garbage"), (b'{"data": {},}', "trailing comma"),
                       (b'{"data": {"organisation_id": "%s", "attributes": {"amount": "1.00", '
                        b'"currency": "EUR", "x": "\xff\xfe"}}}' % new_id().encode(), "invalid UTF-8"),
                       (b'{"data": {"organisation_id": "%s", "attributes": {"amount": "1.00", '
                        b'"currency": "EUR", "x": "\\ud800"}}}' % new_id().encode(), "lone surrogate escape"),
                       (b'{"data": {"organisation_id": "%s", "attributes": {"amount": "1.00", '
                        b'"currency": "EUR", "x": "a\x01b"}}}' % new_id().encode(), "raw control character")]:
        expect_error(t.c.post("/v1/payments", body), 400, None, "POST with %s" % what,
                     codes=["bad_request", "validation_failed"])
    expect_error(t.c.post("/v1/payments", b"{"), 400, "bad_request", "POST with truncated JSON")


@test
def body_duplicate_keys_400(t):
    org = new_id()
    for body, what in [
        ('{"data": {"organisation_id": "%s", "attributes": {"amount": "1.00", "currency": "EUR"}},'
         ' "data": {"organisation_id": "%s", "attributes": {"amount": "1.00", "currency": "EUR"}}}' % (org, org),
         "duplicate root key"),
        ('{"data": {"organisation_id": "%s", "attributes": {"amount": "1.00", "amount": "2.00", '
         '"currency": "EUR"}}}' % org, "duplicate attribute"),
        ('{"data": {"organisation_id": "%s", "attributes": {"amount": "1.00", "currency": "EUR", '
         '"x": {"k": 1, "k": 1}}}}' % org, "duplicate key deep inside"),
    ]:
        expect_error(t.c.post("/v1/payments", body), 400, None, "POST with %s" % what,
                     codes=["bad_request", "validation_failed"])


@test
def body_nesting_limit(t):
    r = t.c.post("/v1/payments", _nested(29))  # deepest object at level 32
    expect_status(r, 201, "POST nested 32 deep")
    g = t.c.get("/v1/payments/" + r.data["id"])
    eq(json.dumps(g.data["attributes"]["deep"]), json.dumps(_nested(29)["data"]["attributes"]["deep"]),
       "32-deep attribute round trip")
    expect_error(t.c.post("/v1/payments", _nested(30)), 400, None, "POST nested 33 deep",
                 codes=["bad_request", "validation_failed"])
    # arrays count as levels too
    body = payment()
    inner = []
    for _ in range(29):
        inner = [inner]
    body["data"]["attributes"]["deep"] = inner  # deepest array at level 33
    expect_error(t.c.post("/v1/payments", body), 400, None, "POST with arrays nested 33 deep",
                 codes=["bad_request", "validation_failed"])
    # a deep body on PUT and PATCH too
    d = r.data
    deep = _nested(30)["data"]["attributes"]
    r = t.c.patch("/v1/payments/" + d["id"], {"data": {"version": 0, "attributes": {"deep": deep["deep"]}}})
    expect_error(r, 400, None, "PATCH nested too deep", codes=["bad_request", "validation_failed"])


@test
def body_root_not_object_400(t):
    for body in [b"[]", b'"text"', b"42", b"null", b"true", b'[{"data": {}}]']:
        expect_error(t.c.post("/v1/payments", body), 400, None, "POST with root %r" % body,
                     codes=["bad_request", "validation_failed"])
    for body in [{"data": None}, {"data": []}, {"data": "x"}, {}, {"nodata": {}}]:
        expect_error(t.c.post("/v1/payments", body), 400, None, "POST %s" % json.dumps(body),
                     codes=["bad_request", "validation_failed"])


@test
def body_too_large_default_limit(t):
    # default --max-body is 256 KiB
    filler = "x" * (256 * 1024)
    body = json.dumps(payment(filler=filler)).encode()
    req = raw_request("POST", "/v1/payments", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body)))], body)
    r = t.c.raw(req)
    expect_error(r, 413, "payload_too_large", "POST of %d bytes with the default limit" % len(body))
    # just under the limit is fine
    body = payment()
    base = len(json.dumps(body).encode())
    body["data"]["attributes"]["filler"] = "x" * (256 * 1024 - base - len(', "filler": ""'))
    enc = json.dumps(body).encode()
    eq(len(enc), 256 * 1024, "test body size")
    expect_status(t.c.post("/v1/payments", enc), 201, "POST of exactly 256 KiB")


# --------------------------------------------------------------------------
# the seed sample

def _seed():
    with open(SEED, "rb") as f:
        return json.loads(f.read())


@test
def seed_as_is_names_only_payment_purpose_coded(t):
    with open(SEED, "rb") as f:
        raw = f.read()
    r = t.c.post("/v1/payments", raw)
    expect_validation(r, ["data.attributes.payment_purpose_coded"], "POST seed-payment.json as is")


@test
def seed_round_trip(t):
    seed = _seed()
    seed["data"]["attributes"]["payment_purpose_coded"] = "X"
    r = t.c.post("/v1/payments", seed)
    expect_status(r, 201, "POST seed with payment_purpose_coded X")
    d = _check_resource(r, "POST seed", version=0)
    pid = d["id"]
    want_attrs = strip_nulls(seed["data"]["attributes"])
    want_rel = seed["data"]["relationships"]
    eq(d["attributes"], want_attrs, "seed attributes in the 201")
    eq(d.get("relationships"), want_rel, "seed relationships in the 201")
    eq(d["organisation_id"], seed["data"]["organisation_id"], "organisation_id")
    eq(d["type"], "payments", "type")
    r = t.c.get("/v1/payments/" + pid)
    expect_status(r, 200, "GET seed payment")
    eq(r.data, d, "GET seed payment equals the 201")

    # replace with every attribute changed a little
    rep = copy.deepcopy(seed)
    rep["data"]["version"] = 0
    a = rep["data"]["attributes"]
    a["amount"] = "27.50"
    a["reference"] = "rent for nov"
    a["beneficiary_party"]["address"] = ["2 Clarence Mew"]
    a["swift"]["header"]["recipient"] = "ABCDGB22"
    del a["ultimate_debtor"]
    rep["data"]["relationships"] = {"payment_return": want_rel["payment_return"]}
    r = t.c.put("/v1/payments/" + pid, rep)
    expect_status(r, 200, "PUT seed")
    d1 = _check_resource(r, "PUT seed", pid=pid, version=1)
    eq(d1["attributes"], strip_nulls(a), "attributes after PUT")
    eq(d1.get("relationships"), rep["data"]["relationships"], "relationships after PUT")
    eq(t.c.get("/v1/payments/" + pid).data, d1, "GET after PUT")

    patch = {"reference": "patched", "fx": {"exchange_rate": "0.2", "contract_reference": None},
             "beneficiary_party": {"account_with": {"bank_name": "OTHER BANK"}},
             "ultimate_beneficiary": None, "payment_purpose_coded": None}
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 1, "attributes": patch}})
    expect_status(r, 200, "PATCH seed")
    d2 = _check_resource(r, "PATCH seed", pid=pid, version=2)
    eq(d2["attributes"], merge_patch(d1["attributes"], patch), "attributes after PATCH")
    eq(d2.get("relationships"), d1.get("relationships"), "relationships after PATCH")
    eq(t.c.get("/v1/payments/" + pid).data, d2, "GET after PATCH")

    expect_status(t.c.delete("/v1/payments/%s?version=2" % pid), 204, "DELETE seed")
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET seed after DELETE")


# --------------------------------------------------------------------------
# concurrency

@test
def concurrent_updates_one_wins(t):
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    n = 20
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(timeout=20)
            r = t.srv.client().put("/v1/payments/" + pid, _put_body(org, 0, reference="w%d" % i))
            results[i] = (r.status, (r.json or {}).get("current_version"), (r.json or {}).get("error_code"))
        except Exception as e:  # reported below
            results[i] = ("error", repr(e), None)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    check(all(not th.is_alive() for th in threads), "some PUTs never returned")
    ok = [i for i, x in enumerate(results) if x[0] == 200]
    conflicts = [x for x in results if x[0] == 409]
    check(len(ok) == 1 and len(conflicts) == n - 1,
          "20 concurrent PUTs of version 0: %d got 200, %d got 409, others %s"
          % (len(ok), len(conflicts), [x for x in results if x[0] not in (200, 409)][:3]))
    check(all(x[1] == 1 and x[2] == "version_conflict" for x in conflicts),
          "409s without version_conflict/current_version 1: %s" % conflicts[:3])
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data["version"], 1, "version after the race")
    eq(r.data["attributes"].get("reference"), "w%d" % ok[0], "the winner's write is the stored one")


def _race(t, n, call):
    """Runs call(client) in n threads released together; returns the statuses."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            c = t.srv.client()
            barrier.wait(timeout=20)
            results[i] = call(c, i).status
        except Exception as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    check(all(not th.is_alive() for th in threads), "some requests never returned")
    return results


@test
def concurrent_creates_same_id(t):
    pid, org = new_id(), new_id()
    res = _race(t, 20, lambda c, i: c.post("/v1/payments", payment(org, pid=pid, reference="c%d" % i)))
    check(res.count(201) == 1 and res.count(409) == 19,
          "20 concurrent creates of one id: %s" % sorted(map(str, res)))
    r = t.c.get("/v1/payments/" + pid)
    expect_status(r, 200, "GET the raced id")
    eq(r.data["version"], 0, "version")


@test
def concurrent_conditional_deletes(t):
    pid = create(t.c)["id"]
    res = _race(t, 10, lambda c, i: c.delete("/v1/payments/%s?version=0" % pid))
    check(res.count(204) == 1 and all(x in (404, 409) for x in res if x != 204),
          "10 concurrent DELETE ?version=0: %s" % sorted(map(str, res)))
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET after the race")


@test
def concurrent_patches_lose_nothing(t):
    d = create(t.c)
    pid = d["id"]
    nthreads, writes = 4, 5
    errors = []

    def worker(i):
        c = t.srv.client()
        done = attempts = 0
        while done < writes and attempts < 200:
            attempts += 1
            try:
                g = c.get("/v1/payments/" + pid)
                v = g.data["version"]
                r = c.patch("/v1/payments/" + pid,
                            {"data": {"version": v, "attributes": {"t%d_%d" % (i, done): True}}})
            except Exception as e:
                errors.append(repr(e))
                return
            if r.status == 200:
                done += 1
            elif r.status != 409:
                errors.append(r.describe())
                return
        if done < writes:
            errors.append("thread %d: only %d writes in %d attempts" % (i, done, attempts))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=90)
    check(all(not th.is_alive() for th in threads), "some PATCH loops never finished")
    check(not errors, "concurrent PATCH errors: %s" % errors[:3])
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data["version"], nthreads * writes, "version after %d successful patches" % (nthreads * writes))
    missing = ["t%d_%d" % (i, k) for i in range(nthreads) for k in range(writes)
               if ("t%d_%d" % (i, k)) not in r.data["attributes"]]
    check(not missing, "lost updates: %s" % missing)


# --------------------------------------------------------------------------
# findings of the first review, kept as regressions

@test
def put_org_mismatch_is_validation_before_version(t):
    d = create(t.c)
    body = payment(org=new_id())  # no version anywhere
    expect_validation(t.c.put("/v1/payments/%s" % d["id"], body), ["data.organisation_id"],
                      "PUT with another organisation_id and no version")
    # Unknown id and no version: 428 wins over 404.
    expect_error(t.c.put("/v1/payments/%s" % new_id(), payment()), 428, "version_required",
                 "PUT unknown id without version")


@test
def null_relationships_mean_absent_or_removed(t):
    body = payment()
    body["data"]["relationships"] = None
    d = create(t.c, body, "create with relationships null")
    check("relationships" not in d, "create stored relationships null: %s" % short(d))
    # PATCH adding relationships to a payment that has none.
    r = t.c.patch("/v1/payments/%s" % d["id"], {"data": {"version": 0, "relationships": {"y": {}}}})
    expect_status(r, 200, "PATCH adding relationships")
    eq(r.data.get("relationships"), {"y": {}}, "relationships added by PATCH")
    body = payment(org=d["organisation_id"])
    body["data"]["relationships"] = {"x": {"data": []}}
    body["data"]["version"] = 1
    r = t.c.put("/v1/payments/%s" % d["id"], body)
    expect_status(r, 200, "PUT with relationships")
    eq(r.data.get("relationships"), {"x": {"data": []}}, "relationships after PUT")
    r = t.c.patch("/v1/payments/%s" % d["id"],
                  {"data": {"version": 2, "relationships": None, "attributes": None}})
    expect_status(r, 200, "PATCH relationships null, attributes null")
    check("relationships" not in r.data, "PATCH relationships null kept them: %s" % short(r.data))
    eq(r.data["attributes"], d["attributes"], "attributes after a null attributes patch")


@test
def nul_in_path_is_not_an_id(t):
    d = create(t.c)
    expect_error(t.c.get("/v1/payments/%s%%00junk" % d["id"]), 400, "invalid_id",
                 "GET <id>%00junk")


@test
def declared_oversized_body_answered_before_upload(t):
    # 1 TB declared, 10 bytes sent: the 413 must come without the upload.
    r = t.c.raw(raw_request("POST", "/v1/payments",
                            [("Content-Type", "application/json"),
                             ("Content-Length", "1000000000000")], b'{"data":{}'),
                timeout=5)
    expect_error(r, 413, "payload_too_large", "POST declaring 1 TB")


@test
def location_with_long_public_url(t):
    d = t.scratch("longurl")
    prefix = "http://example.com/" + "p" * 600
    srv = Server(t.binary, d, name="longurl", args=["--public-url", prefix])
    srv.start()
    try:
        r = srv.client().post("/v1/payments", payment())
        expect_status(r, 201, "create behind a long public URL")
        eq(r.header("Location"), "%s/v1/payments/%s" % (prefix, r.data["id"]), "Location")
    finally:
        srv.stop()
