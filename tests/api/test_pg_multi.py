"""Several paymentd processes on one PostgreSQL schema, run only with run.py
--pg: three HTTP servers (each with --broker) and two `paymentd worker`s
(one nats-server), all on a new schema of the suite's database, started at
once (the schema is made by whichever comes first).

- Twenty writes of one payment, PUTs and PATCHes all with If-Match of the
  same version, sent at once through the three servers: exactly one is
  answered 200 and nineteen 409 version_conflict, and the stored version is
  one more; the same through the broker: twenty 202s, and of their
  operations one succeeded and nineteen failed version_conflict.
- Mixed writes (creates, PUTs, PATCHes, DELETEs, some through the broker,
  some racing on shared payments) through the three servers for a few
  seconds while a consumer follows /v1/events with its cursors on one
  server: afterwards the consumer has seen every acknowledged change exactly
  once and nothing else, positions strictly increasing, each payment's
  versions in order with none skipped."""

import os
import random
import threading
import time

from harness import (Fail, check, default_store, eq, new_id, payment, pg_test)
from test_broker_e2e import Conn, Node, _nats
from test_feed_integrity import Follower

SERVERS = 3
WORKERS = 2
RACERS = 20
ASYNC = {"Prefer": "respond-async"}
SETTLE_S = 60.0   # bound on the wait for an operation to be applied
MIXED_S = 4.0     # seconds of mixed writes
MIXED_THREADS = 6
SHARED = 4        # payments every mixed writer races on


class Multi:
    """The processes of one test on one new schema: nats-server, the HTTP
    servers, the workers.  stop() ends them all, whatever happened, and
    reports exit statuses other than 0 and sanitizer reports."""

    def __init__(self, t, name):
        self.t = t
        self.dir = t.scratch(name)
        self.nats_dir = os.path.join(self.dir, "nats")
        self.store = default_store(self.dir, "store")
        self.servers = []
        self.workers = []
        self.nats = False

    def start(self):
        urls = "nats://127.0.0.1:%s" % _nats("start", self.nats_dir)
        self.nats = True
        # All at once: the schema's first migration is theirs to share.
        for i in range(SERVERS):
            self.servers.append(Node(self.t.binary, self.dir, "http%d" % i, self.store, urls))
        for i in range(WORKERS):
            self.workers.append(Node(self.t.binary, self.dir, "w%d" % i, self.store, urls,
                                     worker=True))
        for p in self.servers + self.workers:
            p.start(wait=False)
        for s in self.servers:
            s.wait_ready()
        deadline = time.monotonic() + 20.0
        for w in self.workers:
            while not any(r.get("msg", "").startswith("worker %s joined" % w.name)
                          for r in w.log_records()):
                check(w.running(), "worker %s exited at start (status %s): %s"
                      % (w.name, w.proc.returncode, w.stderr_tail()))
                check(time.monotonic() < deadline, "worker %s did not join within 20 s: %s"
                      % (w.name, w.stderr_tail()))
                time.sleep(0.05)
        return self

    def ports(self):
        return [s.port for s in self.servers]

    def stop(self):
        problems = []
        procs = self.workers + self.servers
        try:
            for p in procs:
                if p.proc is None:
                    continue
                try:
                    rc = p.stop()
                    if rc != 0:
                        problems.append("%s: exit status %s after SIGTERM: %s"
                                        % (p.name, rc, p.stderr_tail()))
                except Fail as e:
                    problems.append(str(e))
                rep = p.sanitizer_report()
                if rep:
                    problems.append("%s: sanitizer report: %s" % (p.name, rep))
        finally:
            for p in procs:
                p.ensure_dead()
            if self.nats:
                _nats("stop", self.nats_dir)
        check(not problems, "; ".join(problems))


