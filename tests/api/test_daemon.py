"""paymentd as a daemon: the service manager's notifications (READY,
RELOADING, STOPPING, STATUS, watchdog pings) on a NOTIFY_SOCKET of our own,
SIGHUP reloading --api-keys under load without a failed request, a bad keys
file refused with the old keys kept, and --log-file reopened after a move."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import (HOST, Fail, PgServer, Server, check, child_env, default_store, eq,
                     expect_status, free_port, new_pg_schema, payment, pg_test, run_binary, test, track)

ORG_A = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
ORG_B = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SECRETS = {"both": "both-secret-51c2", "gone": "gone-secret-0d9e", "fresh": "fresh-secret-7a13",
           "narrow": "narrow-secret-e4b8"}
NATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "broker", "nats.sh")


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET: every
    message received, with its arrival time.  Held (hold=True), its queue is
    filled first and nothing is read until release(): the process's first
    notification then blocks in its send, where the test can look at it."""

    def __init__(self, hold=False):
        self.dir = tempfile.mkdtemp(prefix="pd-notify-")  # short: sun_path holds 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, {name: value})
        self.lock = threading.Lock()
        self.closed = False
        self.released = threading.Event()
        if hold:
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            filler.setblocking(False)
            try:
                while True:
                    filler.sendto(b"FILLER=1", self.path)
            except BlockingIOError:
                pass  # the queue is full
            finally:
                filler.close()
        else:
            self.released.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def release(self):
        self.released.set()

    def _run(self):
        self.released.wait()
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            if "FILLER" in fields:
                continue
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def env(self, extra=None):
        e = {"NOTIFY_SOCKET": self.path}
        e.update(extra or {})
        return child_env(e)

    def all(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, what, pred, timeout=20.0, after=0):
        """The index of the first message from index after on that pred
        accepts, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self.all()
            for i in range(after, len(msgs)):
                if pred(msgs[i][1]):
                    return i
            time.sleep(0.01)
        raise Fail("no %s notification within %.0fs; got %s"
                             % (what, timeout, [m[1] for m in self.all()][-10:]))

    def close(self):
        self.closed = True
        self.released.set()
        self.thread.join(timeout=5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _connects(port):
    """Whether a TCP connection to port is accepted (by the kernel: the
    server listens), even while the server is stopped."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _is(name, value="1"):
    return lambda f: f.get(name) == value


