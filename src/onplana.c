/* onplana.c: the issuer.  The only file that knows Onplana's paths and
 * bodies (SPEC.md section 5): client-credentials sessions, token create,
 * list, get, revoke, and self-verification of a PAT with /api/v1/me. */
#include "autoconfig.h"
#include "onplana.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "duration.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "secret.h"

/* Refresh a session this long before Onplana says it expires. */
#define SESSION_MARGIN_S 60
#define BEARER "Authorization: Bearer "

struct session {
        const struct cfg_account *acct;
        pthread_mutex_t lock;   /* held through a login: one login per account at a time */
        char *access_token;     /* secret */
        int64_t expires_mono_ms;
        unsigned generation;    /* bumped per login, so a stale 401 drops only its session */
        struct session *next;
};

/* Shared by every worker: one session per account for the whole process. */
struct onplana {
        const struct cfg_onplana *cfg;
        struct http_client *http;
        pthread_mutex_t lock;   /* the session list; each session has its own */
        struct session *sessions;
};

struct onplana *onplana_new(const struct cfg_onplana *cfg, struct http_client *http)
{
        struct onplana *o = calloc(1, sizeof(*o));

        if (o) {
                o->cfg = cfg;
                o->http = http;
                pthread_mutex_init(&o->lock, NULL);
        }
        return o;
}

struct onplana *onplana_free(struct onplana *o)
{
        struct session *s, *n;

        if (!o)
                return NULL;
        for (s = o->sessions; s; s = n) {
                n = s->next;
                pthread_mutex_destroy(&s->lock);
                secret_free(s->access_token);
                free(s);
        }
        pthread_mutex_destroy(&o->lock);
        free(o);
        return NULL;
}

/* ---- answers ---- */

static int errno_from_status(long status)
{
        if (status == 400)
                return -EINVAL;
        if (status == 401 || status == 403)
                return -EACCES;
        if (status == 404)
                return -ENOENT;
        if (status == 429 || status >= 500)
                return -EAGAIN;
        return -EIO;
}

/* `onplana: create token: 400 invalid_scope: message` from an error body,
 * either {"error":{"code","message"}} or OAuth's {"error","error_description"}.
 * The server may quote the credential the request carried (secret): the
 * text goes to logs and records, so it is masked. */
static int answer_error(const char *what, const struct http_response *resp, const char *secret,
                        char *err, size_t errlen)
{
        struct json_object *o = json_parse(resp->body, resp->body_len), *e;
        const char *code = NULL, *msg = NULL;

        if (o && json_object_object_get_ex(o, "error", &e)) {
                if (json_object_is_type(e, json_type_object)) {
                        (void)json_get_str_opt(e, "code", &code);
                        (void)json_get_str_opt(e, "message", &msg);
                } else if (json_object_is_type(e, json_type_string)) {
                        code = json_object_get_string(e);
                        (void)json_get_str_opt(o, "error_description", &msg);
                }
        }
        snprintf(err, errlen, "onplana: %s: %ld %s%s%s", what, resp->status,
                 code ? code : "(no error code)", msg ? ": " : "", msg ? msg : "");
        secret_redact(err, secret);
        json_put_wiped(o);
        return errno_from_status(resp->status);
}

static int transport_error(const char *what, int r, const char *detail, char *err, size_t errlen)
{
        snprintf(err, errlen, "onplana: %s: %s", what, detail[0] ? detail : strerror(-r));
        if (r == -EPROTO || r == -EINVAL)
                return r;
        return -EAGAIN;
}

/* Perform and check for one of the expected statuses; on success *ret_json
 * holds the parsed body (when the status has one).  *sends (when not NULL)
 * adds the times the request went on the wire (see http_response.sends).
 * secret is the credential the request carries, kept out of error text. */
