/* sigv4.h: AWS Signature Version 4, Authorization-header form, over libcrypto.
 * Pure computation: no I/O, no clock (the caller passes the date). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SIGV4_AMZ_DATE_LEN 16           /* "20150830T123600Z" */
#define SIGV4_SHA256_HEX_LEN 64

struct sigv4_credentials {
        const char *access_key_id;
        const char *secret_access_key;
        const char *session_token;      /* NULL if none */
};

struct sigv4_request {
        const char *method;             /* "GET", "POST", as sent */
        /* Raw request target as in the request line, already percent-encoded
         * for the wire, may include "?query". */
        const char *path;
        /* "Name: value" strings, NULL-terminated (NULL for none).  A value may
         * hold obs-fold continuation lines ("a\n  b"). */
        const char *const *headers;
        const void *body;               /* NULL when body_len is 0 */
        size_t body_len;
};

enum {
        /* Remove "." and ".." segments and empty segments from the path.
         * Every service wants it but S3. */
        SIGV4_NORMALIZE_PATH = 1u << 0,
        /* Also sign an x-amz-content-sha256 header holding the body hash
         * (S3 and a few others require it; Secrets Manager does not). */
        SIGV4_SIGN_BODY = 1u << 1,
        /* Send the session token but leave it out of the signature, as some
         * older endpoints expect. */
        SIGV4_OMIT_SESSION_TOKEN = 1u << 2,
};

struct sigv4_params {
        const char *region;             /* "eu-west-1" */
        /* "secretsmanager"; "s3" alone gets the path encoded once, every other
         * service has it encoded again (AWS's "double encoding"). */
        const char *service;
        const char *amz_date;           /* "20150830T123600Z", see sigv4_amz_date() */
        unsigned flags;                 /* SIGV4_* */
};

/* Sign `req`.  On success returns 0 and sets *ret_authorization to the value
 * of the Authorization header; ret_canonical_request and ret_string_to_sign
 * may be NULL and are for tests and debugging.  Free all of them with
 * secret_free() (the canonical request holds the session token).
 *
 * The signature covers headers the caller must then send itself, exactly:
 *   X-Amz-Date: <amz_date>                       always
 *   X-Amz-Security-Token: <session_token>        when there is a token (sent
 *                                                 even with OMIT_SESSION_TOKEN)
 *   x-amz-content-sha256: <sigv4_sha256_hex(body)> with SIGV4_SIGN_BODY
 * Those names (and Authorization) must therefore not be in req->headers.
 *
 * Returns -EINVAL for a malformed input (header without ':', bad date, empty
 * key, one of the headers above passed in), -ENOMEM, or -EIO (libcrypto).
 * Out-parameters are written only on success. */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cr,
               const struct sigv4_params *p, char **ret_authorization,
               char **ret_canonical_request, char **ret_string_to_sign);

/* "YYYYMMDDTHHMMSSZ" in UTC.  Returns 0, or -EOVERFLOW for a time outside
 * years 1000..9999 (`out` is then left alone). */
int sigv4_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1]);

/* Lowercase hex SHA-256 of a buffer (data may be NULL when len is 0).
 * Returns 0 or -EIO. */
int sigv4_sha256_hex(const void *data, size_t len, char out[SIGV4_SHA256_HEX_LEN + 1]);
