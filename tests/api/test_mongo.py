"""The MongoDB store's own behaviour, run only with run.py --mongo: MongoDB going away
mid-traffic and coming back, start-up without MongoDB (failing, or waiting
with paymentdWaitForStore=true), and two paymentd nodes on one database.
Each test starts private test doubles (tests/mongo/double.py) and servers of
its own and always stops them."""

import threading
import time

from harness import (MONGO, Double, Fail, Server, check, create, eq, expect_error, expect_status,
                     free_port,
                     mongo_test, mongo_uri, new_id, new_mongo_db, payment, qs, run_binary)

# Short timeouts keep the outage tests quick; the defaults are 2000/5000 ms.
SELECTION_MS = 800
FAST = "serverSelectionTimeoutMS=%d&socketTimeoutMS=2000&connectTimeoutMS=800" % SELECTION_MS
# A request during an outage is answered within about twice the selection
# timeout (a write may wait for one already trying); this allows for ASan.
ANSWER_WITHIN = 2 * SELECTION_MS / 1000.0 + 2.0


def finish(srv):
    rc = srv.stop()
    check(rc == 0, "%s: exit status %s after SIGTERM: %s" % (srv.name, rc, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def expect_unavailable(r, what, took):
    expect_error(r, 503, "store_unavailable", what)
    check(r.header("Retry-After"), "%s: 503 without Retry-After" % what)
    check(took < ANSWER_WITHIN, "%s: answered after %.1fs, expected within %.1fs"
          % (what, took, ANSWER_WITHIN))


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def wait_ready(c, within, what):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = c.get("/readyz")
        if last.status == 200:
            return
        time.sleep(0.1)
    raise Fail("%s: /readyz still %s after %.0fs" % (what, last.describe() if last else "-", within))


class Traffic:
    """Creates and reads in a loop on a few threads, recording every status
    and the slowest answer, until stopped."""

    def __init__(self, srv, org, threads=3):
        self.srv = srv
        self.org = org
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.slowest = 0.0
        self.acked = {}  # id -> data of creates answered 201
        self.errors = []
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def run(self):
        c = self.srv.client()
        while not self.stop_ev.is_set():
            pid = new_id()
            try:
                r, took = timed(c.post, "/v1/payments", payment(self.org, pid=pid, reference="t"))
                if r.status == 201:
                    with self.lock:
                        self.acked[pid] = r.data
                    r2, took2 = timed(c.get, "/v1/payments/" + pid)
                    self.note(r2.status, took2)
                self.note(r.status, took)
            except Fail as e:
                with self.lock:
                    self.errors.append(str(e))
                time.sleep(0.05)

    def note(self, status, took):
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.slowest = max(self.slowest, took)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)
        check(not any(t.is_alive() for t in self.threads), "traffic threads did not stop")


@mongo_test
def outage_mid_traffic_answers_503_then_recovers(t):
    d = t.scratch("outage")
    dbl = Double(d).start()
    srv = Server(t.binary, d, name="outage", store=dbl.uri("outage", FAST))
    traffic = None
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        before = [create(c, payment(org))["id"] for _ in range(5)]
        expect_status(c.get("/readyz"), 200, "/readyz with MongoDB up")
        traffic = Traffic(srv, org).start()
        time.sleep(0.5)

        dbl.stop()  # MongoDB goes away mid-traffic
        time.sleep(0.2)
        r, took = timed(c.post, "/v1/payments", payment(org))
        expect_unavailable(r, "POST during the outage", took)
        r, took = timed(c.get, "/v1/payments/" + before[0])
        expect_unavailable(r, "GET during the outage", took)
        r, took = timed(c.get, "/v1/payments?" + qs({"filter[organisation_id]": org}))
        expect_unavailable(r, "list during the outage", took)
        r, took = timed(c.patch, "/v1/payments/" + before[1],
                        {"data": {"version": 0, "attributes": {"reference": "x"}}})
        expect_unavailable(r, "PATCH during the outage", took)
        r, took = timed(c.delete, "/v1/payments/" + before[2])
        expect_unavailable(r, "DELETE during the outage", took)
        r, took = timed(c.get, "/readyz")
        expect_unavailable(r, "/readyz during the outage", took)
        expect_status(c.get("/healthz"), 200, "/healthz during the outage (the process is alive)")

        dbl.start()  # same port, same data
        wait_ready(c, 15, "after MongoDB came back")
        traffic.stop()
        check(not traffic.errors, "requests without an HTTP answer: %s" % traffic.errors[:3])
        unexpected = {s: n for s, n in traffic.statuses.items() if s not in (200, 201, 503)}
        eq(unexpected, {}, "statuses other than 200, 201 and 503 during the outage")
        check(traffic.statuses.get(503, 0) > 0, "no 503 under traffic during the outage: %s"
              % traffic.statuses)
        check(traffic.slowest < ANSWER_WITHIN + 1.0, "slowest answer under traffic took %.1fs"
              % traffic.slowest)

        # Recovered without a restart: old and new payments, reads and writes.
        for pid in before:
            expect_status(c.get("/v1/payments/" + pid), 200, "GET a payment from before the outage")
        lost = [pid for pid, data in traffic.acked.items()
                if c.get("/v1/payments/" + pid).data != data]
        eq(lost, [], "creates answered 201 around the outage that are lost or changed")
        expect_status(c.patch("/v1/payments/" + before[1],
                              {"data": {"version": 0, "attributes": {"reference": "x"}}}),
                      200, "PATCH after recovery")
        expect_status(c.delete("/v1/payments/" + before[2]), 204, "DELETE after recovery")
        n = create(c, payment(org))["id"]
        listed = []
        path = "/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1000"})
        r = c.get(path)
        expect_status(r, 200, "list after recovery")
        listed = [x["id"] for x in r.data]
        check(n in listed and before[0] in listed and before[2] not in listed,
              "list after recovery misses the new payment or shows a deleted one")
        finish(srv)
    finally:
        if traffic is not None:
            traffic.stop_ev.set()
        srv.ensure_dead()
        dbl.ensure_dead()