static int call(struct onplana *o, const char *what, const struct http_request *req,
                long expect, struct json_object **ret_json, int *sends, const char *secret,
                char *err, size_t errlen)
{
        struct http_response resp;
        char detail[256];
        int r;

        r = http_do(o->http, req, &resp, detail, sizeof(detail));
        if (sends)
                *sends += resp.sends;
        if (r < 0) {
                r = transport_error(what, r, detail, err, errlen);
                goto out;
        }
        if (resp.status != expect) {
                r = answer_error(what, &resp, secret, err, errlen);
                goto out;
        }
        if (ret_json) {
                *ret_json = json_parse(resp.body, resp.body_len);
                if (!*ret_json || !json_object_is_type(*ret_json, json_type_object)) {
                        *ret_json = json_put_wiped(*ret_json);
                        snprintf(err, errlen, "onplana: %s: %ld answer is not a JSON object", what, resp.status);
                        r = -EBADMSG;
                        goto out;
                }
        }
        r = 0;
out:
        http_response_clear(&resp);
        return r;
}

/* ---- sessions ---- */

static char *form_escape_pair(const char *k, const char *v)
{
        char *ev = http_escape(v), *out = NULL;
        size_t n;

        if (!ev)
                return NULL;
        n = strlen(k) + strlen(ev) + 2;
        out = malloc(n);
        if (out)
                snprintf(out, n, "%s=%s", k, ev);
        secret_wipe(ev, strlen(ev));
        free(ev);
        return out;
}

static char *session_form(const struct cfg_account *a)
{
        char *id = form_escape_pair("client_id", a->client_id);
        char *sec = form_escape_pair("client_secret", a->client_secret);
        char *out = NULL;
        size_t n;

        if (id && sec) {
                n = strlen(id) + strlen(sec) + 64;
                out = malloc(n);
                if (out)
                        snprintf(out, n, "grant_type=client_credentials&%s&%s", id, sec);
        }
        free(id);
        secret_free(sec);
        return out;
}

static int session_login(struct onplana *o, struct session *s, char *err, size_t errlen)
{
        const char *headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
        struct http_request req = { .method = "POST", .headers = headers, .ca_file = o->cfg->ca_file };
        struct json_object *j = NULL;
        const char *tok;
        int64_t expires_in = 3600;
        char url[1024], *body;
        char ferr[128];
        int r;

        body = session_form(s->acct);
        if (!body)
                return -ENOMEM;
        snprintf(url, sizeof(url), "%s/oauth/token", o->cfg->url);
        req.url = url;
        req.body = body;
        req.body_len = strlen(body);
        r = call(o, "session", &req, 200, &j, NULL, s->acct->client_secret, err, errlen);
        if (r < 0)
                goto out;
        r = json_get_str(j, "access_token", &tok, ferr, sizeof(ferr));
        if (r < 0) {
                snprintf(err, errlen, "onplana: session: %s", ferr);
                goto out;
        }
        (void)json_get_int(j, "expires_in", &expires_in, NULL, 0);
        secret_free(s->access_token);
        s->access_token = secret_dup(tok);
        explicit_bzero((char *)tok, strlen(tok));
        s->expires_mono_ms = now_mono_ms() + (lifetime_clamp(expires_in) - SESSION_MARGIN_S) * 1000;
        s->generation++;
        r = s->access_token ? 0 : -ENOMEM;
out:
        json_put_wiped(j);
        secret_free(body);
        return r;
}

/* Sessions live as long as o, so the pointer stays good after the list
 * lock is let go. */
static struct session *session_for(struct onplana *o, const struct cfg_account *a)
{
        struct session *s;

        pthread_mutex_lock(&o->lock);
        for (s = o->sessions; s; s = s->next)
                if (s->acct == a)
                        goto out;
        s = calloc(1, sizeof(*s));
        if (!s)
                goto out;
        pthread_mutex_init(&s->lock, NULL);
        s->acct = a;
        s->next = o->sessions;
        o->sessions = s;
out:
        pthread_mutex_unlock(&o->lock);
        return s;
}

/* "Authorization: Bearer <session>" in a buffer the caller wipes, and the
 * session's generation.  The session's lock is held through a login, so
 * workers needing the same account wait for one login instead of each
 * making one, while those of other accounts go on. */
