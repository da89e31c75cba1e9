#!/usr/bin/python3
"""gen_corpus: writes the generated seed inputs of the fuzz harnesses.

Usage (from fuzz/, or through `make -C fuzz corpus`):
    /usr/bin/python3 gen_corpus.py --cursors ../build/fuzz/seed_cursors

Writes, overwriting files of the same name and touching no other file:
  corpus/body/    seed-*  spec/seed-payment.json (compact, to fit -max_len)
                          and its one-value-fixed variant
                  spec-*  bodies assembled from the `example:` values of
                          spec/seed-swagger.yml
                  mut-*   mutations of the fixed seed: wrong types, nulls,
                          long strings, nesting 31/32/33, invalid UTF-8,
                          duplicate keys, huge numbers, every enum wrong,
                          money and scheme rules, patch bodies
  corpus/query/   seed-*  query strings over every filter and page parameter
  corpus/cursor/  seed-*  cursors made by payment_cursor_encode() (through
                          the seed_cursors helper) and garbage
  corpus/merge/   rfc-*   RFC 7396 appendix A, as TARGET 0xFF PATCH
  body.dict, query.dict, merge.dict   libFuzzer dictionaries
Inputs that fuzzing found (named by their SHA-1) are kept as they are.
"""

import argparse
import copy
import json
import os
import subprocess
import sys

import re

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAX_BYTES = 8192  # every committed input stays below 8 KiB


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write(kind, name, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) >= MAX_BYTES:
        sys.exit("gen_corpus: %s/%s is %d bytes, over %d" % (kind, name, len(data), MAX_BYTES))
    folder = os.path.join(HERE, "corpus", kind)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- body -------------------------------------------------------------------

def spec_examples(spec):
    """Bodies built from the example values of the spec's definitions."""
    defs = spec["definitions"]

    def resolve(node):
        while "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        return node

    def example(node, depth=0):
        node = resolve(node)
        if "example" in node:
            return copy.deepcopy(node["example"])
        if "allOf" in node:
            out = {}
            for part in node["allOf"]:
                value = example(part, depth + 1)
                if isinstance(value, dict):
                    out.update(value)
            return out
        kind = node.get("type")
        if kind == "object" or "properties" in node:
            if depth > 12:
                return {}
            return {name: example(member, depth + 1)
                    for name, member in sorted(node.get("properties", {}).items())}
        if kind == "array":
            return [example(node.get("items", {}), depth + 1)]
        if "enum" in node:
            return node["enum"][0]
        # No example: a placeholder of the declared type and format, as the
        # spec's own tooling would show it.
        formats = {"uuid": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "date": "2019-03-21",
                   "date-time": "2019-03-21T10:00:00.000Z"}
        if kind == "string" and node.get("format") in formats:
            return formats[node["format"]]
        return {"string": "string", "integer": 0, "number": 0, "boolean": True}.get(kind)

    bodies = {}
    bodies["spec-payment.json"] = {"data": example(defs["Payment"])}
    bodies["spec-payment-with-id.json"] = {"data": example(defs["PaymentWithId"])}
    # The placeholder "string" breaks payment_purpose_coded's x-length of 4,
    # as in seed-payment.json; fixed, the spec's example is a valid create.
    fixed = copy.deepcopy(bodies["spec-payment.json"])
    fixed["data"]["attributes"]["payment_purpose_coded"] = "X"
    bodies["spec-payment-fixed.json"] = fixed
    for name in ("PaymentCreation", "PaymentUpdate"):
        if name in defs:
            bodies["spec-%s.json" % name.lower()] = example(defs[name])
    for name in sorted(defs):
        if name in ("Payment", "PaymentWithId", "PaymentCreation", "PaymentUpdate"):
            continue
        # Other resources of the spec shaped like a payment (the ones of
        # relationships): bodies a confused client could send.
        value = example(defs[name])
        if isinstance(value, dict) and "attributes" in value:
            bodies["spec-def-%s.json" % name.lower()] = {"data": value}
    return bodies


