"""Routes, aliases, 404/405, health, index, content types, request ids,
keep-alive and the access log."""

import http.client
import json
import time
import uuid

from harness import (HOST, TIMEOUT, check, create, eq, expect_error, expect_status, is_json_ctype,
                     metric_series, metrics_text, new_id, payment, test)


@test
def healthz(t):
    r = t.c.get("/healthz")
    expect_status(r, 200, "GET /healthz")


@test
def readyz(t):
    r = t.c.get("/readyz")
    expect_status(r, 200, "GET /readyz with a working store")


@test
def v1_index(t):
    r = t.c.get("/v1")
    expect_status(r, 200, "GET /v1")
    check(is_json_ctype(r), "GET /v1: Content-Type %r" % r.header("Content-Type"))
    check(isinstance(r.json, dict), "GET /v1: body is not a JSON object: %r" % r.body[:200])
    check("/v1/payments" in json.dumps(r.json), "GET /v1: no link to /v1/payments in %s" % r.body[:300])


@test
def unknown_paths_404(t):
    for path in ["/", "/v2/payments", "/v1/paymentsx", "/v1/payments/%s/extra" % new_id(),
                 "/v1/payment/%s/x" % new_id(), "/healthzz", "/v1/nothing"]:
        expect_error(t.c.get(path), 404, "not_found", "GET %s" % path)
    expect_error(t.c.post("/v1/nothing", payment()), 404, "not_found", "POST /v1/nothing")


def _allow(r):
    v = r.header("Allow")
    check(v is not None, "405 without an Allow header")
    return {m.strip().upper() for m in v.split(",") if m.strip()}


@test
def method_not_allowed_405_with_allow(t):
    pid = new_id()
    cases = [
        ("DELETE", "/v1/payments", {"GET", "POST"}, {"DELETE", "PUT", "PATCH"}),
        ("PUT", "/v1/payments", {"GET", "POST"}, {"DELETE", "PUT", "PATCH"}),
        ("POST", "/v1/payments/" + pid, {"GET", "PUT", "PATCH", "DELETE"}, {"POST"}),
        ("PATCH", "/v1/payment/" + pid, {"GET", "PUT", "DELETE"}, {"PATCH", "POST"}),
        ("POST", "/v1/payment/" + pid, {"GET", "PUT", "DELETE"}, {"PATCH", "POST"}),
        ("GET", "/v1/payment", {"POST"}, {"GET"}),
        ("DELETE", "/v1/payment", {"POST"}, {"GET", "DELETE"}),
        ("POST", "/healthz", {"GET"}, {"POST"}),
        ("POST", "/readyz", {"GET"}, {"POST"}),
        ("DELETE", "/v1", {"GET"}, {"DELETE"}),
    ]
    for method, path, must, mustnt in cases:
        body = payment() if method in ("POST", "PUT", "PATCH") else None
        r = t.c.request(method, path, body)
        what = "%s %s" % (method, path)
        expect_error(r, 405, "method_not_allowed", what)
        allow = _allow(r)
        check(must <= allow, "%s: Allow %s lacks %s" % (what, sorted(allow), sorted(must - allow)))
        check(not (mustnt & allow), "%s: Allow %s has %s" % (what, sorted(allow), sorted(mustnt & allow)))


@test
def method_checked_before_id_syntax(t):
    # route and method (405) win over id syntax (400)
    r = t.c.post("/v1/payments/not-a-uuid", payment())
    expect_error(r, 405, "method_not_allowed", "POST /v1/payments/not-a-uuid")


@test
def aliases_singular_routes(t):
    org = new_id()
    r = t.c.post("/v1/payment", payment(org))
    expect_status(r, 201, "POST /v1/payment")
    pid = r.data["id"]
    r = t.c.get("/v1/payment/" + pid)
    expect_status(r, 200, "GET /v1/payment/{id}")
    eq(r.data["id"], pid, "GET /v1/payment/{id} data.id")
    body = payment(org, reference="alias put")
    body["data"]["version"] = 0
    r = t.c.put("/v1/payment/" + pid, body)
    expect_status(r, 200, "PUT /v1/payment/{id}")
    eq(r.data["version"], 1, "PUT /v1/payment/{id} version")
    eq(r.data["attributes"].get("reference"), "alias put", "PUT /v1/payment/{id} reference")
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data["version"], 1, "canonical GET after alias PUT: version")
    r = t.c.delete("/v1/payment/" + pid)
    expect_status(r, 204, "DELETE /v1/payment/{id}")
    expect_error(t.c.get("/v1/payments/" + pid), 404, "not_found", "GET after alias DELETE")


@test
def content_types_accepted(t):
    for ct in ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8",
               "application/vnd.api+json", "application/vnd.api+json; charset=utf-8"]:
        r = t.c.post("/v1/payments", payment(), ctype=ct)
        expect_status(r, 201, "POST with Content-Type %r" % ct)
    d = create(t.c)
    pid, org = d["id"], d["organisation_id"]
    body = payment(org)
    body["data"]["version"] = 0
    r = t.c.put("/v1/payments/" + pid, body, ctype="application/vnd.api+json; charset=utf-8")
    expect_status(r, 200, "PUT with application/vnd.api+json; charset=utf-8")
    r = t.c.patch("/v1/payments/" + pid, {"data": {"version": 1, "attributes": {"reference": "r"}}},
                  ctype="application/vnd.api+json")
    expect_status(r, 200, "PATCH with application/vnd.api+json")


