"""harness: what the API tests share.

A tiny test registry (@test), assertions that raise Fail with a readable
reason, a Server that starts the real binary on a free loopback port with a
temporary store and always stops it, and an HTTP client with a timeout on
every socket.  Standard library only.

Stores: every Server gets a store of its own.  By default a new SQLite file;
after use_mongo(URI) (run.py --mongo), a new database of that MongoDB, or of
the test double tests/mongo/double.py, which Double starts and stops for the
tests that take MongoDB away; after use_pg(URI) (run.py --pg), a new schema
of that PostgreSQL database (made here with psql, named in the server's URI
by search_path), or of a private server (tests/pg/pg.sh) that PgServer
starts, stops and kills for the tests that take PostgreSQL away.
"""

import atexit
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

HOST = "127.0.0.1"
TIMEOUT = 10.0          # seconds, per socket operation; ASan builds are slower
START_TIMEOUT = 20.0    # seconds for a server to answer /healthz
STOP_TIMEOUT = 20.0     # seconds for a server to exit after a signal

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

ERROR_CODES = {
    "bad_request", "invalid_id", "validation_failed", "not_found", "method_not_allowed",
    "version_required", "version_conflict", "duplicate_id", "payload_too_large",
    "unsupported_media_type", "store_unavailable", "internal_error",
    # --api-keys, limits and idempotency (safe retries and isolation)
    "unauthorized", "forbidden", "rate_limited", "idempotency_key_reused", "idempotency_key_in_use",
    "broker_unavailable", "shutting_down", "server_busy",
    # the change feed
    "cursor_expired",
}

# --------------------------------------------------------------------------
# registry and assertions

TESTS = []  # (name, function) in definition order


MONGO_TESTS = []  # (name, function): run only with run.py --mongo


def _test_name(fn):
    mod = fn.__module__.split(".")[-1]
    if mod.startswith("test_"):
        mod = mod[5:]
    return "%s.%s" % (mod, fn.__name__)


def test(fn):
    TESTS.append((_test_name(fn), fn))
    return fn


def mongo_test(fn):
    """A test of the MongoDB store itself (outages and the like), run only
    when the suite runs on MongoDB."""
    MONGO_TESTS.append((_test_name(fn), fn))
    return fn


PG_TESTS = []  # (name, function): run only with run.py --pg


def pg_test(fn):
    """A test of the PostgreSQL store itself (outages and the like), run
    only when the suite runs on PostgreSQL."""
    PG_TESTS.append((_test_name(fn), fn))
    return fn


SQLITE_TESTS = []  # (name, function): run only when the suite runs on the embedded store


def sqlite_test(fn):
    """A test of the embedded store itself (its file, its disk), run only
    when the suite runs on SQLite."""
    SQLITE_TESTS.append((_test_name(fn), fn))
    return fn


class Fail(Exception):
    pass


class Skip(Exception):
    """Raised by a test that cannot run here, with the reason: counted and
    reported as skipped, never as passed (CI fails on any skip)."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(got, want, what):
    if got != want:
        raise Fail("%s: expected %s, got %s" % (what, short(want), short(got)))


def short(v, n=300):
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True) if _jsonable(v) else repr(v)
    return s if len(s) <= n else s[:n] + "..."


def _jsonable(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------
# processes: every one we start is killed at exit, whatever happens

_PROCS = []
_PROCS_LOCK = threading.Lock()


def track(p):
    """Kills p (a Popen) at exit if it is still running."""
    with _PROCS_LOCK:
        _PROCS.append(p)


def kill_all():
    with _PROCS_LOCK:
        procs = list(_PROCS)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


atexit.register(kill_all)


def freeze(pid, timeout=10.0):
    """Stops process pid with SIGSTOP and returns once every one of its
    threads is stopped.  kill() returns before that: the kernel wakes one
    thread to begin the group stop, and until it runs the others go on
    answering (a frozen nats-server was seen to acknowledge a publish sent
    after kill() had returned)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass  # a thread that ended
        if states and all(s in ("T", "t") for s in states):
            return
        if time.monotonic() > deadline:
            raise Fail("process %d not stopped %.0fs after SIGSTOP: thread states %s"
                       % (pid, timeout, states))
        time.sleep(0.001)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


# --------------------------------------------------------------------------
# stores

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOUBLE_PY = os.path.join(REPO, "tests", "mongo", "double.py")
PYTHON = "/usr/bin/python3"  # Debian's: the double needs python3-mockupdb and python3-mongomock

MONGO = {"uri": None, "dbs": []}  # use_mongo()'s URI; the databases handed out


