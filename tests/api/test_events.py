"""GET /v1/events, the change feed: every write's event in commit order,
filters, paging by position with a next link on every page, the long poll
(wait=N) woken by a write and ended by its deadline or by shutdown, the
bound on waiting requests, tenancy, and 410 cursor_expired once the
retention purged what a cursor points at.

Each test starts a server of its own (the shared one holds every other
test's events), on the suite's store: SQLite, or MongoDB with --mongo."""

import contextlib
import datetime
import hashlib
import os
import signal
import socket
import threading
import time

import harness
from harness import (HOST, Server, check, create, eq, expect_error, expect_status,
                     expect_validation, link_path, metric_series, metrics_text, new_id, payment,
                     qs, test)

# The feed's own error, seen by the audit of every response.

TYPES = ("payment.created", "payment.updated", "payment.deleted")


def _server(t, name, args=()):
    srv = Server(t.binary, t.scratch(name), name=name, args=list(args))
    srv.start()
    return srv


def _stop(srv):
    """Stops srv: exit status 0 and no sanitizer report (leaks included)."""
    rc = srv.stop()
    eq(rc, 0, "%s's exit status after SIGTERM" % srv.name)
    rep = srv.sanitizer_report()
    check(rep is None, "%s: sanitizer report: %s" % (srv.name, rep))


@contextlib.contextmanager
def _own_server(t, name, args=()):
    """A server of the test's own (_server) for the with block: stopped after
    it with exit status 0 and no sanitizer report (_stop), or killed when the
    block raised."""
    srv = _server(t, name, args)
    try:
        yield srv
        _stop(srv)
    finally:
        srv.ensure_dead()


def _feed(c, params=None, headers=None, what="GET /v1/events"):
    path = "/v1/events" + ("?" + qs(params) if params else "")
    r = c.get(path, headers=headers)
    expect_status(r, 200, what)
    return r.json


def _follow(c, path, headers=None, limit=100):
    """Every event from path on, following links.next until an empty page;
    returns (events, the last page's next link)."""
    events = []
    for _ in range(limit):
        r = c.get(path, headers=headers)
        expect_status(r, 200, "GET %s" % path)
        j = r.json
        check("next" in j.get("links", {}), "page without links.next: %s" % r.describe())
        events += j["data"]
        path = link_path(j["links"]["next"])
        if not j["data"]:
            return events, path
    raise harness.Fail("the feed did not end within %d pages" % limit)


def _after(link):
    """page[after] of a link."""
    for part in link.split("?", 1)[1].split("&"):
        k, _, v = part.partition("=")
        if k == "page[after]":
            return int(v)
    raise harness.Fail("no page[after] in %s" % link)


class Writes:
    """A known history on a fresh server: two organisations, three payments,
    each kind of write.  kinds[i] is what made event i."""

    def __init__(self, c):
        self.orgs = [new_id(), new_id()]
        a = create(c, payment(org=self.orgs[0], reference="a"))
        b = create(c, payment(org=self.orgs[1], reference="b"))
        r = c.patch("/v1/payments/" + a["id"], {"data": {"version": 0,
                                                          "attributes": {"reference": "a2"}}})
        expect_status(r, 200, "PATCH a")
        a1 = r.data
        body = payment(org=self.orgs[1], amount="20.00", currency="GBP")
        body["data"]["version"] = 0
        r = c.put("/v1/payments/" + b["id"], body)
        expect_status(r, 200, "PUT b")
        b1 = r.data
        expect_status(c.delete("/v1/payments/%s?version=1" % a["id"]), 204, "DELETE a")
        a2 = create(c, payment(org=self.orgs[0], reference="c"))
        self.ids = [a["id"], b["id"], a2["id"]]
        # (event type, payment, version, organisation, document after)
        self.want = [
            ("payment.created", a["id"], 0, self.orgs[0], a),
            ("payment.created", b["id"], 0, self.orgs[1], b),
            ("payment.updated", a["id"], 1, self.orgs[0], a1),
            ("payment.updated", b["id"], 1, self.orgs[1], b1),
            ("payment.deleted", a["id"], 2, self.orgs[0], a1),
            ("payment.created", a2["id"], 0, self.orgs[0], a2),
        ]


