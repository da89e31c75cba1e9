#!/usr/bin/python3
"""receiver: a webhook receiver process for paymentd's tests and benchmarks.

    /usr/bin/python3 tests/webhook/receiver.py --log FILE [--control FILE]
        [--port N | --port-file FILE] [--secret [LABEL=]whsec_...]... [--quiet]

Listens on 127.0.0.1 (port N, or a free one written to --port-file once it
listens), checks every request it is sent with its own implementation of the
Standard Webhooks specification, answers as its control file says, and
appends one JSON line per request to the log.  Standard library only, for
Debian's /usr/bin/python3.

Verification (the specification, written here from it, not from paymentd):
the headers webhook-id, webhook-timestamp and webhook-signature must be
present; the timestamp must be Unix seconds within TOLERANCE_S of now; the
signed content is "{webhook-id}.{webhook-timestamp}.{body}"; each secret is
"whsec_" + base64 of the key; the header holds space-separated signatures
"v1,<base64 of HMAC-SHA256(key, content)>", each compared in constant time
with the expected one of every secret the receiver knows.  A request is
valid when it is a POST with Content-Type application/json, the headers are
there, the timestamp is fresh and at least one signature matches a secret.

The control file (JSON, re-read whenever it changes; write it atomically)
decides what the receiver does, and may be changed while it runs:

    {"secrets": {"LABEL": "whsec_...", ...},   secrets accepted, beside --secret
     "down": false,                            true: stop listening (connections refused)
     "behaviour": RULE,                        for every path without its own
     "paths": {"/path": RULE, ...}}

    RULE   = ACTION | {"attempts": [ACTION, ...], "then": ACTION}
             ("attempts": the first, second, ... request of each webhook-id
             to that path; "then": every later one)
    ACTION = {"status": 200,            the status answered (default 200)
              "retry_after": N,         a Retry-After header of N seconds
              "sleep": S,               seconds to wait before answering
              "close": true,            close the connection without an answer
              "body": "..."}            the answer's body (default "")

Log lines (one per request, written when the request has been read, before
the receiver sleeps or answers, so a request is logged even when its answer
never reaches paymentd):

    {"time", "method", "path", "webhook_id", "timestamp", "signatures" (how
     many), "matched": [LABEL, ...] (the secrets some signature matched),
     "unmatched" (signatures no known secret made), "valid", "why" (null
     when valid), "attempt" (this request's number for its webhook-id and
     path, counted over the whole log), "status" (what it answers; null for
     close), "sleep", "body" (the raw body, text), "event" (the body parsed,
     or null)}

GET /stats answers {"requests", "valid", "first", "last"} (never logged):
the benchmark reads it.  --quiet logs nothing (the benchmark's receiver).
SIGTERM and SIGINT stop it with exit status 0.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
TOLERANCE_S = 300         # a timestamp this far from now, either way, is refused
BODY_MAX = 1 << 20        # bytes of a request body read at most
DOWN_POLL_S = 0.05        # how often the control file is looked at while down or up


def secret_key(secret):
    """The HMAC key of a "whsec_<base64>" secret, or None when malformed."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return None
    try:
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        return None


def expected_signature(key, msg_id, timestamp, body):
    content = msg_id.encode("utf-8") + b"." + timestamp.encode("utf-8") + b"." + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())