@mongo_test
def start_without_mongodb_fails_clearly(t):
    d = t.scratch("nomongo")
    dbl = Double(d).start()
    uri = dbl.uri("nomongo", FAST)
    dbl.stop()  # the port is now closed
    t0 = time.monotonic()
    rc, out, err = run_binary(t.binary, ["--listen", "127.0.0.1:%d" % free_port(), "--store", uri], cwd=d,
                              timeout=15)
    took = time.monotonic() - t0
    check(rc != 0, "paymentd started without MongoDB (exit %s)" % rc)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    eq(len(lines), 1, "lines on stderr (%r)" % err[:300])
    check("127.0.0.1:%d" % dbl.port in lines[0] and "--wait-for-store" in lines[0],
          "the error names neither the host nor the way to wait: %r" % lines[0])
    check(took < SELECTION_MS / 1000.0 + 5, "failing took %.1fs" % took)


@mongo_test
def start_waiting_for_mongodb_then_serves(t):
    d = t.scratch("waitmongo")
    dbl = Double(d).start()
    uri = dbl.uri("waitmongo", FAST)
    dbl.stop()
    # The flags: wait for the store, and a collection of its own.
    srv = Server(t.binary, d, name="waitmongo", store=uri,
                 args=["--wait-for-store", "true", "--mongo-collection", "waitpay"])
    try:
        srv.start()  # answers /healthz although MongoDB is away
        c = srv.client()
        r, took = timed(c.get, "/readyz")
        expect_unavailable(r, "/readyz before MongoDB exists", took)
        r, took = timed(c.post, "/v1/payments", payment())
        expect_unavailable(r, "POST before MongoDB exists", took)
        dbl.start()
        wait_ready(c, 15, "once MongoDB answers")
        p = create(c, payment())
        expect_status(c.get("/v1/payments/" + p["id"]), 200, "GET after MongoDB came")
        finish(srv)
    finally:
        srv.ensure_dead()
        dbl.ensure_dead()


@mongo_test
def two_nodes_share_one_database(t):
    """Scaling out: nodes on one database see each other's writes, and the
    compare-and-set holds across them."""
    d = t.scratch("twonodes")
    db = new_mongo_db()
    store = mongo_uri(MONGO["uri"], db)
    a = Server(t.binary, d, name="node-a", store=store)
    b = Server(t.binary, d, name="node-b", store=store)
    try:
        a.start()
        b.start()
        ca, cb = a.client(), b.client()
        org = new_id()
        pid = create(ca, payment(org))["id"]
        expect_status(cb.get("/v1/payments/" + pid), 200, "node B reads node A's create")
        expect_error(cb.post("/v1/payments", payment(org, pid=pid)), 409, "duplicate_id",
                     "node B creates node A's id")
        results = []
        lock = threading.Lock()

        def put(c, tag):
            r = c.put("/v1/payments/" + pid, {"data": {"version": 0, "organisation_id": org,
                                                       "attributes": {"amount": "1.00",
                                                                      "currency": "EUR",
                                                                      "reference": tag}}})
            with lock:
                results.append(r.status)

        threads = [threading.Thread(target=put, args=(ca if i % 2 else cb, "w%d" % i))
                   for i in range(10)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
        eq(sorted(results), [200] + [409] * 9, "statuses of 10 updates of version 0 on two nodes")
        ids = [pid] + [create(ca if i % 2 else cb, payment(org))["id"] for i in range(6)]
        r = ca.get("/v1/payments?" + qs({"filter[organisation_id]": org}))
        eq([x["id"] for x in r.data], ids, "list order across nodes (sequential creates)")
        finish(a)
        finish(b)
    finally:
        a.ensure_dead()
        b.ensure_dead()
