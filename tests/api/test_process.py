"""The process: flags and environment, start-up failures, signals, restart
on the same store, kill -9, --public-url and --max-body.  Each test starts
servers of its own and always stops them."""

import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time

from harness import (HOST, Fail, Server, check, child_env, create, eq, expect_error, expect_status,
                     free_port, link_path, metric_series, metrics_text, new_id, payment, qs,
                     raw_request, run_binary, test, track)

FLAGS = ["--listen", "--store", "--threads", "--max-body", "--public-url", "--log-level"]


def finish(srv, sig=signal.SIGTERM):
    """Stops srv with sig: exit status 0, no sanitizer report."""
    rc = srv.stop(sig)
    check(rc == 0, "%s: exit status %s after signal %d, expected 0: %s"
          % (srv.name, rc, sig, srv.stderr_tail()))
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


def _answers(port):
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            c.request("GET", "/healthz")
            return c.getresponse().status == 200
        finally:
            c.close()
    except OSError:
        return False


def _one_line(err, what):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    check(len(lines) == 1, "%s: expected one line on stderr, got %d: %r" % (what, len(lines), err[:400]))
    return lines[0]


# --------------------------------------------------------------------------
# flags

@test
def help_lists_flags(t):
    rc, out, err = run_binary(t.binary, ["--help"], cwd=t.scratch("help"))
    eq(rc, 0, "exit status of --help")
    text = out + err
    missing = [f for f in FLAGS if f not in text]
    check(not missing, "--help does not mention %s: %r" % (missing, text[:300]))


@test
def bad_flags_exit_nonzero(t):
    d = t.scratch("badflags")
    store = ["--store", "sqlite:" + os.path.join(d, "p.db")]
    port = str(free_port())
    cases = [
        ["--bogus"] + store,
        ["--listen"],
        ["--listen", "nonsense"] + store,
        ["--listen", "127.0.0.1:99999"] + store,
        ["--listen", "127.0.0.1:" + port, "--threads", "abc"] + store,
        ["--listen", "127.0.0.1:" + port, "--threads", "-3"] + store,
        ["--listen", "127.0.0.1:" + port, "--max-body", "lots"] + store,
        ["--listen", "127.0.0.1:" + port, "--log-level", "loud"] + store,
        ["--listen", "127.0.0.1:" + port, "--store"],
    ]
    failures = []
    for args in cases:
        what = "paymentd %s" % " ".join(args)
        try:
            rc, out, err = run_binary(t.binary, args, cwd=d)
            check(rc != 0, "%s: exit status 0" % what)
            _one_line(err, what)
        except Fail as e:
            failures.append(str(e))
    check(not failures, " | ".join(failures))


@test
def unusable_store_exits_nonzero(t):
    d = t.scratch("badstore")
    afile = os.path.join(d, "a-file")
    with open(afile, "w") as f:
        f.write("not a folder\n")
    for uri in ["sqlite:" + os.path.join(afile, "sub", "payments.db"),
                "sqlite:" + afile, "sqlite:" + d, "bogus:" + os.path.join(d, "x.db")]:
        what = "--store %s" % uri
        rc, out, err = run_binary(t.binary, ["--listen", "127.0.0.1:%d" % free_port(), "--store", uri],
                                  cwd=d)
        check(rc != 0, "%s: exit status 0" % what)
        _one_line(err, what)


@test
def port_in_use_exits_nonzero(t):
    d = t.scratch("portinuse")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        s.listen(8)
        port = s.getsockname()[1]
        rc, out, err = run_binary(t.binary, ["--listen", "127.0.0.1:%d" % port,
                                             "--store", "sqlite:" + os.path.join(d, "p.db")], cwd=d)
        check(rc != 0, "listening on a port in use: exit status 0")
        _one_line(err, "port in use")
    finally:
        s.close()
    # the shared server's port, too
    rc, out, err = run_binary(t.binary, ["--listen", "127.0.0.1:%d" % t.srv.port,
                                         "--store", "sqlite:" + os.path.join(d, "q.db")], cwd=d)
    check(rc != 0, "listening on the shared server's port: exit status 0")
    check(_answers(t.srv.port), "the shared server stopped answering")


