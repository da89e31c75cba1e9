#include "payment/validate.h"

#include <stdlib.h>

#include "payment/merge.h"
#include "test.h"

#define SEED_PATH "spec/seed-payment.json"

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!v) {
        fprintf(stderr, "  bad test JSON %s: %s\n", text, err.text);
        test_failures++;
    }
    return v;
}

static void print_errors(const json_t *errors)
{
    char *text = json_dumps(errors, JSON_COMPACT);
    fprintf(stderr, "    errors: %s\n", text ? text : "?");
    free(text);
}

static const char *error_field(const json_t *errors, size_t i)
{
    return json_string_value(json_object_get(json_array_get(errors, i), "field"));
}

static const char *error_message(const json_t *errors, size_t i)
{
    return json_string_value(json_object_get(json_array_get(errors, i), "message"));
}

/* One row: a merge patch applied to the valid base attributes, and the one
 * problem it must give (field NULL: none). */
struct attr_case {
    const char *patch;   /* RFC 7396 patch of BASE_ATTRIBUTES */
    const char *field;   /* the single problem's field, or NULL: valid */
    const char *message; /* its message, or NULL: any */
};

#define BASE_ATTRIBUTES "{\"amount\": \"10.00\", \"currency\": \"EUR\"}"
#define A "data.attributes."

static void run_attr_cases(const struct attr_case *cases, size_t count)
{
    payment_validator *v = payment_validator_new();
    CHECK(v != NULL);
    json_t *base = parse(BASE_ATTRIBUTES);
    for (size_t i = 0; v && base && i < count; i++) {
        int before = test_failures;
        json_t *patch = parse(cases[i].patch);
        json_t *attributes = merge_patch(base, patch);
        json_t *errors = json_array();
        CHECK(attributes && errors);
        int n = payment_validate_attributes(v, attributes, errors);
        CHECK_INT(n, (long long)json_array_size(errors));
        if (!cases[i].field) {
            CHECK_INT(n, 0);
        } else {
            CHECK_INT(n, 1);
            CHECK_STR(error_field(errors, 0), cases[i].field);
            if (cases[i].message)
                CHECK_STR(error_message(errors, 0), cases[i].message);
        }
        if (test_failures != before) {
            fprintf(stderr, "    in case %zu: %s\n", i, cases[i].patch);
            print_errors(errors);
        }
        json_decref(errors);
        json_decref(attributes);
        json_decref(patch);
    }
    json_decref(base);
    payment_validator_free(v);
}

#define RUN(cases) run_attr_cases(cases, sizeof cases / sizeof cases[0])

static void test_types(void)
{
    static const struct attr_case cases[] = {
        {"{}", NULL, NULL},
        {"{\"beneficiary_party\": {\"account_type\": 1}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"account_type\": -3}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"account_type\": \"1\"}}", A "beneficiary_party.account_type",
         "must be an integer"},
        {"{\"beneficiary_party\": {\"account_type\": 1.0}}", A "beneficiary_party.account_type",
         "must be an integer"},
        {"{\"beneficiary_party\": {\"account_type\": 0.5}}", A "beneficiary_party.account_type",
         "must be an integer"},
        {"{\"beneficiary_party\": {\"account_type\": true}}", A "beneficiary_party.account_type",
         "must be an integer"},
        {"{\"reference\": 5}", A "reference", "must be a string"},
        {"{\"reference\": 5.5}", A "reference", "must be a string"},
        {"{\"reference\": false}", A "reference", "must be a string"},
        {"{\"reference\": [\"x\"]}", A "reference", "must be a string"},
        {"{\"reference\": {}}", A "reference", "must be a string"},
        {"{\"batch_id\": \"any text at all, no limit declared\"}", NULL, NULL},
        {"{\"beneficiary_party\": \"x\"}", A "beneficiary_party", "must be an object"},
        {"{\"beneficiary_party\": []}", A "beneficiary_party", "must be an object"},
        {"{\"swift\": {\"header\": 1}}", A "swift.header", "must be an object"},
        {"{\"swift\": {\"header\": {\"priority\": 1}}}", A "swift.header.priority",
         "must be a string"},
        {"{\"beneficiary_party\": {\"address\": \"1 Clarence Mew\"}}",
         A "beneficiary_party.address", "must be an array"},
        {"{\"beneficiary_party\": {\"address\": []}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"address\": [\"a\", 1]}}", A "beneficiary_party.address[1]",
         "must be a string"},
        {"{\"debtor_party\": {\"account_with\": {\"bank_address\": [null]}}}",
         A "debtor_party.account_with.bank_address[0]", "must be a string"},
        {"{\"charges_information\": {\"sender_charges\": [{\"amount\": \"1\"}, 7]}}",
         A "charges_information.sender_charges[1]", "must be an object"},
        {"{\"charges_information\": {\"sender_charges\": [{}, {\"currency\": 1}]}}",
         A "charges_information.sender_charges[1].currency", "must be a string"},
        {"{\"charges_information\": {\"sender_charges\": {}}}",
         A "charges_information.sender_charges", "must be an array"},
        {"{\"ultimate_debtor\": {\"address\": \"one line\"}}", NULL, NULL},
        {"{\"ultimate_debtor\": {\"address\": [\"a\"]}}", A "ultimate_debtor.address",
         "must be a string"},
        {"{\"fx\": {\"exchange_rate\": 0.13}}", A "fx.exchange_rate", "must be a string"},
        /* Members the spec does not declare are kept as they are. */
        {"{\"my_extension\": {\"x\": [1, null, {\"y\": true}]}, \"beneficiary_party\": "
         "{\"nickname\": 5}, \"swift\": {\"header\": {\"extra\": [1]}}}",
         NULL, NULL},
        {"{\"currency\": 978}", A "currency", "must be a string"},
        {"{\"amount\": 10}", A "amount", "must be a string"},
        {"{\"amount\": 10.5}", A "amount", "must be a string"},
    };
    RUN(cases);
}

