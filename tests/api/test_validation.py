"""Validation of payment documents through the API: one table of single
problems (each must be reported under its field, alone), valid edge values,
and several problems reported at once."""

from harness import (check, error_fields, expect_error, expect_status, expect_validation, new_id,
                     payment, test)

DEL = object()  # remove the member
A = "data.attributes."


def _set(obj, path, value):
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj.setdefault(k, {})
    if value is DEL:
        obj.pop(keys[-1], None)
    else:
        obj[keys[-1]] = value


def _body(changes, data_changes=None):
    b = payment()
    for path, v in changes.items():
        _set(b["data"]["attributes"], path, v)
    for path, v in (data_changes or {}).items():
        _set(b["data"], path, v)
    return b


# (attribute changes, fields that must be named; [] means valid).  Scheme
# limits may be reported under amount, currency or payment_scheme.
SCHEME = ("any", {A + "amount", A + "currency", A + "payment_scheme"})

CASES = [
    # amount: a positive plain decimal string, at most 20 characters
    ({"amount": "10.00"}, []),
    ({"amount": "10"}, []),
    ({"amount": "0.01"}, []),
    ({"amount": "10.5"}, []),
    ({"amount": "12345678901234567.89"}, []),
    ({"amount": "123456789012345678.90"}, [A + "amount"]),
    ({"amount": "01.5"}, [A + "amount"]),
    ({"amount": "00"}, [A + "amount"]),
    ({"amount": "10."}, [A + "amount"]),
    ({"amount": ".5"}, [A + "amount"]),
    ({"amount": "-1.00"}, [A + "amount"]),
    ({"amount": "+1.00"}, [A + "amount"]),
    ({"amount": "1e3"}, [A + "amount"]),
    ({"amount": "0"}, [A + "amount"]),
    ({"amount": "0.00"}, [A + "amount"]),
    ({"amount": "1,50"}, [A + "amount"]),
    ({"amount": " 1.50"}, [A + "amount"]),
    ({"amount": "1.2.3"}, [A + "amount"]),
    ({"amount": ""}, [A + "amount"]),
    ({"amount": "abc"}, [A + "amount"]),
    ({"amount": 10}, [A + "amount"]),
    ({"amount": 10.5}, [A + "amount"]),
    ({"amount": DEL}, [A + "amount"]),
    ({"amount": None}, [A + "amount"]),
    # minor units per currency
    ({"amount": "10.001"}, [A + "amount"]),
    ({"amount": "1000", "currency": "JPY"}, []),
    ({"amount": "1000.0", "currency": "JPY"}, [A + "amount"]),
    ({"amount": "1.234", "currency": "BHD"}, []),
    ({"amount": "1.2345", "currency": "BHD"}, [A + "amount"]),
    ({"amount": "1.2345", "currency": "CLF"}, []),
    ({"amount": "1.2345", "currency": "UYW"}, []),
    ({"amount": "1.234", "currency": "KWD"}, []),
    ({"amount": "0.001", "currency": "BHD"}, []),
    ({"amount": "0.000", "currency": "BHD"}, [A + "amount"]),
    ({"amount": "1.5", "currency": "ISK"}, [A + "amount"]),
    ({"amount": "1" * 20, "currency": "JPY"}, []),
    # currency: ISO 4217 list one, current
    ({"currency": "GBP"}, []),
    ({"currency": "CHE"}, []),
    ({"currency": "HRK"}, [A + "currency"]),
    ({"currency": "BYR"}, [A + "currency"]),
    ({"currency": "VEF"}, [A + "currency"]),
    ({"currency": "LTL"}, [A + "currency"]),
    ({"currency": "eur"}, [A + "currency"]),
    ({"currency": "ZZZ"}, [A + "currency"]),
    ({"currency": "EURO"}, [A + "currency"]),
    ({"currency": 978}, [A + "currency"]),
    ({"currency": DEL}, [A + "currency"]),
    # processing_date: a real calendar date
    ({"processing_date": "2024-02-29"}, []),
    ({"processing_date": "2023-02-29"}, [A + "processing_date"]),
    ({"processing_date": "2000-02-29"}, []),
    ({"processing_date": "1900-02-29"}, [A + "processing_date"]),
    ({"processing_date": "2024-1-01"}, [A + "processing_date"]),
    ({"processing_date": "2024-13-01"}, [A + "processing_date"]),
    ({"processing_date": "2024-04-31"}, [A + "processing_date"]),
    ({"processing_date": "20240101"}, [A + "processing_date"]),
    ({"processing_date": "2024-01-01T00:00:00Z"}, [A + "processing_date"]),
    ({"scheme_processing_date": "2015-02-30"}, [A + "scheme_processing_date"]),
    # payment_scheme and its limits
    ({"payment_scheme": "FPS", "currency": "GBP", "amount": "250000.00"}, []),
    ({"payment_scheme": "FPS", "currency": "GBP", "amount": "250000.01"}, SCHEME),
    ({"payment_scheme": "BACS", "currency": "GBP", "amount": "20000000.00"}, []),
    ({"payment_scheme": "BACS", "currency": "GBP", "amount": "20000000.01"}, SCHEME),
    ({"payment_scheme": "SEPAINSTANT", "amount": "15000.00"}, []),
    ({"payment_scheme": "SEPAINSTANT", "amount": "15000.01"}, SCHEME),
    ({"payment_scheme": "SEPAINSTANT", "currency": "GBP", "amount": "1.00"}, SCHEME),
    ({"payment_scheme": "SEPACT", "amount": "100000.00"}, []),
    ({"payment_scheme": "SEPACT", "currency": "USD", "amount": "1.00"}, SCHEME),
    ({"payment_scheme": "SWIFT", "currency": "USD", "amount": "99999999.99"}, []),
    ({"payment_scheme": "fps"}, [A + "payment_scheme"]),
    ({"payment_scheme": "FOO"}, [A + "payment_scheme"]),
    ({"payment_scheme": 1}, [A + "payment_scheme"]),
    # x-length counts characters, not bytes
    ({"reference": "r" * 18}, []),
    ({"reference": "\u00e9" * 18}, []),
    ({"reference": "\u4e2d" * 18}, []),
    ({"reference": "r" * 19}, [A + "reference"]),
    ({"reference": "\U0001F600" * 18}, []),
    ({"reference": "\u00e9" * 19}, [A + "reference"]),
    ({"beneficiary_party.account_name": "n" * 40}, []),
    ({"beneficiary_party.account_name": "n" * 41}, [A + "beneficiary_party.account_name"]),
    ({"payment_purpose_coded": "ABCD"}, []),
    ({"payment_purpose_coded": "ABCDE"}, [A + "payment_purpose_coded"]),
    ({"swift.header.recipient": "ABCDEFGHI"}, [A + "swift.header.recipient"]),
    # x-length of each item of an array of strings
    ({"receivers_correspondent.bank_address": ["a" * 140, "b"]}, []),
    ({"receivers_correspondent.bank_address": ["ok", "a" * 141]},
     [A + "receivers_correspondent.bank_address[1]"]),
    # enums
    ({"beneficiary_party.account_number_code": "BBAN"}, []),
    ({"beneficiary_party.account_number_code": "XXX"}, [A + "beneficiary_party.account_number_code"]),
    ({"debtor_party.account_with.bank_id_code": "GBDSC"}, []),
    ({"debtor_party.account_with.bank_id_code": "NOPE"},
     [A + "debtor_party.account_with.bank_id_code"]),
    # formats
    ({"payment_acceptance_datetime": "2017-09-30T12:36:02.123+01:00"}, []),
    ({"payment_acceptance_datetime": "2017-09-30T12:36:02Z"}, []),
    ({"payment_acceptance_datetime": "2017-09-30"}, [A + "payment_acceptance_datetime"]),
    ({"payment_acceptance_datetime": "yesterday"}, [A + "payment_acceptance_datetime"]),
    ({"payment_acceptance_datetime": "2017-02-30T12:36:02Z"}, [A + "payment_acceptance_datetime"]),
    ({"payment_acceptance_datetime": "2017-09-30T24:00:00Z"}, [A + "payment_acceptance_datetime"]),
    ({"payment_acceptance_datetime": "2017-09-30T12:00:00"}, [A + "payment_acceptance_datetime"]),
    ({"payment_acceptance_datetime": "2017-09-30T12:00:00+25:00"}, [A + "payment_acceptance_datetime"]),
    ({"beneficiary_party.birth_date": "1977-02-28"}, []),
    ({"beneficiary_party.birth_date": "1977-02-30"}, [A + "beneficiary_party.birth_date"]),
    ({"ultimate_debtor.birth_date": "not a date"}, [A + "ultimate_debtor.birth_date"]),
    # types
    ({"beneficiary_party.account_type": 1}, []),
    ({"beneficiary_party.account_type": "0"}, [A + "beneficiary_party.account_type"]),
    ({"beneficiary_party.account_type": 1.5}, [A + "beneficiary_party.account_type"]),
    ({"beneficiary_party": "James"}, [A + "beneficiary_party"]),
    ({"beneficiary_party.address": "1 Clarence Mew"}, [A + "beneficiary_party.address"]),
    ({"beneficiary_party.address": ["ok", 5]}, [A + "beneficiary_party.address[1]"]),
    ({"charges_information.sender_charges": [{"amount": "1", "currency": "EUR"}, {"amount": 5}]},
     [A + "charges_information.sender_charges[1].amount"]),
    ({"charges_information.sender_charges": [5]}, [A + "charges_information.sender_charges[0]"]),
    ({"swift.header": "x"}, [A + "swift.header"]),
    ({"batch_id": 12}, [A + "batch_id"]),
    ({"fx": []}, [A + "fx"]),
    # null means absent for an optional attribute
    ({"reference": None, "fx": None, "beneficiary_party.name": None}, []),
    # undeclared attributes are kept as they are
    ({"whatever": {"amount": -1, "currency": 5}}, []),
]