@test
def env_listen_and_flag_wins(t):
    d = t.scratch("env")
    p_env, p_flag = free_port(), free_port()
    env = child_env({"PAYMENTD_LISTEN": "127.0.0.1:%d" % p_env})
    srv = Server(t.binary, d, name="env", port=p_env, env=env, listen_flag=False)
    try:
        srv.start()  # answers on the port PAYMENTD_LISTEN names
        c = srv.client()
        expect_status(c.post("/v1/payments", payment()), 201, "create on the PAYMENTD_LISTEN server")
        finish(srv)
    finally:
        srv.ensure_dead()
    srv = Server(t.binary, d, name="envflag", port=p_flag, env=env)
    try:
        srv.start()  # --listen given too: the flag wins
        check(not _answers(p_env), "the server also answers on PAYMENTD_LISTEN's port")
        finish(srv)
    finally:
        srv.ensure_dead()


@test
def env_store_and_default_store(t):
    d = t.scratch("envstore")
    db = os.path.join(d, "from-env", "payments.db")
    env = child_env({"PAYMENTD_STORE": "sqlite:" + db})
    srv = Server(t.binary, d, name="envstore", env=env, store_flag=False)
    try:
        srv.start()
        create(srv.client())
        finish(srv)
    finally:
        srv.ensure_dead()
    check(os.path.exists(db), "PAYMENTD_STORE ignored: %s not created" % db)
    # flag wins over PAYMENTD_STORE
    db2 = os.path.join(d, "from-flag", "payments.db")
    srv = Server(t.binary, d, name="flagstore", env=env, store="sqlite:" + db2)
    try:
        srv.start()
        create(srv.client())
        finish(srv)
    finally:
        srv.ensure_dead()
    check(os.path.exists(db2), "--store ignored when PAYMENTD_STORE is set")
    # neither: ./data/payments.db under the working directory
    srv = Server(t.binary, d, name="defstore", store_flag=False)
    try:
        srv.start()
        create(srv.client())
        finish(srv)
    finally:
        srv.ensure_dead()
    check(os.path.exists(os.path.join(d, "data", "payments.db")), "default store ./data/payments.db not created")


@test
def env_other_flags(t):
    # --help names PAYMENTD_MAX_BODY, PAYMENTD_PUBLIC_URL and PAYMENTD_LOG_LEVEL
    d = t.scratch("envother")
    env = child_env({"PAYMENTD_MAX_BODY": "1500", "PAYMENTD_PUBLIC_URL": "http://env.example.test",
                     "PAYMENTD_LOG_LEVEL": "warn"})
    srv = Server(t.binary, d, name="envother", env=env)
    try:
        srv.start()
        c = srv.client()
        r = c.post("/v1/payments", payment(pad="x" * 1500))
        expect_error(r, 413, "payload_too_large", "POST over PAYMENTD_MAX_BODY")
        r = c.post("/v1/payments", payment(), headers={"X-Request-Id": "envlevel-1"})
        expect_status(r, 201, "POST under PAYMENTD_MAX_BODY")
        eq(r.json["links"]["self"], "http://env.example.test/v1/payments/" + r.data["id"],
           "links.self with PAYMENTD_PUBLIC_URL")
        time.sleep(0.2)
        logged = [x for x in srv.log_records() if x.get("request_id") == "envlevel-1"]
        eq(logged, [], "access log lines at PAYMENTD_LOG_LEVEL=warn")
        finish(srv)
    finally:
        srv.ensure_dead()


# --------------------------------------------------------------------------
# signals, restart and crash

