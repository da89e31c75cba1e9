#!/usr/bin/python3
"""double: a MongoDB-wire-compatible test double for paymentd's MongoDB store.

    /usr/bin/python3 tests/mongo/double.py --port PORT [--data FILE] [--ready FILE]

(tests/mongo/double.sh starts and stops it in the background.)

No MongoDB server is packaged in Debian, so the MongoDB store's tests run
against this process instead: python3-mockupdb speaks the wire protocol
(the handshake, OP_MSG and legacy OP_QUERY commands), python3-mongomock is
the query engine (filters, sort, skip, limit, update operators, unique
indexes).  It answers the commands libmongoc sends for paymentd's store:
hello/isMaster, ping, buildInfo, insert, update, delete, find, count,
getMore, killCursors, findAndModify, createIndexes, listIndexes, drop, dropDatabase,
endSessions.  Anything else is answered as MongoDB answers an unknown command.

Every request is handled under one lock (mockupdb's server lock), so each
command is atomic, as a single-document write is in MongoDB.

Persistence, for outage tests: with --data, the databases are loaded from
FILE at start and written to it (atomically) on SIGTERM or SIGINT, after the
command in progress, if any, is answered.  Stopping and starting the double
on the same port with the same FILE is a MongoDB outage and recovery.  A
SIGKILL loses what was not saved: the double proves nothing about durability.

--ready FILE is created, holding the port (useful with --port 0: any free
port), once the double accepts connections.

The command {doubleAfterFind: COLLECTION, filter: F, update: U} (in the
database it is sent to) arms a one-shot hook: right after answering the next
find on COLLECTION with exactly filter F, the double applies update_one(F, U, upsert) to it, as
another client writing between that read and what the reader does next
(the race of two processes starting at once, made certain).

The command {doubleStats: 1} answers how many write commands were received
(insert, update, delete, findAndModify, createIndexes) and how many of them
asked for write concern {w: "majority", j: true}: in all ("writes",
"majorityJournaled"), and per database and command ("databases": {db:
{command: {writes, majorityJournaled}}}), so that a test can check every
write a store sent to its own database.
"""

import argparse
import collections
import bisect
import datetime
import itertools
import os
import random
import signal
import sys
import threading
import traceback
from collections.abc import Mapping

import bson
import mockupdb
import mongomock
from mongomock import collection as mongomock_collection
from mongomock import filtering as mongomock_filtering
from mongomock import helpers
from mongomock import store as mongomock_store

MAX_WIRE_VERSION = 13  # MongoDB 5.0
MAX_BSON_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48000000
MAX_WRITE_BATCH = 100000
DEFAULT_BATCH = 101

# Error codes as MongoDB sends them.
E_DUPLICATE_KEY = 11000
E_COMMAND_NOT_FOUND = 59
E_CURSOR_NOT_FOUND = 43
E_BAD_VALUE = 2
E_INTERNAL = 1
E_INDEX_OPTIONS_CONFLICT = 85
E_INDEX_KEY_SPECS_CONFLICT = 86


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v):
    """A value an equality compares without looking inside: a string or a
    number."""
    return isinstance(v, str) or _is_number(v)


def _id_range(cond):
    """The bounds of an _id condition made of numeric comparisons only, as
    (low, low included, high, high included), None standing for no bound;
    or None when the condition is something else.  MongoDB compares numbers
    with numbers only (type brackets), so only numeric _ids can match."""
    if not isinstance(cond, Mapping) or not cond:
        return None
    lo = hi = None
    lo_in = hi_in = True
    for op, v in cond.items():
        if not _is_number(v):
            return None
        if op in ("$gt", "$gte") and (lo is None or v > lo or (v == lo and op == "$gt")):
            lo, lo_in = v, op == "$gte"
        elif op in ("$lt", "$lte") and (hi is None or v < hi or (v == hi and op == "$lt")):
            hi, hi_in = v, op == "$lte"
        elif op not in ("$gt", "$gte", "$lt", "$lte"):
            return None
    return lo, lo_in, hi, hi_in


