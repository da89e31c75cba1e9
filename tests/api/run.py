#!/usr/bin/python3
"""API tests of paymentd, black-box against the real binary.

    /usr/bin/python3 tests/api/run.py --binary build/paymentd [--mongo URI | --pg URI]
                                      [-k SUBSTRING] [-v]

Starts the server on a free loopback port with a temporary SQLite store,
waits for GET /healthz, runs every test (some start servers of their own),
stops it with SIGTERM and expects exit status 0.  Prints one line per
failing test, then `api: N passed, M failed`; exits non-zero on failure.

--mongo mongodb://HOST:PORT runs the same suite with every server on a new
database of that MongoDB (the test double of tests/mongo/, or a real one),
plus the MongoDB tests (test_mongo: outages, start-up without MongoDB), which
start private test doubles of their own.  The databases are dropped at the
end when pymongo is available.

--pg postgres://USER@HOST:PORT/DB runs the same suite with every server on a
new schema of that PostgreSQL database (CREATE SCHEMA by psql; the server's
URI sets search_path to it), plus the PostgreSQL tests (test_pg: outages,
a crash of the server, passwords kept out of logs), which start private
servers of their own (tests/pg/pg.sh).  The schemas are dropped at the end.
The tests of the embedded store's file (@sqlite_test) run on SQLite only.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import Fail, Server, Skip  # noqa: E402

import importlib  # noqa: E402

# Every tests/api/test_*.py registers its tests with @test when imported;
# test_mongo*.py only with --mongo, test_pg*.py only with --pg (see main).
STORE_MODULES = ("test_mongo", "test_pg")
for _name in sorted(os.listdir(os.path.dirname(os.path.abspath(__file__)))):
    if (_name.startswith("test_") and _name.endswith(".py")
            and not _name.startswith(STORE_MODULES)):
        importlib.import_module(_name[:-3])

SUITE_DEADLINE = 900.0  # seconds: a hung suite is killed rather than left running


class Ctx:
    """What a test gets: the shared server, a client of it, the binary and
    a private scratch directory."""

    def __init__(self, binary, root, srv):
        self.binary = binary
        self.root = root
        self.srv = srv
        self.c = srv.client()
        self._n = 0

    def scratch(self, name):
        self._n += 1
        d = os.path.join(self.root, "%s.%d" % (name, self._n))
        os.makedirs(d, exist_ok=True)
        return d


def watchdog():
    time.sleep(SUITE_DEADLINE)
    sys.stdout.write("api: suite exceeded %.0fs, killing servers\n" % SUITE_DEADLINE)
    sys.stdout.flush()
    harness.kill_all()
    os._exit(2)


def drop_databases(uri, dbs):
    """Drops the suite's databases, so that runs against a real MongoDB leave
    nothing behind.  Best effort: without pymongo they stay."""
    try:
        import pymongo
    except ImportError:
        return
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000)
        try:
            for db in dbs:
                client.drop_database(db)
        finally:
            client.close()
    except pymongo.errors.PyMongoError as e:
        print("api: could not drop the test databases: %s" % e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="path to paymentd")
    ap.add_argument("-k", dest="pattern", default=None, help="run tests whose name contains this")
    ap.add_argument("-v", dest="verbose", action="store_true", help="print every test and its time")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--mongo", metavar="URI", default=None,
                    help="run every server on a new database of this MongoDB")
    ap.add_argument("--pg", metavar="URI", default=None,
                    help="run every server on a new schema of this PostgreSQL database")
    args = ap.parse_args()
    label = "api"
    if args.mongo and args.pg:
        ap.error("--mongo and --pg name two stores: give one")
    if args.pg:
        harness.use_pg(args.pg)
        for name in sorted(os.listdir(os.path.dirname(os.path.abspath(__file__)))):
            if name.startswith("test_pg") and name.endswith(".py"):
                importlib.import_module(name[:-3])  # registers with @pg_test
        harness.TESTS.extend(harness.PG_TESTS)
        label = "api (postgresql)"
    elif args.mongo:
        harness.use_mongo(args.mongo)
        for name in sorted(os.listdir(os.path.dirname(os.path.abspath(__file__)))):
            if name.startswith("test_mongo") and name.endswith(".py"):
                importlib.import_module(name[:-3])  # registers with @mongo_test
        harness.TESTS.extend(harness.MONGO_TESTS)
        label = "api (mongodb)"
    else:
        harness.TESTS.extend(harness.SQLITE_TESTS)

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print("%s: %s is not an executable" % (label, binary))
        print("%s: 0 passed, 1 failed" % label)
        return 1

    threading.Thread(target=watchdog, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))

    root = tempfile.mkdtemp(prefix="paymentd-api-")
    passed = failed = skipped = 0
    t0 = time.monotonic()
    srv = None
    try:
        try:
            srv = Server(binary, root, name="main")  # with --pg, psql makes its schema
            srv.start()
        except Fail as e:
            print("FAIL startup: %s" % e)
            print("%s: 0 passed, 1 failed" % label)
            return 1
        ctx = Ctx(binary, root, srv)
        selected = [(n, f) for n, f in harness.TESTS if not args.pattern or args.pattern in n]
        for name, fn in selected:
            t1 = time.monotonic()
            try:
                fn(ctx)
                passed += 1
                if args.verbose:
                    print("ok   %-50s %.2fs" % (name, time.monotonic() - t1))
            except Skip as e:
                skipped += 1
                print("SKIP %s: %s" % (name, e))
            except Fail as e:
                failed += 1
                print("FAIL %s: %s" % (name, e))
            except Exception as e:  # a bug in the test itself, or an unexpected reply
                failed += 1
                tb = traceback.extract_tb(e.__traceback__)[-1]
                print("FAIL %s: %s: %s (%s:%d)" % (name, type(e).__name__, e,
                                                  os.path.basename(tb.filename), tb.lineno))
            sys.stdout.flush()
            if not srv.running():
                failed += 1
                print("FAIL %s: the shared server died: %s" % (name, srv.stderr_tail()))
                break

        # Rules every response obeys, over all the responses the tests saw.
        v = harness.AUDIT["violations"]
        if v:
            failed += 1
            print("FAIL audit.every_response: %d of %d responses break a general rule, e.g. %s"
                  % (harness.AUDIT["bad"], harness.AUDIT["responses"], " | ".join(v[:5])))
        else:
            passed += 1

        # The shared server stops cleanly on SIGTERM, with no sanitizer report.
        try:
            rc = srv.stop(signal.SIGTERM)
            harness.check(rc == 0, "exit status %s after SIGTERM, expected 0: %s"
                          % (rc, srv.stderr_tail()))
            rep = srv.sanitizer_report()
            harness.check(rep is None, "sanitizer report on stderr: %s" % rep)
            passed += 1
        except Fail as e:
            failed += 1
            print("FAIL shutdown.sigterm_exit_0: %s" % e)
    finally:
        if srv is not None:
            srv.ensure_dead()
        harness.kill_all()
        if args.mongo:
            drop_databases(args.mongo, harness.MONGO["dbs"])
        if args.pg:
            err = harness.drop_pg_schemas(args.pg, harness.PG["schemas"])
            if err:
                failed += 1
                print("FAIL cleanup.drop_schemas: %s" % err)
        if args.keep:
            print("api: kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.verbose:
        print("%s: %.1fs" % (label, time.monotonic() - t0))
    print("%s: %d passed, %d failed, %d skipped" % (label, passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
