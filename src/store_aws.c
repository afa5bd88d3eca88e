/* store_aws.c: AWS Secrets Manager as a secret store (SPEC.md 2-3), over
 * its JSON 1.1 protocol with SigV4 (credentials: aws_creds.c).
 *
 * The new token is written as a version staged AWSPENDING (its VersionId is
 * the rotation's request id, so a repeated write is the same version), read
 * back by VersionId, then promoted: AWSCURRENT moves to it (AWS moves
 * AWSPREVIOUS along) and AWSPENDING is removed.  Raw format keeps the token
 * alone in SecretString and the rest in tags, with a `version_id` tag
 * naming the version they describe (tags belong to the secret, not to a
 * version; they are written right after AWSCURRENT moves, so between the
 * two steps they still describe the previous version, as version_id says). */
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws_creds.h"
#include "duration.h"
#include "http.h"
#include "json.h"
#include "util.h"
#include "log.h"
#include "secret.h"

#define MARKER                  "patrol"
#define STAGE_CURRENT           "AWSCURRENT"
#define STAGE_PENDING           "AWSPENDING"
#define JSON_TYPE               "Content-Type: application/x-amz-json-1.1"
#define TARGET_PREFIX           "X-Amz-Target: secretsmanager."
#define ERRTEXT_MAX             300
#define TAG_VALUE_MAX           256
/* ClientRequestToken: AWS takes 32 to 64 characters. */
#define REQUEST_ID_MIN          32
#define REQUEST_ID_MAX          64

struct aws_sm {
        const struct cfg_store *cfg;
        struct http_client *http;
        struct aws_auth *auth;
        char *url;                      /* the Secrets Manager endpoint */
};

/* One API call, and what to say about it in err. */
struct call {
        const char *action;             /* "GetSecretValue" */
        const char *op;                 /* "read", "write", "read-back", "promote" */
        const char *name;               /* the secret */
        const char *secret;             /* the token value the request carries, if any */
};

/* ---------------------------------------------------------------- JSON */

/* Add a string (NULL: nothing); fails only on allocation. */
static int add_str(struct json_object *o, const char *key, const char *val)
{
        struct json_object *v;

        if (!val)
                return 0;
        if (!(v = json_object_new_string(val)))
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_put_wiped(v);      /* it may be the token */
                return -ENOMEM;
        }
        return 0;
}

/* {"SecretId": name} plus up to two more string fields. */
static struct json_object *request_new(const char *id_key, const char *name, const char *k1, const char *v1,
                                       const char *k2, const char *v2)
{
        struct json_object *o = json_object_new_object();

        if (!o || add_str(o, id_key, name) < 0 || (k1 && add_str(o, k1, v1) < 0) ||
            (k2 && add_str(o, k2, v2) < 0)) {
                json_put_wiped(o);
                return NULL;
        }
        return o;
}

/* ---------------------------------------------------------------- errors */

/* __type may come as "namespace#Type"; the message as message or Message. */
static void error_parts(const struct http_response *resp, char *type, size_t tsize, char *msg, size_t msize)
{
        struct json_object *o = NULL;
        const char *t = NULL, *m = NULL, *hash;
        size_t n = 0;

        type[0] = msg[0] = '\0';
        if (resp->body && resp->body_len)
                o = json_parse(resp->body, resp->body_len);
        if (o && json_object_is_type(o, json_type_object)) {
                (void)json_get_str_opt(o, "__type", &t);
                if (json_get_str_opt(o, "message", &m) < 0 || !m)
                        (void)json_get_str_opt(o, "Message", &m);
        }
        if (t && (hash = strrchr(t, '#')))
                t = hash + 1;
        snprintf(type, tsize, "%s", t ? t : "");
        for (; m && *m && n + 1 < msize; m++)
                msg[n++] = (unsigned char)*m < ' ' || *m == 0x7f ? ' ' : *m;
        msg[n] = '\0';
        json_put_wiped(o);      /* it may quote what was sent */
}

static bool type_in(const char *type, const char *const *list)
{
        for (; *list; list++)
                if (streq(type, *list))
                        return true;
        return false;
}

static const char *const refused_types[] = {
        "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
        "IncompleteSignature", "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken",
        "InvalidClientTokenId", "MissingAuthenticationTokenException", "MissingAuthenticationToken",
        "KMSAccessDeniedException", NULL,
};