static void test_enums(void)
{
    static const struct attr_case cases[] = {
        {"{\"beneficiary_party\": {\"account_number_code\": \"IBAN\"}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"account_number_code\": \"BBAN\"}}", NULL, NULL},
        {"{\"debtor_party\": {\"account_number_code\": \"BBAN\"}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"account_number_code\": \"iban\"}}",
         A "beneficiary_party.account_number_code", "must be one of IBAN, BBAN"},
        {"{\"beneficiary_party\": {\"account_number_code\": \"\"}}",
         A "beneficiary_party.account_number_code", "must be one of IBAN, BBAN"},
        {"{\"debtor_party\": {\"account_number_code\": \"IBAN \"}}",
         A "debtor_party.account_number_code", "must be one of IBAN, BBAN"},
        {"{\"debtor_party\": {\"account_number_code\": \"IBAN\\u0000\"}}",
         A "debtor_party.account_number_code", "must be one of IBAN, BBAN"},
        {"{\"debtor_party\": {\"account_number_code\": 1}}", A "debtor_party.account_number_code",
         "must be a string"},
        {"{\"beneficiary_party\": {\"account_with\": {\"bank_id_code\": \"SWBIC\"}}}", NULL, NULL},
        {"{\"debtor_party\": {\"account_with\": {\"bank_id_code\": \"GBDSC\"}}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"BE\"}}", NULL, NULL},
        {"{\"receivers_correspondent\": {\"bank_id_code\": \"FR\"}}", NULL, NULL},
        {"{\"reimbursement\": {\"bank_id_code\": \"DEBLZ\"}}", NULL, NULL},
        {"{\"senders_correspondent\": {\"bank_id_code\": \"GRBIC\"}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"ITNCC\"}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"PLKNR\"}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"PTNCC\"}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"ESNCC\"}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"CHBCC\"}}", NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_id_code\": \"SWIFT\"}}",
         A "intermediary_bank.bank_id_code",
         "must be one of SWBIC, GBDSC, BE, FR, DEBLZ, GRBIC, ITNCC, PLKNR, PTNCC, ESNCC, CHBCC"},
        {"{\"beneficiary_party\": {\"account_with\": {\"bank_id_code\": \"swbic\"}}}",
         A "beneficiary_party.account_with.bank_id_code", NULL},
        {"{\"debtor_party\": {\"account_with\": {\"bank_id_code\": \"X\"}}}",
         A "debtor_party.account_with.bank_id_code", NULL},
        {"{\"receivers_correspondent\": {\"bank_id_code\": \"\"}}",
         A "receivers_correspondent.bank_id_code", NULL},
        {"{\"reimbursement\": {\"bank_id_code\": \"BEL\"}}", A "reimbursement.bank_id_code", NULL},
        {"{\"senders_correspondent\": {\"bank_id_code\": \"B\"}}",
         A "senders_correspondent.bank_id_code", NULL},
    };
    RUN(cases);
}

static void test_formats(void)
{
    static const struct attr_case cases[] = {
        {"{\"processing_date\": \"2015-02-12\"}", NULL, NULL},
        {"{\"processing_date\": \"2024-02-29\"}", NULL, NULL},
        {"{\"processing_date\": \"2000-02-29\"}", NULL, NULL},
        {"{\"processing_date\": \"2023-02-29\"}", A "processing_date",
         "must be a real date as YYYY-MM-DD"},
        {"{\"processing_date\": \"1900-02-29\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"2015-04-31\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"2015-13-01\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"2015-00-10\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"2015-2-12\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"2015-02-12T00:00:00Z\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"20150212\"}", A "processing_date", NULL},
        {"{\"processing_date\": \"\"}", A "processing_date", NULL},
        {"{\"processing_date\": 20150212}", A "processing_date", "must be a string"},
        {"{\"scheme_processing_date\": \"2015-02-12\"}", NULL, NULL},
        {"{\"scheme_processing_date\": \"2015-02-30\"}", A "scheme_processing_date", NULL},
        {"{\"beneficiary_party\": {\"birth_date\": \"1977-02-28\"}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"birth_date\": \"1977-02-29\"}}",
         A "beneficiary_party.birth_date",
         NULL},
        {"{\"debtor_party\": {\"birth_date\": \"31/01/1973\"}}", A "debtor_party.birth_date", NULL},
        {"{\"ultimate_beneficiary\": {\"birth_date\": \"2019-03-21\"}}", NULL, NULL},
        {"{\"ultimate_beneficiary\": {\"birth_date\": \"string\"}}",
         A "ultimate_beneficiary.birth_date", NULL},
        {"{\"ultimate_debtor\": {\"birth_date\": \"2019-13-01\"}}", A "ultimate_debtor.birth_date",
         NULL},
        {"{\"payment_acceptance_datetime\": \"2017-09-30T12:36:02.123+01:00\"}", NULL, NULL},
        {"{\"payment_acceptance_datetime\": \"2017-09-30T12:36:02Z\"}", NULL, NULL},
        {"{\"payment_acceptance_datetime\": \"2017-09-30T12:36:02.123456789-05:30\"}", NULL, NULL},
        {"{\"payment_acceptance_datetime\": \"2017-09-30 12:36:02Z\"}",
         A "payment_acceptance_datetime", "must be an RFC 3339 date-time"},
        {"{\"payment_acceptance_datetime\": \"2017-09-30T12:36:02\"}",
         A "payment_acceptance_datetime", NULL},
        {"{\"payment_acceptance_datetime\": \"2017-09-30\"}", A "payment_acceptance_datetime",
         NULL},
        {"{\"payment_acceptance_datetime\": \"2017-02-30T12:36:02Z\"}",
         A "payment_acceptance_datetime", NULL},
        {"{\"payment_acceptance_datetime\": \"2017-09-30T25:36:02Z\"}",
         A "payment_acceptance_datetime", NULL},
    };
    RUN(cases);
}

