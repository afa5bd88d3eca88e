/* store_vault.c: HashiCorp Vault's KV secrets engine (v1 and v2) as a secret
 * store (SPEC.md 2-3), logged in with a token, AppRole or Kubernetes.
 *
 * KV v2 versions are the store's versions (decimal strings).  KV v1 has none:
 * read_current and read_back report version NULL and write returns
 * *ret_version = NULL.  Vault cannot stage, so read_back reads the current
 * value whatever version it is given (store.h). */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "http.h"
#include "json.h"
#include "util.h"
#include "secret.h"

#define DEFAULT_MOUNT           "secret"
#define DEFAULT_JWT_FILE        "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define MARKER                  "patrol"
#define CAS_MISMATCH            "check-and-set parameter did not match"
#define PERMISSION_DENIED       "permission denied"
#define ERRTEXT_MAX             400
/* Re-login this long before the lease ends: a tenth of it, at most 5 min. */
#define RENEW_MARGIN_MAX_MS     (300 * 1000)

struct vault {
        const struct cfg_store *cfg;
        struct http_client *http;
        const char *mount;
        char *ns_header;                /* "X-Vault-Namespace: ..." or NULL */
        /* Rotations may run in parallel: the cached login is shared. */
        pthread_mutex_t lock;
        char *token;                    /* secret: the client token; NULL until login */
        int64_t renew_at_ms;            /* monotonic; 0 when the token has no lease */
        unsigned generation;            /* bumped per login, so a stale 403 drops only its token */
};

/* One request, and what to say about it in err. */
struct call {
        const char *method;
        const char *url;
        const char *body;               /* may hold a secret: the caller wipes it */
        const char *op;                 /* "read", "write", "login", ... */
        const char *name;               /* the secret's path, or the auth method */
        const char *secret;             /* what body carries (secret_id, JWT, token): kept out of err */
};

/* ---------------------------------------------------------------- JSON with secrets */

/* ---------------------------------------------------------------- URLs */

/* Escape each segment of a slash-separated Vault path and keep the slashes.
 * "." and ".." are refused: libcurl would resolve them out of the mount. */
static int path_escape(const char *path, char **ret)
{
        char *copy = strdup(path), *out = NULL, *save = NULL, *seg;
        size_t len = 0, cap = strlen(path) * 3 + 1;
        int r = -ENOMEM;

        if (!copy || !(out = malloc(cap)))
                goto out;
        out[0] = '\0';
        for (seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
                char *e;

                if (streq(seg, ".") || streq(seg, "..")) {
                        r = -EINVAL;
                        goto out;
                }
                if (!(e = http_escape(seg)))
                        goto out;
                /* Fits: escaping at most triples each byte, and the slashes
                 * written are ones the input had. */
                len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "/" : "", e);
                free(e);
        }
        if (len == 0) {
                r = -EINVAL;
                goto out;
        }
        *ret = out;
        out = NULL;
        r = 0;
out:
        free(copy);
        free(out);
        return r;
}

/* url + "/v1/" + the non-NULL parts, each escaped, + query (already safe). */
static int vault_url(const struct vault *v, const char *a, const char *b, const char *c,
                     const char *query, char **ret)
{
        const char *parts[] = { a, b, c };
        char *buf = NULL;
        size_t size = 0, i;
        FILE *f = open_memstream(&buf, &size);
        int r = 0;

        if (!f)
                return -ENOMEM;
        fprintf(f, "%s/v1", v->cfg->url);
        for (i = 0; i < 3 && r == 0; i++) {
                char *e = NULL;

                if (!parts[i])
                        continue;
                r = path_escape(parts[i], &e);
                if (r == 0)
                        fprintf(f, "/%s", e);
                free(e);
        }
        if (query)
                fputs(query, f);
        if (fclose(f) != 0 && r == 0)
                r = -ENOMEM;
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        return 0;
}

/* ---------------------------------------------------------------- errors */

/* Append s with each run of blanks and control characters as one space. */
static size_t append_line(char *buf, size_t len, size_t size, const char *s)
{
        bool gap = false;

        for (; s && *s && len + 2 < size; s++) {
                if ((unsigned char)*s <= ' ' || *s == 0x7f) {
                        gap = true;
                        continue;
                }
                if (gap && len > 0 && buf[len - 1] != ' ')
                        buf[len++] = ' ';
                gap = false;
                buf[len++] = *s;
        }
        buf[len] = '\0';
        return len;
}

/* Vault's {"errors":[...]} joined with "; " on one line (its messages may
 * span lines: "1 error occurred:\n\t* permission denied\n\n"). */
static void error_text(const struct http_response *resp, char *buf, size_t size)
{
        struct json_object *root = NULL, *errs;
        size_t len = 0, i, n;

        buf[0] = '\0';
        if (resp->body && resp->body_len)
                root = json_parse(resp->body, resp->body_len);
        if (!root || json_get_array(root, "errors", &errs, NULL, 0) < 0)
                goto out;
        n = json_object_array_length(errs);
        for (i = 0; i < n; i++) {
                if (len > 0 && len + 3 < size) {
                        memcpy(buf + len, "; ", 3);
                        len += 2;
                }
                len = append_line(buf, len, size,
                                  json_object_get_string(json_object_array_get_idx(errs, i)));
        }
out:
        json_put_wiped(root);   /* it may quote what was sent */
}

