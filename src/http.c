/* http.c: the only file that calls libcurl.  A client is shared by every
 * thread of the process: it lends each request one of its easy handles, so
 * open connections are reused, and its handles share TLS sessions and DNS;
 * every option checked; answers capped; idempotent calls retried with
 * capped, jittered backoff. */
#include "autoconfig.h"
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "duration.h"
#include "secret.h"
#include "stop.h"

#define DEFAULT_ATTEMPTS 4
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS 5000

/* One easy handle and the connections it keeps open. */
struct conn {
        CURL *easy;
        struct conn *next;
};

struct http_client {
        pthread_mutex_t lock;
        struct conn *idle;              /* not lent out; the last returned first, its connections warm */
        CURLSH *share;                  /* TLS sessions and DNS answers of all the handles */
        pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
        long connect_ms;
        long total_ms;
};

/* The calling thread's deadline (see http_set_deadline). */
static _Thread_local int64_t thread_deadline_ms;

static atomic_uint_fast64_t requests_sent;

/* Per host (scheme://host:port), the monotonic time before which no request
 * is sent there, shared by every client in the process: set by a 429. */
#define GATE_HOSTS 32
struct gate {
        char host[256];
        int64_t not_before_ms;
};
static struct gate gates[GATE_HOSTS];
static size_t n_gates;
static pthread_mutex_t gates_lock = PTHREAD_MUTEX_INITIALIZER;

static int on_progress(void *p, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
        (void)p; (void)dlt; (void)dln; (void)ult; (void)uln;
        return stop_requested_now() ? 1 : 0;
}

