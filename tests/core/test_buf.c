#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

static void test_append_and_puts(void)
{
    struct buf b = BUF_INIT;
    CHECK(b.data == NULL);
    CHECK_INT(buf_append(&b, "abc", 3), 0);
    CHECK_INT(buf_puts(&b, "def"), 0);
    CHECK_INT(buf_append(&b, "", 0), 0);
    CHECK_INT(buf_append(&b, "g\0h", 3), 0); /* bytes, not a C string */
    CHECK_INT(b.len, 9);
    CHECK(memcmp(b.data, "abcdefg\0h", 10) == 0); /* and the terminating NUL */
    CHECK(b.cap > b.len);
    CHECK_INT(buf_failed(&b), 0);
    buf_free(&b);
    CHECK(b.data == NULL);
    CHECK_INT(b.len, 0);
}

static void test_grows_past_initial_capacity(void)
{
    struct buf b = BUF_INIT;
    char chunk[100];
    for (int i = 0; i < 1000; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        CHECK_INT(buf_append(&b, chunk, sizeof chunk), 0);
    }
    CHECK_INT(b.len, 100000);
    CHECK(b.cap > b.len);
    CHECK_INT(b.data[b.len], '\0');
    int ok = 1;
    for (size_t i = 0; i < b.len; i++)
        ok &= b.data[i] == 'a' + (char)(i / 100 % 26);
    CHECK(ok);
    buf_free(&b);
}

static void test_reserve(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(buf_reserve(&b, 1000), 0);
    CHECK(b.cap >= 1001);
    CHECK_INT(b.len, 0);
    char *before = b.data;
    for (int i = 0; i < 1000; i++)
        CHECK_INT(buf_append(&b, "x", 1), 0);
    CHECK(b.data == before); /* the reservation avoided reallocation */
    buf_free(&b);
}

static void test_printf(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(buf_printf(&b, "%d-%s", 42, "x"), 0);
    CHECK_INT(buf_printf(&b, "%s", ""), 0);
    CHECK_INT(buf_printf(&b, "|%05.1f|", 3.14159), 0);
    CHECK_STR(b.data, "42-x|003.1|");
    CHECK_INT(b.len, strlen("42-x|003.1|"));

    /* A formatted piece larger than the whole current allocation. */
    char big[3000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_INT(buf_printf(&b, "[%s]", big), 0);
    CHECK_INT(b.len, strlen("42-x|003.1|") + 2 + sizeof big - 1);
    CHECK_INT(b.data[b.len - 1], ']');
    CHECK_INT(strlen(b.data), b.len);
    buf_free(&b);
}

static void test_json_escape_table(void)
{
    static const struct {
        const char *in;
        size_t len; /* 0: strlen(in) */
        const char *want;
    } cases[] = {
        {"", 0, ""},
        {"plain text", 0, "plain text"},
        {"a\"b", 0, "a\\\"b"},
        {"a\\b", 0, "a\\\\b"},
        {"line\nbreak", 0, "line\\nbreak"},
        {"tab\there", 0, "tab\\u0009here"},
        {"\r", 0, "\\u000d"},
        {"\x01\x1f", 0, "\\u0001\\u001f"},
        {"nul\0x", 5, "nul\\u0000x"},
        {" \x7f~", 0, " \x7f~"},                 /* DEL needs no escape in JSON */
        {"caf\xc3\xa9 \xe2\x82\xac", 0, "caf\xc3\xa9 \xe2\x82\xac"}, /* UTF-8 untouched */
        {"/\"\\\n", 0, "/\\\"\\\\\\n"},
        {"\"\"", 0, "\\\"\\\""},
        {"end\"", 0, "end\\\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b = BUF_INIT;
        CHECK_INT(buf_puts(&b, "<"), 0);
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
        CHECK_INT(buf_json_escape(&b, cases[i].in, len), 0);
        CHECK_INT(buf_puts(&b, ">"), 0);
        char want[128];
        snprintf(want, sizeof want, "<%s>", cases[i].want);
        CHECK_STR(b.data, want);
        CHECK_INT(b.len, strlen(want));
        buf_free(&b);
    }
}

static void test_reset_keeps_memory(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(buf_puts(&b, "some text"), 0);
    char *mem = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    CHECK_INT(b.len, 0);
    CHECK(b.data == mem);
    CHECK_INT(b.cap, cap);
    CHECK_STR(b.data, "");
    CHECK_INT(buf_puts(&b, "new"), 0);
    CHECK_STR(b.data, "new");
    buf_free(&b);

    struct buf empty = BUF_INIT;
    buf_reset(&empty); /* nothing allocated: still fine */
    CHECK(empty.data == NULL);
    CHECK_INT(empty.len, 0);
}

static void test_steal(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(buf_puts(&b, "owned"), 0);
    size_t len = 0;
    char *p = buf_steal(&b, &len);
    CHECK_STR(p, "owned");
    CHECK_INT(len, 5);
    CHECK(b.data == NULL);
    CHECK_INT(b.len, 0);
    CHECK_INT(b.cap, 0);
    free(p);

    /* The emptied buffer is usable again. */
    CHECK_INT(buf_puts(&b, "again"), 0);
    CHECK_STR(b.data, "again");
    p = buf_steal(&b, NULL);
    CHECK_STR(p, "again");
    free(p);
    buf_free(&b);
}

static void test_failed_is_sticky(void)
{
    /* A buffer that once ran out of memory refuses every later append and
     * keeps what it had, so a caller can append freely and check once. */
    struct buf b = BUF_INIT;
    CHECK_INT(buf_puts(&b, "kept"), 0);
    b.failed = 1;
    CHECK_INT(buf_failed(&b), 1);
    CHECK_INT(buf_puts(&b, "lost"), -1);
    CHECK_INT(buf_append(&b, "lost", 4), -1);
    CHECK_INT(buf_printf(&b, "%s", "lost"), -1);
    CHECK_INT(buf_json_escape(&b, "lost\"", 5), -1);
    CHECK_INT(buf_reserve(&b, 1), -1);
    CHECK_INT(b.len, 4);
    CHECK_STR(b.data, "kept");
    CHECK_INT(buf_failed(&b), 1);
    buf_reset(&b);
    CHECK_INT(buf_failed(&b), 0);
    CHECK_INT(buf_puts(&b, "ok"), 0);
    CHECK_STR(b.data, "ok");
    buf_free(&b);
}

TEST_MAIN(TEST(test_append_and_puts), TEST(test_grows_past_initial_capacity), TEST(test_reserve),
          TEST(test_printf), TEST(test_json_escape_table), TEST(test_reset_keeps_memory),
          TEST(test_steal), TEST(test_failed_is_sticky))