static int code_for_status(long status, const char *text)
{
        if (status == 404)
                return -ENOENT;
        if (status == 401 || status == 403)
                return -EACCES;
        if (status == 400 && strstr(text, CAS_MISMATCH))
                return -ESTALE;
        /* 412: an Enterprise standby has not caught up yet; retrying helps. */
        if (status == 429 || status == 412 || status >= 500)
                return -EAGAIN;
        return -EIO;
}

/* An answer that is not the success expected: one err line, and its code.
 * Vault may quote what it was sent (a secret_id, the client token): err goes
 * to logs and records, so those are masked. */
static int fail_text(const struct http_response *resp, const struct call *c, const char *token,
                     char *err, size_t errlen)
{
        char text[ERRTEXT_MAX];

        error_text(resp, text, sizeof(text));
        if (!text[0] && resp->status == 404)
                snprintf(text, sizeof(text), "not found");
        set_err(err, errlen, "vault: %s %s: %ld%s%s", c->op, c->name, resp->status,
                text[0] ? " " : "", text);
        secret_redact(err, c->secret);
        secret_redact(err, token);
        return code_for_status(resp->status, text);
}

/* fail_text for a call sent with the client token (another worker may be
 * replacing it, hence the lock). */
static int vault_fail(struct vault *v, const struct http_response *resp, const struct call *c,
                      char *err, size_t errlen)
{
        int r;

        pthread_mutex_lock(&v->lock);
        r = fail_text(resp, c, v->token, err, errlen);
        pthread_mutex_unlock(&v->lock);
        return r;
}

static int bad_answer(const struct call *c, const char *why, char *err, size_t errlen)
{
        set_err(err, errlen, "vault: %s %s: unexpected answer: %s", c->op, c->name, why);
        return -EBADMSG;
}

/* No answer at all.  A refused TLS certificate or an oversized answer will
 * not heal by retrying; the rest (timeouts, resets) may. */
static int transport_code(int r)
{
        if (r == -ENOMEM)
                return -ENOMEM;
        if (r == -EPROTO || r == -EFBIG)
                return -EIO;
        return -EAGAIN;
}

static int parse_answer(const struct http_response *resp, const struct call *c,
                        struct json_object **ret, char *err, size_t errlen)
{
        struct json_object *o = NULL;

        if (resp->body && resp->body_len)
                o = json_parse(resp->body, resp->body_len);
        if (!o || !json_object_is_type(o, json_type_object)) {
                json_put_wiped(o);
                return bad_answer(c, "not a JSON object", err, errlen);
        }
        *ret = o;
        return 0;
}

/* ---------------------------------------------------------------- sending */

static int vault_send(struct vault *v, const struct call *c, const char *token_header,
                      struct http_response *resp, char *err, size_t errlen)
{
        const char *headers[5];
        char terr[256] = "";
        size_t n = 0;
        struct http_request req = {
                .method = c->method,
                .url = c->url,
                .headers = headers,
                .body = c->body,
                .body_len = c->body ? strlen(c->body) : 0,
                .ca_file = v->cfg->ca_file,
                /* Every call patrol makes is safe to repeat: reads, logins,
                 * metadata merges, and data writes guarded by check-and-set
                 * (a repeat after a lost answer fails CAS and is recognised
                 * as our own write, see kv2_recheck). */
                .idempotent = true,
        };
        int r;

        if (token_header)
                headers[n++] = token_header;
        if (v->ns_header)
                headers[n++] = v->ns_header;
        if (c->body)
                headers[n++] = "Content-Type: application/json";
        headers[n] = NULL;
        r = http_do(v->http, &req, resp, terr, sizeof(terr));
        if (r < 0) {
                set_err(err, errlen, "vault: %s %s: %s", c->op, c->name, terr[0] ? terr : strerror(-r));
                return transport_code(r);
        }
        return 0;
}

/* ---------------------------------------------------------------- login */

/* The login request, and a copy of the credential it carries (*ret_cred). */
static int login_body(const struct cfg_auth *a, const char **ret_method, char **ret_body,
                      char **ret_cred, char *err, size_t errlen)
{
        struct json_object *o = json_object_new_object();
        char *jwt = NULL;
        int r = -ENOMEM;

        if (!o)
                return -ENOMEM;
        if (a->method == AUTH_VAULT_APPROLE) {
                *ret_method = "approle";
                if (json_obj_add(o, "role_id", json_object_new_string(a->role_id ? a->role_id : "")) < 0 ||
                    json_obj_add(o, "secret_id", json_object_new_string(a->secret_id ? a->secret_id : "")) < 0)
                        goto out;
        } else if (a->method == AUTH_VAULT_KUBERNETES) {
                const char *path = a->jwt_file ? a->jwt_file : DEFAULT_JWT_FILE;

                *ret_method = "kubernetes";
                /* Read at each login: the kubelet rotates projected tokens. */
                r = secret_read_file(path, &jwt);
                if (r < 0) {
                        set_err(err, errlen, "vault: login kubernetes: cannot read %s: %s", path, strerror(-r));
                        r = -EIO;
                        goto out;
                }
                r = -ENOMEM;
                if (json_obj_add(o, "role", json_object_new_string(a->role ? a->role : "")) < 0 ||
                    json_obj_add(o, "jwt", json_object_new_string(jwt)) < 0)
                        goto out;
        } else {
                *ret_method = "?";
                set_err(err, errlen, "vault: login: not a Vault auth method");
                r = -EINVAL;
                goto out;
        }
        *ret_body = json_dump_secret(o);
        *ret_cred = jwt ? jwt : secret_dup(a->secret_id ? a->secret_id : "");
        jwt = NULL;
        r = *ret_body && *ret_cred ? 0 : -ENOMEM;
out:
        secret_free(jwt);
        json_put_wiped(o);
        return r;
}