/* x-length counts characters (code points), not bytes.  \u00c4 is two bytes
 * of UTF-8, \u20ac three, the surrogate pair of U+1F600 four. */
static void test_lengths(void)
{
    static const struct attr_case cases[] = {
        {"{\"payment_purpose_coded\": \"ABCD\"}", NULL, NULL},
        {"{\"payment_purpose_coded\": \"ABCDE\"}", A "payment_purpose_coded",
         "must be at most 4 characters"},
        {"{\"payment_purpose_coded\": \"\"}", NULL, NULL},
        {"{\"payment_purpose_coded\": \"\\u00c4\\u00d6\\u00dc\\u00df\"}", NULL, NULL},
        {"{\"payment_purpose_coded\": \"\\u20ac\\u20ac\\u20ac\\u20ac\"}", NULL, NULL},
        {"{\"payment_purpose_coded\": "
         "\"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\"}",
         NULL, NULL},
        {"{\"payment_purpose_coded\": \"\\u00c4\\u00d6\\u00dc\\u00dfx\"}",
         A "payment_purpose_coded", "must be at most 4 characters"},
        {"{\"payment_purpose_coded\": \"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00"
         "\\ud83d\\ude00\"}",
         A "payment_purpose_coded", "must be at most 4 characters"},
        {"{\"reference\": \"123456789012345678\"}", NULL, NULL},
        {"{\"reference\": \"1234567890123456789\"}", A "reference",
         "must be at most 18 characters"},
        {"{\"beneficiary_party\": {\"birth_country\": \"FR\"}}", NULL, NULL},
        {"{\"beneficiary_party\": {\"birth_country\": \"FRA\"}}",
         A "beneficiary_party.birth_country", "must be at most 2 characters"},
        {"{\"debtor_party\": {\"customer_id\": \"BARCGB22XXX\"}}", NULL, NULL},
        {"{\"debtor_party\": {\"customer_id\": \"BARCGB22XXXX\"}}", A "debtor_party.customer_id",
         "must be at most 11 characters"},
        {"{\"swift\": {\"header\": {\"priority\": \"Priority\"}}}", NULL, NULL},
        {"{\"swift\": {\"header\": {\"priority\": \"Priority!\"}}}", A "swift.header.priority",
         "must be at most 8 characters"},
        {"{\"swift\": {\"bank_operation_code\": \"CREDX\"}}", A "swift.bank_operation_code",
         "must be at most 4 characters"},
        {"{\"intermediary_bank\": {\"bank_party_id\": \"1234567890123456789012345678901234567\"}}",
         NULL, NULL},
        {"{\"intermediary_bank\": {\"bank_party_id\": \"12345678901234567890123456789012345678\"}}",
         A "intermediary_bank.bank_party_id", "must be at most 37 characters"},
        {"{\"beneficiary_party\": {\"account_with\": {\"bank_party_id\": "
         "\"123456789012345678901234567890123456\"}}}",
         A "beneficiary_party.account_with.bank_party_id", "must be at most 35 characters"},
        {"{\"structured_reference\": {\"reference\": \"12345678901234567890123456789012345\"}}",
         NULL, NULL},
        {"{\"structured_reference\": {\"reference\": \"123456789012345678901234567890123456\"}}",
         A "structured_reference.reference", "must be at most 35 characters"},
        {"{\"currency\": \"EURO\"}", A "currency", "must be at most 3 characters"},
        {"{\"fx\": {\"original_currency\": \"EURO\"}}", A "fx.original_currency",
         "must be at most 3 characters"},
    };
    RUN(cases);
}

/* Builds {member: {"bank_address": ["short", <n times c>]}} as attributes. */
static json_t *bank_address_attributes(const char *member, size_t n, const char *c)
{
    size_t clen = strlen(c);
    char *line = malloc(n * clen + 1);
    if (!line)
        return NULL;
    for (size_t i = 0; i < n; i++)
        memcpy(line + i * clen, c, clen);
    line[n * clen] = '\0';
    json_t *attributes = json_pack("{s:s, s:s, s:{s:[s, s]}}", "amount", "1.00", "currency", "GBP",
                                   member, "bank_address", "short", line);
    free(line);
    return attributes;
}