@test
def validation_table(t):
    failures = []
    for changes, want in CASES:
        r = t.c.post("/v1/payments", _body(changes))
        what = "POST attributes %s" % {k: (v if v is not DEL else "<absent>") for k, v in changes.items()}
        try:
            if want == []:
                expect_status(r, 201, what)
            elif isinstance(want, tuple):
                expect_error(r, 400, "validation_failed", what)
                got = set(error_fields(r))
                check(got and got <= want[1], "%s: errors name %s, expected some of %s"
                      % (what, sorted(got), sorted(want[1])))
            else:
                expect_validation(r, want, what)
        except Exception as e:  # collect them all: one line per broken rule
            failures.append(str(e))
    check(not failures, "%d of %d cases: %s" % (len(failures), len(CASES), " | ".join(failures)))


DATA_CASES = [
    ({"organisation_id": DEL}, ["data.organisation_id"]),
    ({"organisation_id": None}, ["data.organisation_id"]),
    ({"organisation_id": "nope"}, ["data.organisation_id"]),
    ({"organisation_id": new_id().replace("-", "")}, ["data.organisation_id"]),
    ({"organisation_id": 5}, ["data.organisation_id"]),
    ({"attributes": DEL}, ["data.attributes"]),
    ({"attributes": []}, ["data.attributes"]),
    ({"attributes": "x"}, ["data.attributes"]),
    ({"id": "nope"}, ["data.id"]),
    ({"id": 12}, ["data.id"]),
    ({"relationships": []}, ["data.relationships"]),
    ({"relationships": "x"}, ["data.relationships"]),
    ({"relationships": {}}, []),
    ({"type": "pay-ments"}, ["data.type"]),
]