def _await_op(conn, op):
    """The operation op once applied (its data), within SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        st, j = conn.request("GET", "/v1/operations/%s" % op)
        eq(st, 200, "GET /v1/operations/%s" % op)
        if j["data"]["status"] != "pending":
            return j["data"]
        check(time.monotonic() < deadline, "operation %s still pending after %.0f s"
              % (op, SETTLE_S))
        time.sleep(0.05)


def _history(conn, pid):
    st, j = conn.request("GET", "/v1/payments/%s/history?page[size]=1000" % pid)
    eq(st, 200, "history of %s" % pid)
    return [(e["event_type"], e["version"]) for e in j["data"]]


def _race(ports, pid, org, version, headers):
    """RACERS writes of payment pid at once, each based on version (If-Match),
    PUTs and PATCHes in turn, spread over ports; each racer's connection is
    open before the start.  Returns [(status, body, reference written)]."""
    start = threading.Barrier(RACERS)
    results = [None] * RACERS

    def racer(i):
        conn = Conn(ports[i % len(ports)])
        try:
            st, _ = conn.request("GET", "/v1/payments/%s" % pid)  # connected, warm
            eq(st, 200, "GET before the race")
            ref = "racer-%d" % i
            h = dict(headers, **{"If-Match": '"%d"' % version})
            if i % 2:
                method, body = "PATCH", {"data": {"attributes": {"reference": ref}}}
            else:
                method, body = "PUT", payment(org=org, pid=pid, reference=ref)
            start.wait(30)
            st, j = conn.request(method, "/v1/payments/%s" % pid, body, h)
            results[i] = (st, j, ref)
        except Exception as e:  # reported below, as a missing result
            results[i] = (None, repr(e), None)
            start.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(RACERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
        check(not th.is_alive(), "a racer did not finish in 120 s")
    bad = [r for r in results if r is None or r[0] is None]
    check(not bad, "racers without an answer: %s" % bad[:3])
    return results


@pg_test
def one_winner_of_twenty_updates_across_three_servers(t):
    """Synchronous: one 200, nineteen 409 version_conflict, version + 1;
    through the broker: twenty 202s, one operation succeeded, nineteen
    failed version_conflict, version + 1 again."""
    m = Multi(t, "pg-multi-race")
    try:
        m.start()
        ports = m.ports()
        conn = Conn(ports[0])
        try:
            org, pid = new_id(), new_id()
            st, j = conn.request("POST", "/v1/payments", payment(org=org, pid=pid))
            eq(st, 201, "create of the raced payment")

            results = _race(ports, pid, org, 0, {})
            statuses = sorted(r[0] for r in results)
            eq(statuses, [200] + [409] * (RACERS - 1),
               "statuses of %d updates of version 0 through %d servers" % (RACERS, SERVERS))
            winner = [r for r in results if r[0] == 200][0]
            eq(winner[1]["data"]["version"], 1, "the winner's version")
            for st, j, _ in results:
                if st == 409:
                    eq(j.get("error_code"), "version_conflict", "a loser's error_code")
            for p in ports:  # every server reads what the winner wrote
                st, j = Conn(p).request("GET", "/v1/payments/%s" % pid)
                eq(st, 200, "GET the raced payment")
                eq((j["data"]["version"], j["data"]["attributes"].get("reference")),
                   (1, winner[2]), "the raced payment on server %d" % p)
            eq(_history(conn, pid), [("payment.created", 0), ("payment.updated", 1)],
               "the raced payment's history after the synchronous race")

            results = _race(ports, pid, org, 1, ASYNC)
            eq([r[0] for r in results], [202] * RACERS, "statuses of asynchronous updates")
            ops = [(_await_op(conn, r[1]["data"]["id"]), r[2]) for r in results]
            won = [(o, ref) for o, ref in ops if o["status"] == "succeeded"]
            lost = [o for o, _ in ops if o["status"] != "succeeded"]
            eq(len(won), 1, "operations that succeeded of %d asynchronous updates of version 1"
               % RACERS)
            for o in lost:
                eq((o["status"], o.get("error_code"), o.get("current_version")),
                   ("failed", "version_conflict", 2), "a losing operation %s" % o["id"])
            st, j = conn.request("GET", "/v1/payments/%s" % pid)
            eq((st, j["data"]["version"], j["data"]["attributes"].get("reference")),
               (200, 2, won[0][1]), "the raced payment after the asynchronous race")
            eq(_history(conn, pid), [("payment.created", 0), ("payment.updated", 1),
                                     ("payment.updated", 2)],
               "the raced payment's history after both races")
        finally:
            conn.close()
    finally:
        m.stop()


class Mixer(threading.Thread):
    """Writes for a while through every server, each write with an
    Idempotency-Key (a reconnecting retry is the same write): creates, then
    PUTs, PATCHes and DELETEs of its own payments (a fifth through the
    broker, waited for), and PATCHes racing the other mixers on the shared
    payments (409 when another won).  Records every acknowledged change as
    (payment, version, event type)."""

    def __init__(self, ports, org, shared, seed, until):
        threading.Thread.__init__(self, daemon=True)
        self.conns = [Conn(p) for p in ports]
        self.org = org
        self.shared = shared
        self.rnd = random.Random(seed)
        self.until = until
        self.acked = []     # (pid, version, event type)
        self.mine = {}      # pid -> version, live payments of this mixer
        self.error = None

    def request(self, method, path, body=None, headers=None, async_=False):
        h = dict(headers or {}, **{"Idempotency-Key": new_id()})
        if async_:
            h.update(ASYNC)
        c = self.rnd.choice(self.conns)
        st, j = c.request(method, path, body, h)
        if async_ and st == 202:
            o = _await_op(c, j["data"]["id"])
            check(o["status"] == "succeeded", "operation of %s %s: %s" % (method, path, o))
            return 200, {"data": {"version": o["version"]}}
        return st, j

    def one(self):
        r = self.rnd.random()
        if not self.mine or r < 0.2:
            pid = new_id()
            st, j = self.request("POST", "/v1/payments", payment(org=self.org, pid=pid),
                                 async_=self.rnd.random() < 0.2)
            check(st in (200, 201), "create: %s %s" % (st, j))
            self.mine[pid] = 0
            self.acked.append((pid, 0, "payment.created"))
        elif r < 0.35:
            pid = self.rnd.choice(self.shared)
            st, j = self.rnd.choice(self.conns).request("GET", "/v1/payments/%s" % pid)
            eq(st, 200, "GET shared %s" % pid)
            v = j["data"]["version"]
            st, j = self.request("PATCH", "/v1/payments/%s" % pid,
                                 {"data": {"attributes": {"reference": "s%d" % v}}},
                                 {"If-Match": '"%d"' % v})
            check(st in (200, 409), "PATCH shared: %s %s" % (st, j))
            if st == 200:
                eq(j["data"]["version"], v + 1, "version of a shared PATCH")
                self.acked.append((pid, v + 1, "payment.updated"))
        elif r < 0.45:
            pid = self.rnd.choice(list(self.mine))
            v = self.mine.pop(pid)
            st, j = self.request("DELETE", "/v1/payments/%s?version=%d" % (pid, v),
                                 async_=self.rnd.random() < 0.2)
            check(st in (200, 204), "DELETE: %s %s" % (st, j))
            self.acked.append((pid, v + 1, "payment.deleted"))
        else:
            pid = self.rnd.choice(list(self.mine))
            v = self.mine[pid]
            async_ = self.rnd.random() < 0.2
            if self.rnd.random() < 0.5:
                st, j = self.request("PATCH", "/v1/payments/%s" % pid,
                                     {"data": {"attributes": {"reference": "m%d" % v}}},
                                     {"If-Match": '"%d"' % v}, async_=async_)
            else:
                st, j = self.request("PUT", "/v1/payments/%s" % pid,
                                     payment(org=self.org, pid=pid, reference="p%d" % v),
                                     {"If-Match": '"%d"' % v}, async_=async_)
            check(st == 200, "update of %s: %s %s" % (pid, st, j))
            eq(j["data"]["version"], v + 1, "version of an update of %s" % pid)
            self.mine[pid] = v + 1
            self.acked.append((pid, v + 1, "payment.updated"))

    def run(self):
        try:
            while time.monotonic() < self.until:
                self.one()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            for c in self.conns:
                c.close()


@pg_test
def feed_holds_every_acknowledged_change_once_with_three_servers(t):
    m = Multi(t, "pg-multi-feed")
    try:
        m.start()
        ports = m.ports()
        org = new_id()
        conn = Conn(ports[1])
        shared, acked = [], []
        try:
            for _ in range(SHARED):
                pid = new_id()
                st, _ = conn.request("POST", "/v1/payments", payment(org=org, pid=pid))
                eq(st, 201, "create of a shared payment")
                shared.append(pid)
                acked.append((pid, 0, "payment.created"))
        finally:
            conn.close()
        follower = Follower([ports[0]])
        follower.start()
        until = time.monotonic() + MIXED_S
        mixers = [Mixer(ports, org, shared, seed=i, until=until) for i in range(MIXED_THREADS)]
        for x in mixers:
            x.start()
        for x in mixers:
            x.join(SETTLE_S + 60)
            check(not x.is_alive(), "a mixer did not finish")
            if x.error:
                raise x.error
            acked += x.acked
        follower.stop_after = time.monotonic() + 2.0  # past the servers' poll of each other
        follower.join(120)
        check(not follower.is_alive(), "the follower did not catch up in 120 s")
        if follower.error:
            raise follower.error

        check(len(acked) > 100, "only %d changes acknowledged in %.0f s" % (len(acked), MIXED_S))
        check(len(set((p, v) for p, v, _ in acked)) == len(acked),
              "a version of a payment acknowledged twice")
        events = follower.events  # the schema is this test's alone
        positions = [e["position"] for e in events]
        bad = [(a, b) for a, b in zip(positions, positions[1:]) if b <= a]
        eq(bad, [], "feed positions not strictly increasing")
        ids = [e["id"] for e in events]
        eq(len(ids), len(set(ids)), "events seen twice")
        seen = [(e["payment_id"], e["version"], e["event_type"]) for e in events]
        missing = set(acked) - set(seen)
        extra = set(seen) - set(acked)
        eq(sorted(missing)[:5], [], "acknowledged changes (%d) missing from the feed"
           % len(missing))
        eq(sorted(extra)[:5], [], "changes in the feed (%d) never acknowledged" % len(extra))
        eq(len(seen), len(acked), "events in the feed against the acknowledged changes")
        by_payment = {}
        for pid, v, _ in seen:
            by_payment.setdefault(pid, []).append(v)
        for pid, versions in by_payment.items():
            eq(versions, list(range(len(versions))), "versions of %s in feed order" % pid)
    finally:
        m.stop()