/* x-length on an array is the limit of each item: only the receivers'
 * correspondent declares one (140). */
static void test_array_item_lengths(void)
{
    static const struct {
        const char *member; /* attribute holding bank_address */
        size_t n;           /* repetitions of c in item [1] */
        const char *c;      /* a character, as UTF-8 */
        int ok;             /* whether it validates */
    } cases[] = {
        {"receivers_correspondent", 140, "x", 1},
        {"receivers_correspondent", 141, "x", 0},
        {"receivers_correspondent", 140, "\xc3\xa9", 1},     /* 280 bytes */
        {"receivers_correspondent", 141, "\xc3\xa9", 0},
        {"receivers_correspondent", 140, "\xe2\x82\xac", 1}, /* 420 bytes */
        {"senders_correspondent", 1000, "x", 1},
        {"reimbursement", 1000, "x", 1},
        {"intermediary_bank", 1000, "x", 1},
    };
    payment_validator *v = payment_validator_new();
    CHECK(v != NULL);
    for (size_t i = 0; v && i < sizeof cases / sizeof cases[0]; i++) {
        json_t *attributes = bank_address_attributes(cases[i].member, cases[i].n, cases[i].c);
        json_t *errors = json_array();
        CHECK(attributes && errors);
        int before = test_failures;
        int n = payment_validate_attributes(v, attributes, errors);
        CHECK_INT(n, cases[i].ok ? 0 : 1);
        if (!cases[i].ok) {
            char field[128];
            snprintf(field, sizeof field, "data.attributes.%s.bank_address[1]", cases[i].member);
            CHECK_STR(error_field(errors, 0), field);
            CHECK_STR(error_message(errors, 0), "must be at most 140 characters");
        }
        if (test_failures != before) {
            fprintf(stderr, "    in case %zu\n", i);
            print_errors(errors);
        }
        json_decref(errors);
        json_decref(attributes);
    }
    payment_validator_free(v);
}

static void test_amount_and_currency(void)
{
    static const struct attr_case cases[] = {
        /* Fraction digits follow the currency's minor unit. */
        {"{\"amount\": \"10.00\"}", NULL, NULL},
        {"{\"amount\": \"10\"}", NULL, NULL},
        {"{\"amount\": \"10.5\"}", NULL, NULL},
        {"{\"amount\": \"10.001\"}", A "amount", "must have at most 2 decimal places for EUR"},
        {"{\"currency\": \"JPY\", \"amount\": \"10\"}", NULL, NULL},
        {"{\"currency\": \"JPY\", \"amount\": \"10.5\"}", A "amount",
         "must have at most 0 decimal places for JPY"},
        {"{\"currency\": \"JPY\", \"amount\": \"10.0\"}", A "amount", NULL},
        {"{\"currency\": \"BHD\", \"amount\": \"1.234\"}", NULL, NULL},
        {"{\"currency\": \"BHD\", \"amount\": \"1.2345\"}", A "amount",
         "must have at most 3 decimal places for BHD"},
        {"{\"currency\": \"CLF\", \"amount\": \"1.2345\"}", NULL, NULL},
        {"{\"currency\": \"XAU\", \"amount\": \"1.123456789\"}", NULL, NULL},
        {"{\"currency\": \"GBP\", \"amount\": \"0.01\"}", NULL, NULL},
        /* Plain notation only. */
        {"{\"amount\": \"01.5\"}", A "amount",
         "must be a decimal number in plain notation, such as 10.50"},
        {"{\"amount\": \"00\"}", A "amount", NULL},
        {"{\"amount\": \"10.\"}", A "amount",
         "must be a decimal number in plain notation, such as 10.50"},
        {"{\"amount\": \".5\"}", A "amount",
         "must be a decimal number in plain notation, such as 10.50"},
        {"{\"amount\": \"1.2.3\"}", A "amount", NULL},
        {"{\"amount\": \"\"}", A "amount", NULL},
        {"{\"amount\": \"-1\"}", A "amount", "must match ^[0-9.]{0,20}$"},
        {"{\"amount\": \"+1\"}", A "amount", NULL},
        {"{\"amount\": \"1e3\"}", A "amount", "must match ^[0-9.]{0,20}$"},
        {"{\"amount\": \" 10\"}", A "amount", NULL},
        {"{\"amount\": \"10,00\"}", A "amount", NULL},
        {"{\"amount\": \"10\\u0000\"}", A "amount", "must match ^[0-9.]{0,20}$"},
        {"{\"amount\": \"0\"}", A "amount", "must be greater than 0"},
        {"{\"amount\": \"0.00\"}", A "amount", "must be greater than 0"},
        {"{\"amount\": \"0.01\"}", NULL, NULL},
        /* 20 characters at most. */
        {"{\"amount\": \"12345678901234567.89\"}", NULL, NULL},
        {"{\"amount\": \"12345678901234567890\"}", NULL, NULL},
        {"{\"amount\": \"123456789012345678.90\"}", A "amount", "must match ^[0-9.]{0,20}$"},
        {"{\"amount\": \"123456789012345678901\"}", A "amount", NULL},
        /* Required, and a code of the current ISO 4217 list. */
        {"{\"amount\": null}", A "amount", "is required"},
        {"{\"currency\": null}", A "currency", "is required"},
        {"{\"currency\": \"HRK\"}", A "currency", "must be a current ISO 4217 currency code"},
        {"{\"currency\": \"XYZ\"}", A "currency", "must be a current ISO 4217 currency code"},
        {"{\"currency\": \"eur\"}", A "currency", "must be a current ISO 4217 currency code"},
        {"{\"currency\": \"\"}", A "currency", "must be a current ISO 4217 currency code"},
        {"{\"currency\": \"EU\"}", A "currency", NULL},
        /* An unusable currency is one problem: the amount is not judged
         * against a minor unit it does not have. */
        {"{\"currency\": \"HRK\", \"amount\": \"10.001\"}", A "currency", NULL},
        {"{\"currency\": \"USD\", \"amount\": \"10.001\"}", A "amount", NULL},
    };
    RUN(cases);
}

