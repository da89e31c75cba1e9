"""Upgrades: this binary opens a store written by an older paymentd and
migrates it; a store of a newer schema than this binary's is refused with
one line and left untouched.

The older stores are tests/upgrade/vN.sql, each written through the API by
the paymentd binary of schema version N (tests/upgrade/make_fixture.py),
with vN.json, what that binary answered.  For each, from_schema_N rebuilds
the file, serves it with this binary and compares every answer; then
checks the file's schema is the one a new store gets, that a second start
changes nothing, and that new writes (and a webhook retry of a delivery
the old binary made) work on it."""

import glob
import hashlib
import http.server
import json
import os
import re
import signal
import sqlite3
import threading
import time

import harness
from harness import (Double, Fail, Server, check, eq, expect_error, expect_status, pg_test,
                     psql, qs, run_binary, sqlite_test)

FIXTURES = os.path.join(harness.REPO, "tests", "upgrade")
# The fixtures' idempotency records and events are as old as the fixture:
# kept, whatever the day the test runs.  No delivery attempts unless asked.
KEEP = ["--idempotency-ttl", "3650d", "--event-retention", "3650d"]
QUIET = KEEP + ["--webhooks", "false"]
NEWER = ("store schema version %d is newer than this build's (%d): upgrade paymentd")


def _finish(srv):
    rc = srv.stop(signal.SIGTERM)
    check(rc == 0, "%s: exit status %s, expected 0: %s" % (srv.name, rc, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def _one_line(err, what):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    check(len(lines) == 1, "%s: expected one line on stderr, got %d: %r"
          % (what, len(lines), err[:600]))
    return lines[0]


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _user_version(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def _schema(path):
    """The file's tables, indexes and triggers as their SQL, sorted."""
    con = sqlite3.connect(path)
    try:
        return sorted(con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                  "WHERE name NOT LIKE 'sqlite_%'").fetchall())
    finally:
        con.close()


def _dump(path):
    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


_FRESH = {}


def _fresh(t):
    """A new store made by this binary: (its schema version, its schema)."""
    if not _FRESH:
        d = t.scratch("fresh")
        srv = Server(t.binary, d, name="fresh", store="sqlite:" + os.path.join(d, "p.db"))
        try:
            srv.start()
            _finish(srv)
        finally:
            srv.ensure_dead()
        path = os.path.join(d, "p.db")
        _FRESH["version"] = _user_version(path)
        _FRESH["schema"] = _schema(path)
        check(_FRESH["version"] > 0, "a new store's user_version is %r" % _FRESH["version"])
        rc, out, err = run_binary(t.binary, ["--version"])
        m = re.search(r"^sqlite[-_]store[-_]schema (\d+)$", out, re.M)
        check(rc == 0 and m, "--version names no sqlite store schema: %r" % (out + err)[:300])
        eq(int(m.group(1)), _FRESH["version"], "--version's sqlite store schema, against a new "
           "store's user_version")
    return _FRESH["version"], _FRESH["schema"]


def _rebuild(fx, sql_path, db):
    """The old binary's store, from its dump, in WAL mode as it left it."""
    with open(sql_path) as f:
        dump = f.read()
    con = sqlite3.connect(db, isolation_level=None)
    try:
        if "sqlite_sequence" in dump and "AUTOINCREMENT" not in dump:
            # A store whose AUTOINCREMENT table was dropped keeps
            # sqlite_sequence, which only such a table can make.
            con.executescript("CREATE TABLE seq_maker (n INTEGER PRIMARY KEY AUTOINCREMENT);"
                              "DROP TABLE seq_maker;")
        con.executescript(dump)
        con.execute("PRAGMA user_version = %d" % fx["schema_version"])
        eq(con.execute("PRAGMA journal_mode = WAL").fetchone()[0], "wal", "journal mode")
    finally:
        con.close()


# --------------------------------------------------------------------------
# the answers of the old binary, asked again of this one

def _same_payments(c, fx, what):
    for p in fx["payments"]:
        r = c.get("/v1/payments/" + p["id"])
        expect_status(r, 200, "%s: GET %s" % (what, p["id"]))
        eq(r.json, p["body"], "%s: GET %s" % (what, p["id"]))
        eq(r.header("ETag"), p["etag"], "%s: ETag of %s" % (what, p["id"]))
    for pid in fx["deleted"]:
        r = c.get("/v1/payments/" + pid)
        expect_status(r, 404, "%s: GET of %s, deleted by the old binary" % (what, pid))


def _same_lists(c, fx, what):
    for org, data in fx["lists"].items():
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "100"}))
        expect_status(r, 200, "%s: list of %s" % (what, org))
        eq(r.json["data"], data, "%s: list of %s" % (what, org))


