/* sign: see sign.h.  The secret's key is decoded strictly (standard base64
 * alphabet, padding only at the end, length a multiple of four, at least
 * one byte), and the HMAC streamed over the three parts and the dots
 * between them, so that the body is never copied.
 *
 * Threads: any (OpenSSL 3's EVP_MAC is thread safe; nothing here is
 * shared). */
#include "webhook/sign.h"

#include <assert.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

#include "webhook/endpoint.h"

#define SECRET_PREFIX "whsec_"
#define SECRET_PREFIX_LEN (sizeof SECRET_PREFIX - 1)
#define KEY_MAX 96           /* bytes a secret of WEBHOOK_SECRET_MAX characters decodes to, and more */
#define MAC_LEN 32           /* HMAC-SHA256 */
#define MAC_B64_LEN 44       /* base64 of 32 bytes, padding included */

/* Whether c is in the standard base64 alphabet (not the padding). */
static int b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

/* Decodes the key of secret: its bytes into key (room for KEY_MAX), their
 * count into *len.  Returns 0, or -1 for a malformed secret. */
static int secret_key(const char *secret, unsigned char key[KEY_MAX], size_t *len)
{
    size_t slen = strlen(secret);
    if (slen > WEBHOOK_SECRET_MAX || slen <= SECRET_PREFIX_LEN ||
        memcmp(secret, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0)
        return -1;
    const char *b64 = secret + SECRET_PREFIX_LEN;
    size_t n = slen - SECRET_PREFIX_LEN;
    if (n % 4 != 0)
        return -1;
    size_t pad = 0;
    while (pad < 2 && b64[n - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < n - pad; i++)
        if (!b64_char(b64[i]))
            return -1;
    assert(n / 4 * 3 <= KEY_MAX);
    int out = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)n);
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (out < 0 || (size_t)out < pad || (size_t)out - pad == 0)
        return -1;
    *len = (size_t)out - pad;
    return 0;
}

/* HMAC-SHA256 of "{msg_id}.{timestamp}.{body}" under key into mac.
 * Returns 0, or -1 when OpenSSL fails. */
static int mac_message(const unsigned char *key, size_t key_len, const char *msg_id,
                       int64_t timestamp, const char *body, size_t len,
                       unsigned char mac[MAC_LEN])
{
    char ts[32];
    int tslen = snprintf(ts, sizeof ts, ".%" PRId64 ".", timestamp);
    assert(tslen > 0 && (size_t)tslen < sizeof ts);
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    size_t mac_len = 0;
    int ok = ctx && EVP_MAC_init(ctx, key, key_len, params) &&
             EVP_MAC_update(ctx, (const unsigned char *)msg_id, strlen(msg_id)) &&
             EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tslen) &&
             (len == 0 || EVP_MAC_update(ctx, (const unsigned char *)body, len)) &&
             EVP_MAC_final(ctx, mac, &mac_len, MAC_LEN) && mac_len == MAC_LEN;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    return ok ? 0 : -1;
}

int webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                 size_t len, struct buf *out)
{
    assert(secret && msg_id && (body || len == 0) && out);
    unsigned char key[KEY_MAX];
    size_t key_len = 0;
    if (secret_key(secret, key, &key_len) != 0)
        return -1;
    unsigned char mac[MAC_LEN];
    int rc = mac_message(key, key_len, msg_id, timestamp, body, len, mac);
    OPENSSL_cleanse(key, sizeof key);
    if (rc != 0)
        return -1;
    unsigned char b64[MAC_B64_LEN + 1];
    int n = EVP_EncodeBlock(b64, mac, MAC_LEN);
    assert(n == MAC_B64_LEN);
    if (out->len > 0)
        buf_puts(out, " ");
    buf_puts(out, "v1,");
    buf_append(out, b64, (size_t)n);
    return buf_failed(out) ? -1 : 0;
}
