"""Asynchronous writes end to end, with real processes only: nats-server
(one, or a 3-node cluster), one HTTP node and `paymentd worker`s on one
store: the suite's (harness.default_store): a SQLite file, or with run.py
--mongo a new MongoDB database, or with run.py --pg a new PostgreSQL schema.  Many
organisations' creates and sequential PATCHes are published with Prefer:
respond-async from several client threads; every operation must end
succeeded, each organisation's operations applied in publish order (each
PATCH names the version the previous one makes), none lost and none
applied twice; also when a worker is killed with -9 and when a cluster
node is.

An asynchronous PATCH is checked against the payment as it is when it
arrives (404 while its create is still pending), so each stream publishes
its creates, waits for them, then publishes all the PATCHes without
waiting for any to be applied."""

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time

from harness import (HOST, MONGO, TIMEOUT, Fail, Resp, Server, audit, check, default_store, eq,
                     new_id, payment, test)

NATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "broker", "nats.sh")
ASYNC = {"Prefer": "respond-async"}
SETTLE_S = 180.0      # bound on the wait for a stream's operations to be applied
CLIENT_THREADS = 6    # each owns whole organisations


def _npay(n):
    """Payments per organisation: n, or a third of it on MongoDB, whose test
    double (one Python thread behind every command) is several times slower
    than the embedded store; the organisations, workers and orderings stay."""
    return max(2, n // 3) if MONGO["uri"] else n


def _nats(*args):
    p = subprocess.run([NATS] + list(args), capture_output=True, timeout=60)
    check(p.returncode == 0, "nats.sh %s: %s" % (" ".join(args),
                                                 p.stderr.decode("utf-8", "replace")[-300:]))
    out = p.stdout.decode().strip()
    return out.splitlines()[-1] if out else ""


class Node(Server):
    """A paymentd process of the asynchronous path: the HTTP node, or a
    worker (no --listen, `worker` first, never answering /healthz)."""

    def __init__(self, binary, workdir, name, store, urls, extra=(), worker=False):
        self.worker = worker
        args = ["--broker", urls] + list(extra)
        if worker:
            args = ["worker", "--store", store, "--worker-id", name] + args
        Server.__init__(self, binary, workdir, name=name, store=store, args=args,
                        listen_flag=not worker, store_flag=not worker)

    def start(self, wait=True):
        Server.start(self, wait=wait and not self.worker)
        return self


class Cluster:
    """The processes of one test: brokers, the HTTP node, the workers.
    stop() ends them all, whatever happened, and reports what went wrong."""

    def __init__(self, t, name, nodes=1, workers=3, replicas=1, partitions=None):
        self.t = t
        self.dir = t.scratch(name)
        self.nats_dir = os.path.join(self.dir, "nats")
        self.clustered = nodes == 3
        self.store = default_store(self.dir, "store")
        self.extra = []
        if replicas != 1:
            self.extra += ["--broker-replicas", str(replicas)]
        if partitions:
            self.extra += ["--partitions", str(partitions)]
        self.nworkers = workers
        self.http = None
        self.workers = []
        self.urls = None

    def start(self):
        if self.clustered:
            self.urls = _nats("cluster-start", self.nats_dir)
        else:
            self.urls = "nats://%s:%s" % (HOST, _nats("start", self.nats_dir))
        self.http = Node(self.t.binary, self.dir, "http", self.store, self.urls, self.extra)
        self.http.start()
        # Concurrent first opens of a fresh SQLite file can fail: the HTTP
        # node has created it; the workers come a moment later.
        time.sleep(1.0)
        for i in range(self.nworkers):
            w = Node(self.t.binary, self.dir, "w%d" % (i + 1), self.store, self.urls, self.extra,
                     worker=True)
            w.start()
            self.workers.append(w)
        deadline = time.monotonic() + 15.0
        for w in self.workers:
            while not any(r.get("msg", "").startswith("worker %s joined" % w.name)
                          for r in w.log_records()):
                check(w.running(), "worker %s exited at start (status %s): %s"
                      % (w.name, w.proc.returncode, w.stderr_tail()))
                check(time.monotonic() < deadline, "worker %s did not join within 15s: %s"
                      % (w.name, w.stderr_tail()))
                time.sleep(0.05)
        return self

    def port(self):
        return self.http.port

    def stop(self, killed=()):
        """SIGTERM to every process still meant to run: exit status 0 and no
        sanitizer report from each; then the brokers."""
        problems = []
        procs = self.workers + ([self.http] if self.http else [])
        try:
            for p in procs:
                if p in killed or p.proc is None:
                    continue
                try:
                    rc = p.stop(signal.SIGTERM)
                    if rc != 0:
                        problems.append("%s: exit status %s after SIGTERM: %s"
                                        % (p.name, rc, p.stderr_tail()))
                except Fail as e:
                    problems.append(str(e))
            for p in procs:
                rep = p.sanitizer_report()
                if rep:
                    problems.append("%s: sanitizer report: %s" % (p.name, rep))
        finally:
            for p in procs:
                p.ensure_dead()
            subprocess.run([NATS, "cluster-stop" if self.clustered else "stop", self.nats_dir],
                           capture_output=True, timeout=60)
        check(not problems, "; ".join(problems))


# --------------------------------------------------------------------------
# the client side: keep-alive connections, one per thread

class Conn:
    def __init__(self, port):
        self.port = port
        self.c = None

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON body), the response audited like the
        harness's; reconnects once on a broken keep-alive connection (writes
        carry an Idempotency-Key, so a retry is the same operation)."""
        st, j, _ = self.request_full(method, path, body, headers)
        return st, j

    def request_full(self, method, path, body=None, headers=None):
        """As request, with the response headers (lower-case names) too."""
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(HOST, self.port, timeout=TIMEOUT)
            try:
                self.c.request(method, path, body=data, headers=h)
                r = self.c.getresponse()
                b = r.read()
                audit(method, path, Resp(r.status, r.reason, r.getheaders(), b))
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                try:
                    j = json.loads(b) if b else None
                except ValueError:
                    j = None
                return r.status, j, {k.lower(): v for k, v in r.getheaders()}
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt:
                    raise Fail("%s %s: no HTTP response (%r)" % (method, path, e))
        return None

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def _write(conn, method, path, body, key, stats, retry_s=60.0):
    """Publishes one asynchronous write and returns its operation id.  503
    (broker failover) is retried with the same Idempotency-Key, hence the
    same operation, as is 409 idempotency_key_in_use (a request the client
    gave up on, reconnecting, is still being published: the retry is
    answered from it once it is done); anything else than 202 fails the
    test.  A failover usually answers 503 for a few seconds; on a loaded
    machine a stream leader's election has taken over 20 s (a CI run), so a
    client retries for a minute, as a real one would keep retrying."""
    deadline = time.monotonic() + retry_s
    while True:
        st, j = conn.request(method, path, body, dict(ASYNC, **{"Idempotency-Key": key}))
        if st == 202:
            return j["data"]["id"]
        code = (j or {}).get("error_code")
        if ((st == 503 and code == "broker_unavailable") or
                (st == 409 and code == "idempotency_key_in_use")) and time.monotonic() < deadline:
            stats["503"] += 1
            time.sleep(0.1)
            continue
        raise Fail("%s %s: expected 202, got %d %s" % (method, path, st, json.dumps(j)[:300]))


def _parallel(port, items, fn, threads=CLIENT_THREADS):
    """fn(conn, item) over items split among threads; the first failure is
    raised."""
    errors = []
    chunks = [items[i::threads] for i in range(threads)]

    def run(chunk):
        conn = Conn(port)
        try:
            for it in chunk:
                if errors:
                    return
                fn(conn, it)
        except Exception as e:  # handed to the main thread
            errors.append(e)
        finally:
            conn.close()

    ts = [threading.Thread(target=run, args=(ch,), daemon=True) for ch in chunks if ch]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    if errors:
        raise errors[0]


class Stream:
    """norgs organisations with npay payments each (client-chosen ids),
    each payment then patched npatch times: PATCH k is based on version
    k-1 and sets reference step-k.  ops maps operation id -> (payment id,
    the version it must produce)."""

    def __init__(self, norgs, npay, npatch):
        self.orgs = [new_id() for _ in range(norgs)]
        self.pays = {o: [new_id() for _ in range(npay)] for o in self.orgs}
        self.npatch = npatch
        self.ops = {}
        self.lock = threading.Lock()
        self.stats = {"503": 0}
        self.tag = new_id()[:8]

    def total(self):
        return sum(len(p) for p in self.pays.values()) * (1 + self.npatch)

    def _record(self, op, pid, version):
        with self.lock:
            check(op not in self.ops, "operation id %s handed out twice" % op)
            self.ops[op] = (pid, version)

    def creates(self, port):
        def org_creates(conn, org):
            for pid in self.pays[org]:
                body = payment(org=org, pid=pid, reference="step-0")
                op = _write(conn, "POST", "/v1/payments", body, "c-%s-%s" % (self.tag, pid),
                            self.stats)
                self._record(op, pid, 0)
        _parallel(port, self.orgs, org_creates)

    def patches(self, port, progress=None):
        """Each thread sends its organisations' PATCHes in order, without
        waiting for any to be applied; progress(n) after each."""
        count = [0]

        def org_patches(conn, org):
            for k in range(1, self.npatch + 1):
                for pid in self.pays[org]:
                    body = {"data": {"version": k - 1, "attributes": {"reference": "step-%d" % k}}}
                    op = _write(conn, "PATCH", "/v1/payments/%s" % pid, body,
                                "p-%s-%s-%d" % (self.tag, pid, k), self.stats)
                    self._record(op, pid, k)
                    if progress:
                        with self.lock:
                            count[0] += 1
                            n = count[0]
                        progress(n)
        _parallel(port, self.orgs, org_patches)

    def await_ops(self, port, ops, what):
        """Polls the operations until none is pending (bounded); every one
        must have succeeded with the version it was meant to produce."""
        pending = list(ops)
        results = {}
        lock = threading.Lock()
        deadline = time.monotonic() + SETTLE_S
        while pending:
            still = []

            def poll(conn, op):
                st, j = conn.request("GET", "/v1/operations/%s" % op)
                check(st == 200, "GET /v1/operations/%s: %d %s" % (op, st, json.dumps(j)[:200]))
                with lock:
                    if j["data"]["status"] == "pending":
                        still.append(op)
                    else:
                        results[op] = j["data"]
            _parallel(port, pending, poll, threads=4)
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise Fail("%s: %d of %d operations still pending after %.0fs, e.g. %s"
                               % (what, len(pending), len(ops), SETTLE_S, pending[:3]))
                time.sleep(0.2)
        bad = []
        for op in ops:
            d = results[op]
            pid, version = self.ops[op]
            if d.get("status") != "succeeded" or d.get("version") != version \
                    or d.get("payment_id") != pid:
                bad.append("%s (payment %s, want version %d): %s"
                           % (op, pid, version, json.dumps(d)[:200]))
        check(not bad, "%s: %d of %d operations not succeeded as published, e.g. %s"
              % (what, len(bad), len(ops), " | ".join(bad[:3])))

    def wait_payments(self, port, version, what):
        """Until every organisation lists exactly its payments, all at
        version; bounded."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            lagging = []
            lock = threading.Lock()

            def org_state(conn, org):
                st, j = conn.request("GET", "/v1/payments?filter%%5Borganisation_id%%5D=%s"
                                     "&page%%5Bsize%%5D=100" % org)
                check(st == 200, "list of %s: %d" % (org, st))
                got = {p["id"]: p for p in j["data"]}
                if len(got) != len(self.pays[org]) or any(
                        p["version"] != version for p in got.values()):
                    with lock:
                        lagging.append((org, got))
            _parallel(port, self.orgs, org_state, threads=4)
            if not lagging:
                return
            if time.monotonic() > deadline:
                org, got = lagging[0]
                raise Fail("%s: %d organisations not at version %d after %.0fs; e.g. %s: %s"
                           % (what, len(lagging), version, SETTLE_S, org,
                              sorted((p["version"], p["id"]) for p in got.values())[:5]))
            time.sleep(0.3)

    def check_final(self, port, what):
        """Every organisation holds exactly its payments (no duplicates),
        each at version npatch with reference step-npatch: each PATCH
        applied once, in order."""
        bad = []
        lock = threading.Lock()

        def org_final(conn, org):
            st, j = conn.request("GET", "/v1/payments?filter%%5Borganisation_id%%5D=%s"
                                 "&page%%5Bsize%%5D=100" % org)
            check(st == 200, "list of %s: %d" % (org, st))
            got = {p["id"]: p for p in j["data"]}
            if sorted(got) != sorted(self.pays[org]):
                with lock:
                    bad.append("%s holds %d payments, expected %d" % (org, len(got),
                                                                      len(self.pays[org])))
                return
            for p in got.values():
                ref = p["attributes"].get("reference")
                if p["version"] != self.npatch or ref != "step-%d" % self.npatch:
                    with lock:
                        bad.append("%s: version %s reference %s" % (p["id"], p["version"], ref))
        _parallel(port, self.orgs, org_final, threads=4)
        check(not bad, "%s: %d wrong, e.g. %s" % (what, len(bad), " | ".join(bad[:3])))

    def run(self, port, progress=None, what="stream"):
        """Creates, then PATCHes, then the checks; returns timings."""
        t0 = time.monotonic()
        self.creates(port)
        creates = [op for op, (_, v) in self.ops.items() if v == 0]
        self.wait_payments(port, 0, what + " (creates)")
        t1 = time.monotonic()
        self.patches(port, progress)
        t2 = time.monotonic()
        self.wait_payments(port, self.npatch, what)
        t3 = time.monotonic()
        eq(len(self.ops), self.total(), "%s: operations answered 202" % what)
        self.await_ops(port, list(self.ops), what)
        self.check_final(port, what)
        check(len(creates) == sum(len(p) for p in self.pays.values()), "creates recorded")
        return "%d ops over %d orgs: creates %.1fs, patches sent %.1fs, applied +%.1fs, " \
               "checked +%.1fs (503 retried: %d)" % (self.total(), len(self.orgs), t1 - t0,
                                                     t2 - t1, t3 - t2, time.monotonic() - t3,
                                                     self.stats["503"])