def _check_event(e, want, what):
    etype, pid, version, org, doc = want
    eq(e.get("type"), "events", what + ": type")
    check(harness.UUID_RE.match(e.get("id") or ""), "%s: id %r is not a UUID" % (what, e.get("id")))
    eq(e["id"][14], "7", what + ": the id is a UUIDv7")
    eq((e.get("event_type"), e.get("payment_id"), e.get("version"), e.get("organisation_id")),
       (etype, pid, version, org), what + ": event_type, payment_id, version, organisation_id")
    check(harness.TIME_RE.match(e.get("occurred_at") or ""), "%s: occurred_at %r"
          % (what, e.get("occurred_at")))
    check(isinstance(e.get("position"), int) and e["position"] > 0, "%s: position %r"
          % (what, e.get("position")))
    eq(e.get("actor"), None, what + ": actor of a server without keys")
    eq(e["data"].get("payment"), doc, what + ": data.payment")
    if etype == "payment.updated":
        check(isinstance(e["data"].get("changes"), list), "%s: an update without data.changes"
              % what)
    else:
        check("changes" not in e["data"], "%s: data.changes on a %s" % (what, etype))


@test
def feed_lists_every_write_in_commit_order(t):
    with _own_server(t, "feedorder") as srv:
        c = srv.client()
        w = Writes(c)
        j = _feed(c)
        eq(len(j["data"]), len(w.want), "events of six writes")
        for i, (e, want) in enumerate(zip(j["data"], w.want)):
            _check_event(e, want, "event %d" % i)
        pos = [e["position"] for e in j["data"]]
        check(pos == sorted(pos) and len(set(pos)) == len(pos),
              "positions not strictly increasing: %s" % pos)
        eq(j["links"]["self"], "/v1/events?page[size]=100&page[after]=0", "links.self")
        eq(_after(j["links"]["next"]), pos[-1], "links.next of the last page: after its last event")
        # A refused write records nothing.
        expect_error(c.patch("/v1/payments/" + w.ids[1], {"data": {"version": 0,
                                                                   "attributes": {}}}),
                     409, "version_conflict", "PATCH of a stale version")
        eq(len(_feed(c)["data"]), len(w.want), "events after a refused write")


