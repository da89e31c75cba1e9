"""Fault tests: kill -9 under a mixed write load, then restart on the same
store; a full disk under the embedded store.  Each test starts servers of its
own and always stops them."""

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

from harness import (Fail, Server, Skip, check, eq, expect_error, expect_status, free_port,
                     link_path, merge_patch, new_id, payment, qs, sqlite_test, strip_nulls, test)

LOAD_SECONDS = (1.6, 2.2)  # the kill lands somewhere in this window of the load
WRITERS = 4


def finish(srv):
    rc = srv.stop(signal.SIGTERM)
    check(rc == 0, "%s: exit status %s after SIGTERM, expected 0: %s" % (srv.name, rc, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def list_all(c, org, what):
    items = []
    path = "/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1000"})
    while path:
        r = c.get(path)
        expect_status(r, 200, what)
        items += r.data
        nxt = r.json["links"].get("next")
        path = link_path(nxt) if nxt else None
    return items


# --------------------------------------------------------------------------
# kill -9 under mixed writes

class Track:
    """One payment as its only writer saw it.  A writer sends its payment's
    writes one at a time, so at most one is unanswered, and it is the last."""

    def __init__(self, pid):
        self.pid = pid
        self.last = None      # data of the last 2xx answer (None: create not answered)
        self.deleted = False  # a DELETE was answered 204
        self.answered = []    # (op, status) of every answered write, in order
        self.pending = None   # (op, expected attributes) of a write sent but never answered
        self.keyed = []       # (request, status, body) of every answered write, with its key
        self.pending_request = None  # the request of the unanswered write, with its key


class Writer(threading.Thread):
    def __init__(self, srv, org, seed, stop):
        threading.Thread.__init__(self, daemon=True)
        self.srv = srv
        self.org = org
        self.rnd = random.Random(seed)
        self.stop = stop
        self.tracks = []
        self.unexpected = []  # answers other than the 2xx a lone writer must get

    def live(self):
        return [x for x in self.tracks if x.last is not None and not x.deleted and x.pending is None]

    def plan(self):
        """The next write: (track, op, method, path, body, headers, expected attributes)."""
        live = self.live()
        n = self.rnd.randrange(1000000)
        if not live or self.rnd.random() < 0.3:
            tr = Track(new_id())
            self.tracks.append(tr)
            body = payment(self.org, pid=tr.pid, reference="c%d" % n)
            return tr, "create", "POST", "/v1/payments", body, {}, body["data"]["attributes"]
        tr = self.rnd.choice(live)
        v = tr.last["version"]
        path = "/v1/payments/" + tr.pid
        in_header = self.rnd.random() < 0.5
        op = self.rnd.choices(["put", "patch", "delete"], [4, 4, 2])[0]
        if op == "delete":
            how = self.rnd.randrange(3)
            if how == 0:
                return tr, op, "DELETE", path + "?version=%d" % v, None, {}, None
            if how == 1:
                return tr, op, "DELETE", path, None, {"If-Match": '"%d"' % v}, None
            return tr, op, "DELETE", path, None, {}, None  # unconditional
        if op == "put":
            attrs = {"amount": "%d.%02d" % (n % 5000 + 1, n % 100), "currency": "GBP", "reference": "p%d" % n}
            d = {"organisation_id": self.org, "attributes": attrs}
            want = attrs
        else:
            patch = {"reference": "m%d" % n, "note": None if n % 3 == 0 else "n%d" % n}
            d = {"attributes": patch}
            want = strip_nulls(merge_patch(tr.last["attributes"], patch))
        headers = {}
        if in_header:
            headers["If-Match"] = '"%d"' % v
        else:
            d["version"] = v
        return tr, op, "PUT" if op == "put" else "PATCH", path, {"data": d}, headers, want

    def run(self):
        c = self.srv.client()
        conn = None
        while not self.stop.is_set():
            tr, op, method, path, body, headers, want = self.plan()
            # Every write carries an Idempotency-Key, kept with its answer
            # for the replay checks after the restart.
            headers = dict(headers, **{"Idempotency-Key": "kill9-" + new_id()})
            request = (method, path, body, headers)
            try:
                if conn is None:
                    conn = c.conn()
                    conn.timeout = 5
                r = c.request(method, path, body, headers=headers, conn=conn)
            except Fail:
                tr.pending = (op, want)
                tr.pending_request = request
                if conn is not None:
                    conn.close()
                    conn = None
                self.stop.wait(0.05)  # the server is gone, or going: do not spin
                continue
            tr.answered.append((op, r.status))
            tr.keyed.append((request, r.status, r.body))
            if op == "create" and r.status == 201 or op in ("put", "patch") and r.status == 200:
                tr.last = r.data
            elif op == "delete" and r.status == 204:
                tr.deleted = True
            else:
                self.unexpected.append("%s %s -> %s" % (method, path, r.describe()[:160]))
                if op == "create":
                    self.tracks.remove(tr)
                else:
                    tr.pending = ("stuck", None)  # not written again: its state is unknown
        if conn is not None:
            conn.close()