def _numeric_ids(store):
    """The store's numeric _ids in order (a copy), and whether every _id is
    one: MongoDB's _id index.  Kept between calls until a key is added or
    removed (_store_setitem, _store_delitem) or the documents are replaced
    (a drop)."""
    docs = store._documents
    cached = store.__dict__.get("_double_ids")
    if cached is None or cached[0] is not docs:
        keys = [k for k in docs if isinstance(k, (int, float)) and not isinstance(k, bool)]
        keys.sort()  # inserted in order, as paymentd's positions are: a linear pass
        cached = store.__dict__["_double_ids"] = (docs, keys, len(keys) == len(docs))
    return list(cached[1]), cached[2]


def _store_setitem(self, key, val):
    if key not in self._documents:
        self.__dict__.pop("_double_ids", None)
    _store_setitem_mongomock(self, key, val)


def _store_delitem(self, key):
    self.__dict__.pop("_double_ids", None)
    _store_delitem_mongomock(self, key)


_store_setitem_mongomock = mongomock_store.CollectionStore.__setitem__
_store_delitem_mongomock = mongomock_store.CollectionStore.__delitem__
mongomock_store.CollectionStore.__setitem__ = _store_setitem
mongomock_store.CollectionStore.__delitem__ = _store_delitem


def _ids_in_range(store, bounds):
    """The numeric _ids within bounds (_id_range's), in order: a walk of the
    _id index between two keys."""
    keys, _ = _numeric_ids(store)
    lo, lo_in, hi, hi_in = bounds
    i = 0 if lo is None else (bisect.bisect_left if lo_in else bisect.bisect_right)(keys, lo)
    j = len(keys) if hi is None else (bisect.bisect_right if hi_in else bisect.bisect_left)(keys, hi)
    return keys[i:j]


def _id_candidates(store, cond):
    """The _ids an _id condition can match, looked up as MongoDB's _id index
    does (a value, a list of values, a numeric range), or None when the
    condition is something else."""
    if _is_scalar(cond):
        return [cond] if cond in store else []
    if isinstance(cond, Mapping) and set(cond) == {"$in"} and isinstance(cond["$in"], list) \
            and all(_is_scalar(v) for v in cond["$in"]):
        seen = []
        for v in cond["$in"]:
            if v in store and v not in seen:
                seen.append(v)
        return seen
    bounds = _id_range(cond)
    if bounds is not None:
        return _ids_in_range(store, bounds)
    return None


def _needs_top(cond):
    """Whether a condition on a dotted path a.b can match only a document
    whose a holds something (not missing, null or an empty array): {$exists:
    true}, an equality to a string or number, or {$in} of those."""
    if _is_scalar(cond):
        return True
    if not isinstance(cond, Mapping) or not cond:
        return False
    if cond.get("$exists") is True:
        return True
    values = cond.get("$in")
    return set(cond) == {"$in"} and isinstance(values, list) and bool(values) and \
        all(_is_scalar(v) for v in values)


def _may_match(filter):
    """A cheap test a document must pass to match filter, from its
    top-level conditions, or None when there is none: an equality to a
    string or number needs the field equal (or an array, which may hold it);
    a dotted path needs its top-level field holding something when the
    condition asks for a value (_needs_top).  What it lets through,
    mongomock's matching decides."""
    equal, tops = [], []
    for k, v in filter.items():
        if k.startswith("$"):
            continue
        if "." not in k and _is_scalar(v):
            equal.append((k, v))
        elif "." in k and _needs_top(v):
            tops.append(k.split(".", 1)[0])
    if not equal and not tops:
        return None

    def may(d):
        for k, v in equal:
            got = d.get(k)
            if got != v and not isinstance(got, list):
                return False
        for top in tops:
            if d.get(top) in (None, []):
                return False
        return True
    return may