static int session_header(struct onplana *o, const struct cfg_account *a, char **ret,
                          unsigned *ret_gen, char *err, size_t errlen)
{
        struct session *s;
        size_t n;
        int r = -ENOMEM;

        s = session_for(o, a);
        if (!s)
                return -ENOMEM;
        pthread_mutex_lock(&s->lock);
        if (!s->access_token || now_mono_ms() >= s->expires_mono_ms) {
                r = session_login(o, s, err, errlen);
                if (r < 0)
                        goto out;
        }
        n = strlen(s->access_token) + 32;
        r = -ENOMEM;
        *ret = malloc(n);
        if (!*ret)
                goto out;
        snprintf(*ret, n, BEARER "%s", s->access_token);
        *ret_gen = s->generation;
        r = 0;
out:
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* Drop the session that was refused, unless another worker has already
 * logged in again. */
static void session_forget(struct onplana *o, const struct cfg_account *a, unsigned gen)
{
        struct session *s;

        s = session_for(o, a);
        if (!s)
                return;
        pthread_mutex_lock(&s->lock);
        if (s->generation == gen)
                s->access_token = secret_free(s->access_token);
        pthread_mutex_unlock(&s->lock);
}

/* One authenticated call; an expired session (401) is renewed once. */
static int session_call(struct onplana *o, const struct cfg_account *a, const char *what,
                        struct http_request *req, long expect, struct json_object **ret_json,
                        int *sends, char *err, size_t errlen)
{
        const char *headers[3] = { NULL, "Content-Type: application/json", NULL };
        char *auth = NULL;
        unsigned gen = 0;
        int r, tries;

        for (tries = 0; tries < 2; tries++) {
                r = session_header(o, a, &auth, &gen, err, errlen);
                if (r < 0)
                        return r;
                headers[0] = auth;
                req->headers = headers;
                req->ca_file = o->cfg->ca_file;
                r = call(o, what, req, expect, ret_json, sends, auth + strlen(BEARER), err, errlen);
                auth = secret_free(auth);
                if (r != -EACCES || !strstr(err, "invalid_credentials"))
                        break;
                session_forget(o, a, gen);
        }
        return r;
}

/* ---- tokens ---- */

static int parse_token(struct json_object *j, struct onplana_token **ret, char *err, size_t errlen)
{
        struct onplana_token *t = calloc(1, sizeof(*t));
        const char *id, *s;
        char ferr[128];
        int r;

        if (!t)
                return -ENOMEM;
        r = json_get_str(j, "id", &id, ferr, sizeof(ferr));
        if (r < 0)
                goto bad;
        t->id = strdup(id);
        if (json_get_str_opt(j, "prefix", &s) == 0 && s)
                t->prefix = strdup(s);
        if (json_get_str_opt(j, "name", &s) == 0 && s)
                t->name = strdup(s);
        if (json_get_str_opt(j, "orgId", &s) == 0 && s)
                t->org_id = strdup(s);
        r = json_get_strv(j, "scopes", &t->scopes, &t->n_scopes, ferr, sizeof(ferr));
        if (r < 0)
                goto bad;
        if (json_object_object_get_ex(j, "projectIds", NULL)) {
                r = json_get_strv(j, "projectIds", &t->project_ids, &t->n_project_ids, ferr, sizeof(ferr));
                if (r < 0)
                        goto bad;
        }
        if (json_get_str_opt(j, "expiresAt", &s) == 0 && s && time_parse_rfc3339(s, &t->expires_at) < 0) {
                snprintf(ferr, sizeof(ferr), "field \"expiresAt\" is not an RFC 3339 time");
                r = -EBADMSG;
                goto bad;
        }
        if (json_get_str_opt(j, "createdAt", &s) == 0 && s)
                (void)time_parse_rfc3339(s, &t->created_at);
        if (json_get_str_opt(j, "lastUsedAt", &s) == 0 && s)
                (void)time_parse_rfc3339(s, &t->last_used_at);
        if (json_get_str_opt(j, "revokedAt", &s) == 0 && s)
                (void)time_parse_rfc3339(s, &t->revoked_at);
        if (!t->id) {
                r = -ENOMEM;
                goto bad;
        }
        *ret = t;
        return 0;
bad:
        snprintf(err, errlen, "%s", ferr);
        onplana_token_free(t);
        return r < 0 ? r : -EBADMSG;
}

struct onplana_token *onplana_token_free(struct onplana_token *t)
{
        if (!t)
                return NULL;
        free(t->id);
        secret_free(t->token);
        free(t->prefix);
        free(t->name);
        free(t->org_id);
        strv_free(t->scopes, t->n_scopes);
        strv_free(t->project_ids, t->n_project_ids);
        free(t);
        return NULL;
}

void onplana_tokens_free(struct onplana_token **v, size_t n)
{
        size_t i;

        if (!v)
                return;
        for (i = 0; i < n; i++)
                onplana_token_free(v[i]);
        free(v);
}

static char *create_body(const struct cfg_account *a, const char *name, char *const *scopes, size_t ns,
                         char *const *projects, size_t np, int64_t expires_at)
{
        struct json_object *o = json_object_new_object();
        char exp[32];
        char *out;

        if (!o)
                return NULL;
        time_format_rfc3339(expires_at, exp, sizeof(exp));
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "orgId", json_object_new_string(a->org));
        json_object_object_add(o, "scopes", json_strv_new(scopes, ns));
        json_object_object_add(o, "projectIds", json_strv_new(projects, np));
        json_object_object_add(o, "expiresAt", json_object_new_string(exp));
        out = json_dump(o);
        json_object_put(o);
        return out;
}