@test
def content_types_rejected_415(t):
    pid = create(t.c)["id"]
    for ct in ["text/plain", "application/xml", "application/x-www-form-urlencoded",
               "application/jsonx", "text/json", "multipart/form-data; boundary=x"]:
        expect_error(t.c.post("/v1/payments", payment(), ctype=ct), 415, "unsupported_media_type",
                     "POST with Content-Type %r" % ct)
    expect_error(t.c.post("/v1/payments", payment(), ctype=None), 415, "unsupported_media_type",
                 "POST without Content-Type")
    upd = {"data": {"version": 0, "attributes": {"amount": "1.00", "currency": "EUR"}}}
    expect_error(t.c.put("/v1/payments/" + pid, upd, ctype="text/plain"), 415,
                 "unsupported_media_type", "PUT text/plain")
    expect_error(t.c.put("/v1/payments/" + pid, upd, ctype=None), 415,
                 "unsupported_media_type", "PUT without Content-Type")
    expect_error(t.c.patch("/v1/payments/" + pid, upd, ctype="text/plain"), 415,
                 "unsupported_media_type", "PATCH text/plain")
    r = t.c.get("/v1/payments/" + pid)
    eq(r.data["version"], 0, "version after rejected writes")


@test
def responses_are_json(t):
    pid = create(t.c)["id"]
    for r, what in [(t.c.get("/v1/payments/" + pid), "GET payment"),
                    (t.c.get("/v1/payments?page[size]=1"), "GET list"),
                    (t.c.post("/v1/payments", payment()), "POST")]:
        check(is_json_ctype(r), "%s: Content-Type %r, expected application/json"
              % (what, r.header("Content-Type")))


@test
def request_id_echoed_when_sane(t):
    rid = "req-%s_A.b" % uuid.uuid4().hex[:12]
    for r, what in [(t.c.get("/healthz", headers={"X-Request-Id": rid}), "GET /healthz"),
                    (t.c.get("/nowhere", headers={"X-Request-Id": rid}), "GET /nowhere (404)"),
                    (t.c.post("/v1/payments", payment(), headers={"X-Request-Id": rid}), "POST")]:
        eq(r.header("X-Request-Id"), rid, "%s: X-Request-Id" % what)


@test
def request_id_generated_otherwise(t):
    seen = set()
    for sent in [None, None, "x" * 2000, "bad id with spaces", "<script>\"'{}", ""]:
        h = {} if sent is None else {"X-Request-Id": sent}
        r = t.c.get("/v1/payments/" + new_id(), headers=h)
        got = r.header("X-Request-Id")
        what = "X-Request-Id when sent %r" % (sent if sent is None or len(sent) < 40 else sent[:20] + "...")
        check(got is not None and got.strip() != "", "%s: missing in response" % what)
        check(got != sent, "%s: echoed an insane value" % what)
        check(len(got) <= 128 and got.isprintable() and " " not in got,
              "%s: generated value is not sane: %r" % (what, got[:80]))
        seen.add(got)
    eq(len(seen), 6, "distinct generated request ids over 6 requests")
    # always present, also on errors and 405
    for method, path in [("DELETE", "/v1/payments"), ("GET", "/v1/payments/nope"), ("GET", "/x")]:
        r = t.c.request(method, path)
        check(r.header("X-Request-Id"), "%s %s: no X-Request-Id" % (method, path))


@test
def keep_alive(t):
    c = http.client.HTTPConnection(HOST, t.srv.port, timeout=TIMEOUT)
    try:
        c.request("GET", "/healthz")
        r1 = c.getresponse()
        r1.read()
        expect_status_raw(r1, 200, "first request")
        check((r1.getheader("Connection") or "").lower() != "close",
              "GET /healthz answered with Connection: close")
        sock = c.sock
        check(sock is not None, "http.client closed the connection after the first response")
        body = json.dumps(payment()).encode()
        c.request("POST", "/v1/payments", body=body, headers={"Content-Type": "application/json"})
        r2 = c.getresponse()
        b2 = r2.read()
        expect_status_raw(r2, 201, "second request on the same connection")
        check((r2.getheader("Connection") or "").lower() != "close",
              "POST /v1/payments answered with Connection: close")
        check(c.sock is sock, "second request did not reuse the connection")
        pid = json.loads(b2)["data"]["id"]
        c.request("GET", "/v1/payments/" + pid)
        r3 = c.getresponse()
        r3.read()
        expect_status_raw(r3, 200, "third request on the same connection")
        check(c.sock is sock, "third request did not reuse the connection")
        check((r3.getheader("Connection") or "").lower() != "close",
              "GET /v1/payments/{id} answered with Connection: close")
        c.request("GET", "/v1/payments/" + str(uuid.uuid4()))
        r4 = c.getresponse()
        r4.read()
        expect_status_raw(r4, 404, "fourth request (unknown id) on the same connection")
        check((r4.getheader("Connection") or "").lower() != "close",
              "GET of an unknown id answered with Connection: close")
        c.request("GET", "/healthz")
        r5 = c.getresponse()
        r5.read()
        expect_status_raw(r5, 200, "request after a 404 on the same connection")
        check(c.sock is sock, "request after a 404 did not reuse the connection")
    finally:
        c.close()


