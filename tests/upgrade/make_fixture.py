#!/usr/bin/python3
"""make_fixture: a store of an older schema version, written by the paymentd
binary of that version, for tests/api/test_upgrade.py.

    /usr/bin/python3 tests/upgrade/make_fixture.py --binary OLD/build/paymentd \\
        --commit SHA [--out tests/upgrade]

Starts the given (old) binary on a new SQLite store, writes a realistic set
of data through its API (creates with and without a client id, replaces,
merge patches, a delete, writes with an Idempotency-Key, a webhook endpoint
and its deliveries to a local receiver, as far as that binary has each),
records what the API answered, stops it with SIGTERM and writes:

    vN.sql   (or --name) the store as text: `sqlite3 FILE .dump` (the sqlite3 CLI is
             needed here only; the test rebuilds the file with Python's
             sqlite3 module)
    vN.json  the schema version N (PRAGMA user_version, which a dump does
             not carry), the commit, and the answers: every payment's GET
             (status, ETag, body), the deleted ids, each organisation's
             list, the keyed requests and their first answers, histories,
             the feed, webhooks and their deliveries, and the bodies the
             receiver got, by event id.

Adding a version: find the last commit of schema version N (git log -p --
src/payment/store_sqlite_schema.c, src/payment/store_sqlite.c before the
split), `git worktree add --detach /tmp/pd-vN COMMIT`, `make -j2
build/paymentd` there, run this with --binary /tmp/pd-vN/build/paymentd
--commit COMMIT, commit vN.sql and vN.json, and remove the worktree.
"""

import argparse
import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))

from harness import Fail, Server, expect_status, qs  # noqa: E402

