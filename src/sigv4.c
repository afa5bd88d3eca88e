/* sigv4.c: AWS Signature Version 4 (canonical request, string to sign,
 * signing key, Authorization header) with libcrypto's HMAC-SHA256. */
#include "sigv4.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "secret.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SHA256_LEN 32

/* ---- hashing ---------------------------------------------------------- */

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 0xf];
        }
        out[2 * n] = '\0';
}

int sigv4_sha256_hex(const void *data, size_t len, char out[SIGV4_SHA256_HEX_LEN + 1])
{
        unsigned char md[SHA256_LEN];
        unsigned int mdlen = 0;

        if (!EVP_Digest(len ? data : "", len, md, &mdlen, EVP_sha256(), NULL) ||
            mdlen != SHA256_LEN)
                return -EIO;
        hex_encode(md, sizeof(md), out);
        return 0;
}

static int hmac_sha256(const void *key, size_t key_len, const char *msg,
                       unsigned char out[SHA256_LEN])
{
        unsigned int len = 0;

        if (key_len > INT32_MAX)
                return -EINVAL;
        if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg,
                  strlen(msg), out, &len) || len != SHA256_LEN)
                return -EIO;
        return 0;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request").  Every intermediate is a usable key, so all are wiped. */
static int derive_signing_key(const char *secret, const char *date,
                              const struct sigv4_params *p, unsigned char key[SHA256_LEN])
{
        size_t n = strlen(secret);
        unsigned char t[SHA256_LEN];
        char *k;
        int r;

        k = malloc(n + 5);
        if (!k)
                return -ENOMEM;
        memcpy(k, "AWS4", 4);
        memcpy(k + 4, secret, n + 1);
        r = hmac_sha256(k, n + 4, date, key);
        if (r == 0)
                r = hmac_sha256(key, SHA256_LEN, p->region, t);
        if (r == 0)
                r = hmac_sha256(t, SHA256_LEN, p->service, key);
        if (r == 0)
                r = hmac_sha256(key, SHA256_LEN, "aws4_request", t);
        if (r == 0)
                memcpy(key, t, SHA256_LEN);
        secret_wipe(t, sizeof(t));
        secret_free(k);
        return r;
}

/* ---- URI encoding ------------------------------------------------------ */

enum encoding {
        ENC_QUERY,              /* everything but unreserved */
        ENC_PATH,               /* '/' kept too; '%' encoded again */
        ENC_PATH_ONCE,          /* S3: the path is already encoded, '%' kept */
};

