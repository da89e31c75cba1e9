"""The operator console's server side (issue "Operator console"): read-only
API keys, GET /v1/me, and the console's files served from the binary at
/console/ (security headers, entity tags, content types, unknown paths and
traversal attempts, HEAD).  The pages themselves and the browser tests are
elsewhere; the file checks here compare with whatever console/ holds."""

import contextlib
import hashlib
import http.client
import os
import socket

from harness import (HOST, TIMEOUT, Resp, Server, check, eq, expect_error, expect_status, new_id,
                     payment, qs, test)

ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
KEYS = {"writer": "writer-console-51e2", "reader": "reader-console-9a07",
        "root": "root-console-33cd", "oldstyle": "oldstyle-console-e81b"}
CONSOLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "console")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
         ".mjs": "text/javascript", ".json": "application/json", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2",
         ".txt": "text/plain"}
READ_ONLY = "this API key may only read"


@contextlib.contextmanager
def _server(t, name, keys=True, args=()):
    """A server of the test's own for the with block (with the key file of
    KEYS when keys), stopped after it with exit status 0 and no sanitizer
    report; killed when the block raised."""
    d = t.scratch(name)
    argv = ["--webhook-allow-private", "true"] + list(args)
    if keys:
        path = os.path.join(d, "keys")
        digest = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in KEYS.items()}
        with open(path, "w") as f:
            f.write("writer %s %s,%s write\n" % (digest["writer"], ORG_A, ORG_B))
            f.write("reader\t%s\t%s\tread\n" % (digest["reader"], ORG_A))
            f.write("root %s * read\n" % digest["root"])
            f.write("oldstyle %s %s\n" % (digest["oldstyle"], ORG_A))
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
    return {"Authorization": "Bearer %s" % KEYS[key]}


def _console_files():
    """{relative path: bytes} of every file the build embeds."""
    files = {}
    for folder, dirs, names in os.walk(CONSOLE):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith("."):
                full = os.path.join(folder, n)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, CONSOLE).replace(os.sep, "/")] = f.read()
    return files


def _file_get(srv, path, method="GET", headers=None):
    """A request on a connection of its own, not audited as JSON (the
    harness's Client expects JSON bodies, the console's files are not)."""
    c = http.client.HTTPConnection(HOST, srv.port, timeout=TIMEOUT)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return Resp(r.status, r.reason, r.getheaders(), r.read())
    finally:
        c.close()


def _expect_console_headers(r, what):
    eq(r.header("Content-Security-Policy"), CSP, "%s: Content-Security-Policy" % what)
    eq(r.header("X-Content-Type-Options"), "nosniff", "%s: X-Content-Type-Options" % what)
    eq(r.header("Referrer-Policy"), "no-referrer", "%s: Referrer-Policy" % what)
    eq(r.header("X-Frame-Options"), "DENY", "%s: X-Frame-Options" % what)
    eq(len(r.header_all("Content-Security-Policy")), 1, "%s: CSP headers" % what)


def _raw_status(srv, target):
    """The status line's code for a GET of target sent as is (no client
    library normalising "..", "//" or escapes)."""
    with socket.create_connection((HOST, srv.port), timeout=10) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n", 1)[0].decode("latin-1")
    return int(head.split()[1]), data


# --- read-only keys -----------------------------------------------------------------------


@test
def read_only_key_reads_everything(t):
    with _server(t, "ro_reads") as srv:
        c = srv.client()
        r = c.post("/v1/payments", payment(org=ORG_A), headers=_as("writer"))
        expect_status(r, 201, "a write key creates")
        pid = r.data["id"]
        r = c.post("/v1/payments", payment(org=ORG_A), headers=_as("oldstyle"))
        expect_status(r, 201, "a key without the access field writes, as before")
        r = c.post("/v1/webhooks", {"data": {"organisation_id": ORG_A,
                                             "url": "http://127.0.0.1:9/hook",
                                             "event_types": ["*"]}}, headers=_as("writer"))
        expect_status(r, 201, "a write key registers an endpoint")
        wid = r.data["id"]
        for path in ["/v1", "/v1/payments", "/v1/payments/%s" % pid,
                     "/v1/payments/%s/history" % pid, "/v1/payments/%s/history/0" % pid,
                     "/v1/events?" + qs({"filter[organisation_id]": ORG_A}),
                     "/v1/webhooks", "/v1/webhooks/%s" % wid,
                     "/v1/webhooks/%s/deliveries" % wid, "/v1/me"]:
            for key in ["reader", "root"]:
                expect_status(c.get(path, headers=_as(key)), 200, "%s: GET %s" % (key, path))
            r = c.request("HEAD", path, headers=_as("reader"))
            expect_status(r, 200, "reader: HEAD %s" % path)
        r = c.get("/v1/payments", headers=_as("reader"))
        check(pid in [p["id"] for p in r.data], "the read key's list lacks the payment")


