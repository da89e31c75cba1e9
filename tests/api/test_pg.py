"""The PostgreSQL store's own behaviour, run only with run.py --pg: PostgreSQL
going away and coming back (503 with Retry-After meanwhile, quickly, and the
same paymentd serving again without a restart), the password of the store
URI kept out of every log line, and a crash of PostgreSQL (kill -9) after
which every acknowledged write is there once, with its event.  Each test
starts a private PostgreSQL server (harness.PgServer, tests/pg/pg.sh) and
paymentd servers of its own, never touching the suite's, and always stops
them."""

import threading
import time

from harness import (Fail, PgServer, Server, check, create, eq, expect_error, expect_status,
                     new_id, new_pg_schema, payment, pg_test, qs)

# libpq's connect timeout in the store (PG_CONNECT_TIMEOUT_S) is 3 s; a
# refused connection answers at once.  A request during an outage is
# answered well within the timeout; this allows for ASan.
CONNECT_TIMEOUT = 3.0
ANSWER_WITHIN = CONNECT_TIMEOUT + 1.0
# Seconds for paymentd to serve again once PostgreSQL is back (it tries to
# reconnect at most once a second per connection).
RECOVER_WITHIN = 20.0

SECRET = "pg-Secret-7Q"         # the userinfo's password; trust auth ignores it
OPTION_SECRET = "pg-Opt-Secret-4Z"  # the password= option's


def finish(srv):
    rc = srv.stop()
    check(rc == 0, "%s: exit status %s after SIGTERM: %s" % (srv.name, rc, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def expect_unavailable(r, what, took):
    expect_error(r, 503, "store_unavailable", what)
    check(r.header("Retry-After"), "%s: 503 without Retry-After" % what)
    check(took < ANSWER_WITHIN, "%s: answered after %.1fs, expected within %.1fs"
          % (what, took, ANSWER_WITHIN))


def wait_ready(c, within, what):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = c.get("/readyz")
        if last.status == 200:
            return
        time.sleep(0.1)
    raise Fail("%s: /readyz still %s after %.0fs" % (what, last.describe() if last else "-", within))


def events_of(c, org):
    """Every event of organisation org in the feed, following its links."""
    events = []
    path = "/v1/events?" + qs({"filter[organisation_id]": org, "page[size]": "1000"})
    for _ in range(1000):
        r = c.get(path)
        expect_status(r, 200, "GET /v1/events")
        j = r.json
        events += j["data"]
        if not j["data"]:
            return events
        nxt = j["links"]["next"]
        path = nxt[nxt.index("/v1/"):]
    raise Fail("the feed of %s did not end within 1000 pages" % org)


def listed_ids(c, org):
    r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1000"}))
    expect_status(r, 200, "list of the organisation")
    return [x["id"] for x in r.data]


def check_no_password(srv, what):
    """Neither password appears in anything srv wrote (its JSON log on
    stderr, its stdout)."""
    for name, text in (("stderr", srv.stderr_text()), ("stdout", _read(srv.stdout_path))):
        for secret in (SECRET, OPTION_SECRET):
            i = text.find(secret)
            check(i < 0, "%s: the store's password is in %s's %s: ...%s..."
                  % (what, srv.name, name, text[max(0, i - 120):i + 40]))


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class Writes:
    """Creates then updates payments of one organisation on a few threads
    until stopped, recording each write answered 2xx: the document last
    acknowledged per payment and the number of acknowledged writes."""

    def __init__(self, srv, org, threads=3):
        self.srv = srv
        self.org = org
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}    # id -> data of the last write answered 2xx
        self.writes = {}   # id -> writes answered 2xx (the create and updates)
        self.unsure = set()  # ids with a later write not answered 2xx: it may have committed
        self.statuses = {}
        self.slowest = 0.0
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
                r, took = timed(c.post, "/v1/payments", payment(self.org, pid=pid, reference="w0"))
                self.note(pid, r, took)
                if r.status != 201:
                    time.sleep(0.02)
                    continue
                with self.lock:
                    self.unsure.add(pid)  # until the update is answered 200
                r, took = timed(c.patch, "/v1/payments/" + pid,
                                {"data": {"version": 0, "attributes": {"reference": "w1"}}})
                self.note(pid, r, took)
                if r.status == 200:
                    with self.lock:
                        self.unsure.discard(pid)
            except Fail:
                time.sleep(0.05)  # no answer: neither acknowledged nor refused

    def note(self, pid, r, took):
        with self.lock:
            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            self.slowest = max(self.slowest, took)
            if r.status in (200, 201):
                self.acked[pid] = r.data
                self.writes[pid] = self.writes.get(pid, 0) + 1

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=60)
        check(not any(t.is_alive() for t in self.threads), "writer threads did not stop")


