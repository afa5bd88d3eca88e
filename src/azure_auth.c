/* azure_auth.c: Microsoft Entra access tokens for Key Vault: client
 * credentials with a secret or a federated assertion (workload identity),
 * managed identity through IMDS or App Service, a shared cache, and the
 * check of Key Vault's 401 challenge against the configuration. */
#include "azure_auth.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "duration.h"
#include "http.h"
#include "json.h"
#include "util.h"
#include "secret.h"

#define DEFAULT_AUTHORITY       "https://login.microsoftonline.com"
#define DEFAULT_IMDS            "http://169.254.169.254"
#define IMDS_PATH               "/metadata/identity/oauth2/token"
#define IMDS_API_VERSION        "2018-02-01"
#define APP_SERVICE_API_VERSION "2019-08-01"
#define ASSERTION_TYPE          "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
/* Ask for a new token this long before the old one expires (as the Azure
 * SDKs do); short-lived tokens are renewed at half their life. */
#define REFRESH_MARGIN_S        300
#define DETAIL_MAX              300

enum source { SRC_CLIENT_SECRET, SRC_WORKLOAD, SRC_IMDS, SRC_APP_SERVICE };

struct azure_auth {
        const struct cfg_store *cfg;
        struct http_client *http;
        enum source src;
        char *authority;        /* effective authority base URL, no trailing slash */
        char *resource;         /* configured resource, no trailing slash */
        char *token_url;        /* where tokens are asked for (with query for MSI) */
        /* Rotations may run in parallel: the cached token is shared. */
        pthread_mutex_t lock;
        char *token;            /* secret: the access token; NULL until fetched */
        int64_t renew_at_ms;    /* monotonic */
        unsigned generation;    /* bumped per fetch, so a refusal drops only its token */
};

static const char *source_name(enum source s)
{
        switch (s) {
        case SRC_CLIENT_SECRET:
                return "client_secret";
        case SRC_WORKLOAD:
                return "workload_identity";
        case SRC_IMDS:
                return "managed_identity (IMDS)";
        default:
                return "managed_identity (App Service)";
        }
}

/* Copy at most size-1 bytes of a server-supplied text up to its first
 * control character (Entra appends "\r\nTrace ID: ..." lines). */
static void one_line(char *buf, size_t size, const char *s)
{
        size_t n = 0;

        for (; s && *s && n + 1 < size; s++) {
                if ((unsigned char)*s < ' ' || *s == 0x7f)
                        break;
                buf[n++] = *s;
        }
        buf[n] = '\0';
}

static char *strip_slash_dup(const char *s)
{
        char *d = strdup(s);
        size_t n;

        if (!d)
                return NULL;
        n = strlen(d);
        while (n > 0 && d[n - 1] == '/')
                d[--n] = '\0';
        return d;
}

int azure_url_host(const char *url, char *buf, size_t size)
{
        const char *p = strstr(url ? url : "", "://"), *end;
        size_t n, i;

        if (!p)
                return -EINVAL;
        p += 3;
        end = p + strcspn(p, "/?#");
        /* userinfo never belongs in an authority we compare */
        if (memchr(p, '@', (size_t)(end - p)))
                return -EINVAL;
        n = (size_t)(end - p);
        if (n == 0 || n >= size)
                return -EINVAL;
        for (i = 0; i < n; i++)
                buf[i] = (char)tolower((unsigned char)p[i]);
        buf[n] = '\0';
        return 0;
}

/* ---------------------------------------------------------------- set-up */

/* base + "?"/"&" + "api-version=V&resource=R" [+ "&client_id=C"] */
static char *msi_url(const char *base, const char *api_version, const char *resource,
                     const char *client_id)
{
        char *er = http_escape(resource), *ec = client_id ? http_escape(client_id) : NULL;
        char *out = NULL;

        if (er && (!client_id || ec) &&
            asprintf(&out, "%s%sapi-version=%s&resource=%s%s%s", base, strchr(base, '?') ? "&" : "?",
                     api_version, er, ec ? "&client_id=" : "", ec ? ec : "") < 0)
                out = NULL;
        free(er);
        free(ec);
        return out;
}

static char *entra_url(const char *authority, const char *tenant)
{
        char *et = http_escape(tenant), *out = NULL;

        if (et && asprintf(&out, "%s/%s/oauth2/v2.0/token", authority, et) < 0)
                out = NULL;
        free(et);
        return out;
}

/* The authority for client credentials: the configured one, or for workload
 * identity $AZURE_AUTHORITY_HOST (set by the webhook for other clouds; a bare
 * host name, as the SDKs accept it, means https) when none was configured. */