def verify_track(tr, r):
    """Problems of one payment, given its GET after the restart, as strings."""
    if r.status not in (200, 404):
        return ["GET %s after restart: %s" % (tr.pid, r.describe()[:160])]
    got = r.data if r.status == 200 else None
    op, want = tr.pending if tr.pending else (None, None)
    if op == "stuck":
        return []
    if tr.deleted:
        return [] if got is None else ["%s: answered DELETE 204, yet present: %s" % (tr.pid, json.dumps(got)[:160])]
    if tr.last is None:  # the create was never answered: absent, or exactly what was sent
        if got is None:
            return []
        if got.get("version") != 0 or got.get("attributes") != want:
            return ["%s: unanswered create stored as %s" % (tr.pid, json.dumps(got)[:200])]
        return []
    if got is None:
        if op == "delete":
            return []  # the unanswered DELETE was applied
        return ["%s: answered %s, then gone after restart (last answer version %d)"
                % (tr.pid, tr.answered[-1][0], tr.last["version"])]
    problems = []
    v_last = tr.last["version"]
    if got["version"] < v_last:
        problems.append("%s: stored version %d < answered version %d" % (tr.pid, got["version"], v_last))
    elif op in ("put", "patch") and got["version"] == v_last + 1:
        # the unanswered write was applied: whole, with what it asked for
        if got["attributes"] != want or got["created_on"] != tr.last["created_on"]:
            problems.append("%s: unanswered %s applied wrongly: %s, wanted attributes %s"
                            % (tr.pid, op, json.dumps(got)[:200], json.dumps(want)[:120]))
    elif got != tr.last:
        problems.append("%s: stored %s, last answered %s"
                        % (tr.pid, json.dumps(got)[:200], json.dumps(tr.last)[:200]))
    return problems