@test
def feed_filters(t):
    with _own_server(t, "feedfilter") as srv:
        c = srv.client()
        w = Writes(c)
        every = _feed(c)["data"]
        end = every[-1]["position"]

        def expect(params, pred, what, shown=None):
            j = _feed(c, params, what=what)
            got = [e["position"] for e in j["data"]]
            want = [e["position"] for e in every if pred(e)]
            eq(got, want, what + ": positions")
            # A filtered page moves the cursor to the feed's end all the same.
            eq(_after(j["links"]["next"]), end, what + ": links.next")
            nxt = link_path(j["links"]["next"])
            for k, v in (shown or params).items():  # UUIDs in lower case
                check(("%s=%s" % (k, v)).lower() in nxt.lower(),
                      "%s: next link %s lacks %s=%s" % (what, nxt, k, v))

        org_a, org_b = w.orgs
        expect({"filter[organisation_id]": org_b}, lambda e: e["organisation_id"] == org_b,
               "organisation b")
        expect({"filter[organisation_id]": "%s,%s" % (org_b, org_a)}, lambda e: True,
               "both organisations")
        expect({"filter[organisation_id]": new_id()}, lambda e: False, "an unknown organisation")
        expect({"filter[event_type]": "payment.deleted"},
               lambda e: e["event_type"] == "payment.deleted", "deletes")
        expect({"filter[event_type]": "payment.created,payment.updated"},
               lambda e: e["event_type"] != "payment.deleted", "creates and updates")
        expect({"filter[payment_id]": w.ids[0]}, lambda e: e["payment_id"] == w.ids[0],
               "one payment")
        expect({"filter[organisation_id]": org_a, "filter[event_type]": "payment.created"},
               lambda e: e["organisation_id"] == org_a and e["event_type"] == "payment.created",
               "organisation a's creates")
        lo, hi = every[2]["occurred_at"], every[4]["occurred_at"]
        expect({"filter[occurred_at][from]": lo}, lambda e: e["occurred_at"] >= lo,
               "occurred from (inclusive)")
        expect({"filter[occurred_at][to]": hi}, lambda e: e["occurred_at"] < hi,
               "occurred before (exclusive)")
        expect({"filter[occurred_at][from]": lo, "filter[occurred_at][to]": hi},
               lambda e: lo <= e["occurred_at"] < hi, "occurred in a range")
        # An upper-case UUID is the same organisation; an offset is the same instant.
        expect({"filter[organisation_id]": org_b.upper()},
               lambda e: e["organisation_id"] == org_b, "organisation b in upper case")
        local = (datetime.datetime.strptime(lo, "%Y-%m-%dT%H:%M:%S.%fZ")
                 - datetime.timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S.%f-05:00")
        expect({"filter[occurred_at][from]": local}, lambda e: e["occurred_at"] >= lo,
               "occurred from a date-time five hours behind UTC",
               shown={"filter[occurred_at][from]": lo})
        j = _feed(c, {"filter[occurred_at][from]": "2000-01-01T01:30:00+01:30"})
        eq(len(j["data"]), len(every), "from a date-time with an offset")
        check("filter[occurred_at][from]=2000-01-01T00:00:00.000Z" in j["links"]["next"],
              "the link gives the bound in UTC: %s" % j["links"]["next"])


@test
def feed_pages_follow_next_to_the_end(t):
    with _own_server(t, "feedpages") as srv:
        c = srv.client()
        w = Writes(c)
        every = _feed(c)["data"]
        events, last_next = _follow(c, "/v1/events?page[size]=2")
        eq([e["id"] for e in events], [e["id"] for e in every], "the pages of 2 joined")
        eq(_after(last_next), every[-1]["position"], "the last page's next")
        check("page[size]=2" in last_next, "next keeps page[size]: %s" % last_next)
        # A full page's next is its last event.
        j = _feed(c, {"page[size]": 4})
        eq(_after(j["links"]["next"]), j["data"][3]["position"], "next of a full page")
        j = _feed(c, {"page[after]": every[3]["position"]})
        eq([e["id"] for e in j["data"]], [e["id"] for e in every[4:]], "page[after] a position")
        # The last page's cursor finds exactly what is written afterwards.
        d1 = create(c, payment(org=w.orgs[1]))
        d2 = create(c, payment(org=w.orgs[0]))
        events, _ = _follow(c, last_next)
        eq([(e["payment_id"], e["event_type"]) for e in events],
           [(d1["id"], "payment.created"), (d2["id"], "payment.created")],
           "events after the last page's cursor")


@test
def feed_rejects_bad_parameters(t):
    c = t.c
    for params, field in [
        ({"page[size]": "0"}, "page[size]"),
        ({"page[size]": "1001"}, "page[size]"),
        ({"page[size]": "ten"}, "page[size]"),
        ({"page[after]": "-1"}, "page[after]"),
        ({"page[after]": "1.5"}, "page[after]"),
        ({"page[after]": "99999999999999999999"}, "page[after]"),
        ({"page[after]": ""}, "page[after]"),
        ({"wait": "31"}, "wait"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "1s"}, "wait"),
        ({"filter[organisation_id]": "acme"}, "filter[organisation_id]"),
        ({"filter[organisation_id]": new_id() + ","}, "filter[organisation_id]"),
        ({"filter[organisation_id]": ",".join(new_id() for _ in range(101))},
         "filter[organisation_id]"),
        ({"filter[event_type]": "payment.created,payment.archived"}, "filter[event_type]"),
        ({"filter[payment_id]": "%s,%s" % (new_id(), new_id())}, "filter[payment_id]"),
        ({"filter[occurred_at][from]": "2026-01-01"}, "filter[occurred_at][from]"),
        ({"filter[occurred_at][to]": "2026-01-01T25:00:00Z"}, "filter[occurred_at][to]"),
        ({"filter[occurred_at][from]": "2026-01-02T00:00:00Z",
          "filter[occurred_at][to]": "2026-01-01T00:00:00Z"}, "filter[occurred_at][from]"),
    ]:
        r = c.get("/v1/events?" + qs(params))
        expect_validation(r, [field], "GET /v1/events?%s" % qs(params))
    r = c.get("/v1/events?page[size]=0&wait=99")
    expect_validation(r, ["page[size]", "wait"], "two bad parameters")
    r = c.get("/v1/events?wait=1&wait=2")
    expect_validation(r, ["wait"], "a parameter given twice")
    expect_error(c.get("/v1/events?page[number]=2"), 400, "bad_request", "page[number]")
    expect_error(c.get("/v1/events?filter[currency]=EUR"), 400, "bad_request", "unknown filter")


