"""The event relay with real processes: nats-server, an HTTP node that
serves the writes without relaying (--relay false), and HTTP nodes that
relay, all on one SQLite store.  The relaying node is killed with -9 while
it works through a backlog and writes go on; a new one takes over once the
lease has expired, from the last confirmed position.  The stream must then
hold every committed event (no gap; repeats, if any, counted), each as the
JSON of its change, with its id as Nats-Msg-Id, on its organisation's
partition, each payment's events in version order.

The stream is read with the NATS protocol itself (JetStream's API is
request and reply over plain subjects): no client library needed."""

import base64
import json
import os
import socket
import threading
import time

from harness import HOST, Fail, Server, check, eq, new_id, payment, sqlite_test
from test_broker_e2e import Conn, _nats

EVENTS = "PAYMENTS_EVENTS"
PARTITIONS = 16          # the default --partitions
WRITERS = 6              # client threads
SETTLE_S = 60.0          # bound on the wait for the relay's first messages
CATCH_UP_S = 20.0        # for the stream to hold every event, once the writes ended:
                         # the lease's 6 s, then the rest of the backlog
PATCHES = 3              # per payment, after its create; every tenth is then deleted


class Nats:
    """A minimal NATS client: requests over one connection, replies on an
    inbox of our own."""

    def __init__(self, url):
        host, port = url[len("nats://"):].split(",")[0].rsplit(":", 1)
        self.sk = socket.create_connection((host, int(port)), timeout=10)
        self.f = self.sk.makefile("rb")
        check(self.f.readline().startswith(b"INFO "), "nats: no INFO line")
        self.inbox = "_INBOX.relaytest.%s" % new_id()[:8]
        self.n = 0
        self.sk.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true,'
                        b'"protocol":1}\r\nSUB %s.* 1\r\nPING\r\n' % self.inbox.encode())
        while True:
            line = self.f.readline()
            check(line, "nats: connection closed at the handshake")
            if line.startswith(b"PONG"):
                break
            check(not line.startswith(b"-ERR"), "nats: %r" % line)

    def close(self):
        self.f.close()
        self.sk.close()

    def request(self, subject, payload=b""):
        """The reply's (headers, body) bytes."""
        self.n += 1
        reply = ("%s.%d" % (self.inbox, self.n)).encode()
        self.sk.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply, len(payload),
                                                       payload))
        while True:
            line = self.f.readline()
            check(line, "nats: connection closed")
            parts = line.split()
            if parts[0] == b"PING":
                self.sk.sendall(b"PONG\r\n")
                continue
            if parts[0] == b"MSG":
                data = self.f.read(int(parts[-1]) + 2)[:-2]
                hdrs = b""
            elif parts[0] == b"HMSG":
                total = self.f.read(int(parts[-1]) + 2)[:-2]
                hdrs, data = total[:int(parts[-2])], total[int(parts[-2]):]
            else:
                check(not parts[0].startswith(b"-ERR"), "nats: %r" % line)
                continue
            if parts[1] == reply:
                return hdrs, data

    def js(self, api, body=None):
        _, data = self.request("$JS.API." + api, json.dumps(body).encode() if body else b"")
        return json.loads(data) if data else {}

    def stream_messages(self):
        """Messages the events stream holds (0 before it exists)."""
        info = self.js("STREAM.INFO." + EVENTS)
        if "error" in info:
            check(info["error"].get("code") == 404, "stream info: %s" % info)
            return 0
        return info["state"]["messages"]

    def read_stream(self):
        """[(seq, subject, Nats-Msg-Id, parsed JSON)] in stream order."""
        info = self.js("STREAM.INFO." + EVENTS)
        check("error" not in info, "stream info: %s" % info)
        out = []
        for seq in range(info["state"]["first_seq"], info["state"]["last_seq"] + 1):
            r = self.js("STREAM.MSG.GET." + EVENTS, {"seq": seq})
            if "error" in r:  # a sequence removed from the stream
                continue
            m = r["message"]
            hdrs = base64.b64decode(m.get("hdrs", "")).decode()
            msg_id = None
            for h in hdrs.split("\r\n")[1:]:
                if h.lower().startswith("nats-msg-id:"):
                    msg_id = h.split(":", 1)[1].strip()
            out.append((m["seq"], m["subject"], msg_id,
                        json.loads(base64.b64decode(m.get("data", "")))))
        return out