def verify(headers, body, secrets, now):
    """Checks one request against the specification.  Returns (valid, why,
    matched labels, signatures seen, signatures unmatched)."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig_header = headers.get("webhook-signature")
    missing = [h for h, v in (("webhook-id", msg_id), ("webhook-timestamp", ts),
                              ("webhook-signature", sig_header)) if not v]
    if missing:
        return False, "missing header " + ", ".join(missing), [], 0, 0
    sigs = sig_header.split(" ")
    matched = []
    unmatched = 0
    keys = []
    for label, secret in secrets.items():
        key = secret_key(secret)
        if key is None:
            return False, "secret %s is not whsec_<base64>" % label, [], len(sigs), len(sigs)
        keys.append((label, expected_signature(key, msg_id, ts, body)))
    malformed = False
    for s in sigs:
        version, _, value = s.partition(",")
        if version != "v1" or not value:
            malformed = True
            unmatched += 1
            continue
        value = value.encode("ascii", "replace")
        hit = False
        for label, want in keys:
            if hmac.compare_digest(value, want):
                hit = True
                if label not in matched:
                    matched.append(label)
        unmatched += 0 if hit else 1
    if not ts.isdigit():
        return False, "webhook-timestamp %r is not Unix seconds" % ts, matched, len(sigs), unmatched
    if abs(now - int(ts)) > TOLERANCE_S:
        return (False, "webhook-timestamp %s is %d s from now" % (ts, now - int(ts)), matched,
                len(sigs), unmatched)
    if malformed:
        return False, "a signature is not v1,<base64>", matched, len(sigs), unmatched
    if not matched:
        return False, "no signature matches a known secret", matched, len(sigs), unmatched
    return True, None, matched, len(sigs), unmatched


class Control:
    """The control file, re-read when its size or time changed, merged with
    the secrets given on the command line."""

    def __init__(self, path, cli_secrets):
        self.path = path
        self.cli_secrets = cli_secrets
        self.lock = threading.Lock()
        self.stamp = None
        self.doc = {}

    def get(self):
        with self.lock:
            if self.path:
                try:
                    st = os.stat(self.path)
                    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                except FileNotFoundError:
                    stamp = None
                if stamp != self.stamp:
                    doc = {}
                    if stamp is not None:
                        try:
                            with open(self.path) as f:
                                doc = json.load(f)
                        except (OSError, ValueError) as e:
                            sys.stderr.write("receiver: control file %s: %s\n" % (self.path, e))
                            doc = self.doc  # keep the last good one; a writer is mid-way
                    self.stamp, self.doc = stamp, doc if isinstance(doc, dict) else {}
            return self.doc

    def secrets(self):
        s = dict(self.cli_secrets)
        s.update(self.get().get("secrets") or {})
        return s

    def action(self, path, attempt):
        doc = self.get()
        rule = (doc.get("paths") or {}).get(path, doc.get("behaviour") or {})
        if "attempts" in rule or "then" in rule:
            tries = rule.get("attempts") or []
            return tries[attempt - 1] if attempt <= len(tries) else (rule.get("then") or {})
        return rule

    def down(self):
        return bool(self.get().get("down"))


class Receiver:
    """What the handlers share: the control, the log, the counters."""

    def __init__(self, control, log_path, quiet):
        self.control = control
        self.log_path = log_path
        self.quiet = quiet
        self.lock = threading.Lock()
        self.attempts = {}  # (path, webhook-id) -> requests seen, over the whole log
        self.requests = 0
        self.valid = 0
        self.first = None
        self.last = None
        self.log = None
        if log_path and not quiet:
            self._count_earlier(log_path)
            self.log = open(log_path, "a", encoding="utf-8")

    def _count_earlier(self, path):
        """Attempts of an earlier run of the receiver on the same log: a
        restarted receiver goes on counting."""
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    k = (r.get("path"), r.get("webhook_id"))
                    self.attempts[k] = max(self.attempts.get(k, 0), r.get("attempt") or 0)
        except FileNotFoundError:
            pass

    def note(self, path, msg_id, valid):
        """Counts a request; returns its attempt number for (path, id)."""
        with self.lock:
            k = (path, msg_id)
            self.attempts[k] = self.attempts.get(k, 0) + 1
            self.requests += 1
            self.valid += 1 if valid else 0
            now = time.time()
            self.first = self.first or now
            self.last = now
            return self.attempts[k]

    def write(self, record):
        if self.log is None:
            return
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.lock:
            self.log.write(line)
            self.log.flush()

    def stats(self):
        with self.lock:
            return {"requests": self.requests, "valid": self.valid, "first": self.first,
                    "last": self.last}


def make_handler(rx):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver offers it
        server_version = "webhook-receiver"

        def log_message(self, fmt, *args):  # the JSON log is the record
            pass

        def _answer(self, status, body=b"", headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self):
            if self.path == "/stats":
                self._answer(200, json.dumps(rx.stats()).encode(),
                             [("Content-Type", "application/json")])
            else:
                self._answer(404)

        def do_POST(self):
            self._receive("POST")

        def do_PUT(self):
            self._receive("PUT")

        def _receive(self, method):
            try:
                n = int(self.headers.get("Content-Length") or "0")
            except ValueError:
                n = -1
            if n < 0 or n > BODY_MAX:
                self._answer(413)
                return
            body = self.rfile.read(n)
            now = time.time()
            headers = {k.lower(): v for k, v in self.headers.items()}
            valid, why, matched, nsigs, unmatched = verify(headers, body, rx.control.secrets(),
                                                           int(now))
            ctype = headers.get("content-type", "")
            if valid and method != "POST":
                valid, why = False, "method %s, not POST" % method
            if valid and ctype.split(";")[0].strip().lower() != "application/json":
                valid, why = False, "Content-Type %r, not application/json" % ctype
            msg_id = headers.get("webhook-id")
            attempt = rx.note(self.path, msg_id, valid)
            action = rx.control.action(self.path, attempt)
            close = bool(action.get("close"))
            status = None if close else int(action.get("status", 200))
            sleep = float(action.get("sleep", 0))
            if not rx.quiet:
                try:
                    event = json.loads(body.decode("utf-8"))
                except ValueError:
                    event = None
                rx.write({"time": now, "method": method, "path": self.path,
                          "webhook_id": msg_id, "timestamp": headers.get("webhook-timestamp"),
                          "content_type": ctype, "signatures": nsigs, "matched": matched,
                          "unmatched": unmatched, "valid": valid, "why": why,
                          "attempt": attempt, "status": status, "sleep": sleep,
                          "body": body.decode("utf-8", "replace"), "event": event})
            if sleep > 0:
                time.sleep(sleep)
            if close:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            extra = []
            if "retry_after" in action:
                extra.append(("Retry-After", str(action["retry_after"])))
            try:
                self._answer(status, str(action.get("body", "")).encode("utf-8"), extra)
            except OSError:
                pass  # the sender gave up meanwhile (its timeout)

    return Handler


class Server(http.server.ThreadingHTTPServer):
    """Keeps its open connections, so that going down drops the kept-alive
    ones too (a receiver that is down answers nothing)."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *a, **kw):
        self.open_conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(*a, **kw)

    def process_request(self, request, client_address):
        with self.conns_lock:
            self.open_conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conns_lock:
            self.open_conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        with self.conns_lock:
            conns = list(self.open_conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(rx, port, port_file, stop):
    """Listens while the control says up; closes the listener while it says
    down (connections refused) and listens again on the same port after."""
    handler = make_handler(rx)
    first = True
    while not stop.is_set():
        if rx.control.down():
            stop.wait(DOWN_POLL_S)
            continue
        srv = None
        for _ in range(100):  # the port may linger a moment after a close
            try:
                srv = Server((HOST, port), handler)
                break
            except OSError:
                if port == 0 or stop.wait(0.05):
                    raise
        if srv is None:
            raise OSError("cannot listen on %s:%d again" % (HOST, port))
        port = srv.server_address[1]
        if first and port_file:
            tmp = port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.replace(tmp, port_file)
        first = False
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True)
        t.start()
        while not stop.is_set() and not rx.control.down():
            stop.wait(DOWN_POLL_S)
        srv.shutdown()
        srv.server_close()
        srv.drop_connections()
        t.join()


def parse_secret(text, i):
    label, sep, secret = text.partition("=")
    return (label, secret) if sep and not label.startswith("whsec_") else (str(i), text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    ap.add_argument("--port-file", help="file the port is written to once listening")
    ap.add_argument("--control", help="control file (JSON), re-read when it changes")
    ap.add_argument("--log", help="log file, one JSON line per request (appended)")
    ap.add_argument("--secret", action="append", default=[],
                    help="[LABEL=]whsec_... a secret accepted (repeatable)")
    ap.add_argument("--quiet", action="store_true", help="log nothing; count only (/stats)")
    args = ap.parse_args()
    if not args.quiet and not args.log:
        ap.error("--log is required unless --quiet")
    secrets = dict(parse_secret(s, i) for i, s in enumerate(args.secret))
    for label, s in secrets.items():
        if secret_key(s) is None:
            ap.error("--secret %s: not whsec_<base64>" % label)
    rx = Receiver(Control(args.control, secrets), args.log, args.quiet)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve(rx, args.port, args.port_file, stop)
    except OSError as e:
        sys.stderr.write("receiver: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