/* libcurl sent the create twice (a reused connection closed before the
 * answer), so the first copy may have made a token too.  Tokens of this
 * unique name other than the one answered are revoked; when that cannot be
 * done the create fails, and the caller finds them all by name. */
static int drop_duplicates(struct onplana *o, const struct cfg_account *acct, const char *name,
                           const char *keep, char *err, size_t errlen)
{
        struct onplana_token **v = NULL;
        size_t n = 0, i;
        int r = onplana_list(o, acct, name, &v, &n, err, errlen);

        for (i = 0; r == 0 && i < n; i++)
                if (strcmp(v[i]->id, keep) != 0 && !v[i]->revoked_at)
                        r = onplana_revoke(o, acct, v[i]->id, err, errlen);
        onplana_tokens_free(v, n);
        return r;
}

int onplana_create(struct onplana *o, const struct cfg_account *acct, const char *name,
                   char *const *scopes, size_t n_scopes, char *const *projects, size_t n_projects,
                   int64_t expires_at, struct onplana_token **ret, char *err, size_t errlen)
{
        struct http_request req = { .method = "POST", .idempotent = false };
        struct onplana_token *t = NULL;
        struct json_object *j = NULL;
        const char *tok;
        char url[1024], ferr[128];
        char *body;
        int r, sends = 0;

        body = create_body(acct, name, scopes, n_scopes, projects, n_projects, expires_at);
        if (!body)
                return -ENOMEM;
        snprintf(url, sizeof(url), "%s/api/v1/tokens", o->cfg->url);
        req.url = url;
        req.body = body;
        req.body_len = strlen(body);
        r = session_call(o, acct, "create token", &req, 201, &j, &sends, err, errlen);
        if (r < 0)
                goto out;
        r = parse_token(j, &t, ferr, sizeof(ferr));
        if (r == 0)
                r = json_get_str(j, "token", &tok, ferr, sizeof(ferr));
        if (r < 0) {
                snprintf(err, errlen, "onplana: create token: %s", ferr);
                goto out;
        }
        t->token = secret_dup(tok);
        explicit_bzero((char *)tok, strlen(tok));
        if (sends > 1) {
                r = drop_duplicates(o, acct, name, t->id, err, errlen);
                if (r < 0)
                        goto out;
        }
        *ret = t;
        t = NULL;
out:
        onplana_token_free(t);
        json_put_wiped(j);      /* the new token, even when the answer was refused */
        free(body);
        return r;
}