/* Credentials that AWS no longer takes: worth one fresh lookup. */
static const char *const stale_cred_types[] = {
        "ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException", "InvalidClientTokenId", NULL,
};

static int code_for(const char *type, long status)
{
        static const char *const transient[] = {
                "ThrottlingException", "Throttling", "InternalServiceError", "InternalFailure",
                "ServiceUnavailable", "RequestTimeout", NULL,
        };

        if (streq(type, "ResourceNotFoundException"))
                return -ENOENT;
        if (streq(type, "ResourceExistsException"))
                return -ESTALE;
        if (type_in(type, refused_types) || status == 401 || status == 403)
                return -EACCES;
        if (type_in(type, transient) || status == 429 || status >= 500)
                return -EAGAIN;
        return -EIO;
}

/* No answer arrived: a refused certificate or a huge answer is permanent. */
static int transport_code(int r)
{
        if (r == -ENOMEM)
                return -ENOMEM;
        if (r == -EPROTO || r == -EFBIG || r == -EINVAL)
                return -EIO;
        return -EAGAIN;
}

/* ---------------------------------------------------------------- calls */

struct answer {
        char type[96];                  /* the error's __type, "" on success */
        struct json_object *body;       /* a 200's object; NULL for an empty answer */
};

static void answer_clear(struct answer *a)
{
        a->body = json_put_wiped(a->body);
        a->type[0] = '\0';
}

/* *cr: the credentials the request was signed with (replaced on each send,
 * kept by the caller to mask their session token in error text). */
static int sm_send(struct aws_sm *s, const struct call *c, const char *body, struct aws_creds **cr,
                   bool *ret_fresh, struct http_response *resp, char *err, size_t errlen)
{
        char target[96], cerr[400] = "", terr[256] = "";
        const char *headers[] = { JSON_TYPE, target, NULL };
        struct aws_request req = { .method = "POST", .url = s->url, .service = "secretsmanager",
                                   .region = s->cfg->region, .headers = headers, .body = body,
                                   .body_len = strlen(body), .ca_file = s->cfg->ca_file,
                                   /* Every call patrol makes is safe to repeat: reads, label
                                    * moves, tags, and PutSecretValue with its ClientRequestToken. */
                                   .idempotent = true };
        int r;

        snprintf(target, sizeof(target), TARGET_PREFIX "%s", c->action);
        *cr = aws_creds_free(*cr);
        r = aws_auth_get(s->auth, cr, ret_fresh, cerr, sizeof(cerr));
        if (r < 0) {
                set_err(err, errlen, "aws: %s %s: %s", c->op, c->name, cerr);
                return r;
        }
        r = aws_signed_do(s->http, *cr, &req, resp, terr, sizeof(terr));
        if (r < 0) {
                set_err(err, errlen, "aws: %s %s: %s", c->op, c->name, terr[0] ? terr : strerror(-r));
                return transport_code(r);
        }
        return 0;
}

/* AWS may quote what it was sent (the token value, the session token):
 * masked, err goes to logs and records. */
static int sm_fail(const struct http_response *resp, const struct call *c, const struct aws_creds *cr,
                   struct answer *ans, char *err, size_t errlen)
{
        char msg[ERRTEXT_MAX];

        error_parts(resp, ans->type, sizeof(ans->type), msg, sizeof(msg));
        set_err(err, errlen, "aws: %s %s: %ld %s%s%s", c->op, c->name, resp->status,
                ans->type[0] ? ans->type : "(no error type)", msg[0] ? ": " : "", msg);
        secret_redact(err, c->secret);
        secret_redact(err, cr ? cr->session_token : NULL);
        return code_for(ans->type, resp->status);
}

static int sm_accept(const struct http_response *resp, const struct call *c, struct answer *ans,
                     char *err, size_t errlen)
{
        if (!resp->body || resp->body_len == 0)
                return 0;       /* TagResource answers nothing */
        ans->body = json_parse(resp->body, resp->body_len);
        if (!ans->body || !json_object_is_type(ans->body, json_type_object)) {
                ans->body = json_put_wiped(ans->body);
                set_err(err, errlen, "aws: %s %s: unexpected answer to %s: not a JSON object",
                        c->op, c->name, c->action);
                return -EBADMSG;
        }
        return 0;
}

