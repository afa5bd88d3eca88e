/* http.h: the only door to libcurl.  TLS is always verified; answers are
 * capped; idempotent calls are retried on connection errors, 5xx and 429. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_BODY (1024 * 1024)

struct http_client;

struct http_request {
        const char *method;             /* "GET", "POST", "PUT", "DELETE" */
        const char *url;
        const char *const *headers;     /* NULL-terminated "Name: value"; may hold secrets, wiped after */
        const char *body;               /* may hold secrets: not copied, caller wipes */
        size_t body_len;
        const char *ca_file;            /* NULL: system store */
        bool idempotent;                /* retry on connection errors, 5xx, 429 */
        int max_attempts;               /* 0: default (4) */
};

struct http_response {
        long status;                    /* 0 when no answer arrived */
        char *body;                     /* NUL-terminated, wiped on free (may hold tokens) */
        size_t body_len;
        int64_t retry_after;            /* seconds, -1 when absent */
        char *www_authenticate;         /* NULL when absent */
        char *content_type;
        int sends;                      /* not idempotent: times it went on the wire, over all
                                         * attempts; 2+ when libcurl resent it after a reused
                                         * connection closed, so it may have been performed twice */
};

/* Timeouts in milliseconds; 0 picks the default (connect 10 s, total 30 s).
 * One client serves every thread: each request borrows one of its handles
 * (with the connections that handle keeps open), so as many exist as
 * requests were ever in flight at once; TLS sessions are shared by all. */
struct http_client *http_client_new(long connect_timeout_ms, long total_timeout_ms);
struct http_client *http_client_free(struct http_client *c);

/* Set an absolute monotonic deadline (now_mono_ms based, 0 = none) after
 * which no retry is started, for the requests of the calling thread:
 * --rotate-now's oneshot_timeout of the integration it works on. */
void http_set_deadline(int64_t deadline_ms);

/* Perform the request.  Returns 0 when an HTTP answer arrived (any status,
 * in resp->status), or a negative code when none did: -ETIMEDOUT,
 * -ECONNREFUSED/-ECONNRESET (connection), -EPROTO (TLS verification
 * failed), -EFBIG (answer over HTTP_MAX_BODY).  On failure *errbuf (if
 * non-NULL, size errlen) describes the transport error.  resp is always
 * safe to pass to http_response_clear(). */
int http_do(struct http_client *c, const struct http_request *req,
            struct http_response *resp, char *errbuf, size_t errlen);

void http_response_clear(struct http_response *r);

/* Percent-encode for a path segment or query value (RFC 3986 unreserved kept). */
char *http_escape(const char *s);

/* A 429 from a host holds back every request to that host, from every
 * thread, until its Retry-After (or backoff) has passed: the whole pool
 * slows down instead of each worker hammering on its own. */

/* Total requests sent (for the benchmark and tests). */
uint64_t http_request_count(void);