def _iter_documents_by_id(self, filter):
    """mongomock scans every document for every filter; MongoDB looks _id up
    in its _id index (a value, a list, a range).  Same answer, without the
    scan: the candidates are the documents with those _ids, and mongomock's
    own filter decides whether they match.  Other filters skip, before
    mongomock's costly matching, the documents that cannot match
    (_may_match: what an index on those fields would skip)."""
    if isinstance(filter, Mapping):
        if "_id" in filter:
            keys = _id_candidates(self._store, filter["_id"])
            if keys is not None:
                docs = [self._store[k] for k in keys]
                return (d for d in docs if mongomock_filtering.filter_applies(filter, d))
        may = _may_match(filter)
        if may is not None and not self._store.is_empty:
            docs = [d for d in self._store._documents.values() if may(d)]
            return (d for d in docs if mongomock_filtering.filter_applies(filter, d))
    return _iter_documents_scan(self, filter)


_iter_documents_scan = mongomock_collection.Collection._iter_documents
mongomock_collection.Collection._iter_documents = _iter_documents_by_id


# Unique indexes as MongoDB keeps them.  mongomock reads one value per
# document, so a unique index on a field inside an array (multikey, such as
# paymentd's idem.sk) never sees a duplicate; and its error never names the
# index, which MongoDB's message does and paymentd reads.

_MISSING = None  # a missing field is indexed as null


def _index_values(value, parts):
    """The keys an index on the dotted path parts holds for value: an array
    on the way contributes each of its elements (a multikey index)."""
    if isinstance(value, list):
        if not parts:
            return list(value) or [_MISSING]
        return [k for v in value for k in _index_values(v, parts)] or [_MISSING]
    if not parts:
        return [value]
    if isinstance(value, Mapping) and parts[0] in value:
        return _index_values(value[parts[0]], parts[1:])
    return [_MISSING]


def _index_keys(index, doc):
    """The set of keys index holds for doc, empty when it skips doc (sparse
    or partial)."""
    fields = [_index_values(doc, name.split(".")) for name, _ in index["key"]]
    if index.get("sparse") and all(f == [_MISSING] for f in fields):
        return set()
    pfe = index.get("partialFilterExpression")
    if pfe is not None and not mongomock_filtering.filter_applies(pfe, doc):
        return set()
    keys = set()
    for combo in itertools.product(*fields):
        try:
            hash(combo)
        except TypeError:
            combo = repr(combo)
        keys.add(combo)
    return keys


def _duplicate(coll, name, index, key):
    return mongomock.DuplicateKeyError(
        "E11000 duplicate key error collection: %s.%s index: %s dup key: { %s: %r }"
        % (coll.database.name, coll.name, name, ", ".join(k for k, _ in index["key"]),
           key[0] if len(key) == 1 else key), E_DUPLICATE_KEY)


def _unique_map(store, name, index, new_id):
    """The keys unique index name holds, as MongoDB's index has them:
    (index, {key: _id}, {_id: its keys}).  Built at first use from the
    stored documents but new_id's (the one being checked), then kept by
    _ensure_uniques.  An entry whose document no longer holds the key (it
    was deleted, or a write was rolled back) is stale: checks verify an
    entry against its document before trusting it."""
    maps = store.__dict__.setdefault("_double_unique", {})
    m = maps.get(name)
    if m is None or m[0] is not index:
        owners, held = {}, {}
        for doc in store._documents.values():
            if doc.get("_id") == new_id:
                continue
            keys = _index_keys(index, doc)
            held[doc.get("_id")] = keys
            for k in keys:
                owners[k] = doc.get("_id")
        m = maps[name] = (index, owners, held)
    return m


def _ensure_uniques(self, new_data):
    """new_data is stored already; raises when a unique index holds one of
    its keys for another document (keys repeated inside new_data are fine,
    as in MongoDB).  Every index is checked before any is updated: a raise
    makes mongomock roll the write back."""
    store, new_id = self._store, new_data.get("_id")
    updates = []
    for name, index in store.indexes.items():
        if not index.get("unique"):
            continue
        _, owners, held = _unique_map(store, name, index, new_id)
        keys = _index_keys(index, new_data)
        for k in keys:
            owner = owners.get(k, new_id)
            if owner != new_id and owner in store and k in _index_keys(index, store[owner]):
                raise _duplicate(self, name, index, k)
        updates.append((owners, held, keys))
    for owners, held, keys in updates:
        for k in held.get(new_id, set()) - keys:
            if owners.get(k) == new_id:
                del owners[k]
        for k in keys:
            owners[k] = new_id
        held[new_id] = keys


