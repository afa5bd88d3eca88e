/* onplana.h: the issuer.  The one module that knows Onplana's API (SPEC.md 5). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct http_client;
struct onplana;

struct onplana_token {
        char *id;
        char *token;            /* secret; only set by create */
        char *prefix;
        char *name;
        char *org_id;
        char **scopes;
        size_t n_scopes;
        char **project_ids;
        size_t n_project_ids;
        int64_t expires_at;     /* 0: no expiry */
        int64_t created_at;
        int64_t last_used_at;   /* 0: never */
        int64_t revoked_at;     /* 0: not revoked */
};

struct onplana_me {
        char *token_id;
        char *org_id;
        char **scopes;
        size_t n_scopes;
        char **project_ids;
        size_t n_project_ids;
        int64_t expires_at;
};

/* Error codes: -EACCES (401/403), -ENOENT (404), -EINVAL (400), -EAGAIN
 * (5xx/429/connection after retries), -EBADMSG (bad answer), -EIO.
 * err receives e.g. `onplana: create token: 400 invalid_scope: ...`.
 * *retry_after, when non-NULL, receives the last Retry-After (or -1). */
struct onplana *onplana_new(const struct cfg_onplana *cfg, struct http_client *http);
struct onplana *onplana_free(struct onplana *o);

int onplana_create(struct onplana *o, const struct cfg_account *acct, const char *name,
                   char *const *scopes, size_t n_scopes, char *const *projects, size_t n_projects,
                   int64_t expires_at, struct onplana_token **ret, char *err, size_t errlen);
/* All pages.  name may be NULL. */
int onplana_list(struct onplana *o, const struct cfg_account *acct, const char *name,
                 struct onplana_token ***ret, size_t *ret_n, char *err, size_t errlen);
int onplana_get(struct onplana *o, const struct cfg_account *acct, const char *id,
                struct onplana_token **ret, char *err, size_t errlen);
/* 204 and 404 both count as gone. */
int onplana_revoke(struct onplana *o, const struct cfg_account *acct, const char *id,
                   char *err, size_t errlen);
/* GET /api/v1/me with the PAT.  -EACCES when revoked or expired. */
int onplana_whoami(struct onplana *o, const char *pat, struct onplana_me **ret,
                   char *err, size_t errlen);

struct onplana_token *onplana_token_free(struct onplana_token *t);
void onplana_tokens_free(struct onplana_token **v, size_t n);
struct onplana_me *onplana_me_free(struct onplana_me *m);

/* `<integration>-<YYYYMMDD>-<8 hex>` (UTC date, random hex). */
int onplana_token_name(const char *integration, int64_t now, char *buf, size_t size);
/* True when `name` has that shape for `integration`. */
bool onplana_token_name_matches(const char *integration, const char *name);