@pg_test
def outage_answers_503_quickly_then_reconnects(t):
    """PostgreSQL stopped under a running paymentd: every store request is
    answered 503 with Retry-After within the connect timeout, /readyz says
    not ready, /healthz stays up; once PostgreSQL is started again the same
    process serves reads and writes, old data and new.  The URI carries a
    password in its user information and in a password= option (trust auth
    ignores both): neither is ever logged, not even in the outage's errors."""
    d = t.scratch("pg-outage")
    pg = PgServer(d).start()
    srv = None
    try:
        schema = new_pg_schema(pg.base)
        store = pg.uri(schema, userinfo="paymentd:" + SECRET, opts="password=" + OPTION_SECRET)
        srv = Server(t.binary, d, name="pg-outage", store=store, args=["--log-level", "debug"])
        srv.start()
        c = srv.client()
        org = new_id()
        before = [create(c, payment(org))["id"] for _ in range(4)]
        expect_status(c.get("/readyz"), 200, "/readyz with PostgreSQL up")
        expect_status(c.get("/v1/events"), 200, "the feed with PostgreSQL up")

        pg.stop()  # PostgreSQL goes away under the running server
        for what, call in (
                ("POST", lambda: c.post("/v1/payments", payment(org))),
                ("GET", lambda: c.get("/v1/payments/" + before[0])),
                ("list", lambda: c.get("/v1/payments?" + qs({"filter[organisation_id]": org}))),
                ("PATCH", lambda: c.patch("/v1/payments/" + before[1],
                                          {"data": {"version": 0,
                                                    "attributes": {"reference": "x"}}})),
                ("DELETE", lambda: c.delete("/v1/payments/" + before[2])),
                ("GET /v1/events", lambda: c.get("/v1/events")),
                ("GET /readyz", lambda: c.get("/readyz")),
                ("a second POST", lambda: c.post("/v1/payments", payment(org)))):
            r, took = timed(call)
            expect_unavailable(r, what + " during the outage", took)
        expect_status(c.get("/healthz"), 200, "/healthz during the outage (the process is alive)")
        check(srv.running(), "paymentd exited during the outage: %s" % srv.stderr_tail())

        pg.start()  # same data, same port
        wait_ready(c, RECOVER_WITHIN, "after PostgreSQL came back")
        for pid in before:
            expect_status(c.get("/v1/payments/" + pid), 200, "GET a payment from before the outage")
        expect_status(c.patch("/v1/payments/" + before[1],
                              {"data": {"version": 0, "attributes": {"reference": "x"}}}),
                      200, "PATCH after the outage")
        expect_status(c.delete("/v1/payments/" + before[2]), 204,
                      "DELETE after the outage")
        after = create(c, payment(org))["id"]
        ids = listed_ids(c, org)
        check(after in ids and before[0] in ids and before[2] not in ids,
              "list after the outage misses the new payment or shows the deleted one: %s" % ids)
        types = [(e["event_type"], e["payment_id"]) for e in events_of(c, org)]
        eq(types, [("payment.created", p) for p in before]
           + [("payment.updated", before[1]), ("payment.deleted", before[2]),
              ("payment.created", after)],
           "the organisation's events: the writes before and after the outage, nothing of the "
           "refused ones")
        finish(srv)
        check_no_password(srv, "after an outage")
    finally:
        if srv is not None:
            srv.ensure_dead()
        pg.ensure_dead()