def expect_status_raw(r, status, what):
    check(r.status == status, "%s: expected %d, got %d" % (what, status, r.status))


def _find_log(srv, rid, n=1, wait=3.0):
    deadline = time.monotonic() + wait
    while True:
        recs = [x for x in srv.log_records() if x.get("request_id") == rid]
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


@test
def access_log_one_json_line_per_request(t):
    pid = new_id()
    cases = [("GET", "/healthz", None, 200), ("POST", "/v1/payments", payment(pid=pid), 201),
             ("GET", "/v1/payments/" + pid, None, 200), ("GET", "/v1/payments/zzz", None, 400),
             ("DELETE", "/v1/payments", None, 405)]
    for method, path, body, status in cases:
        rid = "log-%s" % uuid.uuid4().hex
        r = t.c.request(method, path, body, headers={"X-Request-Id": rid})
        expect_status(r, status, "%s %s" % (method, path))
        recs = _find_log(t.srv, rid)
        what = "access log of %s %s" % (method, path)
        eq(len(recs), 1, "%s: lines with request_id %s" % (what, rid))
        rec = recs[0]
        eq(rec.get("method"), method, "%s: method" % what)
        check(isinstance(rec.get("path"), str) and rec["path"].startswith(path),
              "%s: path %r" % (what, rec.get("path")))
        check(rec.get("status") in (status, str(status)), "%s: status %r" % (what, rec.get("status")))
        check(isinstance(rec.get("time"), str) and len(rec["time"]) >= 10,
              "%s: time %r" % (what, rec.get("time")))
        dur = [k for k in rec if k.startswith("duration")]
        check(dur and isinstance(rec[dur[0]], (int, float)) and rec[dur[0]] >= 0,
              "%s: no numeric duration field in %s" % (what, json.dumps(rec)))
    # a generated id is the one logged
    r = t.c.get("/healthz")
    rid = r.header("X-Request-Id")
    eq(len(_find_log(t.srv, rid)), 1, "access log lines for generated request id %r" % rid)


@test
def stderr_lines_are_json(t):
    bad = [ln for ln in t.srv.stderr_text().splitlines() if ln.strip()
           and not _is_json_object(ln)]
    check(not bad, "non-JSON lines on stderr: %r" % bad[:3])


def _is_json_object(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@test
def metrics_exposition(t):
    import re
    create(t.c)
    expect_error(t.c.get("/v1/payments/%s" % new_id()), 404, "not_found", "GET unknown")
    body = metrics_text(t.c.port)
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*\})? '
                        r'[-+]?[0-9.eE+]+$')
    for line in body.splitlines():
        if line.startswith("#"):
            check(re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line),
                  "/metrics: malformed comment line %r" % line)
        else:
            check(sample.match(line), "/metrics: malformed sample line %r" % line)
    created = 'method="POST",route="/v1/payments",status="201"'
    name = "paymentd_http_request_duration_seconds_count"
    n0 = metric_series(body, name, created)
    check(n0 is not None and n0 >= 1, "/metrics: no count of POST 201 in\n%s" % body[:2000])
    check((metric_series(body, name, 'method="GET",route="/v1/payments/{id}",status="404"') or 0) >= 1,
          "/metrics: no count of GET 404")
    check((metric_series(body, "paymentd_http_open_connections") or 0) >= 1,
          "/metrics: open connections should count the scraping one")
    check((metric_series(body, "paymentd_store_operation_duration_seconds_count", 'op="create"') or 0)
          >= 1, "/metrics: no store create latency")
    check((metric_series(body, "paymentd_store_commit_batch_size_count") or 0) >= 1,
          "/metrics: no group-commit batch sizes")
    check(metric_series(body, "paymentd_store_commits_total") is not None, "/metrics: no commit count")
    # Buckets are cumulative and end in +Inf equal to _count.
    inf = metric_series(body, "paymentd_http_request_duration_seconds_bucket", created + ',le="+Inf"')
    check(inf == n0, "/metrics: +Inf bucket %r differs from count %r" % (inf, n0))
    create(t.c)
    create(t.c)
    # A request is counted when it completes, just after its answer left:
    # give the count a moment to catch up.
    deadline = time.monotonic() + 2
    n1 = metric_series(metrics_text(t.c.port), name, created)
    while n1 < n0 + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        n1 = metric_series(metrics_text(t.c.port), name, created)
    # n0 itself may have missed the first create by that moment: 2 or 3.
    check(n0 + 2 <= n1 <= n0 + 3,
          "/metrics: POST 201 count went from %r to %r after two creates" % (n0, n1))
