"""The error_message of validation failures: it counts the problems in
words ("1 problem", "N problems"), for a create and for the next version a
PATCH or PUT makes of the stored payment."""

from harness import create, eq, expect_validation, payment, test


def _message(r):
    return (r.json or {}).get("error_message")


@test
def validation_message_counts_problems(t):
    r = t.c.post("/v1/payments", payment(amount="-1"))
    expect_validation(r, ["data.attributes.amount"], "POST with a bad amount")
    eq(_message(r), "the payment is not valid: 1 problem", "message of one problem")
    r = t.c.post("/v1/payments", payment(amount="-1", currency="ZZZ"))
    expect_validation(r, ["data.attributes.amount", "data.attributes.currency"],
                      "POST with two problems", exact=False)
    n = len(r.json.get("errors", []))
    eq(_message(r), "the payment is not valid: %d problems" % n, "message of several problems")

    p = create(t.c, payment())
    r = t.c.patch("/v1/payments/%s" % p["id"],
                  {"data": {"version": 0, "attributes": {"amount": None}}})
    expect_validation(r, ["data.attributes.amount"], "PATCH removing the amount")
    eq(_message(r), "the payment is not valid: 1 problem", "message of an invalid merge result")
    body = payment()
    body["data"]["version"] = 0
    r = t.c.put("/v1/payments/%s" % p["id"], body)
    expect_validation(r, ["data.organisation_id"], "PUT naming another organisation")
    eq(_message(r), "the payment is not valid: 1 problem", "message of an organisation change")
