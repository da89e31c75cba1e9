"""Shutdown while clients hang up on writes still parked in the store."""

import json
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