def use_mongo(uri):
    """Every Server created from now on without an explicit store gets a new
    database of the MongoDB that uri names."""
    MONGO["uri"] = uri


def mongo_uri(base, db, opts=""):
    """base (mongodb://HOSTS[/DB][?OPTS]) naming database db, with opts
    ("k=v&k=v") added to its options."""
    scheme, _, rest = base.partition("://")
    hosts = re.split(r"[/?]", rest, maxsplit=1)[0]
    old = rest.partition("?")[2]
    q = "&".join(x for x in (old, opts) if x)
    return "%s://%s/%s%s" % (scheme, hosts, db, "?" + q if q else "")


def new_mongo_db():
    db = "paymentd_api_%d_%d" % (os.getpid(), len(MONGO["dbs"]))
    MONGO["dbs"].append(db)
    return db


PG_SH = os.path.join(REPO, "tests", "pg", "pg.sh")
PSQL = "psql"  # the client of Debian's postgresql-client, on PATH

PG = {"uri": None, "schemas": [], "n": 0}  # use_pg()'s URI, the schemas made in it, a counter
_PG_LOCK = threading.Lock()


def use_pg(uri):
    """Every Server created from now on without an explicit store gets a new
    schema of the PostgreSQL database that uri names."""
    PG["uri"] = uri


def pg_uri(base, schema):
    """base (postgres://...[?OPTS]) with its tables in schema: libpq's
    options=-csearch_path=SCHEMA added to its query."""
    return "%s%soptions=-csearch_path%%3D%s" % (base, "&" if "?" in base else "?", schema)


