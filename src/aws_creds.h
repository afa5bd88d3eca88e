/* aws_creds.h: AWS credentials for a store's `auth` group (SPEC.md 2) —
 * the SDKs' default provider chain, static keys, STS AssumeRole — cached
 * and refreshed before they expire, and SigV4-signed requests made with
 * them.  aws_creds.c owns every credential string; all are wiped. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct http_client;
struct http_response;

struct aws_creds {
        char *access_key_id;
        char *secret_access_key;        /* secret */
        char *session_token;            /* secret; NULL for long-term keys */
        int64_t expires_at;             /* wall-clock seconds; 0: does not expire */
        const char *source;             /* "environment", "IMDS", ... (static, for messages) */
};

struct aws_creds *aws_creds_free(struct aws_creds *c);

/* One per store: the configured method, its cache and its lock (rotations
 * may run in parallel).  `region` signs STS calls; cfg and http outlive it. */
struct aws_auth;

int aws_auth_new(const struct cfg_store *cfg, const char *region, struct http_client *http,
                 struct aws_auth **ret);
struct aws_auth *aws_auth_free(struct aws_auth *a);

/* A private copy of the current credentials, resolved or refreshed when
 * needed (temporary ones 5 minutes before they expire).  *ret_fresh (may be
 * NULL): they were obtained by this call.  err gets a line without the
 * "aws: <op> <secret>: " prefix ("credentials: web identity: ...").
 * Returns 0, -EACCES (none found, or refused), -EAGAIN (transient),
 * -EBADMSG (an answer did not parse), -ENOMEM. */
int aws_auth_get(struct aws_auth *a, struct aws_creds **ret, bool *ret_fresh, char *err, size_t errlen);

/* AWS refused the cached credentials (expired, revoked): forget them. */
void aws_auth_invalidate(struct aws_auth *a);

/* A request to sign with SigV4 and send through http_do. */
struct aws_request {
        const char *method;
        const char *url;                /* "https://host[:port]/path[?query]" */
        const char *service;            /* "secretsmanager", "sts" */
        const char *region;
        const char *const *headers;     /* signed and sent; NULL-terminated; not Host/X-Amz-* */
        const char *body;               /* may hold secrets: the caller wipes it */
        size_t body_len;
        const char *ca_file;
        bool idempotent;
};

/* Sign with `cr` (Host, X-Amz-Date, X-Amz-Security-Token added) and send.
 * Returns what http_do returns, or -EINVAL for a malformed URL. */
int aws_signed_do(struct http_client *http, const struct aws_creds *cr, const struct aws_request *req,
                  struct http_response *resp, char *errbuf, size_t errlen);

/* Exposed for tests: the text of the first <tag>...</tag> of an XML answer,
 * entities decoded (a fresh secret), or NULL when absent. */
char *aws_xml_text(const char *xml, const char *tag);