@test
def kill9_under_mixed_writes(t):
    d = t.scratch("kill9mixed")
    srv = Server(t.binary, d, name="kill9mixed")
    org = new_id()
    stop = threading.Event()
    writers = [Writer(srv, org, 1000 + i, stop) for i in range(WRITERS)]
    try:
        srv.start()
        for w in writers:
            w.start()
        time.sleep(random.uniform(*LOAD_SECONDS))
        srv.kill9()
        stop.set()
        for w in writers:
            w.join(timeout=30)
        check(not any(w.is_alive() for w in writers), "writer threads did not stop")
        tracks = [tr for w in writers for tr in w.tracks]
        unexpected = [u for w in writers for u in w.unexpected]
        check(not unexpected, "%d writes of a lone writer answered other than 2xx before the kill: %s"
              % (len(unexpected), unexpected[:3]))
        counts = {}
        for tr in tracks:
            for op, _ in tr.answered:
                counts[op] = counts.get(op, 0) + 1
        for op, least in (("create", 20), ("put", 5), ("patch", 5), ("delete", 3)):
            check(counts.get(op, 0) >= least, "only %d %s answered before kill -9 (of %s): load too light"
                  % (counts.get(op, 0), op, counts))

        srv.port = free_port()
        srv.start()
        c = srv.client()
        problems = []
        present = set()
        for tr in tracks:
            r = c.get("/v1/payments/" + tr.pid)
            if r.status == 200:
                present.add(tr.pid)
            problems += verify_track(tr, r)
        check(not problems, "%d of %d payments wrong after kill -9 and restart (%s): %s"
              % (len(problems), len(tracks), counts, " | ".join(problems[:4])))

        # Every answered write's key survived with its write: the same
        # request replays the same answer (a sample, to stay quick).
        answered = [k for tr in tracks for k in tr.keyed]
        rnd = random.Random(7)
        replays_bad = []
        for (method, path, body, headers), status, rbody in rnd.sample(answered, min(300, len(answered))):
            r = c.request(method, path, body, headers=headers)
            if r.status != status or r.body != rbody or r.header("Idempotent-Replayed") != "true":
                replays_bad.append("%s %s: %s replayed=%s, first answer %d" % (
                    method, path, r.status, r.header("Idempotent-Replayed"), status))
        check(not replays_bad, "%d answered writes did not replay after kill -9: %s"
              % (len(replays_bad), replays_bad[:3]))
        items = list_all(c, org, "list after kill -9")
        ids = [x["id"] for x in items]
        dups = sorted({i for i in ids if ids.count(i) > 1})
        check(not dups, "the list holds %d ids more than once after kill -9: %s" % (len(dups), dups[:3]))
        # every listed id is a tracked payment that GET finds, and the reverse
        eq(sorted(set(ids) ^ present), [], "ids listed but not fetchable, or fetchable but not listed")
        # A write cut off by the kill ran once or not at all: its key either
        # replays its answer or runs it now, and from then on replays.
        cut = [tr for tr in tracks if tr.pending_request and tr.pending[0] != "stuck"]
        for tr in cut:
            method, path, body, headers = tr.pending_request
            r1 = c.request(method, path, body, headers=headers)
            check(r1.status in (200, 201, 204),
                  "a cut-off write retried with its key: %s" % r1.describe()[:200])
            if r1.header("Idempotent-Replayed") == "true" and r1.status != 204:
                now = c.get("/v1/payments/" + tr.pid)
                eq(now.body and now.data, r1.data, "a replayed cut-off write vs the stored payment")
            r2 = c.request(method, path, body, headers=headers)
            check(r2.status == r1.status and r2.body == r1.body
                  and r2.header("Idempotent-Replayed") == "true",
                  "a cut-off write's key did not replay its answer the second time")

        gone = [tr.pid for tr in tracks if tr.deleted][:5]
        for pid in gone:  # tombstones survive the crash
            expect_error(c.post("/v1/payments", payment(org, pid=pid)), 409, "duplicate_id",
                         "re-create of a deleted id after kill -9")
        expect_status(c.post("/v1/payments", payment(org)), 201, "create after the restart")
        finish(srv)
    finally:
        stop.set()
        srv.ensure_dead()


# --------------------------------------------------------------------------
# full disk

def mount_tmpfs(path, size):
    """Mounts a tmpfs of size at path; returns None, or why it cannot."""
    if os.geteuid() != 0:
        return "not running as root (mount needs it)"
    if not shutil.which("mount"):
        return "no mount command"
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "mount failed: %r" % e
    if p.returncode != 0:
        return "mount refused: %s" % (p.stderr.decode("utf-8", "replace").strip() or p.returncode)
    return None


def umount(path):
    for args in (["umount", path], ["umount", "-l", path]):
        try:
            if subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    return False


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, nbytes=None):
    """Writes a filler file of nbytes, or until the disk is full."""
    with open(path, "ab") as f:
        fd = f.fileno()
        for block in (65536, 4096, 512):
            while nbytes is None or os.fstat(fd).st_size + block <= nbytes:
                try:
                    os.write(fd, b"\0" * block)
                except OSError:
                    break
        try:
            os.fsync(fd)
        except OSError:
            pass


def expect_unavailable(r, what):
    expect_error(r, 503, "store_unavailable", what)
    check(r.header("Retry-After"), "%s: 503 without Retry-After" % what)