def _same_replays(c, fx, what):
    for k in fx["idempotent"]:
        r = c.request(k["method"], k["path"], k["body"], headers={"Idempotency-Key": k["key"]})
        eq(r.status, k["status"], "%s: status of the retried %s %s (key %s)"
           % (what, k["method"], k["path"], k["key"]))
        eq(r.header("Idempotent-Replayed"), "true", "%s: Idempotent-Replayed of key %s"
           % (what, k["key"]))
        eq(r.json, k["answer"], "%s: replayed answer of key %s" % (what, k["key"]))
        eq(r.header("Location"), k["location"], "%s: Location of key %s" % (what, k["key"]))
        eq(r.header("ETag"), k["etag"], "%s: ETag of key %s" % (what, k["key"]))


def _same_events(c, fx, what):
    for pid, data in fx["histories"].items():
        r = c.get("/v1/payments/%s/history?page[size]=1000" % pid)
        expect_status(r, 200, "%s: history of %s" % (what, pid))
        eq(r.json["data"], data, "%s: history of %s" % (what, pid))
    if fx["feed"] is not None:
        r = c.get("/v1/events?page[size]=1000")
        expect_status(r, 200, "%s: the feed" % what)
        eq(r.json["data"], fx["feed"], "%s: the feed" % what)


def _same_webhooks(c, fx, what):
    for hook in fx["webhooks"]:
        r = c.get("/v1/webhooks/" + hook["id"])
        expect_status(r, 200, "%s: webhook %s" % (what, hook["id"]))
        eq(r.json["data"], hook, "%s: webhook %s" % (what, hook["id"]))
        r = c.get("/v1/webhooks/%s/deliveries?page[size]=100" % hook["id"])
        expect_status(r, 200, "%s: deliveries of %s" % (what, hook["id"]))
        eq(r.json["data"], fx["deliveries"][hook["id"]], "%s: deliveries of %s"
           % (what, hook["id"]))


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Keeps each delivery's body by its webhook-id (the event id)."""

    got = {}

    def do_POST(self):  # noqa: N802 (the stdlib's name)
        n = int(self.headers.get("Content-Length") or 0)
        _Receiver.got[self.headers.get("webhook-id")] = self.rfile.read(n).decode("utf-8")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _retried_body_is_the_old_one(c, fx, what):
    """A delivery the old binary made, retried by this one, sends the body
    the old binary sent (kept by the migration to delivery_bodies)."""
    rx = http.server.ThreadingHTTPServer((harness.HOST, 0), _Receiver)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    try:
        for hook in fx["webhooks"]:
            url = "http://%s:%d/hook" % (harness.HOST, rx.server_address[1])
            r = c.patch("/v1/webhooks/" + hook["id"],
                        {"data": {"version": hook["version"], "url": url}})
            expect_status(r, 200, "%s: PATCH of the webhook's url" % what)
            d = fx["deliveries"][hook["id"]][0]
            r = c.post("/v1/webhooks/%s/deliveries/%s/retry" % (hook["id"], d["id"]))
            check(r.status in (200, 202), "%s: retry of delivery %s: %s"
                  % (what, d["id"], r.describe()))
            deadline = time.monotonic() + 15
            while d["event_id"] not in _Receiver.got and time.monotonic() < deadline:
                time.sleep(0.05)
            check(d["event_id"] in _Receiver.got, "%s: the retried delivery of event %s never "
                  "arrived" % (what, d["event_id"]))
            eq(_Receiver.got[d["event_id"]], fx["delivered_bodies"][d["event_id"]],
               "%s: the retried delivery's body" % what)
    finally:
        rx.shutdown()
        rx.server_close()


