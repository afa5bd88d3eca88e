/* aws_creds.c: where a store's AWS credentials come from — static keys,
 * the SDKs' default chain (environment, shared files, web identity,
 * ECS/EKS container endpoint, EC2 IMDSv2), or STS AssumeRole on top of that
 * chain — and SigV4-signed requests made with them.  Every credential
 * string lives in memory that is wiped when freed. */
#include "aws_creds.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "duration.h"
#include "http.h"
#include "json.h"
#include "util.h"
#include "log.h"
#include "secret.h"
#include "sigv4.h"

/* Temporary credentials are replaced this long before they expire (the
 * SDKs use the same five minutes). */
#define REFRESH_MARGIN_S        300
/* Long-term keys (environment, files) are looked up again this often, so an
 * operator's edit of the credentials file is picked up by the daemon. */
#define STATIC_RECHECK_S        600
#define DEFAULT_SESSION_NAME    "patrol"
#define DEFAULT_IMDS            "http://169.254.169.254"
#define DEFAULT_CONTAINER       "http://169.254.170.2"
#define IMDS_TOKEN_TTL_S        "21600"
#define STS_VERSION             "2011-06-15"
#define FORM_TYPE               "Content-Type: application/x-www-form-urlencoded; charset=utf-8"
#define ERRTEXT_MAX             300
#define CRED_PREFIX             "credentials: "

struct aws_auth {
        const struct cfg_store *cfg;
        const char *region;
        struct http_client *http;
        pthread_mutex_t lock;
        struct aws_creds *cached;       /* NULL until first use or after invalidate */
        int64_t refresh_at_ms;          /* monotonic */
};

static const char *env(const char *name)
{
        const char *v = secure_getenv(name);

        return v && *v ? v : NULL;
}

/* ---------------------------------------------------------------- credentials */

struct aws_creds *aws_creds_free(struct aws_creds *c)
{
        if (!c)
                return NULL;
        secret_free(c->access_key_id);
        secret_free(c->secret_access_key);
        secret_free(c->session_token);
        free(c);
        return NULL;
}