/* Keep auth.client_token and plan the re-login from auth.lease_duration. */
static int login_accept(struct vault *v, const struct http_response *resp, const struct call *c,
                        char *err, size_t errlen)
{
        struct json_object *root = NULL, *auth;
        const char *tok;
        int64_t lease = 0, lease_ms;
        char why[128];
        int r;

        r = parse_answer(resp, c, &root, err, errlen);
        if (r < 0)
                return r;
        if (json_get_obj(root, "auth", &auth, why, sizeof(why)) < 0 ||
            json_get_str(auth, "client_token", &tok, why, sizeof(why)) < 0 || !tok[0]) {
                r = bad_answer(c, "no auth.client_token", err, errlen);
                goto out;
        }
        (void)json_get_int(auth, "lease_duration", &lease, NULL, 0);
        v->token = secret_dup(tok);
        if (!v->token) {
                r = -ENOMEM;
                goto out;
        }
        lease_ms = lifetime_clamp(lease) * 1000;
        v->renew_at_ms = lease_ms ? now_mono_ms() + lease_ms -
                (lease_ms / 10 < RENEW_MARGIN_MAX_MS ? lease_ms / 10 : RENEW_MARGIN_MAX_MS) : 0;
        r = 0;
out:
        json_put_wiped(root);
        return r;
}

/* Called with v->lock held. */
static int vault_login(struct vault *v, char *err, size_t errlen)
{
        const struct cfg_auth *a = &v->cfg->auth;
        struct http_response resp = { 0 };
        struct call c = { .method = "POST", .op = "login" };
        char *body = NULL, *url = NULL, *cred = NULL;
        int r;

        v->token = secret_free(v->token);
        v->renew_at_ms = 0;
        v->generation++;
        if (a->method == AUTH_VAULT_TOKEN) {
                if (!a->token || !a->token[0]) {
                        set_err(err, errlen, "vault: login token: no token configured");
                        return -EACCES;
                }
                v->token = secret_dup(a->token);
                return v->token ? 0 : -ENOMEM;
        }
        r = login_body(a, &c.name, &body, &cred, err, errlen);
        if (r < 0)
                goto out;
        r = vault_url(v, "auth", a->mount ? a->mount : c.name, "login", NULL, &url);
        if (r < 0)
                goto out;
        c.url = url;
        c.body = body;
        c.secret = cred;
        r = vault_send(v, &c, NULL, &resp, err, errlen);
        if (r < 0)
                goto out;
        if (resp.status != 200) {
                /* v->lock is held, and there is no client token yet. */
                r = fail_text(&resp, &c, NULL, err, errlen);
                /* "invalid role or secret ID" is a 400: still a refusal. */
                if (resp.status == 400)
                        r = -EACCES;
                goto out;
        }
        r = login_accept(v, &resp, &c, err, errlen);
out:
        secret_free(body);
        secret_free(cred);
        free(url);
        http_response_clear(&resp);
        return r;
}

/* "X-Vault-Token: ...", logging in first when there is no token or its
 * lease is nearly over.  *ret_fresh: the token was obtained just now. */
static int vault_token_header(struct vault *v, char **ret, unsigned *ret_gen, bool *ret_fresh,
                              char *err, size_t errlen)
{
        static const char prefix[] = "X-Vault-Token: ";
        bool fresh = false;
        char *h;
        int r = 0;

        pthread_mutex_lock(&v->lock);
        if (!v->token || (v->renew_at_ms && now_mono_ms() >= v->renew_at_ms)) {
                r = vault_login(v, err, errlen);
                if (r < 0)
                        goto out;
                fresh = true;
        }
        h = malloc(sizeof(prefix) + strlen(v->token));
        if (!h) {
                r = -ENOMEM;
                goto out;
        }
        memcpy(h, prefix, sizeof(prefix) - 1);
        strcpy(h + sizeof(prefix) - 1, v->token);
        *ret = h;
        *ret_gen = v->generation;
        *ret_fresh = fresh;
out:
        pthread_mutex_unlock(&v->lock);
        return r;
}

/* Forget the token of login `gen`, unless another call already replaced it. */
static void vault_drop_token(struct vault *v, unsigned gen)
{
        pthread_mutex_lock(&v->lock);
        if (gen == v->generation)
                v->token = secret_free(v->token);
        pthread_mutex_unlock(&v->lock);
}

static int vault_send_authed(struct vault *v, const struct call *c, unsigned *ret_gen, bool *ret_fresh,
                             struct http_response *resp, char *err, size_t errlen)
{
        char *hdr = NULL;
        int r;

        r = vault_token_header(v, &hdr, ret_gen, ret_fresh, err, errlen);
        if (r < 0)
                return r;
        r = vault_send(v, c, hdr, resp, err, errlen);
        secret_free(hdr);
        return r;
}

/* A cached login token can be revoked or expire early on the server (a
 * shorter max_ttl, an operator's revoke): Vault then answers 403. */
static bool stale_login(const struct vault *v, const struct http_response *resp)
{
        char text[ERRTEXT_MAX];

        if (v->cfg->auth.method == AUTH_VAULT_TOKEN || resp->status != 403)
                return false;
        error_text(resp, text, sizeof(text));
        return strstr(text, PERMISSION_DENIED) != NULL;
}