static bool is_unreserved(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
               (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

static void uri_encode(struct secret_buf *b, const char *s, size_t n, enum encoding mode)
{
        static const char digits[] = "0123456789ABCDEF";

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                if (is_unreserved(c) || (c == '/' && mode != ENC_QUERY) ||
                    (c == '%' && mode == ENC_PATH_ONCE)) {
                        secret_buf_addc(b, (char)c);
                } else {
                        char e[3] = { '%', digits[c >> 4], digits[c & 0xf] };
                        secret_buf_add(b, e, sizeof(e));
                }
        }
}

static int hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Query components arrive encoded however the caller chose ("%7e", raw
 * UTF-8); decoding first and encoding again gives the one canonical form.
 * A '%' not followed by two hex digits is taken literally. */
static char *canonical_query_component(const char *s, size_t n)
{
        struct secret_buf raw = { 0 }, enc = { 0 };
        char *ret = NULL;

        for (size_t i = 0; i < n; i++) {
                int hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
                int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;

                if (s[i] == '%' && hi >= 0 && lo >= 0) {
                        secret_buf_addc(&raw, (char)(hi << 4 | lo));
                        i += 2;
                } else {
                        secret_buf_addc(&raw, s[i]);
                }
        }
        uri_encode(&enc, raw.p, raw.len, ENC_QUERY);
        if (raw.failed || secret_buf_take(&enc, &ret) < 0)
                ret = NULL;
        secret_buf_done(&raw);
        secret_buf_done(&enc);
        return ret;
}

/* ---- canonical URI ------------------------------------------------------ */

struct span {
        const char *s;
        size_t n;
};

static bool span_is(struct span s, const char *lit)
{
        return s.n == strlen(lit) && memcmp(s.s, lit, s.n) == 0;
}

/* RFC 3986 remove_dot_segments, plus dropping empty segments ("//"), which
 * is what the AWS SDKs do.  A trailing '/' (or trailing "." / "..") keeps
 * the result a directory: "/a/b/.." is "/a/". */
static int normalize_path(const char *path, size_t n, struct secret_buf *out)
{
        size_t max = 1, top = 0, i, start;
        bool trailing = false;
        struct span *seg;

        for (i = 0; i < n; i++)
                max += path[i] == '/';
        seg = calloc(max, sizeof(*seg));
        if (!seg)
                return -ENOMEM;
        for (start = 0; start <= n; start = i + 1) {
                struct span s = { path + start, 0 };

                for (i = start; i < n && path[i] != '/'; i++)
                        ;
                s.n = i - start;
                trailing = s.n == 0 || span_is(s, ".") || span_is(s, "..");
                if (span_is(s, ".."))
                        top -= top > 0;
                else if (!trailing)
                        seg[top++] = s;
        }
        for (i = 0; i < top; i++) {
                secret_buf_addc(out, '/');
                secret_buf_add(out, seg[i].s, seg[i].n);
        }
        if (top == 0 || trailing)
                secret_buf_addc(out, '/');
        free(seg);
        return 0;
}

static int canonical_uri(struct secret_buf *out, const char *path, size_t n,
                         const struct sigv4_params *p)
{
        enum encoding mode = strcmp(p->service, "s3") == 0 ? ENC_PATH_ONCE : ENC_PATH;
        struct secret_buf norm = { 0 };
        int r;

        if (!(p->flags & SIGV4_NORMALIZE_PATH)) {
                uri_encode(out, path, n, mode);
                return 0;
        }
        r = normalize_path(path, n, &norm);
        if (r == 0)
                uri_encode(out, norm.p, norm.len, mode);
        if (norm.failed)
                r = -ENOMEM;
        secret_buf_done(&norm);
        return r;
}

/* ---- canonical query string -------------------------------------------- */

struct param {
        char *key;              /* canonically encoded */
        char *value;
};

static int param_cmp(const void *a, const void *b)
{
        const struct param *x = a, *y = b;
        int c = strcmp(x->key, y->key);

        return c ? c : strcmp(x->value, y->value);
}

static void params_free(struct param *v, size_t n)
{
        for (size_t i = 0; v && i < n; i++) {
                secret_free(v[i].key);
                secret_free(v[i].value);
        }
        free(v);
}

/* "a=1&b&&c=" gives a=1, b=, c=: a key without '=' has an empty value and
 * empty components are dropped. */
static int parse_query(const char *q, struct param **ret, size_t *ret_n)
{
        size_t max = 1, n = 0;
        struct param *v;

        for (const char *c = q; *c; c++)
                max += *c == '&';
        v = calloc(max, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (; *q; q += q[0] == '&') {
                size_t len = strcspn(q, "&");
                const char *eq = memchr(q, '=', len);
                size_t klen = eq ? (size_t)(eq - q) : len;

                if (len == 0)
                        continue;
                v[n].key = canonical_query_component(q, klen);
                v[n].value = canonical_query_component(q + klen + !!eq, len - klen - !!eq);
                n++;
                if (!v[n - 1].key || !v[n - 1].value) {
                        params_free(v, n);
                        return -ENOMEM;
                }
                q += len;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static int canonical_query(struct secret_buf *out, const char *q)
{
        struct param *v = NULL;
        size_t n = 0;
        int r;

        r = parse_query(q, &v, &n);
        if (r < 0)
                return r;
        qsort(v, n, sizeof(*v), param_cmp);
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        secret_buf_addc(out, '&');
                secret_buf_adds(out, v[i].key);
                secret_buf_addc(out, '=');
                secret_buf_adds(out, v[i].value);
        }
        params_free(v, n);
        return 0;
}

/* ---- canonical headers ------------------------------------------------- */

struct header {
        char *name;             /* lowercase */
        char *value;            /* trimmed, whitespace runs collapsed */
        size_t order;           /* as given: values of one name keep it */
};

static bool is_lws(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Trim, and collapse every run of whitespace, obs-fold line breaks included,
 * to one space ("value1\n  value2" signs as "value1 value2"). */
static char *canonical_value(const char *v)
{
        struct secret_buf b = { 0 };
        bool gap = false;
        char *ret;

        for (; *v; v++) {
                if (is_lws(*v)) {
                        gap = b.len > 0;
                        continue;
                }
                if (gap)
                        secret_buf_addc(&b, ' ');
                gap = false;
                secret_buf_addc(&b, *v);
        }
        return secret_buf_take(&b, &ret) < 0 ? NULL : ret;
}

static int header_set(struct header *h, size_t order, const char *name, size_t name_len,
                      const char *value)
{
        h->order = order;
        h->name = strndup(name, name_len);
        h->value = canonical_value(value);
        if (!h->name || !h->value)
                return -ENOMEM;
        for (char *c = h->name; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char)(*c - 'A' + 'a');
        return 0;
}

/* "Name: value".  A name with whitespace or control characters would break
 * the line-oriented canonical form, so it is refused, not repaired. */
static int header_parse(const char *line, struct header *h, size_t order)
{
        const char *colon = strchr(line, ':');

        if (!colon || colon == line)
                return -EINVAL;
        for (const char *c = line; c < colon; c++)
                if ((unsigned char)*c <= ' ' || *c == 0x7f)
                        return -EINVAL;
        return header_set(h, order, line, (size_t)(colon - line), colon + 1);
}

static int header_cmp(const void *a, const void *b)
{
        const struct header *x = a, *y = b;
        int c = strcmp(x->name, y->name);

        if (c)
                return c;
        return x->order < y->order ? -1 : x->order > y->order;
}

static void headers_free(struct header *h, size_t n)
{
        for (size_t i = 0; h && i < n; i++) {
                secret_free(h[i].name);
                secret_free(h[i].value);
        }
        free(h);
}

static bool signs_token(const struct sigv4_credentials *cr, const struct sigv4_params *p)
{
        return cr->session_token && cr->session_token[0] &&
               !(p->flags & SIGV4_OMIT_SESSION_TOKEN);
}

/* The headers the signature adds: the caller sends them after signing. */
static int add_own_headers(struct header *h, size_t *n, const struct sigv4_credentials *cr,
                           const struct sigv4_params *p, const char *payload_hash)
{
        int r;

        r = header_set(&h[*n], *n, "x-amz-date", 10, p->amz_date);
        ++*n;
        if (r == 0 && signs_token(cr, p)) {
                r = header_set(&h[*n], *n, "x-amz-security-token", 20, cr->session_token);
                ++*n;
        }
        if (r == 0 && (p->flags & SIGV4_SIGN_BODY)) {
                r = header_set(&h[*n], *n, "x-amz-content-sha256", 20, payload_hash);
                ++*n;
        }
        return r;
}

/* A caller's copy of a header the signer adds would be signed twice (as
 * "a,b"), and Authorization is never signed: both are caller bugs. */
static bool header_is_own(const struct header *h, size_t n_own, const char *name)
{
        if (strcmp(name, "authorization") == 0)
                return true;
        for (size_t i = 0; i < n_own; i++)
                if (strcmp(h[i].name, name) == 0)
                        return true;
        return false;
}

static int collect_headers(const struct sigv4_request *req, const struct sigv4_credentials *cr,
                           const struct sigv4_params *p, const char *payload_hash,
                           struct header **ret, size_t *ret_n)
{
        size_t n = 0, k = 0, own;
        struct header *h;
        int r;

        while (req->headers && req->headers[n])
                n++;
        h = calloc(n + 3, sizeof(*h));
        if (!h)
                return -ENOMEM;
        r = add_own_headers(h, &k, cr, p, payload_hash);
        own = k;
        for (size_t i = 0; r == 0 && i < n; i++, k++) {
                r = header_parse(req->headers[i], &h[k], k);
                if (r == 0 && header_is_own(h, own, h[k].name))
                        r = -EINVAL;
        }
        if (r < 0) {
                headers_free(h, n + 3);
                return r;
        }
        qsort(h, k, sizeof(*h), header_cmp);
        *ret = h;
        *ret_n = k;
        return 0;
}

/* One "name:v1,v2\n" line per name (values in the order given), and the
 * ';'-joined names for SignedHeaders.  `h` is sorted. */
static void emit_headers(struct secret_buf *canon, struct secret_buf *names, const struct header *h, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                bool first = i == 0 || strcmp(h[i].name, h[i - 1].name) != 0;
                bool last = i + 1 == n || strcmp(h[i].name, h[i + 1].name) != 0;

                if (first) {
                        secret_buf_adds(canon, h[i].name);
                        secret_buf_addc(canon, ':');
                        if (names->len > 0)
                                secret_buf_addc(names, ';');
                        secret_buf_adds(names, h[i].name);
                } else {
                        secret_buf_addc(canon, ',');
                }
                secret_buf_adds(canon, h[i].value);
                if (last)
                        secret_buf_addc(canon, '\n');
        }
}

/* ---- the signature ----------------------------------------------------- */

/* Method, canonical URI and canonical query, each ending its line. */
static int append_target(struct secret_buf *b, const struct sigv4_request *req,
                         const struct sigv4_params *p)
{
        const char *query = strchr(req->path, '?');
        size_t path_len = query ? (size_t)(query - req->path) : strlen(req->path);
        int r;

        secret_buf_adds(b, req->method);
        secret_buf_addc(b, '\n');
        r = canonical_uri(b, req->path, path_len, p);
        secret_buf_addc(b, '\n');
        if (r == 0)
                r = canonical_query(b, query ? query + 1 : "");
        secret_buf_addc(b, '\n');
        return r;
}

static int build_canonical_request(const struct sigv4_request *req,
                                   const struct sigv4_credentials *cr,
                                   const struct sigv4_params *p, char **ret_creq,
                                   char **ret_signed_headers)
{
        char hash[SIGV4_SHA256_HEX_LEN + 1];
        struct secret_buf b = { 0 }, names = { 0 };
        struct header *h = NULL;
        size_t n = 0;
        int r;

        r = sigv4_sha256_hex(req->body, req->body_len, hash);
        if (r == 0)
                r = collect_headers(req, cr, p, hash, &h, &n);
        if (r < 0)
                return r;
        r = append_target(&b, req, p);
        emit_headers(&b, &names, h, n);
        secret_buf_addc(&b, '\n');
        secret_buf_adds(&b, names.p ? names.p : "");
        secret_buf_addc(&b, '\n');
        secret_buf_adds(&b, hash);
        headers_free(h, n);
        if (r == 0)
                r = secret_buf_take(&b, ret_creq);
        if (r == 0 && (r = secret_buf_take(&names, ret_signed_headers)) < 0)
                *ret_creq = secret_free(*ret_creq);
        secret_buf_done(&b);
        secret_buf_done(&names);
        return r;
}

static void append_scope(struct secret_buf *b, const struct sigv4_params *p)
{
        secret_buf_add(b, p->amz_date, 8);
        secret_buf_addc(b, '/');
        secret_buf_adds(b, p->region);
        secret_buf_addc(b, '/');
        secret_buf_adds(b, p->service);
        secret_buf_adds(b, "/aws4_request");
}

static int build_string_to_sign(const char *creq, const struct sigv4_params *p, char **ret)
{
        char hash[SIGV4_SHA256_HEX_LEN + 1];
        struct secret_buf b = { 0 };
        int r;

        r = sigv4_sha256_hex(creq, strlen(creq), hash);
        if (r < 0)
                return r;
        secret_buf_adds(&b, SIGV4_ALGORITHM "\n");
        secret_buf_adds(&b, p->amz_date);
        secret_buf_addc(&b, '\n');
        append_scope(&b, p);
        secret_buf_addc(&b, '\n');
        secret_buf_adds(&b, hash);
        return secret_buf_take(&b, ret);
}

static int compute_signature(const char *sts, const struct sigv4_credentials *cr,
                             const struct sigv4_params *p, char out[SIGV4_SHA256_HEX_LEN + 1])
{
        unsigned char key[SHA256_LEN], mac[SHA256_LEN];
        char date[9];
        int r;

        memcpy(date, p->amz_date, 8);
        date[8] = '\0';
        r = derive_signing_key(cr->secret_access_key, date, p, key);
        if (r == 0)
                r = hmac_sha256(key, sizeof(key), sts, mac);
        if (r == 0)
                hex_encode(mac, sizeof(mac), out);
        secret_wipe(key, sizeof(key));
        return r;
}

static int build_authorization(const struct sigv4_credentials *cr, const struct sigv4_params *p,
                               const char *signed_headers, const char *signature, char **ret)
{
        struct secret_buf b = { 0 };

        secret_buf_adds(&b, SIGV4_ALGORITHM " Credential=");
        secret_buf_adds(&b, cr->access_key_id);
        secret_buf_addc(&b, '/');
        append_scope(&b, p);
        secret_buf_adds(&b, ", SignedHeaders=");
        secret_buf_adds(&b, signed_headers);
        secret_buf_adds(&b, ", Signature=");
        secret_buf_adds(&b, signature);
        return secret_buf_take(&b, ret);
}

/* ---- entry points ------------------------------------------------------- */

/* Method, key id, region and service end up between '\n', '/', ',' or ' '
 * separators, so none of those may hide inside them. */
static bool is_token(const char *s)
{
        return s && s[0] && !strpbrk(s, " \t\r\n/,;=");
}

static bool amz_date_valid(const char *d)
{
        if (!d || strlen(d) != SIGV4_AMZ_DATE_LEN || d[8] != 'T' || d[15] != 'Z')
                return false;
        for (int i = 0; i < 15; i++)
                if (i != 8 && (d[i] < '0' || d[i] > '9'))
                        return false;
        return true;
}

static int validate(const struct sigv4_request *req, const struct sigv4_credentials *cr,
                    const struct sigv4_params *p)
{
        if (!req || !cr || !p)
                return -EINVAL;
        if (!is_token(req->method) || !req->path || req->path[0] != '/' ||
            (req->body_len > 0 && !req->body))
                return -EINVAL;
        if (!is_token(cr->access_key_id) || !cr->secret_access_key || !cr->secret_access_key[0])
                return -EINVAL;
        if (!is_token(p->region) || !is_token(p->service) || !amz_date_valid(p->amz_date))
                return -EINVAL;
        return 0;
}

int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cr,
               const struct sigv4_params *p, char **ret_authorization,
               char **ret_canonical_request, char **ret_string_to_sign)
{
        char *creq = NULL, *signed_headers = NULL, *sts = NULL, *auth = NULL;
        char signature[SIGV4_SHA256_HEX_LEN + 1];
        int r;

        r = ret_authorization ? validate(req, cr, p) : -EINVAL;
        if (r == 0)
                r = build_canonical_request(req, cr, p, &creq, &signed_headers);
        if (r == 0)
                r = build_string_to_sign(creq, p, &sts);
        if (r == 0)
                r = compute_signature(sts, cr, p, signature);
        if (r == 0)
                r = build_authorization(cr, p, signed_headers, signature, &auth);
        if (r < 0)
                goto out;
        *ret_authorization = auth;
        auth = NULL;
        if (ret_canonical_request) {
                *ret_canonical_request = creq;
                creq = NULL;
        }
        if (ret_string_to_sign) {
                *ret_string_to_sign = sts;
                sts = NULL;
        }
out:
        secret_free(creq);
        secret_free(signed_headers);
        secret_free(sts);
        secret_free(auth);
        return r;
}

int sigv4_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1])
{
        char buf[SIGV4_AMZ_DATE_LEN + 8];
        struct tm tm;

        if (!gmtime_r(&t, &tm) ||
            strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm) != SIGV4_AMZ_DATE_LEN ||
            !amz_date_valid(buf))
                return -EOVERFLOW;
        memcpy(out, buf, SIGV4_AMZ_DATE_LEN + 1);
        return 0;
}