@test
def validation_envelope(t):
    failures = []
    for changes, want in DATA_CASES:
        r = t.c.post("/v1/payments", _body({}, changes))
        what = "POST data %s" % {k: (v if v is not DEL else "<absent>") for k, v in changes.items()}
        try:
            if want == []:
                expect_status(r, 201, what)
            else:
                expect_validation(r, want, what)
        except Exception as e:
            failures.append(str(e))
    check(not failures, "%d of %d cases: %s" % (len(failures), len(DATA_CASES), " | ".join(failures)))


@test
def validation_reports_every_problem(t):
    body = _body({"amount": "abc", "currency": "ZZZ", "payment_scheme": "FOO",
                  "processing_date": "2024-02-30", "reference": "r" * 30,
                  "beneficiary_party.account_with.bank_id_code": "NOPE",
                  "debtor_party.address": ["ok", 7]},
                 {"type": "no-no"})
    r = t.c.post("/v1/payments", body)
    expect_validation(r, ["data.type", A + "amount", A + "currency", A + "payment_scheme",
                          A + "processing_date", A + "reference",
                          A + "beneficiary_party.account_with.bank_id_code", A + "debtor_party.address[1]"],
                      "POST with eight problems")
    b = {"data": {"attributes": {"amount": "1.00"}, "version": 3}}
    r = t.c.post("/v1/payments", b)
    expect_validation(r, ["data.organisation_id", A + "currency", "data.version"],
                      "POST without organisation_id and currency, version 3")