static void test_payment_schemes(void)
{
    static const struct attr_case cases[] = {
        {"{\"payment_scheme\": \"FPS\", \"amount\": \"250000.00\", \"currency\": \"GBP\"}", NULL,
         NULL},
        {"{\"payment_scheme\": \"FPS\", \"amount\": \"250000\", \"currency\": \"GBP\"}", NULL,
         NULL},
        {"{\"payment_scheme\": \"FPS\", \"amount\": \"250000.01\", \"currency\": \"GBP\"}",
         A "amount", "must be at most 250000.00 for payment scheme FPS"},
        {"{\"payment_scheme\": \"FPS\", \"amount\": \"1000000\", \"currency\": \"GBP\"}",
         A "amount",
         NULL},
        {"{\"payment_scheme\": \"FPS\", \"amount\": \"99999.99\", \"currency\": \"EUR\"}", NULL,
         NULL},
        {"{\"payment_scheme\": \"BACS\", \"amount\": \"20000000.00\", \"currency\": \"GBP\"}", NULL,
         NULL},
        {"{\"payment_scheme\": \"BACS\", \"amount\": \"20000000.01\", \"currency\": \"GBP\"}",
         A "amount", "must be at most 20000000.00 for payment scheme BACS"},
        {"{\"payment_scheme\": \"SEPAINSTANT\", \"amount\": \"15000.00\"}", NULL, NULL},
        {"{\"payment_scheme\": \"SEPAINSTANT\", \"amount\": \"15000.01\"}", A "amount",
         "must be at most 15000.00 for payment scheme SEPAINSTANT"},
        {"{\"payment_scheme\": \"SEPAINSTANT\", \"amount\": \"10.00\", \"currency\": \"GBP\"}",
         A "currency", "must be EUR for payment scheme SEPAINSTANT"},
        {"{\"payment_scheme\": \"SEPACT\", \"amount\": \"99999999.99\"}", NULL, NULL},
        {"{\"payment_scheme\": \"SEPACT\", \"currency\": \"USD\"}", A "currency",
         "must be EUR for payment scheme SEPACT"},
        {"{\"payment_scheme\": \"SWIFT\", \"amount\": \"99999999999.99\", \"currency\": \"USD\"}",
         NULL, NULL},
        {"{\"payment_scheme\": \"fps\"}", A "payment_scheme",
         "must be one of FPS, BACS, SEPAINSTANT, SEPACT, SWIFT"},
        {"{\"payment_scheme\": \"\"}", A "payment_scheme", NULL},
        {"{\"payment_scheme\": \"SEPA\"}", A "payment_scheme", NULL},
        {"{\"payment_scheme\": \"FPS \"}", A "payment_scheme", NULL},
        {"{\"payment_scheme\": 1}", A "payment_scheme", "must be a string"},
        /* A limit is not applied to an amount that is already wrong. */
        {"{\"payment_scheme\": \"FPS\", \"amount\": \"250000.001\", \"currency\": \"GBP\"}",
         A "amount", "must have at most 2 decimal places for GBP"},
    };
    RUN(cases);
}

static void check_fields(const json_t *errors, const char *const *fields, size_t count)
{
    CHECK_INT(json_array_size(errors), count);
    for (size_t i = 0; i < count && i < json_array_size(errors); i++)
        CHECK_STR(error_field(errors, i), fields[i]);
}

