/* azure_auth.h: Microsoft Entra access tokens for Azure Key Vault (SPEC.md 2):
 * client secret, managed identity (IMDS, or App Service's local endpoint) and
 * workload identity, cached until shortly before they expire; and the check
 * of Key Vault's 401 challenge against the configuration. */
#pragma once

#include <stddef.h>

struct azure_auth;
struct cfg_store;
struct http_client;

/* The token endpoint and resource come from cfg (authority_url + /{tenant}/
 * oauth2/v2.0/token, imds_endpoint, resource), which must outlive the
 * object.  Managed identity uses IMDS unless imds_endpoint is not configured
 * and $IDENTITY_ENDPOINT and $IDENTITY_HEADER are set (App Service).  For
 * workload identity, $AZURE_AUTHORITY_HOST replaces the default authority
 * (not one configured).  -EINVAL for a store group this cannot serve. */
int azure_auth_new(const struct cfg_store *cfg, struct http_client *http, struct azure_auth **ret);
struct azure_auth *azure_auth_free(struct azure_auth *a);

/* "Authorization: Bearer ..." (a secret: free it with secret_free), asking
 * for a new token when there is none or the cached one is about to expire.
 * *ret_gen names the token, for azure_auth_invalidate.  On failure err gets
 * a line without prefix, e.g. `token (client_secret): 401 invalid_client:
 * AADSTS7000215: Invalid client secret provided.`; codes as in store.h. */
int azure_auth_header(struct azure_auth *a, char **ret, unsigned *ret_gen, char *err, size_t errlen);

/* Mask the cached access token in text: error text a service built from a
 * request that carried it. */
void azure_auth_redact(struct azure_auth *a, char *text);
/* Forget token `gen` (Key Vault refused it), unless it was replaced already. */
void azure_auth_invalidate(struct azure_auth *a, unsigned gen);

/* A Key Vault WWW-Authenticate challenge: 0 when it is a Bearer challenge
 * whose authority host is the configured authority's and whose resource (or
 * scope without "/.default") is the configured resource; otherwise -EACCES
 * and err says what it named (never followed: a vault must not send our
 * credentials elsewhere). */
int azure_auth_check_challenge(const struct azure_auth *a, const char *www_authenticate,
                               char *err, size_t errlen);

/* Parameters of a Bearer challenge (exposed for the unit tests): the
 * authorization (or authorization_uri), resource and scope values, each
 * NULL when absent; caller frees.  -EINVAL when it is not a Bearer challenge. */
int azure_challenge_parse(const char *hdr, char **ret_authority, char **ret_resource, char **ret_scope);

/* "host[:port]" of an http(s) URL, lowercased; -EINVAL when there is none. */
int azure_url_host(const char *url, char *buf, size_t size);
