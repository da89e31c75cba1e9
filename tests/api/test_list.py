"""GET /v1/payments: order, cursor and offset paging, links, filters and
query errors.  250 payments in three organisations are created once and
shared by these tests; they always filter by those organisations, so what
other tests create does not matter."""

import datetime
import threading
import urllib.parse
from decimal import Decimal

from harness import (Fail, check, create, eq, expect_error, expect_status, link_path, new_id, payment,
                     qs, test)

CURRENCY_SCHEME = {"EUR": "SEPACT", "GBP": "FPS", "USD": "SWIFT"}
ORG_SIZES = (100, 90, 60)

_DATA = {}  # port -> Dataset, or the Fail that building it raised


class Dataset:
    def __init__(self):
        self.orgs = [new_id() for _ in ORG_SIZES]
        self.by_org = {o: [] for o in self.orgs}  # org -> [data] in creation order
        self.order = []                            # every data, in list order

    def attrs(self, org_index, j):
        cur = ["EUR", "GBP", "USD"][j % 3]
        return {
            "amount": "%d.%02d" % (j % 50 + 1, j % 100),
            "currency": cur,
            "payment_scheme": CURRENCY_SCHEME[cur],
            "payment_type": ["Credit", "Debit"][j % 2],
            "reference": "ref %d" % (j % 5),
            "end_to_end_reference": "e2e-%d-%d" % (org_index, j),
            "processing_date": (datetime.date(2024, 1, 1) + datetime.timedelta(days=j % 40)).isoformat(),
        }


def dataset(t):
    got = _DATA.get(t.srv.port)
    if isinstance(got, Fail):
        raise Fail("list data set unavailable: %s" % got)
    if got is not None:
        return got
    try:
        ds = _build(t)
    except Fail as e:
        _DATA[t.srv.port] = e
        raise
    _DATA[t.srv.port] = ds
    return ds


def _build(t):
    ds = Dataset()
    errors = []

    # One thread per organisation, each creating sequentially on one
    # keep-alive connection: within an organisation creation order is known.
    def worker(k, org, n):
        c = t.srv.client()
        conn = c.conn()
        try:
            for j in range(n):
                body = {"data": {"organisation_id": org, "attributes": ds.attrs(k, j)}}
                r = c.post("/v1/payments", body, conn=conn)
                if r.status != 201:
                    errors.append("create %d of org %d: %s" % (j, k, r.describe()))
                    return
                ds.by_org[org].append(r.data)
        except Exception as e:
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k, o, n))
               for k, (o, n) in enumerate(zip(ds.orgs, ORG_SIZES))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    check(not any(th.is_alive() for th in threads), "creating the list data set timed out")
    check(not errors, "creating the list data set: %s" % errors[:2])

    # The list order across organisations is the commit order, which the
    # client cannot know: take it from one full page, after checking that it
    # holds every payment once and keeps each organisation's creation order.
    r = t.c.get("/v1/payments?" + qs({"filter[organisation_id]": ",".join(ds.orgs), "page[size]": "1000"}))
    expect_status(r, 200, "list of the data set")
    items = r.data
    check(isinstance(items, list), "list data is not an array: %s" % r.describe())
    _check_consistent(ds, items)
    ds.order = items
    return ds


def _check_consistent(ds, items):
    ids = [x.get("id") for x in items]
    eq(len(ids), sum(ORG_SIZES), "payments listed for the 3 organisations")
    eq(len(set(ids)), len(ids), "distinct ids in the list")
    for org in ds.orgs:
        got = [x["id"] for x in items if x.get("organisation_id") == org]
        want = [x["id"] for x in ds.by_org[org]]
        check(got == want, "organisation %s: list order differs from creation order" % org)


def _ids(items):
    return [x["id"] for x in items]


def _query(link):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query, keep_blank_values=True))


def _walk(t, path, limit=500):
    """Follows next links from path; returns (all items, pages)."""
    items, pages = [], []
    seen = set()
    while path:
        check(path not in seen, "next link repeats: %s" % path)
        seen.add(path)
        check(len(pages) < limit, "more than %d pages" % limit)
        r = t.c.get(path)
        expect_status(r, 200, "GET %s" % path)
        j = r.json
        check(isinstance(j, dict) and isinstance(j.get("data"), list), "GET %s: no data array" % path)
        links = j.get("links")
        check(isinstance(links, dict) and isinstance(links.get("self"), str)
              and isinstance(links.get("first"), str), "GET %s: links lacks self/first: %s" % (path, links))
        pages.append(j)
        items.extend(j["data"])
        nxt = links.get("next")
        path = link_path(nxt) if nxt is not None else None
    return items, pages