def _new_writes_work(c, fx, what):
    """A create, a replace of a payment the old binary made, and a keyed
    create and its replay; the history and the feed go on from the old
    ones."""
    first = fx["payments"][0]
    org = first["body"]["data"]["organisation_id"]
    r = c.post("/v1/payments", harness.payment(org=org))
    expect_status(r, 201, "%s: a new create" % what)
    new_id = r.json["data"]["id"]
    version = first["body"]["data"]["version"]
    b = {"data": {"organisation_id": org, "attributes": {"amount": "77.00", "currency": "GBP"}}}
    r = c.put("/v1/payments/" + first["id"], b, headers={"If-Match": '"%d"' % version})
    expect_status(r, 200, "%s: a replace of %s" % (what, first["id"]))
    eq(r.json["data"]["version"], version + 1, "%s: the replaced version" % what)
    key = {"Idempotency-Key": "after-the-upgrade"}
    r1 = c.post("/v1/payments", harness.payment(org=org), headers=key)
    r2 = c.post("/v1/payments", harness.payment(org=org), headers=key)
    expect_status(r1, 201, "%s: a new keyed create" % what)
    eq((r2.status, r2.header("Idempotent-Replayed"), r2.json), (201, "true", r1.json),
       "%s: its replay" % what)
    r = c.get("/v1/payments/" + new_id)
    expect_status(r, 200, "%s: GET of the new payment" % what)
    if fx["histories"]:
        r = c.get("/v1/payments/%s/history?page[size]=1000" % first["id"])
        expect_status(r, 200, "%s: history after the replace" % what)
        old = fx["histories"][first["id"]]
        eq(r.json["data"][:len(old)], old, "%s: the old history, first" % what)
        eq(len(r.json["data"]), len(old) + 1, "%s: history entries after the replace" % what)
    if fx["feed"]:
        r = c.get("/v1/events?page[size]=1000")
        expect_status(r, 200, "%s: the feed after new writes" % what)
        data = r.json["data"]
        eq(data[:len(fx["feed"])], fx["feed"], "%s: the old feed, first" % what)
        eq(len(data), len(fx["feed"]) + 3, "%s: events after three new writes" % what)
        pos = [e["position"] for e in data]
        eq(pos, sorted(set(pos)), "%s: positions increasing" % what)


def _from_schema(t, sql_path):
    with open(sql_path[:-4] + ".json") as f:
        fx = json.load(f)
    what = "schema %d%s" % (fx["schema_version"], _variant(sql_path))
    current, fresh_schema = _fresh(t)
    check(fx["schema_version"] < current, "%s is not older than this binary's %d"
          % (what, current))
    d = t.scratch("upgrade-v%d" % fx["schema_version"])
    db = os.path.join(d, "payments.db")
    _rebuild(fx, sql_path, db)
    store = "sqlite:" + db

    srv = Server(t.binary, d, name="upgraded", store=store, args=QUIET)
    try:
        srv.start()
        c = srv.client()
        _same_payments(c, fx, what)
        _same_lists(c, fx, what)
        _same_replays(c, fx, what)
        _same_events(c, fx, what)
        _same_webhooks(c, fx, what)
        _finish(srv)
    finally:
        srv.ensure_dead()
    eq(_user_version(db), current, "%s: user_version after the upgrade" % what)
    got = _schema(db)
    check(got == fresh_schema, "%s: after the upgrade, the schema lacks %s and has besides %s, "
          "against a new store's" % (what, [x for x in fresh_schema if x not in got],
                                     [x for x in got if x not in fresh_schema]))
    con = sqlite3.connect(db)
    try:
        eq(con.execute("PRAGMA integrity_check").fetchall(), [("ok",)], "%s: integrity" % what)
    finally:
        con.close()

    before = _dump(db)
    digest = _sha256(db)
    again = Server(t.binary, d, name="again", store=store, args=QUIET)
    try:
        again.start()
        _same_payments(again.client(), fx, what + ", second start")
        _finish(again)
    finally:
        again.ensure_dead()
    check(_dump(db) == before, "%s: the second start changed the store" % what)
    eq(_sha256(db), digest, "%s: the store file's SHA-256 after a second start (it only read)"
       % what)

    writer = Server(t.binary, d, name="writer", store=store,
                    args=KEEP + ["--webhook-allow-private", "true"])
    try:
        writer.start()
        c = writer.client()
        _new_writes_work(c, fx, what)
        if fx["webhooks"]:
            _retried_body_is_the_old_one(c, fx, what)
        _finish(writer)
    finally:
        writer.ensure_dead()
    eq(_user_version(db), current, "%s: user_version after the new writes" % what)


# vN.sql, or vN-COMMIT.sql for a build of version N that laid it out otherwise
FIXTURE_RE = re.compile(r"v(\d+)(?:-([0-9a-f]+))?\.sql$")


def _version_of(sql_path):
    return int(FIXTURE_RE.search(sql_path).group(1))


def _variant(sql_path):
    commit = FIXTURE_RE.search(sql_path).group(2)
    return " (the withdrawn build %s)" % commit if commit else ""


