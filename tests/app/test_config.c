#include "app/config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define ARGS_MAX 16

typedef const char *(*env_fn)(const char *);

/* A fake environment: a fixed table of variables. */
struct env_var {
    const char *name;
    const char *value;
};

static const char *env_find(const struct env_var *vars, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(vars[i].name, name) == 0)
            return vars[i].value;
    return NULL;
}

/* Defines an env lookup function backed by its own constant table. */
#define ENV_FN(fn, ...)                                                   \
    static const char *fn(const char *name)                              \
    {                                                                     \
        static const struct env_var vars[] = {__VA_ARGS__};              \
        return env_find(vars, sizeof vars / sizeof vars[0], name);       \
    }

ENV_FN(env_empty, {"UNRELATED", "x"})

ENV_FN(env_all,
       {"PAYMENTD_LISTEN", "10.1.2.3:9000"},
       {"PAYMENTD_STORE", "sqlite:/tmp/env.db"},
       {"PAYMENTD_THREADS", "3"},
       {"PAYMENTD_MAX_BODY", "1000"},
       {"PAYMENTD_PUBLIC_URL", "https://env.example.com/"},
       {"PAYMENTD_LOG_LEVEL", "warn"},
       {"PAYMENTD_CLIENT_TIMEOUT", "7"})

ENV_FN(env_listen_only, {"PAYMENTD_LISTEN", "[::1]:81"})
ENV_FN(env_store_shared, {"PAYMENTD_STORE_SHARED", "1"})
ENV_FN(env_worker, {"PAYMENTD_MAX_APPLY_ATTEMPTS", "9"}, {"PAYMENTD_REPARTITION", "true"})

ENV_FN(env_bad_listen, {"PAYMENTD_LISTEN", "nope"})
ENV_FN(env_bad_store, {"PAYMENTD_STORE", ""})
ENV_FN(env_bad_threads, {"PAYMENTD_THREADS", "zero"})
ENV_FN(env_bad_max_body, {"PAYMENTD_MAX_BODY", "0"})
ENV_FN(env_bad_public_url, {"PAYMENTD_PUBLIC_URL", "ftp://x"})
ENV_FN(env_bad_log_level, {"PAYMENTD_LOG_LEVEL", "loud"})
ENV_FN(env_bad_client_timeout, {"PAYMENTD_CLIENT_TIMEOUT", "-1"})

/* Runs config_parse on "paymentd" followed by the NULL-terminated args. */
static int run(struct config *cfg, const char *const *args, env_fn env, char *err, size_t errlen)
{
    char *argv[ARGS_MAX + 2];
    int argc = 0;
    argv[argc++] = (char *)"paymentd";
    for (size_t i = 0; args && args[i] && argc <= ARGS_MAX; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    return config_parse(cfg, argc, argv, env, err, errlen);
}

/* A failure must explain itself in exactly one non-empty line. */
static void check_one_line(const char *err)
{
    CHECK(err[0] != '\0');
    CHECK(strchr(err, '\n') == NULL);
    CHECK(strchr(err, '\r') == NULL);
}

static void check_defaults(const struct config *cfg)
{
    CHECK_STR(cfg->host, "127.0.0.1");
    CHECK_INT(cfg->port, 8080);
    CHECK_STR(cfg->store, "sqlite:./data/payments.db");
    CHECK_INT(cfg->max_body, 262144);
    CHECK(cfg->threads >= 1);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 0)
        CHECK_INT(cfg->threads, cpus);
    CHECK_STR(cfg->public_url, "");
    CHECK_INT(cfg->log_level, LOG_INFO);
    CHECK_INT(cfg->client_timeout_s, 30);
    CHECK(cfg->shutdown_grace_ms > 0);
    CHECK_INT(cfg->help, 0);
}

static void test_defaults(void)
{
    struct config cfg;
    char err[256] = "";
    memset(&cfg, 0xa5, sizeof cfg); /* defaults must not depend on the caller */
    CHECK_INT(run(&cfg, NULL, NULL, err, sizeof err), CONFIG_OK);
    check_defaults(&cfg);

    memset(&cfg, 0x5a, sizeof cfg);
    CHECK_INT(run(&cfg, NULL, env_empty, err, sizeof err), CONFIG_OK);
    check_defaults(&cfg);
}

