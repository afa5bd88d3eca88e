/* store_azure.c: Azure Key Vault secrets as a secret store (SPEC.md 2-3),
 * REST API version 7.4, with tokens from azure_auth.c.
 *
 * Every PUT makes a new version (a 32-hex id, the last segment of the
 * answer's "id"); Key Vault cannot stage one, so write() is what consumers
 * read and promote() does nothing.  Tags belong to a version: each write
 * carries the previous version's foreign tags forward. */
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "azure_auth.h"
#include "duration.h"
#include "http.h"
#include "json.h"
#include "util.h"
#include "secret.h"

#define API_VERSION     "7.4"
#define MARKER          "patrol"
#define CONTENT_TYPE    "application/json"
#define SOFT_DELETED    "ObjectIsDeletedButRecoverable"
#define NOT_FOUND       "SecretNotFound"
#define ERRTEXT_MAX     400

struct azure {
        const struct cfg_store *cfg;
        struct http_client *http;
        struct azure_auth *auth;
};

/* One request, and what to say about it in err. */
struct call {
        const char *method;
        const char *url;
        const char *body;       /* may hold a secret: the caller wipes it */
        const char *op;         /* "read", "write", "read-back" */
        const char *name;       /* the secret's name */
        const char *secret;     /* the token value body carries, if any */
};

/* The patrol-owned tags (SPEC.md 3); others found on a secret are kept. */
static const char *const own_tags[] = { "managed_by", "token_id", "expires_at", "scopes", "rotated_at" };

/* ---------------------------------------------------------------- JSON with secrets */

/* ---------------------------------------------------------------- URLs */

/* {url}/secrets/{name}[/{version}]?api-version=7.4, pinned: the answers'
 * shape is that version's. */