/* Send with the client token.  Returns 0 when an answer arrived, whatever
 * its status: the caller decides which statuses are failures. */
static int vault_do(struct vault *v, const struct call *c, struct http_response *resp,
                    char *err, size_t errlen)
{
        unsigned gen = 0;
        bool fresh = false;
        int r;

        r = vault_send_authed(v, c, &gen, &fresh, resp, err, errlen);
        if (r < 0 || fresh || !stale_login(v, resp))
                return r;
        vault_drop_token(v, gen);
        http_response_clear(resp);
        return vault_send_authed(v, c, &gen, &fresh, resp, err, errlen);
}

/* vault_do, then anything but 200/204 is a failure. */
static int vault_request(struct vault *v, const struct call *c, struct http_response *resp,
                         char *err, size_t errlen)
{
        int r = vault_do(v, c, resp, err, errlen);

        if (r < 0)
                return r;
        if (resp->status != 200 && resp->status != 204)
                return vault_fail(v, resp, c, err, errlen);
        return 0;
}

/* ---------------------------------------------------------------- values */

static bool managed_in(struct json_object *o)
{
        const char *s = NULL;

        return json_get_str_opt(o, "managed_by", &s) == 0 && streq(s, MARKER);
}

/* The "data" map patrol finds: its JSON object (SPEC.md 3) in json format;
 * {"token": ...} in raw format, or the only string a foreign secret holds
 * (adoption). */
static int value_from_data(struct json_object *data, enum secret_format fmt, struct store_value *out)
{
        struct store_value parsed = { 0 };
        const char *tok = NULL;
        char *dump;
        int r;

        if (fmt == FORMAT_RAW) {
                (void)json_get_str_opt(data, "token", &tok);
                if (!tok && json_object_object_length(data) == 1) {
                        json_object_object_foreach(data, key, val) {
                                (void)key;
                                if (json_object_is_type(val, json_type_string))
                                        tok = json_object_get_string(val);
                        }
                }
                out->token = secret_dup(tok);
                return !tok || out->token ? 0 : -ENOMEM;
        }
        dump = json_dump_secret(data);
        if (!dump)
                return -ENOMEM;
        r = store_parse_value(dump, &parsed);
        secret_free(dump);
        if (r < 0)
                return r;
        out->token = parsed.token;
        out->token_id = parsed.token_id;
        out->expires_at = parsed.expires_at;
        out->managed = managed_in(data);
        return 0;
}

/* Raw format keeps the rest in custom_metadata.  That is written before the
 * data, with "data_version" naming the version it describes: when the data
 * write then never happened, the metadata describes a token the data does
 * not hold, and the data's token wins (SPEC.md 3): id and expiry unknown. */
static int value_from_custom_metadata(struct json_object *cm, const char *version, struct store_value *out)
{
        const char *id = NULL, *exp = NULL, *dv = NULL;

        if (!cm || !json_object_is_type(cm, json_type_object))
                return 0;
        out->managed = managed_in(cm);
        (void)json_get_str_opt(cm, "data_version", &dv);
        if (dv && !streq(dv, version))
                return 0;
        (void)json_get_str_opt(cm, "token_id", &id);
        (void)json_get_str_opt(cm, "expires_at", &exp);
        if (exp && time_parse_rfc3339(exp, &out->expires_at) < 0)
                out->expires_at = 0;
        if (id && !(out->token_id = strdup(id)))
                return -ENOMEM;
        return 0;
}

/* ---------------------------------------------------------------- KV v2 */

/* The secret's custom_metadata as a new reference, or NULL when it has none. */
static int kv2_get_custom_metadata(struct vault *v, const struct cfg_integration *in, const char *op,
                                   struct json_object **ret, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        struct json_object *root = NULL, *data, *cm = NULL;
        char *url = NULL;
        struct call c = { .method = "GET", .op = op, .name = in->secret };
        int r;

        *ret = NULL;
        r = vault_url(v, v->mount, "metadata", in->secret, NULL, &url);
        if (r < 0)
                goto out;
        c.url = url;
        r = vault_do(v, &c, &resp, err, errlen);
        if (r < 0 || resp.status == 404)
                goto out;
        if (resp.status != 200) {
                r = vault_fail(v, &resp, &c, err, errlen);
                goto out;
        }
        r = parse_answer(&resp, &c, &root, err, errlen);
        if (r < 0)
                goto out;
        if (json_object_object_get_ex(root, "data", &data) &&
            json_object_object_get_ex(data, "custom_metadata", &cm) &&
            json_object_is_type(cm, json_type_object))
                *ret = json_object_get(cm);
out:
        json_object_put(root);
        http_response_clear(&resp);
        free(url);
        return r;
}

/* The custom_metadata of a KV v2 data read.  Vault before 1.9 leaves it out
 * of data reads: then ask the metadata endpoint. */
static int kv2_custom_metadata(struct vault *v, const struct cfg_integration *in, const char *op,
                               struct json_object *meta, struct json_object **ret,
                               char *err, size_t errlen)
{
        struct json_object *cm;

        if (json_object_object_get_ex(meta, "custom_metadata", &cm)) {
                *ret = json_object_is_type(cm, json_type_object) ? json_object_get(cm) : NULL;
                return 0;
        }
        return kv2_get_custom_metadata(v, in, op, ret, err, errlen);
}

