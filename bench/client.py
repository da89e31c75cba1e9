#!/usr/bin/python3
"""client.py URL WORKLOAD N [CONNECTIONS]: exactly N requests of one workload, spread over
CONNECTIONS keep-alive connections (default 4), each answer checked; exits non-zero on any
unexpected status.  For bench/instructions.sh, where a fixed amount of work matters more than
speed.  Ids and bodies are those of bench/common.lua: payment i is
"hhhhhhhh-b001-4000-8000-iiiiiiiiiiii" of organisation i % 100, the body is the seed sample with
payment_purpose_coded "X".

  preload  POST payments 0..N-1                          201
  get      GET a random payment of BENCH_PAYMENTS        200
  list     GET the first 100 of a random organisation    200
  post     POST a new payment (ids kind c0xx, RUN varies them between runs)   201
  put      PUT payments 0..N-1 with If-Match "0" (each once, on a fresh copy) 200
  patch    PATCH payments 0..N-1 with If-Match "0": amount and reference     200
"""
import json
import os
import random
import socket
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYMENTS = int(os.environ.get("BENCH_PAYMENTS", "10000"))
RUN = int(os.environ.get("RUN", "0"))


def uuid(kind, i):
    return "%08x-%04x-4000-8000-%012x" % ((i * 2654435761) % 4294967296, kind, i)


def org(k):
    return "0e0e0e0e-0000-4000-8000-%012x" % k


with open(os.path.join(ROOT, "spec", "seed-payment.json"), encoding="utf-8") as f:
    SEED = json.load(f)["data"]
SEED["attributes"]["payment_purpose_coded"] = "X"


def body(pid, o, version=True):
    d = dict(SEED, id=pid, organisation_id=o)
    if not version:
        d.pop("version", None)
    return json.dumps({"data": d}, separators=(",", ":")).encode()


def with_body(head, b):
    return (head + "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(b)).encode() + b


def request(work, conn, conns, i, rnd):
    if work == "get":
        return b"GET /v1/payments/%s HTTP/1.1\r\nHost: b\r\n\r\n" % uuid(0xb001, rnd.randrange(PAYMENTS)).encode(), 200
    if work == "list":
        return (b"GET /v1/payments?filter[organisation_id]=%s&page[size]=100 HTTP/1.1\r\nHost: b\r\n\r\n"
                % org(rnd.randrange(100)).encode()), 200
    k = conn + i * conns
    if work == "preload":
        return with_body("POST /v1/payments HTTP/1.1\r\nHost: b\r\n", body(uuid(0xb001, k), org(k % 100))), 201
    if work == "post":
        pid = uuid(0xc000 + (RUN % 16) * 16 + conn % 16, k)
        return with_body("POST /v1/payments HTTP/1.1\r\nHost: b\r\n", body(pid, org(k % 100))), 201
    if work == "put":
        pid = uuid(0xb001, k)
        return with_body("PUT /v1/payments/%s HTTP/1.1\r\nHost: b\r\nIf-Match: \"0\"\r\n" % pid,
                         body(pid, org(k % 100), version=False)), 200
    if work == "patch":
        pid = uuid(0xb001, k)
        b = json.dumps({"data": {"attributes": {"amount": "200.00", "reference": "patched %d" % k}}},
                       separators=(",", ":")).encode()
        return with_body("PATCH /v1/payments/%s HTTP/1.1\r\nHost: b\r\nIf-Match: \"0\"\r\n" % pid, b), 200
    sys.exit("unknown workload %s" % work)


def read_answer(sock, buf):
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        d = sock.recv(max(65536, length - len(rest)))
        if not d:
            raise ConnectionError("closed")
        rest += d
    return status, rest[length:]


def main():
    url, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    bad = []

    def worker(conn, count):
        rnd = random.Random(conn * 1000003 + RUN)
        sock = socket.create_connection((host, int(port)))
        buf = b""
        for i in range(count):
            req, want = request(work, conn, conns, i, rnd)
            sock.sendall(req)
            status, buf = read_answer(sock, buf)
            if status != want:
                bad.append(status)
        sock.close()

    threads = [threading.Thread(target=worker, args=(c, n // conns + (c < n % conns)))
               for c in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bad:
        sys.exit("%s: %d of %d answers unexpected, e.g. %s" % (work, len(bad), n, bad[:5]))


if __name__ == "__main__":
    main()