/* Call `c->action` with `request`.  0 with ans->body on 200; otherwise a
 * store.h code, err set, and ans->type naming AWS's error. */
static int sm_call(struct aws_sm *s, const struct call *c, struct json_object *request,
                   struct answer *ans, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        char *body = json_dump_secret(request);
        struct aws_creds *cr = NULL;
        bool fresh = false;
        int r;

        memset(ans, 0, sizeof(*ans));
        if (!body)
                return -ENOMEM;
        r = sm_send(s, c, body, &cr, &fresh, &resp, err, errlen);
        if (r == 0 && resp.status != 200 && !fresh) {
                /* Cached temporary credentials revoked or expired early. */
                error_parts(&resp, ans->type, sizeof(ans->type), err, errlen);
                if (type_in(ans->type, stale_cred_types)) {
                        aws_auth_invalidate(s->auth);
                        http_response_clear(&resp);
                        r = sm_send(s, c, body, &cr, &fresh, &resp, err, errlen);
                }
        }
        if (r == 0)
                r = resp.status == 200 ? sm_accept(&resp, c, ans, err, errlen)
                                       : sm_fail(&resp, c, cr, ans, err, errlen);
        aws_creds_free(cr);
        secret_free(body);
        http_response_clear(&resp);
        return r;
}

/* sm_call for a request built here (NULL: allocation failed); the request
 * may hold the token and is wiped. */
static int sm_call_put(struct aws_sm *s, const struct call *c, struct json_object *request,
                       struct answer *ans, char *err, size_t errlen)
{
        int r = request ? sm_call(s, c, request, ans, err, errlen) : -ENOMEM;

        json_put_wiped(request);
        return r;
}

/* ---------------------------------------------------------------- reading */

static const char *answer_str(const struct answer *a, const char *key)
{
        const char *v = NULL;

        (void)json_get_str_opt(a->body, key, &v);
        return v;
}

/* GetSecretValue by stage or VersionId into out (exists, version, and the
 * value's token, token_id, expires_at and marker). */
static int get_value(struct aws_sm *s, const struct call *c, const char *key, const char *which,
                     struct store_value *out, char *err, size_t errlen)
{
        struct call gc = *c;
        struct answer ans;
        struct store_value parsed = { 0 };
        const char *vid, *str;
        int r;

        gc.action = "GetSecretValue";
        r = sm_call_put(s, &gc, request_new("SecretId", c->name, key, which, NULL, NULL), &ans, err, errlen);
        if (r < 0)
                goto out;
        vid = answer_str(&ans, "VersionId");
        str = answer_str(&ans, "SecretString");
        /* Every answer names its version; one that does not is malformed,
         * and taking it for an empty secret would lose track of the token. */
        if (!vid) {
                set_err(err, errlen, "aws: %s %s: unexpected answer to GetSecretValue (no VersionId)",
                        c->op, c->name);
                r = -EBADMSG;
                goto out;
        }
        out->exists = true;
        if (vid && !(out->version = strdup(vid))) {
                r = -ENOMEM;
                goto out;
        }
        /* A SecretBinary value holds no token patrol could use. */
        if (str && (r = store_parse_value(str, &parsed)) == 0) {
                out->token = parsed.token;
                out->token_id = parsed.token_id;
                out->expires_at = parsed.expires_at;
                out->managed = parsed.managed;
        }
out:
        answer_clear(&ans);
        return r;
}

static int describe(struct aws_sm *s, const struct call *c, struct answer *ans, char *err, size_t errlen)
{
        struct call dc = *c;

        dc.action = "DescribeSecret";
        return sm_call_put(s, &dc, request_new("SecretId", c->name, NULL, NULL, NULL, NULL), ans, err, errlen);
}

/* The value of tag `key` in a DescribeSecret answer, or NULL. */
static const char *tag_value(const struct answer *desc, const char *key)
{
        struct json_object *tags, *t, *k, *v;
        size_t i;

        if (!desc->body || !json_object_object_get_ex(desc->body, "Tags", &tags) ||
            !json_object_is_type(tags, json_type_array))
                return NULL;
        for (i = 0; i < json_object_array_length(tags); i++) {
                t = json_object_array_get_idx(tags, i);
                if (json_object_object_get_ex(t, "Key", &k) && streq(json_object_get_string(k), key) &&
                    json_object_object_get_ex(t, "Value", &v))
                        return json_object_get_string(v);
        }
        return NULL;
}