def _blocked_notifying(pid, timeout=20.0):
    """Waits until the main thread of pid blocks sending to a full
    NOTIFY_SOCKET; False when it does not within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/wchan" % pid) as f:
                if f.read().strip() == "unix_wait_for_peer":
                    return True
        except FileNotFoundError:
            return False  # exited
        time.sleep(0.005)
    return False


@test
def daemon_notifies_ready_watchdog_reload_stopping(t):
    d = t.scratch("notify")
    port = free_port()
    ns = NotifySocket(hold=True)
    srv = Server(t.binary, d, name="notify", port=port, env=ns.env({"WATCHDOG_USEC": "1000000"}))
    try:
        srv.start(wait=False)
        # The first notification, READY=1, waits in its send: by then the
        # port must listen.
        check(_blocked_notifying(srv.proc.pid), "the server never sent a notification: %s"
              % srv.stderr_tail())
        check(_connects(port), "READY=1 sent before the port listened")
        ns.release()
        ready = ns.wait_for("READY=1", _is("READY"))
        eq(ready, 0, "the index of READY=1 among the notifications")
        status = ns.all()[ready][1].get("STATUS", "")
        check(("listening on 127.0.0.1:%d" % port) in status, "READY's STATUS: %r" % status)
        expect_status(srv.client().get("/healthz"), 200, "GET /healthz after READY")
        # Pings every half of WATCHDOG_USEC (0.5 s); the manager's limit is
        # the whole interval between two (a probe that failed once on a
        # loaded machine is tried again well within it).
        time.sleep(2.5)
        t_ready = ns.all()[ready][0]
        pings = [m for m in ns.all() if m[1].get("WATCHDOG") == "1" and m[0] >= t_ready]
        window = time.monotonic() - t_ready
        check(len(pings) >= 4, "%d WATCHDOG=1 in %.1fs after READY" % (len(pings), window))
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
        check(not gaps or max(gaps) < 1.0, "a gap of %.3fs between pings (WATCHDOG_USEC 1s)"
              % max(gaps or [0]))
        # SIGHUP: RELOADING=1, then READY=1 again, and it keeps serving.
        n = len(ns.all())
        srv.proc.send_signal(signal.SIGHUP)
        reloading = ns.wait_for("RELOADING=1", _is("RELOADING"), after=n)
        check("MONOTONIC_USEC" in ns.all()[reloading][1], "RELOADING=1 without MONOTONIC_USEC")
        ns.wait_for("READY=1 after the reload", _is("READY"), after=reloading + 1)
        expect_status(srv.client().get("/healthz"), 200, "GET /healthz after SIGHUP")
        check(srv.running(), "the server exited on SIGHUP")
        # SIGTERM: STOPPING=1 first, exit 0.
        n = len(ns.all())
        eq(srv.stop(), 0, "exit status after SIGTERM")
        ns.wait_for("STOPPING=1", _is("STOPPING"), after=n, timeout=2)
    finally:
        srv.ensure_dead()
        ns.close()
    check(srv.sanitizer_report() is None, "sanitizer: %s" % srv.sanitizer_report())


def _pings_between(ns, start, end):
    return len([m for m in ns.all() if m[1].get("WATCHDOG") == "1" and start <= m[0] <= end])


@pg_test
def watchdog_pings_through_a_postgresql_outage(t):
    """An unavailable store is answered with 503s, not a hung process: the
    pings go on while PostgreSQL is down."""
    d = t.scratch("pg-watchdog")
    pg = PgServer(d).start()
    ns = NotifySocket()
    srv = None
    try:
        store = pg.uri(new_pg_schema(pg.base))
        srv = Server(t.binary, d, name="pg-watchdog", store=store,
                     env=ns.env({"WATCHDOG_USEC": "300000"}))
        srv.start()
        ns.wait_for("READY=1", _is("READY"))
        pg.stop()
        c = srv.client()
        expect_status(c.get("/readyz"), 503, "/readyz with PostgreSQL down")
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            c.get("/v1/payments")  # store requests meanwhile: 503s
            time.sleep(0.05)
        pings = _pings_between(ns, started, time.monotonic())
        check(pings >= 4, "%d WATCHDOG=1 in 1.5s with PostgreSQL down" % pings)
        eq(srv.stop(), 0, "exit status after SIGTERM")
    finally:
        if srv is not None:
            srv.ensure_dead()
        ns.close()
        pg.ensure_dead()


@test
def daemon_without_notify_socket_is_quiet(t):
    # WATCHDOG_USEC without NOTIFY_SOCKET: nothing to ping, no complaint.
    d = t.scratch("nonotify")
    srv = Server(t.binary, d, name="nonotify", env=child_env({"WATCHDOG_USEC": "300000"}),
                 args=["--log-level", "debug"])
    try:
        srv.start()
        time.sleep(0.5)
        expect_status(srv.client().get("/healthz"), 200, "GET /healthz")
        eq(srv.stop(), 0, "exit status after SIGTERM")
    finally:
        srv.ensure_dead()
    text = srv.stderr_text()
    check("cannot notify" not in text and "watchdog:" not in text,
          "notifications without NOTIFY_SOCKET: %s" % srv.stderr_tail())


def _key_line(name, orgs, access=""):
    digest = hashlib.sha256(SECRETS[name].encode()).hexdigest()
    return ("%s %s %s %s" % (name, digest, orgs, access)).rstrip() + "\n"


# Two files that both hold "both"; "gone" only in the first, "fresh" only in
# the second, "narrow" for ORG_A in the first and ORG_B in the second.
KEYS_OLD = _key_line("both", ORG_A + "," + ORG_B) + _key_line("gone", "*") + \
    _key_line("narrow", ORG_A)
KEYS_NEW = "# after the reload\n" + _key_line("fresh", "*") + _key_line("both", ORG_A + "," + ORG_B) + \
    _key_line("narrow", ORG_B)


def _replace(path, text):
    """Replaces the file as an operator's tools do: a new file renamed over."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def _as(name):
    return {"Authorization": "Bearer %s" % SECRETS[name]}