def _model(ds, pred):
    return [x["id"] for x in ds.order if pred(x["attributes"], x)]


def _all_orgs(ds):
    return {"filter[organisation_id]": ",".join(ds.orgs)}


# --------------------------------------------------------------------------

@test
def list_cursor_paging_250(t):
    ds = dataset(t)
    path = "/v1/payments?" + qs(_all_orgs(ds))
    items, pages = _walk(t, path)
    eq([len(p["data"]) for p in pages], [100, 100, 50], "page sizes with the default page[size]")
    eq(_ids(items), _ids(ds.order), "ids over all pages, in order")
    check("next" not in pages[-1]["links"] or pages[-1]["links"]["next"] is None,
          "last page has a next link")
    for p in pages[:-1]:
        check("page[after]" in _query(p["links"]["next"]), "cursor next link without page[after]: %s"
              % p["links"]["next"])
    # first leads back to the first page
    r = t.c.get(link_path(pages[1]["links"]["first"]))
    expect_status(r, 200, "GET first link")
    eq(_ids(r.data), _ids(pages[0]["data"]), "first link's page")
    # small pages
    items, pages = _walk(t, "/v1/payments?" + qs(dict(_all_orgs(ds), **{"page[size]": "7"})))
    eq(len(pages), 36, "pages of 7")
    eq(_ids(items), _ids(ds.order), "ids over pages of 7")
    # a listed item is the stored resource
    x = ds.order[123]
    r = t.c.get("/v1/payments/" + x["id"])
    eq(x, r.data, "listed item equals GET of it")


@test
def list_offset_paging_with_filters(t):
    ds = dataset(t)
    a = ds.orgs[0]
    params = {"filter[organisation_id]": a, "filter[currency]": "GBP", "page[size]": "10"}
    want = _model(ds, lambda at, x: x["organisation_id"] == a and at["currency"] == "GBP")
    eq(len(want), 33, "model size")
    got = []
    for n in range(4):
        r = t.c.get("/v1/payments?" + qs(dict(params, **{"page[number]": str(n)})))
        expect_status(r, 200, "offset page %d" % n)
        got.extend(_ids(r.data))
        nxt = r.json["links"].get("next")
        if n < 3:
            check(nxt is not None, "offset page %d has no next link" % n)
            q = _query(nxt)
            eq(q.get("page[number]"), str(n + 1), "next link's page[number] on page %d" % n)
            eq(q.get("filter[currency]"), "GBP", "next link keeps filter[currency]")
            eq(q.get("page[size]"), "10", "next link keeps page[size]")
            check("page[after]" not in q, "offset next link has page[after]")
        else:
            check(nxt is None, "last offset page has a next link: %s" % nxt)
    eq(got, want, "ids over offset pages")
    items, pages = _walk(t, "/v1/payments?" + qs(dict(params, **{"page[number]": "0"})))
    eq(_ids(items), want, "ids following offset next links")
    eq(len(pages), 4, "offset pages followed")
    r = t.c.get("/v1/payments?" + qs(dict(params, **{"page[number]": "4"})))
    expect_status(r, 200, "offset page past the end")
    eq(r.data, [], "data past the end")
    check(r.json["links"].get("next") is None, "page past the end has a next link")
    # offset paging over all three organisations
    r = t.c.get("/v1/payments?" + qs(dict(_all_orgs(ds), **{"page[number]": "2", "page[size]": "100"})))
    eq(_ids(r.data), _ids(ds.order)[200:], "page[number]=2 of 100")