/* The value of the setting a flag controls, as text. */
static void describe(const struct config *cfg, const char *flag, char *out, size_t cap)
{
    if (strcmp(flag, "--listen") == 0)
        snprintf(out, cap, "%s|%u", cfg->host, (unsigned)cfg->port);
    else if (strcmp(flag, "--store") == 0)
        snprintf(out, cap, "%s", cfg->store);
    else if (strcmp(flag, "--threads") == 0)
        snprintf(out, cap, "%u", cfg->threads);
    else if (strcmp(flag, "--max-body") == 0)
        snprintf(out, cap, "%zu", cfg->max_body);
    else if (strcmp(flag, "--public-url") == 0)
        snprintf(out, cap, "%s", cfg->public_url);
    else if (strcmp(flag, "--log-level") == 0)
        snprintf(out, cap, "%d", (int)cfg->log_level);
    else if (strcmp(flag, "--client-timeout") == 0)
        snprintf(out, cap, "%u", cfg->client_timeout_s);
    else
        snprintf(out, cap, "?");
}

static const struct {
    const char *flag;
    const char *value;
    const char *want; /* describe() of the result */
} good_values[] = {
    {"--listen", "0.0.0.0:80", "0.0.0.0|80"},
    {"--listen", "127.0.0.1:8081", "127.0.0.1|8081"},
    {"--listen", "localhost:65535", "localhost|65535"},
    {"--listen", "[::1]:80", "::1|80"},
    {"--listen", "[::]:8080", "::|8080"},
    {"--listen", "[fe80::1]:1", "fe80::1|1"},
    {"--store", "sqlite:/tmp/p.db", "sqlite:/tmp/p.db"},
    {"--store", "sqlite:./x/y.db", "sqlite:./x/y.db"},
    {"--threads", "1", "1"},
    {"--threads", "4", "4"},
    {"--threads", "1024", "1024"},
    {"--max-body", "1", "1"},
    {"--max-body", "1048576", "1048576"},
    {"--max-body", "67108864", "67108864"},
    {"--public-url", "http://example.com", "http://example.com"},
    {"--public-url", "http://example.com/", "http://example.com"},
    {"--public-url", "https://api.example.com/base///", "https://api.example.com/base"},
    {"--public-url", "http://127.0.0.1:8080", "http://127.0.0.1:8080"},
    {"--public-url", "", ""},
    {"--log-level", "debug", "0"},
    {"--log-level", "info", "1"},
    {"--log-level", "warn", "2"},
    {"--log-level", "error", "3"},
    {"--client-timeout", "1", "1"},
    {"--client-timeout", "3600", "3600"},
};

static void test_flags_both_forms(void)
{
    for (size_t i = 0; i < sizeof good_values / sizeof good_values[0]; i++) {
        const char *flag = good_values[i].flag, *value = good_values[i].value;
        char joined[256], got[CONFIG_URI_MAX + 32], err[256] = "";
        struct config cfg;
        int failures = test_failures;

        const char *split[] = {flag, value, NULL};
        CHECK_INT(run(&cfg, split, NULL, err, sizeof err), CONFIG_OK);
        describe(&cfg, flag, got, sizeof got);
        CHECK_STR(got, good_values[i].want);

        snprintf(joined, sizeof joined, "%s=%s", flag, value);
        const char *eq[] = {joined, NULL};
        CHECK_INT(run(&cfg, eq, NULL, err, sizeof err), CONFIG_OK);
        describe(&cfg, flag, got, sizeof got);
        CHECK_STR(got, good_values[i].want);

        if (test_failures != failures)
            fprintf(stderr, "  case %zu: %s %s (%s)\n", i, flag, value, err);
    }
}

/* A value may itself contain '='; only the first one separates. */
static void test_flag_value_with_equals(void)
{
    struct config cfg;
    char err[256] = "";
    const char *args[] = {"--store=sqlite:/tmp/a=b.db", NULL};
    CHECK_INT(run(&cfg, args, NULL, err, sizeof err), CONFIG_OK);
    CHECK_STR(cfg.store, "sqlite:/tmp/a=b.db");
}