@test
def sigterm_finishes_in_flight_request(t):
    d = t.scratch("sigterm")
    srv = Server(t.binary, d, name="sigterm")
    try:
        srv.start()
        c = srv.client()
        # an idle keep-alive connection must not delay the exit
        idle = http.client.HTTPConnection(HOST, srv.port, timeout=10)
        idle.request("GET", "/healthz")
        idle.getresponse().read()
        pid = new_id()
        body = json.dumps(payment(pid=pid)).encode()
        half = len(body) // 2
        s = socket.create_connection((HOST, srv.port), timeout=10)
        try:
            # 100 Continue proves the server has the headers: the request is in flight
            s.sendall(raw_request("POST", "/v1/payments", [("Content-Type", "application/json"),
                                                           ("Expect", "100-continue"),
                                                           ("Content-Length", str(len(body)))]))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                check(chunk, "connection closed before 100 Continue")
                head += chunk
            check(head.startswith(b"HTTP/1.1 100"), "expected 100 Continue, got %r" % head[:80])
            s.sendall(body[:half])
            time.sleep(0.1)
            srv.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _answers(srv.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            check(srv.running(), "server exited before finishing an in-flight request: %s"
                  % srv.stderr_tail())
            check(not _answers(srv.port), "server still accepts new requests 5s after SIGTERM")
            s.sendall(body[half:])
            resp = http.client.HTTPResponse(s)
            try:
                resp.begin()
                resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise Fail("in-flight POST got no response after SIGTERM: %r" % (e,))
            eq(resp.status, 201, "status of the in-flight POST")
        finally:
            s.close()
        t0 = time.monotonic()
        rc = srv.stop()  # waits for the exit
        eq(rc, 0, "exit status after SIGTERM")
        check(time.monotonic() - t0 < 10, "exit took %.1fs with an idle connection open"
              % (time.monotonic() - t0))
        idle.close()
        check(srv.sanitizer_report() is None, "sanitizer report: %s" % srv.sanitizer_report())
        srv.port = free_port()
        srv.start()
        expect_status(srv.client().get("/v1/payments/" + pid), 200, "in-flight create after restart")
        finish(srv)
    finally:
        srv.ensure_dead()


@test
def stuck_log_destination_does_not_stop_serving(t):
    """stderr a pipe nobody reads: once it and the access log's buffer are
    full, requests are still answered, the lines that did not fit are
    counted in /metrics, and when the pipe is read again every line that
    arrives is whole and the server stops cleanly."""
    d = t.scratch("stucklog")
    port = free_port()
    p = subprocess.Popen([t.binary, "--listen", "%s:%d" % (HOST, port), "--store",
                          "sqlite:" + os.path.join(d, "p.db")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=child_env(), cwd=d)
    track(p)
    try:
        deadline = time.monotonic() + 15
        while not _answers(port):
            check(p.poll() is None and time.monotonic() < deadline, "server did not start")
            time.sleep(0.05)
        # 149 bytes of access line each: 15,000 are 2.2 MB, past the 64 KiB
        # pipe, the 1 MiB buffer and a batch being written
        c = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            for i in range(15000):
                try:
                    c.request("GET", "/healthz")
                    r = c.getresponse()
                    r.read()
                except (OSError, http.client.HTTPException) as e:
                    raise Fail("request %d with the log's pipe full: %r" % (i, e))
                eq(r.status, 200, "status of request %d" % i)
        finally:
            c.close()
        dropped = metric_series(metrics_text(port), "paymentd_access_log_dropped_lines_total")
        check(dropped is not None, "/metrics has no paymentd_access_log_dropped_lines_total")
        check(dropped > 0, "no access line counted as dropped after 15,000 requests")
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(p.stderr.read().splitlines()))
        reader.start()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Fail("server still running 30s after SIGTERM with its pipe read again")
        reader.join(timeout=30)
        eq(rc, 0, "exit status")
        access = 0
        for ln in lines:
            try:
                obj = json.loads(ln)
            except ValueError:
                raise Fail("a log line is not whole JSON: %r" % ln[:200])
            access += obj.get("path") == "/healthz"
        check(0 < access < 15000, "%d access lines of /healthz arrived" % access)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _count_payments(path, timeout):
    """SELECT count(*) of the payments table, from this (another) process."""
    con = sqlite3.connect(path, timeout=timeout)
    try:
        return con.execute("SELECT count(*) FROM payments").fetchall()
    finally:
        con.close()


@test
def embedded_store_is_the_servers_alone(t):
    """Without --broker the server keeps its SQLite store to itself: a second
    server on the same file exits with one line saying so, no other process
    reads the file meanwhile, the first server serves on, and the file is
    free again once it stops."""
    d = t.scratch("exclusive")
    path = os.path.join(d, "payments.db")
    srv = Server(t.binary, d, name="exclusive", store="sqlite:" + path, args=["--threads", "1"])
    try:
        srv.start()
        c = srv.client()
        first = create(c)["id"]
        rc, out, err = run_binary(t.binary, ["--listen", "127.0.0.1:%d" % free_port(),
                                             "--store", "sqlite:" + path], cwd=d)
        check(rc != 0, "a second server on the same store: exit status 0")
        line = _one_line(err, "a second server on the same store")
        check("open in another process" in line, "a second server: %r does not say why" % line)
        try:
            rows = _count_payments(path, 0.2)
            raise Fail("another process read the store while the server held it: %r" % rows)
        except sqlite3.OperationalError as e:
            check("locked" in str(e), "reading the held store: %s" % e)
        expect_status(c.get("/v1/payments/" + first), 200, "GET after the second server gave up")
        create(c, what="create after the second server gave up")
        finish(srv)
        eq(_count_payments(path, 2), [(2,)], "payments another process reads once the server stopped")

        # A worker without --broker is told so at once, before the store is touched.
        t0 = time.monotonic()
        srv.start()
        rc, out, err = run_binary(t.binary, ["worker", "--store", "sqlite:" + path], cwd=d)
        check(rc != 0, "paymentd worker without --broker: exit status 0")
        line = _one_line(err, "paymentd worker without --broker")
        check("--broker is required" in line, "paymentd worker without --broker: %r" % line)
        check(time.monotonic() - t0 < 4, "paymentd worker without --broker waited for the store")
        finish(srv)

        # --store-shared: other programs read the file while the server runs.
        shared = Server(t.binary, d, name="shared", store="sqlite:" + path,
                        args=["--threads", "1", "--store-shared", "true"])
        try:
            shared.start()
            create(shared.client(), what="create with --store-shared")
            eq(_count_payments(path, 2), [(3,)],
               "payments another process reads while a --store-shared server runs")
            finish(shared)
        finally:
            shared.ensure_dead()
    finally:
        srv.ensure_dead()


@test
def restart_keeps_every_payment(t):
    d = t.scratch("restart")
    store = "sqlite:" + os.path.join(d, "nested", "folder", "payments.db")  # parent folders created
    srv = Server(t.binary, d, name="restart", store=store, args=["--threads", "1"])
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        ids = [create(c, payment(org, reference="p%d" % i))["id"] for i in range(30)]
        for i in range(0, 10):
            expect_status(c.put("/v1/payments/" + ids[i], {"data": {
                "version": 0, "organisation_id": org, "attributes": {"amount": "5.00", "currency": "GBP"}}}),
                200, "PUT before restart")
        for i in range(10, 20):
            expect_status(c.patch("/v1/payments/" + ids[i], {"data": {
                "version": 0, "attributes": {"reference": None, "note": "patched"}}}), 200, "PATCH")
        for i in range(20, 25):
            expect_status(c.delete("/v1/payments/" + ids[i]), 204, "DELETE before restart")
        before = {i: c.get("/v1/payments/" + i).data for i in ids[:20] + ids[25:]}
        listed = [x["id"] for x in c.get("/v1/payments?" + qs({"filter[organisation_id]": org})).data]
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "10"}))
        cursor_next = link_path(r.json["links"]["next"])
        finish(srv)

        srv.port = free_port()
        srv.start()
        c = srv.client()
        for i, want in before.items():
            r = c.get("/v1/payments/" + i)
            expect_status(r, 200, "GET %s after restart" % i)
            eq(r.data, want, "payment %s after restart" % i)
        for i in ids[20:25]:
            expect_error(c.get("/v1/payments/" + i), 404, "not_found", "deleted payment after restart")
            expect_error(c.post("/v1/payments", payment(org, pid=i)), 409, "duplicate_id",
                         "re-create a deleted id after restart")
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org}))
        eq([x["id"] for x in r.data], listed, "list order after restart")
        r = c.get(cursor_next)
        expect_status(r, 200, "a next link from before the restart")
        eq([x["id"] for x in r.data], listed[10:20], "page of a cursor from before the restart")
        # new writes continue after the old ones
        n = create(c, payment(org))["id"]
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org}))
        eq([x["id"] for x in r.data], listed + [n], "list after a create following restart")
        finish(srv, signal.SIGINT)
    finally:
        srv.ensure_dead()


