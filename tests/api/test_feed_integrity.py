"""The change feed against many writers and against crashes, with real
processes only, on the suite's store (harness.default_store: a SQLite file
shared by every process, with run.py --mongo a new MongoDB database, with
run.py --pg a new PostgreSQL schema):

- three HTTP servers and two `paymentd worker`s (one nats-server) write at
  once: synchronous creates, PUTs, PATCHes and deletes through every
  server, and asynchronous ones through the broker; meanwhile a consumer
  follows GET /v1/events with wait, from the start, through the servers in
  turn.  Afterwards the consumer must have seen every event exactly once and
  each payment's events in version order, and what it saw must be exactly
  the payments' final histories, event for event.
- one server is killed with -9 in the middle of mixed writes and started
  again: every payment's history must then be exactly its committed
  changes: versions 0..its stored version, one event each, the last one the
  delete when it is deleted, every acknowledged write among them; and the
  feed holds exactly the events of all the histories."""

import os
import random
import threading
import time

from harness import MONGO, Fail, Server, check, default_store, eq, new_id, payment, test
from test_broker_e2e import NATS, Conn, Node, _nats

ORGS = ["0f0f0f0f-0000-4000-8000-%012x" % i for i in range(4)]
ASYNC = {"Prefer": "respond-async"}


def _store(t, d):
    return default_store(d, "store")


def _history(conn, pid):
    """Every event of payment pid, oldest first, following links.next."""
    out = []
    path = "/v1/payments/%s/history?page[size]=1000" % pid
    while path:
        st, j = conn.request("GET", path)
        eq(st, 200, "history of %s" % pid)
        out += j["data"]
        nxt = (j.get("links") or {}).get("next")
        path = nxt[nxt.index("/v1/"):] if nxt else None
    return out


class Follower(threading.Thread):
    """Follows the feed with wait=1 from the start through the given ports in
    turn, until told to stop and then caught up (an empty page)."""

    def __init__(self, ports):
        threading.Thread.__init__(self, daemon=True)
        self.conns = [Conn(p) for p in ports]
        self.events = []
        self.stop_after = None  # set: stop at the first empty page after this time
        self.error = None

    def run(self):
        try:
            after, i = 0, 0
            while True:
                c = self.conns[i % len(self.conns)]
                i += 1
                asked = time.monotonic()
                st, j = c.request("GET", "/v1/events?page[after]=%d&page[size]=200&wait=1" % after)
                if st == 503:
                    time.sleep(0.05)
                    continue
                check(st == 200, "feed after %d: %s %s" % (after, st, j))
                self.events += j["data"]
                nxt = j["links"]["next"]
                check("page[after]=" in nxt, "links.next without a cursor: %s" % nxt)
                new_after = int(nxt.split("page[after]=")[1].split("&")[0])
                check(new_after >= after, "the cursor went back: %d -> %d" % (after, new_after))
                for e in j["data"]:
                    check(e["position"] > after and e["position"] <= new_after,
                          "event at %d outside the page (%d, %d]" % (e["position"], after,
                                                                     new_after))
                after = new_after
                if not j["data"] and self.stop_after is not None and asked > self.stop_after:
                    return
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            for c in self.conns:
                c.close()


def _check_feed_against_histories(events, histories):
    ids = [e["id"] for e in events]
    check(len(ids) == len(set(ids)), "the feed repeated %d events" % (len(ids) - len(set(ids))))
    by_payment = {}
    for e in events:
        by_payment.setdefault(e["payment_id"], []).append(e)
    for pid, hist in histories.items():
        seen = by_payment.pop(pid, [])
        eq([e["version"] for e in seen], [e["version"] for e in hist],
           "versions of %s in the feed, in feed order, against its history" % pid)
        eq([e["id"] for e in seen], [e["id"] for e in hist], "event ids of %s" % pid)
    check(not by_payment, "the feed has events of payments no history has: %s"
          % sorted(by_payment)[:3])


def _check_history_shape(pid, hist, stored_version, deleted):
    """A history is versions 0..n, created first, deleted last if deleted."""
    check(hist, "payment %s has no history" % pid)
    eq([e["version"] for e in hist], list(range(len(hist))), "versions of %s" % pid)
    eq(hist[0]["event_type"], "payment.created", "first event of %s" % pid)
    for e in hist[1:-1]:
        eq(e["event_type"], "payment.updated", "middle event of %s" % pid)
    if deleted:
        eq(hist[-1]["event_type"], "payment.deleted", "last event of deleted %s" % pid)
    else:
        eq(hist[-1]["version"], stored_version, "last version of %s against the stored one" % pid)
        if len(hist) > 1:
            eq(hist[-1]["event_type"], "payment.updated", "last event of %s" % pid)