@test
def feed_wait_returns_on_a_write(t):
    with _own_server(t, "feedwake") as srv:
        c = srv.client()
        org = new_id()
        create(c, payment(org=org))
        tail = _feed(c)["links"]["next"]
        made = {}

        def write():
            # Between the server's rechecks (every second): only the
            # store's report can answer it within 0.6s.
            time.sleep(1.2)
            made["at"] = time.monotonic()
            made["data"] = create(srv.client(), payment(org=org))

        th = threading.Thread(target=write)
        started = time.monotonic()
        th.start()
        try:
            r = c.get(link_path(tail) + "&wait=5")
        finally:
            th.join()
        answered = time.monotonic()
        expect_status(r, 200, "GET with wait=5")
        eq([e["payment_id"] for e in r.json["data"]], [made["data"]["id"]],
           "the waiting page holds the write")
        check(answered - made["at"] < 0.6, "answered %.2fs after the write" % (answered - made["at"]))
        check(answered - started < 3.0, "the wait took %.2fs" % (answered - started))
        eq(_after(r.json["links"]["next"]), r.json["data"][0]["position"], "next after the wait")
        check("wait=5" in r.json["links"]["next"], "next keeps wait: %s" % r.json["links"]["next"])


@test
def feed_wait_ends_empty_at_its_deadline(t):
    with _own_server(t, "feeddeadline") as srv:
        c = srv.client()
        create(c, payment())
        tail = _feed(c)["links"]["next"]
        started = time.monotonic()
        r = c.get(link_path(tail) + "&wait=2")
        took = time.monotonic() - started
        expect_status(r, 200, "GET with wait=2 and no write")
        eq(r.json["data"], [], "the page after the wait")
        eq(_after(r.json["links"]["next"]), _after(tail), "next after an empty wait")
        check(1.8 <= took < 4.0, "wait=2 answered after %.2fs" % took)
        # wait=0 answers at once.
        started = time.monotonic()
        _feed(c, {"page[after]": _after(tail), "wait": 0})
        check(time.monotonic() - started < 0.5, "wait=0 took %.2fs" % (time.monotonic() - started))
        # A wait whose page is not empty answers at once too.
        started = time.monotonic()
        j = _feed(c, {"wait": 5})
        eq(len(j["data"]), 1, "wait=5 from the start")
        check(time.monotonic() - started < 0.5, "a full page waited %.2fs"
              % (time.monotonic() - started))