@test
def read_only_key_may_not_write(t):
    # No deliveries are attempted: what the store holds changes only by requests.
    with _server(t, "ro_writes", args=["--webhooks", "false"]) as srv:
        c = srv.client()
        r = c.post("/v1/webhooks", {"data": {"organisation_id": ORG_A,
                                             "url": "http://127.0.0.1:9/hook",
                                             "event_types": ["*"]}}, headers=_as("writer"))
        expect_status(r, 201, "a write key registers an endpoint")
        wid = r.data["id"]
        r = c.post("/v1/payments", payment(org=ORG_A), headers=_as("writer"))
        expect_status(r, 201, "a write key creates")
        pid = r.data["id"]
        span = {"data": {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}}
        expect_status(c.post("/v1/webhooks/%s/replay" % wid, span, headers=_as("writer")), 202,
                      "a write key replays")
        deliveries = c.get("/v1/webhooks/%s/deliveries" % wid, headers=_as("writer")).data
        check(deliveries, "the replay made no delivery to retry")
        did = deliveries[0]["id"] if deliveries else new_id()

        def snapshot():
            got = {}
            for path in ["/v1/payments", "/v1/payments/%s" % pid,
                         "/v1/payments/%s/history" % pid, "/v1/webhooks/%s" % wid,
                         "/v1/webhooks/%s/deliveries" % wid,
                         "/v1/events?" + qs({"filter[organisation_id]": ORG_A})]:
                r = c.get(path, headers=_as("writer"))
                expect_status(r, 200, "GET %s" % path)
                got[path] = r.json["data"]
            return got

        before = snapshot()
        body = payment(org=ORG_A)
        version = before["/v1/payments/%s" % pid]["version"]
        replace = payment(org=ORG_A)
        replace["data"]["version"] = version
        attempts = [
            ("POST", "/v1/payments", body),
            ("POST", "/v1/payment", body),
            ("PUT", "/v1/payments/%s" % pid, replace),
            ("PATCH", "/v1/payments/%s" % pid, {"data": {"version": version,
                                                         "attributes": {"reference": "x"}}}),
            ("DELETE", "/v1/payments/%s" % pid, None),
            ("DELETE", "/v1/payments/not-a-uuid", None),  # refused before the id is read
            ("POST", "/v1/webhooks", {"data": {"organisation_id": ORG_A,
                                               "url": "http://127.0.0.1:9/other",
                                               "event_types": ["*"]}}),
            ("PATCH", "/v1/webhooks/%s" % wid, {"data": {"description": "x"}}),
            ("POST", "/v1/webhooks/%s/secret/rotate" % wid, None),
            ("POST", "/v1/webhooks/%s/deliveries/%s/retry" % (wid, did), None),
            ("POST", "/v1/webhooks/%s/replay" % wid, span),
            ("DELETE", "/v1/webhooks/%s" % wid, None),
        ]
        for key in ["reader", "root"]:
            for method, path, payload in attempts:
                for idem in [None, new_id()]:
                    headers = dict(_as(key))
                    if idem:
                        headers["Idempotency-Key"] = idem
                    r = c.request(method, path, body=payload, headers=headers)
                    j = expect_error(r, 403, "forbidden", "%s: %s %s" % (key, method, path))
                    eq(j["error_message"], READ_ONLY, "%s: %s %s: message" % (key, method, path))
        # A bad key is still 401, a write key is still let in.
        expect_error(c.post("/v1/payments", body, headers={"Authorization": "Bearer nope"}),
                     401, "unauthorized", "a bad key writing")
        eq(snapshot(), before, "what the refused writes left")
        expect_status(c.delete("/v1/payments/%s" % pid, headers=_as("writer")), 204,
                      "the write key deletes")


# --- GET /v1/me ---------------------------------------------------------------------------


@test
def me_names_the_key(t):
    with _server(t, "me_keys") as srv:
        c = srv.client()
        want = {
            "writer": {"key_id": "writer", "organisations": [ORG_A, ORG_B], "write": True,
                       "open": False},
            "reader": {"key_id": "reader", "organisations": [ORG_A], "write": False,
                       "open": False},
            "root": {"key_id": "root", "organisations": "*", "write": False, "open": False},
            "oldstyle": {"key_id": "oldstyle", "organisations": [ORG_A], "write": True,
                         "open": False},
        }
        for key, data in want.items():
            r = c.get("/v1/me", headers=_as(key))
            expect_status(r, 200, "GET /v1/me as %s" % key)
            eq(r.json, {"data": data}, "GET /v1/me as %s" % key)
        for headers in [None, {"Authorization": "Bearer wrong"}]:
            expect_error(c.get("/v1/me", headers=headers), 401, "unauthorized",
                         "GET /v1/me with %r" % headers)
        r = c.post("/v1/me", {"data": {}}, headers=_as("writer"))
        expect_error(r, 405, "method_not_allowed", "POST /v1/me")


@test
def me_in_open_mode(t):
    with _server(t, "me_open", keys=False) as srv:
        r = srv.client().get("/v1/me")
        expect_status(r, 200, "GET /v1/me without keys")
        eq(r.json, {"data": {"key_id": None, "organisations": "*", "write": True,
                             "open": True}}, "GET /v1/me without keys")


# --- the console's files ------------------------------------------------------------------