@test
def kill9_loses_no_acknowledged_create(t):
    d = t.scratch("kill9")
    srv = Server(t.binary, d, name="kill9")
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()
    org = new_id()

    def writer():
        c = srv.client()
        conn = None
        while not stop.is_set():
            pid = new_id()
            try:
                if conn is None:
                    conn = c.conn()
                    conn.timeout = 5
                r = c.post("/v1/payments", payment(org, pid=pid, reference="k9"), conn=conn)
            except Exception:
                if conn is not None:
                    conn.close()
                    conn = None
                if stop.is_set():
                    break
                time.sleep(0.01)
                continue
            if r.status == 201:
                with lock:
                    acked[pid] = r.data
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=writer) for _ in range(6)]
    try:
        srv.start()
        for th in threads:
            th.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.1)
            with lock:
                if len(acked) >= 150:
                    break
        srv.kill9()
        time.sleep(0.2)
        stop.set()
        for th in threads:
            th.join(timeout=30)
        check(not any(th.is_alive() for th in threads), "writer threads did not stop")
        with lock:
            got = dict(acked)
        check(len(got) >= 20, "only %d creates answered 201 before kill -9" % len(got))
        srv.port = free_port()
        srv.start()
        c = srv.client()
        lost = []
        for pid, data in got.items():
            r = c.get("/v1/payments/" + pid)
            if r.status != 200 or r.data != data:
                lost.append("%s: %s" % (pid, r.describe()[:120]))
        check(not lost, "%d of %d acknowledged creates lost or changed after kill -9: %s"
              % (len(lost), len(got), lost[:3]))
        items = []
        path = "/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1000"})
        while path:
            r = c.get(path)
            expect_status(r, 200, "list after kill -9")
            items += r.data
            nxt = r.json["links"].get("next")
            path = link_path(nxt) if nxt else None
        listed = {x["id"] for x in items}
        check(set(got) <= listed, "%d acknowledged payments missing from the list after kill -9"
              % len(set(got) - listed))
        # the store still takes writes
        create(c, payment(org))
        finish(srv)
    finally:
        stop.set()
        srv.ensure_dead()