/* Every problem is reported, each once. */
static void test_many_problems(void)
{
    payment_validator *v = payment_validator_new();
    json_t *attributes = parse("{\"amount\": \"20000.00\", \"currency\": \"GBP\", "
                               "\"payment_scheme\": \"SEPAINSTANT\", \"reference\": 7, "
                               "\"processing_date\": \"2015-02-30\", "
                               "\"debtor_party\": {\"address\": [\"ok\", 2, 3], "
                               "\"account_number_code\": \"X\"}}");
    json_t *errors = json_array();
    CHECK(v && attributes && errors);
    int n = payment_validate_attributes(v, attributes, errors);
    static const char *const fields[] = {
        A "debtor_party.account_number_code", A "debtor_party.address[1]",
        A "debtor_party.address[2]",          A "processing_date",
        A "reference",                        A "currency",
        A "amount",
    };
    CHECK_INT(n, 7);
    check_fields(errors, fields, sizeof fields / sizeof fields[0]);
    CHECK_STR(error_message(errors, 5), "must be EUR for payment scheme SEPAINSTANT");
    CHECK_STR(error_message(errors, 6), "must be at most 15000.00 for payment scheme SEPAINSTANT");

    /* Problems are appended after what the array already holds. */
    json_t *missing = parse("{}");
    n = payment_validate_attributes(v, missing, errors);
    CHECK_INT(n, 2);
    CHECK_INT(json_array_size(errors), 9);
    CHECK_STR(error_field(errors, 7), A "currency");
    CHECK_STR(error_field(errors, 8), A "amount");

    json_t *none = json_array();
    CHECK_INT(payment_validate_attributes(v, none, errors), 1);
    CHECK_STR(error_field(errors, 9), "data.attributes");
    CHECK_STR(error_message(errors, 9), "must be an object");

    json_decref(none);
    json_decref(missing);
    json_decref(errors);
    json_decref(attributes);
    payment_validator_free(v);
}

/* ---- the envelope: payment_validate_data ---- */

#define ORG "\"organisation_id\": \"ee2fb143-6dfe-4787-b183-ca8ddd4164d2\""
#define ATTRS "\"attributes\": " BASE_ATTRIBUTES

struct data_case {
    enum payment_check mode;
    const char *data;    /* the request's data member */
    const char *field;   /* the single problem's field, or NULL: valid */
    const char *message; /* its message, or NULL: any */
};

static void test_envelope(void)
{
    static const struct data_case cases[] = {
        {PAYMENT_CHECK_CREATE, "{" ORG ", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{\"type\": \"payments\", \"version\": 0, " ORG ", " ATTRS "}", NULL,
         NULL},
        {PAYMENT_CHECK_CREATE, "{\"type\": \"\", " ORG ", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{\"type\": \"Pay_ments\", " ORG ", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{\"type\": null, \"id\": null, " ORG ", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{\"type\": \"pay-ments\", " ORG ", " ATTRS "}", "data.type",
         "must match ^[A-Za-z_]*$"},
        {PAYMENT_CHECK_CREATE, "{\"type\": \"payments1\", " ORG ", " ATTRS "}", "data.type", NULL},
        {PAYMENT_CHECK_CREATE, "{\"type\": \"pay\\u0000ments\", " ORG ", " ATTRS "}", "data.type",
         "must match ^[A-Za-z_]*$"},
        {PAYMENT_CHECK_CREATE, "{\"type\": 1, " ORG ", " ATTRS "}", "data.type",
         "must be a string"},
        {PAYMENT_CHECK_CREATE,
         "{\"id\": \"4EE3A8D8-CA7B-4290-A52C-DD5B6165EC43\", " ORG ", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{\"id\": \"123\", " ORG ", " ATTRS "}", "data.id",
         "must be a UUID"},
        {PAYMENT_CHECK_CREATE,
         "{\"id\": \"{4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43}\", " ORG ", " ATTRS
         "}", "data.id", "must be a UUID"},
        {PAYMENT_CHECK_CREATE, "{\"id\": \"4ee3a8d8ca7b4290a52cdd5b6165ec43\", " ORG ", " ATTRS "}",
         "data.id", "must be a UUID"},
        {PAYMENT_CHECK_CREATE, "{\"id\": 5, " ORG ", " ATTRS "}", "data.id", "must be a string"},
        {PAYMENT_CHECK_CREATE, "{" ATTRS "}", "data.organisation_id", "is required"},
        {PAYMENT_CHECK_CREATE, "{\"organisation_id\": null, " ATTRS "}", "data.organisation_id",
         "is required"},
        {PAYMENT_CHECK_CREATE, "{\"organisation_id\": \"ee2fb143\", " ATTRS "}",
         "data.organisation_id", "must be a UUID"},
        {PAYMENT_CHECK_CREATE,
         "{\"organisation_id\": \"EE2FB143-6DFE-4787-B183-CA8DDD4164D2\", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{\"version\": 1, " ORG ", " ATTRS "}", "data.version",
         "must be 0 on create"},
        {PAYMENT_CHECK_CREATE, "{\"version\": -1, " ORG ", " ATTRS "}", "data.version",
         "must be at least 0"},
        {PAYMENT_CHECK_CREATE, "{\"version\": \"0\", " ORG ", " ATTRS "}", "data.version",
         "must be an integer"},
        {PAYMENT_CHECK_CREATE, "{\"version\": 0.0, " ORG ", " ATTRS "}", "data.version",
         "must be an integer"},
        {PAYMENT_CHECK_CREATE, "{" ORG "}", "data.attributes", "is required"},
        {PAYMENT_CHECK_CREATE, "{" ORG ", \"attributes\": null}", "data.attributes", "is required"},
        {PAYMENT_CHECK_CREATE, "{" ORG ", \"attributes\": []}", "data.attributes",
         "must be an object"},
        {PAYMENT_CHECK_CREATE, "{" ORG ", \"attributes\": {\"amount\": \"1.00\"}}",
         "data.attributes.currency", "is required"},
        {PAYMENT_CHECK_CREATE, "{" ORG ", " ATTRS ", \"relationships\": {\"x\": [1]}}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{" ORG ", " ATTRS ", \"relationships\": null}", NULL, NULL},
        {PAYMENT_CHECK_CREATE, "{" ORG ", " ATTRS ", \"relationships\": [1]}", "data.relationships",
         "must be an object"},
        {PAYMENT_CHECK_CREATE, "{" ORG ", " ATTRS ", \"relationships\": \"x\"}",
         "data.relationships", "must be an object"},
        /* Server-owned and unknown members are ignored. */
        {PAYMENT_CHECK_CREATE, "{" ORG ", " ATTRS ", \"created_on\": 5, \"modified_on\": \"x\", "
                               "\"links\": 1}",
         NULL, NULL},
        {PAYMENT_CHECK_REPLACE, "{\"version\": 5, " ORG ", " ATTRS "}", NULL, NULL},
        {PAYMENT_CHECK_REPLACE, "{\"version\": -5, " ORG ", " ATTRS "}", "data.version", NULL},
        {PAYMENT_CHECK_REPLACE, "{" ATTRS "}", "data.organisation_id", "is required"},
        {PAYMENT_CHECK_REPLACE, "{" ORG "}", "data.attributes", "is required"},
        {PAYMENT_CHECK_REPLACE, "{" ORG ", \"attributes\": {\"amount\": \"1.001\", \"currency\": "
                                "\"EUR\"}}", "data.attributes.amount", NULL},
        /* PATCH: every member optional, attributes judged after merging. */
        {PAYMENT_CHECK_PATCH, "{}", NULL, NULL},
        {PAYMENT_CHECK_PATCH, "{\"version\": 3}", NULL, NULL},
        {PAYMENT_CHECK_PATCH, "{\"version\": 3, \"attributes\": {\"amount\": \"bad\", "
                              "\"reference\": 1}}",
         NULL, NULL},
        {PAYMENT_CHECK_PATCH, "{\"attributes\": null}", NULL, NULL},
        {PAYMENT_CHECK_PATCH, "{\"attributes\": \"x\"}", "data.attributes", "must be an object"},
        {PAYMENT_CHECK_PATCH, "{\"organisation_id\": \"nope\"}", "data.organisation_id",
         "must be a UUID"},
        {PAYMENT_CHECK_PATCH, "{\"version\": -1}", "data.version", "must be at least 0"},
        {PAYMENT_CHECK_PATCH, "{\"relationships\": 1}", "data.relationships", "must be an object"},
        {PAYMENT_CHECK_PATCH, "{\"type\": \"a b\"}", "data.type", NULL},
        /* data itself. */
        {PAYMENT_CHECK_CREATE, "[]", "data", "must be an object"},
        {PAYMENT_CHECK_REPLACE, "null", "data", "must be an object"},
        {PAYMENT_CHECK_PATCH, "\"x\"", "data", "must be an object"},
    };
    payment_validator *v = payment_validator_new();
    CHECK(v != NULL);
    for (size_t i = 0; v && i < sizeof cases / sizeof cases[0]; i++) {
        int before = test_failures;
        json_t *data = parse(cases[i].data);
        json_t *errors = json_array();
        CHECK(data && errors);
        int n = payment_validate_data(v, cases[i].mode, data, errors);
        CHECK_INT(n, (long long)json_array_size(errors));
        if (!cases[i].field) {
            CHECK_INT(n, 0);
        } else {
            CHECK_INT(n, 1);
            CHECK_STR(error_field(errors, 0), cases[i].field);
            if (cases[i].message)
                CHECK_STR(error_message(errors, 0), cases[i].message);
        }
        if (test_failures != before) {
            fprintf(stderr, "    in case %zu: %s\n", i, cases[i].data);
            print_errors(errors);
        }
        json_decref(errors);
        json_decref(data);
    }
    payment_validator_free(v);
}