static void test_all_flags_together(void)
{
    struct config cfg;
    char err[256] = "";
    const char *args[] = {"--listen",          "[::1]:9999",        "--store=sqlite:/tmp/t.db",
                          "--threads",         "2",                 "--max-body=4096",
                          "--public-url",      "https://x.example/", "--log-level=error",
                          "--client-timeout",  "5",                 NULL};
    CHECK_INT(run(&cfg, args, NULL, err, sizeof err), CONFIG_OK);
    CHECK_STR(cfg.host, "::1");
    CHECK_INT(cfg.port, 9999);
    CHECK_STR(cfg.store, "sqlite:/tmp/t.db");
    CHECK_INT(cfg.threads, 2);
    CHECK_INT(cfg.max_body, 4096);
    CHECK_STR(cfg.public_url, "https://x.example");
    CHECK_INT(cfg.log_level, LOG_ERROR);
    CHECK_INT(cfg.client_timeout_s, 5);
    CHECK_INT(cfg.help, 0);
}

static void test_env(void)
{
    struct config cfg;
    char err[256] = "";
    CHECK_INT(run(&cfg, NULL, env_all, err, sizeof err), CONFIG_OK);
    CHECK_STR(cfg.host, "10.1.2.3");
    CHECK_INT(cfg.port, 9000);
    CHECK_STR(cfg.store, "sqlite:/tmp/env.db");
    CHECK_INT(cfg.threads, 3);
    CHECK_INT(cfg.max_body, 1000);
    CHECK_STR(cfg.public_url, "https://env.example.com");
    CHECK_INT(cfg.log_level, LOG_WARN);
    CHECK_INT(cfg.client_timeout_s, 7);

    /* one variable set: the others keep their defaults */
    CHECK_INT(run(&cfg, NULL, env_listen_only, err, sizeof err), CONFIG_OK);
    CHECK_STR(cfg.host, "::1");
    CHECK_INT(cfg.port, 81);
    CHECK_STR(cfg.store, "sqlite:./data/payments.db");
    CHECK_INT(cfg.max_body, 262144);
    CHECK_STR(cfg.public_url, "");
}