@test
def feed_follower_sees_every_concurrent_write_once(t):
    """Four writers create and update payments while a consumer follows the
    feed with wait: it sees every event once, each payment's versions in
    order, and exactly the payments' histories."""
    with _own_server(t, "feedfollow") as srv:
        org = new_id()
        done = threading.Event()
        errors = []
        final = {}

        def writer():
            c = srv.client()
            try:
                for _ in range(6):
                    d = create(c, payment(org=org))
                    v = 0
                    for _ in range(2):
                        r = c.patch("/v1/payments/" + d["id"],
                                    {"data": {"version": v, "attributes": {"reference": "r%d" % v}}})
                        expect_status(r, 200, "PATCH")
                        v += 1
                    final[d["id"]] = v
            except Exception as e:  # reported by the main thread
                errors.append(e)

        seen = []

        def follower():
            c = srv.client()
            path = "/v1/events?" + qs({"filter[organisation_id]": org, "page[size]": 7, "wait": 2})
            while True:
                r = c.get(path)
                if r.status != 200:
                    errors.append(harness.Fail("follower: %s" % r.describe()))
                    return
                seen.extend(r.json["data"])
                path = link_path(r.json["links"]["next"])
                if done.is_set() and not r.json["data"]:
                    return

        f = threading.Thread(target=follower)
        f.start()
        writers = [threading.Thread(target=writer) for _ in range(4)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        done.set()
        f.join(timeout=30)
        check(not f.is_alive(), "the follower did not finish")
        if errors:
            raise errors[0]
        ids = [e["id"] for e in seen]
        eq(len(ids), len(set(ids)), "events seen more than once")
        eq(len(seen), 4 * 6 * 3, "events seen")
        versions = {}
        for e in seen:
            versions.setdefault(e["payment_id"], []).append(e["version"])
        eq(versions, {pid: list(range(v + 1)) for pid, v in final.items()},
           "each payment's versions, in the order seen")
        pos = [e["position"] for e in seen]
        check(pos == sorted(pos), "positions seen out of order")


ORG_A = "9b6f1e0c-3d2a-4f7b-8c1e-2a5d6f7e8a91"
ORG_B = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
SECRETS = {"alpha": "alpha-feed-71c3", "beta": "beta-feed-0e4d", "all": "all-feed-aa92"}


def _as(key):
    return {"Authorization": "Bearer %s" % SECRETS[key]}


@test
def feed_shows_only_the_callers_organisations(t):
    path = os.path.join(t.scratch("feedkeys-file"), "keys")
    with open(path, "w") as f:
        for name, orgs in (("alpha", ORG_A), ("beta", ORG_B), ("all", "*")):
            f.write("%s %s %s\n" % (name, hashlib.sha256(SECRETS[name].encode()).hexdigest(), orgs))
    with _own_server(t, "feedkeys", ["--api-keys", path]) as srv:
        c = srv.client()
        for key, org in (("alpha", ORG_A), ("beta", ORG_B), ("alpha", ORG_A)):
            expect_status(c.post("/v1/payments", payment(org=org), headers=_as(key)), 201,
                          "%s creates" % key)

        def orgs(key, params=None):
            return [e["organisation_id"] for e in _feed(c, params, headers=_as(key))["data"]]

        eq(orgs("alpha"), [ORG_A, ORG_A], "alpha's feed")
        eq(orgs("beta"), [ORG_B], "beta's feed")
        eq(orgs("all"), [ORG_A, ORG_B, ORG_A], "the feed of a key for every organisation")
        # Filtering for another organisation lists nothing, as the payments list does.
        eq(orgs("alpha", {"filter[organisation_id]": ORG_B}), [], "alpha filtering for b")
        eq(orgs("alpha", {"filter[organisation_id]": "%s,%s" % (ORG_B, ORG_A)}), [ORG_A, ORG_A],
           "alpha filtering for b and a")
        eq(orgs("all", {"filter[organisation_id]": ORG_B}), [ORG_B], "all filtering for b")
        r = c.get("/v1/payments?" + qs({"filter[organisation_id]": ORG_B}), headers=_as("alpha"))
        expect_status(r, 200, "the payments list filtered for another organisation")
        eq(r.json["data"], [], "the payments list filtered for another organisation")
        expect_error(c.get("/v1/events"), 401, "unauthorized", "the feed without a key")


def _expires(t, name, args, history_kept):
    """Writes two events on a server started with args, waits until a cursor
    at the first is answered 410 cursor_expired, then page[after]=0 starts
    again from the oldest event kept.  The first payment's history then
    holds its create when history_kept, else nothing: an empty page, the
    payment being still there (not a 404)."""
    with _own_server(t, name, args) as srv:
        c = srv.client()
        a = create(c, payment())
        create(c, payment())
        first = _feed(c)["data"][0]["position"]
        expect_status(c.get("/v1/events?page[after]=%d" % first), 200, "a fresh cursor")
        deadline = time.monotonic() + 8
        while True:
            r = c.get("/v1/events?page[after]=%d" % first)
            if r.status != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        j = expect_error(r, 410, "cursor_expired", "%s: a cursor before the retained feed" % name)
        check("page[after]=0" in j["error_message"], "the message says where to restart: %s"
              % j["error_message"])
        d = create(c, payment())
        j = _feed(c, {"page[after]": 0})
        eq([e["payment_id"] for e in j["data"]], [d["id"]], "%s: page[after]=0 after the purge"
           % name)
        r = c.get("/v1/payments/%s/history" % a["id"])
        expect_status(r, 200, "%s: the history of a payment still there" % name)
        eq([e["version"] for e in r.json["data"]], [0] if history_kept else [],
           "%s: the versions its history keeps" % name)


@test
def feed_cursor_expires_with_the_retention(t):
    """--event-retention 2s: the janitor (every second with so short a
    retention) takes the events out of the feed; a cursor pointing before
    the kept feed is answered 410 cursor_expired."""
    _expires(t, "feedretention", ["--event-retention", "2s"], history_kept=True)


@test
def feed_cursor_expires_with_the_history(t):
    """--history-retention 2s under a long --event-retention: events deleted
    from the histories leave the feed too."""
    _expires(t, "historyretention", ["--event-retention", "1h", "--history-retention", "2s"],
             history_kept=False)


def _park(port, path, out, i):
    """One request on a connection of its own; its status and data into out[i]."""
    try:
        r = harness.Client(HOST, port).get(path)
        out[i] = (r.status, r.json, time.monotonic())
    except Exception as e:  # reported by the caller
        out[i] = e


def _waiting(port):
    return metric_series(metrics_text(port), "paymentd_feed_waiting_requests")


def _until(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise harness.Fail("%s: not within %.0fs" % (what, timeout))
        time.sleep(0.05)


@test
def feed_shutdown_answers_parked_requests_at_once(t):
    srv = _server(t, "feedstop")
    try:
        c = srv.client()
        create(c, payment())
        tail = link_path(_feed(c)["links"]["next"])
        out = [None] * 3
        threads = [threading.Thread(target=_park, args=(srv.port, tail + "&wait=30", out, i))
                   for i in range(3)]
        for th in threads:
            th.start()
        _until(lambda: _waiting(srv.port) == 3, "three requests waiting")
        started = time.monotonic()
        rc = srv.stop(signal.SIGTERM)
        stopped = time.monotonic() - started
        for th in threads:
            th.join(timeout=10)
        eq(rc, 0, "exit status after SIGTERM")
        check(stopped < 3.0, "the server took %.1fs to stop with parked requests" % stopped)
        for i, o in enumerate(out):
            check(isinstance(o, tuple), "parked request %d: %r" % (i, o))
            eq(o[0], 200, "parked request %d's status" % i)
            eq(o[1]["data"], [], "parked request %d's page" % i)
            eq(_after(o[1]["links"]["next"]), _after(tail), "parked request %d's next" % i)
            check(o[2] - started < 3.0, "parked request %d answered %.1fs after SIGTERM"
                  % (i, o[2] - started))
        check(srv.sanitizer_report() is None, "sanitizer: %s" % srv.sanitizer_report())
    finally:
        srv.ensure_dead()


@test
def feed_waiting_requests_are_bounded(t):
    """--max-connections 10: five requests at most wait on the feed; the
    next is answered 503 server_busy at once.  A waiting client that hangs
    up frees its place by its deadline (the server learns of the hang-up
    only when it answers)."""
    with _own_server(t, "feedbound", ["--max-connections", "10"]) as srv:
        c = srv.client()
        tail = link_path(_feed(c)["links"]["next"]) + "&wait=20"
        out = [None] * 4
        threads = [threading.Thread(target=_park, args=(srv.port, tail, out, i)) for i in range(4)]
        for th in threads:
            th.start()
        gone = socket.create_connection((HOST, srv.port), timeout=5)
        gone.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                      % tail.replace("wait=20", "wait=2")).encode())
        _until(lambda: _waiting(srv.port) == 5, "five requests waiting")
        started = time.monotonic()
        r = c.get(tail)
        expect_error(r, 503, "server_busy", "a sixth request waiting")
        check(time.monotonic() - started < 1.0, "the refusal took %.2fs"
              % (time.monotonic() - started))
        check(r.header("Retry-After"), "503 without Retry-After")
        gone.close()
        _until(lambda: _waiting(srv.port) == 4, "the hung-up request's place freed", timeout=5)
        # A write wakes all that wait.
        d = create(c, payment())
        for th in threads:
            th.join(timeout=5)
        for i, o in enumerate(out):
            check(isinstance(o, tuple) and o[0] == 200, "waiting request %d: %r" % (i, o))
            eq([e["payment_id"] for e in o[1]["data"]], [d["id"]], "waiting request %d's page" % i)
        eq(_waiting(srv.port), 0, "requests waiting once answered")


