/* test_sigv4.c: SigV4 against every case of AWS's public test suite
 * (tests/data/aws-sigv4, one cmocka test per folder), plus edge cases the
 * suite does not cover. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <json-c/json.h>

#include "secret.h"
#include "sigv4.h"

#define SUITE_SUBDIR "tests/data/aws-sigv4"

static const struct sigv4_credentials example_creds = {
        .access_key_id = "AKIDEXAMPLE",
        .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};

/* ---- reading a case folder ---------------------------------------------- */

static char *read_text(const char *dir, const char *name, size_t *ret_len)
{
        char path[4096];
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
                return NULL;
        f = fopen(path, "re");
        if (!f)
                return NULL;
        if (fseek(f, 0, SEEK_END) == 0 && ftell(f) >= 0) {
                len = (size_t)ftell(f);
                rewind(f);
                buf = malloc(len + 1);
                if (buf && fread(buf, 1, len, f) != len)
                        buf = (free(buf), NULL);
        }
        fclose(f);
        if (buf) {
                buf[len] = '\0';
                if (ret_len)
                        *ret_len = len;
        }
        return buf;
}

/* request.txt parsed in place: "METHOD target HTTP/1.1", header lines (a line
 * starting with whitespace continues the previous one), an empty line, body. */
struct http_request {
        char *buf;
        const char **headers;   /* NULL-terminated, pointing into buf */
        struct sigv4_request req;
};

static void http_request_free(struct http_request *h)
{
        free(h->buf);
        free(h->headers);
}

/* The target may hold spaces ("/example space/"), so the method ends at the
 * first space and the version starts at the last. */
static int parse_request_line(char *line, struct sigv4_request *req)
{
        char *sp1 = strchr(line, ' '), *sp2 = strrchr(line, ' ');

        if (!sp1 || sp2 == sp1)
                return -EBADMSG;
        *sp1 = *sp2 = '\0';
        req->method = line;
        req->path = sp1 + 1;
        return 0;
}

/* Cut the line at p; returns the next line, or NULL at the end of buf.  A
 * '\r' before the '\n' stays: the signer takes it as whitespace. */
static char *cut_line(char *p)
{
        char *nl = strchr(p, '\n');

        if (!nl)
                return NULL;
        *nl = '\0';
        return nl + 1;
}

static int parse_request(char *buf, size_t len, struct http_request *h)
{
        size_t n = 0, max = 2;
        char *line = buf, *next;

        for (char *c = buf; *c; c++)
                max += *c == '\n';
        h->headers = calloc(max, sizeof(*h->headers));
        if (!h->headers)
                return -ENOMEM;
        next = cut_line(line);
        if (parse_request_line(line, &h->req) < 0)
                return -EBADMSG;
        for (line = next; line && *line && *line != '\r' && *line != '\n'; line = next) {
                next = cut_line(line);
                if ((*line == ' ' || *line == '\t') && n > 0)
                        line[-1] = '\n';        /* obs-fold: rejoin, the signer unfolds */
                else
                        h->headers[n++] = line;
        }
        if (line && *line)
                line = cut_line(line);  /* the empty line; the body follows */
        h->req.headers = h->headers;
        h->req.body = line ? line : "";
        h->req.body_len = line ? len - (size_t)(line - buf) : 0;
        return 0;
}

/* context.json: credentials, region, service, timestamp and options. */
struct vector_context {
        struct json_object *root;
        struct sigv4_credentials cr;
        struct sigv4_params p;
        char amz_date[SIGV4_AMZ_DATE_LEN + 1];
};