class MixedWriter(threading.Thread):
    """Creates, PUTs, PATCHes and DELETEs its own payments on one server
    until stopped or the server stops answering, some with an
    Idempotency-Key, recording what was acknowledged: each change (payment,
    version, event type), each payment's last acknowledged state (version,
    data; None once deleted), the keyed writes with their answers, and the
    payment whose write got no answer (it may have committed), after which
    it stops."""

    def __init__(self, srv, org, seed, stop):
        threading.Thread.__init__(self, daemon=True)
        self.c = srv.client()
        self.org = org
        self.rnd = random.Random(seed)
        self.stop_ev = stop
        self.mine = {}       # pid -> version, live payments still written
        self.state = {}      # pid -> (version, data or None when deleted), as acknowledged
        self.changes = []    # (pid, version, event type) acknowledged
        self.keyed = []      # (method, path, body, key, status, body bytes) acknowledged
        self.unsure = {}     # pid -> the kind of write sent and not answered
        self.unexpected = []  # answers other than the write's success

    def send(self, conn, method, path, body, keyed):
        h = {"Idempotency-Key": new_id()} if keyed else {}
        return self.c.request(method, path, body, headers=h, conn=conn), h.get("Idempotency-Key")

    def one(self, conn):
        r = self.rnd.random()
        keyed = self.rnd.random() < 0.4
        if not self.mine or r < 0.3:
            pid, kind, v = new_id(), "create", -1
            method, path = "POST", "/v1/payments"
            body = payment(self.org, pid=pid, reference="c")
            want = 201
        else:
            pid = self.rnd.choice(list(self.mine))
            v = self.mine[pid]
            path = "/v1/payments/" + pid
            if r < 0.45:
                kind, method, body, want = "delete", "DELETE", None, 204
                path += "?version=%d" % v
            elif r < 0.75:
                kind, method, want = "update", "PATCH", 200
                body = {"data": {"version": v, "attributes": {"reference": "m%d" % v}}}
            else:
                kind, method, want = "update", "PUT", 200
                body = payment(self.org, pid=pid, reference="p%d" % v)
                body["data"]["version"] = v
        try:
            resp, key = self.send(conn, method, path, body, keyed)
        except Fail:
            self.unsure[pid] = kind
            self.mine.pop(pid, None)
            raise
        if resp.status != want:
            self.unexpected.append("%s %s: %s" % (method, path, resp.describe()[:200]))
            return
        if key:
            self.keyed.append((method, path, body, key, resp.status, resp.body))
        if kind == "create":
            self.mine[pid] = 0
            self.state[pid] = (0, resp.data)
            self.changes.append((pid, 0, "payment.created"))
        elif kind == "update":
            eq(resp.data["version"], v + 1, "version answered to %s %s" % (method, path))
            self.mine[pid] = v + 1
            self.state[pid] = (v + 1, resp.data)
            self.changes.append((pid, v + 1, "payment.updated"))
        else:
            del self.mine[pid]
            self.state[pid] = (v + 1, None)
            self.changes.append((pid, v + 1, "payment.deleted"))

    def run(self):
        """Until stopped or a write gets no answer (the server is gone): only
        that last write of each thread is unsure."""
        conn = self.c.conn()
        conn.timeout = 5
        try:
            while not self.stop_ev.is_set():
                self.one(conn)
        except Fail:
            pass
        finally:
            conn.close()