/* {"data": {"data": {...} | null, "metadata": {"version": N, ...}}} */
static int kv2_decode(struct vault *v, const struct cfg_integration *in, const struct call *c,
                      struct json_object *root, struct store_value *out, char *err, size_t errlen)
{
        struct json_object *d, *meta, *data = NULL, *cm = NULL;
        int64_t ver;
        char why[128], vbuf[24];
        int r;

        if (json_get_obj(root, "data", &d, why, sizeof(why)) < 0 ||
            json_get_obj(d, "metadata", &meta, why, sizeof(why)) < 0 ||
            json_get_int(meta, "version", &ver, why, sizeof(why)) < 0)
                return bad_answer(c, why, err, errlen);
        snprintf(vbuf, sizeof(vbuf), "%" PRId64, ver);
        out->exists = true;
        if (!(out->version = strdup(vbuf)))
                return -ENOMEM;
        /* data is null when this version is deleted or destroyed: the secret
         * exists (its versions go on) but holds no token. */
        if (json_object_object_get_ex(d, "data", &data) && json_object_is_type(data, json_type_object)) {
                r = value_from_data(data, in->format, out);
                if (r < 0)
                        return r;
        }
        if (in->format != FORMAT_RAW)
                return 0;
        r = kv2_custom_metadata(v, in, c->op, meta, &cm, err, errlen);
        if (r == 0)
                r = value_from_custom_metadata(cm, out->version, out);
        json_object_put(cm);
        return r;
}

/* A 404 that still carries the version's metadata: deleted or destroyed. */
static bool kv2_is_deleted(struct json_object *root)
{
        struct json_object *d, *meta;

        return json_object_object_get_ex(root, "data", &d) &&
               json_object_object_get_ex(d, "metadata", &meta) &&
               json_object_is_type(meta, json_type_object);
}

/* Vault's "no such secret" is a 404 with {"errors":[]}; a 404 naming an
 * error ("no handler for route": a wrong mount) is a failure, not an
 * invitation to create the secret. */
static bool answer_is_absent(struct json_object *root)
{
        struct json_object *errs;

        return json_get_array(root, "errors", &errs, NULL, 0) == 0 && json_object_array_length(errs) == 0;
}

/* Sort a 404: 1 absent, 0 deleted/destroyed version (decode it), or a failure. */
static int classify_404(struct vault *v, const struct http_response *resp, const struct call *c,
                        struct json_object *root, bool versioned, char *err, size_t errlen)
{
        if (versioned && kv2_is_deleted(root))
                return 0;
        if (answer_is_absent(root))
                return 1;
        return vault_fail(v, resp, c, err, errlen);
}

/* GET data (version NULL: the current one).  A missing secret or version
 * gives ret->exists = false. */
static int kv2_read(struct vault *v, const struct cfg_integration *in, const char *version,
                    const char *op, struct store_value *ret, char *err, size_t errlen)
{
        struct store_value val = { 0 };
        struct http_response resp = { 0 };
        struct json_object *root = NULL;
        struct call c = { .method = "GET", .op = op, .name = in->secret };
        char *url = NULL, query[48] = "";
        int r;

        if (version)
                snprintf(query, sizeof(query), "?version=%s", version);
        r = vault_url(v, v->mount, "data", in->secret, query, &url);
        if (r < 0)
                goto out;
        c.url = url;
        r = vault_do(v, &c, &resp, err, errlen);
        if (r < 0)
                goto out;
        if (resp.status != 200 && resp.status != 404) {
                r = vault_fail(v, &resp, &c, err, errlen);
                goto out;
        }
        r = parse_answer(&resp, &c, &root, err, errlen);
        if (r == 0 && resp.status == 404)
                r = classify_404(v, &resp, &c, root, true, err, errlen);
        if (r < 0)
                goto out;
        if (r == 1) {
                r = 0;
                goto done;
        }
        r = kv2_decode(v, in, &c, root, &val, err, errlen);
        if (r < 0)
                goto out;
done:
        *ret = val;
        memset(&val, 0, sizeof(val));
out:
        store_value_clear(&val);
        json_put_wiped(root);
        http_response_clear(&resp);
        free(url);
        return r;
}

static char *scopes_joined(const struct store_new *nv)
{
        char *out = NULL;
        size_t size = 0, i;
        FILE *f = open_memstream(&out, &size);

        if (!f)
                return NULL;
        for (i = 0; i < nv->n_scopes; i++)
                fprintf(f, "%s%s", i ? "," : "", nv->scopes[i]);
        if (fclose(f) != 0) {
                free(out);
                return NULL;
        }
        return out;
}

/* Raw format: patrol's keys merged into the secret's other custom_metadata
 * (POST replaces the whole map, and operators keep their own keys there).
 * Values are strings: times RFC 3339, scopes comma-separated (SPEC.md 3). */
static struct json_object *raw_metadata(struct json_object *old, const struct store_new *nv,
                                        const char *data_version)
{
        struct json_object *cm = json_object_new_object();
        char exp[32], rot[32], *scopes = scopes_joined(nv);
        const struct { const char *key, *val; } keys[] = {
                { "token_id", nv->token_id }, { "expires_at", exp }, { "scopes", scopes },
                { "rotated_at", rot }, { "managed_by", MARKER }, { "data_version", data_version },
        };
        int r = cm && scopes ? 0 : -ENOMEM;
        size_t i;

        if (r == 0 && old && json_object_is_type(old, json_type_object)) {
                json_object_object_foreach(old, key, val) {
                        if (r == 0 && val)
                                r = json_obj_add(cm, key, json_object_get(val));
                }
        }
        time_format_rfc3339(nv->expires_at, exp, sizeof(exp));
        time_format_rfc3339(nv->rotated_at, rot, sizeof(rot));
        for (i = 0; r == 0 && i < sizeof(keys) / sizeof(keys[0]); i++)
                r = json_obj_add(cm, keys[i].key, json_object_new_string(keys[i].val ? keys[i].val : ""));
        free(scopes);
        if (r < 0) {
                json_object_put(cm);
                return NULL;
        }
        return cm;
}