static void test_flag_wins_over_env(void)
{
    struct config cfg;
    char err[256] = "";
    const char *args[] = {"--listen=127.0.0.2:7000", "--store", "sqlite:/tmp/flag.db",
                          "--threads=5", "--max-body", "2000", "--public-url=http://flag.example",
                          "--log-level", "debug", "--client-timeout=9", NULL};
    CHECK_INT(run(&cfg, args, env_all, err, sizeof err), CONFIG_OK);
    CHECK_STR(cfg.host, "127.0.0.2");
    CHECK_INT(cfg.port, 7000);
    CHECK_STR(cfg.store, "sqlite:/tmp/flag.db");
    CHECK_INT(cfg.threads, 5);
    CHECK_INT(cfg.max_body, 2000);
    CHECK_STR(cfg.public_url, "http://flag.example");
    CHECK_INT(cfg.log_level, LOG_DEBUG);
    CHECK_INT(cfg.client_timeout_s, 9);

    /* one flag overrides its variable; the other variables still apply */
    const char *one[] = {"--threads", "6", NULL};
    CHECK_INT(run(&cfg, one, env_all, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.threads, 6);
    CHECK_STR(cfg.host, "10.1.2.3");
    CHECK_INT(cfg.max_body, 1000);
}

static void test_env_bad_values(void)
{
    static const struct {
        env_fn env;
        const char *flag; /* the message names the setting */
    } cases[] = {
        {env_bad_listen, "--listen"},         {env_bad_store, "--store"},
        {env_bad_threads, "--threads"},       {env_bad_max_body, "--max-body"},
        {env_bad_public_url, "--public-url"}, {env_bad_log_level, "--log-level"},
        {env_bad_client_timeout, "--client-timeout"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        char err[256] = "";
        CHECK_INT(run(&cfg, NULL, cases[i].env, err, sizeof err), CONFIG_EINVAL);
        check_one_line(err);
        CHECK(strstr(err, cases[i].flag) != NULL);
    }
}

static void test_bad_values(void)
{
    char long_store[CONFIG_URI_MAX + 16];
    memset(long_store, 'a', sizeof long_store - 1);
    memcpy(long_store, "sqlite:", 7);
    long_store[CONFIG_URI_MAX] = '\0'; /* CONFIG_URI_MAX characters: no room for the NUL */
    char long_url[CONFIG_URI_MAX + 16];
    memset(long_url, 'a', sizeof long_url - 1);
    memcpy(long_url, "http://", 7);
    long_url[CONFIG_URI_MAX] = '\0';
    char long_host[CONFIG_HOST_MAX + 16];
    memset(long_host, 'h', sizeof long_host);
    snprintf(long_host + CONFIG_HOST_MAX, 16, ":80");

    const struct {
        const char *flag;
        const char *value;
    } cases[] = {
        {"--listen", "127.0.0.1"},
        {"--listen", "127.0.0.1:"},
        {"--listen", ":8080"},
        {"--listen", "127.0.0.1:65536"},
        {"--listen", "127.0.0.1:99999999999999999999999"},
        {"--listen", "127.0.0.1:http"},
        {"--listen", "127.0.0.1:80x"},
        {"--listen", "127.0.0.1:-1"},
        {"--listen", "127.0.0.1:+80"},
        {"--listen", "127.0.0.1: 80"},
        {"--listen", "[::1]"},
        {"--listen", "[::1]:"},
        {"--listen", "[]:80"},
        {"--listen", ""},
        {"--listen", long_host},
        {"--store", ""},
        {"--store", long_store},
        {"--threads", "0"},
        {"--threads", "-1"},
        {"--threads", "+2"},
        {"--threads", "1025"},
        {"--threads", "two"},
        {"--threads", "1.5"},
        {"--threads", " 4"},
        {"--threads", "4 "},
        {"--threads", ""},
        {"--threads", "99999999999999999999999"},
        {"--max-body", "0"},
        {"--max-body", "-1"},
        {"--max-body", "1k"},
        {"--max-body", "67108865"},
        {"--max-body", "18446744073709551616"},
        {"--max-body", ""},
        {"--public-url", "ftp://example.com"},
        {"--public-url", "example.com"},
        {"--public-url", "http//example.com"},
        {"--public-url", "/v1"},
        {"--public-url", "http://exa mple.com"},
        {"--public-url", "http://x\"y"},
        {"--public-url", "http://x\\y"},
        {"--public-url", long_url},
        {"--log-level", "verbose"},
        {"--log-level", "INFO"},
        {"--log-level", ""},
        {"--client-timeout", "0"},
        {"--client-timeout", "3601"},
        {"--client-timeout", "x"},
        {"--client-timeout", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *flag = cases[i].flag, *value = cases[i].value;
        char joined[CONFIG_URI_MAX + 64];
        int failures = test_failures;

        for (int form = 0; form < 2; form++) {
            struct config cfg;
            char err[256];
            memset(err, 0, sizeof err);
            const char *split[] = {flag, value, NULL};
            snprintf(joined, sizeof joined, "%s=%s", flag, value);
            const char *eq[] = {joined, NULL};
            CHECK_INT(run(&cfg, form ? eq : split, NULL, err, sizeof err), CONFIG_EINVAL);
            check_one_line(err);
            CHECK(strstr(err, flag) != NULL);
        }
        if (test_failures != failures)
            fprintf(stderr, "  case %zu: %s \"%.60s\"\n", i, flag, value);
    }
}

/* A URL that is only a scheme has no host to prefix links with. */
static void test_public_url_without_host(void)
{
    static const char *const cases[] = {"http://", "https://", "https:///", "http:////"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        char err[256] = "";
        const char *args[] = {"--public-url", cases[i], NULL};
        int rc = run(&cfg, args, NULL, err, sizeof err);
        if (rc != CONFIG_EINVAL)
            fprintf(stderr, "  \"%s\" accepted as public_url \"%s\"\n", cases[i], cfg.public_url);
        CHECK_INT(rc, CONFIG_EINVAL);
        check_one_line(err);
    }
}

/* The message quotes the offending value; a value with a line break in it
 * must still give a single line. */
static void test_bad_value_with_newline(void)
{
    static const char *const cases[][3] = {
        {"--threads", "1\n2", NULL},
        {"--listen", "127.0.0.1:80\nx", NULL},
        {"--public-url", "ftp://a\nb", NULL},
        {"--nope\nmore", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        char err[256] = "";
        int failures = test_failures;
        CHECK_INT(run(&cfg, cases[i], NULL, err, sizeof err), CONFIG_EINVAL);
        check_one_line(err);
        if (test_failures != failures)
            fprintf(stderr, "  case %zu: message \"%s\"\n", i, err);
    }
}

static void test_unknown_flags(void)
{
    static const char *const cases[][4] = {
        {"--nope", NULL, NULL},
        {"--listenx", "127.0.0.1:80", NULL},
        {"--listenx=127.0.0.1:80", NULL, NULL},
        {"--thread", "4", NULL},
        {"--max_body", "10", NULL},
        {"-l", "127.0.0.1:80", NULL},
        {"--", NULL, NULL},
        {"-", NULL, NULL},
        {"positional", NULL, NULL},
        {"", NULL, NULL},
        {"--help=yes", NULL, NULL},
        {"--threads", "4", "--bogus"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        char err[256] = "";
        int failures = test_failures;
        CHECK_INT(run(&cfg, cases[i], NULL, err, sizeof err), CONFIG_EINVAL);
        check_one_line(err);
        if (test_failures != failures)
            fprintf(stderr, "  case %zu: \"%s\"\n", i, cases[i][0]);
    }
}

static void test_missing_value(void)
{
    static const char *const flags[] = {"--listen",   "--store",     "--threads",
                                        "--max-body", "--public-url", "--log-level",
                                        "--client-timeout"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        struct config cfg;
        char err[256] = "";
        const char *alone[] = {flags[i], NULL};
        CHECK_INT(run(&cfg, alone, NULL, err, sizeof err), CONFIG_EINVAL);
        check_one_line(err);
        CHECK(strstr(err, flags[i]) != NULL);

        /* last after another flag */
        const char *after[] = {"--help", flags[i], NULL};
        memset(err, 0, sizeof err);
        CHECK_INT(run(&cfg, after, NULL, err, sizeof err), CONFIG_EINVAL);
        check_one_line(err);
    }
}

static void test_help(void)
{
    struct config cfg;
    char err[256] = "";
    const char *help[] = {"--help", NULL};
    CHECK_INT(run(&cfg, help, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.help, 1);

    const char *h[] = {"-h", NULL};
    CHECK_INT(run(&cfg, h, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.help, 1);

    const char *mixed[] = {"--threads", "2", "--help", NULL};
    CHECK_INT(run(&cfg, mixed, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.help, 1);
    CHECK_INT(cfg.threads, 2);

    const char *none[] = {"--threads", "2", NULL};
    CHECK_INT(run(&cfg, none, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.help, 0);
}

/* A tiny error buffer truncates the message without overrunning it. */
static void test_small_errbuf(void)
{
    for (size_t cap = 1; cap <= 8; cap++) {
        char *err = malloc(cap);
        CHECK(err != NULL);
        if (!err)
            return;
        memset(err, 'x', cap);
        struct config cfg;
        const char *args[] = {"--threads", "zero", NULL};
        CHECK_INT(run(&cfg, args, NULL, err, cap), CONFIG_EINVAL);
        CHECK(strnlen(err, cap) < cap);
        free(err);
    }
}

static void test_usage(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (!f)
        return;
    config_usage(f);
    CHECK_INT(fclose(f), 0);
    CHECK(text != NULL);
    if (!text)
        return;
    static const char *const want[] = {
        "--listen",          "--store",          "--threads",           "--max-body",
        "--public-url",      "--log-level",      "--client-timeout",    "--help",
        "PAYMENTD_LISTEN",   "PAYMENTD_STORE",   "PAYMENTD_THREADS",    "PAYMENTD_MAX_BODY",
        "PAYMENTD_PUBLIC_URL", "PAYMENTD_LOG_LEVEL", "PAYMENTD_CLIENT_TIMEOUT",
        "127.0.0.1:8080",    "sqlite:./data/payments.db",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(text, want[i]))
            fprintf(stderr, "  usage lacks \"%s\"\n", want[i]);
        CHECK(strstr(text, want[i]) != NULL);
    }
    CHECK(len > 0 && text[len - 1] == '\n');
    free(text);
}

static void test_redact_uri(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"mongodb://user:s3cret@db1:27017,db2/payment?w=majority",
         "mongodb://user:***@db1:27017,db2/payment?w=majority"},
        {"mongodb://user@db1/payment", "mongodb://user@db1/payment"},
        {"mongodb://db1:27017/payment", "mongodb://db1:27017/payment"},
        {"sqlite:./data/payments.db", "sqlite:./data/payments.db"},
        {"mongodb://u:p@ss@h/db", "mongodb://u:***@h/db"},
        {"mongodb://h/db?x=a:b@c", "mongodb://h/db?x=a:b@c"},
        /* libpq's password= option, wherever it is in the query, each time. */
        {"postgres://u:pw@h:5432/db?password=pw2&sslmode=require",
         "postgres://u:***@h:5432/db?password=***&sslmode=require"},
        {"postgresql://h/db?sslmode=disable&password=s3cret",
         "postgresql://h/db?sslmode=disable&password=***"},
        {"postgres://h/db?password=a&password=b#frag", "postgres://h/db?password=***&password=***#frag"},
        {"postgres://h/db?password=", "postgres://h/db?password=***"},
        {"postgres://h/db?xpassword=v&passwordx=w", "postgres://h/db?xpassword=v&passwordx=w"},
        {"postgres://h/db?&&password=p&", "postgres://h/db?&&password=***&"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        config_redact_uri(cases[i].in, out, sizeof out);
        CHECK_STR(out, cases[i].out);
    }
    /* Cut to the buffer, never past it, and never showing the password. */
    char small[24];
    config_redact_uri("postgres://h/db?password=secretsecret", small, sizeof small);
    CHECK_STR(small, "postgres://h/db?passwor");
    config_redact_uri("postgres://h/db?a=b&password=secret", small, sizeof small);
    CHECK(strstr(small, "sec") == NULL);
}

/* --store-shared: off by default, true|false|1|0 from a flag or the
 * environment, anything else refused with the flag's name. */
static void test_store_shared(void)
{
    struct config cfg;
    char err[256] = "";
    CHECK_INT(run(&cfg, NULL, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.store_shared, 0);
    CHECK_INT(run(&cfg, (const char *[]){"--store-shared", "true", NULL}, NULL, err, sizeof err),
              CONFIG_OK);
    CHECK_INT(cfg.store_shared, 1);
    CHECK_INT(run(&cfg, (const char *[]){"--store-shared=false", NULL}, env_store_shared, err,
                  sizeof err),
              CONFIG_OK);
    CHECK_INT(cfg.store_shared, 0);
    CHECK_INT(run(&cfg, NULL, env_store_shared, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.store_shared, 1);
    CHECK_INT(run(&cfg, (const char *[]){"--store-shared", "yes", NULL}, NULL, err, sizeof err),
              CONFIG_EINVAL);
    CHECK(strstr(err, "--store-shared") != NULL);
}

/* The webhook flags: their defaults, values from flags, and refusals (a
 * schedule that is not delays, a zero duration, a bad boolean), each
 * message naming its flag. */
static void test_webhook_flags(void)
{
    struct config cfg;
    char err[256] = "";
    CHECK_INT(run(&cfg, NULL, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.webhooks, 1);
    CHECK_INT(cfg.webhook_timeout_ms, 15000);
    CHECK_STR(cfg.webhook_schedule, "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h");
    CHECK_INT(cfg.webhook_disable_after_ms, 5 * 86400 * 1000LL);
    CHECK_INT(cfg.webhook_allow_private, 0);
    CHECK_INT(run(&cfg,
                  (const char *[]){"--webhooks", "false", "--webhook-timeout", "2s",
                                   "--webhook-retry-schedule", "0s,500ms,1m",
                                   "--webhook-disable-after", "3h", "--webhook-allow-private",
                                   "true", NULL},
                  NULL, err, sizeof err),
              CONFIG_OK);
    CHECK_INT(cfg.webhooks, 0);
    CHECK_INT(cfg.webhook_timeout_ms, 2000);
    CHECK_STR(cfg.webhook_schedule, "0s,500ms,1m");
    CHECK_INT(cfg.webhook_disable_after_ms, 3 * 3600 * 1000LL);
    CHECK_INT(cfg.webhook_allow_private, 1);
    static const char *const bad[][2] = {
        {"--webhook-retry-schedule", "5x"},   {"--webhook-retry-schedule", "1s,,2s"},
        {"--webhook-retry-schedule", ""},     {"--webhook-timeout", "0s"},
        {"--webhook-disable-after", "soon"},  {"--webhook-allow-private", "maybe"},
        {"--webhooks", "2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK_INT(run(&cfg, (const char *[]){bad[i][0], bad[i][1], NULL}, NULL, err, sizeof err),
                  CONFIG_EINVAL);
        CHECK(strstr(err, bad[i][0]) != NULL);
    }
}

/* --max-apply-attempts: 5 by default, 1..1000 from a flag or the
 * environment; --repartition: off by default, a boolean. */
static void test_worker_flags(void)
{
    struct config cfg;
    char err[256] = "";
    CHECK_INT(run(&cfg, NULL, NULL, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.max_apply_attempts, 5);
    CHECK_INT(cfg.repartition, 0);
    CHECK_INT(run(&cfg, NULL, env_worker, err, sizeof err), CONFIG_OK);
    CHECK_INT(cfg.max_apply_attempts, 9);
    CHECK_INT(cfg.repartition, 1);
    CHECK_INT(run(&cfg, (const char *[]){"worker", "--max-apply-attempts", "1", NULL}, env_worker,
                  err, sizeof err),
              CONFIG_OK);
    CHECK_INT(cfg.max_apply_attempts, 1);
    CHECK_INT(cfg.worker, 1);
    static const char *const bad[] = {"0", "1001", "-1", "x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK_INT(run(&cfg, (const char *[]){"--max-apply-attempts", bad[i], NULL}, NULL, err,
                      sizeof err),
                  CONFIG_EINVAL);
        CHECK(strstr(err, "--max-apply-attempts") != NULL);
        check_one_line(err);
    }
    CHECK_INT(run(&cfg, (const char *[]){"--repartition", "maybe", NULL}, NULL, err, sizeof err),
              CONFIG_EINVAL);
    CHECK(strstr(err, "--repartition") != NULL);
}

static void test_store_uri(void)
{
    static const struct {
        const char *store, *collection;
        int wait;        /* 1: --wait-for-store; 2: --store-shared instead */
        const char *out; /* NULL: refused */
    } cases[] = {
        {"sqlite:./p.db", "", 0, "sqlite:./p.db"},
        {"sqlite:./p.db", "pay", 0, NULL},
        {"sqlite:./p.db", "", 1, NULL},
        {"sqlite:./p.db", "", 2, "sqlite:./p.db"},
        {"mongodb://h:27017/db", "", 2, NULL},
        {"mongodb://h:27017/db", "", 0, "mongodb://h:27017/db"},
        {"mongodb://h:27017/db", "pay", 0, "mongodb://h:27017/db?paymentdCollection=pay"},
        {"mongodb://h/db?w=majority", "pay", 1,
         "mongodb://h/db?w=majority&paymentdCollection=pay&paymentdWaitForStore=true"},
        {"mongodb://h:27017", "", 1, "mongodb://h:27017/payment?paymentdWaitForStore=true"},
        /* PostgreSQL: the URI as given; the MongoDB flags and --store-shared refused. */
        {"postgres://u@h:5432/db?sslmode=disable", "", 0, "postgres://u@h:5432/db?sslmode=disable"},
        {"postgresql://h/db", "", 0, "postgresql://h/db"},
        {"POSTGRES://h/db", "", 2, NULL},
        {"postgresql://h/db", "", 2, NULL},
        {"postgres://h/db", "pay", 0, NULL},
        {"postgresql://h/db", "", 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        char err[256] = "", out[512];
        CHECK_INT(config_parse(&cfg, 1, (char *[]){"paymentd", NULL}, NULL, err, sizeof err), 0);
        snprintf(cfg.store, sizeof cfg.store, "%s", cases[i].store);
        snprintf(cfg.mongo_collection, sizeof cfg.mongo_collection, "%s", cases[i].collection);
        cfg.wait_for_store = cases[i].wait == 1;
        cfg.store_shared = cases[i].wait == 2;
        int rc = config_store_uri(&cfg, out, sizeof out, err, sizeof err);
        if (cases[i].out) {
            CHECK_INT(rc, 0);
            CHECK_STR(out, cases[i].out);
        } else {
            CHECK_INT(rc, -1);
            CHECK(strstr(err, cases[i].wait == 2 ? "sqlite:" : "mongodb://") != NULL);
        }
    }
}

TEST_MAIN(TEST(test_store_uri), TEST(test_store_shared), TEST(test_worker_flags),
          TEST(test_webhook_flags), TEST(test_redact_uri), TEST(test_defaults),
          TEST(test_flags_both_forms), TEST(test_flag_value_with_equals),
          TEST(test_all_flags_together), TEST(test_env), TEST(test_flag_wins_over_env),
          TEST(test_env_bad_values), TEST(test_bad_values), TEST(test_public_url_without_host),
          TEST(test_bad_value_with_newline),
          TEST(test_unknown_flags), TEST(test_missing_value), TEST(test_help),
          TEST(test_small_errbuf), TEST(test_usage))