def _whole_feed(c):
    """Every event of the server's feed, followed until two waits in a row
    bring nothing (a MongoDB store's restarted sequencer may still be
    stamping events of writes committed before a crash)."""
    feed, after, quiet = [], 0, 0
    deadline = time.monotonic() + 60
    while quiet < 2:
        check(time.monotonic() < deadline, "the feed did not settle within 60 s")
        r = c.get("/v1/events?" + qs({"page[after]": after, "page[size]": "1000", "wait": "1"}))
        expect_status(r, 200, "the feed")
        feed += r.data
        quiet = 0 if r.data else quiet + 1
        nxt = r.json["links"]["next"]
        after = int(nxt.split("page[after]=")[1].split("&")[0])
    return feed


@test
def kill9_under_mixed_writes_keeps_each_acknowledged_change_once(t):
    """kill -9 while several threads create, PUT, PATCH and DELETE (some
    with an Idempotency-Key), then a restart on the same store: every
    acknowledged write is there as acknowledged (deleted ones 404), a keyed
    one retried is answered from its record and changes nothing, and the
    feed holds exactly one event of each acknowledged change; the only
    others allowed are of writes that got no answer."""
    d = t.scratch("kill9mixed")
    srv = Server(t.binary, d, name="kill9mixed")
    stop = threading.Event()
    org = new_id()
    writers = [MixedWriter(srv, org, seed, stop) for seed in range(4)]
    try:
        srv.start()
        for w in writers:
            w.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(len(w.changes) for w in writers) < 300:
            time.sleep(0.1)
        srv.kill9()
        time.sleep(0.2)
        stop.set()
        for w in writers:
            w.join(timeout=30)
        check(not any(w.is_alive() for w in writers), "writer threads did not stop")
        unexpected = [u for w in writers for u in w.unexpected]
        eq(unexpected[:3], [], "answers other than success before the kill (%d)"
           % len(unexpected))
        changes = [ch for w in writers for ch in w.changes]
        kinds = {k for _, _, k in changes}
        check(len(changes) >= 50 and len(kinds) == 3,
              "too few acknowledged writes to mean anything: %d, of kinds %s"
              % (len(changes), sorted(kinds)))
        state = {pid: s for w in writers for pid, s in w.state.items()}
        unsure = {pid: k for w in writers for pid, k in w.unsure.items()}

        srv.port = free_port()
        srv.start()
        c = srv.client()
        wrong = []
        for pid, (v, data) in state.items():
            r = c.get("/v1/payments/" + pid)
            if pid in unsure:  # its last write may have committed without an answer
                ok = ((data is None and r.status == 404) or (r.status == 200 and r.data == data)
                      or (r.status == 200 and r.data["version"] == v + 1)
                      or (r.status == 404 and unsure[pid] == "delete"))
            elif data is None:
                ok = r.status == 404 and r.json.get("error_code") == "not_found"
            else:
                ok = r.status == 200 and r.data == data
            if not ok:
                wrong.append("%s (acknowledged version %d%s): %s"
                             % (pid, v, ", deleted" if data is None else "", r.describe()[:160]))
        eq(wrong[:3], [], "acknowledged writes lost or changed by kill -9 (%d of %d payments)"
           % (len(wrong), len(state)))

        keyed = [k for w in writers for k in w.keyed]
        check(keyed, "no keyed write was acknowledged")
        for method, path, body, key, status, answer in keyed[:20]:
            r = c.request(method, path, body, headers={"Idempotency-Key": key})
            eq((r.status, r.header("Idempotent-Replayed"), r.body), (status, "true", answer),
               "%s %s retried with its key after the restart" % (method, path))

        seen = {}
        for e in _whole_feed(c):
            k = (e["payment_id"], e["version"])
            seen.setdefault(k, []).append(e["event_type"])
        missing = [ch for ch in changes if seen.get(ch[:2]) != [ch[2]]]
        eq(missing[:3], [], "acknowledged changes (%d of %d) not in the feed exactly once"
           % (len(missing), len(changes)))
        acked = {ch[:2] for ch in changes}
        extra = []
        for (pid, v), types in seen.items():
            if (pid, v) in acked:
                continue
            base = state[pid][0] + 1 if pid in state else 0
            if pid not in unsure or v != base or len(types) != 1:
                extra.append((pid, v, types))
        eq(extra[:3], [], "events (%d) of no acknowledged change nor unanswered write"
           % len(extra))
        create(c, payment(org))  # the store still takes writes
        finish(srv)
    finally:
        stop.set()
        srv.ensure_dead()