@pg_test
def start_without_postgresql_keeps_the_password_out(t):
    """paymentd given a store whose server is down: whatever it does (it
    fails or waits), it says so without the password, within a bounded
    time."""
    d = t.scratch("pg-down")
    pg = PgServer(d).start()
    srv = None
    try:
        store = pg.uri(new_pg_schema(pg.base), userinfo="paymentd:" + SECRET,
                       opts="password=" + OPTION_SECRET)
        pg.stop()
        srv = Server(t.binary, d, name="pg-down", store=store)
        srv.start(wait=False)
        within = CONNECT_TIMEOUT + 5.0
        deadline = time.monotonic() + within
        r = None
        while srv.running() and r is None and time.monotonic() < deadline:
            try:
                r, took = timed(srv.client().get, "/readyz")
            except Fail:
                time.sleep(0.1)  # not listening yet
        if r is not None:  # it serves, and says it is not ready
            expect_unavailable(r, "/readyz with PostgreSQL down", took)
            finish(srv)
        else:
            check(not srv.running(), "paymentd neither failed nor answered within %.0fs with "
                  "PostgreSQL down: %s" % (within, srv.stderr_tail()))
            check(srv.proc.returncode != 0, "paymentd exited 0 with PostgreSQL down")
            check("127.0.0.1:%d" % pg.port() in srv.stderr_text(),
                  "the error does not name the server: %s" % srv.stderr_tail())
        check_no_password(srv, "start-up with PostgreSQL down")
    finally:
        if srv is not None:
            srv.ensure_dead()
        pg.ensure_dead()


@pg_test
def kill9_of_postgresql_keeps_every_acknowledged_write_once(t):
    """PostgreSQL killed with SIGKILL under concurrent creates and updates,
    then started again (crash recovery from its log): every write paymentd
    acknowledged is there, once, as acknowledged, with exactly one event of
    each acknowledged write in the feed; nothing else is."""
    d = t.scratch("pg-kill9")
    pg = PgServer(d).start()
    srv = None
    writes = None
    try:
        store = pg.uri(new_pg_schema(pg.base))
        srv = Server(t.binary, d, name="pg-kill9", store=store)
        srv.start()
        c = srv.client()
        org = new_id()
        writes = Writes(srv, org).start()
        deadline = time.monotonic() + 20
        while len(writes.acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        check(len(writes.acked) >= 20, "fewer than 20 payments written in 20s: %s"
              % writes.statuses)
        pg.kill()  # a crash: no shutdown checkpoint
        time.sleep(0.5)  # writes refused meanwhile
        pg.start()
        wait_ready(c, RECOVER_WITHIN, "after PostgreSQL's crash and restart")
        time.sleep(0.5)  # a few writes after the restart too
        writes.stop()
        unexpected = {s: n for s, n in writes.statuses.items() if s not in (200, 201, 503)}
        eq(unexpected, {}, "statuses other than 200, 201 and 503 around the crash")
        check(writes.statuses.get(503, 0) > 0, "no 503 while PostgreSQL was down: %s"
              % writes.statuses)

        lost = []
        for pid, data in writes.acked.items():
            got = c.get("/v1/payments/" + pid).data
            # An update refused with 503 may have committed before the crash
            # took its answer: the payment then shows that later version.
            if got != data and not (pid in writes.unsure and got
                                    and got.get("version", -1) > data["version"]):
                lost.append(pid)
        eq(lost, [], "acknowledged writes lost or changed by the crash")
        ids = listed_ids(c, org)
        eq(sorted(set(ids)), sorted(ids), "payments listed twice")
        # A create refused with 503 may still have committed (the answer was
        # lost with the connection): such extra payments are allowed, an
        # acknowledged one missing is not.
        check(set(writes.acked) <= set(ids), "acknowledged payments missing from the list")

        per_payment = {}
        for e in events_of(c, org):
            per_payment.setdefault(e["payment_id"], []).append((e["event_type"], e["version"]))
        for pid, n in writes.writes.items():
            evs = per_payment.get(pid, [])
            want = [("payment.created", 0), ("payment.updated", 1)][:n]
            eq(evs[:n], want, "events of payment %s (%d writes acknowledged)" % (pid, n))
            eq(len(set(evs)), len(evs), "events of payment %s recorded twice" % pid)
        for pid in ids:
            check(pid in per_payment, "payment %s stored without its event" % pid)
        finish(srv)
    finally:
        if writes is not None:
            writes.stop_ev.set()
        if srv is not None:
            srv.ensure_dead()
        pg.ensure_dead()