@test
def feed_waiters_hold_no_thread(t):
    """Forty requests waiting on the feed (more than the server's event-loop
    threads, and than its 32 pool threads for a store read on the pool)
    leave every other request answered at once: a waiting request holds no
    thread."""
    with _own_server(t, "feedthreads", ["--threads", "2"]) as srv:
        c = srv.client()
        d = create(c, payment())
        tail = link_path(_feed(c)["links"]["next"]) + "&wait=10"
        out = [None] * 40
        threads = [threading.Thread(target=_park, args=(srv.port, tail, out, i))
                   for i in range(len(out))]
        for th in threads:
            th.start()
        _until(lambda: _waiting(srv.port) == len(out), "forty requests waiting")
        started = time.monotonic()
        expect_status(c.get("/v1/payments/" + d["id"]), 200, "GET a payment meanwhile")
        expect_status(c.get("/v1/payments?page[size]=1"), 200, "list meanwhile")
        took = time.monotonic() - started
        check(took < 1.0, "reads took %.2fs while requests waited on the feed" % took)
        eq(metric_series(metrics_text(srv.port), "paymentd_http_blocking_queued") or 0, 0,
           "requests queued for the blocking pool")
        d2 = create(c, payment())
        for th in threads:
            th.join(timeout=10)
        for i, o in enumerate(out):
            check(isinstance(o, tuple) and o[0] == 200 and len(o[1]["data"]) == 1
                  and o[1]["data"][0]["payment_id"] == d2["id"],
                  "waiting request %d: %r" % (i, o if not isinstance(o, tuple) else o[:2]))