def _create_index(self, key_or_list, cache_for=300, session=None, **kwargs):
    """mongomock's, with the stored documents checked by _index_keys."""
    if kwargs.get("unique"):
        index = {"key": list(helpers.create_index_list(key_or_list))}
        for opt in ("sparse", "partialFilterExpression"):
            if kwargs.get(opt):
                index[opt] = kwargs[opt]
        seen = set()
        for doc in self._store.documents:
            keys = _index_keys(index, doc)
            if keys & seen:
                raise _duplicate(self, kwargs.get("name"), index, next(iter(keys & seen)))
            seen |= keys
    documents, self._store._documents = self._store._documents, collections.OrderedDict()
    try:  # without documents: mongomock's own check would misjudge them
        return _create_index_mongomock(self, key_or_list, cache_for, session, **kwargs)
    finally:
        self._store._documents = documents


_create_index_mongomock = mongomock_collection.Collection.create_index
mongomock_collection.Collection._ensure_uniques = _ensure_uniques
mongomock_collection.Collection.create_index = _create_index


def _duplicate_message(e, ns, doc):
    """MongoDB's message for a duplicate key: the index's, when known."""
    if " index: " in str(e):
        return str(e)
    return "E11000 duplicate key error collection: %s index: _id_ dup key: { _id: %r }" % (
        ns, doc.get("_id") if isinstance(doc, Mapping) else None)


class CommandError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _ns_parts(db, coll):
    return "%s.%s" % (db, coll)