static void test_envelope_many_problems(void)
{
    payment_validator *v = payment_validator_new();
    json_t *data = parse("{\"type\": \"-\", \"id\": \"x\", \"version\": 2, "
                         "\"relationships\": 1, \"attributes\": {\"currency\": \"HRK\"}}");
    json_t *errors = json_array();
    CHECK(v && data && errors);
    static const char *const fields[] = {
        "data.organisation_id",     "data.type",          "data.id",
        "data.version",             "data.relationships", "data.attributes.currency",
        "data.attributes.amount",
    };
    CHECK_INT(payment_validate_data(v, PAYMENT_CHECK_CREATE, data, errors), 7);
    check_fields(errors, fields, sizeof fields / sizeof fields[0]);
    json_decref(errors);
    json_decref(data);
    payment_validator_free(v);
}

/* ---- nulls ---- */

static void test_strip_nulls(void)
{
    json_t *value = parse("{\"a\": null, \"b\": {\"c\": null, \"d\": 1, \"e\": {\"f\": null}}, "
                          "\"g\": [null, {\"h\": null, \"i\": [null, {\"j\": null}]}, 2], "
                          "\"k\": \"null\"}");
    json_t *expect = parse("{\"b\": {\"d\": 1, \"e\": {}}, \"g\": [null, {\"i\": [null, {}]}, 2], "
                           "\"k\": \"null\"}");
    CHECK(value && expect);
    payment_attributes_strip_nulls(value);
    CHECK(json_equal(value, expect));
    json_decref(value);
    json_decref(expect);
}