@test
def list_filters(t):
    ds = dataset(t)
    o = _all_orgs(ds)
    a, b, c = ds.orgs
    cases = [
        ({"filter[organisation_id]": b}, lambda at, x: x["organisation_id"] == b),
        ({"filter[organisation_id]": b.upper()}, lambda at, x: x["organisation_id"] == b),
        ({"filter[organisation_id]": "%s,%s" % (a, c)}, lambda at, x: x["organisation_id"] in (a, c)),
        (dict(o, **{"filter[currency]": "EUR"}), lambda at, x: at["currency"] == "EUR"),
        (dict(o, **{"filter[currency]": "EUR,USD"}), lambda at, x: at["currency"] in ("EUR", "USD")),
        (dict(o, **{"filter[payment_scheme]": "FPS"}), lambda at, x: at["payment_scheme"] == "FPS"),
        (dict(o, **{"filter[payment_scheme]": "SWIFT,SEPACT"}),
         lambda at, x: at["payment_scheme"] in ("SWIFT", "SEPACT")),
        (dict(o, **{"filter[payment_type]": "Debit"}), lambda at, x: at["payment_type"] == "Debit"),
        (dict(o, **{"filter[reference]": "ref 3"}), lambda at, x: at["reference"] == "ref 3"),
        (dict(o, **{"filter[reference]": "ref 1,ref 4"}), lambda at, x: at["reference"] in ("ref 1", "ref 4")),
        (dict(o, **{"filter[end_to_end_reference]": "e2e-1-5,e2e-2-59,e2e-0-100"}),
         lambda at, x: at["end_to_end_reference"] in ("e2e-1-5", "e2e-2-59")),
        (dict(o, **{"filter[processing_date_from]": "2024-02-01"}),
         lambda at, x: at["processing_date"] >= "2024-02-01"),
        (dict(o, **{"filter[processing_date_to]": "2024-01-03"}),
         lambda at, x: at["processing_date"] <= "2024-01-03"),
        (dict(o, **{"filter[processing_date_from]": "2024-01-10", "filter[processing_date_to]": "2024-01-12"}),
         lambda at, x: "2024-01-10" <= at["processing_date"] <= "2024-01-12"),
        (dict(o, **{"filter[amount][from]": "10.5", "filter[amount][to]": "20"}),
         lambda at, x: Decimal("10.5") <= Decimal(at["amount"]) <= Decimal("20")),
        (dict(o, **{"filter[amount][from]": "48.48"}), lambda at, x: Decimal(at["amount"]) >= Decimal("48.48")),
        ({"filter[organisation_id]": a, "filter[currency]": "EUR", "filter[payment_type]": "Credit",
          "filter[amount][to]": "30"},
         lambda at, x: x["organisation_id"] == a and at["currency"] == "EUR" and at["payment_type"] == "Credit"
         and Decimal(at["amount"]) <= 30),
        (dict(o, **{"filter[currency]": "JPY"}), lambda at, x: False),
    ]
    failures = []
    for params, pred in cases:
        want = _model(ds, pred)
        r = t.c.get("/v1/payments?" + qs(dict(params, **{"page[size]": "1000"})))
        try:
            expect_status(r, 200, "list %s" % params)
            got = _ids(r.data)
            if got != want:
                failures.append("list %s: %d ids, expected %d%s" % (
                    params, len(got), len(want), " (same set, other order)" if set(got) == set(want) else ""))
        except Fail as e:
            failures.append(str(e))
    check(not failures, " | ".join(failures))
    # brackets not percent-encoded work too
    r = t.c.get("/v1/payments?filter[organisation_id]=%s&filter[currency]=GBP&page[size]=1000" % c)
    expect_status(r, 200, "list with raw brackets")
    eq(_ids(r.data), _model(ds, lambda at, x: x["organisation_id"] == c and at["currency"] == "GBP"),
       "raw bracket filter")


@test
def list_amount_compared_as_decimals(t):
    org = new_id()
    amounts = ["9.5", "10.00", "100", "2", "10.5", "99.99", "10", "1000.01"]
    ids = {}
    for a in amounts:
        ids[a] = create(t.c, payment(org, amount=a))["id"]

    def check_range(frm, to, want):
        p = {"filter[organisation_id]": org}
        if frm is not None:
            p["filter[amount][from]"] = frm
        if to is not None:
            p["filter[amount][to]"] = to
        r = t.c.get("/v1/payments?" + qs(p))
        expect_status(r, 200, "list %s" % p)
        eq(sorted(x["attributes"]["amount"] for x in r.data), sorted(want), "amounts for %s" % p)

    check_range("9.5", "10.00", ["9.5", "10.00", "10"])
    check_range("10", None, ["10.00", "100", "10.5", "99.99", "10", "1000.01"])
    check_range(None, "9.99", ["9.5", "2"])
    check_range("10.000", "10.0", ["10.00", "10"])
    check_range("99.99", "100", ["99.99", "100"])
    check_range("1000.001", None, ["1000.01"])
    check_range("0.01", "1", [])
    check_range("0", None, amounts)
    check_range("0.00", "99999999999999999999", amounts)


