"""Hostile HTTP: a corpus of malformed requests thrown at a running server on
raw sockets, then proof that nothing changed and everything still works.

Every case is sent on a socket of its own with a short timeout and the
socket is always closed.  A case passes when the server answers 4xx, or, for
requests that are not well-formed HTTP, closes the connection without an
answer; it fails on 1xx-3xx, on 5xx (505 aside, see below), on a reply that
is not HTTP, and on silence past the timeout.  Many write cases aim at real
payments with their real version, so that a server which read a broken
request leniently would change a payment, which the check afterwards sees.

Some malformed-HTTP errors are answered by libmicrohttpd itself, before the
server's code runs, with an HTML body and no X-Request-Id; they are accepted
for the "http" cases as long as the status is 4xx:
  400  request line or header line it cannot parse (no colon, HTTP/0.9,
       extra tokens, unknown protocol), broken chunked framing (bad hex size,
       missing CRLF, chunk longer than declared), bad Content-Length;
  413  a chunk size that overflows;
  414  a 100 KiB URL;  431  100 KiB of headers;
  505  HTTP/2.0 and other major versions: the status RFC 9110 (15.6.6)
       prescribes for an unsupported major version, so it is the one 5xx
       accepted, and only for those cases.

A client that gives up mid-request (shuts its side) is sometimes noticed only
at the idle cut-off: libmicrohttpd 0.9.75 misses the end of stream on some
partial requests.  The server runs with a short --client-timeout, so such a
connection is closed within the case's timeout either way; a complete
request that is closed only by that cut-off counts as a hang.
"""

import http.client
import json
import os
import select
import socket
import threading
import time

from harness import (HOST, ERROR_CODES, Fail, Resp, Server, audit, check, create, eq, expect_error,
                     expect_status, new_id, payment, qs, strip_nulls, test)

SEED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "spec", "seed-payment.json")

CLIENT_TIMEOUT = 2  # the server's --client-timeout, seconds
CASE_TIMEOUT = 4.0  # seconds a case may take: past the server's own idle cut-off
WORKERS = 8         # cases in flight at once: a slow case costs one timeout, not one each


# --------------------------------------------------------------------------
# raw exchange

class Outcome:
    def __init__(self, kind, status=None, headers=(), body=b"", detail="", took=0.0):
        self.kind = kind          # "response", "closed", "hang" or "garbled"
        self.took = took          # seconds from connect to the outcome
        self.status = status      # the status when kind is "response"
        self.headers = list(headers)
        self.body = body
        self.detail = detail

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def describe(self):
        if self.kind == "response":
            return "%d %r" % (self.status, self.body[:160])
        return "%s%s" % (self.kind, " (%s)" % self.detail if self.detail else "")


def exchange(port, payload, half_close=False, timeout=CASE_TIMEOUT):
    t0 = time.monotonic()
    out = _exchange(port, payload, half_close, timeout)
    out.took = time.monotonic() - t0
    return out


def _exchange(port, payload, half_close, timeout):
    """Sends payload on a new connection and reads one response.  Sending
    stops early when the server already answered (it may reject a huge
    request line before it is all sent).  half_close shuts our side once
    all is sent, as a client that gives up mid-request does."""
    deadline = time.monotonic() + timeout
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.setblocking(False)
        pos = 0
        answered = False
        while pos < len(payload):
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("hang", detail="still sending after %.1fs" % timeout)
            r, w, _ = select.select([s], [s], [], min(left, 0.5))
            if r:
                answered = True
                break
            if w:
                try:
                    pos += s.send(payload[pos:pos + 65536])
                except BlockingIOError:
                    pass
                except OSError:
                    break  # reset while sending: whatever it answered may be waiting
        if half_close and not answered:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        s.setblocking(True)
        s.settimeout(max(0.05, deadline - time.monotonic()))
        resp = http.client.HTTPResponse(s)
        try:
            resp.begin()
            body = resp.read()
        except socket.timeout:
            return Outcome("hang", detail="no answer within %.1fs" % timeout)
        except (http.client.RemoteDisconnected, ConnectionError) as e:
            return Outcome("closed", detail=type(e).__name__)
        except http.client.BadStatusLine as e:
            if not str(e).strip("'\" "):
                return Outcome("closed", detail="closed before a status line")
            return Outcome("garbled", detail="not an HTTP status line: %r" % str(e)[:80])
        except (OSError, http.client.HTTPException) as e:
            return Outcome("garbled", detail=repr(e)[:120])
        return Outcome("response", resp.status, resp.getheaders(), body)
    finally:
        s.close()