uint64_t http_request_count(void)
{
        return atomic_load(&requests_sent);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
        struct http_client *c = userp;

        (void)h; (void)access;
        pthread_mutex_lock(&c->share_lock[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userp)
{
        struct http_client *c = userp;

        (void)h;
        pthread_mutex_unlock(&c->share_lock[data]);
}

static CURLcode curl_ready = CURLE_FAILED_INIT;

static void init_curl(void)
{
        curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct http_client *http_client_new(long connect_timeout_ms, long total_timeout_ms)
{
        static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
        struct http_client *c;
        size_t i;

        pthread_once(&curl_once, init_curl);
        if (curl_ready != CURLE_OK)
                return NULL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        pthread_mutex_init(&c->lock, NULL);
        for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
                pthread_mutex_init(&c->share_lock[i], NULL);
        c->share = curl_share_init();
        if (!c->share ||
            curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
            curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
            curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) != CURLSHE_OK ||
            curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
            curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
                return http_client_free(c);
        c->connect_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 10000;
        c->total_ms = total_timeout_ms > 0 ? total_timeout_ms : 30000;
        return c;
}

struct http_client *http_client_free(struct http_client *c)
{
        struct conn *k, *next;
        size_t i;

        if (!c)
                return NULL;
        for (k = c->idle; k; k = next) {
                next = k->next;
                curl_easy_cleanup(k->easy);
                free(k);
        }
        if (c->share)
                curl_share_cleanup(c->share);
        for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
                pthread_mutex_destroy(&c->share_lock[i]);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

void http_set_deadline(int64_t deadline_ms)
{
        thread_deadline_ms = deadline_ms;
}

/* A handle for one request: an idle one (its connections stay open between
 * requests) or a new one; as many exist as requests were ever in flight. */
static struct conn *conn_take(struct http_client *c)
{
        struct conn *k;

        pthread_mutex_lock(&c->lock);
        k = c->idle;
        if (k)
                c->idle = k->next;
        pthread_mutex_unlock(&c->lock);
        if (k)
                return k;
        k = calloc(1, sizeof(*k));
        if (!k)
                return NULL;
        k->easy = curl_easy_init();
        /* Kept across curl_easy_reset(), like the connections. */
        if (!k->easy || curl_easy_setopt(k->easy, CURLOPT_SHARE, c->share) != CURLE_OK) {
                curl_easy_cleanup(k->easy);
                free(k);
                return NULL;
        }
        return k;
}

static void conn_give_back(struct http_client *c, struct conn *k)
{
        pthread_mutex_lock(&c->lock);
        k->next = c->idle;
        c->idle = k;
        pthread_mutex_unlock(&c->lock);
}

void http_response_clear(struct http_response *r)
{
        if (!r)
                return;
        if (r->body) {
                explicit_bzero(r->body, r->body_len);
                free(r->body);
        }
        free(r->www_authenticate);
        free(r->content_type);
        memset(r, 0, sizeof(*r));
        r->retry_after = -1;
}

struct sink {
        struct http_response *resp;
        const char *method;
        size_t cap;
        bool too_big;
};

/* Only counts request lines going out; never looks at (or keeps) the
 * headers and bodies, which hold secrets. */
static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *userdata)
{
        struct sink *s = userdata;
        size_t n = strlen(s->method);

        (void)h;
        if (type == CURLINFO_HEADER_OUT && size > n && memcmp(data, s->method, n) == 0 && data[n] == ' ')
                s->resp->sends++;
        return 0;
}

/* Grow in doubling steps; the old buffer may hold a token, so wipe it. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct sink *s = userdata;
        struct http_response *r = s->resp;
        size_t n = size * nmemb;

        if (r->body_len + n > HTTP_MAX_BODY) {
                s->too_big = true;
                return 0;
        }
        if (r->body_len + n + 1 > s->cap) {
                size_t cap = s->cap ? s->cap : 4096;
                char *nb;
                while (cap < r->body_len + n + 1)
                        cap *= 2;
                nb = malloc(cap);
                if (!nb)
                        return 0;
                if (r->body) {
                        memcpy(nb, r->body, r->body_len);
                        explicit_bzero(r->body, s->cap);
                        free(r->body);
                }
                r->body = nb;
                s->cap = cap;
        }
        memcpy(r->body + r->body_len, data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return n;
}

static char *header_value(const char *line, size_t len, const char *name)
{
        size_t nl = strlen(name);
        const char *v, *end = line + len;

        if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
                return NULL;
        v = line + nl + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
                end--;
        return strndup(v, (size_t)(end - v));
}

static void keep_header(char **slot, char *value)
{
        if (!value)
                return;
        free(*slot);
        *slot = value;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct http_response *r = userdata;
        size_t n = size * nmemb;
        char *v;

        /* A new status line (after 100 Continue or a redirect) starts afresh. */
        if (n > 5 && strncmp(data, "HTTP/", 5) == 0) {
                r->retry_after = -1;
                return n;
        }
        keep_header(&r->www_authenticate, header_value(data, n, "WWW-Authenticate"));
        keep_header(&r->content_type, header_value(data, n, "Content-Type"));
        v = header_value(data, n, "Retry-After");
        if (v) {
                int64_t secs;
                if (retry_after_parse(v, now_wall(), &secs) == 0)
                        r->retry_after = secs;
                free(v);
        }
        return n;
}

static void slist_wipe_free(struct curl_slist *l)
{
        struct curl_slist *i;

        for (i = l; i; i = i->next)
                if (i->data)
                        explicit_bzero(i->data, strlen(i->data));
        curl_slist_free_all(l);
}

static int build_headers(const struct http_request *req, struct curl_slist **ret)
{
        struct curl_slist *l = NULL, *n;
        const char *const *h;

        /* No "Expect: 100-continue" round trip for our small bodies. */
        n = curl_slist_append(l, "Expect:");
        if (!n)
                goto fail;
        l = n;
        for (h = req->headers; h && *h; h++) {
                n = curl_slist_append(l, *h);
                if (!n)
                        goto fail;
                l = n;
        }
        *ret = l;
        return 0;
fail:
        slist_wipe_free(l);
        return -ENOMEM;
}

#define SETOPT(h, opt, val) \
        do { if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK) return -EINVAL; } while (0)

static int set_options(const struct http_client *c, CURL *h, const struct http_request *req,
                       struct curl_slist *headers, struct sink *sink, char *errbuf)
{
        curl_easy_reset(h);     /* keeps the connection and TLS session caches */
        SETOPT(h, CURLOPT_URL, req->url);
        SETOPT(h, CURLOPT_NOSIGNAL, 1L);
        SETOPT(h, CURLOPT_PROTOCOLS_STR, "https,http");
        SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
        SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
        SETOPT(h, CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(h, CURLOPT_SSL_VERIFYHOST, 2L);
        SETOPT(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        if (req->ca_file)
                SETOPT(h, CURLOPT_CAINFO, req->ca_file);
        SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
        SETOPT(h, CURLOPT_TIMEOUT_MS, c->total_ms);
        SETOPT(h, CURLOPT_ERRORBUFFER, errbuf);
        SETOPT(h, CURLOPT_USERAGENT, "patrol/" PACKAGE_VERSION);
        SETOPT(h, CURLOPT_HTTPHEADER, headers);
        SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
        SETOPT(h, CURLOPT_WRITEDATA, sink);
        SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
        SETOPT(h, CURLOPT_HEADERDATA, sink->resp);
        SETOPT(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        SETOPT(h, CURLOPT_NOPROGRESS, 0L);
        SETOPT(h, CURLOPT_CUSTOMREQUEST, req->method);
        /* Room for every host a rotation talks to (issuer, stores, their
         * token services), so none is reconnected for want of a slot. */
        SETOPT(h, CURLOPT_MAXCONNECTS, 16L);
        /* Our bodies are small: the 64 KiB default per handle is wasted. */
        SETOPT(h, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
        /* libcurl silently resends a request whose reused connection died
         * before an answer.  A call that is not idempotent (token create)
         * may then have been performed twice: count the sends so the caller
         * can tell.  (A fresh connection per create would avoid it, but costs
         * a TLS handshake, most of a rotation's CPU.) */
        if (!req->idempotent) {
                SETOPT(h, CURLOPT_DEBUGFUNCTION, on_debug);
                SETOPT(h, CURLOPT_DEBUGDATA, sink);
                SETOPT(h, CURLOPT_VERBOSE, 1L);
        }
        if (strcmp(req->method, "GET") == 0) {
                SETOPT(h, CURLOPT_HTTPGET, 1L);
        } else if (req->body) {
                SETOPT(h, CURLOPT_POSTFIELDS, req->body);
                SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        } else if (strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0) {
                SETOPT(h, CURLOPT_POSTFIELDS, "");
                SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        } else if (strcmp(req->method, "HEAD") == 0) {
                SETOPT(h, CURLOPT_NOBODY, 1L);
        }
        return 0;
}

static int errno_from_curl(CURLcode cc, bool too_big)
{
        if (too_big)
                return -EFBIG;
        switch (cc) {
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_ISSUER_ERROR:
                return -EPROTO;
        case CURLE_ABORTED_BY_CALLBACK:
                return -ECANCELED;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        default:
                return -EIO;
        }
}

static int perform_once(struct http_client *c, const struct http_request *req,
                        struct http_response *resp, char *errbuf, size_t errlen)
{
        char curl_err[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL;
        struct sink sink = { .resp = resp, .method = req->method };
        struct conn *k;
        CURLcode cc;
        int r;

        r = build_headers(req, &headers);
        if (r < 0)
                return r;
        k = conn_take(c);
        if (!k) {
                slist_wipe_free(headers);
                snprintf(errbuf, errlen, "out of memory");
                return -ENOMEM;
        }
        r = set_options(c, k->easy, req, headers, &sink, curl_err);
        if (r < 0) {
                snprintf(errbuf, errlen, "cannot set up the request");
                goto out;
        }
        atomic_fetch_add(&requests_sent, 1);
        cc = curl_easy_perform(k->easy);
        if (cc != CURLE_OK) {
                r = errno_from_curl(cc, sink.too_big);
                if (sink.too_big)
                        snprintf(errbuf, errlen, "answer larger than %d bytes", HTTP_MAX_BODY);
                else
                        snprintf(errbuf, errlen, "%s", curl_err[0] ? curl_err : curl_easy_strerror(cc));
                goto out;
        }
        curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &resp->status);
        r = 0;
out:
        /* The handle keeps no pointer to our headers or sink past this call
         * (closing a connection later would call on_debug). */
        curl_easy_setopt(k->easy, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(k->easy, CURLOPT_VERBOSE, 0L);
        curl_easy_setopt(k->easy, CURLOPT_DEBUGFUNCTION, NULL);
        curl_easy_setopt(k->easy, CURLOPT_DEBUGDATA, NULL);
        conn_give_back(c, k);
        slist_wipe_free(headers);
        return r;
}

/* Whether a failed attempt may be repeated.  A request that never reached
 * the server (connection refused) or was refused before being performed
 * (429) is safe to repeat even when it is not idempotent. */
static bool should_retry(const struct http_request *req, int r, long status)
{
        if (r == -ECONNREFUSED || (r == 0 && status == 429))
                return true;
        if (!req->idempotent)
                return false;
        if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EIO)
                return true;
        return r == 0 && status >= 500;
}

static int64_t backoff_ms(int attempt, int64_t retry_after)
{
        int64_t d = BACKOFF_BASE_MS << (attempt < 10 ? attempt : 10);

        if (d > BACKOFF_CAP_MS)
                d = BACKOFF_CAP_MS;
        d = d / 2 + random() % (d / 2 + 1);   /* jitter: half fixed, half random */
        if (retry_after >= 0 && retry_after * 1000 > d)
                d = retry_after * 1000;
        return d;
}

/* Sleeps in short slices so a stop request is noticed promptly. */
static void sleep_ms(int64_t ms)
{
        while (ms > 0 && !stop_requested_now()) {
                int64_t slice = ms > 200 ? 200 : ms;
                struct timespec ts = { .tv_sec = 0, .tv_nsec = slice * 1000000 };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                ms -= slice;
        }
}

/* ---- the per-host gate ---- */

/* "https://host:port" of url, the key of its gate. */
static int host_key(const char *url, char *buf, size_t size)
{
        const char *p = strstr(url, "://");
        size_t n;

        if (!p)
                return -EINVAL;
        p += 3;
        n = (size_t)(p - url) + strcspn(p, "/?#");
        if (n >= size)
                return -ENAMETOOLONG;
        memcpy(buf, url, n);
        buf[n] = '\0';
        return 0;
}

static void gate_hold(const char *url, int64_t ms)
{
        int64_t until = now_mono_ms() + ms;
        struct gate *g = NULL;
        char host[256];
        size_t i;

        if (host_key(url, host, sizeof(host)) < 0)
                return;
        pthread_mutex_lock(&gates_lock);
        for (i = 0; i < n_gates && !g; i++)
                if (strcmp(gates[i].host, host) == 0)
                        g = &gates[i];
        if (!g && n_gates < GATE_HOSTS)
                g = &gates[n_gates++];
        if (!g) {                                       /* full: reuse the stalest */
                g = &gates[0];
                for (i = 1; i < GATE_HOSTS; i++)
                        if (gates[i].not_before_ms < g->not_before_ms)
                                g = &gates[i];
        }
        if (strcmp(g->host, host) != 0) {
                snprintf(g->host, sizeof(g->host), "%s", host);
                g->not_before_ms = 0;
        }
        if (until > g->not_before_ms)
                g->not_before_ms = until;
        pthread_mutex_unlock(&gates_lock);
}

/* Wait until url's host may be sent to (no later than deadline_ms, when set). */
static void gate_wait(const char *url, int64_t deadline_ms)
{
        int64_t until = 0, now;
        char host[256];
        size_t i;

        if (host_key(url, host, sizeof(host)) < 0)
                return;
        pthread_mutex_lock(&gates_lock);
        for (i = 0; i < n_gates; i++)
                if (strcmp(gates[i].host, host) == 0)
                        until = gates[i].not_before_ms;
        pthread_mutex_unlock(&gates_lock);
        if (deadline_ms && until > deadline_ms)
                until = deadline_ms;
        now = now_mono_ms();
        if (until > now)
                sleep_ms(until - now);
}

int http_do(struct http_client *c, const struct http_request *req,
            struct http_response *resp, char *errbuf, size_t errlen)
{
        int attempts = req->max_attempts > 0 ? req->max_attempts : DEFAULT_ATTEMPTS;
        char scratch[CURL_ERROR_SIZE];
        int attempt, sends = 0, r = -EIO;

        memset(resp, 0, sizeof(*resp));
        resp->retry_after = -1;
        if (!errbuf || !errlen) {
                errbuf = scratch;
                errlen = sizeof(scratch);
        }
        errbuf[0] = '\0';
        if (!config_url_allowed(req->url)) {
                snprintf(errbuf, errlen, "refusing plain http to a non-loopback address");
                return -EINVAL;
        }
        for (attempt = 0; attempt < attempts; attempt++) {
                int64_t wait;

                if (stop_requested_now()) {
                        snprintf(errbuf, errlen, "interrupted: patrol is stopping");
                        return -ECANCELED;
                }
                if (attempt > 0)
                        http_response_clear(resp);
                gate_wait(req->url, thread_deadline_ms);
                r = perform_once(c, req, resp, errbuf, errlen);
                sends += resp->sends;
                wait = backoff_ms(attempt, r == 0 ? resp->retry_after : -1);
                /* The next attempt, ours or another thread's, waits at the gate. */
                if (r == 0 && resp->status == 429)
                        gate_hold(req->url, wait);
                if (attempt + 1 >= attempts || !should_retry(req, r, resp->status))
                        break;
                if (thread_deadline_ms && now_mono_ms() + wait > thread_deadline_ms)
                        break;
                if (!(r == 0 && resp->status == 429))
                        sleep_ms(wait);
        }
        resp->sends = sends;
        return r;
}

static bool unreserved(unsigned char ch)
{
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
               ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

char *http_escape(const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        char *out, *o;

        out = malloc(strlen(s) * 3 + 1);
        if (!out)
                return NULL;
        for (o = out; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (unreserved(ch)) {
                        *o++ = (char)ch;
                } else {
                        *o++ = '%';
                        *o++ = hex[ch >> 4];
                        *o++ = hex[ch & 15];
                }
        }
        *o = '\0';
        return out;
}