/* Raw format: id and expiry from the tags when they describe `version`
 * (a write that never got promoted leaves tags for another version). */
static int apply_tags(const struct answer *desc, enum secret_format fmt, struct store_value *out)
{
        const char *tv = tag_value(desc, "version_id"), *id, *exp;

        out->managed |= streq(tag_value(desc, "managed_by"), MARKER);
        if (fmt != FORMAT_RAW || (tv && !streq(tv, out->version)))
                return 0;
        id = tag_value(desc, "token_id");
        exp = tag_value(desc, "expires_at");
        if (id && !out->token_id && !(out->token_id = strdup(id)))
                return -ENOMEM;
        if (exp && !out->expires_at && time_parse_rfc3339(exp, &out->expires_at) < 0)
                out->expires_at = 0;
        return 0;
}

/* A value read (read_current, read_back) completed with the tags when its
 * format keeps metadata there, or when there is no value to carry the
 * marker (a secret created, never written). */
static int complete_from_tags(struct aws_sm *s, const struct call *c, const struct cfg_integration *in,
                              struct store_value *val, char *err, size_t errlen)
{
        struct answer desc;
        int r;

        if (in->format != FORMAT_RAW && val->token)
                return 0;
        r = describe(s, c, &desc, err, errlen);
        if (r == 0)
                r = apply_tags(&desc, in->format, val);
        answer_clear(&desc);
        return r;
}

/* ---------------------------------------------------------------- store_ops: reads */

static int sm_read_current(void *p, const struct cfg_integration *in, struct store_value *ret,
                           char *err, size_t errlen)
{
        struct aws_sm *s = p;
        struct call c = { .op = "read", .name = in->secret };
        struct store_value val = { 0 };
        struct answer desc = { 0 };
        int r;

        r = get_value(s, &c, "VersionStage", STAGE_CURRENT, &val, err, errlen);
        if (r == -ENOENT) {
                /* No such secret, or one without an AWSCURRENT value. */
                r = describe(s, &c, &desc, err, errlen);
                if (r == -ENOENT) {
                        r = 0;
                        goto done;
                }
                if (r < 0)
                        goto out;
                val.exists = true;
                r = apply_tags(&desc, in->format, &val);
        } else if (r == 0) {
                r = complete_from_tags(s, &c, in, &val, err, errlen);
        }
        if (r < 0)
                goto out;
done:
        *ret = val;
        memset(&val, 0, sizeof(val));
out:
        answer_clear(&desc);
        store_value_clear(&val);
        return r;
}

static int sm_read_back(void *p, const struct cfg_integration *in, const char *version,
                        struct store_value *ret, char *err, size_t errlen)
{
        struct aws_sm *s = p;
        struct call c = { .op = "read-back", .name = in->secret };
        struct store_value val = { 0 };
        int r;

        if (!version || !*version) {
                set_err(err, errlen, "aws: read-back %s: no version to read", in->secret);
                return -EINVAL;
        }
        r = get_value(s, &c, "VersionId", version, &val, err, errlen);
        if (r == 0 && in->format == FORMAT_RAW)
                r = complete_from_tags(s, &c, in, &val, err, errlen);
        if (r == 0) {
                *ret = val;
                return 0;
        }
        store_value_clear(&val);
        return r;
}

/* ---------------------------------------------------------------- writing */

static struct json_object *tag_new(const char *key, const char *value)
{
        struct json_object *t = json_object_new_object();

        if (!t || add_str(t, "Key", key) < 0 || add_str(t, "Value", value) < 0) {
                json_object_put(t);
                return NULL;
        }
        return t;
}

static int tags_add(struct json_object *arr, const char *key, const char *value)
{
        struct json_object *t = tag_new(key, value);

        if (!t || json_object_array_add(arr, t) < 0) {
                json_object_put(t);
                return -ENOMEM;
        }
        return 0;
}

/* Creating must not leave a secret that looks foreign: the marker goes on
 * at creation.  No value: the first one is the staged write. */
