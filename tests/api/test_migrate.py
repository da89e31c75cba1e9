"""`paymentd migrate --from URI --to URI`: a store populated through the API
(payments of several organisations, updates, deletes, idempotent creates)
is copied, with its server stopped, into another store; a server on the
copy answers every read as the source's did (bodies and ETags, lists in the
same order, histories and the feed with the same events, positions aside),
deleted ids stay deleted and cannot be created again, and a retry with a
copied Idempotency-Key gets the original answer.  A migrate killed (-9)
after its first progress line and run again ends verified.

Where: SQLite to SQLite always; SQLite to PostgreSQL with run.py --pg;
MongoDB (the double) to SQLite with run.py --mongo: those are registered
only in the runs that have their store (pg_test, mongo_test), so no run
reports them skipped.  Each test starts servers of its own and always stops them."""

import os
import re
import signal
import subprocess
import threading
import time

import harness
from harness import (Server, Skip, check, child_env, eq, expect_error, expect_status, mongo_test,
                     new_id, payment, pg_test, run_binary, test, track)

ORGS = 3
PER_ORG = 8             # payments per organisation in the read checks
BIG = 5000              # payments of the interrupted migrate
MIGRATE_TIMEOUT = 300.0  # seconds: a migrate of BIG payments under ASan
DONE_RE = re.compile(r"paymentd migrate: done: (\d+) payments \((\d+) tombstones\), (\d+) events, "
                     r"(\d+) idempotency records in (\d+) organisations verified")