def _partitions_held(srv):
    """Partitions srv's log says it acquired and never released or lost."""
    held = set()
    for rec in srv.log_records():
        m = re.match(r"partition (\d+): (acquired|released|lease lost|fenced off)", rec.get("msg", ""))
        if m:
            (held.add if m.group(2) == "acquired" else held.discard)(int(m.group(1)))
    return held


def _wait_balanced(workers, timeout=15.0):
    """Until every worker holds a partition: a newly joined worker gets
    its share only once the others hand partitions back (a few seconds)."""
    deadline = time.monotonic() + timeout
    while not all(_partitions_held(w) for w in workers):
        check(time.monotonic() < deadline, "partitions not shared among the workers after %.0fs: %s"
              % (timeout, [(w.name, sorted(_partitions_held(w))) for w in workers]))
        time.sleep(0.1)


# --------------------------------------------------------------------------
# tests

@test
def ordered_exactly_once_three_workers(t):
    cl = Cluster(t, "e2e_order")
    try:
        cl.start()
        s = Stream(norgs=100, npay=_npay(10), npatch=9)
        print("     broker_e2e.ordered: %s" % s.run(cl.port(), what="three workers"))
    finally:
        cl.stop()


@test
def kill9_worker_partitions_move(t):
    cl = Cluster(t, "e2e_kill9")
    victim = []
    try:
        cl.start()
        _wait_balanced(cl.workers)
        npay = _npay(5)
        s = Stream(norgs=40, npay=npay, npatch=9)
        half = len(s.orgs) * npay * 9 // 3

        def progress(n):
            if n == half and not victim:
                w = cl.workers[0]
                victim.append((w, _partitions_held(w), time.monotonic()))
                w.kill9()
        info = s.run(cl.port(), progress, what="worker killed")
        check(victim, "the worker was never killed")
        w, held, _ = victim[0]
        check(held, "%s held no partition before its kill" % w.name)
        moved = set()
        for other in cl.workers[1:]:
            moved |= _partitions_held(other)
        check(held <= moved, "partitions %s of the killed worker not taken over (survivors hold %s)"
              % (sorted(held - moved), sorted(moved)))
        print("     broker_e2e.kill9: %s; partitions %s moved" % (info, sorted(held)))
    finally:
        cl.stop(killed=[v[0] for v in victim])