def set_path(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def nested(levels):
    """A value nested `levels` deep: objects inside an array at the end."""
    value = "deep"
    for i in range(levels):
        value = {"n": value} if i % 2 else [value]
    return value


def body_mutations(fixed):
    A = ("data", "attributes")
    BP = A + ("beneficiary_party",)
    muts = {}

    def mut(name, path, value):
        doc = copy.deepcopy(fixed)
        set_path(doc, path, value)
        muts[name] = compact(doc)

    def drop(name, path):
        doc = copy.deepcopy(fixed)
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        muts[name] = compact(doc)

    # Wrong types.
    mut("mut-type-amount-number.json", A + ("amount",), 26.0)
    mut("mut-type-org-number.json", ("data", "organisation_id"), 12345)
    mut("mut-type-attributes-array.json", A, [fixed["data"]["attributes"]])
    mut("mut-type-data-string.json", ("data",), "payments")
    mut("mut-type-version-string.json", ("data", "version"), "0")
    mut("mut-type-version-real.json", ("data", "version"), 0.0)
    mut("mut-type-account-type-string.json", BP + ("account_type",), "0")
    mut("mut-type-address-string.json", BP + ("address",), "1 Clarence Mew")
    mut("mut-type-address-item-number.json", BP + ("address",), ["1 Clarence Mew", 7])
    mut("mut-type-relationships-array.json", ("data", "relationships"), [])
    mut("mut-type-swift-header-string.json", A + ("swift", "header"), "MT103")
    mut("mut-type-pattern.json", ("data", "type"), "pay-ments")
    mut("mut-type-empty.json", ("data", "type"), "")
    mut("mut-version-negative.json", ("data", "version"), -1)
    mut("mut-version-one.json", ("data", "version"), 1)
    # Nulls.
    mut("mut-null-data.json", ("data",), None)
    mut("mut-null-attributes.json", A, None)
    mut("mut-null-org.json", ("data", "organisation_id"), None)
    mut("mut-null-amount.json", A + ("amount",), None)
    mut("mut-null-currency.json", A + ("currency",), None)
    mut("mut-null-relationships.json", ("data", "relationships"), None)
    mut("mut-null-array-item.json", BP + ("address",), [None, "Horsforth", {"x": None}])
    doc = copy.deepcopy(fixed)
    for key in list(doc["data"]["attributes"]):
        if key not in ("amount", "currency"):
            doc["data"]["attributes"][key] = None
    muts["mut-null-every-optional.json"] = compact(doc)
    drop("mut-missing-org.json", ("data", "organisation_id"))
    drop("mut-missing-amount.json", A + ("amount",))
    # Long strings (x-length counts characters, not bytes).
    mut("mut-long-name-40.json", BP + ("account_name",), "J" * 40)
    mut("mut-long-name-41.json", BP + ("account_name",), "J" * 41)
    mut("mut-long-name-40-utf8.json", BP + ("account_name",), "\u00e9" * 40)
    mut("mut-long-name-41-utf8.json", BP + ("account_name",), "\u00e9" * 41)
    mut("mut-long-address-item.json", BP + ("address",), ["x" * 141])
    mut("mut-long-undeclared.json", A + ("custom",), "y" * 1500)
    # Nesting: root 1, data 2, attributes 3, then the custom member's levels.
    for total in (31, 32, 33):
        mut("mut-depth-%d.json" % total, A + ("custom",), nested(total - 3))
    muts["mut-depth-brackets-in-string.json"] = compact(
        {"data": {"organisation_id": fixed["data"]["organisation_id"],
                  "attributes": {"amount": "1.00", "currency": "EUR",
                                 "reference": "[[[[{{{{" * 8 + "\\\"]]"}}})
    # Invalid UTF-8 and other byte-level trouble.
    base = compact(fixed)
    muts["mut-utf8-bad-continuation.json"] = base.replace(b"James Bond", b"James \xc3\x28ond", 1)
    muts["mut-utf8-overlong.json"] = base.replace(b"James Bond", b"James \xc0\xafond", 1)
    muts["mut-utf8-surrogate.json"] = base.replace(b"James Bond", b"James \\ud800ond", 1)
    muts["mut-utf8-raw-surrogate.json"] = base.replace(b"James Bond", b"James \xed\xa0\x80ond", 1)
    muts["mut-nul-escape.json"] = base.replace(b"rent for oct", b"rent\\u0000oct", 1)
    muts["mut-nul-raw.json"] = base.replace(b"rent for oct", b"rent\x00oct", 1)
    muts["mut-truncated.json"] = base[: len(base) // 2]
    muts["mut-trailing-garbage.json"] = base + b"}"
    # Duplicate keys.
    muts["mut-dup-amount.json"] = base.replace(b'"amount":"26.00"', b'"amount":"26.00","amount":"1"', 1)
    muts["mut-dup-data.json"] = b'{"data":{},' + base[1:]
    # Huge numbers.
    mut("mut-huge-account-type.json", BP + ("account_type",), 99999999999999999999)
    muts["mut-huge-exponent.json"] = base.replace(b'"account_type":0', b'"account_type":1e400', 1)
    muts["mut-huge-version.json"] = base.replace(b'"version":0', b'"version":9223372036854775808', 1)
    muts["mut-minus-zero.json"] = base.replace(b'"account_type":0', b'"account_type":-0.0', 1)
    # Every enum wrong, and the money rules.
    mut("mut-enum-account-number-code.json", BP + ("account_number_code",), "SWIFT")
    mut("mut-enum-debtor-account-number-code.json", A + ("debtor_party", "account_number_code"), "iban")
    for place in ("beneficiary_party", "debtor_party"):
        mut("mut-enum-%s-bank-id-code.json" % place, A + (place, "account_with", "bank_id_code"), "NOPE")
    for place in ("intermediary_bank", "receivers_correspondent", "reimbursement",
                  "senders_correspondent"):
        mut("mut-enum-%s-bank-id-code.json" % place, A + (place, "bank_id_code"), "")
    mut("mut-enum-scheme.json", A + ("payment_scheme",), "CHAPS")
    mut("mut-enum-currency-withdrawn.json", A + ("currency",), "HRK")
    mut("mut-enum-currency-lower.json", A + ("currency",), "eur")
    money = [
        ("fps-max", "FPS", "GBP", "250000.00"), ("fps-over", "FPS", "GBP", "250000.01"),
        ("bacs-over", "BACS", "GBP", "20000000.01"), ("sepainstant-over", "SEPAINSTANT", "EUR", "15000.01"),
        ("sepact-gbp", "SEPACT", "GBP", "1.00"), ("swift-big", "SWIFT", "USD", "99999999999999999.99"),
        ("zero", "FPS", "GBP", "0.00"), ("leading-zero", "FPS", "GBP", "01.5"),
        ("trailing-point", "FPS", "GBP", "10."), ("leading-point", "FPS", "GBP", ".5"),
        ("exponent", "FPS", "GBP", "1e3"), ("negative", "FPS", "GBP", "-1"),
        ("jpy-decimals", "SWIFT", "JPY", "10.5"), ("bhd-3", "SWIFT", "BHD", "1.234"),
        ("bhd-4", "SWIFT", "BHD", "1.2345"), ("len-21", "SWIFT", "USD", "1" * 21),
    ]
    for name, scheme, currency, amount in money:
        doc = copy.deepcopy(fixed)
        doc["data"]["attributes"].update(payment_scheme=scheme, currency=currency, amount=amount)
        muts["mut-money-%s.json" % name] = compact(doc)
    # Formats.
    mut("mut-date-feb-30.json", A + ("processing_date",), "2015-02-30")
    mut("mut-date-leap.json", A + ("processing_date",), "2016-02-29")
    mut("mut-date-short.json", BP + ("birth_date",), "1977-2-28")
    mut("mut-datetime-space.json", A + ("payment_acceptance_datetime",), "2017-09-30 12:36:02")
    mut("mut-uuid-upper.json", ("data", "organisation_id"), "EE2FB143-6DFE-4787-B183-CA8DDD4164D2")
    mut("mut-uuid-braces.json", ("data", "organisation_id"), "{ee2fb143-6dfe-4787-b183-ca8ddd4164d2}")
    mut("mut-uuid-32.json", ("data", "organisation_id"), "ee2fb1436dfe4787b183ca8ddd4164d2")
    mut("mut-id-given.json", ("data", "id"), "7826C3CB-D6FD-41D0-B187-DC23BA928772")
    mut("mut-id-bad.json", ("data", "id"), "7826c3cb")
    # Not an object, or nearly nothing.
    muts["mut-root-array.json"] = b"[" + base + b"]"
    muts["mut-root-string.json"] = b'"data"'
    muts["mut-root-empty-object.json"] = b"{}"
    muts["mut-whitespace.json"] = b" \n\t "
    # Patch bodies (valid for PATCH, merged into a stored payment).
    muts["mut-patch-amount.json"] = compact(
        {"data": {"version": 0, "attributes": {"amount": "30.00", "reference": None}}})
    muts["mut-patch-currency-jpy.json"] = compact({"data": {"attributes": {"currency": "JPY"}}})
    muts["mut-patch-nested.json"] = compact(
        {"data": {"attributes": {"beneficiary_party": {"address": None, "account_name": "X"},
                                 "fx": "gone", "custom": {"kept": None, "new": [None]}},
                  "relationships": {"payment_return": {"data": []}, "x": None}}})
    muts["mut-patch-remove-amount.json"] = compact({"data": {"attributes": {"amount": None}}})
    return muts


def gen_body(spec):
    with open(os.path.join(ROOT, "spec", "seed-payment.json"), "rb") as f:
        seed = json.load(f)
    fixed = copy.deepcopy(seed)
    fixed["data"]["attributes"]["payment_purpose_coded"] = "X"
    write("body", "seed-payment.json", compact(seed))
    write("body", "seed-payment-fixed.json", compact(fixed))
    for name, doc in sorted(spec_examples(spec).items()):
        write("body", name, compact(doc))
    for name, data in sorted(body_mutations(fixed).items()):
        write("body", name, data)


# ---- query ------------------------------------------------------------------

ORG = "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"


def gen_query(cursors):
    c = cursors
    queries = {
        "empty": "",
        "org": "filter[organisation_id]=" + ORG,
        "org-upper-two": "filter[organisation_id]=%s,%s" % (ORG.upper(), "7826c3cb-d6fd-41d0-b187-dc23ba928772"),
        "org-bad": "filter[organisation_id]=ee2fb143",
        "currency": "filter[currency]=EUR,GBP,JPY",
        "currency-withdrawn": "filter[currency]=HRK",
        "currency-lower": "filter[currency]=eur",
        "scheme-all": "filter[payment_scheme]=FPS,BACS,SEPAINSTANT,SEPACT,SWIFT",
        "scheme-bad": "filter[payment_scheme]=CHAPS",
        "type-encoded": "filter[payment_type]=Direct%20Debit,Credit+Transfer",
        "reference": "filter[reference]=rent%20for%20oct",
        "reference-empty": "filter[reference]=",
        "reference-no-value": "filter[reference]",
        "reference-empty-item": "filter[reference]=a,,b",
        "reference-comma-encoded": "filter[reference]=a%2Cb",
        "reference-nul": "filter[reference]=a%00b",
        "reference-utf8": "filter[reference]=%C3%A9t%C3%A9,%FF%FE",
        "e2e": "filter[end_to_end_reference]=PAYMENT%20REF%3A%2020094",
        "processing-dates": "filter[processing_date_from]=2015-02-01&filter[processing_date_to]=2015-02-28",
        "processing-dates-reversed": "filter[processing_date_from]=2015-03-01&filter[processing_date_to]=2015-02-28",
        "processing-date-bad": "filter[processing_date_from]=2015-02-30",
        "amounts": "filter[amount][from]=10.5&filter[amount][to]=100",
        "amounts-reversed": "filter[amount][from]=100.00&filter[amount][to]=99.999",
        "amount-negative": "filter[amount][from]=-1",
        "amount-exponent": "filter[amount][to]=1e3",
        "amount-zero-long": "filter[amount][from]=0.00000000000000000000",
        "amount-list": "filter[amount][from]=1,2",
        "created-dates": "filter[created_date_from]=2026-01-01&filter[created_date_to]=2026-01-31",
        "created-extremes": "filter[created_date_from]=0000-01-01&filter[created_date_to]=9999-12-31",
        "created-reversed": "filter[created_date_from]=2026-02-01&filter[created_date_to]=2026-01-31",
        "size-1": "page[size]=1",
        "size-1000": "page[size]=1000",
        "size-0": "page[size]=0",
        "size-1001": "page[size]=1001",
        "size-text": "page[size]=ten",
        "number": "page[number]=9&page[size]=10",
        "number-limit": "page[number]=99&page[size]=100",
        "number-over": "page[number]=100&page[size]=100",
        "number-huge": "page[number]=4294967296",
        "after": "page[after]=" + c[1],
        "after-size": "page[size]=50&page[after]=" + c[-1],
        "after-and-number": "page[after]=%s&page[number]=1" % c[0],
        "after-bad": "page[after]=AQAAAAAAAAAAd3lXiP5",
        "repeated": "page[size]=10&page[size]=10",
        "unknown": "foo=bar",
        "unknown-page": "page[foo]=1",
        "unknown-filter": "filter[amount]=1",
        "too-many-values": "filter[currency]=" + ",".join(["EUR"] * 101),
        "all": ("filter[organisation_id]=%s&filter[currency]=GBP&filter[payment_scheme]=FPS"
                "&filter[payment_type]=Credit&filter[reference]=rent&filter[end_to_end_reference]=e2e"
                "&filter[processing_date_from]=2015-01-01&filter[processing_date_to]=2015-12-31"
                "&filter[amount][from]=0.01&filter[amount][to]=250000&filter[created_date_from]=2026-01-01"
                "&filter[created_date_to]=2026-12-31&page[size]=25&page[number]=3") % ORG,
        "separators": "&&page[size]=5&&filter[currency]=EUR&",
    }
    for name, q in queries.items():
        write("query", "seed-%s" % name, q)


# ---- cursor -----------------------------------------------------------------

CURSOR_SEQS = ["0", "1", "2", "42", "1000", "2147483648", "4294967296",
               "9007199254740993", "9223372036854775807"]


def gen_cursor(cursors):
    for seq, cur in zip(CURSOR_SEQS, cursors):
        write("cursor", "seed-valid-%s" % seq, cur)
    good = cursors[3]
    garbage = {
        "empty": "",
        "short": good[:-1],
        "long": good + "A",
        "padded": good + "==",
        "std-alphabet": good.replace("-", "+").replace("_", "/")[:-1] + "+",
        "edit-payload": good[:8] + ("B" if good[8] != "B" else "C") + good[9:],
        "edit-check": good[:-1] + ("A" if good[-1] != "A" else "B"),
        "lowercase": good.lower(),
        "nul-inside": good[:10] + "\0" + good[11:],
        "space": " " + good[1:],
        "high-bytes": "\xc3\xa9" * 10,
        "number": "42",
    }
    for name, text in garbage.items():
        write("cursor", "seed-garbage-%s" % name, text.encode("latin-1") if name == "high-bytes" else text)


# ---- merge ------------------------------------------------------------------

RFC7396 = [
    ('{"a":"b"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}'),
    ('{"a":"b"}', '{"a":null}'),
    ('{"a":"b","b":"c"}', '{"a":null}'),
    ('{"a":["b"]}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]'),
    ('{"a":"foo"}', 'null'),
    ('{"a":"foo"}', '"bar"'),
    ('{"e":null}', '{"a":1}'),
    ('[1,2]', '{"a":"b","c":null}'),
    ('{}', '{"a":{"bb":{"ccc":null}}}'),
    ('{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},'
     '"tags":["example","sample"],"content":"This will be unchanged"}',
     '{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},'
     '"tags":["example"]}'),
]


def gen_merge():
    for i, (target, patch) in enumerate(RFC7396, 1):
        write("merge", "rfc-%02d" % i, target.encode() + b"\xff" + patch.encode())
    write("merge", "rfc-x-attributes",
          b'{"amount":"26.00","currency":"GBP","beneficiary_party":{"address":["a","b"],'
          b'"account_name":"James Bond"}}\xff'
          b'{"amount":"30.00","beneficiary_party":{"address":null,"x":{"y":null}},"fx":{}}')
    write("merge", "rfc-x-scalars", b'"a"\xff{"k\\u00e9":"v\\u0000w"}')


# ---- dictionaries -----------------------------------------------------------

def dict_entry(data):
    """One libFuzzer dictionary line: printable ASCII as is, the rest as \\xNN."""
    if isinstance(data, str):
        data = data.encode()
    out = ""
    for b in data:
        c = chr(b)
        if c in '"\\':
            out += "\\" + c
        elif 32 <= b < 127:
            out += c
        else:
            out += "\\x%02x" % b
    return '"%s"\n' % out


def gen_dicts(spec):
    schema = open(os.path.join(ROOT, "src", "payment", "schema_gen.c")).read()
    names = sorted(set(re.findall(r'\.name = "([a-z_]+)"', schema)))
    enums = sorted(set(re.findall(r'^\s+"([A-Z]+)",$', schema, re.M)))
    body = ["# fuzz_body: JSON tokens, the envelope and every member name the spec\n",
            "# declares, enum values, money, dates and UTF-8 trouble.  Generated by\n",
            "# gen_corpus.py from src/payment/schema_gen.c.\n"]
    tokens = ["{", "}", "[", "]", ":", ",", '"', '\\"', "\\u0000", "\\ud800", "\\u00e9",
              "true", "false", "null", "-0", "0.0", "1e400", "99999999999999999999", "-1"]
    body += [dict_entry(t) for t in tokens]
    envelope = ["data", "type", "id", "version", "organisation_id", "attributes",
                "relationships", "created_on", "modified_on"]
    body += [dict_entry('"%s":' % n) for n in envelope + names]
    values = enums + ["payments", "FPS", "BACS", "SEPAINSTANT", "SEPACT", "SWIFT", "EUR", "GBP",
                      "JPY", "BHD", "USD", "HRK", "CLF", "XAU", "26.00", "250000.00",
                      "250000.01", "15000.00", "20000000.00", "0.001", "01.5", "10.", ".5",
                      "2015-02-12", "2016-02-29", "2015-02-30", "2017-09-30T12:36:02.123+01:00",
                      "2019-03-21T10:00:00Z", ORG, "7826C3CB-D6FD-41D0-B187-DC23BA928772"]
    body += [dict_entry('"%s"' % v) for v in sorted(set(values))]
    body += [dict_entry(b) for b in (b"\xc3\xa9", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")]
    with open(os.path.join(HERE, "body.dict"), "w") as f:
        f.writelines(body)

    keys = ["filter[organisation_id]", "filter[currency]", "filter[payment_scheme]",
            "filter[payment_type]", "filter[reference]", "filter[end_to_end_reference]",
            "filter[processing_date_from]", "filter[processing_date_to]",
            "filter[amount][from]", "filter[amount][to]", "filter[created_date_from]",
            "filter[created_date_to]", "page[size]", "page[number]", "page[after]"]
    query = ["# fuzz_query: every parameter the list endpoint knows, separators, values.\n",
             "# Generated by gen_corpus.py.\n"]
    query += [dict_entry(k + "=") for k in keys]
    query += [dict_entry(t) for t in ("&", "=", ",", "+", "%", "%00", "%20", "%2C", "%26",
                                      "%3D", "%FF", "filter[", "page[", "]")]
    query += [dict_entry(v) for v in ("EUR", "GBP", "HRK", "FPS", "BACS", "SEPAINSTANT",
                                      "SEPACT", "SWIFT", "2026-01-01", "0000-01-01",
                                      "9999-12-31", "2016-02-29", "1000", "1001", "10.50",
                                      "0.00000000000000000001", "4294967295", ORG)]
    with open(os.path.join(HERE, "query.dict"), "w") as f:
        f.writelines(query)

    merge = ["# fuzz_merge: the separator and JSON tokens.  Generated by gen_corpus.py.\n"]
    merge += [dict_entry(t) for t in (b"\xff", "{", "}", "[", "]", ":", ",", "null", "true",
                                      "false", '{"a":', '{"a":null}', '{"a":{}}', "[]", "{}",
                                      '"a"', "\\u0000", "-0.0", "1e308")]
    with open(os.path.join(HERE, "merge.dict"), "w") as f:
        f.writelines(merge)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cursors", required=True, help="the seed_cursors helper")
    args = parser.parse_args()
    cursors = subprocess.run([args.cursors] + CURSOR_SEQS, check=True, capture_output=True,
                             text=True).stdout.split()
    if len(cursors) != len(CURSOR_SEQS):
        sys.exit("gen_corpus: seed_cursors printed %d cursors" % len(cursors))
    with open(os.path.join(ROOT, "spec", "seed-swagger.yml")) as f:
        spec = yaml.safe_load(f)
    gen_body(spec)
    gen_query(cursors)
    gen_cursor(cursors)
    gen_merge()
    gen_dicts(spec)


if __name__ == "__main__":
    main()