def psql(uri, sql, timeout=30.0):
    """Runs sql on the database uri names; returns psql's output (unaligned,
    tuples only).  A failure raises Fail with psql's message."""
    try:
        p = subprocess.run([PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-d", uri, "-c", sql],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           env=child_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Fail("psql %r: %s" % (sql[:80], e))
    if p.returncode != 0:
        raise Fail("psql %r: exit %d: %s" % (sql[:80], p.returncode,
                                             p.stderr.decode("utf-8", "replace").strip()[:300]))
    return p.stdout.decode("utf-8", "replace")


def new_pg_schema(base=None):
    """Creates a new, empty schema in the database of base (use_pg()'s URI
    by default) and returns its name; run.py drops use_pg()'s at the end."""
    with _PG_LOCK:
        PG["n"] += 1
        schema = "paymentd_api_%d_%d" % (os.getpid(), PG["n"])
    psql(base or PG["uri"], "CREATE SCHEMA %s" % schema)
    if base is None:
        with _PG_LOCK:
            PG["schemas"].append(schema)
    return schema


def drop_pg_schemas(uri, schemas):
    """Drops the suite's schemas with everything in them, so that runs leave
    nothing behind.  Returns an error message, or None."""
    if not schemas:
        return None
    try:
        psql(uri, "; ".join("DROP SCHEMA IF EXISTS %s CASCADE" % s for s in schemas), timeout=120)
    except Fail as e:
        return str(e)
    return None


def default_store(workdir, name):
    if MONGO["uri"]:
        return mongo_uri(MONGO["uri"], new_mongo_db())
    if PG["uri"]:
        return pg_uri(PG["uri"], new_pg_schema())
    return "sqlite:" + os.path.join(workdir, name, "payments.db")


class Double:
    """A private MongoDB test double on a loopback port.  stop() saves its
    data (SIGTERM) and start() again serves it on the same port: a MongoDB
    outage and its end."""

    def __init__(self, workdir, name="double"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = 0  # any free port the first time, then the same one
        self.proc = None

    def start(self, timeout=15.0):
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        log = open(os.path.join(self.dir, "log"), "ab")
        try:
            self.proc = subprocess.Popen(
                [PYTHON, DOUBLE_PY, "--port", str(self.port), "--ready", ready,
                 "--data", os.path.join(self.dir, "data.bson")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        track(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("the MongoDB double exited with %s: %s"
                           % (self.proc.returncode, self.log_tail()))
            try:
                with open(ready) as f:
                    self.port = int(f.read().strip())
                return self
            except (OSError, ValueError):
                time.sleep(0.05)
        raise Fail("the MongoDB double did not listen within %.0fs: %s" % (timeout, self.log_tail()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise Fail("the MongoDB double did not exit on SIGTERM")
            check(self.proc.returncode == 0, "the MongoDB double exited with %s: %s"
                  % (self.proc.returncode, self.log_tail()))

    def ensure_dead(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def uri(self, db, opts=""):
        return mongo_uri("mongodb://%s:%d" % (HOST, self.port), db, opts)

    def log_tail(self, n=600):
        try:
            with open(os.path.join(self.dir, "log"), "rb") as f:
                t = f.read().decode("utf-8", "replace").strip()
        except OSError:
            return "(no log)"
        return t[-n:] if t else "(log empty)"


class PgServer:
    """A private PostgreSQL server in a directory of its own (tests/pg/pg.sh):
    stop() shuts it down, kill() crashes it (SIGKILL), start() again serves
    the same data on the same port: an outage and its end.  Never the
    suite's server."""

    def __init__(self, workdir, name="pg"):
        # A directory of its own under /tmp, not under workdir: as root the
        # cluster belongs to the postgres user (pg.sh), who cannot enter the
        # suite's private (0700) directories.  ensure_dead() removes it.
        self.dir = tempfile.mkdtemp(prefix="paymentd-%s-" % name)
        self.base = None  # postgres://paymentd@127.0.0.1:PORT/paymentd once started

    def _run(self, cmd, timeout=90.0):
        try:
            p = subprocess.run(["bash", PG_SH, cmd, self.dir], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Fail("tests/pg/pg.sh %s: %s" % (cmd, e))
        if p.returncode != 0:
            raise Fail("tests/pg/pg.sh %s exited with %d: %s"
                       % (cmd, p.returncode, p.stderr.decode("utf-8", "replace").strip()[-600:]))
        return p.stdout.decode("utf-8", "replace").strip()

    def start(self):
        self.base = self._run("start")
        check(self.base.startswith("postgres://"), "tests/pg/pg.sh start printed %r" % self.base)
        return self

    def stop(self):
        self._run("stop")

    def kill(self):
        self._run("kill")

    def ensure_dead(self):
        """Stops the server (kills it when it will not stop) and removes its
        directory."""
        try:
            self._run("stop")
        except Fail:
            self._run("kill")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def port(self):
        return int(self.base.rsplit(":", 1)[1].split("/", 1)[0])

    def uri(self, schema, userinfo=None, opts=""):
        """The store URI of a schema of this server, with userinfo ("user:pw")
        instead of the user alone and opts ("k=v&k=v") added when given."""
        base = self.base
        if userinfo:
            base = base.replace("://paymentd@", "://%s@" % userinfo, 1)
        if opts:
            base += "?" + opts
        return pg_uri(base, schema)


def child_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTD_")}
    # libmongoc keeps counters in /dev/shm/mongoc-<pid>; a server killed with
    # -9 leaves its file behind, and a later process given the same pid
    # warns on stderr before main() runs.  The tests need no counters.
    env["MONGOC_DISABLE_SHM"] = "1"
    if extra:
        env.update(extra)
    return env


def run_binary(binary, args, env=None, cwd=None, timeout=15.0):
    """Runs the binary to completion (for flag errors, --help).  Returns
    (rc, stdout, stderr); a process still running after timeout is killed
    and reported as a failure."""
    p = subprocess.Popen([binary] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env if env is not None else child_env(), cwd=cwd)
    track(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Fail("%s %s: still running after %.0fs (expected it to exit)"
                   % (os.path.basename(binary), " ".join(args), timeout))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class Server:
    """One paymentd process on a free loopback port.  stderr goes to a file
    (the JSON log), never to a pipe nobody reads."""

    def __init__(self, binary, workdir, name="server", store=None, args=(), env=None,
                 port=None, listen_flag=True, store_flag=True):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.port = port or free_port()
        self.store = store or default_store(workdir, name)
        self.args = list(args)
        self.env = env
        self.listen_flag = listen_flag
        self.store_flag = store_flag
        self.proc = None
        self.stderr_path = os.path.join(workdir, "%s.%d.stderr" % (name, id(self)))
        self.stdout_path = os.path.join(workdir, "%s.%d.stdout" % (name, id(self)))
        self._starts = 0

    def argv(self):
        a = [self.binary]
        if self.listen_flag:
            a += ["--listen", "%s:%d" % (HOST, self.port)]
        if self.store_flag:
            a += ["--store", self.store]
        return a + self.args

    def start(self, wait=True):
        self._starts += 1
        # Append: a restarted server keeps the earlier log in the same file.
        err = open(self.stderr_path, "ab")
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=self.workdir,
                                         env=self.env if self.env is not None else child_env())
        finally:
            err.close()
            out.close()
        track(self.proc)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, port=None):
        port = port or self.port
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("%s exited with %s before answering /healthz: %s"
                           % (self.name, self.proc.returncode, self.stderr_tail()))
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=2)
                try:
                    c.request("GET", "/healthz")
                    r = c.getresponse()
                    r.read()
                    if r.status == 200:
                        return
                    last = "status %d" % r.status
                finally:
                    c.close()
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        raise Fail("%s did not answer GET /healthz within %.0fs (%s)" % (self.name, START_TIMEOUT, last))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Sends sig and waits; returns the exit code.  A server that does
        not exit is killed and reported."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise Fail("%s did not exit within %.0fs of signal %d" % (self.name, STOP_TIMEOUT, sig))
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def ensure_dead(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=600):
        t = self.stderr_text().strip()
        return t[-n:] if t else "(stderr empty)"

    def sanitizer_report(self):
        """The start of a sanitizer report in the server's stderr, or None."""
        t = self.stderr_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            i = t.find(marker)
            if i >= 0:
                return t[max(0, i - 100):i + 500]
        return None

    def log_records(self):
        recs = []
        for line in self.stderr_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                recs.append(v)
        return recs

    def client(self):
        return Client(HOST, self.port)


# --------------------------------------------------------------------------
# HTTP

class Resp:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as received
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    _json = None
    _json_done = False

    @property
    def json(self):
        if not self._json_done:
            self._json_done = True
            try:
                self._json = json.loads(self.body.decode("utf-8")) if self.body else None
            except ValueError:
                self._json = None
        return self._json

    @property
    def data(self):
        j = self.json
        return j.get("data") if isinstance(j, dict) else None

    def describe(self):
        return "%d %s" % (self.status, short(self.body.decode("utf-8", "replace"), 400))


# Every response the client sees is audited for the rules that hold for all
# of them; run.py reports what broke them once, at the end.
AUDIT = {"responses": 0, "bad": 0, "violations": []}
_AUDIT_LOCK = threading.Lock()


def audit(method, path, r):
    problems = []
    if not r.header("X-Request-Id"):
        problems.append("no X-Request-Id")
    if r.body and not is_json_ctype(r):
        problems.append("body with Content-Type %r" % r.header("Content-Type"))
    if r.status >= 400:
        j = r.json
        if not (isinstance(j, dict) and j.get("error_code") in ERROR_CODES
                and isinstance(j.get("error_message"), str) and j["error_message"]):
            problems.append("error body without a known error_code and an error_message: %r" % r.body[:120])
    if r.status == 405 and not r.header("Allow"):
        problems.append("405 without Allow")
    if r.status == 503 and not r.header("Retry-After"):
        problems.append("503 without Retry-After")
    if r.status in (204, 304) and r.body:
        problems.append("%d with a body" % r.status)
    with _AUDIT_LOCK:
        AUDIT["responses"] += 1
        AUDIT["bad"] += 1 if problems else 0
        for p in problems:
            if len(AUDIT["violations"]) < 20:
                AUDIT["violations"].append("%s %s -> %d: %s" % (method, path[:80], r.status, p))


def _encode_body(body):
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class Client:
    """Requests on a fresh connection each (keep-alive is tested on purpose
    elsewhere), so one broken response cannot poison the next test."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)

    def request(self, method, path, body=None, headers=None, ctype="application/json",
                conn=None):
        data = _encode_body(body)
        h = {}
        if data is not None and ctype is not None:
            h["Content-Type"] = ctype
        if headers:
            h.update(headers)
        own = conn is None
        c = conn or self.conn()
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            b = r.read()
            resp = Resp(r.status, r.reason, r.getheaders(), b)
            audit(method, path, resp)
            return resp
        except (OSError, http.client.HTTPException) as e:
            raise Fail("%s %s: no HTTP response (%r)" % (method, path, e))
        finally:
            if own:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def raw(self, payload, stop_sending_on_reply=True, timeout=TIMEOUT):
        """Sends raw bytes and parses one response.  Sending stops as soon as
        a reply arrives, so a server that answers a too-large body early
        (and may then close) is read before any reset."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            s.setblocking(False)
            pos = 0
            deadline = time.monotonic() + timeout
            while pos < len(payload):
                if time.monotonic() > deadline:
                    raise Fail("raw request: timed out sending")
                r, w, _ = select.select([s], [s], [], 1.0)
                if r and stop_sending_on_reply:
                    break
                if w:
                    try:
                        pos += s.send(payload[pos:pos + 65536])
                    except BlockingIOError:
                        pass
                    except OSError:
                        break  # peer closed; its reply may be waiting
            s.setblocking(True)
            s.settimeout(timeout)
            resp = http.client.HTTPResponse(s)
            try:
                resp.begin()
                b = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise Fail("raw request: no HTTP response (%r)" % (e,))
            out = Resp(resp.status, resp.reason, resp.getheaders(), b)
            audit("RAW", payload[:60].decode("latin-1").split("\r\n")[0], out)
            return out
        finally:
            s.close()


def raw_request(method, path, headers, body=b""):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % HOST]
    lines += ["%s: %s" % (k, v) for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------
# metrics

def metrics_text(port):
    """GET /metrics of the server on port, on a connection of its own (it is
    text, not JSON)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode("utf-8")
        check(r.status == 200, "GET /metrics: status %d" % r.status)
        ctype = r.getheader("Content-Type") or ""
        check(ctype.startswith("text/plain"), "GET /metrics: Content-Type %r" % ctype)
        return body
    finally:
        conn.close()


def metric_series(body, name, labels=""):
    """The value of one series of a /metrics body, or None."""
    key = "%s{%s}" % (name, labels) if labels else name
    for line in body.splitlines():
        if line.startswith(key + " "):
            return float(line.split(" ")[-1])
    return None


# --------------------------------------------------------------------------
# payments

def new_id():
    return str(uuid.uuid4())


def payment(org=None, pid=None, **attrs):
    """A minimal valid create body; attrs override or add attributes."""
    a = {"amount": "10.00", "currency": "EUR"}
    a.update(attrs)
    d = {"type": "payments", "organisation_id": org or new_id(), "attributes": a}
    if pid is not None:
        d["id"] = pid
    return {"data": d}


def strip_nulls(v):
    """What the server stores: object members that are null removed,
    recursively (array items kept)."""
    if isinstance(v, dict):
        return {k: strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [strip_nulls(x) for x in v]
    return v


def merge_patch(target, patch):
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def qs(params):
    """A query string with brackets and commas percent-encoded, spaces as %20."""
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def link_path(link, prefix=""):
    """A links value as a request target: strips the public URL prefix."""
    check(isinstance(link, str), "link is not a string: %r" % (link,))
    if prefix:
        check(link.startswith(prefix), "link %r does not start with %r" % (link, prefix))
        link = link[len(prefix):]
    check(link.startswith("/v1/"), "link %r is not a path under /v1/" % (link,))
    return link


# --------------------------------------------------------------------------
# response assertions

def expect_status(r, status, what):
    if r.status != status:
        raise Fail("%s: expected %d, got %s" % (what, status, r.describe()))


def is_json_ctype(r):
    ct = r.header("Content-Type") or ""
    return ct.split(";")[0].strip().lower() == "application/json"


def expect_error(r, status, code, what, codes=None):
    """status, JSON body with error_code (code, or one of codes) and a
    non-empty error_message, Content-Type application/json."""
    expect_status(r, status, what)
    check(is_json_ctype(r), "%s: error Content-Type is %r, expected application/json"
          % (what, r.header("Content-Type")))
    j = r.json
    check(isinstance(j, dict), "%s: error body is not a JSON object: %r" % (what, r.body[:200]))
    got = j.get("error_code")
    allowed = codes or [code]
    check(got in allowed, "%s: error_code %r, expected %s" % (what, got, " or ".join(allowed)))
    msg = j.get("error_message")
    check(isinstance(msg, str) and msg.strip(), "%s: error_message missing or empty: %s"
          % (what, short(j)))
    return j


def error_fields(r):
    j = r.json or {}
    errs = j.get("errors")
    check(isinstance(errs, list) and errs, "validation error without an errors array: %s"
          % short(j))
    fields = []
    for e in errs:
        check(isinstance(e, dict) and isinstance(e.get("field"), str)
              and isinstance(e.get("message"), str),
              "errors item is not {field, message}: %s" % short(e))
        fields.append(e["field"])
    return fields


def expect_validation(r, fields, what, exact=True):
    """400 validation_failed naming exactly (or at least) these fields."""
    expect_error(r, 400, "validation_failed", what)
    got = set(error_fields(r))
    want = set(fields)
    if exact:
        check(got == want, "%s: errors name %s, expected exactly %s" % (what, sorted(got), sorted(want)))
    else:
        check(want <= got, "%s: errors name %s, expected at least %s" % (what, sorted(got), sorted(want)))


def create(c, body=None, what="create"):
    r = c.post("/v1/payments", body if body is not None else payment())
    expect_status(r, 201, what)
    d = r.data
    check(isinstance(d, dict) and isinstance(d.get("id"), str), "%s: no data.id in %s" % (what, r.describe()))
    return d