static char *entra_authority(const struct azure_auth *a)
{
        const char *authority = a->cfg->authority_url ? a->cfg->authority_url : DEFAULT_AUTHORITY;
        const char *host = secure_getenv("AZURE_AUTHORITY_HOST");
        char *out = NULL;

        if (a->src != SRC_WORKLOAD || !host || !*host || strcmp(authority, DEFAULT_AUTHORITY) != 0)
                return strip_slash_dup(authority);
        if (strstr(host, "://"))
                return strip_slash_dup(host);
        if (asprintf(&out, "https://%s", host) < 0)
                return NULL;
        out[strcspn(out + 8, "/") + 8] = '\0';
        return out;
}

static int choose_entra(struct azure_auth *a)
{
        const struct cfg_auth *au = &a->cfg->auth;

        a->src = au->method == AUTH_AZURE_CLIENT_SECRET ? SRC_CLIENT_SECRET : SRC_WORKLOAD;
        if (!au->tenant_id || !au->client_id ||
            (a->src == SRC_CLIENT_SECRET && !au->client_secret) || (a->src == SRC_WORKLOAD && !au->token_file))
                return -EINVAL;
        if (!(a->authority = entra_authority(a)))
                return -ENOMEM;
        a->token_url = entra_url(a->authority, au->tenant_id);
        return a->token_url ? 0 : -ENOMEM;
}

/* App Service when its variables are set and no IMDS endpoint is configured. */
static int choose_msi(struct azure_auth *a)
{
        const struct cfg_store *c = a->cfg;
        const char *ep = secure_getenv("IDENTITY_ENDPOINT"), *hdr = secure_getenv("IDENTITY_HEADER");
        char *base = NULL, *u = NULL;

        /* Not used to get tokens, but a challenge must still name it. */
        if (!(a->authority = strip_slash_dup(c->authority_url ? c->authority_url : DEFAULT_AUTHORITY)))
                return -ENOMEM;
        if (!c->imds_endpoint && ep && *ep && hdr && *hdr) {
                a->src = SRC_APP_SERVICE;
                a->token_url = msi_url(ep, APP_SERVICE_API_VERSION, a->resource, c->auth.client_id);
                return a->token_url ? 0 : -ENOMEM;
        }
        a->src = SRC_IMDS;
        base = strip_slash_dup(c->imds_endpoint ? c->imds_endpoint : DEFAULT_IMDS);
        if (base && asprintf(&u, "%s%s", base, IMDS_PATH) >= 0)
                a->token_url = msi_url(u, IMDS_API_VERSION, a->resource, c->auth.client_id);
        free(base);
        free(u);
        return a->token_url ? 0 : -ENOMEM;
}

static int choose_source(struct azure_auth *a)
{
        switch (a->cfg->auth.method) {
        case AUTH_AZURE_CLIENT_SECRET:
        case AUTH_AZURE_WORKLOAD_IDENTITY:
                return choose_entra(a);
        case AUTH_AZURE_MANAGED_IDENTITY:
                return choose_msi(a);
        default:
                return -EINVAL;
        }
}