static int secret_url(const struct azure *az, const char *name, const char *version, char **ret)
{
        char *en = http_escape(name), *ev = version ? http_escape(version) : NULL;
        int r = -ENOMEM;

        if (en && (!version || ev) &&
            asprintf(ret, "%s/secrets/%s%s%s?api-version=" API_VERSION, az->cfg->url, en,
                     ev ? "/" : "", ev ? ev : "") >= 0)
                r = 0;
        free(en);
        free(ev);
        return r;
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

/* {"error":{"code","message","innererror":{"code"}}}: "Code: message" on one
 * line, and the innermost code in *inner (for the soft-delete case). */
static void error_text(const struct http_response *resp, char *buf, size_t size, char *inner, size_t isize)
{
        struct json_object *root = NULL, *e, *ie;
        const char *code = NULL, *msg = NULL, *icode = NULL;
        size_t len = 0;

        buf[0] = inner[0] = '\0';
        if (resp->body && resp->body_len)
                root = json_parse(resp->body, resp->body_len);
        if (!root || json_get_obj(root, "error", &e, NULL, 0) < 0)
                goto out;
        (void)json_get_str_opt(e, "code", &code);
        (void)json_get_str_opt(e, "message", &msg);
        if (json_object_object_get_ex(e, "innererror", &ie) && json_object_is_type(ie, json_type_object))
                (void)json_get_str_opt(ie, "code", &icode);
        len = append_line(buf, len, size, code);
        if (code && msg && len + 3 < size) {
                memcpy(buf + len, ": ", 3);
                len += 2;
        }
        append_line(buf, len, size, msg);
        append_line(inner, 0, isize, icode ? icode : code);
out:
        json_put_wiped(root);   /* it may quote what was sent */
}

static int code_for_status(long status)
{
        if (status == 404)
                return -ENOENT;
        if (status == 401 || status == 403)
                return -EACCES;
        if (status == 429 || status >= 500)
                return -EAGAIN;
        return -EIO;
}

/* An answer that is not the success expected: one err line, and its code.
 * Key Vault may quote what it was sent (the token value, the access token):
 * err goes to logs and records, so those are masked. */
static int azure_fail(struct azure *az, const struct http_response *resp, const struct call *c,
                      char *err, size_t errlen)
{
        char text[ERRTEXT_MAX], inner[64];

        error_text(resp, text, sizeof(text), inner, sizeof(inner));
        if (resp->status == 409 && streq(inner, SOFT_DELETED)) {
                set_err(err, errlen, "azure: %s %s: 409 the secret is deleted but recoverable "
                        "(soft-delete): recover or purge it, then rotate again", c->op, c->name);
                return -EIO;
        }
        set_err(err, errlen, "azure: %s %s: %ld%s%s", c->op, c->name, resp->status,
                text[0] ? " " : "", text[0] ? text : "");
        secret_redact(err, c->secret);
        azure_auth_redact(az->auth, err);
        return code_for_status(resp->status);
}

static int bad_answer(const struct call *c, const char *why, char *err, size_t errlen)
{
        set_err(err, errlen, "azure: %s %s: unexpected answer: %s", c->op, c->name, why);
        return -EBADMSG;
}

/* No answer at all.  A refused certificate or an oversized answer will not
 * heal by retrying; timeouts and resets may. */
static int transport_code(int r)
{
        if (r == -ENOMEM)
                return -ENOMEM;
        if (r == -EPROTO || r == -EFBIG || r == -EINVAL)
                return -EIO;
        return -EAGAIN;
}

/* ---------------------------------------------------------------- sending */

static int azure_send(struct azure *az, const struct call *c, const char *auth_header,
                      struct http_response *resp, char *err, size_t errlen)
{
        const char *headers[3] = { auth_header, NULL, NULL };
        char terr[256] = "";
        struct http_request req = {
                .method = c->method,
                .url = c->url,
                .headers = headers,
                .body = c->body,
                .body_len = c->body ? strlen(c->body) : 0,
                .ca_file = az->cfg->ca_file,
                /* GETs, and PUTs of one value: a repeat only adds a version
                 * holding the same token. */
                .idempotent = true,
        };
        int r;

        if (c->body)
                headers[1] = "Content-Type: application/json";
        r = http_do(az->http, &req, resp, terr, sizeof(terr));
        if (r < 0) {
                set_err(err, errlen, "azure: %s %s: %s", c->op, c->name, terr[0] ? terr : strerror(-r));
                return transport_code(r);
        }
        return 0;
}

static int send_authed(struct azure *az, const struct call *c, unsigned *ret_gen,
                       struct http_response *resp, char *err, size_t errlen)
{
        char *hdr = NULL, aerr[ERRTEXT_MAX] = "";
        int r;

        r = azure_auth_header(az->auth, &hdr, ret_gen, aerr, sizeof(aerr));
        if (r < 0) {
                set_err(err, errlen, "azure: %s %s: %s", c->op, c->name, aerr);
                return r;
        }
        r = azure_send(az, c, hdr, resp, err, errlen);
        secret_free(hdr);
        return r;
}

/* Send with a bearer token.  A 401 carries Key Vault's challenge: one that
 * names the configured authority and resource gets one fresh token and one
 * retry; any other is refused, never followed.  Returns 0 when an answer
 * arrived, whatever its status. */
static int azure_do(struct azure *az, const struct call *c, struct http_response *resp,
                    char *err, size_t errlen)
{
        char cerr[ERRTEXT_MAX] = "";
        unsigned gen = 0;
        int r;

        r = send_authed(az, c, &gen, resp, err, errlen);
        if (r < 0 || resp->status != 401)
                return r;
        r = azure_auth_check_challenge(az->auth, resp->www_authenticate, cerr, sizeof(cerr));
        if (r < 0) {
                set_err(err, errlen, "azure: %s %s: %s", c->op, c->name, cerr);
                return r;
        }
        azure_auth_invalidate(az->auth, gen);
        http_response_clear(resp);
        return send_authed(az, c, &gen, resp, err, errlen);
}

/* ---------------------------------------------------------------- values */

static const char *tag(struct json_object *tags, const char *key)
{
        const char *s = NULL;

        if (!tags || json_get_str_opt(tags, key, &s) < 0)
                return NULL;
        return s;
}

/* The version: the last segment of "https://{vault}/secrets/{name}/{version}". */
static int version_of(struct json_object *bundle, char **ret)
{
        const char *id = NULL, *slash;

        if (json_get_str_opt(bundle, "id", &id) < 0 || !id || !(slash = strrchr(id, '/')) ||
            !slash[1] || strcspn(slash + 1, "?#") != strlen(slash + 1))
                return -EBADMSG;
        *ret = strdup(slash + 1);
        return *ret ? 0 : -ENOMEM;
}

/* Raw format: the marker and what the token is live in the tags. */
static int from_tags(struct json_object *tags, struct store_value *out)
{
        const char *id = tag(tags, "token_id"), *exp = tag(tags, "expires_at");

        out->managed = streq(tag(tags, "managed_by"), MARKER);
        free(out->token_id);
        out->token_id = NULL;
        out->expires_at = 0;
        if (exp && time_parse_rfc3339(exp, &out->expires_at) < 0)
                out->expires_at = 0;
        if (id && !(out->token_id = strdup(id)))
                return -ENOMEM;
        return 0;
}

/* A secret bundle {"value","id","contentType","attributes","tags"}: the
 * JSON object of SPEC.md 3 in json format, the token alone in raw format;
 * anything else found there is taken whole (adoption). */
static int decode_bundle(const struct cfg_integration *in, const struct call *c, struct json_object *bundle,
                         struct store_value *out, char *err, size_t errlen)
{
        struct json_object *tags = NULL;
        const char *value = NULL;
        int r;

        if (json_get_str_opt(bundle, "value", &value) < 0)
                return bad_answer(c, "field \"value\" is not a string", err, errlen);
        r = version_of(bundle, &out->version);
        if (r == -EBADMSG)
                return bad_answer(c, "no version in field \"id\"", err, errlen);
        if (r < 0)
                return r;
        out->exists = true;
        if (value && (r = store_parse_value(value, out)) < 0)
                return r;
        if (json_object_object_get_ex(bundle, "tags", &tags) && !json_object_is_type(tags, json_type_object))
                tags = NULL;
        return in->format == FORMAT_RAW ? from_tags(tags, out) : 0;
}

/* GET a secret (version NULL: the current one).  *ret is the bundle, or
 * NULL when Key Vault says SecretNotFound. */
static int fetch_bundle(struct azure *az, const struct cfg_integration *in, const char *version,
                        const char *op, struct json_object **ret, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        struct call c = { .method = "GET", .op = op, .name = in->secret };
        char *url = NULL, text[ERRTEXT_MAX], inner[64];
        int r;

        *ret = NULL;
        if ((r = secret_url(az, in->secret, version, &url)) < 0)
                goto out;
        c.url = url;
        if ((r = azure_do(az, &c, &resp, err, errlen)) < 0)
                goto out;
        if (resp.status == 404) {
                /* Only "no such secret" means absent: a 404 for a wrong
                 * vault path is a failure, not an invitation to create. */
                error_text(&resp, text, sizeof(text), inner, sizeof(inner));
                r = streq(inner, NOT_FOUND) ? 0 : azure_fail(az, &resp, &c, err, errlen);
                goto out;
        }
        if (resp.status != 200) {
                r = azure_fail(az, &resp, &c, err, errlen);
                goto out;
        }
        *ret = resp.body_len ? json_parse(resp.body, resp.body_len) : NULL;
        if (!*ret || !json_object_is_type(*ret, json_type_object)) {
                *ret = json_put_wiped(*ret);
                r = bad_answer(&c, "not a JSON object", err, errlen);
        }
out:
        http_response_clear(&resp);
        free(url);
        return r;
}

static int read_secret(struct azure *az, const struct cfg_integration *in, const char *version,
                       const char *op, struct store_value *ret, struct json_object **ret_tags,
                       char *err, size_t errlen)
{
        struct store_value val = { 0 };
        struct json_object *bundle = NULL, *tags;
        struct call c = { .op = op, .name = in->secret };
        int r;

        r = fetch_bundle(az, in, version, op, &bundle, err, errlen);
        if (r < 0 || !bundle)
                goto done;
        r = decode_bundle(in, &c, bundle, &val, err, errlen);
        /* A copy: the bundle is wiped below, strings and all. */
        if (r == 0 && ret_tags && json_object_object_get_ex(bundle, "tags", &tags) &&
            json_object_is_type(tags, json_type_object) && json_object_deep_copy(tags, ret_tags, NULL) < 0)
                r = -ENOMEM;
done:
        if (r == 0) {
                *ret = val;
                memset(&val, 0, sizeof(val));
        }
        store_value_clear(&val);
        json_put_wiped(bundle);
        return r;
}

/* ---------------------------------------------------------------- writing */

static char *scopes_joined(const struct store_new *nv)
{
        size_t len = 1, i;
        char *out;

        for (i = 0; i < nv->n_scopes; i++)
                len += strlen(nv->scopes[i]) + 1;
        if (!(out = malloc(len)))
                return NULL;
        out[0] = '\0';
        for (i = 0; i < nv->n_scopes; i++) {
                if (i)
                        strcat(out, ",");
                strcat(out, nv->scopes[i]);
        }
        return out;
}

static bool own_tag(const char *key)
{
        for (size_t i = 0; i < sizeof(own_tags) / sizeof(own_tags[0]); i++)
                if (strcmp(key, own_tags[i]) == 0)
                        return true;
        return false;
}

/* The previous version's other tags, then patrol's: the marker, and in raw
 * format what the token is (strings: SPEC.md 3). */
static struct json_object *tags_new(const struct cfg_integration *in, const struct store_new *nv,
                                    struct json_object *old)
{
        struct json_object *t = json_object_new_object();
        char exp[32], rot[32], *scopes = NULL;
        int r = 0;

        if (!t)
                return NULL;
        if (old) {
                json_object_object_foreach(old, key, val) {
                        if (r == 0 && !own_tag(key) && json_object_is_type(val, json_type_string))
                                r = json_obj_add(t, key, json_object_new_string(json_object_get_string(val)));
                }
        }
        r = r ? r : json_obj_add(t, "managed_by", json_object_new_string(MARKER));
        if (r == 0 && in->format == FORMAT_RAW) {
                time_format_rfc3339(nv->expires_at, exp, sizeof(exp));
                time_format_rfc3339(nv->rotated_at, rot, sizeof(rot));
                if ((r = json_obj_add(t, "token_id", json_object_new_string(nv->token_id ? nv->token_id : ""))) == 0 &&
                    (r = json_obj_add(t, "expires_at", json_object_new_string(exp))) == 0 &&
                    (r = (scopes = scopes_joined(nv)) ? 0 : -ENOMEM) == 0 &&
                    (r = json_obj_add(t, "scopes", json_object_new_string(scopes))) == 0)
                        r = json_obj_add(t, "rotated_at", json_object_new_string(rot));
        }
        free(scopes);
        if (r < 0)
                json_object_put(t);
        return r < 0 ? NULL : t;
}

/* {"value","contentType"?,"attributes":{"enabled","exp"},"tags"} in a
 * buffer the caller wipes. */
static int put_body(const struct cfg_integration *in, const struct store_new *nv, struct json_object *old_tags,
                    char **ret)
{
        struct json_object *root = json_object_new_object(), *attrs = json_object_new_object();
        char *value = in->format == FORMAT_JSON ? store_format_json(nv) : secret_dup(nv->token);
        int r = -ENOMEM;

        if (!root || !attrs || !value)
                goto out;
        if (json_obj_add(root, "value", json_object_new_string(value)) < 0 ||
            (in->format == FORMAT_JSON && json_obj_add(root, "contentType", json_object_new_string(CONTENT_TYPE)) < 0) ||
            json_obj_add(attrs, "enabled", json_object_new_boolean(1)) < 0 ||
            json_obj_add(attrs, "exp", json_object_new_int64(nv->expires_at)) < 0)
                goto out;
        r = json_obj_add(root, "attributes", attrs);
        attrs = NULL;
        if (r == 0)
                r = json_obj_add(root, "tags", tags_new(in, nv, old_tags));
        if (r == 0)
                r = (*ret = json_dump_secret(root)) ? 0 : -ENOMEM;
out:
        secret_free(value);
        json_object_put(attrs);
        json_put_wiped(root);
        return r;
}

static int put_secret(struct azure *az, const struct cfg_integration *in, const struct store_new *nv,
                      struct json_object *old_tags, char **ret_version, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        struct json_object *root = NULL;
        struct call c = { .method = "PUT", .op = "write", .name = in->secret };
        char *url = NULL, *body = NULL;
        int r;

        if ((r = put_body(in, nv, old_tags, &body)) < 0 || (r = secret_url(az, in->secret, NULL, &url)) < 0)
                goto out;
        c.url = url;
        c.body = body;
        c.secret = nv->token;
        if ((r = azure_do(az, &c, &resp, err, errlen)) < 0)
                goto out;
        if (resp.status != 200) {
                r = azure_fail(az, &resp, &c, err, errlen);
                goto out;
        }
        root = resp.body_len ? json_parse(resp.body, resp.body_len) : NULL;
        r = root ? version_of(root, ret_version) : -EBADMSG;
        if (r == -EBADMSG)
                r = bad_answer(&c, "no version in field \"id\"", err, errlen);
out:
        json_put_wiped(root);
        secret_free(body);
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

static bool same_version(const struct store_value *a, const struct store_value *b)
{
        bool a_exists = a && a->exists, b_exists = b && b->exists;

        return a_exists == b_exists && (!a_exists || streq(a->version, b->version));
}

static int dup_version(const char *v, char **ret)
{
        *ret = strdup(v ? v : "");
        return *ret ? 0 : -ENOMEM;
}

/* Key Vault has no check-and-set: compare the current version with the one
 * read before, which narrows a lost update to a very small window. */
static int az_write(void *s, const struct cfg_integration *in, const struct store_value *prev,
                    const struct store_new *nv, char **ret_version, char *err, size_t errlen)
{
        struct azure *az = s;
        struct store_value cur = { 0 };
        struct json_object *tags = NULL;
        int r;

        if (value_holds(prev, nv) && prev->version)
                return dup_version(prev->version, ret_version);
        r = read_secret(az, in, NULL, "write", &cur, &tags, err, errlen);
        if (r < 0)
                goto out;
        if (value_holds(&cur, nv)) {
                r = dup_version(cur.version, ret_version);
                goto out;
        }
        if (!same_version(&cur, prev)) {
                set_err(err, errlen, "azure: write %s: the secret changed since it was read", in->secret);
                r = -ESTALE;
                goto out;
        }
        r = put_secret(az, in, nv, tags, ret_version, err, errlen);
out:
        json_object_put(tags);
        store_value_clear(&cur);
        return r;
}

/* ---------------------------------------------------------------- store_ops */

static int az_open(const struct cfg_store *cfg, struct http_client *http, void **ret)
{
        struct azure *az;
        int r;

        if (!cfg->url)
                return -EINVAL;
        if (!(az = calloc(1, sizeof(*az))))
                return -ENOMEM;
        az->cfg = cfg;
        az->http = http;
        r = azure_auth_new(cfg, http, &az->auth);
        if (r < 0) {
                free(az);
                return r;
        }
        *ret = az;
        return 0;
}

static void *az_close(void *s)
{
        struct azure *az = s;

        if (!az)
                return NULL;
        azure_auth_free(az->auth);
        free(az);
        return NULL;
}

static int az_read_current(void *s, const struct cfg_integration *in, struct store_value *ret,
                           char *err, size_t errlen)
{
        return read_secret(s, in, NULL, "read", ret, NULL, err, errlen);
}

/* Key Vault versions are 32 hex digits; anything else would change the path. */
static bool version_valid(const char *v)
{
        size_t n = v ? strspn(v, "0123456789abcdefABCDEF") : 0;

        return n > 0 && n <= 64 && v[n] == '\0';
}

static int az_read_back(void *s, const struct cfg_integration *in, const char *version,
                        struct store_value *ret, char *err, size_t errlen)
{
        struct store_value val = { 0 };
        int r;

        if (!version_valid(version)) {
                set_err(err, errlen, "azure: read-back %s: bad version \"%s\"", in->secret,
                        version ? version : "(none)");
                return -EINVAL;
        }
        /* The current version, not `version`: store.h, read_back. */
        r = read_secret(s, in, NULL, "read-back", &val, NULL, err, errlen);
        if (r < 0)
                return r;
        if (!val.exists) {
                set_err(err, errlen, "azure: read-back %s: the secret is gone", in->secret);
                return -ENOENT;
        }
        *ret = val;
        return 0;
}

/* Key Vault cannot stage a version: what write() stored is already current. */
static int az_promote(void *s, const struct cfg_integration *in, const struct store_new *v,
                      const char *version, const char *prev_version, char *err, size_t errlen)
{
        (void)s, (void)in, (void)v, (void)version, (void)prev_version, (void)err, (void)errlen;
        return 0;
}

const struct store_ops store_azure_ops = {
        .type = "azure",
        .open = az_open,
        .close = az_close,
        .read_current = az_read_current,
        .write = az_write,
        .read_back = az_read_back,
        .promote = az_promote,
        .stages = false,
};