def req(method, target, headers=(), body=None, ctype=b"application/json", version=b"HTTP/1.1"):
    """A request as bytes, anything allowed (NUL, CR, invalid UTF-8).
    Content-Length is added for a body unless a framing header is given."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode("latin-1")
    lines = [b(method) + b" " + b(target) + (b" " + version if version else b""), b"Host: " + b(HOST)]
    if body is not None and ctype is not None:
        lines.append(b"Content-Type: " + b(ctype))
    hs = [b(h) for h in headers]
    framed = any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in hs)
    if body is not None and not framed:
        lines.append(b"Content-Length: %d" % len(b(body)))
    lines += hs
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b(body) if body is not None else b"")


def jb(v):
    return json.dumps(v, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# the corpus

class Case:
    def __init__(self, name, payload, kind="api", half_close=False, allow_505=False):
        self.name = name
        self.payload = payload
        self.kind = kind              # "api": a JSON 4xx error; "http": 4xx or a close
        self.half_close = half_close
        self.allow_505 = allow_505


def verdict(case, out):
    """None when the outcome is acceptable, else why not."""
    if out.kind == "hang":
        return "hung: %s" % out.detail
    if out.kind == "garbled":
        return "answered something that is not HTTP: %s" % out.detail
    if out.kind == "closed":
        if out.took >= CLIENT_TIMEOUT * 0.75 and not case.half_close:
            # the request was complete: waiting for more is a hang that only
            # the idle cut-off ended
            return "no answer; closed only by the idle timeout after %.1fs" % out.took
        if case.kind == "http":
            return None
        return "closed the connection without an answer (a well-formed request deserves a 4xx)"
    if out.status == 505 and case.allow_505:
        return None
    if not 400 <= out.status <= 499:
        return "expected 4xx, got %s" % out.describe()
    if case.kind == "api":
        j = None
        try:
            j = json.loads(out.body.decode("utf-8"))
        except ValueError:
            pass
        ok = (isinstance(j, dict) and j.get("error_code") in ERROR_CODES
              and isinstance(j.get("error_message"), str) and j["error_message"])
        ct = (out.header("Content-Type") or "").split(";")[0].strip().lower()
        if not ok or ct != "application/json":
            return "%d without a JSON error body: %r" % (out.status, out.body[:160])
    return None


def corpus(org, p_v2, p_v0, p_seed):
    """Cases against payments p_v2 (at version 2), p_v0 (version 0) and
    p_seed (the seed sample, version 0)."""
    C = []

    def add(name, payload, **kw):
        C.append(Case(name, payload, **kw))

    one = "/v1/payments/" + p_v2
    zero = "/v1/payments/" + p_v0
    good_create = jb(payment(org, amount="1.00"))
    good_patch = jb({"data": {"attributes": {"reference": "hostile"}}})
    good_patch_v = jb({"data": {"version": 2, "attributes": {"reference": "hostile"}}})
    good_put_v = jb({"data": {"version": 2, "organisation_id": org,
                              "attributes": {"amount": "99.00", "currency": "GBP"}}})
    ifm2 = '"2"'

    # -- truncated requests: our side closes mid-request
    add("truncated: request line", b"DELETE /v1/paym", kind="http", half_close=True)
    add("truncated: header cut mid-line", req("DELETE", one)[:-12], kind="http", half_close=True)
    add("truncated: header value cut", req("PATCH", one, ["If-Match: " + ifm2], good_patch).split(b'"2"')[0]
        + b'"', kind="http", half_close=True)
    add("truncated: no blank line after headers", req("DELETE", zero)[:-2], kind="http", half_close=True)
    full = req("PUT", one, [], good_put_v)
    add("truncated: body cut in half", full[:len(full) - len(good_put_v) // 2], kind="http", half_close=True)
    add("truncated: chunked body without last chunk",
        req("PATCH", one, ["Transfer-Encoding: chunked"], b"%x\r\n%s\r\n" % (len(good_patch_v), good_patch_v)),
        kind="http", half_close=True)

    # -- bad chunked encoding, each wrapping a patch that would apply if read leniently
    def chunked(chunks):
        return req("PATCH", one, ["Transfer-Encoding: chunked"], chunks)
    gp = good_patch_v
    add("chunked: bad hex size", chunked(b"zz\r\n%s\r\n0\r\n\r\n" % gp), kind="http")
    add("chunked: negative size", chunked(b"-%x\r\n%s\r\n0\r\n\r\n" % (len(gp), gp)), kind="http")
    add("chunked: 0x prefix", chunked(b"0x%x\r\n%s\r\n0\r\n\r\n" % (len(gp), gp)), kind="http")
    add("chunked: size overflows 64 bits", chunked(b"1%s\r\n%s\r\n0\r\n\r\n" % (b"0" * 20, gp)), kind="http")
    add("chunked: missing CRLF after data", chunked(b"%x\r\n%s0\r\n\r\n" % (len(gp), gp)), kind="http")
    add("chunked: chunk larger than declared",
        chunked(b"%x\r\n%s\r\n0\r\n\r\n" % (len(gp) - 5, gp)), kind="http")
    # Known limitation, not in the corpus: a chunk-size line longer than the
    # connection's memory (200 KB of chunk extensions) is answered 500 by
    # libmicrohttpd itself (README, "Known limitations").
    # request smuggling classics (RFC 9112 6.1, 6.3): reject, never guess
    add("framing: two different Content-Length",
        req("POST", "/v1/payments", ["Content-Length: %d" % len(good_create),
                                     "Content-Length: %d" % (len(good_create) + 40)],
            good_create + b"GET /v1/payments/zz HTTP/1.1\r\nHost: x\r\n\r\n"), kind="http")
    add("framing: Transfer-Encoding gzip",
        req("POST", "/v1/payments", ["Transfer-Encoding: gzip"], good_create), kind="http")
    add("framing: Transfer-Encoding chunked, gzip",
        req("POST", "/v1/payments", ["Transfer-Encoding: chunked, gzip"],
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(good_create), good_create)), kind="http")
    add("framing: negative Content-Length",
        req("POST", "/v1/payments", ["Content-Length: -5"], good_create), kind="http")

    # -- invalid UTF-8 in the path, the query and the body
    add("utf8: path", req("GET", b"/v1/payments/\xff\xfe\xfd"))
    add("utf8: id in path", req("DELETE", b"/v1/payments/" + p_v0.encode()[:-2] + b"\xc3\xa9"))
    add("utf8: query, raw", req("GET", b"/v1/payments?filter[reference]=\xc0\xaf"))
    add("utf8: query, percent-encoded", req("GET", "/v1/payments?" + "filter%5Breference%5D=%ff%fe"))
    add("utf8: query, overlong", req("GET", "/v1/payments?" + "filter%5Bcurrency%5D=%c0%80EUR"))
    for label, bad in (("0xff", b"\xff"), ("overlong", b"\xc0\xaf"), ("surrogate", b"\xed\xa0\x80"),
                       ("truncated sequence", b"\xe2\x82")):
        body = jb(payment(org, reference="REF"))
        add("utf8: body, %s" % label, req("POST", "/v1/payments", [], body.replace(b"REF", b"R" + bad)))
        add("utf8: patch body, %s" % label,
            req("PATCH", one, [], good_patch_v.replace(b"hostile", b"h" + bad)))

    # -- NUL bytes
    # Known limitation, not in the corpus: libmicrohttpd 0.9.75 ends the
    # request line and header values at a raw NUL byte before paymentd sees
    # them, so "DELETE /v1/payments/<id>\x00x", 'If-Match: "2"\x00junk' and
    # 'Content-Type: application/json\x00junk' act as if cut at the NUL
    # (README, "Known limitations").  Percent-encoded NULs are refused below.
    add("nul: percent-encoded in path", req("DELETE", "/v1/payments/" + p_v0 + "%00"))
    add("nul: percent-encoded in query", req("DELETE", "/v1/payments/" + p_v0 + "?version=0%00"))
    add("nul: in a header name", req("DELETE", zero, [b'If-Match\x00x: "0"']), kind="http")
    add("nul: raw in body", req("POST", "/v1/payments", [], good_create.replace(b'"1.00"', b'"1.00\x00"')))
    add("nul: escaped in body", req("POST", "/v1/payments", [],
                                    jb(payment(org, reference="a\u0000b"))))
    add("nul: body is NULs", req("PATCH", one, ["If-Match: " + ifm2], b"\x00" * 64))

    # -- 10,000-deep JSON
    deep_arr = b"[" * 10000 + b"]" * 10000
    deep_obj = b'{"a":' * 10000 + b"1" + b"}" * 10000
    add("deep: [ x10000 create", req("POST", "/v1/payments", [], deep_arr))
    add("deep: { x10000 create", req("POST", "/v1/payments", [], deep_obj))
    add("deep: [ x10000 patch", req("PATCH", one, ["If-Match: " + ifm2], deep_arr))
    add("deep: { x10000 put", req("PUT", one, ["If-Match: " + ifm2], deep_obj))
    add("deep: inside attributes", req("POST", "/v1/payments", [], good_create.replace(
        b'"amount"', b'"x":' + b"[" * 10000 + b"]" * 10000 + b',"amount"')))
    add("deep: unclosed", req("POST", "/v1/payments", [], b'{"data":' * 10000))

    # -- numbers for strings, strings for numbers
    def attrs(**a):
        return jb(payment(org, **a))
    add("type: amount as number", req("POST", "/v1/payments", [], attrs(amount=10)))
    add("type: currency as number", req("POST", "/v1/payments", [], attrs(currency=978)))
    add("type: reference as number", req("POST", "/v1/payments", [], attrs(reference=12)))
    add("type: organisation_id as number", req("POST", "/v1/payments", [], jb(
        {"data": {"organisation_id": 12345, "attributes": {"amount": "1.00", "currency": "EUR"}}})))
    add("type: id as number", req("POST", "/v1/payments", [], jb(
        {"data": {"id": 7, "organisation_id": org, "attributes": {"amount": "1.00", "currency": "EUR"}}})))
    add("type: type as number", req("POST", "/v1/payments", [], jb(
        {"data": {"type": 7, "organisation_id": org, "attributes": {"amount": "1.00", "currency": "EUR"}}})))
    add("type: attributes as string", req("POST", "/v1/payments", [], jb(
        {"data": {"organisation_id": org, "attributes": "amount=1.00"}})))
    add("type: account_type as string", req("POST", "/v1/payments", [], attrs(
        beneficiary_party={"account_type": "0"})))
    add("type: patch amount as number", req("PATCH", one, ["If-Match: " + ifm2],
                                            jb({"data": {"attributes": {"amount": 10}}})))
    add("type: patch currency as array", req("PATCH", one, ["If-Match: " + ifm2],
                                             jb({"data": {"attributes": {"currency": ["EUR"]}}})))

    # -- huge numbers (spelled out: json.dumps cannot)
    def raw_attr(name, lit):
        return good_create.replace(b'"amount"', b'"%s":%s,"amount"' % (name, lit))
    add("huge: amount 1e400", req("POST", "/v1/payments", [], good_create.replace(b'"1.00"', b"1e400")))
    add("huge: amount -1e400", req("POST", "/v1/payments", [], good_create.replace(b'"1.00"', b"-1e400")))
    add("huge: 40-digit amount", req("POST", "/v1/payments", [], good_create.replace(b'"1.00"', b"9" * 40)))
    add("huge: 40-digit amount string", req("POST", "/v1/payments", [],
                                            good_create.replace(b'"1.00"', b'"%s"' % (b"9" * 40))))
    add("huge: undeclared attribute 1e400", req("POST", "/v1/payments", [], raw_attr(b"x", b"1e400")))
    add("huge: undeclared attribute 40 digits", req("POST", "/v1/payments", [], raw_attr(b"x", b"1" * 40)))
    add("huge: account_type 40 digits", req("POST", "/v1/payments", [], good_create.replace(
        b'"amount"', b'"beneficiary_party":{"account_type":%s},"amount"' % (b"1" * 40))))

    # -- duplicate keys
    d = good_create.decode()
    add("dup: data twice", req("POST", "/v1/payments", [], (d[:-1] + "," + d[1:-1] + "}").encode()))
    add("dup: amount twice", req("POST", "/v1/payments", [], good_create.replace(
        b'"amount":"1.00"', b'"amount":"1.00","amount":"2.00"')))
    add("dup: same value twice", req("POST", "/v1/payments", [], good_create.replace(
        b'"currency":"EUR"', b'"currency":"EUR","currency":"EUR"')))
    add("dup: version twice in patch", req("PATCH", one, [], good_patch_v.replace(
        b'"version":2', b'"version":2,"version":2')))
    add("dup: organisation_id twice in put", req("PUT", one, [], good_put_v.replace(
        b'"organisation_id"', b'"organisation_id":"%s","organisation_id"' % new_id().encode())))

    # -- wrong content types
    for ct in (b"text/plain", b"application/xml", b"application/x-www-form-urlencoded",
               b"multipart/form-data; boundary=x", b"application/jsonx", b"json", b"application/",
               b"application/json-patch+json", b"*/*", b""):
        add("ctype: POST %r" % ct, req("POST", "/v1/payments", [], good_create, ctype=ct))
    add("ctype: POST none", req("POST", "/v1/payments", [], good_create, ctype=None))
    add("ctype: PATCH text/plain", req("PATCH", one, [], good_patch_v, ctype=b"text/plain"))
    add("ctype: PUT none", req("PUT", one, [], good_put_v, ctype=None))
    add("ctype: two Content-Type headers", req("POST", "/v1/payments", ["Content-Type: text/plain"],
                                               good_create))

    # -- bad UUIDs, in the path and in the body
    bad_ids = {
        "too short": p_v0[:-1],
        "too long": p_v0 + "0",
        "non-hex": p_v0[:-1] + "g",
        "braces": "{" + p_v0 + "}",
        "urn prefix": "urn:uuid:" + p_v0,
        "no dashes": p_v0.replace("-", ""),
        "dashes moved": p_v0[:7] + "-" + p_v0[7] + p_v0[9:],
        "spaces": " " + p_v0,
    }
    for label, bid in bad_ids.items():
        path = "/v1/payments/" + bid.replace(" ", "%20")
        add("uuid %s: GET" % label, req("GET", path))
        add("uuid %s: DELETE" % label, req("DELETE", path))
        add("uuid %s: PATCH" % label, req("PATCH", path, ['If-Match: "0"'], good_patch))
        add("uuid %s: PUT" % label, req("PUT", path, [], good_put_v.replace(b'"version":2', b'"version":0')))
        add("uuid %s: organisation_id" % label, req("POST", "/v1/payments", [], jb(payment(bid))))
        add("uuid %s: data.id" % label, req("POST", "/v1/payments", [], jb(payment(org, pid=bid))))

    # -- bad versions: body, query and If-Match, all on a payment at version 2
    for label, lit in (("negative", b"-1"), ("float", b"2.0"), ("exponent", b"2e0"), ("string", b'"2"'),
                       ("huge", b"9" * 40), ("1e400", b"1e400"), ("bool", b"true"), ("array", b"[2]"),
                       ("object", b'{"v":2}')):
        add("version %s: PATCH body" % label, req("PATCH", one, [], good_patch_v.replace(
            b'"version":2', b'"version":' + lit)))
        add("version %s: PUT body" % label, req("PUT", one, [], good_put_v.replace(
            b'"version":2', b'"version":' + lit)))
    add("version: create with version 1", req("POST", "/v1/payments", [], jb(
        {"data": {"version": 1, "organisation_id": org, "attributes": {"amount": "1.00", "currency": "EUR"}}})))
    for q in ("-1", "2.0", "2e0", "abc", "9" * 40, "", "0x2", "2&version=2", "%202"):
        add("version: DELETE ?version=%s" % q, req("DELETE", one + "?version=" + q))
    for label, hv in (("weak", 'W/"2"'), ("star", "*"), ("list", '"2", "3"'), ("unquoted", "2"),
                      ("negative", '"-1"'), ("float", '"2.0"'), ("word", '"abc"'), ("unterminated", '"2'),
                      ("empty tag", '""'), ("empty", ""), ("huge", '"%s"' % ("9" * 40)),
                      ("leading zero", '"02"'), ("bare CR", '"2"\r"3"')):
        add("If-Match %s: DELETE" % label, req("DELETE", one, ["If-Match: " + hv]), kind="http")
        add("If-Match %s: PATCH" % label, req("PATCH", one, ["If-Match: " + hv], good_patch), kind="http")
    add("If-Match: two headers", req("DELETE", one, ['If-Match: "2"', 'If-Match: "3"']), kind="http")
    add("If-Match: disagrees with the body", req("PATCH", one, ['If-Match: "1"'], good_patch_v))
    add("If-Match: on create is not a version", req("POST", "/v1/payments", ['If-Match: "0"'], jb(
        payment(org, pid=p_seed))))

    # -- broken header and request lines, protocol versions, sizes
    add("header without colon", req("PATCH", one, ["If-Match: " + ifm2, "NoColonHere"], good_patch),
        kind="http")
    add("header name with space", req("PATCH", one, ["If Match: " + ifm2], good_patch_v.replace(
        b'"version":2,', b"")), kind="http")
    add("header value with CR alone", req("POST", "/v1/payments", [], good_create,
                                          ctype=b"application/json\rX-Evil: 1"), kind="http")
    add("request line with spaces in target", req("DELETE", "/v1/payments/ " + p_v0), kind="http")
    add("request line with an extra token", req("DELETE", zero + " extra"), kind="http")
    add("request line, double spaces", req("DELETE", " " + zero + " "), kind="http")
    add("request line, lowercase method", req("delete", zero), kind="http")
    add("request line, unknown method", req("DESTROY", zero), kind="http")
    add("HTTP/0.9 GET", b"GET /v1/payments/" + p_v0.encode() + b"\r\n", kind="http", half_close=True)
    add("HTTP/0.9 DELETE", b"DELETE " + zero.encode() + b"\r\n\r\n", kind="http")
    add("HTTP/2.0 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", kind="http", allow_505=True)
    add("HTTP/2.0 DELETE", req("DELETE", zero, version=b"HTTP/2.0"), kind="http", allow_505=True)
    add("HTTP/9.9", req("DELETE", zero, version=b"HTTP/9.9"), kind="http", allow_505=True)
    add("protocol HTTX", req("DELETE", zero, version=b"HTTX/1.1"), kind="http")
    add("100 KiB URL", req("GET", "/v1/payments?" + qs({"filter[reference]": "a" * 102400})), kind="http")
    add("100 KiB URL on a write", req("DELETE", zero + "?version=0&" + "a" * 102400), kind="http")
    add("100 KiB header value", req("GET", "/v1/payments", ["X-Pad: " + "a" * 102400]), kind="http")
    add("100 KiB of headers", req("DELETE", zero, ["X-Pad-%d: %s" % (i, "a" * 100) for i in range(1024)]),
        kind="http")
    return C


# --------------------------------------------------------------------------
# state before and after

def snapshot(c, ids, org):
    """Every payment's full GET (status, body bytes, ETag) and the
    organisation's list, as bytes."""
    snap = {}
    for pid in ids:
        r = c.get("/v1/payments/" + pid)
        snap[pid] = (r.status, r.body, r.header("ETag"))
    r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1000"}))
    expect_status(r, 200, "list of the organisation")
    return snap, r.body