@test
def cluster_node_kill(t):
    cl = Cluster(t, "e2e_cluster", nodes=3, workers=2, replicas=3)
    killed = []
    try:
        cl.start()
        s = Stream(norgs=20, npay=5, npatch=6)
        leader = _nats("stream-leader", cl.nats_dir, "PAYMENTS")

        def progress(n):
            if n == 150 and not killed:
                _nats("kill", cl.nats_dir, leader)
                killed.append(time.monotonic())
        info = s.run(cl.port(), progress, what="cluster node killed")
        check(killed, "the stream leader was never killed")
        print("     broker_e2e.cluster: node %s (stream leader) killed; %s" % (leader, info))
    finally:
        cl.stop()


def _refused_at_start(node, what, recorded=4):
    """node must exit non-zero at once, with one line on stderr saying that
    the stream has `recorded` partitions and it was given another count."""
    node.start(wait=False)
    try:
        rc = node.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        node.ensure_dead()
        raise Fail("%s: still running 60s after its start: %s" % (what, node.stderr_tail()))
    lines = [l for l in node.stderr_text().splitlines() if l.strip()]
    check(rc not in (0, None), "%s: exit status %s" % (what, rc))
    check(len(lines) == 1, "%s: expected one line on stderr, got %r" % (what, lines[:5]))
    check(("has %d partitions, not --partitions" % recorded) in lines[-1],
          "%s: the line does not name the counts: %r" % (what, lines[-1]))