static int create_secret(struct aws_sm *s, const struct call *c, const struct cfg_integration *in,
                         char *err, size_t errlen)
{
        struct call cc = *c;
        struct json_object *req = request_new("Name", in->secret, "KmsKeyId", s->cfg->kms_key_id,
                                              "Description", "Onplana token, rotated by patrol");
        struct json_object *tags = json_object_new_array();
        struct answer ans;
        int r = -ENOMEM;

        cc.action = "CreateSecret";
        if (!req || !tags || tags_add(tags, "managed_by", MARKER) < 0 ||
            json_object_object_add(req, "Tags", tags) < 0)
                goto out;
        tags = NULL;
        r = sm_call(s, &cc, req, &ans, err, errlen);
        answer_clear(&ans);
out:
        json_object_put(tags);
        json_object_put(req);
        return r;
}

/* Make sure the secret exists.  A ResourceExistsException on create is our
 * own earlier create (its answer lost) when the marker is there; anyone
 * else's secret appearing meanwhile is a conflict. */
static int ensure_secret(struct aws_sm *s, const struct call *c, const struct cfg_integration *in,
                         const struct store_value *prev, char *err, size_t errlen)
{
        struct answer desc = { 0 };
        bool exists = prev && prev->exists;
        int r = 0;

        if (!prev) {
                r = describe(s, c, &desc, err, errlen);
                exists = r == 0;
                if (r == -ENOENT)
                        r = 0;
        }
        if (r == 0 && !exists && (r = create_secret(s, c, in, err, errlen)) == -ESTALE) {
                answer_clear(&desc);
                r = describe(s, c, &desc, err, errlen);
                if (r == 0 && !streq(tag_value(&desc, "managed_by"), MARKER)) {
                        set_err(err, errlen, "aws: %s %s: the secret was created by someone else meanwhile",
                                c->op, c->name);
                        r = -ESTALE;
                }
        }
        answer_clear(&desc);
        return r;
}

static char *value_string(const struct cfg_integration *in, const struct store_new *v)
{
        return in->format == FORMAT_RAW ? secret_dup(v->token) : store_format_json(v);
}

/* PutSecretValue refused a repeated ClientRequestToken with another value:
 * a resumed write (rotated_at differs) holds our token already, anything
 * else is a conflict. */
static int put_conflict(struct aws_sm *s, const struct call *c, const struct store_new *v,
                        char *err, size_t errlen)
{
        struct store_value got = { 0 };
        char scratch[ERRTEXT_MAX];
        int r = -ESTALE;

        if (get_value(s, c, "VersionId", v->request_id, &got, scratch, sizeof(scratch)) == 0 &&
            streq(got.token, v->token))
                r = 0;
        store_value_clear(&got);
        return r;
}

static int put_value(struct aws_sm *s, const struct call *c, const struct cfg_integration *in,
                     const struct store_new *v, char **ret_version, char *err, size_t errlen)
{
        struct call pc = *c;
        char *value = value_string(in, v);
        struct json_object *req = value ? request_new("SecretId", in->secret, "ClientRequestToken",
                                                      v->request_id, "SecretString", value) : NULL;
        struct json_object *stages = json_object_new_array();
        struct answer ans = { 0 };
        const char *vid;
        int r = -ENOMEM;

        pc.action = "PutSecretValue";
        pc.secret = v->token;
        value = secret_free(value);
        if (!req || !stages || json_object_array_add(stages, json_object_new_string(STAGE_PENDING)) < 0 ||
            json_object_object_add(req, "VersionStages", stages) < 0)
                goto out;
        stages = NULL;
        r = sm_call(s, &pc, req, &ans, err, errlen);
        if (r == -ESTALE && put_conflict(s, c, v, err, errlen) == 0) {
                r = (*ret_version = strdup(v->request_id)) ? 0 : -ENOMEM;
                goto out;
        }
        if (r == 0 && !(vid = answer_str(&ans, "VersionId"))) {
                set_err(err, errlen, "aws: %s %s: PutSecretValue answered no VersionId", c->op, c->name);
                r = -EBADMSG;
        } else if (r == 0) {
                r = (*ret_version = strdup(vid)) ? 0 : -ENOMEM;
        }
out:
        answer_clear(&ans);
        json_object_put(stages);
        json_put_wiped(req);
        return r;
}