# --------------------------------------------------------------------------
# configuration that changes responses

@test
def public_url_prefixes_links(t):
    d = t.scratch("publicurl")
    prefix = "http://payments.example.test/base"
    srv = Server(t.binary, d, name="publicurl", args=["--public-url", prefix, "--log-level", "debug"])
    try:
        srv.start()
        c = srv.client()
        org = new_id()
        r = c.post("/v1/payments", payment(org))
        expect_status(r, 201, "create")
        pid = r.data["id"]
        eq(r.json["links"]["self"], prefix + "/v1/payments/" + pid, "links.self of the 201")
        r = c.get("/v1/payments/" + pid)
        eq(r.json["links"]["self"], prefix + "/v1/payments/" + pid, "links.self of GET")
        create(c, payment(org))
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1"}))
        expect_status(r, 200, "list")
        links = r.json["links"]
        for k in ("self", "first", "next"):
            check(isinstance(links.get(k), str) and links[k].startswith(prefix + "/v1/payments"),
                  "list links.%s %r lacks the public URL" % (k, links.get(k)))
        r2 = c.get(link_path(links["next"], prefix))
        expect_status(r2, 200, "following the prefixed next link")
        eq(len(r2.data), 1, "second page size")
        check(r2.data[0]["id"] != r.data[0]["id"], "next page repeats the first")
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "1", "page[number]": "0"}))
        check(r.json["links"]["next"].startswith(prefix + "/v1/payments"), "offset next link lacks prefix")
        r = c.get("/v1")
        expect_status(r, 200, "GET /v1")
        finish(srv)
    finally:
        srv.ensure_dead()


