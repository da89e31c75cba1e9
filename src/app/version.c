/* version: the release, commit, schema and library versions of this build
 * (version.h).  The release and commit come from build/gen/version.h, which
 * the Makefile writes from the VERSION file and git. */
#include "app/version.h"

#include <assert.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <mongoc/mongoc.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <string.h>

#include "gen/version.h"
#include "payment/store.h"

#define VERSION_FIELDS 13 /* lines of --version, labels of the metric */

/* One "name value" of the version text.  The name is also the metric's
 * label, so it is made of [a-z_]; the value holds no '"', '\\' or newline
 * (versions are dotted numbers and words). */
struct version_field {
    const char *name;
    char value[64];
};

const char *version_release(void)
{
    return PAYMENTD_VERSION;
}

const char *version_commit(void)
{
    return PAYMENTD_COMMIT;
}

/* Copies a library's version string, "unknown" when it gave none, cut at
 * its first space ("3.0.15 19 Sep 2024" would not be one). */
static void field_text(struct version_field *f, const char *name, const char *v)
{
    f->name = name;
    snprintf(f->value, sizeof f->value, "%s", v && *v ? v : "unknown");
    f->value[strcspn(f->value, " \"\\\n")] = '\0';
}

static void field_int(struct version_field *f, const char *name, int v)
{
    f->name = name;
    snprintf(f->value, sizeof f->value, "%d", v);
}

/* Fills f[VERSION_FIELDS] in the order they are shown. */
static void version_fields(struct version_field f[VERSION_FIELDS])
{
    const curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
    int pq = PQlibVersion(); /* major * 10000 + minor since libpq 10 */
    char pq_text[32];
    snprintf(pq_text, sizeof pq_text, "%d.%d", pq / 10000, pq % 10000);
    size_t i = 0;
    field_text(&f[i++], "paymentd", version_release());
    field_text(&f[i++], "commit", version_commit());
    field_int(&f[i++], "sqlite_store_schema", payment_store_schema_sqlite());
    field_int(&f[i++], "postgresql_store_schema", payment_store_schema_postgres());
    field_int(&f[i++], "mongodb_store_schema", payment_store_schema_mongo());
    field_text(&f[i++], "libmicrohttpd", MHD_get_version());
    field_text(&f[i++], "jansson", jansson_version_str());
    field_text(&f[i++], "sqlite", sqlite3_libversion());
    field_text(&f[i++], "libpq", pq_text);
    field_text(&f[i++], "libmongoc", mongoc_get_version());
    field_text(&f[i++], "nats", nats_GetVersion());
    field_text(&f[i++], "libcurl", curl ? curl->version : NULL);
    field_text(&f[i++], "openssl", OpenSSL_version(OPENSSL_VERSION_STRING));
    assert(i == VERSION_FIELDS);
}

int version_print(FILE *out)
{
    struct version_field f[VERSION_FIELDS];
    version_fields(f);
    for (size_t i = 0; i < VERSION_FIELDS; i++)
        if (fprintf(out, "%s %s\n", f[i].name, f[i].value) < 0)
            return -1;
    return fflush(out) == 0 ? 0 : -1;
}

void version_metrics(struct buf *b)
{
    struct version_field f[VERSION_FIELDS];
    version_fields(f);
    buf_puts(b, "# HELP paymentd_build_info The running build: release, commit, store schemas"
                " and library versions.\n# TYPE paymentd_build_info gauge\n"
                "paymentd_build_info{version=\"");
    buf_puts(b, f[0].value);
    buf_puts(b, "\"");
    for (size_t i = 1; i < VERSION_FIELDS; i++)
        buf_printf(b, ",%s=\"%s\"", f[i].name, f[i].value);
    buf_puts(b, "} 1\n");
}