/* "a,b,c" cut at a comma to fit a tag value. */
static char *scopes_joined(const struct store_new *v)
{
        char *out = calloc(1, TAG_VALUE_MAX + 1);
        size_t len = 0, n, i;

        if (!out)
                return NULL;
        for (i = 0; i < v->n_scopes; i++) {
                n = strlen(v->scopes[i]) + (i ? 1 : 0);
                if (len + n > TAG_VALUE_MAX)
                        break;
                len += (size_t)snprintf(out + len, TAG_VALUE_MAX + 1 - len, "%s%s", i ? "," : "", v->scopes[i]);
        }
        return out;
}

static struct json_object *raw_tags(const struct store_new *v, const char *version)
{
        struct json_object *tags = json_object_new_array();
        char exp[32], rot[32], *scopes = scopes_joined(v);
        int r = tags && scopes ? 0 : -ENOMEM;

        time_format_rfc3339(v->expires_at, exp, sizeof(exp));
        time_format_rfc3339(v->rotated_at, rot, sizeof(rot));
        if (r == 0 && (tags_add(tags, "managed_by", MARKER) < 0 || tags_add(tags, "token_id", v->token_id) < 0 ||
                       tags_add(tags, "expires_at", exp) < 0 || tags_add(tags, "scopes", scopes) < 0 ||
                       tags_add(tags, "rotated_at", rot) < 0 || tags_add(tags, "version_id", version) < 0))
                r = -ENOMEM;
        free(scopes);
        if (r < 0) {
                json_object_put(tags);
                return NULL;
        }
        return tags;
}

static int tag_raw(struct aws_sm *s, const struct call *c, const struct store_new *v, const char *version,
                   char *err, size_t errlen)
{
        struct call tc = *c;
        struct json_object *req = request_new("SecretId", c->name, NULL, NULL, NULL, NULL);
        struct json_object *tags = raw_tags(v, version);
        struct answer ans;
        int r = -ENOMEM;

        tc.action = "TagResource";
        if (!req || !tags || json_object_object_add(req, "Tags", tags) < 0)
                goto out;
        tags = NULL;
        r = sm_call(s, &tc, req, &ans, err, errlen);
        answer_clear(&ans);
out:
        json_object_put(tags);
        json_object_put(req);
        return r;
}

static int sm_write(void *p, const struct cfg_integration *in, const struct store_value *prev,
                    const struct store_new *v, char **ret_version, char *err, size_t errlen)
{
        struct aws_sm *s = p;
        struct call c = { .op = "write", .name = in->secret };
        size_t idlen = v->request_id ? strlen(v->request_id) : 0;
        char *version = NULL;
        int r;

        if (idlen < REQUEST_ID_MIN || idlen > REQUEST_ID_MAX) {
                set_err(err, errlen, "aws: write %s: the request id must be %d-%d characters",
                        in->secret, REQUEST_ID_MIN, REQUEST_ID_MAX);
                return -EINVAL;
        }
        /* Raw-format tags are written at promotion: until then consumers
         * read the old value, which the tags go on describing. */
        if ((r = ensure_secret(s, &c, in, prev, err, errlen)) < 0 ||
            (r = put_value(s, &c, in, v, &version, err, errlen)) < 0)
                goto out;
        *ret_version = version;
        version = NULL;
out:
        free(version);
        return r;
}

/* ---------------------------------------------------------------- promoting */

/* The version holding `stage` in DescribeSecret's VersionIdsToStages. */
static const char *version_with(const struct answer *desc, const char *stage)
{
        struct json_object *map;

        if (!desc->body || !json_object_object_get_ex(desc->body, "VersionIdsToStages", &map) ||
            !json_object_is_type(map, json_type_object))
                return NULL;
        json_object_object_foreach(map, vid, stages) {
                for (size_t i = 0; json_object_is_type(stages, json_type_array) &&
                                   i < json_object_array_length(stages); i++)
                        if (streq(json_object_get_string(json_object_array_get_idx(stages, i)), stage))
                                return vid;
        }
        return NULL;
}

static bool version_listed(const struct answer *desc, const char *version)
{
        struct json_object *map, *stages;

        return desc->body && json_object_object_get_ex(desc->body, "VersionIdsToStages", &map) &&
               json_object_object_get_ex(map, version, &stages);
}

/* UpdateSecretVersionStage: `stage` onto move_to (NULL: none) and off
 * remove_from (NULL: none; AWS wants it when another version holds it). */