@test
def partition_count_agreed(t):
    """The first process records --partitions 4 on the stream; a worker or
    an HTTP node started with another count refuses to start, and the ones
    with 4 still serve.  Then the count is changed as README says (the
    stream drained, everything stopped, one process started with
    --repartition true): processes with the new count serve, the old count
    is refused."""
    cl = Cluster(t, "e2e_parts", workers=1, partitions=4)
    try:
        cl.start()
        _refused_at_start(Node(t.binary, cl.dir, "w8", cl.store, cl.urls,
                               ["--partitions", "8"], worker=True), "worker --partitions 8")
        _refused_at_start(Node(t.binary, cl.dir, "w16", cl.store, cl.urls, worker=True),
                          "worker with the default count")
        _refused_at_start(Node(t.binary, cl.dir, "http8", cl.store, cl.urls,
                               ["--partitions", "8"]), "HTTP node --partitions 8")
        s = Stream(norgs=8, npay=2, npatch=1)
        print("     broker_e2e.partitions: %s" % s.run(cl.port(), what="4 partitions"))
        for p in cl.workers + [cl.http]:
            eq(p.stop(signal.SIGTERM), 0, "%s: exit status after SIGTERM" % p.name)
        w = Node(t.binary, cl.dir, "w8r", cl.store, cl.urls,
                 ["--partitions", "8", "--repartition", "true"], worker=True)
        cl.workers = [w.start()]
        deadline = time.monotonic() + 15.0
        while not any(r.get("msg", "").startswith("worker w8r joined") for r in w.log_records()):
            check(w.running(), "w8r exited at start: %s" % w.stderr_tail())
            check(time.monotonic() < deadline, "w8r did not join within 15s")
            time.sleep(0.05)
        cl.http = Node(t.binary, cl.dir, "http8", cl.store, cl.urls, ["--partitions", "8"]).start()
        _refused_at_start(Node(t.binary, cl.dir, "w4", cl.store, cl.urls,
                               ["--partitions", "4"], worker=True),
                          "worker --partitions 4 after the change", recorded=8)
        s = Stream(norgs=8, npay=2, npatch=1)
        print("     broker_e2e.partitions: %s" % s.run(cl.port(), what="8 partitions"))
    finally:
        cl.stop()