static const char *json_str(struct json_object *o, const char *key)
{
        struct json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static bool json_flag(struct json_object *o, const char *key)
{
        struct json_object *v;

        return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

static int parse_timestamp(const char *s, time_t *ret)
{
        struct tm tm = { 0 };

        if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                         &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
                return -EBADMSG;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        *ret = timegm(&tm);
        return 0;
}

static int parse_context(const char *text, struct vector_context *c)
{
        struct json_object *creds;
        time_t when;

        c->root = json_tokener_parse(text);
        if (!c->root || !json_object_object_get_ex(c->root, "credentials", &creds))
                return -EBADMSG;
        c->cr.access_key_id = json_str(creds, "access_key_id");
        c->cr.secret_access_key = json_str(creds, "secret_access_key");
        c->cr.session_token = json_str(creds, "token");
        c->p.region = json_str(c->root, "region");
        c->p.service = json_str(c->root, "service");
        if (parse_timestamp(json_str(c->root, "timestamp"), &when) < 0 ||
            sigv4_amz_date(when, c->amz_date) < 0)
                return -EBADMSG;
        c->p.amz_date = c->amz_date;
        c->p.flags = (json_flag(c->root, "normalize") ? SIGV4_NORMALIZE_PATH : 0) |
                     (json_flag(c->root, "sign_body") ? SIGV4_SIGN_BODY : 0) |
                     (json_flag(c->root, "omit_session_token") ? SIGV4_OMIT_SESSION_TOKEN : 0);
        return 0;
}

/* ---- one test per case folder ----------------------------------------- */

struct vector {
        struct vector_context ctx;
        struct http_request http;
        char *canonical_request;        /* expected, from header-*.txt */
        char *string_to_sign;
        char *signature;
        char *signed_request;
        char *authorization;            /* expected, from the signed request */
        char *got_authorization;        /* here so that teardown frees them */
        char *got_canonical_request;    /* when an assertion jumps out */
        char *got_string_to_sign;
};

static int vector_teardown(void **state)
{
        struct vector *v = *state;

        if (v) {
                json_object_put(v->ctx.root);
                http_request_free(&v->http);
                free(v->canonical_request);
                free(v->string_to_sign);
                free(v->signature);
                free(v->signed_request);
                free(v->authorization);
                secret_free(v->got_authorization);
                secret_free(v->got_canonical_request);
                secret_free(v->got_string_to_sign);
                free(v);
        }
        *state = NULL;
        return 0;
}

/* The suite's signed request holds the full "Authorization:..." line. */
static char *expected_authorization(const char *signed_request)
{
        const char *a = signed_request ? strstr(signed_request, "\nAuthorization:") : NULL;

        if (!a)
                return NULL;
        a += strlen("\nAuthorization:");
        return strndup(a, strcspn(a, "\r\n"));
}

static int vector_load(struct vector *v, const char *dir)
{
        char *text = read_text(dir, "context.json", NULL);
        size_t len = 0;
        int r;

        v->http.buf = read_text(dir, "request.txt", &len);
        v->canonical_request = read_text(dir, "header-canonical-request.txt", NULL);
        v->string_to_sign = read_text(dir, "header-string-to-sign.txt", NULL);
        v->signature = read_text(dir, "header-signature.txt", NULL);
        v->signed_request = read_text(dir, "header-signed-request.txt", NULL);
        v->authorization = expected_authorization(v->signed_request);
        r = text && v->http.buf && v->canonical_request && v->string_to_sign &&
            v->signature && v->authorization ? 0 : -ENOENT;
        if (r == 0)
                r = parse_context(text, &v->ctx);
        if (r == 0)
                r = parse_request(v->http.buf, len, &v->http);
        free(text);
        return r;
}

/* A folder with a missing or unreadable file fails as "setup failed" under
 * its own name. */
static int vector_setup(void **state)
{
        const char *dir = *state;
        struct vector *v = calloc(1, sizeof(*v));

        *state = v;
        if (!v || vector_load(v, dir) < 0) {
                vector_teardown(state);
                return -1;
        }
        return 0;
}

static void test_vector(void **state)
{
        struct vector *v = *state;
        const char *sig;

        assert_int_equal(sigv4_sign(&v->http.req, &v->ctx.cr, &v->ctx.p, &v->got_authorization,
                                    &v->got_canonical_request, &v->got_string_to_sign), 0);
        assert_string_equal(v->got_canonical_request, v->canonical_request);
        assert_string_equal(v->got_string_to_sign, v->string_to_sign);
        sig = strstr(v->got_authorization, ", Signature=");
        assert_non_null(sig);
        assert_string_equal(sig + strlen(", Signature="), v->signature);
        assert_string_equal(v->got_authorization, v->authorization);
}

/* ---- edge cases the suite leaves out ------------------------------------ */

/* Sign a bare GET of `path` and return line `line` (0-based) of the
 * canonical request. */
static char *canonical_line(const char *path, const char *service, unsigned flags, int line)
{
        const char *const headers[] = { "Host:example.amazonaws.com", NULL };
        struct sigv4_request req = { .method = "GET", .path = path, .headers = headers };
        struct sigv4_params p = { "us-east-1", service, "20150830T123600Z", flags };
        char *auth = NULL, *creq = NULL, *s, *ret;

        assert_int_equal(sigv4_sign(&req, &example_creds, &p, &auth, &creq, NULL), 0);
        for (s = creq; line > 0; line--)
                s = strchr(s, '\n') + 1;
        ret = strndup(s, strcspn(s, "\n"));
        secret_free(auth);
        secret_free(creq);
        return ret;
}

static void assert_canonical_line(const char *path, const char *service, unsigned flags,
                                  int line, const char *want)
{
        char *got = canonical_line(path, service, flags, line);

        assert_string_equal(got, want);
        free(got);
}

/* The request line is already encoded for the wire; every service but S3
 * signs it encoded once more. */
static void test_path_double_encoding(void **state)
{
        (void)state;
        assert_canonical_line("/a%20b/c~d", "secretsmanager", SIGV4_NORMALIZE_PATH, 1, "/a%2520b/c~d");
        assert_canonical_line("/a%20b//./c", "s3", 0, 1, "/a%20b//./c");
        assert_canonical_line("/a b", "s3", 0, 1, "/a%20b");
        assert_canonical_line("/a/b/../c/.", "service", SIGV4_NORMALIZE_PATH, 1, "/a/c/");
        assert_canonical_line("/../..", "service", SIGV4_NORMALIZE_PATH, 1, "/");
}

/* Query pieces are decoded then encoded again, so any spelling of one value
 * signs the same; '+' is a plain character, not a space. */
static void test_query_canonical(void **state)
{
        (void)state;
        assert_canonical_line("/?b=%7e&a=x%2fy&c&&a=+", "service", 0, 2, "a=%2B&a=x%2Fy&b=~&c=");
        assert_canonical_line("/?k=%zz%4", "service", 0, 2, "k=%25zz%254");
        assert_canonical_line("/?", "service", 0, 2, "");
}

static void test_reject(void **state)
{
        const char *const dup_date[] = { "Host:h", "X-Amz-Date: 20150830T123600Z", NULL };
        const char *const auth_hdr[] = { "Authorization: x", NULL };
        const char *const no_colon[] = { "Host", NULL };
        const char *const space_name[] = { "Bad Name: x", NULL };
        const char *const *bad[] = { dup_date, auth_hdr, no_colon, space_name };
        struct sigv4_request req = { .method = "GET", .path = "/" };
        struct sigv4_params p = { "us-east-1", "service", "20150830T123600Z", 0 };
        char *out = (char *)"untouched";

        (void)state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                req.headers = bad[i];
                assert_int_equal(sigv4_sign(&req, &example_creds, &p, &out, &out, &out), -EINVAL);
        }
        req.headers = NULL;
        p.amz_date = "2015-08-30T12:36:00Z";
        assert_int_equal(sigv4_sign(&req, &example_creds, &p, &out, NULL, NULL), -EINVAL);
        p.amz_date = "20150830T123600Z";
        p.region = "us/east";
        assert_int_equal(sigv4_sign(&req, &example_creds, &p, &out, NULL, NULL), -EINVAL);
        assert_string_equal(out, "untouched");
}

/* With a token in hand but SIGV4_SIGN_BODY, the signer's headers sort in
 * among the caller's. */
static void test_own_headers(void **state)
{
        const struct sigv4_credentials cr = { "AKID", "secret", "tok" };
        const char *const headers[] = { "Host: h", "Zed: z", NULL };
        struct sigv4_request req = { "POST", "/", headers, "{}", 2 };
        struct sigv4_params p = { "eu-west-1", "secretsmanager", "20240101T000000Z", SIGV4_SIGN_BODY };
        char *auth = NULL;

        (void)state;
        assert_int_equal(sigv4_sign(&req, &cr, &p, &auth, NULL, NULL), 0);
        assert_non_null(strstr(auth, "Credential=AKID/20240101/eu-west-1/secretsmanager/aws4_request, "
                                     "SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
                                     "x-amz-security-token;zed, Signature="));
        secret_free(auth);
}

static void test_amz_date(void **state)
{
        char out[SIGV4_AMZ_DATE_LEN + 1] = "";

        (void)state;
        assert_int_equal(sigv4_amz_date(1440938160, out), 0);
        assert_string_equal(out, "20150830T123600Z");
        assert_int_equal(sigv4_amz_date((time_t)253402300800, out), -EOVERFLOW);  /* year 10000 */
        assert_string_equal(out, "20150830T123600Z");
}

static void test_sha256_hex(void **state)
{
        char out[SIGV4_SHA256_HEX_LEN + 1];

        (void)state;
        assert_int_equal(sigv4_sha256_hex(NULL, 0, out), 0);
        assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_int_equal(sigv4_sha256_hex("abc", 3, out), 0);
        assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* ---- the group --------------------------------------------------------- */

static int is_case_dir(const struct dirent *d)
{
        return d->d_name[0] != '.';
}

/* Every folder of the suite, sorted; an empty or missing suite is an error,
 * never a silent pass. */
static int find_cases(char *suite, size_t size, struct dirent ***ret)
{
        const char *srcdir = getenv("PATROL_SRCDIR");
        int n;

        snprintf(suite, size, "%s/" SUITE_SUBDIR, srcdir ? srcdir : ".");
        n = scandir(suite, ret, is_case_dir, alphasort);
        if (n <= 0)
                fprintf(stderr, "Bail out! no test cases in %s\n", suite);
        return n;
}

/* Fill tests[] from the case folders (README.md and other files skipped);
 * returns how many, or -1. */
static int add_cases(const char *suite, struct dirent **cases, int n, char (*dirs)[4096],
                     struct CMUnitTest *tests)
{
        struct stat st;
        int m = 0;

        for (int i = 0; i < n; i++) {
                if (snprintf(dirs[m], sizeof(dirs[m]), "%s/%s", suite, cases[i]->d_name) >=
                    (int)sizeof(dirs[m]))
                        return -1;
                if (stat(dirs[m], &st) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                tests[m] = (struct CMUnitTest){
                        .name = cases[i]->d_name,
                        .test_func = test_vector,
                        .setup_func = vector_setup,
                        .teardown_func = vector_teardown,
                        .initial_state = dirs[m],
                };
                m++;
        }
        return m;
}

int main(void)
{
        static const struct CMUnitTest fixed[] = {
                cmocka_unit_test(test_path_double_encoding),
                cmocka_unit_test(test_query_canonical),
                cmocka_unit_test(test_reject),
                cmocka_unit_test(test_own_headers),
                cmocka_unit_test(test_amz_date),
                cmocka_unit_test(test_sha256_hex),
        };
        const size_t n_fixed = sizeof(fixed) / sizeof(fixed[0]);
        char suite[4096], (*dirs)[4096];
        struct dirent **cases = NULL;
        int n = find_cases(suite, sizeof(suite), &cases), m, r = 99;

        if (n <= 0)
                return 99;
        dirs = calloc((size_t)n, sizeof(*dirs));
        struct CMUnitTest all[n_fixed + (size_t)n];     /* one test per case folder */
        memcpy(all, fixed, sizeof(fixed));
        m = dirs ? add_cases(suite, cases, n, dirs, all + n_fixed) : -1;
        if (m > 0) {
                /* A VLA sized to what was found, so that the macro's sizeof
                 * counts exactly the tests that exist. */
                struct CMUnitTest tests[n_fixed + (size_t)m];

                memcpy(tests, all, sizeof(tests));
                r = cmocka_run_group_tests(tests, NULL, NULL);
        } else {
                fprintf(stderr, "Bail out! no test case folders in %s\n", suite);
        }
        for (int i = 0; i < n; i++)
                free(cases[i]);
        free(cases);
        free(dirs);
        return r;
}