@test
def max_body_flag(t):
    d = t.scratch("maxbody")
    limit = 2048
    srv = Server(t.binary, d, name="maxbody", args=["--max-body", str(limit)])
    try:
        srv.start()
        c = srv.client()

        def sized(n):
            b = payment()
            base = len(json.dumps(b).encode())
            b["data"]["attributes"]["pad"] = "x" * (n - base - len(', "pad": ""'))
            enc = json.dumps(b).encode()
            eq(len(enc), n, "test body size")
            return enc

        expect_status(c.post("/v1/payments", sized(limit)), 201, "POST of exactly --max-body bytes")
        for n in (limit + 1, 4 * limit, 64 * limit):
            body = sized(n)
            r = c.raw(raw_request("POST", "/v1/payments", [("Content-Type", "application/json"),
                                                           ("Content-Length", str(n))], body))
            expect_error(r, 413, "payload_too_large", "POST of %d bytes, --max-body %d" % (n, limit))
        # content type wins over size, size wins over JSON syntax
        big = b"{" * (limit + 100)
        r = c.raw(raw_request("POST", "/v1/payments", [("Content-Type", "text/plain"),
                                                       ("Content-Length", str(len(big)))], big))
        expect_error(r, 415, "unsupported_media_type", "too large and text/plain")
        r = c.raw(raw_request("POST", "/v1/payments", [("Content-Type", "application/json"),
                                                       ("Content-Length", str(len(big)))], big))
        expect_error(r, 413, "payload_too_large", "too large and not JSON")
        # PUT and PATCH are limited too
        pid = create(c)["id"]
        body = sized(limit + 10)
        for m in ("PUT", "PATCH"):
            r = c.raw(raw_request(m, "/v1/payments/" + pid, [("Content-Type", "application/json"),
                                                              ("If-Match", '"0"'),
                                                              ("Content-Length", str(len(body)))], body))
            expect_error(r, 413, "payload_too_large", "%s over --max-body" % m)
        # a chunked body is counted as it arrives
        chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        r = c.raw(raw_request("POST", "/v1/payments", [("Content-Type", "application/json"),
                                                       ("Transfer-Encoding", "chunked")], chunk))
        expect_error(r, 413, "payload_too_large", "chunked POST over --max-body")
        small = json.dumps(payment()).encode()
        half = len(small) // 2
        chunk = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, small[:half], len(small) - half, small[half:])
        r = c.raw(raw_request("POST", "/v1/payments", [("Content-Type", "application/json"),
                                                       ("Transfer-Encoding", "chunked")], chunk))
        expect_status(r, 201, "chunked POST under --max-body")
        check(srv.running(), "server died")
        finish(srv)
    finally:
        srv.ensure_dead()