int azure_auth_new(const struct cfg_store *cfg, struct http_client *http, struct azure_auth **ret)
{
        struct azure_auth *a = calloc(1, sizeof(*a));
        int r;

        if (!a)
                return -ENOMEM;
        a->cfg = cfg;
        a->http = http;
        pthread_mutex_init(&a->lock, NULL);
        a->resource = strip_slash_dup(cfg->resource ? cfg->resource : "https://vault.azure.net");
        r = a->resource ? choose_source(a) : -ENOMEM;
        if (r < 0) {
                azure_auth_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

struct azure_auth *azure_auth_free(struct azure_auth *a)
{
        if (!a)
                return NULL;
        secret_free(a->token);
        free(a->authority);
        free(a->resource);
        free(a->token_url);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return NULL;
}

/* ---------------------------------------------------------------- requests */

/* "k1=v1&k2=v2..." from NULL-terminated pairs, values escaped; the result
 * holds a credential, so every intermediate is wiped. */
static char *form_encode(const char *const *kv)
{
        char *esc[16] = { 0 }, *out = NULL;
        size_t n = 0, len = 0, i;

        for (i = 0; i < 16 && kv[2 * i]; i++, n++) {
                if (!(esc[i] = http_escape(kv[2 * i + 1])))
                        goto out;
                len += strlen(kv[2 * i]) + strlen(esc[i]) + 2;
        }
        if (!(out = malloc(len + 1)))
                goto out;
        out[0] = '\0';
        for (i = 0, len = 0; i < n; i++)
                len += (size_t)sprintf(out + len, "%s%s=%s", i ? "&" : "", kv[2 * i], esc[i]);
out:
        for (i = 0; i < n + 1 && i < 16; i++)
                secret_free(esc[i]);
        return out;
}

/* The client-credentials form: a secret, or the federated token read now
 * (the kubelet rotates the file under us).  *ret_cred gets a copy of the
 * credential sent, to keep it out of the error text of a refusal. */
static int entra_body(const struct azure_auth *a, char **ret, char **ret_cred, char *err, size_t errlen)
{
        const struct cfg_auth *au = &a->cfg->auth;
        char *scope = NULL, *assertion = NULL;
        int r;

        if (asprintf(&scope, "%s/.default", a->resource) < 0)
                return -ENOMEM;
        if (a->src == SRC_WORKLOAD) {
                r = secret_read_file(au->token_file, &assertion);
                if (r < 0) {
                        set_err(err, errlen, "token (%s): cannot read %s: %s", source_name(a->src),
                                au->token_file, strerror(-r));
                        free(scope);
                        return -EACCES;
                }
                *ret = form_encode((const char *const[]){
                        "grant_type", "client_credentials", "client_id", au->client_id, "scope", scope,
                        "client_assertion_type", ASSERTION_TYPE, "client_assertion", assertion, NULL });
        } else {
                *ret = form_encode((const char *const[]){
                        "grant_type", "client_credentials", "client_id", au->client_id, "scope", scope,
                        "client_secret", au->client_secret, NULL });
                assertion = secret_dup(au->client_secret);
        }
        *ret_cred = assertion;
        free(scope);
        return *ret && *ret_cred ? 0 : -ENOMEM;
}

static int code_for_status(long status)
{
        if (status == 429 || status >= 500)
                return -EAGAIN;
        if (status == 400 || status == 401 || status == 403 || status == 404)
                return -EACCES;
        return -EIO;
}

/* `token (client_secret): 401 invalid_client: AADSTS7000215: ...` from an
 * OAuth error ({"error","error_description"}) or {"message"} (App Service).
 * cred, the credential the request carried, may be quoted back: masked. */
static int token_fail(const struct azure_auth *a, const struct http_response *resp, const char *cred,
                      char *err, size_t errlen)
{
        struct json_object *o = resp->body_len ? json_parse(resp->body, resp->body_len) : NULL;
        const char *code = NULL, *desc = NULL;
        char c[64] = "", d[DETAIL_MAX] = "";

        if (o && json_object_is_type(o, json_type_object)) {
                (void)json_get_str_opt(o, "error", &code);
                if (json_get_str_opt(o, "error_description", &desc) < 0 || !desc)
                        (void)json_get_str_opt(o, "message", &desc);
        }
        one_line(c, sizeof(c), code);
        one_line(d, sizeof(d), desc);
        set_err(err, errlen, "token (%s): %ld%s%s%s%s", source_name(a->src), resp->status,
                c[0] ? " " : "", c, d[0] ? ": " : "", d);
        secret_redact(err, cred);
        json_put_wiped(o);
        return code_for_status(resp->status);
}

/* expires_in / expires_on arrive as numbers (Entra) or numeric strings
 * (IMDS, App Service). */
static bool get_seconds(struct json_object *o, const char *key, int64_t *ret)
{
        struct json_object *v;
        const char *s;
        char *end = NULL;
        long long n;

        if (!json_object_object_get_ex(o, key, &v))
                return false;
        if (json_object_is_type(v, json_type_int)) {
                *ret = json_object_get_int64(v);
                return true;
        }
        if (!json_object_is_type(v, json_type_string))
                return false;
        s = json_object_get_string(v);
        errno = 0;
        n = strtoll(s, &end, 10);
        if (errno || end == s || *end)
                return false;
        *ret = n;
        return true;
}

static int64_t lifetime_of(struct json_object *o)
{
        int64_t v;

        if (get_seconds(o, "expires_in", &v))
                return v;
        if (get_seconds(o, "expires_on", &v))
                return v - now_wall();
        return -1;
}

/* Keep access_token and plan its renewal.  Called with a->lock held. */
static int token_accept(struct azure_auth *a, const struct http_response *resp, char *err, size_t errlen)
{
        struct json_object *o = json_parse(resp->body ? resp->body : "", resp->body_len);
        const char *tok = NULL;
        int64_t life, renew;
        int r = -EBADMSG;

        if (!o || !json_object_is_type(o, json_type_object) ||
            json_get_str_opt(o, "access_token", &tok) < 0 || !tok || !tok[0]) {
                set_err(err, errlen, "token (%s): unexpected answer: no access_token", source_name(a->src));
                goto out;
        }
        life = lifetime_clamp(lifetime_of(o));
        if (life <= 0) {
                set_err(err, errlen, "token (%s): unexpected answer: no usable expires_in/expires_on",
                        source_name(a->src));
                goto out;
        }
        renew = life > 2 * REFRESH_MARGIN_S ? life - REFRESH_MARGIN_S : life / 2;
        r = (a->token = secret_dup(tok)) ? 0 : -ENOMEM;
        a->renew_at_ms = now_mono_ms() + renew * 1000;
out:
        json_put_wiped(o);      /* refused or not, the answer held the token */
        return r;
}

/* The request for the token source, with its secret header if any, and a
 * copy of the credential it carries (NULL for IMDS). */
static int token_request(const struct azure_auth *a, struct http_request *req, char **ret_body,
                         char **ret_hdr, char **ret_cred, char *err, size_t errlen)
{
        const char *ih;
        int r;

        req->url = a->token_url;
        req->ca_file = a->cfg->ca_file;
        /* Asking for a token changes nothing: safe to repeat. */
        req->idempotent = true;
        if (a->src == SRC_CLIENT_SECRET || a->src == SRC_WORKLOAD) {
                req->method = "POST";
                r = entra_body(a, ret_body, ret_cred, err, errlen);
                if (r == 0) {
                        req->body = *ret_body;
                        req->body_len = strlen(*ret_body);
                }
                return r;
        }
        req->method = "GET";
        if (a->src == SRC_IMDS)
                return 0;
        /* App Service: the header value authenticates us; read it at use. */
        ih = secure_getenv("IDENTITY_HEADER");
        if (!ih || !*ih) {
                set_err(err, errlen, "token (%s): IDENTITY_HEADER is not set", source_name(a->src));
                return -EACCES;
        }
        if (asprintf(ret_hdr, "X-IDENTITY-HEADER: %s", ih) < 0) {
                *ret_hdr = NULL;
                return -ENOMEM;
        }
        *ret_cred = secret_dup(ih);
        return *ret_cred ? 0 : -ENOMEM;
}

/* Called with a->lock held. */
static int token_fetch(struct azure_auth *a, char *err, size_t errlen)
{
        struct http_request req = { 0 };
        struct http_response resp = { 0 };
        const char *headers[3] = { 0 };
        char *body = NULL, *hdr = NULL, *cred = NULL, detail[256] = "";
        int r;

        a->token = secret_free(a->token);
        a->generation++;
        r = token_request(a, &req, &body, &hdr, &cred, err, errlen);
        if (r < 0)
                goto out;
        if (body)
                headers[0] = "Content-Type: application/x-www-form-urlencoded";
        else
                headers[0] = hdr ? hdr : "Metadata: true";
        req.headers = headers;
        r = http_do(a->http, &req, &resp, detail, sizeof(detail));
        if (r < 0) {
                set_err(err, errlen, "token (%s): %s", source_name(a->src), detail[0] ? detail : strerror(-r));
                r = r == -ENOMEM ? r : (r == -EPROTO || r == -EFBIG || r == -EINVAL) ? -EIO : -EAGAIN;
                goto out;
        }
        if (resp.status != 200) {
                r = token_fail(a, &resp, cred, err, errlen);
                goto out;
        }
        r = token_accept(a, &resp, err, errlen);
out:
        secret_free(body);
        secret_free(hdr);
        secret_free(cred);
        http_response_clear(&resp);
        return r;
}

int azure_auth_header(struct azure_auth *a, char **ret, unsigned *ret_gen, char *err, size_t errlen)
{
        static const char prefix[] = "Authorization: Bearer ";
        char *h;
        int r = 0;

        pthread_mutex_lock(&a->lock);
        if (!a->token || now_mono_ms() >= a->renew_at_ms) {
                r = token_fetch(a, err, errlen);
                if (r < 0)
                        goto out;
        }
        h = malloc(sizeof(prefix) + strlen(a->token));
        if (!h) {
                r = -ENOMEM;
                goto out;
        }
        memcpy(h, prefix, sizeof(prefix) - 1);
        strcpy(h + sizeof(prefix) - 1, a->token);
        *ret = h;
        *ret_gen = a->generation;
out:
        pthread_mutex_unlock(&a->lock);
        return r;
}

void azure_auth_redact(struct azure_auth *a, char *text)
{
        pthread_mutex_lock(&a->lock);
        secret_redact(text, a->token);
        pthread_mutex_unlock(&a->lock);
}

void azure_auth_invalidate(struct azure_auth *a, unsigned gen)
{
        pthread_mutex_lock(&a->lock);
        if (gen == a->generation)
                a->token = secret_free(a->token);
        pthread_mutex_unlock(&a->lock);
}

/* ---------------------------------------------------------------- the challenge */

/* One auth-param value, quoted (with \-escapes) or a bare token. */
static const char *param_value(const char *p, char **ret)
{
        char *out = malloc(strlen(p) + 1);
        size_t n = 0;

        if (!out)
                return NULL;
        if (*p == '"') {
                for (p++; *p && *p != '"'; p++) {
                        if (*p == '\\' && p[1])
                                p++;
                        out[n++] = *p;
                }
                if (*p == '"')
                        p++;
        } else {
                while (*p && *p != ',' && *p != ' ' && *p != '\t')
                        out[n++] = *p++;
        }
        out[n] = '\0';
        *ret = out;
        return p;
}

static void keep_param(const char *key, size_t klen, char *val, char **auth, char **res, char **scope)
{
        char **slot = NULL;

        if ((klen == 13 && strncasecmp(key, "authorization", klen) == 0) ||
            (klen == 17 && strncasecmp(key, "authorization_uri", klen) == 0))
                slot = auth;
        else if (klen == 8 && strncasecmp(key, "resource", klen) == 0)
                slot = res;
        else if (klen == 5 && strncasecmp(key, "scope", klen) == 0)
                slot = scope;
        if (slot && !*slot) {
                *slot = val;
                return;
        }
        free(val);
}

int azure_challenge_parse(const char *hdr, char **ret_authority, char **ret_resource, char **ret_scope)
{
        char *auth = NULL, *res = NULL, *scope = NULL, *val;
        const char *p = hdr ? hdr : "", *key;
        size_t klen;

        p += strspn(p, " \t");
        if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] && p[6] != ' ' && p[6] != '\t'))
                return -EINVAL;
        for (p += 6; *p;) {
                p += strspn(p, " \t,");
                key = p;
                klen = strcspn(p, "= \t,");
                p += klen;
                p += strspn(p, " \t");
                if (klen == 0 || *p != '=') {
                        p += strcspn(p, ",");
                        continue;
                }
                p += 1 + strspn(p + 1, " \t");
                if (!(p = param_value(p, &val)))
                        goto oom;
                keep_param(key, klen, val, &auth, &res, &scope);
        }
        *ret_authority = auth;
        *ret_resource = res;
        *ret_scope = scope;
        return 0;