ORG_A = "4b6f1c9e-2f0a-4c1e-9d3b-7a5e8c2d1f01"
ORG_B = "9d2e7a41-5b3c-4f6d-8e1a-2c4b6d8f0a02"
# Client-chosen ids: a create that names its id.
ID_GIVEN = "3f1d9c2a-6b4e-4a8d-9c7f-1e2b3c4d5e01"
ID_KEYED = "3f1d9c2a-6b4e-4a8d-9c7f-1e2b3c4d5e02"
FLAGS_WANTED = {"--webhook-allow-private": "true", "--idempotency-ttl": "3650d",
                "--event-retention": "3650d"}


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that accepts every delivery and keeps its body by
    event id (the webhook-id header): what a retry after the upgrade must
    send again."""

    bodies = {}

    def do_POST(self):  # noqa: N802 (the stdlib's name)
        n = int(self.headers.get("Content-Length") or 0)
        Receiver.bodies[self.headers.get("webhook-id")] = self.rfile.read(n).decode("utf-8")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def attrs(amount, reference, **more):
    a = {"amount": amount, "currency": "GBP", "payment_scheme": "FPS", "payment_type": "Credit",
         "reference": reference, "end_to_end_reference": "E2E-" + reference.replace(" ", "-"),
         "processing_date": "2026-11-20",
         "beneficiary_party": {"account_name": "W Owens", "account_number": "31926819",
                               "bank_id": "403000", "bank_id_code": "GBDSC"}}
    a.update(more)
    return a


def body(org, a, pid=None):
    d = {"type": "payments", "organisation_id": org, "attributes": a}
    if pid:
        d["id"] = pid
    return {"data": d}


class Fixture:
    """The writes made through one old binary and the answers recorded."""

    def __init__(self, c, features):
        self.c = c
        self.features = features
        self.ids = []          # every payment id made, in order
        self.deleted = []      # ids deleted
        self.keyed = []        # requests with an Idempotency-Key and their answers

    def create(self, org, a, pid=None, key=None):
        headers = {"Idempotency-Key": key} if key else None
        b = body(org, a, pid)
        r = self.c.post("/v1/payments", b, headers=headers)
        expect_status(r, 201, "create")
        if key:
            self.record(key, "POST", "/v1/payments", b, r)
        self.ids.append(r.json["data"]["id"])
        return r.json["data"]["id"]

    def record(self, key, method, path, b, r):
        # The body as sent (the harness's encoding): the key's fingerprint
        # is of these bytes, and the fixture's JSON sorts object members.
        self.keyed.append({"key": key, "method": method, "path": path, "body": json.dumps(b),
                           "status": r.status, "answer": r.json,
                           "location": r.header("Location"), "etag": r.header("ETag")})

    def replace(self, pid, version, org, a):
        r = self.c.put("/v1/payments/" + pid, body(org, a),
                       headers={"If-Match": '"%d"' % version})
        expect_status(r, 200, "replace")

    def patch(self, pid, version, a, key=None):
        b = {"data": {"version": version, "attributes": a}}
        headers = {"Idempotency-Key": key} if key else None
        r = self.c.patch("/v1/payments/" + pid, b, headers=headers)
        expect_status(r, 200, "patch")
        if key:
            self.record(key, "PATCH", "/v1/payments/" + pid, b, r)

    def delete(self, pid, version):
        r = self.c.delete("/v1/payments/%s?version=%d" % (pid, version))
        expect_status(r, 204, "delete")
        self.deleted.append(pid)

    def write_all(self, hook_url):
        hooks = []
        if self.features["webhooks"]:
            r = self.c.post("/v1/webhooks", {"data": {
                "organisation_id": ORG_A, "url": hook_url, "event_types": ["*"],
                "description": "upgrade fixture"}})
            expect_status(r, 201, "webhook create")
            hooks.append(r.json["data"]["id"])
        idem = self.features["idempotency"]
        self.create(ORG_A, attrs("100.00", "rent for oct"), pid=ID_GIVEN)
        self.create(ORG_A, attrs("25.50", "gas bill", currency="EUR", payment_scheme="SEPACT"))
        p3 = self.create(ORG_A, attrs("9.99", "books"))
        self.replace(p3, 0, ORG_A, attrs("12.49", "books and post"))
        self.patch(p3, 1, {"reference": "books and tea", "payment_type": None})
        p4 = self.create(ORG_A, attrs("1.00", "a mistake"))
        self.delete(p4, 0)
        self.create(ORG_A, attrs("42.00", "keyed create"), pid=ID_KEYED,
                    key="upgrade-create-1" if idem else None)
        p6 = self.create(ORG_A, attrs("7.00", "keyed patch"))
        self.patch(p6, 0, {"amount": "8.00"}, key="upgrade-patch-1" if idem else None)
        self.create(ORG_B, attrs("3000.00", "salary nov"))
        b2 = self.create(ORG_B, attrs("61.20", "phone"))
        self.patch(b2, 0, {"reference": "phone and net"})
        b3 = self.create(ORG_B, attrs("5.00", "gone"))
        self.patch(b3, 0, {"amount": "6.00"})
        self.delete(b3, 1)
        return hooks

    def wait_delivered(self, hooks):
        """Every delivery of every hook finished (so the store holds no
        pending work that would change under the test)."""
        deadline = time.monotonic() + 30
        for h in hooks:
            while True:
                r = self.c.get("/v1/webhooks/%s/deliveries?page[size]=100" % h)
                expect_status(r, 200, "deliveries")
                data = r.json["data"]
                if data and all(d.get("status") not in ("pending", None) for d in data):
                    break
                if time.monotonic() > deadline:
                    raise Fail("deliveries not finished: %s" % json.dumps(data)[:400])
                time.sleep(0.2)

    def answers(self, hooks):
        out = {"payments": [], "deleted": self.deleted, "lists": {}, "idempotent": self.keyed,
               "histories": {}, "feed": None, "webhooks": [], "deliveries": {}}
        for pid in self.ids:
            r = self.c.get("/v1/payments/" + pid)
            if pid in self.deleted:
                expect_status(r, 404, "deleted payment")
                continue
            expect_status(r, 200, "get")
            out["payments"].append({"id": pid, "etag": r.header("ETag"), "body": r.json})
        for org in (ORG_A, ORG_B):
            r = self.c.get("/v1/payments?" + qs({"filter[organisation_id]": org,
                                                 "page[size]": "100"}))
            expect_status(r, 200, "list")
            out["lists"][org] = r.json["data"]
        if self.features["history"]:
            for pid in self.ids:
                r = self.c.get("/v1/payments/%s/history?page[size]=1000" % pid)
                expect_status(r, 200, "history")
                out["histories"][pid] = r.json["data"]
        if self.features["feed"]:
            r = self.c.get("/v1/events?page[size]=1000")
            expect_status(r, 200, "feed")
            out["feed"] = r.json["data"]
        for h in hooks:
            r = self.c.get("/v1/webhooks/" + h)
            expect_status(r, 200, "webhook")
            out["webhooks"].append(r.json["data"])
            r = self.c.get("/v1/webhooks/%s/deliveries?page[size]=100" % h)
            expect_status(r, 200, "deliveries")
            out["deliveries"][h] = r.json["data"]
        return out


def _has_route(c, path):
    """Whether the binary serves GET path (older ones answer 404)."""
    return c.get(path).status == 200


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--name", default=None,
                    help="the files' name (default vN); another build of a version N that "
                         "laid it out otherwise is vN-COMMIT")
    args = ap.parse_args()
    if not shutil.which("sqlite3"):
        sys.exit("make_fixture: the sqlite3 command is needed (apt-get install sqlite3)")
    work = tempfile.mkdtemp(prefix="make_fixture.")
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook_url = "http://127.0.0.1:%d/hook" % receiver.server_address[1]
    db = os.path.join(work, "payments.db")
    help_text = subprocess.run([args.binary, "--help"], capture_output=True, text=True).stdout
    flags = []
    for f, v in FLAGS_WANTED.items():
        if f in help_text:
            flags += [f, v]
    srv = Server(args.binary, work, name="old", store="sqlite:" + db, args=flags)
    try:
        srv.start()
        c = srv.client()
        features = {
            "idempotency": "--idempotency-ttl" in help_text,
            "history": _has_route(c, "/v1/events"),  # both came with schema 6
            "feed": _has_route(c, "/v1/events"),
            "webhooks": _has_route(c, "/v1/webhooks"),
        }
        fx = Fixture(c, features)
        hooks = fx.write_all(hook_url)
        fx.wait_delivered(hooks)
        answers = fx.answers(hooks)
        rc = srv.stop()
        if rc != 0:
            raise Fail("the old binary exited %s: %s" % (rc, srv.stderr_tail()))
    finally:
        srv.ensure_dead()
        receiver.shutdown()
    con = sqlite3.connect(db)
    version = con.execute("PRAGMA user_version").fetchone()[0]
    con.close()
    dump = subprocess.run(["sqlite3", db, ".dump"], capture_output=True, text=True, check=True)
    fixture = {"schema_version": version, "commit": args.commit, "features": features}
    fixture.update(answers)
    fixture["delivered_bodies"] = Receiver.bodies
    base = os.path.join(args.out, args.name or "v%d" % version)
    with open(base + ".sql", "w") as f:
        f.write(dump.stdout)
    with open(base + ".json", "w") as f:
        json.dump(fixture, f, indent=1, sort_keys=True)
        f.write("\n")
    shutil.rmtree(work)
    print("make_fixture: %s.sql and %s.json (schema %d, %d payments, features %s)"
          % (base, base, version, len(fixture["payments"]),
             ",".join(k for k, v in features.items() if v) or "none"))


if __name__ == "__main__":
    main()