def _finish(srv):
    rc = srv.stop(signal.SIGTERM)
    check(rc == 0, "%s: exit status %s after SIGTERM, expected 0: %s"
          % (srv.name, rc, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def _sqlite(t, name):
    return "sqlite:" + os.path.join(t.scratch(name), "payments.db")


def _pg_target():
    if not harness.PG["uri"]:
        raise Skip("no PostgreSQL (run.py --pg URI)")
    return harness.pg_uri(harness.PG["uri"], harness.new_pg_schema())


def _mongo_source():
    if not harness.MONGO["uri"]:
        raise Skip("no MongoDB (run.py --mongo URI)")
    return harness.mongo_uri(harness.MONGO["uri"], harness.new_mongo_db())


def _migrate(t, src, dst, extra=(), timeout=MIGRATE_TIMEOUT):
    """Runs paymentd migrate to completion; returns (rc, stderr)."""
    rc, _out, err = run_binary(t.binary, ["migrate", "--from", src, "--to", dst] + list(extra),
                               timeout=timeout)
    check("runtime error:" not in err and "Sanitizer" not in err,
          "migrate: sanitizer report: %s" % err[-800:])
    return rc, err


def _done(err):
    """The counts of the done line, or a failure quoting stderr."""
    m = DONE_RE.search(err)
    check(m is not None, "no done line in migrate's stderr: %s" % err[-800:])
    return tuple(int(x) for x in m.groups())


class Populated:
    """What a source server was given: ids live and deleted, the keyed
    creates (key, body, first answer)."""

    def __init__(self, c):
        self.orgs = [new_id() for _ in range(ORGS)]
        self.live, self.deleted, self.keyed = [], [], []
        for o, org in enumerate(self.orgs):
            for i in range(PER_ORG):
                body = payment(org, reference="r%d-%d" % (o, i), amount="%d.%02d" % (o + 1, i))
                key = None
                if i % 3 == 0:
                    key = "mig-%s-%d" % (org[:8], i)
                    r = c.post("/v1/payments", body, headers={"Idempotency-Key": key})
                else:
                    r = c.post("/v1/payments", body)
                expect_status(r, 201, "create")
                pid = r.data["id"]
                if key:
                    self.keyed.append((key, body, r))
                if i % 2 == 1:
                    r = c.patch("/v1/payments/" + pid,
                                {"data": {"version": 0, "attributes": {"reference": "patched"}}})
                    expect_status(r, 200, "patch")
                    r = c.patch("/v1/payments/" + pid,
                                {"data": {"version": 1, "attributes": {"amount": "99.00"}}})
                    expect_status(r, 200, "second patch")
                if i % 4 == 2:
                    expect_status(c.delete("/v1/payments/%s?version=0" % pid), 204, "delete")
                    self.deleted.append(pid)
                else:
                    self.live.append(pid)
        self.tombstones = len(self.deleted)
        self.events = ORGS * PER_ORG + 2 * len([i for i in range(PER_ORG) if i % 2 == 1]) * ORGS \
            + len(self.deleted)


def _no_positions(v):
    """v without the feed's positions and links (the target gives its own)."""
    if isinstance(v, dict):
        return {k: _no_positions(x) for k, x in v.items() if k not in ("position", "links")}
    if isinstance(v, list):
        return [_no_positions(x) for x in v]
    return v


def _events(c):
    out, after = [], 0
    for _ in range(1000):
        r = c.get("/v1/events?page[size]=7&page[after]=%d" % after)
        expect_status(r, 200, "GET /v1/events")
        data = r.json["data"]
        if not data:
            return out
        out += data
        after = data[-1]["position"]
    raise harness.Fail("the feed did not end")


def _list(c, org=None):
    """Every listed payment, by pages of 5 following links.next."""
    path = "/v1/payments?page[size]=5" + ("&filter[organisation_id]=%s" % org if org else "")
    out = []
    for _ in range(1000):
        r = c.get(path)
        expect_status(r, 200, "GET %s" % path)
        out += r.json["data"]
        nxt = r.json.get("links", {}).get("next")
        if not nxt or not r.json["data"]:
            return out
        path = harness.link_path(nxt)
    raise harness.Fail("the list did not end")


def _reads(c, p):
    """Every answer the read checks compare."""
    got = {"get": {}, "history": {}}
    for pid in p.live + p.deleted:
        r = c.get("/v1/payments/" + pid)
        got["get"][pid] = (r.status, r.body, r.header("ETag"))
        r = c.get("/v1/payments/%s/history" % pid)
        expect_status(r, 200, "history of %s" % pid)
        got["history"][pid] = _no_positions(r.json)
    got["list"] = _list(c)
    got["lists"] = [_list(c, org) for org in p.orgs]
    ev = _events(c)
    got["events"] = _no_positions(ev)
    got["event_ids"] = [e["id"] for e in ev]
    return got


def copy_and_compare(t, name, src_store, dst_store):
    d = t.scratch(name)
    src = Server(t.binary, d, name=name + "-src", store=src_store)
    dst = None
    try:
        src.start()
        c = src.client()
        p = Populated(c)
        want = _reads(c, p)
        eq(len(want["event_ids"]), p.events, "events on the source")
        _finish(src)

        rc, err = _migrate(t, src_store, dst_store)
        eq(rc, 0, "migrate exit status (stderr: %s)" % err[-800:])
        n_idem = len(p.keyed)
        eq(_done(err), (len(p.live) + len(p.deleted), p.tombstones, p.events, n_idem, ORGS),
           "done line's payments, tombstones, events, idempotency records, organisations")
        check("paymentd migrate: payments:" in err, "no progress line: %s" % err[-800:])

        dst = Server(t.binary, d, name=name + "-dst", store=dst_store)
        dst.start()
        c2 = dst.client()
        got = _reads(c2, p)
        for pid in p.live + p.deleted:
            eq(got["get"][pid], want["get"][pid], "GET %s on the copy (status, body, ETag)" % pid)
            eq(got["history"][pid], want["history"][pid], "history of %s on the copy" % pid)
        for pid in p.deleted:
            eq(got["get"][pid][0], 404, "a deleted payment on the copy")
        eq(got["list"], want["list"], "the list on the copy, in order")
        eq(got["lists"], want["lists"], "each organisation's list on the copy, in order")
        eq(got["event_ids"], want["event_ids"], "the feed's event ids on the copy, in order")
        eq(got["events"], want["events"], "the feed's events on the copy")
        for pid in p.deleted:
            expect_error(c2.post("/v1/payments", payment(p.orgs[0], pid=pid)), 409, "duplicate_id",
                         "a deleted id created again on the copy")
        for key, body, first in p.keyed:
            r = c2.post("/v1/payments", body, headers={"Idempotency-Key": key})
            eq((r.status, r.body, r.header("ETag"), r.header("Location")),
               (first.status, first.body, first.header("ETag"), first.header("Location")),
               "a retry with copied key %s on the copy" % key)
        _finish(dst)

        # Run again on the finished copy: nothing added, still verified.
        rc, err = _migrate(t, src_store, dst_store)
        eq(rc, 0, "second migrate exit status (stderr: %s)" % err[-800:])
        check(re.search(r"payments: \d+ read, 0 added", err), "a second run added payments: %s"
              % err[-800:])
    finally:
        src.ensure_dead()
        if dst:
            dst.ensure_dead()


@test
def migrate_sqlite_to_sqlite(t):
    copy_and_compare(t, "mig-ss", _sqlite(t, "mig-ss-from"), _sqlite(t, "mig-ss-to"))


@pg_test
def migrate_sqlite_to_postgres(t):
    dst = _pg_target()
    copy_and_compare(t, "mig-sp", _sqlite(t, "mig-sp-from"), dst)


@mongo_test
def migrate_mongo_to_sqlite(t):
    src = _mongo_source()
    copy_and_compare(t, "mig-ms", src, _sqlite(t, "mig-ms-to"))


@test
def migrate_refuses_bad_arguments(t):
    d = t.scratch("mig-args")
    db = os.path.join(d, "payments.db")
    rc, _out, err = run_binary(t.binary, ["migrate", "--from", "sqlite:" + db])
    eq(rc, 2, "migrate without --to")
    check("--to" in err, "the message names --to: %r" % err)
    rc, _out, err = run_binary(t.binary, ["migrate", "--from", "sqlite:" + db, "--to",
                                          "sqlite:" + os.path.join(d, "copy.db")])
    eq(rc, 1, "migrate from a missing file")
    check("no store at" in err and "does not exist" in err,
          "the message says the source is missing: %r" % err)
    check(not os.path.exists(db), "a missing source was created")
    rc, _out, err = run_binary(t.binary, ["migrate", "--from", "sqlite:" + db, "--to",
                                          "sqlite:" + db])
    eq(rc, 2, "migrate onto itself")
    check("same store" in err, "the message says the same store: %r" % err)
    rc, _out, err = run_binary(t.binary, ["migrate", "--from", "postgres://u:secret@h/db",
                                          "--to", "postgresql://u:secret@h/db"])
    eq(rc, 2, "migrate onto itself, the scheme spelled otherwise")
    check("secret" not in err and "***" in err, "the password is not shown: %r" % err)
    rc, _out, err = run_binary(t.binary, ["migrate", "--from", "sqlite:" + db, "--to", "x",
                                          "--page", "1001"])
    eq(rc, 2, "--page 1001")


def _refused(t, src, says):
    """migrate from src, which holds no store, into a new file: exit 1 with a
    message naming what is missing; returns the message."""
    rc, err = _migrate(t, src, _sqlite(t, "mig-none-to"), timeout=60)
    eq(rc, 1, "migrate from a source that does not exist (stderr: %s)" % err[-800:])
    check(says in err and "nothing created" in err and "verified" not in err,
          "the message names the missing store (%r): %r" % (says, err))
    return err


@pg_test
def migrate_refuses_missing_postgres_schema(t):
    if not harness.PG["uri"]:
        raise Skip("no PostgreSQL (run.py --pg URI)")
    schema = harness.new_pg_schema()
    _refused(t, harness.pg_uri(harness.PG["uri"], schema),
             'schema "%s" holds no paymentd_schema table' % schema)
    tables = harness.psql(harness.PG["uri"],
                          "SELECT count(*) FROM pg_tables WHERE schemaname = '%s'" % schema)
    eq(tables.strip(), "0", "tables in the source's schema after the refusal")
    _refused(t, harness.pg_uri(harness.PG["uri"], schema + "_none"),
             "search_path names no schema that exists")
    # Once made (by a server), the same schema, empty, migrates.
    src = Server(t.binary, t.scratch("mig-pg-empty"), name="mig-pg-empty",
                 store=harness.pg_uri(harness.PG["uri"], schema))
    try:
        src.start()
        _finish(src)
    finally:
        src.ensure_dead()
    rc, err = _migrate(t, src.store, _sqlite(t, "mig-pg-empty-to"))
    eq(rc, 0, "migrate from an empty store (stderr: %s)" % err[-800:])
    eq(_done(err), (0, 0, 0, 0, 0), "the empty store's done line")


def _mongo_indexes(uri, db):
    """The index names of db's payments collection (none: it does not exist)."""
    import pymongo  # run.py --mongo needs it too
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        reply = client[db].command("listIndexes", "payments")
        return [i["name"] for i in reply["cursor"]["firstBatch"]]
    except pymongo.errors.OperationFailure as e:
        if e.code == 26:  # NamespaceNotFound: MongoDB's answer for a missing collection
            return []
        raise
    finally:
        client.close()


@mongo_test
def migrate_refuses_missing_mongo_collection(t):
    if not harness.MONGO["uri"]:
        raise Skip("no MongoDB (run.py --mongo URI)")
    db = harness.new_mongo_db()
    _refused(t, harness.mongo_uri(harness.MONGO["uri"], db),
             "database %s: no collection payments" % db)
    eq(_mongo_indexes(harness.MONGO["uri"], db), [], "indexes of the source after the refusal")


@test
def migrate_mongo_not_answering(t):
    """A MongoDB that does not answer, on either side: exit 1 with a message
    that says so, without the server's --wait-for-store (migrate has none)."""
    d = t.scratch("mig-mongo-down")
    down = "mongodb://127.0.0.1:%d/db?serverSelectionTimeoutMS=300" % harness.free_port()
    for args, side in (([down, _sqlite(t, "mig-down-to")], "--from"),
                       ([_sqlite(t, "mig-down-from"), down], "--to")):
        if side == "--to":  # a source that exists
            src = Server(t.binary, d, name="mig-down-src", store=args[0])
            try:
                src.start()
                _finish(src)
            finally:
                src.ensure_dead()
        rc, err = _migrate(t, args[0], args[1], timeout=60)
        eq(rc, 1, "migrate with MongoDB down on %s (stderr: %s)" % (side, err[-800:]))
        check("cannot open %s" % side in err and "does not answer" in err,
              "the message says the store does not answer: %r" % err)
        check("wait-for-store" not in err and "WaitForStore" not in err,
              "the message suggests no flag migrate lacks: %r" % err)


def _fill(srv, n, threads=2):
    """n payments over ORGS organisations, created by threads clients."""
    orgs = [new_id() for _ in range(ORGS)]
    errors = []

    def work(k):
        try:
            c = srv.client()
            for i in range(k, n, threads):
                expect_status(c.post("/v1/payments", payment(orgs[i % ORGS], reference="b%d" % i)),
                              201, "create %d" % i)
        except Exception as e:  # reported below
            errors.append(e)

    ws = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join(timeout=MIGRATE_TIMEOUT)
    check(not errors, "filling: %s" % (errors[:1],))


def interrupted(t, name, dst_store):
    d = t.scratch(name)
    src_store = _sqlite(t, name + "-from")
    src = Server(t.binary, d, name=name + "-src", store=src_store)
    try:
        src.start()
        _fill(src, BIG)
        _finish(src)
        argv = [t.binary, "migrate", "--from", src_store, "--to", dst_store, "--page", "100"]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=child_env())
        track(p)
        first = b""
        deadline = time.monotonic() + MIGRATE_TIMEOUT
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line or line.startswith(b"paymentd migrate: payments:"):
                first = line
                break
        p.kill()
        rest = p.communicate(timeout=30)[1]
        check(first, "no progress line before the end: %s" % rest[-500:])
        check(b"done:" not in rest, "the first migrate finished before it was killed")
        eq(p.returncode, -signal.SIGKILL, "the first migrate was killed")

        # The same pages again: the first ones are wholly in the target.
        rc, err = _migrate(t, src_store, dst_store, ["--page", "100"])
        eq(rc, 0, "the resumed migrate's exit status (stderr: %s)" % err[-800:])
        eq(_done(err), (BIG, 0, BIG, 0, ORGS), "the resumed migrate's done line")
        m = re.search(r"events: (\d+) read, (\d+) added \(.*done", err)
        check(m and int(m.group(2)) > 0, "the resumed migrate added no event: %s" % err[-800:])
        added = re.search(r"payments: (\d+) read, (\d+) added \(.*done", err)
        print("  %s: killed after %r; resumed: %s payments and %s events added"
              % (name, first.decode().strip(), added.group(2) if added else "?", m.group(2)))
    finally:
        src.ensure_dead()


@test
def migrate_interrupted_then_resumed_sqlite(t):
    interrupted(t, "mig-int-s", _sqlite(t, "mig-int-s-to"))


@pg_test
def migrate_interrupted_then_resumed_postgres(t):
    interrupted(t, "mig-int-p", _pg_target())