static int list_page(struct onplana *o, const struct cfg_account *acct, const char *name,
                     const char *cursor, struct onplana_token ***v, size_t *n,
                     char **ret_cursor, char *err, size_t errlen)
{
        struct http_request req = { .method = "GET", .idempotent = true };
        struct json_object *j = NULL, *arr;
        char *eorg = http_escape(acct->org), *ename = name ? http_escape(name) : NULL;
        char *ecur = cursor ? http_escape(cursor) : NULL;
        const char *next;
        char url[2048], ferr[128];
        size_t i, len;
        int r = -ENOMEM;

        if (!eorg || (name && !ename) || (cursor && !ecur))
                goto out;
        snprintf(url, sizeof(url), "%s/api/v1/tokens?orgId=%s%s%s%s%s", o->cfg->url, eorg,
                 ename ? "&name=" : "", ename ? ename : "", ecur ? "&cursor=" : "", ecur ? ecur : "");
        req.url = url;
        r = session_call(o, acct, "list tokens", &req, 200, &j, NULL, err, errlen);
        if (r < 0)
                goto out;
        r = json_get_array(j, "tokens", &arr, ferr, sizeof(ferr));
        len = r == 0 ? json_object_array_length(arr) : 0;
        for (i = 0; r == 0 && i < len; i++) {
                struct onplana_token **nv = realloc(*v, (*n + 1) * sizeof(**v));
                if (!nv) {
                        r = -ENOMEM;
                        goto out;
                }
                *v = nv;
                r = parse_token(json_object_array_get_idx(arr, i), &nv[*n], ferr, sizeof(ferr));
                if (r == 0)
                        (*n)++;
        }
        if (r == 0 && json_get_str_opt(j, "nextCursor", &next) < 0) {
                snprintf(ferr, sizeof(ferr), "field \"nextCursor\" is not a string");
                r = -EBADMSG;
        }
        if (r < 0) {
                snprintf(err, errlen, "onplana: list tokens: %s", ferr);
                goto out;
        }
        *ret_cursor = next && *next ? strdup(next) : NULL;
out:
        if (j)
                json_object_put(j);
        free(eorg);
        free(ename);
        free(ecur);
        return r;
}

int onplana_list(struct onplana *o, const struct cfg_account *acct, const char *name,
                 struct onplana_token ***ret, size_t *ret_n, char *err, size_t errlen)
{
        struct onplana_token **v = NULL;
        char *cursor = NULL, *next = NULL;
        size_t n = 0;
        int r, pages = 0;

