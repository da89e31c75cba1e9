"""Backup tests: `paymentd backup FILE` copies the embedded store while a
server writes to it, a server started on the copy holds every payment
acknowledged before the backup began, and a backup that cannot be made fails
with one line and leaves no file.  Each test starts servers of its own and
always stops them."""

import os
import signal
import threading
import time

from harness import (Server, check, child_env, eq, expect_status, new_id, payment, run_binary,
                     sqlite_test)

WRITERS = 4
PRELOAD = 300          # payments of about 2 KB before the writers start
BACKUP_TIMEOUT = 60.0  # seconds: a backup of a few MB on a busy machine


def finish(srv):
    rc = srv.stop(signal.SIGTERM)
    check(rc == 0, "%s: exit status %s after SIGTERM, expected 0: %s" % (srv.name, rc, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def leftovers(path):
    """Files beside path that a backup must not leave: its temporary files
    and a log or index of its own."""
    d, base = os.path.split(path)
    return sorted(n for n in os.listdir(d)
                  if n.startswith(base + ".tmp-") or n in (base + "-wal", base + "-shm", base + "-journal"))


class Writer(threading.Thread):
    """Creates payments and patches each once, one request at a time, until
    stopped; acked holds the data of every 2xx answer, by id."""

    def __init__(self, srv, org, stop, acked, lock):
        threading.Thread.__init__(self, daemon=True)
        self.c = srv.client()
        self.org = org
        self.stop = stop
        self.acked = acked
        self.lock = lock
        self.sent = set()   # every id a create was sent for
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                pid = new_id()
                self.sent.add(pid)
                r = self.c.post("/v1/payments", payment(self.org, pid=pid, reference="r"))
                expect_status(r, 201, "create while backing up")
                with self.lock:
                    self.acked[pid] = r.data
                r = self.c.patch("/v1/payments/" + pid,
                                 {"data": {"version": 0, "attributes": {"reference": "patched"}}})
                expect_status(r, 200, "patch while backing up")
                with self.lock:
                    self.acked[pid] = r.data
        except Exception as e:  # reported by the test
            self.error = e


@sqlite_test
def backup_while_writing_then_restore(t):
    d = t.scratch("backup")
    copy = os.path.join(d, "copies", "payments-copy.db")
    os.makedirs(os.path.dirname(copy))
    srv = Server(t.binary, d, name="backup-src", args=["--store-shared", "true"])
    restored = None
    stop = threading.Event()
    writers = []
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        for i in range(PRELOAD):
            expect_status(c.post("/v1/payments", payment(org, pad="p" * 2000)), 201, "preload %d" % i)
        acked, lock = {}, threading.Lock()
        writers = [Writer(srv, org, stop, acked, lock) for _ in range(WRITERS)]
        for w in writers:
            w.start()
        deadline = time.monotonic() + 20
        while len(acked) < 40 and time.monotonic() < deadline and all(w.error is None for w in writers):
            time.sleep(0.05)
        with lock:
            before = dict(acked)  # every write acknowledged before the backup began
        t0 = time.monotonic()
        rc, out, err = run_binary(t.binary, ["backup", copy, "--store", srv.store],
                                  timeout=BACKUP_TIMEOUT)
        took = time.monotonic() - t0
        with lock:
            during = len(acked) - len(before)
        time.sleep(0.3)  # the server keeps taking writes after the backup too
        stop.set()
        for w in writers:
            w.join(timeout=30)
            check(not w.is_alive(), "a writer is still running")
            check(w.error is None, "writer: %s" % w.error)
        eq(rc, 0, "paymentd backup exit status (stderr: %s)" % err.strip())
        check("copied to" in out, "paymentd backup said %r" % out)
        check(len(before) >= 40, "only %d writes before the backup" % len(before))
        eq(leftovers(copy), [], "files left beside the copy")
        finish(srv)
        print("  backup: %.2fs, %d payments acknowledged before it, %d during it"
              % (took, len(before), during))

        restored = Server(t.binary, d, name="backup-restored", store="sqlite:" + copy)
        restored.start()
        rc2 = restored.client()
        for pid, data in before.items():
            r = rc2.get("/v1/payments/" + pid)
            expect_status(r, 200, "payment acknowledged before the backup, on the copy")
            check(r.data["version"] >= data["version"],
                  "payment %s: version %d on the copy, %d acknowledged before the backup"
                  % (pid, r.data["version"], data["version"]))
            if r.data["version"] == data["version"]:
                eq(r.data, data, "payment %s on the copy" % pid)
        # Nothing but what was sent: every payment of the organisation on
        # the copy is a preloaded one or one a writer sent.
        sent = set().union(*(w.sent for w in writers))
        path = "/v1/payments?filter%5Borganisation_id%5D=" + org + "&page%5Bsize%5D=1000"
        listed = []
        while path:
            r = rc2.get(path)
            expect_status(r, 200, "list on the copy")
            listed += r.data
            nxt = r.json["links"].get("next")
            path = nxt if nxt else None
        ids = [x["id"] for x in listed]
        eq(len(set(ids)), len(ids), "distinct ids on the copy")
        written = [i for i in ids if i in sent]
        eq(len(ids) - len(written), PRELOAD, "preloaded payments on the copy")
        check(set(before) <= set(written), "payments acknowledged before the backup missing from the list")
        finish(restored)
    finally:
        stop.set()
        srv.ensure_dead()
        if restored is not None:
            restored.ensure_dead()


@sqlite_test
def backup_of_exclusive_server_fails_clearly(t):
    d = t.scratch("backup-excl")
    copy = os.path.join(d, "copy.db")
    srv = Server(t.binary, d, name="backup-excl")  # without --store-shared: the file is its own
    try:
        srv.start()
        expect_status(srv.client().post("/v1/payments", payment()), 201, "create")
        rc, out, err = run_binary(t.binary, ["backup", copy, "--store", srv.store], timeout=BACKUP_TIMEOUT)
        check(rc != 0, "backup of a store held exclusively exited 0: %r" % out)
        lines = err.strip().splitlines()
        eq(len(lines), 1, "lines on stderr (%r)" % err)
        check("--store-shared true" in lines[0], "the error does not name the way out: %r" % lines[0])
        check(not os.path.exists(copy), "a failed backup left %s" % copy)
        eq(leftovers(copy), [], "files left beside the copy")
        check(srv.running(), "the server died during a refused backup")
        finish(srv)
        # Stopped, the same store can be copied.
        rc, out, err = run_binary(t.binary, ["backup", copy, "--store", srv.store], timeout=BACKUP_TIMEOUT)
        eq(rc, 0, "backup of the stopped server's store (stderr: %s)" % err.strip())
        check(os.path.exists(copy), "no copy after a backup that exited 0")
    finally:
        srv.ensure_dead()


@sqlite_test
def backup_usage_errors(t):
    d = t.scratch("backup-usage")
    rc, out, err = run_binary(t.binary, ["backup"])
    eq(rc, 2, "paymentd backup without FILE: exit status")
    eq(len(err.strip().splitlines()), 1, "lines on stderr (%r)" % err)
    copy = os.path.join(d, "copy.db")
    for store, why in (("sqlite:" + os.path.join(d, "none.db"), "no store"),
                       ("mongodb://127.0.0.1:1/x", "MongoDB")):
        rc, out, err = run_binary(t.binary, ["backup", copy, "--store", store])
        eq(rc, 1, "backup of %s: exit status" % why)
        eq(len(err.strip().splitlines()), 1, "backup of %s: lines on stderr (%r)" % (why, err))
        check(not os.path.exists(copy), "backup of %s left a file" % why)
    check(not os.path.exists(os.path.join(d, "none.db")), "a backup created the store it was to copy")
    # The variable names the store as it does for the server.
    rc, out, err = run_binary(t.binary, ["backup", copy],
                              env=child_env({"PAYMENTD_STORE": "sqlite:" + os.path.join(d, "none.db")}))
    eq(rc, 1, "backup with PAYMENTD_STORE naming no store: exit status")
    check("none.db" in err, "PAYMENTD_STORE was not used: %r" % err)