def _register(sql_path):
    m = FIXTURE_RE.search(sql_path)

    def from_schema(t):
        _from_schema(t, sql_path)

    from_schema.__name__ = "from_schema_%s%s" % (m.group(1), "_" + m.group(2) if m.group(2) else "")
    from_schema.__module__ = __name__
    sqlite_test(from_schema)


for _path in sorted(glob.glob(os.path.join(FIXTURES, "v*.sql")),
                    key=lambda p: (_version_of(p), p)):
    _register(_path)


@sqlite_test
def fixtures_cover_every_older_schema(t):
    """Every schema version before this binary's has its fixture."""
    current, _ = _fresh(t)
    have = sorted({_version_of(p) for p in glob.glob(os.path.join(FIXTURES, "v*.sql"))})
    eq(have, list(range(1, current)), "schema versions with a fixture in tests/upgrade")


# --------------------------------------------------------------------------
# a newer store: refused, untouched

def _files(d):
    return {n: _sha256(os.path.join(d, n)) for n in sorted(os.listdir(d))}


def _refused(t, argv, d, db, want, what):
    before = _files(d)
    rc, out, err = run_binary(t.binary, argv, cwd=d)
    eq(rc, 1, "%s: exit status (stderr %r)" % (what, err[:300]))
    eq(_one_line(err, what), want, "%s: its line" % what)
    eq(_files(d), before, "%s: the folder's files, byte for byte" % what)


def _newer_store(t, name, backup):
    """A store this binary made, its user_version set one past this
    binary's: the live file (WAL) or, with backup, a copy made by paymentd
    backup (not in WAL mode, as a restored backup is)."""
    current, _ = _fresh(t)
    d = t.scratch(name)
    db = os.path.join(d, "payments.db")
    srv = Server(t.binary, d, name="newer", store="sqlite:" + db, args=QUIET)
    try:
        srv.start()
        expect_status(srv.client().post("/v1/payments", harness.payment()), 201, "create")
        _finish(srv)
    finally:
        srv.ensure_dead()
    if backup:
        copy = os.path.join(d, "copy.db")
        rc, out, err = run_binary(t.binary, ["backup", copy, "--store", "sqlite:" + db])
        eq(rc, 0, "backup (stderr %r)" % err[:300])
        os.unlink(db)
        os.rename(copy, db)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA user_version = %d" % (current + 1))
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()
    eq(mode, "delete" if backup else "wal", "the newer store's journal mode")
    eq([n for n in os.listdir(d) if n.startswith("payments.db")], ["payments.db"],
       "the newer store's files (no log beside it)")
    return current, d, db


def _newer_is_refused(t, backup):
    current, d, db = _newer_store(t, "newer-backup" if backup else "newer", backup)
    store = "sqlite:" + db
    words = NEWER % (current + 1, current)
    line = "paymentd: cannot open store %s: %s" % (store, words)
    port = harness.free_port()
    _refused(t, ["--listen", "%s:%d" % (harness.HOST, port), "--store", store], d, db, line,
             "the server")
    # The store is opened before the broker is asked for: none is needed.
    _refused(t, ["worker", "--broker", "nats://127.0.0.1:1", "--store", store], d, db, line,
             "paymentd worker")
    _refused(t, ["backup", os.path.join(d, "copy.db"), "--store", store], d, db,
             "paymentd backup: cannot open store %s: %s" % (db, words), "paymentd backup")


@sqlite_test
def newer_store_is_refused_untouched(t):
    _newer_is_refused(t, backup=False)


@sqlite_test
def newer_restored_backup_is_refused_untouched(t):
    """A backup (not in WAL mode) of a newer store: the server would make
    it a WAL file if it wrote before it refused."""
    _newer_is_refused(t, backup=True)


# --------------------------------------------------------------------------
# PostgreSQL: version 1 is the only one yet; a newer schema is refused

