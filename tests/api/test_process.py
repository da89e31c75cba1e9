"""The process: flags and environment, start-up failures, signals, restart
on the same store, kill -9, --public-url and --max-body.  Each test starts
servers of its own and always stops them."""

import http.client
import json
import os
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