oom:
        free(auth);
        free(res);
        free(scope);
        return -ENOMEM;
}

/* The resource a challenge names: resource=, else scope= without "/.default". */
static char *challenge_resource(char *res, char *scope)
{
        size_t n;

        if (res)
                return strip_slash_dup(res);
        if (!scope)
                return NULL;
        n = strlen(scope);
        if (n > 9 && strcmp(scope + n - 9, "/.default") == 0)
                scope[n - 9] = '\0';
        return strip_slash_dup(scope);
}

int azure_auth_check_challenge(const struct azure_auth *a, const char *www_authenticate,
                               char *err, size_t errlen)
{
        char *auth = NULL, *res = NULL, *scope = NULL, *named = NULL;
        char want[256], got[256] = "", shown[DETAIL_MAX];
        int r;

        r = azure_challenge_parse(www_authenticate, &auth, &res, &scope);
        if (r == -ENOMEM)
                return r;
        one_line(shown, sizeof(shown), www_authenticate ? www_authenticate : "(none)");
        r = -EACCES;
        if (!auth || azure_url_host(auth, got, sizeof(got)) < 0) {
                set_err(err, errlen, "401 with a challenge patrol cannot use: %s", shown);
                goto out;
        }
        if (azure_url_host(a->authority, want, sizeof(want)) < 0 || strcmp(want, got) != 0) {
                set_err(err, errlen, "401 challenge names authority %s, not the configured %s: not followed",
                        got, want);
                goto out;
        }
        named = challenge_resource(res, scope);
        if (!named || strcasecmp(named, a->resource) != 0) {
                one_line(shown, sizeof(shown), named ? named : "(none)");
                set_err(err, errlen, "401 challenge names resource %s, not the configured %s: not followed",
                        shown, a->resource);
                goto out;
        }
        r = 0;
out:
        free(auth);
        free(res);
        free(scope);
        free(named);
        return r;
}
