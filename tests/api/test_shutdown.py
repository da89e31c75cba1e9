"""Shutdown while clients hang up on writes still parked in the store."""

import json
import signal
import socket
import threading
import time

from harness import HOST, Server, check, expect_status, new_id, payment, test


@test
def sigterm_after_clients_hang_up_mid_write(t):
    d = t.scratch("hangup")
    srv = Server(t.binary, d, name="hangup")
    srv.start()
    try:
        org = new_id()
        body = json.dumps(payment(org=org)).encode()
        req = (b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

        def hang_up():
            for _ in range(40):
                s = socket.create_connection((HOST, srv.port), timeout=5)
                s.sendall(req)
                s.close()  # gone before the store answers

        threads = [threading.Thread(target=hang_up) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        time.sleep(0.5)
        expect_status(srv.client().get("/healthz"), 200, "healthz after the hang-ups")
        started = time.monotonic()
        rc = srv.stop()
        check(rc == 0, "exit status %r after SIGTERM" % rc)
        check(time.monotonic() - started < 8,
              "shutdown took %.1fs: parked writes of gone clients held it"
              % (time.monotonic() - started))
    finally:
        srv.ensure_dead()


@test
def draining_answers_kept_alive_connections_503(t):
    """While it stops (waiting for a request still in flight), the server
    starts no new request: one on a kept-alive connection is answered 503
    shutting_down and the connection closed."""
    d = t.scratch("draining")
    srv = Server(t.binary, d, name="draining")
    srv.start()
    try:
        kept = socket.create_connection((HOST, srv.port), timeout=5)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        check(b"200 OK" in kept.recv(4096), "healthz on the kept-alive connection")
        # A request begun and not finished: its body is still to come.
        slow = socket.create_connection((HOST, srv.port), timeout=5)
        slow.sendall(b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"data\":")
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        check(srv.proc.poll() is None, "the server stopped without waiting for the request")
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            part = kept.recv(4096)
            if not part:
                break
            got += part
        head = got.split(b"\r\n\r\n", 1)[0].lower()
        check(got.startswith(b"HTTP/1.1 503"), "answer while stopping: %r" % got[:200])
        check(b"connection: close" in head, "no Connection: close while stopping: %r" % head)
        check(b'"error_code":"shutting_down"' in got, "error code while stopping: %r" % got[-200:])
        slow.close()
        kept.close()
        rc = srv.stop()
        check(rc == 0, "exit status %r after SIGTERM" % rc)
    finally:
        srv.ensure_dead()