class Double:
    """The server state: a mongomock client, open cursors, write stats."""

    def __init__(self):
        self.client = mongomock.MongoClient()
        self.cursors = {}  # id -> (namespace, remaining documents)
        self.writes = 0  # write commands received
        self.majority_journaled = 0  # of them, with {w: "majority", j: true}
        # db -> command name -> [writes, majority_journaled]
        self.writes_by_db = collections.defaultdict(
            lambda: collections.defaultdict(lambda: [0, 0]))
        self.commands = {
            "hello": self.hello, "ismaster": self.hello, "ping": self.ok,
            "buildinfo": self.build_info, "endsessions": self.ok,
            "insert": self.insert, "update": self.update, "delete": self.delete,
            "find": self.find, "count": self.count, "getmore": self.get_more,
            "killcursors": self.kill_cursors,
            "findandmodify": self.find_and_modify, "createindexes": self.create_indexes,
            "listindexes": self.list_indexes, "drop": self.drop,
            "dropdatabase": self.drop_database, "doublestats": self.stats,
            "doubleafterfind": self.after_find,
        }
        self.armed = {}  # (db, collection) -> (filter, update): doubleAfterFind

    # ---- dispatch ---------------------------------------------------------

    def handle(self, request):
        """mockupdb autoresponder: answers every request, errors included, so
        that no client ever waits for a reply that will not come."""
        try:
            if not request.is_command or not request.docs:
                request.replies({"ok": 0, "errmsg": "legacy opcodes are not supported",
                                 "code": E_COMMAND_NOT_FOUND})
                return True
            doc = request.doc
            name = next(iter(doc), "")
            db = doc.get("$db") or (request.namespace or "admin").split(".")[0]
            fn = self.commands.get(name.lower())
            if fn is None:
                raise CommandError(E_COMMAND_NOT_FOUND, "no such command: '%s'" % name)
            reply = fn(db, doc)
            reply.setdefault("ok", 1)
            if name.lower() == "find":
                self.fire(db, doc)
            request.replies(reply)
        except CommandError as e:
            request.replies({"ok": 0, "errmsg": e.msg, "code": e.code})
        except Exception as e:  # a gap in the double: report it, never hang the client
            traceback.print_exc()
            request.replies({"ok": 0, "errmsg": "double: %s: %s" % (type(e).__name__, e),
                             "code": E_INTERNAL})
        return True

    def coll(self, db, doc):
        name = next(iter(doc.values()))
        if not isinstance(name, str) or not name:
            raise CommandError(E_BAD_VALUE, "collection name must be a non-empty string")
        return self.client[db][name]

    def count_write(self, db, doc):
        counts = self.writes_by_db[db][next(iter(doc))]
        self.writes += 1
        counts[0] += 1
        wc = doc.get("writeConcern") or {}
        if wc.get("w") == "majority" and wc.get("j") is True:
            self.majority_journaled += 1
            counts[1] += 1

    # ---- server commands --------------------------------------------------

    def ok(self, db, doc):
        return {}

    def hello(self, db, doc):
        return {
            "ismaster": True, "isWritablePrimary": True, "helloOk": True,
            "maxBsonObjectSize": MAX_BSON_SIZE, "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": MAX_WRITE_BATCH,
            "localTime": datetime.datetime.now(datetime.timezone.utc),
            "minWireVersion": 0, "maxWireVersion": MAX_WIRE_VERSION, "readOnly": False,
        }

    def build_info(self, db, doc):
        return {"version": "5.0.0-double", "versionArray": [5, 0, 0, 0],
                "maxBsonObjectSize": MAX_BSON_SIZE}

    def stats(self, db, doc):
        databases = {db: {name: {"writes": n, "majorityJournaled": m}
                          for name, (n, m) in by_name.items()}
                     for db, by_name in self.writes_by_db.items()}
        return {"writes": self.writes, "majorityJournaled": self.majority_journaled,
                "databases": databases}

    def after_find(self, db, doc):
        filt, update = doc.get("filter"), doc.get("update")
        if not isinstance(filt, Mapping) or not isinstance(update, Mapping) or not update:
            raise CommandError(E_BAD_VALUE, "doubleAfterFind needs a filter and an update")
        self.armed[(db, self.coll(db, doc).name)] = (filt, update)
        return {}

    def fire(self, db, doc):
        """The hook doubleAfterFind armed for this find's collection, once."""
        key = (db, self.coll(db, doc).name)
        hook = self.armed.get(key)
        if hook is not None and dict(doc.get("filter") or {}) == dict(hook[0]):
            del self.armed[key]
            self.coll(db, doc).update_one(hook[0], hook[1], upsert=True)

    # ---- writes -----------------------------------------------------------

    def insert(self, db, doc):
        self.count_write(db, doc)
        c = self.coll(db, doc)
        ordered = doc.get("ordered", True)
        n = 0
        errors = []
        for i, d in enumerate(doc.get("documents") or []):
            try:
                c.insert_one(d)
                n += 1
            except mongomock.DuplicateKeyError as e:
                errors.append({"index": i, "code": E_DUPLICATE_KEY,
                               "errmsg": _duplicate_message(e, _ns_parts(db, c.name), d)})
                if ordered:
                    break
            except mongomock.OperationFailure as e:
                errors.append({"index": i, "code": e.code or E_BAD_VALUE, "errmsg": str(e)})
                if ordered:
                    break
        reply = {"n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def update(self, db, doc):
        self.count_write(db, doc)
        c = self.coll(db, doc)
        ordered = doc.get("ordered", True)
        n = modified = 0
        upserted = []
        errors = []
        for i, u in enumerate(doc.get("updates") or []):
            q, spec = u.get("q") or {}, u.get("u") or {}
            upsert = bool(u.get("upsert", False))
            try:
                if isinstance(spec, Mapping) and spec and not next(iter(spec)).startswith("$"):
                    r = c.replace_one(q, spec, upsert=upsert)
                elif u.get("multi"):
                    r = c.update_many(q, spec, upsert=upsert)
                else:
                    r = c.update_one(q, spec, upsert=upsert)
            except mongomock.DuplicateKeyError as e:
                errors.append({"index": i, "code": E_DUPLICATE_KEY,
                               "errmsg": _duplicate_message(e, _ns_parts(db, c.name), q)})
                if ordered:
                    break
                continue
            except mongomock.OperationFailure as e:
                errors.append({"index": i, "code": e.code or E_BAD_VALUE, "errmsg": str(e)})
                if ordered:
                    break
                continue
            n += r.matched_count
            modified += r.modified_count
            if r.upserted_id is not None:
                n += 1
                upserted.append({"index": i, "_id": r.upserted_id})
        reply = {"n": n, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def delete(self, db, doc):
        self.count_write(db, doc)
        c = self.coll(db, doc)
        n = 0
        for d in doc.get("deletes") or []:
            q = d.get("q") or {}
            r = c.delete_one(q) if d.get("limit", 0) == 1 else c.delete_many(q)
            n += r.deleted_count
        return {"n": n}

    def find_and_modify(self, db, doc):
        self.count_write(db, doc)
        c = self.coll(db, doc)
        query = doc.get("query") or {}
        sort = list((doc.get("sort") or {}).items()) or None
        fields = doc.get("fields") or None
        before = c.find_one(query, sort=sort)
        if doc.get("remove"):
            value = c.find_one_and_delete(query, projection=fields, sort=sort)
            return {"lastErrorObject": {"n": 1 if value is not None else 0}, "value": value}
        update = doc.get("update")
        if not isinstance(update, Mapping) or not update:
            raise CommandError(E_BAD_VALUE, "findAndModify needs an update document or remove")
        upsert = bool(doc.get("upsert", False))
        new = bool(doc.get("new", False))
        try:
            if not next(iter(update)).startswith("$"):
                value = c.find_one_and_replace(query, update, projection=fields, sort=sort,
                                               upsert=upsert, return_document=new)
            else:
                value = c.find_one_and_update(query, update, projection=fields, sort=sort,
                                              upsert=upsert, return_document=new)
        except mongomock.DuplicateKeyError as e:
            raise CommandError(E_DUPLICATE_KEY,
                               _duplicate_message(e, _ns_parts(db, c.name), query))
        leo = {"n": 1 if before is not None or upsert else 0,
               "updatedExisting": before is not None}
        if before is None and upsert:
            found = c.find_one(query, sort=sort)
            if found is not None:
                leo["upserted"] = found["_id"]
        return {"lastErrorObject": leo, "value": value}

    # ---- reads ------------------------------------------------------------

    def cursor_reply(self, ns, docs, batch_size, first):
        if not batch_size or batch_size <= 0:
            batch_size = DEFAULT_BATCH if first else len(docs)
        batch, rest = docs[:batch_size], docs[batch_size:]
        cid = 0
        if rest:
            cid = random.randint(1, 2 ** 62)
            self.cursors[cid] = (ns, rest)
        return {"cursor": {"id": bson.int64.Int64(cid), "ns": ns,
                           "firstBatch" if first else "nextBatch": batch}}

    @staticmethod
    def find_in_id_order(c, filt, sort, skip, limit, projection):
        """A find sorted on _id alone, with a limit, on a collection whose
        _ids are numbers (paymentd's feed): MongoDB walks its _id index and
        stops at the limit; mongomock would match and sort every document.
        Returns the documents, or None when the find is not of that kind."""
        if list(sort) != ["_id"] or not limit:
            return None
        documents = c._store._documents
        cond = filt.get("_id")
        if cond is None:
            keys, all_numbers = _numeric_ids(c._store)
            if not all_numbers:
                return None
        else:
            bounds = _id_range(cond)
            if bounds is None:
                return None
            keys = _ids_in_range(c._store, bounds)
        if sort["_id"] < 0:
            keys.reverse()
        may = _may_match(filt)
        ids = []
        for k in keys:
            d = documents[k]
            if (may is None or may(d)) and mongomock_filtering.filter_applies(filt, d):
                ids.append(k)
                if len(ids) >= skip + limit:
                    break
        ids = ids[skip:]
        proj, strip = projection, False
        if proj and proj.get("_id") in (0, False):
            proj = {k: v for k, v in proj.items() if k != "_id"} or None
            strip = True
        by_id = {d["_id"]: d for d in c.find({"_id": {"$in": ids}}, proj)}
        found = [by_id[k] for k in ids if k in by_id]
        if strip:
            for d in found:
                d.pop("_id", None)
        return found

    def find(self, db, doc):
        c = self.coll(db, doc)
        limit = abs(int(doc.get("limit") or 0))
        docs = self.find_in_id_order(c, doc.get("filter") or {}, doc.get("sort") or {},
                                     int(doc.get("skip") or 0), limit,
                                     doc.get("projection") or None)
        if docs is not None:
            return self.find_reply(db, c, doc, docs)
        cur = c.find(doc.get("filter") or {}, doc.get("projection") or None)
        sort = doc.get("sort")
        if sort:
            cur = cur.sort(list(sort.items()))
        if doc.get("skip"):
            cur = cur.skip(int(doc["skip"]))
        if limit:
            cur = cur.limit(limit)
        return self.find_reply(db, c, doc, list(cur))

    def count(self, db, doc):
        """The documents a query matches (skip and limit as MongoDB's count)."""
        c = self.coll(db, doc)
        n = c.count_documents(doc.get("query") or {})
        n = max(0, n - int(doc.get("skip") or 0))
        limit = abs(int(doc.get("limit") or 0))
        return {"n": min(n, limit) if limit else n}

    def find_reply(self, db, c, doc, docs):
        if doc.get("singleBatch"):
            return self.cursor_reply(_ns_parts(db, c.name), docs, len(docs) or 1, True)
        return self.cursor_reply(_ns_parts(db, c.name), docs, doc.get("batchSize"), True)

    def get_more(self, db, doc):
        cid = int(doc.get("getMore") or 0)
        entry = self.cursors.pop(cid, None)
        if entry is None:
            raise CommandError(E_CURSOR_NOT_FOUND, "cursor id %d not found" % cid)
        ns, rest = entry
        reply = self.cursor_reply(ns, rest, doc.get("batchSize"), False)
        if reply["cursor"]["id"]:
            # Keep the client's cursor id for the rest.
            self.cursors[cid] = self.cursors.pop(reply["cursor"]["id"])
            reply["cursor"]["id"] = bson.int64.Int64(cid)
        return reply

    def kill_cursors(self, db, doc):
        killed = []
        for cid in doc.get("cursors") or []:
            if self.cursors.pop(int(cid), None) is not None:
                killed.append(cid)
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [],
                "cursorsUnknown": []}

    # ---- indexes and collections -----------------------------------------

    @staticmethod
    def check_index(existing, name, key, kw):
        """MongoDB's rules for an index that may exist already: the same name
        with another key or options is error 86; an equivalent index (the
        same key and partial filter) under another name is error 85.
        Returns whether the index exists as asked (a no-op)."""
        for other, info in existing.items():
            same_key = [tuple(k) for k in info["key"]] == [tuple(k) for k in key]
            same_filter = info.get("partialFilterExpression") == kw.get("partialFilterExpression")
            if other == name:
                if (not same_key or not same_filter
                        or bool(info.get("unique")) != bool(kw.get("unique"))):
                    raise CommandError(E_INDEX_KEY_SPECS_CONFLICT,
                                       "An existing index has the same name as the requested "
                                       "index but a different key or options: %s" % name)
                return True
            if same_key and same_filter:
                raise CommandError(E_INDEX_OPTIONS_CONFLICT,
                                   "Index already exists with a different name: %s" % other)
        return False

    def create_indexes(self, db, doc):
        self.count_write(db, doc)
        c = self.coll(db, doc)
        before = len(c.index_information()) or 1
        for spec in doc.get("indexes") or []:
            key = list((spec.get("key") or {}).items())
            if not key:
                raise CommandError(E_BAD_VALUE, "index key pattern must not be empty")
            kw = {"name": spec.get("name")}
            for opt in ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds"):
                if opt in spec:
                    kw[opt] = spec[opt]
            if self.check_index(c.index_information(), kw["name"], key, kw):
                continue
            try:
                c.create_index(key, **kw)
            except mongomock.DuplicateKeyError as e:
                raise CommandError(E_DUPLICATE_KEY, str(e))
            except mongomock.OperationFailure as e:
                raise CommandError(E_INDEX_OPTIONS_CONFLICT, str(e))
        after = len(c.index_information())
        return {"createdCollectionAutomatically": before == 1 and after > 1,
                "numIndexesBefore": before, "numIndexesAfter": after}

    def list_indexes(self, db, doc):
        c = self.coll(db, doc)
        specs = [dict(s, key=collections.OrderedDict(s["key"].items()))
                 for s in c.list_indexes()]
        return self.cursor_reply(_ns_parts(db, c.name), specs, doc.get("cursor", {}).get(
            "batchSize"), True)

    def drop(self, db, doc):
        c = self.coll(db, doc)
        c.drop()
        return {"ns": _ns_parts(db, c.name)}

    def drop_database(self, db, doc):
        self.client.drop_database(db)
        return {"dropped": db}

    # ---- persistence ------------------------------------------------------

    def save(self, path):
        """Writes every database as a stream of BSON records, then renames it
        into place: a crash mid-way leaves the previous file."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            for db_name in self.client.list_database_names():
                db = self.client[db_name]
                for coll_name in db.list_collection_names():
                    c = db[coll_name]
                    for spec in c.list_indexes():
                        if spec["name"] == "_id_":
                            continue
                        rec = {"db": db_name, "coll": coll_name, "index": dict(spec)}
                        rec["index"]["key"] = [list(k) for k in spec["key"].items()]
                        f.write(bson.encode(rec))
                    for d in c.find({}):
                        f.write(bson.encode({"db": db_name, "coll": coll_name, "doc": d}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path):
        if not os.path.exists(path):
            return
        opts = bson.codec_options.CodecOptions(document_class=collections.OrderedDict)
        with open(path, "rb") as f:
            for rec in bson.decode_file_iter(f, opts):
                c = self.client[rec["db"]][rec["coll"]]
                if "index" in rec:
                    spec = rec["index"]
                    kw = {k: spec[k] for k in ("unique", "sparse", "partialFilterExpression")
                          if k in spec}
                    c.create_index([tuple(k) for k in spec["key"]], name=spec["name"], **kw)
                else:
                    c.insert_one(rec["doc"])


def _quiet(responder):
    """mockupdb formats every request and reply for its log even when it
    logs nothing (a quarter of the double's time), and matches every
    request against the responder's catch-all matcher: neither is needed
    without -v."""
    for cls in (mockupdb.Request, mockupdb.OpQuery, mockupdb.OpKillCursors, mockupdb.Reply,
                mockupdb.OpMsgReply):
        if "__repr__" in vars(cls):
            cls.__repr__ = lambda self: "<%s>" % type(self).__name__

    class MatchAll:
        def matches(self, request):
            return True
    responder._matcher = MatchAll()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1, 0 for any")
    ap.add_argument("--data", default=None, help="load from and save to this file")
    ap.add_argument("--ready", default=None, help="create this file once listening")
    ap.add_argument("-v", dest="verbose", action="store_true", help="log every request")
    args = ap.parse_args()

    double = Double()
    if args.data:
        double.load(args.data)

    server = mockupdb.MockupDB(port=args.port or None, verbose=args.verbose,
                               request_timeout=int(1e6))
    responder = server.autoresponds(double.handle)
    if not args.verbose:
        _quiet(responder)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.run()
    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % server.port)
        os.replace(tmp, args.ready)
    sys.stdout.write("double: listening on 127.0.0.1:%d\n" % server.port)
    sys.stdout.flush()
    while not stop.is_set():
        stop.wait(1.0)
    # mockupdb handles one request at a time under this lock: holding it,
    # no command is half done and none starts.
    with server._lock:
        if args.data:
            double.save(args.data)
        sys.stdout.write("double: stopped%s\n" % (", data saved" if args.data else ""))
        sys.stdout.flush()
        os._exit(0)  # mockupdb's exit hooks would wait for every connection thread


if __name__ == "__main__":
    main()