def _partition(org, partitions=PARTITIONS):
    """partition.h: jump consistent hash of the 64-bit FNV-1a of the id."""
    h = 14695981039346656037
    for c in org.lower().encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    b, j = -1, 0
    while j < partitions:
        b = j
        h = (h * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int(float(b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
    return b


class Writes:
    """Payments written synchronously through one node, each created, then
    patched PATCHES times (reference step-k at version k), every tenth then
    deleted: final[pid] is the last version, deleted the set deleted."""

    def __init__(self, orgs):
        self.orgs = orgs
        self.final = {}
        self.org_of = {}
        self.deleted = set()
        self.lock = threading.Lock()

    def events(self):
        return sum(v + 1 for v in self.final.values())

    def _one(self, conn, org, pid, delete):
        st, j = conn.request("POST", "/v1/payments", payment(org=org, pid=pid, reference="step-0"))
        check(st == 201, "create: %d %s" % (st, json.dumps(j)[:200]))
        for k in range(1, PATCHES + 1):
            body = {"data": {"version": k - 1, "attributes": {"reference": "step-%d" % k}}}
            st, j = conn.request("PATCH", "/v1/payments/%s" % pid, body)
            check(st == 200, "patch %d: %d %s" % (k, st, json.dumps(j)[:200]))
        last = PATCHES
        if delete:
            st, _ = conn.request("DELETE", "/v1/payments/%s?version=%d" % (pid, PATCHES))
            check(st == 204, "delete: %d" % st)
            last += 1
        with self.lock:
            self.final[pid] = last
            self.org_of[pid] = org
            if delete:
                self.deleted.add(pid)

    def run(self, port, n):
        """n payments from WRITERS threads; the first failure is raised."""
        errors = []

        def thread(i):
            conn = Conn(port)
            try:
                for k in range(i, n, WRITERS):
                    if errors:
                        return
                    self._one(conn, self.orgs[k % len(self.orgs)], new_id(), k % 10 == 0)
            except Exception as e:  # handed to the caller
                errors.append(e)
            finally:
                conn.close()
        ts = [threading.Thread(target=thread, args=(i,), daemon=True) for i in range(WRITERS)]
        for th in ts:
            th.start()
        return ts, errors


def _join(threads, errors):
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def _check_stream(msgs, w):
    """Every event written on the stream, once at least, in version order per
    payment, each message what its event says.  Returns the repeats."""
    first = {}
    last = {}
    bad = []
    for seq, subject, msg_id, ev in msgs:
        if ev.get("id") != msg_id:
            bad.append("seq %d: Nats-Msg-Id %s, event id %s" % (seq, msg_id, ev.get("id")))
        org, pid, v = ev.get("organisation_id"), ev.get("payment_id"), ev.get("version")
        if subject != "payments.events.%d" % _partition(org):
            bad.append("seq %d: subject %s for organisation %s" % (seq, subject, org))
        if msg_id in first:
            continue
        first[msg_id] = seq
        if pid not in w.final or w.org_of[pid] != org:
            bad.append("seq %d: an event of payment %s, never written" % (seq, pid))
            continue
        if v != last.get(pid, -1) + 1:
            bad.append("seq %d: payment %s version %s after %s" % (seq, pid, v, last.get(pid)))
        last[pid] = v
        want_type = ("payment.created" if v == 0 else
                     "payment.deleted" if pid in w.deleted and v == PATCHES + 1 else
                     "payment.updated")
        doc = ev.get("data", {}).get("payment", {})
        want_ref = "step-%d" % min(v, PATCHES)
        if ev.get("event_type") != want_type or doc.get("attributes", {}).get("reference") \
                != want_ref or doc.get("id") != pid:
            bad.append("seq %d: %s v%s: %s, reference %s" % (seq, pid, v, ev.get("event_type"),
                                                              doc.get("attributes")))
    short = [pid for pid, v in w.final.items() if last.get(pid, -1) != v]
    check(not bad, "%d wrong messages, e.g. %s" % (len(bad), " | ".join(bad[:3])))
    check(not short, "%d payments' events missing on the stream (no gap allowed), e.g. %s: "
          "last version %s of %s" % (len(short), short[0] if short else "",
                                      last.get(short[0]) if short else "",
                                      w.final.get(short[0]) if short else ""))
    eq(len(first), w.events(), "distinct events on the stream")
    return len(msgs) - len(first)


def _wait_stream(nc, want, patience_s, what=None):
    """Until the stream holds want messages: their count.  Past the
    patience, fails when what names the wait, else returns the count (the
    check that follows says what is missing)."""
    deadline = time.monotonic() + patience_s
    n = nc.stream_messages()
    while n < want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = nc.stream_messages()
    check(n >= want or not what, "%s: the stream holds %d of %d events after %.0fs"
          % (what, n, want, patience_s))
    return n


@sqlite_test
def kill9_relay_resumes(t):
    d = t.scratch("relay_kill9")
    nats_dir = os.path.join(d, "nats")
    url = "nats://%s:%s" % (HOST, _nats("start", nats_dir))
    store = "sqlite:" + os.path.join(d, "payments.db")
    writer = Server(t.binary, d, name="writer", store=store,
                    args=["--broker", url, "--relay", "false"])
    relays = []
    killed = []
    nc = None
    try:
        writer.start()
        nc = Nats(url)
        w = Writes([new_id() for _ in range(40)])
        t0 = time.monotonic()
        _join(*w.run(writer.port, 600))
        backlog = w.events()
        took = time.monotonic() - t0
        eq(nc.stream_messages(), 0, "messages published by a node run with --relay false")

        # The relay starts on a backlog, and writes go on meanwhile.
        r1 = Server(t.binary, d, name="relay1", store=store, args=["--broker", url]).start()
        relays.append(r1)
        more = w.run(writer.port, 300)
        at = _wait_stream(nc, backlog // 4, SETTLE_S, "before the kill")
        r1.kill9()
        killed.append(r1)
        at_kill = nc.stream_messages()
        r2 = Server(t.binary, d, name="relay2", store=store, args=["--broker", url]).start()
        relays.append(r2)
        _join(*more)
        total = w.events()
        t1 = time.monotonic()
        _wait_stream(nc, total, CATCH_UP_S)
        caught_up = time.monotonic() - t1
        time.sleep(0.5)  # anything more would be a repeat
        msgs = nc.read_stream()
        repeats = _check_stream(msgs, w)
        print("     relay.kill9: %d events written (backlog of %d in %.1fs); relay killed with "
              "%d..%d on the stream; the next one caught up %.1fs after the writes ended; "
              "%d messages, %d repeats" % (total, backlog, took, at, at_kill, caught_up,
                                           len(msgs), repeats))
        eq(repeats, 0, "repeats the duplicate window should have dropped")
    finally:
        if nc:
            nc.close()
        problems = []
        for p in [writer] + relays:
            if p in killed or p.proc is None:
                continue
            try:
                rc = p.stop()
                if rc != 0:
                    problems.append("%s: exit status %s: %s" % (p.name, rc, p.stderr_tail()))
            except Fail as e:
                problems.append(str(e))
            rep = p.sanitizer_report()
            if rep:
                problems.append("%s: sanitizer report: %s" % (p.name, rep))
        for p in [writer] + relays:
            p.ensure_dead()
        _nats("stop", nats_dir)
        check(not problems, "; ".join(problems))
