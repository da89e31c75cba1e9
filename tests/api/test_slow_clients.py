"""--client-timeout: clients that trickle a request (slowloris) or sit idle
are cut off, while others are served."""

import socket
import time

from harness import HOST, Server, check, expect_status, test

TIMEOUT = 2  # the server's --client-timeout, seconds


def _closed(sock, wait):
    """Whether the server closed sock within wait seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


@test
def slowloris_and_idle_clients_are_cut_off(t):
    d = t.scratch("slowloris")
    srv = Server(t.binary, d, name="slowloris", args=["--client-timeout", str(TIMEOUT)])
    srv.start()
    try:
        idle = socket.create_connection((HOST, srv.port), timeout=5)
        slow = socket.create_connection((HOST, srv.port), timeout=5)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
        started = time.monotonic()
        cut_after = None
        for i in range(len(request)):
            try:
                slow.send(request[i:i + 1])  # one byte every 0.25 s: never idle
            except OSError:
                cut_after = time.monotonic() - started
                break
            if i % 4 == 0:
                expect_status(srv.client().get("/healthz"), 200, "others are served meanwhile")
            if _closed(slow, 0.25):
                cut_after = time.monotonic() - started
                break
            if time.monotonic() - started > 4 * TIMEOUT:
                break
        check(cut_after is not None and cut_after < 3 * TIMEOUT + 1,
              "a client trickling its headers was not cut off (%s s)" % cut_after)
        check(_closed(idle, 2 * TIMEOUT), "an idle connection was not closed")
        # Idle time before a request does not count against that request:
        # idle for most of the timeout, then a request line, then headers
        # sent over more than the rest of the timeout.
        pooled = socket.create_connection((HOST, srv.port), timeout=5)
        pooled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        check(b"200 OK" in pooled.recv(4096), "first request on a pooled connection")
        time.sleep(TIMEOUT * 0.8)
        pooled.sendall(b"GET /healthz HTTP/1.1\r\n")
        headers = b"Host: x\r\nX-Slow: " + b"b" * 20 + b"\r\n\r\n"
        for i in range(len(headers)):
            pooled.send(headers[i:i + 1])
            time.sleep(TIMEOUT * 0.6 / len(headers))
        pooled.settimeout(3)
        check(b"200 OK" in pooled.recv(4096),
              "a request sent slowly after idling was cut: idle time counted against it")
        pooled.close()
        # A client that sends its request at once is served, on a new connection.
        expect_status(srv.client().get("/healthz"), 200, "after the cut-offs")
        slow.close()
        idle.close()
    finally:
        srv.stop()