static int move_stage(struct aws_sm *s, const struct call *c, const char *stage, const char *move_to,
                      const char *remove_from, char *err, size_t errlen)
{
        struct call uc = *c;
        struct json_object *req = request_new("SecretId", c->name, "VersionStage", stage,
                                              "MoveToVersionId", move_to);
        struct answer ans;
        int r;

        uc.action = "UpdateSecretVersionStage";
        if (req && add_str(req, "RemoveFromVersionId", remove_from) < 0)
                req = json_put_wiped(req);
        r = sm_call_put(s, &uc, req, &ans, err, errlen);
        answer_clear(&ans);
        return r;
}

/* Look at the labels, then do what is still to do: AWSCURRENT onto
 * `version` (taken from whichever version holds it now, which is the one
 * read before unless someone else rotated meanwhile), then AWSPENDING off. */
static int promote_pass(struct aws_sm *s, const struct call *c, const char *version, const char *prev_version,
                        char *err, size_t errlen)
{
        struct answer desc;
        const char *cur, *pending;
        int r = describe(s, c, &desc, err, errlen);

        if (r < 0)
                goto out;
        if (!version_listed(&desc, version)) {
                set_err(err, errlen, "aws: %s %s: version %s not found", c->op, c->name, version);
                r = -ENOENT;
                goto out;
        }
        cur = version_with(&desc, STAGE_CURRENT);
        pending = version_with(&desc, STAGE_PENDING);
        if (!streq(cur, version)) {
                if (prev_version && cur && !streq(cur, prev_version))
                        log_warning(NULL, "aws: %s: AWSCURRENT moved from %s to %s since it was read",
                                    c->name, prev_version, cur);
                if ((r = move_stage(s, c, STAGE_CURRENT, version, cur, err, errlen)) < 0)
                        goto out;
        }
        if (streq(pending, version))
                r = move_stage(s, c, STAGE_PENDING, NULL, version, err, errlen);
out:
        answer_clear(&desc);
        return r;
}

static int sm_promote(void *p, const struct cfg_integration *in, const struct store_new *v,
                      const char *version, const char *prev_version, char *err, size_t errlen)
{
        struct aws_sm *s = p;
        struct call c = { .op = "promote", .name = in->secret };
        char scratch[ERRTEXT_MAX];
        int r;

        if (!version || !*version) {
                set_err(err, errlen, "aws: promote %s: no version to promote", in->secret);
                return -EINVAL;
        }
        r = promote_pass(s, &c, version, prev_version, err, errlen);
        /* A label move repeated by http_do after a lost answer fails (the
         * label moved already), and so does one that raced another writer:
         * look again once. */
        if (r == -EIO || r == -EAGAIN)
                if (promote_pass(s, &c, version, prev_version, scratch, sizeof(scratch)) == 0)
                        r = 0;
        if (r == 0 && in->format == FORMAT_RAW)
                r = tag_raw(s, &c, v, version, err, errlen);
        return r;
}

/* ---------------------------------------------------------------- open, close */

static int sm_open(const struct cfg_store *cfg, struct http_client *http, void **ret)
{
        struct aws_sm *s;
        int r;

        if (!cfg->region)
                return -EINVAL;
        if (!(s = calloc(1, sizeof(*s))))
                return -ENOMEM;
        s->cfg = cfg;
        s->http = http;
        if (cfg->endpoint)
                s->url = strdup(cfg->endpoint);
        else if (asprintf(&s->url, "https://secretsmanager.%s.%s", cfg->region,      /* China: own domain */
                          strncmp(cfg->region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com") < 0)
                s->url = NULL;
        r = s->url ? aws_auth_new(cfg, cfg->region, http, &s->auth) : -ENOMEM;
        if (r < 0) {
                free(s->url);
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

static void *sm_close(void *p)
{
        struct aws_sm *s = p;

        if (!s)
                return NULL;
        aws_auth_free(s->auth);
        free(s->url);
        free(s);
        return NULL;
}

const struct store_ops store_aws_ops = {
        .type = "aws",
        .open = sm_open,
        .close = sm_close,
        .read_current = sm_read_current,
        .write = sm_write,
        .read_back = sm_read_back,
        .promote = sm_promote,
        .stages = true,
};
