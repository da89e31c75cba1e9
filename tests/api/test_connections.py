"""--max-connections: past it, new connections are refused at once, never
queued; once one closes, new ones are served again."""

import socket
import time

from harness import HOST, Server, check, expect_status, test

LIMIT = 4


def _refused_quickly(port):
    """Whether a new connection is closed (or refused) within a second."""
    try:
        s = socket.create_connection((HOST, port), timeout=2)
    except OSError:
        return True
    try:
        s.settimeout(1.0)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False  # queued: the failure this test exists for
    finally:
        s.close()


def _served(port):
    """A connection that was served /healthz.  The server counts a closed
    connection out only once it has read the close, so one the harness
    just closed (its readiness probe) may still hold a slot for a moment:
    a connection refused then is tried again, for at most 2 s."""
    deadline = time.monotonic() + 2
    while True:
        s = socket.create_connection((HOST, port), timeout=5)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = s.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        if b"200 OK" in got:
            return s
        s.close()
        check(got == b"" and time.monotonic() < deadline,
              "a connection within the limit was not served: %r" % got[:100])
        time.sleep(0.05)


@test
def max_connections_refuses_beyond_the_limit(t):
    d = t.scratch("maxconn")
    srv = Server(t.binary, d, name="maxconn", args=["--max-connections", str(LIMIT)])
    srv.start()
    held = []
    try:
        for _ in range(LIMIT):
            held.append(_served(srv.port))  # kept open: keep-alive
        started = time.monotonic()
        check(_refused_quickly(srv.port), "a connection past the limit was not refused at once")
        check(time.monotonic() - started < 2, "refusing took %.1fs" % (time.monotonic() - started))
        held.pop().close()
        deadline = time.monotonic() + 5
        ok = False
        while not ok and time.monotonic() < deadline:
            try:
                ok = srv.client().get("/healthz").status == 200
            except Exception:  # noqa: BLE001 - refused while the slot frees
                time.sleep(0.1)
        check(ok, "no connection was served after one of the limit closed")
    finally:
        for s in held:
            s.close()
        srv.stop()
