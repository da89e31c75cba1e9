#!/usr/bin/env python3
"""feed_consumer.py: follows paymentd's change feed (GET /v1/events) the way a
consumer does, and prints how fast it read.

    feed_consumer.py URL [--after N] [--page-size N] [--wait S] [--seconds S]
                         [--until-caught-up] [--stop-file PATH]

It starts at page[after]=N and follows links.next, one request at a time on
one keep-alive connection.  With --until-caught-up it stops at the first
page shorter than the page size (the end of the feed); else it keeps
following (with wait=S on an empty tail) until --seconds pass or the stop
file appears, then reads on until it is caught up, and reports the lag: how
long after the stop it took to reach the end.  The last line printed is

    FEED events=E seconds=T pages=P lag_s=L errors=X after=N

where N is the position the consumer stopped at (its cursor).

Events are counted from the page bytes (each event is one "type":"events"
member at the top of its object) rather than by parsing the JSON, so that
the consumer's own speed does not bound the figure."""
import argparse
import http.client
import os
import re
import sys
import time
import urllib.parse

NEXT = re.compile(rb'"next":"([^"]*)"')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--after", type=int, default=0)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--wait", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--until-caught-up", action="store_true")
    ap.add_argument("--stop-file")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    path = "/v1/events?page[after]=%d&page[size]=%d&wait=%d" % (a.after, a.page_size, a.wait)
    events = pages = errors = 0
    start = time.monotonic()
    stopped_at = None
    while True:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            errors += 1
            sys.stderr.write("feed: %d %s\n" % (r.status, body[:200]))
            if errors > 10:
                break
            time.sleep(0.1)
            continue
        n = body.count(b'"type":"events"')
        events += n
        pages += 1
        m = NEXT.search(body, max(0, len(body) - 1024))
        if not m:
            sys.stderr.write("feed: a page without links.next\n")
            errors += 1
            break
        path = m.group(1).decode()
        if not path.startswith("/"):
            path = urllib.parse.urlsplit(path)._replace(scheme="", netloc="").geturl()
        now = time.monotonic()
        if stopped_at is None and not a.until_caught_up:
            if now - start >= a.seconds or (a.stop_file and os.path.exists(a.stop_file)):
                stopped_at = now
        caught_up = n < a.page_size
        if caught_up and (a.until_caught_up or stopped_at is not None):
            break
    end = time.monotonic()
    lag = (end - stopped_at) if stopped_at is not None else 0.0
    m = re.search(r"page\[after\]=(\d+)", urllib.parse.unquote(path))
    print("FEED events=%d seconds=%.3f pages=%d lag_s=%.3f errors=%d after=%s"
          % (events, end - start, pages, lag, errors, m.group(1) if m else "0"))


if __name__ == "__main__":
    main()