@test
def list_created_date_range(t):
    org = new_id()
    d1 = create(t.c, payment(org))
    d2 = create(t.c, payment(org))
    today = datetime.date.fromisoformat(d1["created_on"][:10])
    one = datetime.timedelta(days=1)
    both = sorted([d1["id"], d2["id"]])
    for frm, to, want in [(today, today, both), (today - one, None, both), (None, today + one, both),
                          (None, today - one, []), (today + one, None, []),
                          (today - one * 30, today - one, [])]:
        p = {"filter[organisation_id]": org}
        if frm:
            p["filter[created_date_from]"] = frm.isoformat()
        if to:
            p["filter[created_date_to]"] = to.isoformat()
        r = t.c.get("/v1/payments?" + qs(p))
        expect_status(r, 200, "list %s" % p)
        eq(sorted(_ids(r.data)), want, "ids for %s" % p)


@test
def list_default_order_and_page_size(t):
    org = new_id()
    x = create(t.c, payment(org))["id"]
    y = create(t.c, payment(org))["id"]
    z = create(t.c, payment(org))["id"]
    r = t.c.get("/v1/payments?" + qs({"filter[organisation_id]": org}))
    expect_status(r, 200, "list")
    eq(_ids(r.data), [x, y, z], "oldest first")
    check(r.json["links"].get("next") is None, "single page has a next link")
    # the unfiltered list holds every payment once, oldest first
    ds = dataset(t)
    items, _ = _walk(t, "/v1/payments?page[size]=1000")
    ids = _ids(items)
    eq(len(ids), len(set(ids)), "distinct ids in the unfiltered list")
    check(x in ids and ids.index(x) < ids.index(y) < ids.index(z), "unfiltered list order")
    mine = set(_ids(ds.order))
    eq([i for i in ids if i in mine], _ids(ds.order), "the data set within the unfiltered list")
    # default page size is 100
    r = t.c.get("/v1/payments")
    expect_status(r, 200, "GET /v1/payments")
    eq(len(r.data), 100, "default page size")
    check(r.json["links"].get("next"), "first default page has no next link")


@test
def list_page_size_bounds(t):
    ds = dataset(t)
    o = _all_orgs(ds)
    for size, n in [("1", 1), ("1000", 250), ("250", 250), ("249", 249)]:
        r = t.c.get("/v1/payments?" + qs(dict(o, **{"page[size]": size})))
        expect_status(r, 200, "page[size]=%s" % size)
        eq(len(r.data), n, "items with page[size]=%s" % size)
    r = t.c.get("/v1/payments?" + qs(dict(o, **{"page[size]": "250"})))
    check(r.json["links"].get("next") is None, "exactly-full last page has a next link")
    for size in ["0", "1001", "-1", "abc", "1.5", ""]:
        r = t.c.get("/v1/payments?" + qs(dict(o, **{"page[size]": size})))
        expect_error(r, 400, None, "page[size]=%r" % size, codes=["bad_request", "validation_failed"])


@test
def list_offset_limit(t):
    for size, number, ok in [("100", "99", True), ("100", "100", False), ("1000", "9", True),
                             ("1000", "10", False), ("1", "9999", True), ("1", "10000", False),
                             (None, "99", True), (None, "100", False), ("3", "3334", False),
                             ("3", "3333", True), ("1000", "4000000000", False)]:
        p = {"filter[organisation_id]": new_id(), "page[number]": number}
        if size:
            p["page[size]"] = size
        r = t.c.get("/v1/payments?" + qs(p))
        what = "page[size]=%s page[number]=%s" % (size, number)
        if ok:
            expect_status(r, 200, what)
        else:
            j = expect_error(r, 400, None, what, codes=["bad_request", "validation_failed"])
            m = j["error_message"].lower()
            check("cursor" in m or "page[after]" in m, "%s: message does not point to cursor paging: %r"
                  % (what, j["error_message"]))