@pg_test
def pg_newer_schema_is_refused(t):
    d = t.scratch("pg-newer")
    srv = Server(t.binary, d, name="pg-newer", args=QUIET)
    try:
        srv.start()
        expect_status(srv.client().post("/v1/payments", harness.payment()), 201, "create")
        _finish(srv)
    finally:
        srv.ensure_dead()
    current = int(psql(srv.store, "SELECT max(version) FROM paymentd_schema").strip())
    psql(srv.store, "UPDATE paymentd_schema SET version = %d" % (current + 1))
    tables = "SELECT table_name FROM information_schema.tables " \
             "WHERE table_schema = current_schema() ORDER BY 1"
    rows = "SELECT count(*) FROM payments"
    before = (psql(srv.store, tables), psql(srv.store, rows))
    shown = re.sub(r"//[^@/]*@", "//", srv.store)  # as the server shows it: no user info
    rc, out, err = run_binary(t.binary, ["--listen", "%s:%d" % (harness.HOST, harness.free_port()),
                                         "--store", srv.store], cwd=d)
    eq(rc, 1, "exit status (stderr %r)" % err[:300])
    line = _one_line(err, "the server")
    want = NEWER % (current + 1, current)
    check(line.startswith("paymentd: cannot open store ") and line.endswith(": " + want),
          "the refusal: %r, expected \"paymentd: cannot open store URI: %s\"" % (line, want))
    check(shown in line or srv.store in line, "the refusal does not name the store: %r" % line)
    eq((psql(srv.store, tables), psql(srv.store, rows)), before, "the schema's tables and rows")
    eq(psql(srv.store, "SELECT version FROM paymentd_schema").strip(), str(current + 1),
       "paymentd_schema after the refusal")


# --------------------------------------------------------------------------
# MongoDB: the marker {_id: <collection>_schema, version: 1} in counters

def _mongo_db(uri):
    import pymongo  # with the double's packages (python3-mockupdb needs it)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
    return client, client.get_default_database()


# The store's collections (the double answers no listCollections).
MONGO_COLLECTIONS = ("payments", "payments_events", "payments_operations", "payments_partitions",
                     "payments_webhooks", "payments_webhook_orgs", "payments_deliveries",
                     "counters")


def _mongo_snapshot(db):
    """The store's collections: their documents in _id order."""
    return {name: list(db[name].find({}).sort("_id", 1)) for name in MONGO_COLLECTIONS}


def _mongo_store_with_a_payment(t, name):
    d = t.scratch(name)
    srv = Server(t.binary, d, name=name, args=QUIET)
    try:
        srv.start()
        r = srv.client().post("/v1/payments", harness.payment())
        expect_status(r, 201, "create")
        _finish(srv)
    finally:
        srv.ensure_dead()
    return d, srv, r.json["data"]


@harness.mongo_test
def mongo_store_marked_and_newer_refused(t):
    d, srv, created = _mongo_store_with_a_payment(t, "mongo-newer")
    client, db = _mongo_db(srv.store)
    try:
        marker = db.counters.find_one({"_id": "payments_schema"})
        eq(marker, {"_id": "payments_schema", "version": 1}, "the schema marker in counters")
        db.counters.update_one({"_id": "payments_schema"}, {"$set": {"version": 2}})
        before = _mongo_snapshot(db)
        rc, out, err = run_binary(t.binary, ["--listen", "%s:%d" % (harness.HOST,
                                                                    harness.free_port()),
                                             "--store", srv.store], cwd=d)
        eq(rc, 1, "exit status (stderr %r)" % err[:300])
        line = _one_line(err, "the server")
        want = NEWER % (2, 1)
        check(line.startswith("paymentd: cannot open store mongodb://")
              and line.endswith(": " + want),
              "the refusal: %r, expected \"paymentd: cannot open store URI: %s\"" % (line, want))
        rc, out, err = run_binary(t.binary, ["worker", "--broker", "nats://127.0.0.1:1",
                                             "--store", srv.store], cwd=d)
        eq(rc, 1, "worker's exit status (stderr %r)" % err[:300])
        check(_one_line(err, "paymentd worker").endswith(": " + want),
              "the worker's refusal: %r" % err[:300])
        check(_mongo_snapshot(db) == before, "the refused store changed")
    finally:
        client.close()


@harness.mongo_test
def mongo_store_without_marker_is_opened_and_marked(t):
    """A store made before the marker (none in counters) is of version 1:
    opened as it is, its payments served, the marker added."""
    d, srv, created = _mongo_store_with_a_payment(t, "mongo-unmarked")
    client, db = _mongo_db(srv.store)
    try:
        eq(db.counters.delete_one({"_id": "payments_schema"}).deleted_count, 1,
           "markers deleted")
        again = Server(t.binary, d, name="mongo-unmarked-again", store=srv.store, args=QUIET)
        try:
            again.start()
            r = again.client().get("/v1/payments/" + created["id"])
            expect_status(r, 200, "GET of the payment made before")
            eq(r.json["data"], created, "the payment made before")
            _finish(again)
        finally:
            again.ensure_dead()
        eq(db.counters.find_one({"_id": "payments_schema"}),
           {"_id": "payments_schema", "version": 1}, "the marker after the open")
    finally:
        client.close()