/* POST metadata {"custom_metadata": cm}; other metadata settings are kept. */
static int kv2_put_custom_metadata(struct vault *v, const struct cfg_integration *in,
                                   struct json_object *cm, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        struct json_object *body = json_object_new_object();
        struct call c = { .method = "POST", .op = "write-metadata", .name = in->secret };
        char *url = NULL, *text = NULL;
        int r = -ENOMEM;

        if (!body || json_obj_add(body, "custom_metadata", json_object_get(cm)) < 0)
                goto out;
        if (!(text = json_dump(body)))
                goto out;
        r = vault_url(v, v->mount, "metadata", in->secret, NULL, &url);
        if (r < 0)
                goto out;
        c.url = url;
        c.body = text;
        r = vault_request(v, &c, &resp, err, errlen);
out:
        json_object_put(body);
        http_response_clear(&resp);
        free(text);
        free(url);
        return r;
}

/* Describe `nv`, as data version `data_version`, in custom_metadata.
 * *ret_old (if asked): what was there before, to put back on a conflict. */
static int kv2_write_raw_metadata(struct vault *v, const struct cfg_integration *in,
                                  const struct store_new *nv, const char *data_version,
                                  struct json_object **ret_old, char *err, size_t errlen)
{
        struct json_object *old = NULL, *cm = NULL;
        int r;

        r = kv2_get_custom_metadata(v, in, "write-metadata", &old, err, errlen);
        if (r < 0)
                goto out;
        r = -ENOMEM;
        if (!(cm = raw_metadata(old, nv, data_version)))
                goto out;
        r = kv2_put_custom_metadata(v, in, cm, err, errlen);
        if (r == 0 && ret_old) {
                *ret_old = old;
                old = NULL;
        }
out:
        json_object_put(old);
        json_object_put(cm);
        return r;
}

/* {"options":{"cas":N},"data":{...}} in a buffer the caller wipes. */
static int kv2_data_body(const struct cfg_integration *in, const struct store_new *nv, int64_t cas,
                         char **ret)
{
        struct json_object *root = json_object_new_object(), *opts = json_object_new_object();
        struct json_object *data = NULL;
        char *formatted = NULL;
        int r = -ENOMEM;

        if (!root || !opts)
                goto out;
        if (in->format == FORMAT_RAW) {
                if (!(data = json_object_new_object()) ||
                    json_obj_add(data, "token", json_object_new_string(nv->token)) < 0)
                        goto out;
        } else {
                if (!(formatted = store_format_json(nv)))
                        goto out;
                data = json_parse(formatted, strlen(formatted));
                formatted = secret_free(formatted);
                if (!data)
                        goto out;
        }
        if (json_obj_add(opts, "cas", json_object_new_int64(cas)) < 0)
                goto out;
        r = json_obj_add(root, "options", opts);
        opts = NULL;
        if (r == 0)
                r = json_obj_add(root, "data", data);
        data = NULL;
        if (r < 0)
                goto out;
        *ret = json_dump_secret(root);
        r = *ret ? 0 : -ENOMEM;
out:
        json_put_wiped(data);
        json_object_put(opts);
        json_put_wiped(root);
        return r;
}

/* POST data with check-and-set; *ret_version: the version created. */
static int kv2_post_data(struct vault *v, const struct cfg_integration *in, const struct store_new *nv,
                         int64_t cas, char **ret_version, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        struct json_object *root = NULL, *d;
        struct call c = { .method = "POST", .op = "write", .name = in->secret };
        char *url = NULL, *body = NULL, why[128], vbuf[24];
        int64_t ver;
        int r;

        r = kv2_data_body(in, nv, cas, &body);
        if (r < 0)
                goto out;
        r = vault_url(v, v->mount, "data", in->secret, NULL, &url);
        if (r < 0)
                goto out;
        c.url = url;
        c.body = body;
        c.secret = nv->token;
        r = vault_request(v, &c, &resp, err, errlen);
        if (r < 0)
                goto out;
        r = parse_answer(&resp, &c, &root, err, errlen);
        if (r < 0)
                goto out;
        if (json_get_obj(root, "data", &d, why, sizeof(why)) < 0 ||
            json_get_int(d, "version", &ver, why, sizeof(why)) < 0) {
                r = bad_answer(&c, why, err, errlen);
                goto out;
        }
        snprintf(vbuf, sizeof(vbuf), "%" PRId64, ver);
        r = (*ret_version = strdup(vbuf)) ? 0 : -ENOMEM;
out:
        secret_free(body);
        json_object_put(root);
        http_response_clear(&resp);
        free(url);
        return r;
}

/* The store already holds exactly this new token: a write repeated after a
 * crash, or a lost answer. */
static bool value_holds(const struct store_value *cur, const struct store_new *nv)
{
        return cur && cur->exists && streq(cur->token, nv->token) &&
               (!cur->token_id || streq(cur->token_id, nv->token_id));
}

/* Our token is in the data as `version`: report it, and in raw format make
 * the metadata describe it (the data's token wins). */