@test
def console_serves_every_file(t):
    files = _console_files()
    check("index.html" in files, "console/ has no index.html")
    with _server(t, "console_files") as srv:
        c = srv.client()
        tags = set()
        for rel, data in sorted(files.items()):
            path = "/console/" + rel
            r = _file_get(srv, path)  # no key: the console's files need none
            expect_status(r, 200, "GET %s" % path)
            eq(r.body, data, "GET %s: the file's bytes" % path)
            _expect_console_headers(r, "GET %s" % path)
            ext = os.path.splitext(rel)[1]
            ctype = (r.header("Content-Type") or "").split(";")[0].strip()
            eq(ctype, TYPES.get(ext, "application/octet-stream"), "%s: Content-Type" % path)
            eq(r.header("Cache-Control"), "no-cache", "%s: Cache-Control" % path)
            tag = r.header("ETag") or ""
            check(len(tag) > 2 and tag[0] == '"' and tag[-1] == '"', "%s: ETag %r" % (path, tag))
            tags.add(tag)
        eq(len(tags), len(set(files.values())), "distinct files' ETags")
        for path in ["/console/", "/console/index.html"]:
            r = _file_get(srv, path)
            expect_status(r, 200, "GET %s" % path)
            eq(r.body, files["index.html"], "GET %s: index.html" % path)
            check((r.header("Content-Type") or "").startswith("text/html"),
                  "%s: Content-Type %r" % (path, r.header("Content-Type")))
        r = c.get("/console")
        expect_status(r, 308, "GET /console")
        eq(r.header("Location"), "/console/", "GET /console: Location")
        _expect_console_headers(r, "GET /console")
        # An API route still wants its key.
        expect_error(c.get("/v1/payments"), 401, "unauthorized", "the API without a key")


@test
def console_etag_and_head(t):
    with _server(t, "console_etag", keys=False) as srv:
        c = srv.client()
        r = _file_get(srv, "/console/")
        expect_status(r, 200, "GET /console/")
        tag = r.header("ETag")
        for inm in [tag, "W/" + tag, '"other", ' + tag, "*", ' %s ,"x"' % tag]:
            r = _file_get(srv, "/console/", headers={"If-None-Match": inm})
            expect_status(r, 304, "If-None-Match: %s" % inm)
            eq(r.body, b"", "304: body")
            eq(r.header("ETag"), tag, "304: ETag")
            eq(r.header("Cache-Control"), "no-cache", "304: Cache-Control")
            _expect_console_headers(r, "304")
        for inm in ['"other"', tag[:-2] + '"', "W/"]:
            r = _file_get(srv, "/console/index.html", headers={"If-None-Match": inm})
            expect_status(r, 200, "If-None-Match: %s (not this file's)" % inm)
        r = _file_get(srv, "/console/index.html", method="HEAD")
        expect_status(r, 200, "HEAD /console/index.html")
        eq(r.body, b"", "HEAD: body")
        eq(r.header("ETag"), tag, "HEAD: ETag")
        eq(int(r.header("Content-Length") or -1), len(_console_files()["index.html"]),
           "HEAD: Content-Length")
        _expect_console_headers(r, "HEAD")
        r = _file_get(srv, "/console/nope.js", method="HEAD")
        expect_status(r, 404, "HEAD of an unknown file")
        _expect_console_headers(r, "HEAD of an unknown file")
        for method in ["POST", "PUT", "DELETE"]:
            r = c.request(method, "/console/index.html", body={"data": {}})
            expect_error(r, 405, "method_not_allowed", "%s /console/index.html" % method)


@test
def console_unknown_paths_and_traversal(t):
    with _server(t, "console_404") as srv:
        c = srv.client()
        for path in ["/console/nope.html", "/console/index.htm", "/console/a/b/c/d",
                     "/console/INDEX.HTML", "/console/.git/config", "/console/index.html%00"]:
            r = c.get(path)
            expect_error(r, 404, "not_found", "GET %s" % path)
            _expect_console_headers(r, "GET %s" % path)
        # Paths no console route matches (an empty segment, too deep): the router's 404.
        for path in ["/console/index.html/", "/console//index.html", "/console/a/b/c/d/e/f",
                     "/console/index.html%2f"]:
            expect_error(c.get(path), 404, "not_found", "GET %s" % path)
        targets = ["/console/../etc/passwd", "/console/../../../../etc/passwd",
                   "/console/..%2f..%2fetc%2fpasswd", "/console/%2e%2e/%2e%2e/etc/passwd",
                   "/console/..%5c..%5cetc%5cpasswd", "/console/../src/main.c",
                   "/console/./index.html/../../Makefile", "/console/%2e%2e%2fMakefile",
                   "/console/....//....//etc/passwd", "/console/../v1/payments"]
        for target in targets:
            status, data = _raw_status(srv, target)
            check(status in (400, 404), "GET %s: status %d" % (target, status))
            check(b"root:" not in data and b"#include" not in data and b"CFLAGS" not in data,
                  "GET %s: a file of the machine in the answer" % target)
        expect_status(srv.client().get("/healthz"), 200, "the server after the attempts")