def round_trip(c, org):
    """A create/fetch/replace/patch/delete round trip with exact answers."""
    with open(SEED, "rb") as f:
        seed = json.loads(f.read())
    seed["data"]["attributes"]["payment_purpose_coded"] = "X"
    seed["data"]["organisation_id"] = org
    pid = new_id()
    seed["data"]["id"] = pid.upper()
    r = c.post("/v1/payments", seed)
    expect_status(r, 201, "round trip: create")
    eq(r.header("ETag"), '"0"', "round trip: ETag of the create")
    d = r.data
    eq(d["id"], pid, "round trip: id")
    eq(d["attributes"], strip_nulls(seed["data"]["attributes"]), "round trip: attributes of the create")
    eq(d.get("relationships"), seed["data"].get("relationships"), "round trip: relationships")
    r = c.get("/v1/payments/" + pid)
    expect_status(r, 200, "round trip: fetch")
    eq(r.data, d, "round trip: fetched resource")
    put = {"data": {"version": 0, "organisation_id": org,
                    "attributes": {"amount": "12.34", "currency": "GBP", "reference": "rt"}}}
    r = c.put("/v1/payments/" + pid, put)
    expect_status(r, 200, "round trip: replace")
    eq(r.data["version"], 1, "round trip: version after replace")
    eq(r.data["attributes"], put["data"]["attributes"], "round trip: attributes after replace")
    r = c.patch("/v1/payments/" + pid, {"data": {"attributes": {"reference": None, "note": "x"}}},
                headers={"If-Match": '"1"'})
    expect_status(r, 200, "round trip: patch")
    eq(r.data["version"], 2, "round trip: version after patch")
    eq(r.data["attributes"], {"amount": "12.34", "currency": "GBP", "note": "x"},
       "round trip: attributes after patch")
    r2 = c.get("/v1/payments/" + pid)
    eq(r2.data, r.data, "round trip: fetch after patch")
    expect_status(c.delete("/v1/payments/" + pid + "?version=2"), 204, "round trip: delete")
    expect_error(c.get("/v1/payments/" + pid), 404, "not_found", "round trip: fetch after delete")
    return pid