@test
def list_bad_parameters(t):
    ds = dataset(t)
    r = t.c.get("/v1/payments?" + qs(dict(_all_orgs(ds), **{"page[size]": "5"})))
    cursor = _query(r.json["links"]["next"])["page[after]"]
    org = ds.orgs[0]
    bad = [
        "page[after]=%s&page[number]=1" % cursor,
        "page[number]=0&page[after]=%s" % cursor,
        "page[size]=1&page[size]=2",
        "filter[currency]=EUR&filter[currency]=GBP",
        "filter[organisation_id]=%s&filter[organisation_id]=%s" % (org, org),
        "foo=bar", "sort=created_on", "filter[nope]=1", "page[nope]=1", "filter=1", "page=1",
        "filter[amount]=1", "filter[amount][between]=1",
        "filter[currency]=HRK", "filter[currency]=EUR,ZZZ", "filter[currency]=eur1",
        "filter[organisation_id]=nope", "filter[organisation_id]=%s,nope" % org,
        "filter[amount][from]=-1", "filter[amount][from]=abc", "filter[amount][to]=1e2",
        "filter[amount][to]=1,2",
        "filter[processing_date_from]=2024-13-01", "filter[processing_date_from]=2024-02-30",
        "filter[processing_date_to]=20240101", "filter[processing_date_to]=2024-01-01,2024-01-02",
        "filter[created_date_from]=2024-02-30", "filter[created_date_to]=yesterday",
        "filter[payment_scheme]=FOO", "filter[payment_scheme]=FPS,NOPE",
        "page[after]=garbage", "page[after]=%s" % ("!" + cursor),
        "page[number]=-1", "page[number]=abc", "page[number]=1.5",
    ]
    failures = []
    for q in bad:
        r = t.c.get("/v1/payments?" + q)
        try:
            expect_error(r, 400, None, "GET /v1/payments?%s" % q, codes=["bad_request", "validation_failed"])
        except Fail as e:
            failures.append(str(e))
    check(not failures, "%d of %d: %s" % (len(failures), len(bad), " | ".join(failures)))
    r = t.c.get("/v1/payments?page[after]=%s" % cursor)
    expect_status(r, 200, "the cursor alone")


@test
def list_excludes_deleted_and_empty(t):
    org = new_id()
    ids = [create(t.c, payment(org))["id"] for _ in range(3)]
    expect_status(t.c.delete("/v1/payments/" + ids[1]), 204, "DELETE")
    r = t.c.get("/v1/payments?" + qs({"filter[organisation_id]": org}))
    expect_status(r, 200, "list")
    eq(_ids(r.data), [ids[0], ids[2]], "listed after a delete")
    r = t.c.get("/v1/payments?" + qs({"filter[organisation_id]": new_id()}))
    expect_status(r, 200, "list of an unknown organisation")
    eq(r.data, [], "data")
    check(r.json["links"].get("next") is None, "empty list has a next link")
    check(r.json["links"].get("self") and r.json["links"].get("first"), "empty list lacks self/first")


@test
def list_stable_while_inserting(t):
    org = new_id()
    first = [create(t.c, payment(org, reference="old %d" % i))["id"] for i in range(20)]
    path = "/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "6"})
    got, added = [], []
    pages = 0
    while path:
        r = t.c.get(path)
        expect_status(r, 200, "GET %s" % path)
        got.extend(_ids(r.data))
        pages += 1
        check(pages < 20, "too many pages")
        if pages <= 2:  # others insert while we page
            added.append(create(t.c, payment(org, reference="new %d" % pages))["id"])
        nxt = r.json["links"].get("next")
        path = link_path(nxt) if nxt else None
    eq(got, first + added, "cursor paging while inserting")
    # a cursor whose payment was deleted still leads on
    r = t.c.get("/v1/payments?" + qs({"filter[organisation_id]": org, "page[size]": "5"}))
    nxt = r.json["links"]["next"]
    expect_status(t.c.delete("/v1/payments/" + first[4]), 204, "DELETE the cursor's payment")
    expect_status(t.c.delete("/v1/payments/" + first[5]), 204, "DELETE the next payment")
    r = t.c.get(link_path(nxt))
    expect_status(r, 200, "GET next after deleting the cursor's payment")
    eq(_ids(r.data), first[6:11], "page after a deleted cursor payment")


@test
def offset_next_link_stays_within_the_offset_limit(t):
    org = new_id()
    for _ in range(3):
        create(t.c, payment(org=org))
    # Offset links continue by page[number] (a next beyond the offset limit
    # would be a cursor; that needs 10,000 rows, left to the store tests).
    r = t.c.get("/v1/payments?filter[organisation_id]=%s&page[size]=1&page[number]=1" % org)
    expect_status(r, 200, "offset page 1")
    check("page[number]=2" in r.json["links"].get("next", ""), "offset next: %s" % r.json["links"])
    r = t.c.get("/v1/payments?filter[organisation_id]=%s&page[size]=1000&page[number]=9" % org)
    expect_status(r, 200, "offset page 9 of 1000")
    check("next" not in r.json["links"], "empty page 9 has a next link: %s" % r.json["links"])