class Writer(threading.Thread):
    """Writes one organisation's payments through the given ports, mixing
    synchronous and (with async_share) asynchronous writes: creates, then
    rounds of PUT/PATCH with If-Match, then deletes a third."""

    def __init__(self, ports, org, n, rounds, async_share, seed):
        threading.Thread.__init__(self, daemon=True)
        self.conns = [Conn(p) for p in ports]
        self.org = org
        self.n = n
        self.rounds = rounds
        self.async_share = async_share
        self.rnd = random.Random(seed)
        self.pids = []
        self.error = None

    def conn(self):
        return self.rnd.choice(self.conns)

    def write(self, method, path, body, headers):
        """A write that must succeed: sync 2xx, or async 202 then its
        operation succeeded."""
        key = new_id()
        h = dict(headers, **{"Idempotency-Key": key})
        async_ = self.rnd.random() < self.async_share
        if async_:
            h.update(ASYNC)
        for _ in range(200):
            st, j = self.conn().request(method, path, body, h)
            if st == 503:
                time.sleep(0.05)
                continue
            break
        if async_:
            check(st == 202, "%s %s async: %s %s" % (method, path, st, j))
            op = j["data"]["id"]
            deadline = time.monotonic() + 60
            while True:
                st2, o = self.conn().request("GET", "/v1/operations/%s" % op)
                if st2 == 200 and o["data"]["status"] in ("succeeded", "failed"):
                    check(o["data"]["status"] == "succeeded", "operation %s: %s" % (op, o))
                    return o["data"].get("version")
                check(time.monotonic() < deadline, "operation %s not applied in 60 s" % op)
                time.sleep(0.05)
        check(st in (200, 201, 204), "%s %s: %s %s" % (method, path, st, j))
        return j["data"]["version"] if j else None

    def run(self):
        try:
            for _ in range(self.n):
                pid = new_id()
                self.write("POST", "/v1/payments", payment(org=self.org, pid=pid), {})
                self.pids.append(pid)
            versions = {pid: 0 for pid in self.pids}
            for r in range(self.rounds):
                for pid in self.pids:
                    v = versions[pid]
                    if self.rnd.random() < 0.5:
                        body = {"data": {"version": v,
                                         "attributes": {"reference": "r%d-%d" % (r, v)}}}
                        self.write("PATCH", "/v1/payments/%s" % pid, body, {})
                    else:
                        body = payment(org=self.org, pid=pid, reference="p%d-%d" % (r, v))
                        self.write("PUT", "/v1/payments/%s" % pid, body,
                                   {"If-Match": '"%d"' % v})
                    versions[pid] = v + 1
            self.deleted = set(self.pids[: len(self.pids) // 3])
            for pid in self.deleted:
                self.write("DELETE", "/v1/payments/%s?version=%d" % (pid, versions[pid]), None,
                           {})
            self.versions = versions
        except Exception as e:
            self.error = e
        finally:
            for c in self.conns:
                c.close()


@test
def feed_follower_sees_every_event_once_with_three_servers_and_two_workers(t):
    d = t.scratch("feed-many")
    nats_dir = os.path.join(d, "nats")
    urls = "nats://127.0.0.1:%s" % _nats("start", nats_dir)
    store = _store(t, d)
    procs = []
    try:
        for i in range(3):
            n = Node(t.binary, d, "http%d" % i, store, urls)
            n.start()
            procs.append(n)
            if i == 0:
                time.sleep(1.0)  # the first open creates the store
        for i in range(2):
            w = Node(t.binary, d, "w%d" % i, store, urls, worker=True)
            w.start()
            procs.append(w)
        ports = [p.port for p in procs[:3]]
        follower = Follower(ports)
        follower.start()
        n, rounds = (3, 2) if MONGO["uri"] else (8, 3)
        writers = [Writer(ports, org, n, rounds, 0.3, seed=i) for i, org in enumerate(ORGS)]
        for w in writers:
            w.start()
        for w in writers:
            w.join(300)
            check(not w.is_alive(), "a writer did not finish in 300 s")
            if w.error:
                raise w.error
        follower.stop_after = time.monotonic() + 2.0
        follower.join(120)
        check(not follower.is_alive(), "the follower did not catch up in 120 s")
        if follower.error:
            raise follower.error
        conn = Conn(ports[0])
        histories = {}
        for w in writers:
            for pid in w.pids:
                h = _history(conn, pid)
                _check_history_shape(pid, h, w.versions[pid], pid in w.deleted)
                histories[pid] = h
        conn.close()
        total = sum(len(h) for h in histories.values())
        eq(total, len(follower.events), "events the follower saw against the histories' sum")
        _check_feed_against_histories(follower.events, histories)
    finally:
        for p in procs:
            p.ensure_dead()
        _nats("stop", nats_dir)


@test
def feed_and_histories_are_exactly_the_committed_changes_after_kill_9(t):
    d = t.scratch("feed-kill9")
    store = _store(t, d)
    srv = Server(t.binary, d, name="k9", store=store)
    srv.start()
    acked = {}  # pid -> set of versions acknowledged (deleted: the tombstone's)
    lock = threading.Lock()
    stop = threading.Event()

    def writer(seed):
        rnd = random.Random(seed)
        c = Conn(srv.port)
        mine = {}
        try:
            while not stop.is_set():
                try:
                    if not mine or rnd.random() < 0.3:
                        pid = new_id()
                        st, j = c.request("POST", "/v1/payments",
                                          payment(org=rnd.choice(ORGS), pid=pid))
                        if st == 201:
                            mine[pid] = 0
                            with lock:
                                acked.setdefault(pid, set()).add(0)
                        continue
                    pid = rnd.choice(list(mine))
                    v = mine[pid]
                    if rnd.random() < 0.1:
                        st, _ = c.request("DELETE", "/v1/payments/%s?version=%d" % (pid, v))
                        if st == 204:
                            del mine[pid]
                            with lock:
                                acked[pid].add(v + 1)
                        continue
                    st, j = c.request("PATCH", "/v1/payments/%s" % pid,
                                      {"data": {"version": v,
                                                "attributes": {"reference": "x%d" % v}}})
                    if st == 200:
                        mine[pid] = v + 1
                        with lock:
                            acked[pid].add(v + 1)
                except Fail:
                    return  # the server is gone
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    for th in threads:
        th.start()
    time.sleep(3.0)
    srv.kill9()
    stop.set()
    for th in threads:
        th.join(30)
    srv.start()
    conn = Conn(srv.port)
    try:
        # Every payment the writers may have touched: those with an
        # acknowledged create, plus any the feed shows (a create committed
        # but not acknowledged before the kill).
        # On MongoDB the events of writes committed before the kill may still
        # be in their payments' outboxes, to be stamped into the feed by the
        # restarted server's sequencer: follow the feed until it has been
        # quiet for two waits in a row.
        feed = []
        after = 0
        quiet = 0
        deadline = time.monotonic() + 60
        while quiet < 2:
            check(time.monotonic() < deadline, "the feed did not settle within 60 s")
            st, j = conn.request("GET",
                                 "/v1/events?page[after]=%d&page[size]=1000&wait=1" % after)
            eq(st, 200, "feed after restart")
            feed += j["data"]
            quiet = 0 if j["data"] else quiet + 1
            after = int(j["links"]["next"].split("page[after]=")[1].split("&")[0])
        pids = set(acked) | {e["payment_id"] for e in feed}
        check(len(acked) > 10, "too few acknowledged creates (%d) to mean anything" % len(acked))
        histories = {}
        for pid in pids:
            st, j = conn.request("GET", "/v1/payments/%s" % pid)
            check(st in (200, 404), "GET %s after restart: %s" % (pid, st))
            h = _history(conn, pid)
            deleted = st == 404
            _check_history_shape(pid, h, j["data"]["version"] if st == 200 else None, deleted)
            if deleted:
                check(h[-1]["event_type"] == "payment.deleted",
                      "%s is gone but its history does not end with its delete" % pid)
            versions = {e["version"] for e in h}
            missing = acked.get(pid, set()) - versions
            check(not missing, "acknowledged versions %s of %s are not in its history"
                  % (sorted(missing), pid))
            histories[pid] = h
        eq(len(feed), sum(len(h) for h in histories.values()),
           "events in the feed against the histories' sum")
        _check_feed_against_histories(feed, histories)
    finally:
        conn.close()
        srv.stop()
