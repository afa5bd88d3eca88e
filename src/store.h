/* store.h: the small interface every secret store implements (one file each:
 * store_vault.c, store_aws.c, store_azure.c) and the table that picks one
 * by the configuration's `type`. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct http_client;

/* What a store holds for an integration, as read. */
struct store_value {
        bool exists;            /* the secret exists (even if empty/deleted value) */
        bool managed;           /* carries managed_by = "patrol" */
        char *token;            /* secret; NULL when there is no value */
        char *token_id;         /* from the JSON object / metadata; NULL if unknown */
        int64_t expires_at;     /* 0 if unknown */
        char *version;          /* the store's version id of the value read, NULL if none */
};

/* What patrol writes. */
struct store_new {
        const char *token;
        const char *token_id;
        int64_t expires_at;
        char *const *scopes;
        size_t n_scopes;
        int64_t rotated_at;
        const char *request_id;         /* rotation id: idempotency key (AWS ClientRequestToken) */
};

/* Error codes from store operations (besides -ENOMEM):
 *  -ENOENT   secret (or version) does not exist
 *  -EACCES   the store refused us (401/403: auth or policy)
 *  -ESTALE   check-and-set / version conflict: someone else wrote
 *  -EAGAIN   transient: retries were exhausted (5xx, 429, connection)
 *  -EBADMSG  the answer did not parse or had the wrong shape
 *  -EIO      anything else
 * err always receives one line like
 *  `vault: write onplana/ci-reader: 400 check-and-set parameter did not match`. */
struct store_ops {
        const char *type;
        int (*open)(const struct cfg_store *cfg, struct http_client *http, void **ret);
        void *(*close)(void *s);
        /* The current value (AWS: AWSCURRENT).  A missing secret is not an
         * error: ret->exists = false. */
        int (*read_current)(void *s, const struct cfg_integration *in,
                            struct store_value *ret, char *err, size_t errlen);
        /* Write the new token, staged where the store can stage (AWS
         * AWSPENDING).  `prev` is what read_current returned (its version is
         * the CAS base; !prev->exists means create the secret).  Must be
         * safe to call again with the same request_id after a crash. */
        int (*write)(void *s, const struct cfg_integration *in, const struct store_value *prev,
                     const struct store_new *v, char **ret_version, char *err, size_t errlen);
        /* Read `version` back: exactly that version where the store stages
         * (it is not current yet); elsewhere what consumers read now, since
         * a newer version (someone else's) is what they would get. */
        int (*read_back)(void *s, const struct cfg_integration *in, const char *version,
                         struct store_value *ret, char *err, size_t errlen);
        /* Make `version` the one consumers read (AWS: move AWSCURRENT, then
         * the raw-format tags, which describe what consumers read).  v
         * describes the new token (v->token may be NULL here).  Safe to
         * repeat.  A no-op for stores that cannot stage. */
        int (*promote)(void *s, const struct cfg_integration *in, const struct store_new *v,
                       const char *version, const char *prev_version, char *err, size_t errlen);
        /* Whether write() is visible to consumers before promote(). */
        bool stages;
};

extern const struct store_ops store_vault_ops;
extern const struct store_ops store_aws_ops;
extern const struct store_ops store_azure_ops;

const struct store_ops *store_ops_for(enum store_type t);

void store_value_clear(struct store_value *v);

/* Shared by the stores: the JSON object of SPEC.md section 3 (caller
 * frees with secret_free: it holds the token), and its parser: a JSON object
 * with a "token" field, else the whole value is the token (adoption). */
char *store_format_json(const struct store_new *v);
int store_parse_value(const char *value, struct store_value *ret);