def _nats_publish(url, subject, payload):
    """Publishes payload on subject with the NATS protocol itself (a stream
    stores a plain publish on its subjects): no client library needed."""
    host, port = url[len("nats://"):].split(",")[0].rsplit(":", 1)
    import socket
    with socket.create_connection((host, int(port)), timeout=10) as sk:
        f = sk.makefile("rb")
        check(f.readline().startswith(b"INFO "), "nats: no INFO line")
        sk.sendall(b'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n'
                   % (subject.encode(), len(payload), payload))
        line = f.readline()
        check(line.startswith(b"PONG"), "nats: expected PONG, got %r" % line)


def _dead_letters(port):
    """paymentd_broker_dead_letters from the HTTP node's /metrics, or None."""
    c = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    m = re.search(r"^paymentd_broker_dead_letters (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


@test
def dead_letter_counted(t):
    """A message that is no operation, at the head of every partition, is
    copied to the dead letters by the worker, which moves on; the HTTP
    node's /metrics counts them, and operations published after them are
    applied."""
    cl = Cluster(t, "e2e_dead", workers=1)
    try:
        cl.start()
        deadline = time.monotonic() + 30
        while _dead_letters(cl.port()) is None:
            check(time.monotonic() < deadline, "no paymentd_broker_dead_letters in /metrics")
            time.sleep(0.2)
        eq(_dead_letters(cl.port()), 0, "dead letters before any")
        for p in range(16):
            _nats_publish(cl.urls, "payments.cmd.%d" % p, b"not an operation")
        deadline = time.monotonic() + 30
        while _dead_letters(cl.port()) != 16:
            check(time.monotonic() < deadline, "dead letters still %s 30s after the publish"
                  % _dead_letters(cl.port()))
            time.sleep(0.2)
        s = Stream(norgs=16, npay=1, npatch=1)
        print("     broker_e2e.dead_letter: %s" % s.run(cl.port(), what="after a dead letter"))
    finally:
        cl.stop()


@test
def duplicate_and_failed(t):
    cl = Cluster(t, "e2e_dup", workers=1)
    try:
        cl.start()
        s = Stream(norgs=0, npay=0, npatch=0)
        conn = Conn(cl.port())
        try:
            org, pid = new_id(), new_id()
            body = payment(org=org, pid=pid, reference="once")
            key = "dup-" + new_id()
            op1 = _write(conn, "POST", "/v1/payments", body, key, s.stats)
            op2 = _write(conn, "POST", "/v1/payments", body, key, s.stats)
            eq(op2, op1, "operation id of the same create published twice")
            s.ops[op1] = (pid, 0)
            s.await_ops(cl.port(), [op1], "duplicate create")
            st, j = conn.request("GET", "/v1/payments?filter%%5Borganisation_id%%5D=%s" % org)
            eq([(p["id"], p["version"]) for p in j["data"]], [(pid, 0)],
               "payments after the same create twice")
            # Once applied, a retry with the key, asynchronous or not, is
            # answered with the first answer: the 202 of the same operation,
            # stored by the worker with the payment as the key's record.
            for hdrs, what in ((dict(ASYNC, **{"Idempotency-Key": key}), "asynchronous"),
                               ({"Idempotency-Key": key}, "synchronous")):
                st, j, h = conn.request_full("POST", "/v1/payments", body, hdrs)
                expect_status_j(st, j, 202, "%s retry of an applied keyed create" % what)
                eq((j["data"]["id"], j["data"]["payment_id"]), (op1, pid),
                   "%s replay of the applied operation" % what)
                eq(h.get("idempotent-replayed"), "true", "%s replay header" % what)
                eq(h.get("location"), "/v1/operations/%s" % op1, "%s replay Location" % what)
            other = payment(org=org, pid=new_id(), reference="other")
            st, j = conn.request("POST", "/v1/payments", other,
                                 dict(ASYNC, **{"Idempotency-Key": key}))
            eq((st, j.get("error_code")), (422, "idempotency_key_reused"),
               "the applied operation's key with another body")
            st, j = conn.request("GET", "/v1/payments?filter%%5Borganisation_id%%5D=%s" % org)
            eq([(p["id"], p["version"]) for p in j["data"]], [(pid, 0)],
               "payments after the retries")
            # A second create of the same id (another key): failed duplicate_id.
            op3 = _write(conn, "POST", "/v1/payments", body, "dup-" + new_id(), s.stats)
            # Two PATCHes based on version 0: the first wins, the second is stale.
            pa = {"data": {"version": 0, "attributes": {"reference": "first"}}}
            pb = {"data": {"version": 0, "attributes": {"reference": "stale"}}}
            op4 = _write(conn, "PATCH", "/v1/payments/%s" % pid, pa, "dup-" + new_id(), s.stats)
            op5 = _write(conn, "PATCH", "/v1/payments/%s" % pid, pb, "dup-" + new_id(), s.stats)
            # A replace naming another organisation is refused at once.
            other = payment(org=new_id(), amount="3.00")
            other["data"]["version"] = 1
            st, j = conn.request("PUT", "/v1/payments/%s" % pid, other, ASYNC)
            eq((st, j.get("error_code")), (400, "validation_failed"),
               "asynchronous PUT with another organisation_id")
            # DELETE of the payment, then a PATCH published while it is still
            # there: failed not_found once the delete is applied.
            # there: failed not_found once the delete is applied (or 404 at
            # once, when the worker was quicker than this client).
            op6 = _write(conn, "DELETE", "/v1/payments/%s?version=1" % pid, None,
                         "dup-" + new_id(), s.stats)
            want = {op3: ("failed", "duplicate_id", None), op4: ("succeeded", None, None),
                    op5: ("failed", "version_conflict", 1), op6: ("succeeded", None, None)}
            st, j = conn.request("PATCH", "/v1/payments/%s" % pid,
                                 {"data": {"version": 2, "attributes": {"reference": "gone"}}},
                                 ASYNC)
            if st == 202:
                want[j["data"]["id"]] = ("failed", "not_found", None)
            else:
                eq((st, j.get("error_code")), (404, "not_found"), "PATCH after a DELETE")
            deadline = time.monotonic() + SETTLE_S
            for op, (status, code, cur) in want.items():
                while True:
                    st, j = conn.request("GET", "/v1/operations/%s" % op)
                    expect_status_j(st, j, 200, "GET operation %s" % op)
                    d = j["data"]
                    if d["status"] != "pending":
                        break
                    check(time.monotonic() < deadline, "operation %s still pending" % op)
                    time.sleep(0.05)
                eq(d["status"], status, "status of operation %s: %s" % (op, json.dumps(d)))
                if code:
                    eq(d.get("error_code"), code, "error_code of %s" % op)
                    check(isinstance(d.get("error_message"), str) and d["error_message"],
                          "operation %s failed without an error_message: %s" % (op, json.dumps(d)))
                if cur is not None:
                    eq(d.get("current_version"), cur, "current_version of %s" % op)
            st, j = conn.request("GET", "/v1/payments/%s" % pid)
            eq(st, 404, "the payment after its asynchronous delete")
        finally:
            conn.close()
    finally:
        cl.stop()


def expect_status_j(st, j, want, what):
    check(st == want, "%s: expected %d, got %d %s" % (what, want, st, json.dumps(j)[:300]))

