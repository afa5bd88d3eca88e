/* config.h: the parsed, validated configuration (SPEC.md section 2).
 * config.c owns every string here; secrets are wiped by config_free(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PATROL_DEFAULT_CONFIG "/etc/patrol/patrol.conf"

struct policy {
        int64_t ttl;            /* seconds */
        int64_t renew_before;
        int64_t revoke_after;
        int64_t retry_min;
        int64_t retry_max;
};

struct cfg_onplana {
        char *url;              /* no trailing slash */
        char *ca_file;          /* absolute, or NULL for the system store */
};

struct cfg_account {
        char *name;
        int line;
        char *org;
        char *client_id;
        char *client_secret;    /* secret: loaded from client_secret_file or inline */
};

enum store_type { STORE_VAULT, STORE_AWS, STORE_AZURE };

enum auth_method {
        AUTH_VAULT_TOKEN,
        AUTH_VAULT_APPROLE,
        AUTH_VAULT_KUBERNETES,
        AUTH_AWS_DEFAULT,
        AUTH_AWS_STATIC,
        AUTH_AWS_ASSUME_ROLE,
        AUTH_AZURE_CLIENT_SECRET,
        AUTH_AZURE_MANAGED_IDENTITY,
        AUTH_AZURE_WORKLOAD_IDENTITY,
};

/* Keys of a store's `auth` group.  Secrets are loaded at configuration time
 * from their *_file (or inline key); files that rotate under us (Kubernetes
 * and workload-identity tokens) are kept as paths and read at each use. */
struct cfg_auth {
        enum auth_method method;
        char *mount;            /* vault: non-default auth mount */
        /* vault token */
        char *token;            /* secret */
        /* vault approle */
        char *role_id;
        char *secret_id;        /* secret */
        /* vault kubernetes */
        char *role;
        char *jwt_file;         /* path, read at use; default SA token path */
        /* aws */
        char *profile;
        char *access_key_id;
        char *secret_access_key;        /* secret */
        char *session_token;            /* secret, optional */
        char *role_arn;
        char *external_id;
        char *session_name;
        /* azure */
        char *tenant_id;
        char *client_id;
        char *client_secret;    /* secret */
        char *token_file;       /* workload identity: path, read at use */
};

struct cfg_store {
        char *name;
        int line;
        enum store_type type;
        char *url;              /* vault, azure: base URL without trailing slash */
        char *ca_file;
        /* vault */
        char *mount;            /* default "secret" */
        int kv_version;         /* 1 or 2, default 2 */
        char *namespace_;       /* optional */
        /* aws */
        char *region;
        char *endpoint;
        char *sts_endpoint;
        char *imds_endpoint;
        char *container_endpoint;
        char *kms_key_id;
        /* azure */
        char *authority_url;    /* default https://login.microsoftonline.com */
        char *resource;         /* default https://vault.azure.net */
        /* (imds_endpoint shared with aws) */
        struct cfg_auth auth;
};

enum secret_format { FORMAT_JSON, FORMAT_RAW };

/* name and line first: config.c's duplicate check reads every entry list
 * through that common start.  The small fields are kept together so the
 * struct has no hole (96 bytes on LP64). */
struct cfg_integration {
        char *name;
        int line;
        enum secret_format format;
        struct cfg_account *account;    /* points into config->accounts */
        struct cfg_store *store;        /* points into config->stores */
        /* Shared by every integration that lists the same strings in the same
         * order, and owned by config->strvs: never freed or changed through
         * an integration. */
        char *const *scopes;            /* n_scopes entries */
        size_t n_scopes;
        char *const *projects;
        size_t n_projects;
        char *secret;
        char **on_rotate;               /* NULL-terminated argv, or NULL */
        /* &config->policy without overrides, else the top-level policy with
         * them applied (shared by equal ones; owned by config->policies). */
        const struct policy *policy;
        bool adopt;
        bool allow_wildcard;
};

struct cfg_policy;               /* config.c's */

struct config {
        char *path;             /* as given */
        char *dir;              /* folder of the file, absolute */
        char *state_dir;        /* default /var/lib/patrol */
        int max_parallel;       /* default 8 */
        int64_t oneshot_timeout;        /* default 300 s */
        char *metrics_file;     /* optional */
        struct policy policy;
        struct cfg_onplana onplana;
        struct cfg_account *accounts;
        size_t n_accounts;
        struct cfg_store *stores;
        size_t n_stores;
        struct cfg_integration *integrations;
        size_t n_integrations;
        /* What integrations share: a configuration generated for thousands
         * of them repeats the same few lists and policies. */
        char ***strvs;                  /* scopes and projects lists */
        size_t n_strvs;
        struct cfg_policy *policies;    /* policies with overrides, newest first */
};

/* Load and validate.  On failure prints `FILE:LINE: what is wrong` (with a
 * `did you mean "..."` where a close name exists) through log_error and
 * returns -EINVAL (invalid; exit 78) or -errno (unreadable file; also 78).
 * check_files: also require every credential path kept for later use
 * (jwt_file, token_file) to exist and be readable (--check-config). */
int config_load(const char *path, bool check_files, struct config **ret);
struct config *config_free(struct config *c);

const struct cfg_integration *config_find_integration(const struct config *c, const char *name);
const struct cfg_account *config_find_account(const struct config *c, const char *name);
const char *store_type_name(enum store_type t);

/* Closest candidate within a small edit distance, or NULL (for "did you mean"). */
const char *config_suggest(const char *word, const char *const *candidates, size_t n);

/* True for http:// URLs patrol accepts: loopback and the link-local
 * metadata addresses; https:// always true. */
bool config_url_allowed(const char *url);