def _log_lines_matching(srv, words):
    return [r for r in srv.log_records() if all(w in str(r.get("msg", "")) for w in words)]


def _wait_log(srv, words, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _log_lines_matching(srv, words)
        if len(got) >= count:
            return got
        time.sleep(0.02)
    raise Fail("%d log lines with %r expected, %d seen: %s"
                         % (count, words, len(_log_lines_matching(srv, words)), srv.stderr_tail()))


class Load:
    """Client threads on keep-alive connections, each creating, reading and
    listing payments with the key "both" until stopped; every answer that is
    not the expected status, and every connection error, is a failure."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.failures = []
        self.created = []
        self.requests = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _call(self, conn, method, path, body, want):
        headers = dict(_as("both"))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException) as e:
            return "%s %s: connection error %r" % (method, path, e), None
        with self.lock:
            self.requests += 1
        if r.status != want:
            return "%s %s: %d %s" % (method, path, r.status, raw[:200]), None
        return None, raw

    def _run(self, i):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            while not self.stop.is_set():
                org = ORG_A if i % 2 else ORG_B
                err, raw = self._call(conn, "POST", "/v1/payments", payment(org=org), 201)
                if not err:
                    pid = json.loads(raw)["data"]["id"]
                    with self.lock:
                        self.created.append(pid)
                    err, _ = self._call(conn, "GET", "/v1/payments/%s" % pid, None, 200)
                if not err:
                    err, _ = self._call(conn, "GET", "/v1/payments?page%5Bsize%5D=5", None, 200)
                if err:
                    with self.lock:
                        self.failures.append(err)
                    conn.close()  # a fresh connection for the next try
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        finally:
            conn.close()

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=30)


@test
def sighup_reloads_api_keys_under_load(t):
    d = t.scratch("reload")
    keys = os.path.join(d, "api-keys")
    _replace(keys, KEYS_OLD)
    srv = Server(t.binary, d, name="reload", args=["--api-keys", keys])
    try:
        srv.start()
        c = srv.client()
        expect_status(c.get("/v1/me", headers=_as("gone")), 200, "gone before any reload")
        expect_status(c.get("/v1/me", headers=_as("fresh")), 401, "fresh before any reload")
        reloads = 24
        with Load(srv.port) as load:
            started = time.monotonic()
            for i in range(reloads):
                time.sleep(3.0 / reloads)
                _replace(keys, KEYS_NEW if i % 2 == 0 else KEYS_OLD)
                srv.proc.send_signal(signal.SIGHUP)
                # Each reload done before the next signal: two SIGHUPs sent
                # at once may be taken as one.
                _wait_log(srv, ["api keys reloaded"], i + 1)
            _replace(keys, KEYS_NEW)
            srv.proc.send_signal(signal.SIGHUP)
            _wait_log(srv, ["api keys reloaded"], reloads + 1)
            time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        check(not load.failures, "%d of %d requests failed during %d reloads: %s"
              % (len(load.failures), load.requests, reloads + 1, load.failures[:5]))
        check(len(load.created) > 20, "only %d creates in ~3s" % len(load.created))
        for pid in load.created:
            expect_status(c.get("/v1/payments/%s" % pid, headers=_as("both")), 200,
                          "an acknowledged create after the reloads")
        # The last file is in force: fresh added, gone removed, narrow's
        # organisations changed.
        expect_status(c.get("/v1/me", headers=_as("fresh")), 200, "a key added by the reload")
        expect_status(c.get("/v1/me", headers=_as("gone")), 401, "a key removed by the reload")
        me = c.get("/v1/me", headers=_as("narrow"))
        expect_status(me, 200, "narrow after the reload")
        eq(me.data["organisations"], [ORG_B], "narrow's organisations after the reload")
        expect_status(c.post("/v1/payments", payment(org=ORG_A), headers=_as("narrow")), 403,
                      "narrow creating for an organisation the reload took away")
        line = _log_lines_matching(srv, ["api keys reloaded"])[0]
        eq(line["level"], "info", "level of a good reload's line")
        check("3 keys" in line["msg"] and "added fresh" in line["msg"] and
              "removed gone" in line["msg"] and "changed narrow" in line["msg"],
              "a good reload's line: %r" % line["msg"])

        # A bad file: one error line, the keys in force stay.
        _replace(keys, KEYS_OLD + "broken-line-without-fields\n")
        srv.proc.send_signal(signal.SIGHUP)
        bad = _wait_log(srv, ["api keys not reloaded"], 1)
        time.sleep(0.3)
        bad = _log_lines_matching(srv, ["api keys not reloaded"])
        eq(len(bad), 1, "lines about the bad file")
        eq(bad[0]["level"], "error", "level of the bad file's line")
        check(bad[0]["msg"].startswith("api keys not reloaded: %s:4: " % keys) and
              bad[0]["msg"].endswith("; the previous keys stay in force"),
              "the bad file's line: %r" % bad[0]["msg"])
        expect_status(c.get("/v1/me", headers=_as("fresh")), 200, "fresh after a bad file")
        expect_status(c.get("/v1/me", headers=_as("gone")), 401, "gone after a bad file")
        check(srv.running(), "the server exited on a bad keys file")
        # A later good file is taken.
        _replace(keys, KEYS_OLD)
        srv.proc.send_signal(signal.SIGHUP)
        _wait_log(srv, ["api keys reloaded"], reloads + 2)
        expect_status(c.get("/v1/me", headers=_as("gone")), 200, "gone back after a good file")
        expect_status(c.get("/v1/me", headers=_as("fresh")), 401, "fresh gone after a good file")
        eq(srv.stop(), 0, "exit status after SIGTERM")
    finally:
        srv.ensure_dead()
    check(srv.sanitizer_report() is None, "sanitizer: %s" % srv.sanitizer_report())
    log = srv.stderr_text()
    for secret in SECRETS.values():
        check(secret not in log, "a secret appears in the log")


def _access_lines(path, req_path):
    """The access log lines of req_path in the file at path, each a whole
    JSON object."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)  # a split line would not parse
            if rec.get("path") == req_path and rec.get("status") == 200:
                n += 1
    return n


@test
def log_file_reopened_on_sighup(t):
    d = t.scratch("logfile")
    log = os.path.join(d, "paymentd.log")
    # The variable this time (the worker's test gives the flag).
    srv = Server(t.binary, d, name="logfile", env=child_env({"PAYMENTD_LOG_FILE": log}))
    answered = [0]
    errors = []
    stop = threading.Event()

    def requests():
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
        try:
            while not stop.is_set():
                conn.request("GET", "/v1")
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    answered[0] += 1
                else:
                    errors.append(r.status)
        except (OSError, http.client.HTTPException) as e:
            errors.append(repr(e))
        finally:
            conn.close()

    try:
        srv.start()
        eq(os.stat(log).st_mode & 0o777, 0o640, "the log file's mode")
        th = threading.Thread(target=requests)
        th.start()
        try:
            time.sleep(0.5)
            os.rename(log, log + ".1")  # as logrotate does
            time.sleep(0.2)
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not os.path.exists(log) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
        finally:
            stop.set()
            th.join(timeout=30)
        eq(srv.stop(), 0, "exit status after SIGTERM")
    finally:
        srv.ensure_dead()
    check(not errors, "requests failed: %s" % errors[:5])
    check(os.path.exists(log), "no new log file after SIGHUP")
    before, after = _access_lines(log + ".1", "/v1"), _access_lines(log, "/v1")
    check(before > 0 and after > 0, "access lines: %d before the move, %d after" % (before, after))
    eq(before + after, answered[0], "access log lines across both files (%d + %d)"
       % (before, after))
    with open(log, encoding="utf-8") as f:
        text = f.read()
    check("log file %s reopened" % log in text and "paymentd stopped" in text,
          "the new file lacks the reopen or the stop: %s" % text[-400:])
    check('"level"' not in srv.stderr_text(), "log lines on stderr with --log-file: %s"
          % srv.stderr_tail())
    check(srv.sanitizer_report() is None, "sanitizer: %s" % srv.sanitizer_report())
    rc, out, _ = run_binary(t.binary, ["--help"])
    check(rc == 0 and "--log-file" in out and "PAYMENTD_LOG_FILE" in out,
          "--help does not tell of --log-file: %s" % out[-300:])


def _nats(cmd, d):
    p = subprocess.run([NATS, cmd, d], capture_output=True, timeout=60)
    check(p.returncode == 0, "nats.sh %s: %s" % (cmd, p.stderr.decode("utf-8", "replace")[-300:]))
    return p.stdout.decode().strip().splitlines()[-1] if p.stdout.strip() else ""


@test
def worker_notifies_and_reopens_its_log(t):
    d = t.scratch("worker")
    nats_dir = os.path.join(d, "nats")
    os.makedirs(nats_dir)
    port = _nats("start", nats_dir)
    log = os.path.join(d, "worker.log")
    ns = NotifySocket()
    proc = None
    try:
        argv = [t.binary, "worker", "--store", default_store(d, "worker"), "--broker",
                "nats://127.0.0.1:%s" % port, "--partitions", "2", "--log-file", log]
        with open(os.path.join(d, "worker.stderr"), "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    cwd=d, env=ns.env())
        track(proc)
        ready = ns.wait_for("the worker's READY=1", _is("READY"))
        check("worker on nats://" in ns.all()[ready][1].get("STATUS", ""),
              "the worker's STATUS: %r" % ns.all()[ready][1])
        os.rename(log, log + ".1")
        n = len(ns.all())
        proc.send_signal(signal.SIGHUP)
        r = ns.wait_for("the worker's RELOADING=1", _is("RELOADING"), after=n)
        ns.wait_for("the worker's READY=1 after SIGHUP", _is("READY"), after=r + 1)
        check(os.path.exists(log), "the worker made no new log file on SIGHUP")
        n = len(ns.all())
        proc.send_signal(signal.SIGTERM)
        eq(proc.wait(timeout=30), 0, "the worker's exit status")
        ns.wait_for("the worker's STOPPING=1", _is("STOPPING"), after=n, timeout=2)
        with open(log, encoding="utf-8") as f:
            text = f.read()
        check("reopened" in text and "handing the partitions back" in text,
              "the worker's new log: %s" % text[-400:])
        with open(log + ".1", encoding="utf-8") as f:
            check("paymentd worker on" in f.read(), "the worker's first log lacks its start")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        ns.close()
        _nats("stop", nats_dir)


@test
def rate_limit_of_a_key_survives_a_reload(t):
    """A key's budget is counted by its id: a reload, which hands out new
    principals, must not give a limited caller a fresh budget (a fresh one
    lets a burst of 5 through at once; the spent one refills 5 a second)."""
    d = t.scratch("reload-ratelimit")
    path = os.path.join(d, "keys")
    _replace(path, KEYS_OLD)
    srv = Server(t.binary, d, name="reload-rl", args=["--api-keys", path, "--rate-limit", "5/s"])
    srv.start()
    try:
        c = srv.client()
        for attempt in range(10):
            codes = [c.get("/v1/payments?page[size]=1", headers=_as("both")).status
                     for _ in range(12)]
            check(429 in codes, "12 quick requests at 5/s: %s" % codes)
            t0 = time.monotonic()
            _replace(path, KEYS_NEW if attempt % 2 == 0 else KEYS_OLD)
            srv.proc.send_signal(signal.SIGHUP)
            _wait_log(srv, ["api keys reloaded"], attempt + 1)
            codes = [c.get("/v1/payments?page[size]=1", headers=_as("both")).status
                     for _ in range(8)]
            refilled = int(5 * (time.monotonic() - t0)) + 1
            if refilled >= 5:
                continue  # too slow to tell a fresh budget from a refilled one
            check(codes.count(200) <= refilled,
                  "after a reload %.2fs later: %s (at most %d could pass)"
                  % (time.monotonic() - t0, codes, refilled))
            return
        raise Fail("the machine was too slow for ten attempts")
    finally:
        srv.stop()