@test
def hostile_corpus_changes_nothing(t):
    d = t.scratch("hostile")
    srv = Server(t.binary, d, name="hostile", args=["--client-timeout", str(CLIENT_TIMEOUT)])
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        # payments at known versions: p_v2 at 2, p_v0 and the seed at 0, a few more
        with open(SEED, "rb") as f:
            seed = json.loads(f.read())
        seed["data"]["attributes"]["payment_purpose_coded"] = "X"
        seed["data"]["organisation_id"] = org
        p_seed = create(c, seed, "create the seed")["id"]
        p_v2 = create(c, payment(org, reference="v2"))["id"]
        expect_status(c.put("/v1/payments/" + p_v2, {"data": {
            "version": 0, "organisation_id": org, "attributes": {"amount": "5.00", "currency": "GBP"}}}),
            200, "PUT to version 1")
        expect_status(c.patch("/v1/payments/" + p_v2, {"data": {"attributes": {"reference": "two"}}},
                              headers={"If-Match": '"1"'}), 200, "PATCH to version 2")
        p_v0 = create(c, payment(org, reference="v0"))["id"]
        others = [create(c, payment(org, reference="o%d" % i))["id"] for i in range(3)]
        ids = [p_seed, p_v2, p_v0] + others
        before, list_before = snapshot(c, ids, org)
        for pid in ids:
            eq(before[pid][0], 200, "GET %s before the barrage" % pid)
        eq(json.loads(before[p_v2][1])["data"]["version"], 2, "version of the version-2 payment")

        cases = corpus(org, p_v2, p_v0, p_seed)
        results = [None] * len(cases)
        nxt = [0]
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(cases):
                    return
                try:
                    out = exchange(srv.port, cases[i].payload, cases[i].half_close)
                except OSError as e:
                    out = Outcome("closed" if cases[i].kind == "http" else "garbled",
                                  detail="connect/send: %r" % e)
                except Exception as e:  # a bug in the test: reported, never a silent pass
                    out = Outcome("garbled", detail="test error %r" % e)
                if out.kind == "response" and cases[i].kind == "api":
                    audit("HOSTILE", cases[i].name, Resp(out.status, "", out.headers, out.body))
                results[i] = out

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=CASE_TIMEOUT * len(cases))
        took = time.monotonic() - t0
        check(not any(th.is_alive() for th in threads), "barrage workers still running")

        problems = []
        for case, out in zip(cases, results):
            why = verdict(case, out)
            if why:
                problems.append("%s: %s [sent %r]" % (case.name, why, case.payload[:90]))
        alive = srv.running()

        after_problems = []
        if not alive:
            after_problems.append("the server died during the barrage: %s" % srv.stderr_tail())
        else:
            after, list_after = snapshot(c, ids, org)
            for pid in ids:
                if after[pid] != before[pid]:
                    after_problems.append("payment %s changed: before %s %r, after %s %r" % (
                        pid, before[pid][0], before[pid][1][:120], after[pid][0], after[pid][1][:120]))
            if list_after != list_before:
                extra = sorted({x["id"] for x in json.loads(list_after)["data"]}
                               - {x["id"] for x in json.loads(list_before)["data"]})
                after_problems.append("the organisation's list changed; payments created by the "
                                      "barrage: %s" % extra)
            try:
                round_trip(c, org)
            except Fail as e:
                after_problems.append("valid round trip after the barrage: %s" % e)
            expect_status(c.get("/readyz"), 200, "readyz after the barrage")
        rep = srv.sanitizer_report()
        if rep:
            after_problems.append("sanitizer report: %s" % rep)
        check(not problems and not after_problems,
              "%d of %d hostile requests mishandled (%.1fs)%s%s" % (
                  len(problems), len(cases), took,
                  "".join("\n    - " + p for p in problems),
                  "".join("\n    * " + p for p in after_problems)))
        rc = srv.stop()
        eq(rc, 0, "exit status after the barrage")
    finally:
        srv.ensure_dead()