static int kv2_settle(struct vault *v, const struct cfg_integration *in, const struct store_new *nv,
                      const char *version, char **ret_version, char *err, size_t errlen)
{
        char *dup;
        int r;

        if (!version) {
                set_err(err, errlen, "vault: write %s: the secret has no version", in->secret);
                return -EBADMSG;
        }
        if (in->format == FORMAT_RAW) {
                r = kv2_write_raw_metadata(v, in, nv, version, NULL, err, errlen);
                if (r < 0)
                        return r;
        }
        if (!(dup = strdup(version)))
                return -ENOMEM;
        *ret_version = dup;
        return 0;
}

/* A CAS conflict: is it our own earlier write?  Otherwise keep the conflict
 * (and its err line). */
static int kv2_recheck(struct vault *v, const struct cfg_integration *in, const struct store_new *nv,
                       char **ret_version, char *err, size_t errlen)
{
        struct store_value cur = { 0 };
        char scratch[256];
        int r = -ESTALE;

        if (kv2_read(v, in, NULL, "read", &cur, scratch, sizeof(scratch)) == 0 && value_holds(&cur, nv)) {
                r = kv2_settle(v, in, nv, cur.version, ret_version, err, errlen);
                if (r == 0 && err && errlen)
                        err[0] = '\0';         /* the conflict was our own write */
        }
        store_value_clear(&cur);
        return r;
}

static int cas_base(const struct store_value *prev, const struct cfg_integration *in, int64_t *ret,
                    char *err, size_t errlen)
{
        char *end = NULL;
        long long n;

        /* cas 0: "write only if the key does not exist". */
        if (!prev || !prev->exists) {
                *ret = 0;
                return 0;
        }
        n = prev->version ? strtoll(prev->version, &end, 10) : -1;
        if (n < 1 || !end || *end) {
                set_err(err, errlen, "vault: write %s: no KV v2 version to check-and-set against",
                        in->secret);
                return -EINVAL;
        }
        *ret = n;
        return 0;
}

static int kv2_write(struct vault *v, const struct cfg_integration *in, const struct store_value *prev,
                     const struct store_new *nv, char **ret_version, char *err, size_t errlen)
{
        struct json_object *old_cm = NULL;
        char *version = NULL, next[24];
        int64_t cas;
        int r;

        if (value_holds(prev, nv))
                return kv2_settle(v, in, nv, prev->version, ret_version, err, errlen);
        r = cas_base(prev, in, &cas, err, errlen);
        if (r < 0)
                return r;
        if (in->format == FORMAT_RAW) {
                /* A CAS write creates exactly version cas + 1, or nothing. */
                snprintf(next, sizeof(next), "%" PRId64, cas + 1);
                r = kv2_write_raw_metadata(v, in, nv, next, &old_cm, err, errlen);
                if (r < 0)
                        goto out;
        }
        r = kv2_post_data(v, in, nv, cas, &version, err, errlen);
        if (r == -ESTALE)
                r = kv2_recheck(v, in, nv, &version, err, errlen);
        /* The data write failed for sure (refused, or someone else wrote):
         * put the old metadata back rather than leave ours describing a
         * token that is not there.  Best effort.  After a transient failure
         * the data may have been written, so the metadata stays. */
        if (r < 0 && r != -EAGAIN && in->format == FORMAT_RAW) {
                struct json_object *empty = old_cm ? NULL : json_object_new_object();
                char scratch[256];

                (void)kv2_put_custom_metadata(v, in, old_cm ? old_cm : empty, scratch, sizeof(scratch));
                json_object_put(empty);
        }
        if (r < 0)
                goto out;
        *ret_version = version;
        version = NULL;
out:
        free(version);
        json_object_put(old_cm);
        return r;
}

/* ---------------------------------------------------------------- KV v1 */

static int kv1_read(struct vault *v, const struct cfg_integration *in, const char *op,
                    struct store_value *ret, char *err, size_t errlen)
{
        struct store_value val = { 0 };
        struct http_response resp = { 0 };
        struct json_object *root = NULL, *data;
        struct call c = { .method = "GET", .op = op, .name = in->secret };
        char *url = NULL, why[128];
        int r;

        r = vault_url(v, v->mount, NULL, in->secret, NULL, &url);
        if (r < 0)
                goto out;
        c.url = url;
        r = vault_do(v, &c, &resp, err, errlen);
        if (r < 0)
                goto out;
        if (resp.status != 200 && resp.status != 404) {
                r = vault_fail(v, &resp, &c, err, errlen);
                goto out;
        }
        r = parse_answer(&resp, &c, &root, err, errlen);
        if (r == 0 && resp.status == 404)
                r = classify_404(v, &resp, &c, root, false, err, errlen);
        if (r < 0)
                goto out;
        if (r == 1) {
                r = 0;
                goto done;
        }
        if (json_get_obj(root, "data", &data, why, sizeof(why)) < 0) {
                r = bad_answer(&c, why, err, errlen);
                goto out;
        }
        val.exists = true;
        r = value_from_data(data, in->format, &val);
        if (r < 0)
                goto out;
done:
        *ret = val;
        memset(&val, 0, sizeof(val));
out:
        store_value_clear(&val);
        json_put_wiped(root);
        http_response_clear(&resp);
        free(url);
        return r;
}

static bool kv1_same(const struct store_value *a, const struct store_value *b)
{
        bool a_exists = a && a->exists, b_exists = b && b->exists;

        if (a_exists != b_exists)
                return false;
        return !a_exists || (!a->token && !b->token) || streq(a->token, b->token);
}