/* Takes nothing over: copies the strings.  token may be NULL or empty. */
static int creds_new(const char *akid, const char *secret, const char *token, int64_t expires_at,
                     const char *source, struct aws_creds **ret)
{
        struct aws_creds *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->access_key_id = secret_dup(akid);
        c->secret_access_key = secret_dup(secret);
        c->session_token = token && *token ? secret_dup(token) : NULL;
        c->expires_at = expires_at;
        c->source = source;
        if (!c->access_key_id || !c->secret_access_key || (token && *token && !c->session_token)) {
                aws_creds_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static int creds_copy(const struct aws_creds *c, struct aws_creds **ret)
{
        return creds_new(c->access_key_id, c->secret_access_key, c->session_token, c->expires_at,
                         c->source, ret);
}

/* ---------------------------------------------------------------- signing */

/* "https://host:port/p?q" -> host "host:port", target "/p?q". */
static int split_url(const char *url, char **ret_host, const char **ret_target)
{
        const char *h = strstr(url, "://"), *end;

        if (!h)
                return -EINVAL;
        h += 3;
        end = h + strcspn(h, "/?#");
        if (end == h || memchr(h, '@', (size_t)(end - h)))
                return -EINVAL;
        if (!(*ret_host = strndup(h, (size_t)(end - h))))
                return -ENOMEM;
        *ret_target = *end == '/' ? end : "/";
        return 0;
}

static char *header_line(const char *name, const char *value)
{
        size_t n = strlen(name) + strlen(value) + 3;
        char *h = malloc(n);

        if (h)
                snprintf(h, n, "%s: %s", name, value);
        return h;
}

static size_t count_headers(const char *const *h)
{
        size_t n = 0;

        while (h && h[n])
                n++;
        return n;
}

/* The header lists to sign and to send: the caller's, then Host, then (sent
 * only) X-Amz-Date, X-Amz-Security-Token and Authorization.  `owned` holds
 * what we allocated, each wiped by the caller. */
struct signed_headers {
        const char **sign;
        const char **send;
        char *owned[4];
};

static void signed_headers_done(struct signed_headers *s)
{
        for (size_t i = 0; i < 4; i++)
                s->owned[i] = secret_free(s->owned[i]);
        free(s->sign);
        free(s->send);
}

static int sign_into(const struct aws_creds *cr, const struct aws_request *req, const char *target,
                     struct signed_headers *sh)
{
        struct sigv4_credentials c = { cr->access_key_id, cr->secret_access_key, cr->session_token };
        struct sigv4_request sr = { req->method, target, sh->sign, req->body, req->body_len };
        char date[SIGV4_AMZ_DATE_LEN + 1], *auth = NULL;
        struct sigv4_params p = { req->region, req->service, date, SIGV4_NORMALIZE_PATH };
        size_t n = count_headers(req->headers) + 1, k = n;
        int r;

        if ((r = sigv4_amz_date((time_t)now_wall(), date)) < 0)
                return r;
        if ((r = sigv4_sign(&sr, &c, &p, &auth, NULL, NULL)) < 0)
                return r;
        sh->owned[1] = header_line("X-Amz-Date", date);
        sh->owned[2] = cr->session_token ? header_line("X-Amz-Security-Token", cr->session_token) : NULL;
        sh->owned[3] = header_line("Authorization", auth);
        secret_free(auth);
        if (!sh->owned[1] || !sh->owned[3] || (cr->session_token && !sh->owned[2]))
                return -ENOMEM;
        memcpy(sh->send, sh->sign, n * sizeof(*sh->send));
        for (size_t i = 1; i < 4; i++)
                if (sh->owned[i])
                        sh->send[k++] = sh->owned[i];
        sh->send[k] = NULL;
        return 0;
}

int aws_signed_do(struct http_client *http, const struct aws_creds *cr, const struct aws_request *req,
                  struct http_response *resp, char *errbuf, size_t errlen)
{
        struct signed_headers sh = { 0 };
        struct http_request hr = { .method = req->method, .url = req->url, .body = req->body,
                                   .body_len = req->body_len, .ca_file = req->ca_file,
                                   .idempotent = req->idempotent };
        size_t n = count_headers(req->headers);
        const char *target;
        char *host = NULL;
        int r;

        memset(resp, 0, sizeof(*resp));
        if ((r = split_url(req->url, &host, &target)) < 0) {
                set_err(errbuf, errlen, "malformed URL");
                return r;
        }
        r = -ENOMEM;
        sh.sign = calloc(n + 2, sizeof(*sh.sign));
        sh.send = calloc(n + 5, sizeof(*sh.send));
        if (!sh.sign || !sh.send || !(sh.owned[0] = header_line("Host", host)))
                goto out;
        memcpy(sh.sign, req->headers, n * sizeof(*sh.sign));
        sh.sign[n] = sh.owned[0];
        if ((r = sign_into(cr, req, target, &sh)) < 0) {
                set_err(errbuf, errlen, "cannot sign the request: %s", strerror(-r));
                goto out;
        }
        hr.headers = sh.send;
        r = http_do(http, &hr, resp, errbuf, errlen);
out:
        signed_headers_done(&sh);
        free(host);
        return r;
}

/* ---------------------------------------------------------------- answers */

/* XML answers of STS carry no nesting we need: the first element of a
 * name is the one.  Entities are decoded; CDATA is not used by STS. */
char *aws_xml_text(const char *xml, const char *tag)
{
        static const struct { const char *ent; char ch; } ents[] = {
                { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' },
        };
        char open[64], close[64], *out, *o;
        const char *b, *e;

        if (!xml || snprintf(open, sizeof(open), "<%s>", tag) >= (int)sizeof(open))
                return NULL;
        snprintf(close, sizeof(close), "</%s>", tag);
        if (!(b = strstr(xml, open)) || !(e = strstr(b += strlen(open), close)))
                return NULL;
        if (!(out = o = malloc((size_t)(e - b) + 1)))
                return NULL;
        while (b < e) {
                size_t i;

                for (i = 0; *b == '&' && i < sizeof(ents) / sizeof(ents[0]); i++)
                        if (strncmp(b, ents[i].ent, strlen(ents[i].ent)) == 0)
                                break;
                if (*b == '&' && i < sizeof(ents) / sizeof(ents[0])) {
                        *o++ = ents[i].ch;
                        b += strlen(ents[i].ent);
                } else {
                        *o++ = *b++;
                }
        }
        *o = '\0';
        return out;
}

/* One printable line of at most `size` bytes from an error text. */
static void clean_line(char *buf, size_t size, const char *s)
{
        size_t n = 0;

        for (; s && *s && n + 1 < size; s++)
                buf[n++] = (unsigned char)*s < ' ' || *s == 0x7f ? ' ' : *s;
        buf[n] = '\0';
}

static int code_for_status(long status)
{
        if (status == 400 || status == 401 || status == 403)
                return -EACCES;
        if (status == 429 || status >= 500)
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

/* {"AccessKeyId","SecretAccessKey","Token","Expiration"} of IMDS and the
 * container endpoint (IMDS adds "Code": "Success"). */
static int creds_from_json(const struct http_response *resp, const char *source,
                           struct aws_creds **ret, char *err, size_t errlen)
{
        struct json_object *o = json_parse(resp->body ? resp->body : "", resp->body_len);
        const char *akid = NULL, *sk = NULL, *tok = NULL, *exp = NULL, *code = NULL;
        int64_t expires = 0;
        int r = -EBADMSG;

        if (!o || !json_object_is_type(o, json_type_object)) {
                set_err(err, errlen, "credentials: %s: answer is not a JSON object", source);
                goto out;
        }
        (void)json_get_str_opt(o, "Code", &code);
        (void)json_get_str_opt(o, "AccessKeyId", &akid);
        (void)json_get_str_opt(o, "SecretAccessKey", &sk);
        (void)json_get_str_opt(o, "Token", &tok);
        (void)json_get_str_opt(o, "Expiration", &exp);
        if ((code && !streq(code, "Success")) || !akid || !*akid || !sk || !*sk ||
            (exp && time_parse_rfc3339(exp, &expires) < 0)) {
                set_err(err, errlen, "credentials: %s: %s", source,
                        code && !streq(code, "Success") ? "the endpoint reports a failure" :
                        "answer lacks AccessKeyId, SecretAccessKey or a valid Expiration");
                r = code ? -EACCES : -EBADMSG;
                goto out;
        }
        r = creds_new(akid, sk, tok, expires, source, ret);
out:
        json_put_wiped(o);
        return r;
}

/* ---------------------------------------------------------------- STS */

/* application/x-www-form-urlencoded from name/value pairs (NULL values
 * skipped), built in one allocation: the body may hold a web identity
 * token, and a growing buffer would leave copies of it behind. */
static char *form_encode(const char *const *kv, size_t n)
{
        char **esc = calloc(n, sizeof(*esc)), *out = NULL;
        size_t len = 1, i;

        if (!esc)
                return NULL;
        for (i = 0; i < n; i++) {
                if (kv[i] && !(esc[i] = http_escape(kv[i])))
                        goto out;
                len += esc[i] ? strlen(esc[i]) + 1 : 0;
        }
        if (!(out = malloc(len)))
                goto out;
        out[0] = '\0';
        for (i = 0; i + 1 < n; i += 2) {
                if (!esc[i + 1])
                        continue;
                if (out[0])
                        strcat(out, "&");
                strcat(strcat(strcat(out, esc[i]), "="), esc[i + 1]);
        }
out:
        for (i = 0; i < n; i++)
                secret_free(esc[i]);
        free(esc);
        return out;
}

static char *sts_url(const struct aws_auth *a)
{
        char *url = NULL;

        if (a->cfg->sts_endpoint)
                return strdup(a->cfg->sts_endpoint);
        /* The China partition has its own domain. */
        if (asprintf(&url, "https://sts.%s.%s", a->region,
                     strncmp(a->region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com") < 0)
                return NULL;
        return url;
}

/* <ErrorResponse><Error><Code>..</Code><Message>..</Message></Error>.
 * STS may quote what it was sent (cred, sess): masked, err is logged. */
static int sts_fail(const struct http_response *resp, const char *what, const char *cred,
                    const char *sess, char *err, size_t errlen)
{
        char *code = aws_xml_text(resp->body, "Code"), *msg = aws_xml_text(resp->body, "Message");
        char line[ERRTEXT_MAX] = "";
        int r = code_for_status(resp->status);

        clean_line(line, sizeof(line), msg);
        set_err(err, errlen, "credentials: %s: %ld %s%s%s", what, resp->status,
                code ? code : "(no error code)", line[0] ? ": " : "", line);
        secret_redact(err, cred);
        secret_redact(err, sess);
        /* IDPCommunicationError: the identity provider was not reachable. */
        if (streq(code, "IDPCommunicationError") || streq(code, "Throttling"))
                r = -EAGAIN;
        free(code);
        free(msg);
        return r;
}

static int sts_accept(const struct http_response *resp, const char *what, struct aws_creds **ret,
                      char *err, size_t errlen)
{
        char *akid = aws_xml_text(resp->body, "AccessKeyId");
        char *sk = aws_xml_text(resp->body, "SecretAccessKey");
        char *tok = aws_xml_text(resp->body, "SessionToken");
        char *exp = aws_xml_text(resp->body, "Expiration");
        int64_t expires = 0;
        int r = -EBADMSG;

        if (!akid || !sk || !tok || !exp || time_parse_rfc3339(exp, &expires) < 0)
                set_err(err, errlen, "credentials: %s: answer lacks Credentials", what);
        else
                r = creds_new(akid, sk, tok, expires, what, ret);
        secret_free(akid);
        secret_free(sk);
        secret_free(tok);
        free(exp);
        return r;
}

/* POST a Query API call to STS, signed with `signer` unless it is NULL
 * (AssumeRoleWithWebIdentity is unsigned).  cred: the credential body
 * carries (a web identity token), if any. */
static int sts_call(struct aws_auth *a, const struct aws_creds *signer, const char *body,
                    const char *cred, const char *what, struct aws_creds **ret, char *err, size_t errlen)
{
        const char *headers[] = { FORM_TYPE, NULL };
        struct aws_request req = { .method = "POST", .service = "sts", .region = a->region,
                                   .headers = headers, .body = body, .body_len = strlen(body),
                                   .ca_file = a->cfg->ca_file, .idempotent = true };
        struct http_response resp = { 0 };
        char terr[256] = "", *url = sts_url(a);
        int r;

        if (!url)
                return -ENOMEM;
        req.url = url;
        if (signer) {
                r = aws_signed_do(a->http, signer, &req, &resp, terr, sizeof(terr));
        } else {
                struct http_request hr = { .method = "POST", .url = url, .headers = headers,
                                           .body = body, .body_len = req.body_len,
                                           .ca_file = a->cfg->ca_file, .idempotent = true };
                r = http_do(a->http, &hr, &resp, terr, sizeof(terr));
        }
        if (r < 0) {
                set_err(err, errlen, "credentials: %s: %s", what, terr[0] ? terr : strerror(-r));
                r = transport_code(r);
        } else if (resp.status != 200) {
                r = sts_fail(&resp, what, cred, signer ? signer->session_token : NULL, err, errlen);
        } else {
                r = sts_accept(&resp, what, ret, err, errlen);
        }
        http_response_clear(&resp);
        free(url);
        return r;
}

static int assume_role(struct aws_auth *a, const struct aws_creds *source, struct aws_creds **ret,
                       char *err, size_t errlen)
{
        const struct cfg_auth *au = &a->cfg->auth;
        const char *kv[] = {
                "Action", "AssumeRole", "Version", STS_VERSION, "RoleArn", au->role_arn,
                "RoleSessionName", au->session_name ? au->session_name : DEFAULT_SESSION_NAME,
                "ExternalId", au->external_id,
        };
        char *body = form_encode(kv, sizeof(kv) / sizeof(kv[0]));
        int r;

        if (!body)
                return -ENOMEM;
        r = sts_call(a, source, body, NULL, "assume role", ret, err, errlen);
        secret_free(body);
        return r;
}

/* ---------------------------------------------------------------- providers */

static int from_static(const struct cfg_auth *au, struct aws_creds **ret, char *err, size_t errlen)
{
        if (!au->access_key_id || !au->secret_access_key) {
                set_err(err, errlen, "credentials: static: access_key_id and secret_access_key are required");
                return -EACCES;
        }
        return creds_new(au->access_key_id, au->secret_access_key, au->session_token, 0, "static", ret);
}

static int from_env(struct aws_creds **ret)
{
        const char *akid = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");

        if (!akid || !sk)
                return -ENOENT;
        return creds_new(akid, sk, env("AWS_SESSION_TOKEN"), 0, "environment", ret);
}

/* -- shared credentials and config files (INI) */

struct ini_keys {
        char *akid, *secret, *token;    /* secrets */
        bool found;                     /* the profile's section exists */
};

static void ini_keys_clear(struct ini_keys *k)
{
        k->akid = secret_free(k->akid);
        k->secret = secret_free(k->secret);
        k->token = secret_free(k->token);
}

static char *trim(char *s)
{
        char *e;

        while (isspace((unsigned char)*s))
                s++;
        for (e = s + strlen(s); e > s && isspace((unsigned char)e[-1]); e--)
                ;
        *e = '\0';
        return s;
}

/* The credentials file names sections after the profile; the config file
 * says [profile NAME], except [default]. */
static bool section_is(char *name, const char *profile, bool config_file)
{
        if (!config_file || streq(name, "default"))
                return streq(name, profile);
        if (strncmp(name, "profile", 7) != 0 || !isspace((unsigned char)name[7]))
                return false;
        return streq(trim(name + 8), profile);
}

static void ini_set(struct ini_keys *k, const char *key, const char *value)
{
        char **slot = streq(key, "aws_access_key_id") ? &k->akid :
                      streq(key, "aws_secret_access_key") ? &k->secret :
                      streq(key, "aws_session_token") ? &k->token : NULL;

        if (!slot)
                return;
        secret_free(*slot);
        *slot = secret_dup(value);
}

static void ini_scan(char *text, const char *profile, bool config_file, struct ini_keys *k)
{
        char *save = NULL, *line, *eq;
        bool in = false;

        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *s = trim(line);

                if (!*s || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        char *end = strchr(s, ']');

                        if (end)
                                *end = '\0';
                        in = end && section_is(trim(s + 1), profile, config_file);
                        k->found |= in;
                } else if (in && (eq = strchr(s, '='))) {
                        *eq = '\0';
                        ini_set(k, trim(s), trim(eq + 1));
                }
        }
}

/* Read one file into k (keys found there override those already in k). */
static int ini_read(const char *path, const char *profile, bool config_file, struct ini_keys *k,
                    char *err, size_t errlen)
{
        char *text = NULL;
        size_t len;
        int r = secret_read_file(path, &text);

        if (r == -ENOENT || r == -EINVAL)       /* absent, or empty */
                return 0;
        if (r < 0) {
                set_err(err, errlen, "credentials: cannot read %s: %s", path, strerror(-r));
                return -EACCES;
        }
        len = strlen(text);
        ini_scan(text, profile, config_file, k);
        secret_wipe(text, len);         /* strtok_r cut it: wipe all of it */
        free(text);
        return 0;
}

static char *home_path(const char *var, const char *def)
{
        const char *v = env(var), *home = env("HOME");
        char *out = NULL;

        if (v && v[0] == '~' && v[1] == '/' && home)
                return asprintf(&out, "%s%s", home, v + 1) < 0 ? NULL : out;
        if (v)
                return strdup(v);
        if (!home)
                return strdup("/nonexistent");
        return asprintf(&out, "%s/%s", home, def) < 0 ? NULL : out;
}

static int from_shared_files(const struct cfg_auth *au, struct aws_creds **ret, char *err, size_t errlen)
{
        const char *profile = au->profile ? au->profile : env("AWS_PROFILE");
        bool explicit_profile = profile != NULL;
        char *cred_path = home_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        char *conf_path = home_path("AWS_CONFIG_FILE", ".aws/config");
        struct ini_keys k = { 0 };
        int r = -ENOMEM;

        if (!profile)
                profile = "default";
        if (!cred_path || !conf_path)
                goto out;
        /* Config first: the credentials file's keys win where both have one. */
        if ((r = ini_read(conf_path, profile, true, &k, err, errlen)) < 0 ||
            (r = ini_read(cred_path, profile, false, &k, err, errlen)) < 0)
                goto out;
        if (k.akid && k.secret) {
                r = creds_new(k.akid, k.secret, k.token, 0, "shared credentials file", ret);
        } else if (explicit_profile) {
                set_err(err, errlen, "credentials: profile \"%s\" %s %s or %s", profile,
                        k.found ? "has no aws_access_key_id and aws_secret_access_key in" : "not found in",
                        cred_path, conf_path);
                r = -EACCES;
        } else {
                r = -ENOENT;
        }
out:
        ini_keys_clear(&k);
        free(cred_path);
        free(conf_path);
        return r;
}

/* -- web identity (EKS IRSA and the like) */

static int from_web_identity(struct aws_auth *a, struct aws_creds **ret, char *err, size_t errlen)
{
        const char *file = env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = env("AWS_ROLE_ARN");
        const char *name = env("AWS_ROLE_SESSION_NAME");
        char *jwt = NULL, *body = NULL;
        int r;

        if (!file)
                return -ENOENT;
        if (!role) {
                set_err(err, errlen, "credentials: web identity: AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
                return -EACCES;
        }
        /* Read at each use: the kubelet replaces projected tokens. */
        if ((r = secret_read_file(file, &jwt)) < 0) {
                set_err(err, errlen, "credentials: web identity: cannot read %s: %s", file, strerror(-r));
                return -EACCES;
        }
        {
                const char *kv[] = { "Action", "AssumeRoleWithWebIdentity", "Version", STS_VERSION,
                                     "RoleArn", role, "RoleSessionName", name ? name : DEFAULT_SESSION_NAME,
                                     "WebIdentityToken", jwt };

                body = form_encode(kv, sizeof(kv) / sizeof(kv[0]));
        }
        r = body ? sts_call(a, NULL, body, jwt, "web identity", ret, err, errlen) : -ENOMEM;
        secret_free(body);
        secret_free(jwt);
        return r;
}

/* -- ECS / EKS Pod Identity container endpoint */

/* The Authorization value for a full URI: the token file (EKS Pod Identity
 * rotates it) wins over the variable. */
static int container_auth(char **ret, char *err, size_t errlen)
{
        const char *file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
        const char *tok = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        int r;

        *ret = NULL;
        if (file) {
                if ((r = secret_read_file(file, ret)) < 0) {
                        set_err(err, errlen, "credentials: container: cannot read %s: %s", file, strerror(-r));
                        return -EACCES;
                }
        } else if (tok && !(*ret = secret_dup(tok))) {
                return -ENOMEM;
        }
        if (*ret && strpbrk(*ret, "\r\n")) {
                *ret = secret_free(*ret);
                set_err(err, errlen, "credentials: container: the authorization token holds a line break");
                return -EACCES;
        }
        return 0;
}

static int container_url(const struct aws_auth *a, char **ret, bool *ret_full)
{
        const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
        const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
        const char *base = a->cfg->container_endpoint ? a->cfg->container_endpoint : DEFAULT_CONTAINER;

        *ret_full = !rel && full;
        if (rel)
                return asprintf(ret, "%s%s%s", base, rel[0] == '/' ? "" : "/", rel) < 0 ? -ENOMEM : 0;
        if (full)
                return (*ret = strdup(full)) ? 0 : -ENOMEM;
        return -ENOENT;
}

static int from_container(struct aws_auth *a, struct aws_creds **ret, char *err, size_t errlen)
{
        const char *headers[3] = { "Accept: application/json", NULL, NULL };
        struct http_request req = { .method = "GET", .headers = headers, .ca_file = a->cfg->ca_file,
                                    .idempotent = true };
        struct http_response resp = { 0 };
        char *url = NULL, *tok = NULL, *hdr = NULL, terr[256] = "";
        bool full;
        int r;

        if ((r = container_url(a, &url, &full)) < 0)
                return r;
        if (full && (r = container_auth(&tok, err, errlen)) < 0)
                goto out;
        if (tok && !(hdr = header_line("Authorization", tok))) {
                r = -ENOMEM;
                goto out;
        }
        headers[1] = hdr;
        req.url = url;
        r = http_do(a->http, &req, &resp, terr, sizeof(terr));
        if (r < 0) {
                set_err(err, errlen, "credentials: container: %s", terr[0] ? terr : strerror(-r));
                r = transport_code(r);
        } else if (resp.status != 200) {
                set_err(err, errlen, "credentials: container: %ld", resp.status);
                r = code_for_status(resp.status);
        } else {
                r = creds_from_json(&resp, "container", ret, err, errlen);
        }
out:
        http_response_clear(&resp);
        secret_free(tok);
        secret_free(hdr);
        free(url);
        return r;
}

/* -- EC2 instance metadata, IMDSv2 only */

struct imds {
        struct aws_auth *a;
        const char *base;
        char *token_header;             /* "X-aws-ec2-metadata-token: ..." (secret) */
};

/* GET/PUT base+path; the answer body on 200, else an error. */
static int imds_do(struct imds *m, const char *method, const char *path, const char *header,
                   struct http_response *resp, char *err, size_t errlen)
{
        const char *headers[] = { header, NULL };
        char *url = NULL, terr[256] = "";
        /* Off EC2 the address may swallow packets: do not wait four times. */
        struct http_request req = { .method = method, .headers = headers, .ca_file = m->a->cfg->ca_file,
                                    .idempotent = true, .max_attempts = 2 };
        int r;

        if (asprintf(&url, "%s%s", m->base, path) < 0)
                return -ENOMEM;
        req.url = url;
        r = http_do(m->a->http, &req, resp, terr, sizeof(terr));
        free(url);
        if (r < 0) {
                set_err(err, errlen, "credentials: IMDS: %s", terr[0] ? terr : strerror(-r));
                return transport_code(r);
        }
        if (resp->status != 200) {
                set_err(err, errlen, "credentials: IMDS: %s %s: %ld%s", method, path, resp->status,
                        resp->status == 404 ? " (no IAM role attached to this instance?)" : "");
                return code_for_status(resp->status == 404 ? 403 : resp->status);
        }
        return 0;
}

static int imds_session(struct imds *m, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        int r = imds_do(m, "PUT", "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL_S,
                        &resp, err, errlen);

        if (r == 0 && (!resp.body || !resp.body[0] || strpbrk(resp.body, "\r\n"))) {
                set_err(err, errlen, "credentials: IMDS: empty or malformed session token");
                r = -EBADMSG;
        }
        if (r == 0 && !(m->token_header = header_line("X-aws-ec2-metadata-token", resp.body)))
                r = -ENOMEM;
        http_response_clear(&resp);
        return r;
}

/* The first role listed under iam/security-credentials/. */
static int imds_role(struct imds *m, char **ret, char *err, size_t errlen)
{
        struct http_response resp = { 0 };
        int r = imds_do(m, "GET", "/latest/meta-data/iam/security-credentials/", m->token_header,
                        &resp, err, errlen);
        size_t n;

        if (r < 0)
                goto out;
        n = resp.body ? strcspn(resp.body, "\r\n") : 0;
        if (n == 0) {
                set_err(err, errlen, "credentials: IMDS: no IAM role attached to this instance");
                r = -EACCES;
                goto out;
        }
        r = (*ret = strndup(resp.body, n)) ? 0 : -ENOMEM;
out:
        http_response_clear(&resp);
        return r;
}

static int from_imds(struct aws_auth *a, struct aws_creds **ret, char *err, size_t errlen)
{
        struct imds m = { .a = a, .base = a->cfg->imds_endpoint ? a->cfg->imds_endpoint : DEFAULT_IMDS };
        struct http_response resp = { 0 };
        const char *off = env("AWS_EC2_METADATA_DISABLED");
        char *role = NULL, *esc = NULL, *path = NULL;
        int r;

        if (off && strcasecmp(off, "true") == 0)
                return -ENOENT;
        if ((r = imds_session(&m, err, errlen)) < 0 || (r = imds_role(&m, &role, err, errlen)) < 0)
                goto out;
        if (!(esc = http_escape(role)) ||
            asprintf(&path, "/latest/meta-data/iam/security-credentials/%s", esc) < 0) {
                path = NULL;
                r = -ENOMEM;
                goto out;
        }
        if ((r = imds_do(&m, "GET", path, m.token_header, &resp, err, errlen)) == 0)
                r = creds_from_json(&resp, "IMDS", ret, err, errlen);
out:
        http_response_clear(&resp);
        secret_free(m.token_header);
        free(role);
        free(esc);
        free(path);
        return r;
}

/* ---------------------------------------------------------------- the chain */

/* In the SDKs' order.  A source that is not set up here answers -ENOENT
 * and the next is tried; one that is set up but fails ends the search, as
 * in the SDKs (a broken web identity must not fall through to IMDS). */
static int default_chain(struct aws_auth *a, struct aws_creds **ret, char *err, size_t errlen)
{
        char imds_err[256] = "";
        int r;

        if ((r = from_env(ret)) != -ENOENT)
                return r;
        if ((r = from_shared_files(&a->cfg->auth, ret, err, errlen)) != -ENOENT)
                return r;
        if ((r = from_web_identity(a, ret, err, errlen)) != -ENOENT)
                return r;
        if ((r = from_container(a, ret, err, errlen)) != -ENOENT)
                return r;
        r = from_imds(a, ret, imds_err, sizeof(imds_err));
        if (r == -ENOENT || (r < 0 && r != -ENOMEM && r != -EAGAIN)) {
                const char *why = imds_err;

                if (strncmp(why, CRED_PREFIX, strlen(CRED_PREFIX)) == 0)
                        why += strlen(CRED_PREFIX);
                set_err(err, errlen, "credentials: none found (environment, shared files, web identity, "
                        "container, IMDS%s%s)", why[0] ? " -- " : "", why);
                return -EACCES;
        }
        if (r < 0)
                set_err(err, errlen, "%s", imds_err);
        return r;
}

static int resolve(struct aws_auth *a, struct aws_creds **ret, char *err, size_t errlen)
{
        struct aws_creds *source = NULL;
        int r;

        switch (a->cfg->auth.method) {
        case AUTH_AWS_STATIC:
                return from_static(&a->cfg->auth, ret, err, errlen);
        case AUTH_AWS_DEFAULT:
                return default_chain(a, ret, err, errlen);
        case AUTH_AWS_ASSUME_ROLE:
                if ((r = default_chain(a, &source, err, errlen)) < 0)
                        return r;
                r = assume_role(a, source, ret, err, errlen);
                aws_creds_free(source);
                return r;
        default:
                set_err(err, errlen, "credentials: not an AWS auth method");
                return -EINVAL;
        }
}

/* When to look again: temporary credentials REFRESH_MARGIN_S before they
 * expire (half-way when they already live shorter than that), others
 * after STATIC_RECHECK_S. */
static int64_t refresh_at_ms(const struct aws_creds *c)
{
        int64_t left, wait;

        if (!c->expires_at)
                return now_mono_ms() + STATIC_RECHECK_S * 1000;
        left = c->expires_at - now_wall();
        wait = left > 2 * REFRESH_MARGIN_S ? left - REFRESH_MARGIN_S : left / 2;
        return now_mono_ms() + (wait > 0 ? wait * 1000 : 0);
}

static bool still_valid(const struct aws_creds *c)
{
        return c && (!c->expires_at || c->expires_at > now_wall());
}

/* Called with the lock held. */
static int refresh(struct aws_auth *a, bool *ret_fresh, char *err, size_t errlen)
{
        struct aws_creds *c = NULL;
        int r = resolve(a, &c, err, errlen);

        if (r < 0) {
                /* A failed early refresh keeps what still works. */
                if (r != -ENOMEM && still_valid(a->cached) && a->cached->expires_at) {
                        log_warning(NULL, "aws: refreshing %s credentials failed, using the current ones: %s",
                                    a->cached->source, err);
                        return 0;
                }
                return r;
        }
        if (!a->cached || !streq(a->cached->source, c->source))
                log_debug(NULL, "aws: credentials from %s", c->source);
        aws_creds_free(a->cached);
        a->cached = c;
        a->refresh_at_ms = refresh_at_ms(c);
        *ret_fresh = true;
        return 0;
}

int aws_auth_get(struct aws_auth *a, struct aws_creds **ret, bool *ret_fresh, char *err, size_t errlen)
{
        bool fresh = false;
        int r = 0;

        pthread_mutex_lock(&a->lock);
        if (!a->cached || now_mono_ms() >= a->refresh_at_ms)
                r = refresh(a, &fresh, err, errlen);
        if (r == 0)
                r = creds_copy(a->cached, ret);
        pthread_mutex_unlock(&a->lock);
        if (r == 0 && ret_fresh)
                *ret_fresh = fresh;
        return r;
}

void aws_auth_invalidate(struct aws_auth *a)
{
        pthread_mutex_lock(&a->lock);
        a->cached = aws_creds_free(a->cached);
        a->refresh_at_ms = 0;
        pthread_mutex_unlock(&a->lock);
}

int aws_auth_new(const struct cfg_store *cfg, const char *region, struct http_client *http,
                 struct aws_auth **ret)
{
        struct aws_auth *a = calloc(1, sizeof(*a));

        if (!a)
                return -ENOMEM;
        a->cfg = cfg;
        a->region = region;
        a->http = http;
        pthread_mutex_init(&a->lock, NULL);
        *ret = a;
        return 0;
}

struct aws_auth *aws_auth_free(struct aws_auth *a)
{
        if (!a)
                return NULL;
        aws_creds_free(a->cached);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return NULL;
}