@sqlite_test
def full_disk_503_then_recovers(t):
    d = t.scratch("fulldisk")
    mnt = os.path.join(d, "tmpfs")
    os.makedirs(mnt)
    why = mount_tmpfs(mnt, "2m")
    if why:
        raise Skip(why)
    srv = None
    unmounted = False
    try:
        db = os.path.join(mnt, "payments.db")
        srv = Server(t.binary, d, name="fulldisk", store="sqlite:" + db)
        srv.start()
        c = srv.client()
        org = new_id()
        pad = "x" * 2000
        # A filler first, so that deleting it later frees room: without it
        # the store's own files would take the whole disk and nothing could
        # be freed.  Then payments until a write is refused, then a second
        # filler for whatever room is left.
        fill(os.path.join(mnt, "filler-a"), free_bytes(mnt) - 512 * 1024)
        acked = {}
        for i in range(2000):
            pid = new_id()
            r = c.post("/v1/payments", payment(org, pid=pid, pad=pad))
            if r.status != 201:
                expect_unavailable(r, "the create that found the disk full (after %d)" % len(acked))
                break
            acked[pid] = r.data
        else:
            raise Fail("2000 creates of 2 KB on a 2 MiB disk were all answered 201")
        check(len(acked) >= 5, "only %d creates fit before the disk was full" % len(acked))
        fill(os.path.join(mnt, "filler-b"))
        check(free_bytes(mnt) < 8192, "the disk is not full: %d bytes free" % free_bytes(mnt))

        refused = []
        for i in range(3):
            pid = new_id()
            refused.append(pid)
            expect_unavailable(c.post("/v1/payments", payment(org, pid=pid, pad=pad)),
                               "create %d on a full disk" % i)
        some = sorted(acked)[0]
        r = c.put("/v1/payments/" + some, {"data": {"version": 0, "organisation_id": org,
                                                     "attributes": {"amount": "1.00", "currency": "EUR",
                                                                    "pad": pad + pad}}})
        check(r.status in (200, 503), "PUT on a full disk: expected 503 (or 200), got %s" % r.describe())
        if r.status == 503:
            expect_unavailable(r, "PUT on a full disk")
        else:
            acked[some] = r.data  # it fitted in room the store already had: it must have stuck
        check(srv.running(), "the server died on a full disk: %s" % srv.stderr_tail())

        for pid, data in acked.items():  # reads still work
            r = c.get("/v1/payments/" + pid)
            expect_status(r, 200, "GET on a full disk")
            eq(r.data, data, "payment %s on a full disk" % pid)
        listed = [x["id"] for x in list_all(c, org, "list on a full disk")]
        eq(sorted(listed), sorted(acked), "ids listed on a full disk")

        os.unlink(os.path.join(mnt, "filler-a"))
        os.unlink(os.path.join(mnt, "filler-b"))
        deadline = time.monotonic() + 5
        while True:  # no restart: the store takes writes again once there is room
            pid = new_id()
            r = c.post("/v1/payments", payment(org, pid=pid, pad=pad))
            if r.status == 201 or time.monotonic() > deadline:
                break
            expect_unavailable(r, "create just after room was freed")
            refused.append(pid)
            time.sleep(0.2)
        expect_status(r, 201, "create after room was freed, without a restart")
        acked[pid] = r.data
        r = c.patch("/v1/payments/" + pid, {"data": {"attributes": {"note": "after"}}}, headers={"If-Match": '"0"'})
        expect_status(r, 200, "PATCH after room was freed")
        acked[pid] = r.data
        finish(srv)

        con = sqlite3.connect(db)
        try:
            res = con.execute("PRAGMA integrity_check").fetchall()
        finally:
            con.close()
        eq(res, [("ok",)], "PRAGMA integrity_check of the store after the full disk")

        srv.port = free_port()
        srv.start()
        c = srv.client()
        for pid, data in acked.items():
            r = c.get("/v1/payments/" + pid)
            expect_status(r, 200, "GET after restart")
            eq(r.data, data, "payment %s after the full disk and a restart" % pid)
        for pid in refused:
            expect_error(c.get("/v1/payments/" + pid), 404, "not_found", "a create refused with 503, after restart")
        finish(srv)
    finally:
        if srv is not None:
            srv.ensure_dead()
        unmounted = umount(mnt)
    check(unmounted, "could not unmount the tmpfs at %s" % mnt)