/* Null means absent for an optional attribute: accepted and not kept. */
static void test_create_strips_nulls(void)
{
    payment_validator *v = payment_validator_new();
    json_t *data = parse("{" ORG ", \"attributes\": {\"amount\": \"1.00\", \"currency\": \"EUR\", "
                         "\"category_purpose\": null, \"beneficiary_party\": {\"name\": null, "
                         "\"address\": [\"a\"]}, \"structured_reference\": {\"issuer\": null}, "
                         "\"payment_scheme\": null}}");
    json_t *expect = parse("{\"amount\": \"1.00\", \"currency\": \"EUR\", "
                           "\"beneficiary_party\": {\"address\": [\"a\"]}, "
                           "\"structured_reference\": {}}");
    json_t *errors = json_array();
    CHECK(v && data && expect && errors);
    CHECK_INT(payment_validate_data(v, PAYMENT_CHECK_CREATE, data, errors), 0);
    CHECK(json_equal(json_object_get(data, "attributes"), expect));

    /* Validation alone treats a null member as absent too. */
    json_t *attributes =
        parse("{\"amount\": \"1.00\", \"currency\": \"EUR\", \"reference\": null}");
    CHECK_INT(payment_validate_attributes(v, attributes, errors), 0);
    json_t *no_amount = parse("{\"amount\": null, \"currency\": \"EUR\"}");
    CHECK_INT(payment_validate_attributes(v, no_amount, errors), 1);
    CHECK_STR(error_field(errors, 0), A "amount");
    CHECK_STR(error_message(errors, 0), "is required");

    json_decref(no_amount);
    json_decref(attributes);
    json_decref(errors);
    json_decref(expect);
    json_decref(data);
    payment_validator_free(v);
}

/* ---- the seed sample ---- */

static void test_seed_sample(void)
{
    json_error_t err;
    json_t *body = json_load_file(SEED_PATH, JSON_REJECT_DUPLICATES, &err);
    if (!body)
        fprintf(stderr, "  %s: %s (run from the repository root)\n", SEED_PATH, err.text);
    CHECK(body != NULL);
    payment_validator *v = payment_validator_new();
    CHECK(v != NULL);
    if (!body || !v) {
        json_decref(body);
        payment_validator_free(v);
        return;
    }

    /* As published: only the placeholder breaks the spec. */
    json_t *data = json_deep_copy(json_object_get(body, "data"));
    json_t *errors = json_array();
    CHECK_INT(payment_validate_data(v, PAYMENT_CHECK_CREATE, data, errors), 1);
    CHECK_STR(error_field(errors, 0), "data.attributes.payment_purpose_coded");
    CHECK_STR(error_message(errors, 0), "must be at most 4 characters");
    if (json_array_size(errors) != 1)
        print_errors(errors);
    json_decref(errors);
    json_decref(data);

    /* With it fixed the sample is valid for create and replace, and the
     * merged result of a patch of it is valid too. */
    data = json_deep_copy(json_object_get(body, "data"));
    CHECK_INT(json_object_set_new(json_object_get(data, "attributes"), "payment_purpose_coded",
                                  json_string("X")),
              0);
    json_t *original = json_deep_copy(data);
    errors = json_array();
    CHECK_INT(payment_validate_data(v, PAYMENT_CHECK_CREATE, data, errors), 0);
    CHECK_INT(payment_validate_data(v, PAYMENT_CHECK_REPLACE, data, errors), 0);
    if (json_array_size(errors) != 0)
        print_errors(errors);

    /* Validation removed only the null members; everything else is kept. */
    json_t *stripped = json_deep_copy(json_object_get(original, "attributes"));
    payment_attributes_strip_nulls(stripped);
    CHECK(json_equal(json_object_get(data, "attributes"), stripped));
    CHECK(json_equal(json_object_get(data, "relationships"),
                     json_object_get(original, "relationships")));
    CHECK(json_object_get(json_object_get(data, "attributes"), "clearing_id") == NULL);

    json_t *patch = parse("{\"amount\": \"300000.00\", \"reference\": null}");
    json_t *merged = merge_patch(json_object_get(data, "attributes"), patch);
    CHECK_INT(payment_validate_attributes(v, merged, errors), 1);
    CHECK_STR(error_field(errors, 0), "data.attributes.amount");
    CHECK_STR(error_message(errors, 0), "must be at most 250000.00 for payment scheme FPS");

    json_decref(merged);
    json_decref(patch);
    json_decref(stripped);
    json_decref(original);
    json_decref(errors);
    json_decref(data);
    json_decref(body);
    payment_validator_free(v);
}

static void test_validator_lifecycle(void)
{
    payment_validator_free(NULL);
    payment_validator *a = payment_validator_new();
    payment_validator *b = payment_validator_new();
    CHECK(a && b && a != b);
    payment_validator_free(a);
    payment_validator_free(b);
}

TEST_MAIN(TEST(test_types), TEST(test_enums), TEST(test_formats), TEST(test_lengths),
          TEST(test_array_item_lengths), TEST(test_amount_and_currency),
          TEST(test_payment_schemes), TEST(test_many_problems), TEST(test_envelope),
          TEST(test_envelope_many_problems), TEST(test_strip_nulls), TEST(test_create_strips_nulls),
          TEST(test_seed_sample), TEST(test_validator_lifecycle))