        do {
                next = NULL;
                r = list_page(o, acct, name, cursor, &v, &n, &next, err, errlen);
                free(cursor);
                cursor = next;
                /* A server that never ends its cursor chain must not hang us. */
                if (r == 0 && ++pages > 10000) {
                        snprintf(err, errlen, "onplana: list tokens: more than 10000 pages");
                        r = -EBADMSG;
                }
        } while (r == 0 && cursor);
        free(cursor);
        if (r < 0) {
                onplana_tokens_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int onplana_get(struct onplana *o, const struct cfg_account *acct, const char *id,
                struct onplana_token **ret, char *err, size_t errlen)
{
        struct http_request req = { .method = "GET", .idempotent = true };
        struct json_object *j = NULL;
        char url[1024], ferr[128];
        char *eid = http_escape(id);
        int r;

        if (!eid)
                return -ENOMEM;
        snprintf(url, sizeof(url), "%s/api/v1/tokens/%s", o->cfg->url, eid);
        req.url = url;
        r = session_call(o, acct, "get token", &req, 200, &j, NULL, err, errlen);
        if (r == 0) {
                r = parse_token(j, ret, ferr, sizeof(ferr));
                if (r < 0)
                        snprintf(err, errlen, "onplana: get token %s: %s", id, ferr);
        }
        if (j)
                json_object_put(j);
        free(eid);
        return r;
}

int onplana_revoke(struct onplana *o, const struct cfg_account *acct, const char *id,
                   char *err, size_t errlen)
{
        struct http_request req = { .method = "DELETE", .idempotent = true };
        char url[1024];
        char *eid = http_escape(id);
        int r;

        if (!eid)
                return -ENOMEM;
        snprintf(url, sizeof(url), "%s/api/v1/tokens/%s", o->cfg->url, eid);
        req.url = url;
        r = session_call(o, acct, "revoke token", &req, 204, NULL, NULL, err, errlen);
        /* An unknown id is already gone, which is all a revocation wants. */
        if (r == -ENOENT)
                r = 0;
        free(eid);
        return r;
}

/* ---- verification ---- */

struct onplana_me *onplana_me_free(struct onplana_me *m)
{
        if (!m)
                return NULL;
        free(m->token_id);
        free(m->org_id);
        strv_free(m->scopes, m->n_scopes);
        strv_free(m->project_ids, m->n_project_ids);
        free(m);
        return NULL;
}

static int parse_me(struct json_object *j, struct onplana_me **ret, char *ferr, size_t ferrlen)
{
        struct onplana_me *m = calloc(1, sizeof(*m));
        struct json_object *t;
        const char *s;
        int r;

        if (!m)
                return -ENOMEM;
        r = json_get_obj(j, "token", &t, ferr, ferrlen);
        if (r == 0)
                r = json_get_str(t, "id", &s, ferr, ferrlen);
        if (r == 0 && !(m->token_id = strdup(s)))
                r = -ENOMEM;
        if (r == 0)
                r = json_get_strv(t, "scopes", &m->scopes, &m->n_scopes, ferr, ferrlen);
        if (r == 0 && json_object_object_get_ex(t, "projectIds", NULL))
                r = json_get_strv(t, "projectIds", &m->project_ids, &m->n_project_ids, ferr, ferrlen);
        if (r == 0 && json_get_str_opt(t, "expiresAt", &s) == 0 && s)
                (void)time_parse_rfc3339(s, &m->expires_at);
        if (r == 0 && json_get_str_opt(j, "orgId", &s) == 0 && s)
                m->org_id = strdup(s);
        if (r < 0) {
                onplana_me_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int onplana_whoami(struct onplana *o, const char *pat, struct onplana_me **ret,
                   char *err, size_t errlen)
{
        const char *headers[2] = { NULL, NULL };
        struct http_request req = { .method = "GET", .idempotent = true, .headers = headers,
                                    .ca_file = o->cfg->ca_file };
        struct json_object *j = NULL;
        char url[1024], ferr[128];
        char *auth;
        size_t n = strlen(pat) + 32;
        int r;

        auth = malloc(n);
        if (!auth)
                return -ENOMEM;
        snprintf(auth, n, BEARER "%s", pat);
        headers[0] = auth;
        snprintf(url, sizeof(url), "%s/api/v1/me", o->cfg->url);
        req.url = url;
        r = call(o, "verify token", &req, 200, &j, NULL, pat, err, errlen);
        if (r == 0) {
                r = parse_me(j, ret, ferr, sizeof(ferr));
                if (r < 0)
                        snprintf(err, errlen, "onplana: verify token: %s", ferr);
        }
        if (j)
                json_object_put(j);
        secret_free(auth);
        return r;
}

/* ---- names ---- */

int onplana_token_name(const char *integration, int64_t now, char *buf, size_t size)
{
        time_t t = (time_t)now;
        struct tm tm;
        uint32_t rnd;
        char date[16];

        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                return -EIO;
        if (!gmtime_r(&t, &tm))
                return -EINVAL;
        strftime(date, sizeof(date), "%Y%m%d", &tm);
        if ((size_t)snprintf(buf, size, "%s-%s-%08x", integration, date, rnd) >= size)
                return -ENAMETOOLONG;
        return 0;
}

bool onplana_token_name_matches(const char *integration, const char *name)
{
        size_t n = strlen(integration), i;
        const char *rest;

        if (!name || strncmp(name, integration, n) != 0 || name[n] != '-')
                return false;
        rest = name + n + 1;
        if (strlen(rest) != 8 + 1 + 8 || rest[8] != '-')
                return false;
        for (i = 0; i < 8; i++)
                if (rest[i] < '0' || rest[i] > '9')
                        return false;
        for (i = 9; i < 17; i++)
                if (!strchr("0123456789abcdef", rest[i]))
                        return false;
        return true;
}