def _mongo_writes(db):
    """The write commands the double has received for db's database."""
    stats = db.client.admin.command("doubleStats")
    by_cmd = stats["databases"].get(db.name, {})
    return sum(c["writes"] for c in by_cmd.values()), by_cmd.get("findAndModify", {})


@harness.mongo_test
def mongo_newer_store_found_after_waiting_stays_refused(t):
    """--wait-for-store: MongoDB away at start, setup deferred to the first
    request.  When MongoDB comes back holding a store of a newer schema, every
    request (and /readyz) is a 503 store_unavailable, setup is not tried
    again per request, and the store is left as it is."""
    d = t.scratch("mongo-wait-newer")
    dbl = Double(d).start()
    uri = dbl.uri("waitnewer", "serverSelectionTimeoutMS=800&connectTimeoutMS=800")
    srv = Server(t.binary, d, name="mongo-wait-newer", store=uri,
                 args=QUIET + ["--wait-for-store", "true"])
    client = None
    try:
        made = Server(t.binary, d, name="mongo-wait-newer-made", store=uri, args=QUIET)
        try:
            made.start()
            r = made.client().post("/v1/payments", harness.payment())
            expect_status(r, 201, "create")
            pid = r.json["data"]["id"]
            _finish(made)
        finally:
            made.ensure_dead()
        client, db = _mongo_db(uri)
        db.counters.update_one({"_id": "payments_schema"}, {"$set": {"version": 2}})
        before = _mongo_snapshot(db)
        client.close()
        client = None
        dbl.stop()
        srv.start()  # MongoDB is away: setup waits for the first request
        c = srv.client()
        expect_error(c.get("/readyz"), 503, "store_unavailable", "/readyz while MongoDB is away")
        dbl.start()
        client, db = _mongo_db(uri)
        deadline = time.monotonic() + 15
        while True:  # until setup has met the store (its marker's findAndModify)
            expect_error(c.get("/v1/payments/" + pid), 503, "store_unavailable",
                         "GET while the store is (or may be) refused")
            if _mongo_writes(db)[1].get("writes", 0) >= 1:
                break
            check(time.monotonic() < deadline, "setup never reached the store within 15 s")
            time.sleep(0.1)
        writes = _mongo_writes(db)[0]
        for i in range(3):
            expect_error(c.get("/v1/payments/" + pid), 503, "store_unavailable",
                         "GET %d after the refusal" % i)
            expect_error(c.post("/v1/payments", harness.payment()), 503, "store_unavailable",
                         "POST %d after the refusal" % i)
            ready = expect_error(c.get("/readyz"), 503, "store_unavailable",
                                 "/readyz %d after the refusal" % i)
            check("store schema version 2 is newer than this build's (1): upgrade paymentd"
                  in ready["error_message"], "/readyz says why: %r" % ready["error_message"])
        time.sleep(0.5)
        eq(_mongo_writes(db)[0], writes, "writes sent after the refusal (setup tried again)")
        check(_mongo_snapshot(db) == before, "the refused store changed")
        _finish(srv)
    finally:
        if client is not None:
            client.close()
        srv.ensure_dead()
        dbl.ensure_dead()


@harness.mongo_test
def mongo_newer_marker_raised_during_setup_is_seen(t):
    """Two paymentd starting at once: a newer build raises the marker while
    this one sets up (the double applies the raise right after a read of the
    marker, the moment a read-then-write setup would miss it).  This build
    never serves a store whose marker is above its schema: either it refuses
    it, or its marker step came first and the store is of this build's."""
    d, srv, created = _mongo_store_with_a_payment(t, "mongo-race")
    client, db = _mongo_db(srv.store)
    again = Server(t.binary, d, name="mongo-race-again", store=srv.store, args=QUIET)
    try:
        db.command({"doubleAfterFind": "counters", "filter": {"_id": "payments_schema"},
                    "update": {"$max": {"version": 2}}})
        again.start()
        expect_status(again.client().get("/v1/payments/" + created["id"]), 200, "GET")
        marker = db.counters.find_one({"_id": "payments_schema"})
        eq(marker, {"_id": "payments_schema", "version": 1},
           "the marker of the store this build serves")
        _finish(again)
    finally:
        again.ensure_dead()
        client.close()