static int kv1_body(const struct cfg_integration *in, const struct store_new *nv, char **ret)
{
        struct json_object *o;

        if (in->format == FORMAT_JSON) {
                *ret = store_format_json(nv);
                return *ret ? 0 : -ENOMEM;
        }
        if (!(o = json_object_new_object()) || json_obj_add(o, "token", json_object_new_string(nv->token)) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        *ret = json_dump_secret(o);
        json_put_wiped(o);
        return *ret ? 0 : -ENOMEM;
}

/* KV v1 has no check-and-set: compare with what was read just before
 * writing, which narrows a lost update to a very small window. */
static int kv1_write(struct vault *v, const struct cfg_integration *in, const struct store_value *prev,
                     const struct store_new *nv, char **ret_version, char *err, size_t errlen)
{
        struct store_value cur = { 0 };
        struct http_response resp = { 0 };
        struct call c = { .method = "POST", .op = "write", .name = in->secret };
        char *url = NULL, *body = NULL;
        int r;

        r = kv1_read(v, in, "write", &cur, err, errlen);
        if (r < 0 || value_holds(&cur, nv))
                goto done;
        if (!kv1_same(&cur, prev)) {
                set_err(err, errlen, "vault: write %s: the secret changed since it was read", in->secret);
                r = -ESTALE;
                goto out;
        }
        if ((r = kv1_body(in, nv, &body)) < 0 ||
            (r = vault_url(v, v->mount, NULL, in->secret, NULL, &url)) < 0)
                goto out;
        c.url = url;
        c.body = body;
        c.secret = nv->token;
        r = vault_request(v, &c, &resp, err, errlen);
done:
        if (r == 0)
                *ret_version = NULL;
out:
        store_value_clear(&cur);
        secret_free(body);
        http_response_clear(&resp);
        free(url);
        return r;
}

/* ---------------------------------------------------------------- store_ops */

static int vault_open(const struct cfg_store *cfg, struct http_client *http, void **ret)
{
        struct vault *v;

        if (!cfg->url || (cfg->kv_version != 1 && cfg->kv_version != 2))
                return -EINVAL;
        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        v->cfg = cfg;
        v->http = http;
        v->mount = cfg->mount ? cfg->mount : DEFAULT_MOUNT;
        if (cfg->namespace_) {
                static const char prefix[] = "X-Vault-Namespace: ";

                v->ns_header = malloc(sizeof(prefix) + strlen(cfg->namespace_));
                if (!v->ns_header) {
                        free(v);
                        return -ENOMEM;
                }
                strcpy(v->ns_header, prefix);
                strcat(v->ns_header, cfg->namespace_);
        }
        pthread_mutex_init(&v->lock, NULL);
        *ret = v;
        return 0;
}

static void *vault_close(void *s)
{
        struct vault *v = s;

        if (!v)
                return NULL;
        secret_free(v->token);
        free(v->ns_header);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return NULL;
}

static int vault_read_current(void *s, const struct cfg_integration *in, struct store_value *ret,
                              char *err, size_t errlen)
{
        struct vault *v = s;

        if (v->cfg->kv_version == 1)
                return kv1_read(v, in, "read", ret, err, errlen);
        return kv2_read(v, in, NULL, "read", ret, err, errlen);
}

static int vault_write(void *s, const struct cfg_integration *in, const struct store_value *prev,
                       const struct store_new *v_new, char **ret_version, char *err, size_t errlen)
{
        struct vault *v = s;

        if (v->cfg->kv_version == 1)
                return kv1_write(v, in, prev, v_new, ret_version, err, errlen);
        return kv2_write(v, in, prev, v_new, ret_version, err, errlen);
}

static bool version_valid(const char *s)
{
        size_t n = s ? strspn(s, "0123456789") : 0;

        return n > 0 && n < 19 && s[n] == '\0' && s[0] != '0';
}

static int vault_read_back(void *s, const struct cfg_integration *in, const char *version,
                           struct store_value *ret, char *err, size_t errlen)
{
        struct vault *v = s;
        struct store_value val = { 0 };
        int r;

        if (v->cfg->kv_version == 2 && !version_valid(version)) {
                set_err(err, errlen, "vault: read-back %s: bad version \"%s\"", in->secret,
                        version ? version : "(none)");
                return -EINVAL;
        }
        /* The current version, not `version`: store.h, read_back. */
        r = v->cfg->kv_version == 1 ? kv1_read(v, in, "read-back", &val, err, errlen)
                                    : kv2_read(v, in, NULL, "read-back", &val, err, errlen);
        if (r < 0)
                return r;
        if (!val.exists) {
                set_err(err, errlen, "vault: read-back %s: the secret is gone", in->secret);
                return -ENOENT;
        }
        *ret = val;
        return 0;
}

/* Vault cannot stage a version: what write() stored is already current. */
static int vault_promote(void *s, const struct cfg_integration *in, const struct store_new *v,
                         const char *version, const char *prev_version, char *err, size_t errlen)
{
        (void)s, (void)in, (void)v, (void)version, (void)prev_version, (void)err, (void)errlen;
        return 0;
}

const struct store_ops store_vault_ops = {
        .type = "vault",
        .open = vault_open,
        .close = vault_close,
        .read_current = vault_read_current,
        .write = vault_write,
        .read_back = vault_read_back,
        .promote = vault_promote,
        .stages = false,
};
