/* config.c: read the libconfig file, check it against SPEC.md section 2 and
 * build struct config; every rejection is one `FILE:LINE: what` log line. */
#include "autoconfig.h"
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libconfig.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "duration.h"
#include "log.h"
#include "secret.h"

#define NAME_MAX_LEN 64
#define TTL_MAX (365 * 86400)           /* Onplana refuses longer-lived tokens */
#define AZURE_SECRET_NAME_MAX 127
#define AWS_SECRET_ID_MAX 2048          /* an ARN; plain names stop at 512 */
#define DEFAULT_STATE_DIR "/var/lib/patrol"
#define DEFAULT_ONPLANA_URL "https://api.onplana.com"
#define DEFAULT_K8S_JWT "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define DEFAULT_AZURE_RESOURCE "https://vault.azure.net"
#define DEFAULT_AZURE_AUTHORITY "https://login.microsoftonline.com"

/* The entries seen so far of one list, by some key (dup_find): entry
 * number + 1 per slot, open addressing, so 10,000 entries are not compared
 * pairwise. */
struct dup_index {
        const void *arr;
        size_t *slots, cap;
};

/* Everything one load needs; `err` stays the first failure. */
struct ctx {
        struct config *c;
        const char *path;
        const char *cred_dir;           /* $CREDENTIALS_DIRECTORY or the config's folder */
        bool check_files;
        bool shared;                    /* group or others have any permission bit */
        unsigned mode;
        int err;
        unsigned nerr;
        /* check_dup's index of the names seen so far in one list, and
         * check_dup_secret's of the integrations' secrets. */
        struct dup_index dup_names, dup_secrets;
        /* intern_strv's index of c->strvs, the same way; strvs_room is the
         * length c->strvs is allocated for. */
        size_t *strv_slots, strv_cap, strvs_room;
};

struct keydef;
typedef void (*key_fn)(struct ctx *x, const config_setting_t *s, void *base,
                       const struct keydef *k);

/* One key of a group: its parser writes the value at `off` inside `base`. */
struct keydef {
        const char *name;
        key_fn parse;
        size_t off;
        unsigned flags;
};

#define KEY_REQUIRED  1u
#define KEY_OR_INLINE 2u        /* a *_file key whose inline form also satisfies REQUIRED */
#define KEY_END { NULL, NULL, 0, 0 }
#define FIELD(base, k, type) ((type *)(void *)((char *)(base) + (k)->off))

#define DYM_FMT "%s%s%s"
#define DYM_ARGS(s) (s) ? "; did you mean \"" : "", (s) ? (s) : "", (s) ? "\"?" : ""

/* ---- reporting ---- */

static int line_of(const config_setting_t *s)
{
        int line = s ? config_setting_source_line(s) : 0;

        return line > 0 ? line : 1;     /* the root group has no line of its own */
}

static void fail(struct ctx *x, const config_setting_t *s, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void fail(struct ctx *x, const config_setting_t *s, const char *fmt, ...)
{
        const char *file = s && config_setting_source_file(s) ? config_setting_source_file(s) : x->path;
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_error(NULL, "%s:%d: %s", file, line_of(s), msg);
        if (x->err == 0)
                x->err = -EINVAL;
        x->nerr++;
}

static void oom(struct ctx *x)
{
        log_error(NULL, "%s: out of memory", x->path);
        x->err = -ENOMEM;
        x->nerr++;
}

/* Array elements have no name: report them under their parent's key. */
static const char *key_name(const config_setting_t *s)
{
        while (s && !config_setting_name(s))
                s = config_setting_parent(s);
        return s ? config_setting_name(s) : "value";
}

static char *xstrdup(struct ctx *x, const char *s)
{
        char *r = strdup(s);

        if (!r)
                oom(x);
        return r;
}

/* ---- did you mean ---- */

/* Optimal string alignment distance, case-insensitive: typos are mostly
 * one wrong, missing, extra or swapped letter. */
static size_t edit_distance(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);
        size_t d[3][65];
        size_t *p2 = d[0], *p1 = d[1], *cur = d[2];

        if (la > 64 || lb > 64)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                p1[j] = j;
        for (size_t i = 1; i <= la; i++) {
                cur[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
                        size_t v = p1[j] + 1;

                        if (cur[j - 1] + 1 < v)
                                v = cur[j - 1] + 1;
                        if (p1[j - 1] + cost < v)
                                v = p1[j - 1] + cost;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                            p2[j - 2] + 1 < v)
                                v = p2[j - 2] + 1;
                        cur[j] = v;
                }
                size_t *t = p2;
                p2 = p1;
                p1 = cur;
                cur = t;
        }
        return p1[lb];
}

const char *config_suggest(const char *word, const char *const *candidates, size_t n)
{
        /* Allow a third of the word to be wrong, and at least one letter. */
        size_t limit = strlen(word) / 3, best, d;
        const char *r = NULL;

        best = (limit < 1 ? 1 : limit) + 1;
        for (size_t i = 0; i < n; i++) {
                d = edit_distance(word, candidates[i]);
                if (d < best) {
                        best = d;
                        r = candidates[i];
                }
        }
        return r;
}

/* ---- URLs ---- */

/* Host of an http(s) URL, without brackets, userinfo or port. */
static bool url_host(const char *url, char *host, size_t size, bool *ret_https)
{
        const char *p, *end, *stop;
        size_t len;

        if (strncasecmp(url, "https://", 8) == 0)
                p = url + 8, *ret_https = true;
        else if (strncasecmp(url, "http://", 7) == 0)
                p = url + 7, *ret_https = false;
        else
                return false;
        end = p + strcspn(p, "/?#");
        for (const char *a = p; a < end; a++)   /* "http://127.0.0.1@evil" goes to evil */
                if (*a == '@')
                        p = a + 1;
        if (*p == '[') {
                stop = memchr(p, ']', (size_t)(end - p));
                if (!stop || (stop + 1 < end && stop[1] != ':'))
                        return false;
                p++;
        } else {
                stop = memchr(p, ':', (size_t)(end - p));
                if (!stop)
                        stop = end;
        }
        len = (size_t)(stop - p);
        if (len == 0 || len >= size)
                return false;
        memcpy(host, p, len);
        host[len] = '\0';
        return true;
}

/* Plain http only where nothing crosses a network: loopback, and the
 * cloud metadata endpoints that only speak http (EC2 IMDS, ECS/EKS). */
static bool host_http_ok(const char *host)
{
        static const char *const v4[] = { "169.254.169.254", "169.254.170.2", "169.254.170.23" };
        static const char *const v6[] = { "::1", "fd00:ec2::254", "fd00:ec2::23" };
        unsigned char a[16], b[16];

        if (strcasecmp(host, "localhost") == 0)
                return true;
        if (inet_pton(AF_INET, host, a) == 1) {
                if (a[0] == 127)
                        return true;
                for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++)
                        if (inet_pton(AF_INET, v4[i], b) == 1 && memcmp(a, b, 4) == 0)
                                return true;
                return false;
        }
        if (inet_pton(AF_INET6, host, a) != 1)
                return false;
        for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++)
                if (inet_pton(AF_INET6, v6[i], b) == 1 && memcmp(a, b, 16) == 0)
                        return true;
        return false;
}

bool config_url_allowed(const char *url)
{
        char host[256];
        bool https;

        if (!url || !url_host(url, host, sizeof(host), &https))
                return false;
        return https || host_http_ok(host);
}

/* ---- value checks ---- */

static bool valid_name(const char *s)
{
        size_t n = strlen(s);

        return n >= 1 && n <= NAME_MAX_LEN &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* Onplana scopes are `resource.action`; we accept lowercase letters, digits
 * and `_` on each side of exactly one dot ("projects.read", "time_entries.write"). */
static bool valid_scope(const char *s)
{
        static const char part[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
        size_t a = strspn(s, part), b;

        if (a == 0 || s[a] != '.')
                return false;
        b = strspn(s + a + 1, part);
        return b > 0 && s[a + 1 + b] == '\0';
}

static bool has_control(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* Walk every string, array elements included: control characters end up in
 * logs, HTTP headers and paths, so none is accepted anywhere. */
static void check_control(struct ctx *x, const config_setting_t *s)
{
        if (config_setting_type(s) == CONFIG_TYPE_STRING) {
                if (has_control(config_setting_get_string(s)))
                        fail(x, s, "%s: control character in string", key_name(s));
                return;
        }
        if (!config_setting_is_aggregate(s))
                return;
        for (int i = 0; i < config_setting_length(s); i++)
                check_control(x, config_setting_get_elem(s, i));
}

/* ---- scalar parsers ---- */

/* The string value, or NULL once a wrong type or an empty string is reported. */
static const char *get_str(struct ctx *x, const config_setting_t *s)
{
        const char *v;

        if (config_setting_type(s) != CONFIG_TYPE_STRING) {
                fail(x, s, "%s: expected a string", key_name(s));
                return NULL;
        }
        v = config_setting_get_string(s);
        if (!*v) {
                fail(x, s, "%s: must not be empty", key_name(s));
                return NULL;
        }
        return v;
}

static void set_str(struct ctx *x, char **f, const char *v)
{
        char *n = xstrdup(x, v);

        if (n) {
                free(*f);
                *f = n;
        }
}

static void h_skip(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        /* already read by the caller to pick the key table */
}

static void h_str(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);

        if (v)
                set_str(x, FIELD(base, k, char *), v);
}

static void h_name(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);

        if (v && !valid_name(v))
                fail(x, s, "%s \"%s\": names are 1-64 of A-Z a-z 0-9 . _ -", k->name, v);
        else if (v)
                set_str(x, FIELD(base, k, char *), v);
}

static void h_url(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);
        char host[256], *u;
        bool https;
        size_t n;

        if (!v)
                return;
        if (!url_host(v, host, sizeof(host), &https)) {
                fail(x, s, "%s \"%s\": not an http(s) URL with a host", k->name, v);
                return;
        }
        if (!https && !host_http_ok(host)) {
                fail(x, s, "%s \"%s\": plain http is only allowed to loopback and "
                     "link-local metadata addresses; use https", k->name, v);
                return;
        }
        set_str(x, FIELD(base, k, char *), v);
        u = *FIELD(base, k, char *);
        for (n = strlen(u); n > 0 && u[n - 1] == '/'; n--)  /* callers append "/v1/..." */
                u[n - 1] = '\0';
}

static char *join_path(struct ctx *x, const char *dir, const char *p)
{
        char *r = NULL;

        if (p[0] == '/')
                return xstrdup(x, p);
        if (asprintf(&r, "%s/%s", dir, p) < 0) {
                oom(x);
                return NULL;
        }
        return r;
}

/* ca_file, metrics_file: relative to the configuration file's folder. */
static void h_path(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);
        char **f = FIELD(base, k, char *);
        char *p;

        if (!v || !(p = join_path(x, x->c->dir, v)))
                return;
        free(*f);
        *f = p;
}

/* Credential files that rotate under us (jwt_file, workload token_file):
 * kept as paths; checked later, once the defaults are known. */
static void h_cred_path(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);
        char **f = FIELD(base, k, char *);
        char *p;

        if (!v || !(p = join_path(x, x->cred_dir, v)))
                return;
        free(*f);
        *f = p;
}

/* Inline form and *_file form write the same field: a second write is a conflict. */
static bool secret_conflict(struct ctx *x, const config_setting_t *s, char **f)
{
        const char *n = config_setting_name(s);
        size_t len = strlen(n);

        if (!*f)
                return false;
        if (len > 5 && strcmp(n + len - 5, "_file") == 0)
                fail(x, s, "%s: %.*s is given inline too; keep one of them", n, (int)(len - 5), n);
        else
                fail(x, s, "%s: %s_file is given too; keep one of them", n, n);
        return true;
}

static void h_secret_inline(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);
        char **f = FIELD(base, k, char *);

        if (!v || secret_conflict(x, s, f))
                return;
        if (x->shared)
                log_warning(NULL, "%s:%d: %s is inline in a file other users can read (mode %04o); "
                            "use %s_file", x->path, line_of(s), k->name, x->mode, k->name);
        *f = secret_dup(v);
        if (!*f)
                oom(x);
}

static void h_secret_file(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);
        char **f = FIELD(base, k, char *);
        char *path = NULL;
        int r;

        if (!v || secret_conflict(x, s, f) || !(path = join_path(x, x->cred_dir, v)))
                return;
        r = secret_read_file(path, f);
        if (r == -EINVAL)
                fail(x, s, "%s \"%s\": empty, or holds a NUL byte", k->name, path);
        else if (r < 0)
                fail(x, s, "%s \"%s\": %s", k->name, path, strerror(-r));
        free(path);
}

static void h_duration(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        const char *v = get_str(x, s);
        int r;

        if (!v)
                return;
        r = duration_parse(v, FIELD(base, k, int64_t));
        if (r == -ERANGE)
                fail(x, s, "%s \"%s\": duration too large", k->name, v);
        else if (r < 0)
                fail(x, s, "%s \"%s\": not a duration (an integer and one unit of s m h d w, "
                     "like \"90d\")", k->name, v);
}

static bool get_int(struct ctx *x, const config_setting_t *s, int *ret)
{
        if (config_setting_type(s) != CONFIG_TYPE_INT) {
                fail(x, s, "%s: expected an integer", key_name(s));
                return false;
        }
        *ret = config_setting_get_int(s);
        return true;
}

static void h_max_parallel(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        int v;

        if (!get_int(x, s, &v))
                return;
        if (v < 1)
                fail(x, s, "%s: must be at least 1 (is %d)", k->name, v);
        else
                *FIELD(base, k, int) = v;
}

static void h_kv_version(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        int v;

        if (!get_int(x, s, &v))
                return;
        if (v != 1 && v != 2)
                fail(x, s, "%s: must be 1 or 2 (is %d)", k->name, v);
        else
                *FIELD(base, k, int) = v;
}

static void h_bool(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                fail(x, s, "%s: expected true or false", k->name);
        else
                *FIELD(base, k, bool) = config_setting_get_bool(s);
}

/* ---- groups ---- */

static const struct keydef *find_key(const struct keydef *keys, const char *name)
{
        for (; keys->name; keys++)
                if (strcmp(keys->name, name) == 0)
                        return keys;
        return NULL;
}

static void check_unknown(struct ctx *x, const config_setting_t *g, const struct keydef *keys,
                          const char *what)
{
        const char *names[40];
        size_t n = 0;

        for (const struct keydef *k = keys; k->name && n < 40; k++)
                names[n++] = k->name;
        for (int i = 0; i < config_setting_length(g); i++) {
                const config_setting_t *s = config_setting_get_elem(g, i);
                const char *sug;

                if (find_key(keys, config_setting_name(s)))
                        continue;
                sug = config_suggest(config_setting_name(s), names, n);
                fail(x, s, "%s: unknown key \"%s\"" DYM_FMT, what, config_setting_name(s), DYM_ARGS(sug));
        }
}

/* A required *_file key is also satisfied by its inline form. */
static bool key_present(const config_setting_t *g, const struct keydef *k)
{
        char inl[64];
        size_t n = strlen(k->name);

        if (config_setting_get_member(g, k->name))
                return true;
        if (!(k->flags & KEY_OR_INLINE) || n <= 5 || n - 5 >= sizeof(inl))
                return false;
        memcpy(inl, k->name, n - 5);
        inl[n - 5] = '\0';
        return config_setting_get_member(g, inl) != NULL;
}

/* Keys are handled in table order, not file order, so that references
 * (integrations to accounts and stores) and dependencies resolve. */
static void parse_group(struct ctx *x, const config_setting_t *g, const struct keydef *keys,
                        void *base, const char *what)
{
        if (!config_setting_is_group(g)) {
                fail(x, g, "%s: expected a group { ... }", what);
                return;
        }
        check_unknown(x, g, keys, what);
        for (const struct keydef *k = keys; k->name; k++) {
                const config_setting_t *s = config_setting_get_member(g, k->name);

                if (s)
                        k->parse(x, s, base, k);
                else if ((k->flags & KEY_REQUIRED) && !key_present(g, k))
                        fail(x, g, "%s: missing key \"%s\"", what, k->name);
        }
}

/* `what` for a list entry: by its name when it has a usable one. */
static void entry_what(const config_setting_t *g, const char *kind, int i, char *buf, size_t size)
{
        const config_setting_t *n = config_setting_get_member(g, "name");

        if (n && config_setting_type(n) == CONFIG_TYPE_STRING)
                snprintf(buf, size, "%s \"%.64s\"", kind, config_setting_get_string(n));
        else
                snprintf(buf, size, "%s #%d", kind, i + 1);
}

/* A ( {...}, {...} ) list; returns its length or -1 once reported. */
static int group_list(struct ctx *x, const config_setting_t *s)
{
        int n;

        /* "[ ]" is how people write an empty list, too */
        if (config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_LIST) {
                fail(x, s, "%s: expected a list ( { ... }, ... )", key_name(s));
                return -1;
        }
        n = config_setting_length(s);
        for (int i = 0; i < n; i++)
                if (!config_setting_is_group(config_setting_get_elem(s, i))) {
                        /* blame the list: libconfig dates a scalar by the token after it */
                        fail(x, s, "%s: entry %d: expected a group { ... }", key_name(s), i + 1);
                        return -1;
                }
        return n;
}

/* All three entry structs start with `char *name; int line;`. */
struct named {
        char *name;
        int line;
};

/* Entry i of a list of entries of `size` bytes. */
static const void *entry_at(const void *arr, size_t size, size_t i)
{
        return (const char *)arr + i * size;
}

#define FNV_OFFSET ((size_t)14695981039346656037ULL)
#define FNV_PRIME ((size_t)1099511628211ULL)

static size_t fnv1a(size_t h, const char *s)
{
        while (*s)
                h = (h ^ (unsigned char)*s++) * FNV_PRIME;
        return h;
}

/* What makes two entries duplicates; entries without a key are never one. */
struct dup_key {
        bool (*has)(const void *e);
        size_t (*hash)(const void *e);
        bool (*same)(const void *a, const void *b);
};

/* The slot of e's key among the entries indexed, or the empty one where it goes. */
static size_t dup_slot(const struct dup_index *d, const struct dup_key *key, size_t size, const void *e)
{
        size_t k = key->hash(e) & (d->cap - 1);

        while (d->slots[k] && !key->same(entry_at(d->arr, size, d->slots[k] - 1), e))
                k = (k + 1) & (d->cap - 1);
        return k;
}

/* Room for entry i, kept at most half full; rebuilt from entries 0..i-1. */
static int dup_reserve(struct dup_index *d, const struct dup_key *key, const void *arr, size_t size, size_t i)
{
        size_t cap = d->arr == arr ? d->cap : 0, j;

        if (cap >= 2 * (i + 1))
                return 0;
        cap = cap ? cap * 2 : 64;
        while (cap < 2 * (i + 1))
                cap *= 2;
        free(d->slots);
        d->slots = calloc(cap, sizeof(*d->slots));
        d->arr = d->slots ? arr : NULL;
        d->cap = d->slots ? cap : 0;
        if (!d->slots)
                return -ENOMEM;
        for (j = 0; j < i; j++) {
                const void *o = entry_at(arr, size, j);
                size_t k;
                if (!key->has(o))
                        continue;
                k = dup_slot(d, key, size, o);
                if (!d->slots[k])
                        d->slots[k] = j + 1;
        }
        return 0;
}

/* The first of entries 0..i-1 of arr with entry i's key, or NULL (then i is
 * indexed).  Entries are checked in order, i = 0, 1, ... of one list at a time. */
static const void *dup_find(struct ctx *x, struct dup_index *d, const struct dup_key *key,
                            const void *arr, size_t size, size_t i)
{
        const void *me = entry_at(arr, size, i);
        size_t k;

        if (!key->has(me))
                return NULL;
        if (dup_reserve(d, key, arr, size, i) < 0) {
                oom(x);
                return NULL;
        }
        k = dup_slot(d, key, size, me);
        if (d->slots[k])
                return entry_at(arr, size, d->slots[k] - 1);
        d->slots[k] = i + 1;
        return NULL;
}

static bool name_has(const void *e)
{
        return ((const struct named *)e)->name != NULL;
}

static size_t name_hash(const void *e)
{
        return fnv1a(FNV_OFFSET, ((const struct named *)e)->name);
}

static bool name_same(const void *a, const void *b)
{
        return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name) == 0;
}

static const struct dup_key name_key = { name_has, name_hash, name_same };

static void check_dup(struct ctx *x, const config_setting_t *g, const char *kind,
                      const void *arr, size_t size, size_t i)
{
        const struct named *me = entry_at(arr, size, i);
        const struct named *o = dup_find(x, &x->dup_names, &name_key, arr, size, i);

        if (o)
                fail(x, config_setting_get_member(g, "name"),
                     "duplicate %s name \"%s\" (first at line %d)", kind, me->name, o->line);
}

static void *alloc_entries(struct ctx *x, int n, size_t size)
{
        void *p = calloc(n > 0 ? (size_t)n : 1, size);

        if (!p)
                oom(x);
        return p;
}

/* ---- string lists ---- */

static void strv_free(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

/* An array or list of strings into a NULL-terminated vector. */
static bool get_strv(struct ctx *x, const config_setting_t *s, bool empty_ok, char ***ret_v, size_t *ret_n)
{
        int t = config_setting_type(s), n;
        char **v;

        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
                fail(x, s, "%s: expected an array of strings [ \"...\", ... ]", key_name(s));
                return false;
        }
        n = config_setting_length(s);
        v = calloc((size_t)n + 1, sizeof(*v));
        if (!v) {
                oom(x);
                return false;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, i);
                const char *str = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : NULL;

                if (!str || (!empty_ok && !*str)) {
                        fail(x, e, "%s: element %d: expected a non-empty string", key_name(s), i + 1);
                        goto fail;
                }
                if (!(v[i] = xstrdup(x, str)))
                        goto fail;
        }
        *ret_v = v;
        *ret_n = (size_t)n;
        return true;
fail:
        strv_free(v);
        return false;
}

/* Each string's NUL is hashed too: ["a", "bc"] is not ["ab", "c"]. */
static size_t strv_hash(char *const *v)
{
        size_t h = FNV_OFFSET;

        for (; *v; v++)
                h = fnv1a(h, *v) * FNV_PRIME;
        return h;
}

static bool strv_equal(char *const *a, char *const *b)
{
        for (; *a && *b; a++, b++)
                if (strcmp(*a, *b) != 0)
                        return false;
        return !*a && !*b;
}

/* The slot of v's equal in c->strvs, or the empty one where v goes. */
static size_t strv_slot(const struct ctx *x, char *const *v)
{
        size_t k = strv_hash(v) & (x->strv_cap - 1);

        while (x->strv_slots[k] && !strv_equal(x->c->strvs[x->strv_slots[k] - 1], v))
                k = (k + 1) & (x->strv_cap - 1);
        return k;
}

/* Room for one more list in c->strvs, the index kept at most half full. */
static int strv_reserve(struct ctx *x)
{
        struct config *c = x->c;
        size_t n = c->n_strvs + 1, cap;
        size_t *slots;

        if (n > x->strvs_room) {
                size_t room = x->strvs_room ? 2 * x->strvs_room : 8;
                char ***v = realloc(c->strvs, room * sizeof(*v));

                if (!v)
                        return -ENOMEM;
                c->strvs = v;
                x->strvs_room = room;
        }
        if (2 * n <= x->strv_cap)
                return 0;
        cap = x->strv_cap ? 2 * x->strv_cap : 64;
        slots = calloc(cap, sizeof(*slots));
        if (!slots)
                return -ENOMEM;
        free(x->strv_slots);
        x->strv_slots = slots;
        x->strv_cap = cap;
        for (size_t j = 0; j < c->n_strvs; j++)
                x->strv_slots[strv_slot(x, c->strvs[j])] = j + 1;
        return 0;
}

/* Takes v; returns the copy integrations share, v itself when it is the
 * first of its kind, or NULL once out of memory is reported. */
static char *const *intern_strv(struct ctx *x, char **v)
{
        struct config *c = x->c;
        size_t k;

        if (strv_reserve(x) < 0) {
                oom(x);
                strv_free(v);
                return NULL;
        }
        k = strv_slot(x, v);
        if (x->strv_slots[k]) {
                strv_free(v);
                return c->strvs[x->strv_slots[k] - 1];
        }
        c->strvs[c->n_strvs++] = v;
        x->strv_slots[k] = c->n_strvs;
        return v;
}

/* get_strv for the lists integrations share (scopes, projects): the copy is
 * made first so that errors are exactly get_strv's; it is freed at once when
 * an equal list is kept already. */
static bool get_shared_strv(struct ctx *x, const config_setting_t *s, char *const **ret_v, size_t *ret_n)
{
        char *const *shared;
        char **v;
        size_t n;

        if (!get_strv(x, s, false, &v, &n) || !(shared = intern_strv(x, v)))
                return false;
        *ret_v = shared;
        *ret_n = n;
        return true;
}

/* ---- top level: policy, onplana ---- */

#define POLICY_KEYS(base) \
        { "ttl", h_duration, (base) + offsetof(struct policy, ttl), 0 }, \
        { "renew_before", h_duration, (base) + offsetof(struct policy, renew_before), 0 }, \
        { "revoke_after", h_duration, (base) + offsetof(struct policy, revoke_after), 0 }, \
        { "retry_min", h_duration, (base) + offsetof(struct policy, retry_min), 0 }, \
        { "retry_max", h_duration, (base) + offsetof(struct policy, retry_max), 0 }

static const struct keydef policy_keys[] = { POLICY_KEYS(0), KEY_END };

/* The setting to blame: the first of the keys this group sets, else the group. */
static const config_setting_t *blame(const config_setting_t *g, const char *a, const char *b)
{
        const config_setting_t *s = config_setting_get_member(g, a);

        if (!s && b)
                s = config_setting_get_member(g, b);
        return s;
}

/* Policies are written in days: say "14d", not "2w". */
static void fmt_policy(int64_t secs, char *buf, size_t size)
{
        if (secs > 0 && secs % 86400 == 0)
                snprintf(buf, size, "%" PRId64 "d", secs / 86400);
        else
                duration_format(secs, buf, size);
}

/* Checked where a key is set, so a bad top-level policy is reported once at
 * `policy`, and an integration only for the keys it overrides. */
static void check_policy(struct ctx *x, const config_setting_t *g, const struct policy *p,
                         const char *what)
{
        const config_setting_t *s;
        char a[32], b[32];

        if ((s = blame(g, "ttl", NULL)) && p->ttl > TTL_MAX) {
                fmt_policy(p->ttl, a, sizeof(a));
                fail(x, s, "%s: ttl %s is over Onplana's maximum of 365d", what, a);
        } else if ((s = blame(g, "renew_before", "ttl")) && p->renew_before >= p->ttl) {
                fmt_policy(p->renew_before, a, sizeof(a));
                fmt_policy(p->ttl, b, sizeof(b));
                fail(x, s, "%s: renew_before (%s) must be shorter than ttl (%s)", what, a, b);
        }
        if ((s = blame(g, "retry_min", "retry_max")) && p->retry_min > p->retry_max) {
                fmt_policy(p->retry_min, a, sizeof(a));
                fmt_policy(p->retry_max, b, sizeof(b));
                fail(x, s, "%s: retry_min (%s) is longer than retry_max (%s)", what, a, b);
        }
}

static void h_policy(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        unsigned before = x->nerr;

        parse_group(x, s, policy_keys, &x->c->policy, "policy");
        if (x->nerr == before)
                check_policy(x, s, &x->c->policy, "policy");
}

static const struct keydef onplana_keys[] = {
        { "url", h_url, offsetof(struct cfg_onplana, url), 0 },
        { "ca_file", h_path, offsetof(struct cfg_onplana, ca_file), 0 },
        KEY_END
};

static void h_onplana(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        parse_group(x, s, onplana_keys, &x->c->onplana, "onplana");
}

/* ---- accounts ---- */

static const struct keydef account_keys[] = {
        { "name", h_name, offsetof(struct cfg_account, name), KEY_REQUIRED },
        { "org", h_str, offsetof(struct cfg_account, org), KEY_REQUIRED },
        { "client_id", h_str, offsetof(struct cfg_account, client_id), KEY_REQUIRED },
        { "client_secret", h_secret_inline, offsetof(struct cfg_account, client_secret), 0 },
        { "client_secret_file", h_secret_file, offsetof(struct cfg_account, client_secret),
          KEY_REQUIRED | KEY_OR_INLINE },
        KEY_END
};

static void h_accounts(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct config *c = x->c;
        int n = group_list(x, s);
        char what[96];

        if (n < 0 || !(c->accounts = alloc_entries(x, n, sizeof(*c->accounts))))
                return;
        c->n_accounts = (size_t)n;
        for (int i = 0; i < n; i++) {
                const config_setting_t *g = config_setting_get_elem(s, i);

                c->accounts[i].line = line_of(g);
                entry_what(g, "account", i, what, sizeof(what));
                parse_group(x, g, account_keys, &c->accounts[i], what);
                check_dup(x, g, "account", c->accounts, sizeof(*c->accounts), (size_t)i);
        }
}

/* ---- stores and their auth ---- */

#define A_OFF(f) offsetof(struct cfg_auth, f)
#define METHOD_KEY { "method", h_skip, 0, 0 }
#define MOUNT_KEY { "mount", h_str, A_OFF(mount), 0 }
#define SECRET_KEYS(inl, file, f, flags) \
        { inl, h_secret_inline, A_OFF(f), 0 }, \
        { file, h_secret_file, A_OFF(f), (flags) | KEY_OR_INLINE }

static const struct keydef vault_token_keys[] = {
        METHOD_KEY, MOUNT_KEY, SECRET_KEYS("token", "token_file", token, KEY_REQUIRED), KEY_END
};
static const struct keydef vault_approle_keys[] = {
        METHOD_KEY, MOUNT_KEY, { "role_id", h_str, A_OFF(role_id), KEY_REQUIRED },
        SECRET_KEYS("secret_id", "secret_id_file", secret_id, KEY_REQUIRED), KEY_END
};
static const struct keydef vault_k8s_keys[] = {
        METHOD_KEY, MOUNT_KEY, { "role", h_str, A_OFF(role), KEY_REQUIRED },
        { "jwt_file", h_cred_path, A_OFF(jwt_file), 0 }, KEY_END
};
static const struct keydef aws_default_keys[] = {
        METHOD_KEY, { "profile", h_str, A_OFF(profile), 0 }, KEY_END
};
static const struct keydef aws_static_keys[] = {
        METHOD_KEY, { "access_key_id", h_str, A_OFF(access_key_id), KEY_REQUIRED },
        SECRET_KEYS("secret_access_key", "secret_access_key_file", secret_access_key, KEY_REQUIRED),
        SECRET_KEYS("session_token", "session_token_file", session_token, 0), KEY_END
};
static const struct keydef aws_assume_keys[] = {
        METHOD_KEY, { "role_arn", h_str, A_OFF(role_arn), KEY_REQUIRED },
        { "external_id", h_str, A_OFF(external_id), 0 },
        { "session_name", h_str, A_OFF(session_name), 0 },
        { "profile", h_str, A_OFF(profile), 0 }, KEY_END
};
static const struct keydef azure_secret_keys[] = {
        METHOD_KEY, { "tenant_id", h_str, A_OFF(tenant_id), KEY_REQUIRED },
        { "client_id", h_str, A_OFF(client_id), KEY_REQUIRED },
        SECRET_KEYS("client_secret", "client_secret_file", client_secret, KEY_REQUIRED), KEY_END
};
static const struct keydef azure_mi_keys[] = {
        METHOD_KEY, { "client_id", h_str, A_OFF(client_id), 0 }, KEY_END
};
/* Not KEY_REQUIRED: the environment may supply them; checked after parsing. */
static const struct keydef azure_wi_keys[] = {
        METHOD_KEY, { "tenant_id", h_str, A_OFF(tenant_id), 0 },
        { "client_id", h_str, A_OFF(client_id), 0 },
        { "token_file", h_cred_path, A_OFF(token_file), 0 }, KEY_END
};

static const struct method_def {
        enum store_type type;
        const char *name;
        enum auth_method method;
        const struct keydef *keys;
} methods[] = {
        { STORE_VAULT, "token", AUTH_VAULT_TOKEN, vault_token_keys },
        { STORE_VAULT, "approle", AUTH_VAULT_APPROLE, vault_approle_keys },
        { STORE_VAULT, "kubernetes", AUTH_VAULT_KUBERNETES, vault_k8s_keys },
        { STORE_AWS, "default", AUTH_AWS_DEFAULT, aws_default_keys },
        { STORE_AWS, "static", AUTH_AWS_STATIC, aws_static_keys },
        { STORE_AWS, "assume_role", AUTH_AWS_ASSUME_ROLE, aws_assume_keys },
        { STORE_AZURE, "client_secret", AUTH_AZURE_CLIENT_SECRET, azure_secret_keys },
        { STORE_AZURE, "managed_identity", AUTH_AZURE_MANAGED_IDENTITY, azure_mi_keys },
        { STORE_AZURE, "workload_identity", AUTH_AZURE_WORKLOAD_IDENTITY, azure_wi_keys },
};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

static const struct method_def *find_method(struct ctx *x, const config_setting_t *m,
                                            enum store_type type)
{
        const char *v = get_str(x, m), *names[N_METHODS], *sug;
        size_t n = 0;

        if (!v)
                return NULL;
        for (size_t i = 0; i < N_METHODS; i++) {
                if (methods[i].type != type)
                        continue;
                if (strcmp(methods[i].name, v) == 0)
                        return &methods[i];
                names[n++] = methods[i].name;
        }
        sug = config_suggest(v, names, n);
        fail(x, m, "method: unknown %s auth method \"%s\"" DYM_FMT, store_type_name(type), v,
             DYM_ARGS(sug));
        return NULL;
}

static void env_default(struct ctx *x, char **f, const char *var)
{
        const char *v = secure_getenv(var);

        if (v && *v)
                set_str(x, f, v);
}

static void auth_defaults(struct ctx *x, struct cfg_auth *a)
{
        if (a->method == AUTH_VAULT_KUBERNETES)
                set_str(x, &a->jwt_file, DEFAULT_K8S_JWT);
        if (a->method != AUTH_AZURE_WORKLOAD_IDENTITY)
                return;
        /* The variables the AKS workload-identity webhook injects. */
        env_default(x, &a->tenant_id, "AZURE_TENANT_ID");
        env_default(x, &a->client_id, "AZURE_CLIENT_ID");
        env_default(x, &a->token_file, "AZURE_FEDERATED_TOKEN_FILE");
}

static void check_readable(struct ctx *x, const config_setting_t *g, const char *key, const char *path)
{
        const config_setting_t *s = config_setting_get_member(g, key);
        int fd;

        if (!x->check_files || !path)
                return;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                fail(x, s ? s : g, "%s \"%s\": %s", key, path, strerror(errno));
        else
                close(fd);
}

static void auth_check(struct ctx *x, const config_setting_t *g, const struct cfg_auth *a)
{
        static const char *const env[] = { "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE" };
        static const char *const key[] = { "tenant_id", "client_id", "token_file" };
        const char *const val[] = { a->tenant_id, a->client_id, a->token_file };

        if (a->method == AUTH_VAULT_KUBERNETES)
                check_readable(x, g, "jwt_file", a->jwt_file);
        if (a->method != AUTH_AZURE_WORKLOAD_IDENTITY)
                return;
        for (size_t i = 0; i < 3; i++)
                if (!val[i]) {
                        fail(x, g, "auth: workload_identity needs %s (or $%s)", key[i], env[i]);
                        return;
                }
        check_readable(x, g, "token_file", a->token_file);
}

static void h_auth(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct cfg_store *st = base;
        const struct method_def *m;
        const config_setting_t *ms;
        unsigned before = x->nerr;

        if (!config_setting_is_group(s)) {
                fail(x, s, "auth: expected a group { method = \"...\"; ... }");
                return;
        }
        ms = config_setting_get_member(s, "method");
        if (!ms) {
                fail(x, s, "auth: missing key \"method\"");
                return;
        }
        if (!(m = find_method(x, ms, st->type)))
                return;
        st->auth.method = m->method;
        auth_defaults(x, &st->auth);
        parse_group(x, s, m->keys, &st->auth, "auth");
        if (x->nerr == before)
                auth_check(x, s, &st->auth);
}

#define S_OFF(f) offsetof(struct cfg_store, f)
#define STORE_COMMON \
        { "name", h_name, S_OFF(name), KEY_REQUIRED }, \
        { "type", h_skip, 0, 0 }, \
        { "ca_file", h_path, S_OFF(ca_file), 0 }

static const struct keydef vault_keys[] = {
        STORE_COMMON,
        { "url", h_url, S_OFF(url), KEY_REQUIRED },
        { "mount", h_str, S_OFF(mount), 0 },
        { "kv_version", h_kv_version, S_OFF(kv_version), 0 },
        { "namespace", h_str, S_OFF(namespace_), 0 },
        { "auth", h_auth, 0, KEY_REQUIRED },
        KEY_END
};
static const struct keydef aws_keys[] = {
        STORE_COMMON,
        { "region", h_str, S_OFF(region), KEY_REQUIRED },
        { "endpoint", h_url, S_OFF(endpoint), 0 },
        { "sts_endpoint", h_url, S_OFF(sts_endpoint), 0 },
        { "imds_endpoint", h_url, S_OFF(imds_endpoint), 0 },
        { "container_endpoint", h_url, S_OFF(container_endpoint), 0 },
        { "kms_key_id", h_str, S_OFF(kms_key_id), 0 },
        { "auth", h_auth, 0, KEY_REQUIRED },
        KEY_END
};
static const struct keydef azure_keys[] = {
        STORE_COMMON,
        { "url", h_url, S_OFF(url), KEY_REQUIRED },
        { "authority_url", h_url, S_OFF(authority_url), 0 },
        { "imds_endpoint", h_url, S_OFF(imds_endpoint), 0 },
        { "resource", h_url, S_OFF(resource), 0 },
        { "auth", h_auth, 0, KEY_REQUIRED },
        KEY_END
};

static const char *const store_types[] = { "vault", "aws", "azure" };

const char *store_type_name(enum store_type t)
{
        return (unsigned)t < 3 ? store_types[t] : "unknown";
}

/* Read `type` first: it decides which keys the store may have. */
static bool store_type(struct ctx *x, const config_setting_t *g, const char *what, enum store_type *ret)
{
        const config_setting_t *t = config_setting_get_member(g, "type");
        const char *v, *sug;

        if (!t) {
                fail(x, g, "%s: missing key \"type\" (vault, aws or azure)", what);
                return false;
        }
        if (!(v = get_str(x, t)))
                return false;
        for (int i = 0; i < 3; i++)
                if (strcmp(v, store_types[i]) == 0) {
                        *ret = (enum store_type)i;
                        return true;
                }
        sug = config_suggest(v, store_types, 3);
        fail(x, t, "type: unknown store type \"%s\"" DYM_FMT, v, DYM_ARGS(sug));
        return false;
}

static void parse_store(struct ctx *x, const config_setting_t *g, struct cfg_store *st, const char *what)
{
        static const struct keydef *const tables[] = { vault_keys, aws_keys, azure_keys };

        st->line = line_of(g);
        if (!store_type(x, g, what, &st->type))
                return;
        st->kv_version = 2;
        if (st->type == STORE_VAULT)
                set_str(x, &st->mount, "secret");
        if (st->type == STORE_AZURE) {
                set_str(x, &st->resource, DEFAULT_AZURE_RESOURCE);
                set_str(x, &st->authority_url, DEFAULT_AZURE_AUTHORITY);
        }
        parse_group(x, g, tables[st->type], st, what);
}

static void h_stores(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct config *c = x->c;
        int n = group_list(x, s);
        char what[96];

        if (n < 0 || !(c->stores = alloc_entries(x, n, sizeof(*c->stores))))
                return;
        c->n_stores = (size_t)n;
        for (int i = 0; i < n; i++) {
                const config_setting_t *g = config_setting_get_elem(s, i);

                entry_what(g, "store", i, what, sizeof(what));
                parse_store(x, g, &c->stores[i], what);
                check_dup(x, g, "store", c->stores, sizeof(*c->stores), (size_t)i);
        }
}

/* ---- integrations ---- */

/* An integration while its keys are parsed: the policy keys write `policy`,
 * which check_integration reads and intern_policy then shares. */
struct integration_parse {
        struct cfg_integration in;      /* first: the key parsers take base as the integration */
        struct policy policy;
};

struct cfg_policy {
        struct policy p;
        struct cfg_policy *next;
};

/* How far back intern_policy looks: a generated configuration repeats its
 * overrides in runs, and thousands of different ones must not cost a scan
 * of all the others each. */
#define POLICY_RECENT 8

static bool policy_equal(const struct policy *a, const struct policy *b)
{
        return a->ttl == b->ttl && a->renew_before == b->renew_before &&
               a->revoke_after == b->revoke_after && a->retry_min == b->retry_min &&
               a->retry_max == b->retry_max;
}

/* The top-level policy when nothing is overridden (or only with equal values),
 * else a copy in c->policies, shared with recent equal ones; NULL once out
 * of memory is reported. */
static const struct policy *intern_policy(struct ctx *x, const struct policy *p)
{
        struct config *c = x->c;
        struct cfg_policy *e = c->policies;

        if (policy_equal(p, &c->policy))
                return &c->policy;
        for (int i = 0; e && i < POLICY_RECENT; e = e->next, i++)
                if (policy_equal(p, &e->p))
                        return &e->p;
        e = malloc(sizeof(*e));
        if (!e) {
                oom(x);
                return NULL;
        }
        e->p = *p;
        e->next = c->policies;
        c->policies = e;
        return &e->p;
}

static void h_account_ref(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct cfg_integration *in = base;
        const struct config *c = x->c;
        const char *v = get_str(x, s), *names[64], *sug;
        size_t n = 0;

        if (!v)
                return;
        in->account = (struct cfg_account *)config_find_account(c, v);
        if (in->account)
                return;
        for (size_t i = 0; i < c->n_accounts && n < 64; i++)
                if (c->accounts[i].name)
                        names[n++] = c->accounts[i].name;
        sug = config_suggest(v, names, n);
        fail(x, s, "account: unknown account \"%s\"" DYM_FMT, v, DYM_ARGS(sug));
}

static void h_store_ref(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct cfg_integration *in = base;
        const struct config *c = x->c;
        const char *v = get_str(x, s), *names[64], *sug;
        size_t n = 0;

        if (!v)
                return;
        for (size_t i = 0; i < c->n_stores; i++)
                if (c->stores[i].name && strcmp(c->stores[i].name, v) == 0) {
                        in->store = &c->stores[i];
                        return;
                }
        for (size_t i = 0; i < c->n_stores && n < 64; i++)
                if (c->stores[i].name)
                        names[n++] = c->stores[i].name;
        sug = config_suggest(v, names, n);
        fail(x, s, "store: unknown store \"%s\"" DYM_FMT, v, DYM_ARGS(sug));
}

static void h_scopes(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct cfg_integration *in = base;

        if (!get_shared_strv(x, s, &in->scopes, &in->n_scopes))
                return;
        if (in->n_scopes == 0)
                fail(x, s, "scopes: list at least one scope");
        for (size_t i = 0; i < in->n_scopes; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                const char *v = in->scopes[i];

                if (strcmp(v, "WILDCARD") == 0 && !in->allow_wildcard)
                        fail(x, e, "scopes: \"WILDCARD\" grants every permission; "
                             "set allow_wildcard = true if it is really needed");
                else if (strcmp(v, "WILDCARD") != 0 && !valid_scope(v))
                        fail(x, e, "scopes: \"%s\" is not of the form resource.action "
                             "(lowercase letters, digits, _)", v);
        }
}

static void h_projects(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct cfg_integration *in = base;

        get_shared_strv(x, s, &in->projects, &in->n_projects);
}

static void h_on_rotate(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct cfg_integration *in = base;
        size_t n;

        if (!get_strv(x, s, true, &in->on_rotate, &n))
                return;
        if (n == 0)
                fail(x, s, "on_rotate: expected a non-empty argv array [ \"/path/to/program\", ... ]");
        else if (in->on_rotate[0][0] != '/')
                fail(x, config_setting_get_elem(s, 0),
                     "on_rotate: \"%s\" must be an absolute path (no shell, no $PATH search)",
                     in->on_rotate[0]);
}

static void h_format(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        static const char *const formats[] = { "json", "raw" };
        struct cfg_integration *in = base;
        const char *v = get_str(x, s), *sug;

        if (!v)
                return;
        if (strcmp(v, "json") == 0 || strcmp(v, "raw") == 0) {
                in->format = v[0] == 'j' ? FORMAT_JSON : FORMAT_RAW;
                return;
        }
        sug = config_suggest(v, formats, 2);
        fail(x, s, "format: unknown format \"%s\" (json or raw)" DYM_FMT, v, DYM_ARGS(sug));
}

#define I_OFF(f) offsetof(struct integration_parse, in.f)
/* allow_wildcard before scopes: the scope check reads it. */
static const struct keydef integration_keys[] = {
        { "name", h_name, I_OFF(name), KEY_REQUIRED },
        { "account", h_account_ref, 0, KEY_REQUIRED },
        { "store", h_store_ref, 0, KEY_REQUIRED },
        { "allow_wildcard", h_bool, I_OFF(allow_wildcard), 0 },
        { "scopes", h_scopes, 0, KEY_REQUIRED },
        { "projects", h_projects, 0, 0 },
        { "secret", h_str, I_OFF(secret), KEY_REQUIRED },
        { "format", h_format, 0, 0 },
        { "adopt", h_bool, I_OFF(adopt), 0 },
        { "on_rotate", h_on_rotate, 0, 0 },
        POLICY_KEYS(offsetof(struct integration_parse, policy)),
        KEY_END
};

static bool azure_name_ok(const char *s)
{
        size_t n = strlen(s);

        return n >= 1 && n <= AZURE_SECRET_NAME_MAX &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* Secrets Manager names: letters, digits and /_+=.@- (512 max); an ARN adds ':'. */
static bool aws_name_ok(const char *s)
{
        static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+=.@-";
        static const char arn_set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+=.@-:";
        size_t n = strlen(s);

        if (strncmp(s, "arn:", 4) == 0)
                return n <= AWS_SECRET_ID_MAX && strspn(s, arn_set) == n;
        return n >= 1 && n <= 512 && strspn(s, set) == n;
}

/* Vault paths become URL path segments: no empty, "." or ".." segment. */
static bool vault_path_ok(const char *s)
{
        const char *p = s;

        for (;;) {
                size_t n = strcspn(p, "/");

                if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                        return false;
                if (p[n] == '\0')
                        return strcspn(s, "?#%") == strlen(s);
                p += n + 1;
        }
}

static void check_secret_name(struct ctx *x, const config_setting_t *g, const struct cfg_integration *in)
{
        const config_setting_t *s = config_setting_get_member(g, "secret");

        if (!in->store || !in->secret)
                return;
        if (in->store->type == STORE_AZURE && !azure_name_ok(in->secret))
                fail(x, s, "secret \"%s\": Azure Key Vault names are 1-127 of 0-9 a-z A-Z -", in->secret);
        else if (in->store->type == STORE_AWS && !aws_name_ok(in->secret))
                fail(x, s, "secret \"%s\": AWS secret names are 1-512 of letters, digits and /_+=.@-",
                     in->secret);
        else if (in->store->type == STORE_VAULT && !vault_path_ok(in->secret))
                fail(x, s, "secret \"%s\": Vault paths take no empty, \".\" or \"..\" segment, "
                     "nor ? # %%", in->secret);
}

/* A secret is a name in one store: the store entry holds everything else that
 * says where it is (Vault url, namespace, mount; AWS region; Azure vault).
 * Azure Key Vault names are case-insensitive. */
static bool secret_fold(const struct cfg_integration *in)
{
        return in->store->type == STORE_AZURE;
}

static bool secret_has(const void *e)
{
        const struct cfg_integration *in = e;

        return in->store && in->secret;
}

static size_t secret_hash(const void *e)
{
        const struct cfg_integration *in = e;
        size_t h = fnv1a(FNV_OFFSET, in->store->name);

        for (const char *s = in->secret; *s; s++)
                h = (h ^ (unsigned char)(secret_fold(in) ? tolower((unsigned char)*s) : *s)) * FNV_PRIME;
        return h;
}

static bool secret_same(const void *a, const void *b)
{
        const struct cfg_integration *ia = a, *ib = b;

        return ia->store == ib->store &&
               (secret_fold(ia) ? strcasecmp(ia->secret, ib->secret) : strcmp(ia->secret, ib->secret)) == 0;
}

static const struct dup_key secret_key = { secret_has, secret_hash, secret_same };

/* Two integrations writing one secret would each revoke the token the other
 * just stored. */
static void check_dup_secret(struct ctx *x, const config_setting_t *g, const char *what, size_t i)
{
        const struct cfg_integration *in = &x->c->integrations[i], *o;

        o = dup_find(x, &x->dup_secrets, &secret_key, x->c->integrations, sizeof(*in), i);
        if (o)
                fail(x, config_setting_get_member(g, "secret"),
                     "%s: store \"%s\" secret \"%s\" is already integration \"%s\"'s (line %d)",
                     what, in->store->name, in->secret, o->name ? o->name : "(no name)", o->line);
}

static void check_integration(struct ctx *x, const config_setting_t *g, const struct integration_parse *p,
                              const char *what)
{
        const config_setting_t *f = config_setting_get_member(g, "format");
        const struct cfg_integration *in = &p->in;

        check_policy(x, g, &p->policy, what);
        check_secret_name(x, g, in);
        if (in->format == FORMAT_RAW && in->store && in->store->type == STORE_VAULT &&
            in->store->kv_version == 1)
                fail(x, f, "format \"raw\" needs Vault kv_version 2 (store \"%s\" is kv_version 1: "
                     "no place for the marker)", in->store->name);
}

static void h_integrations(struct ctx *x, const config_setting_t *s, void *base, const struct keydef *k)
{
        struct config *c = x->c;
        int n = group_list(x, s);
        char what[96];

        if (n < 0 || !(c->integrations = alloc_entries(x, n, sizeof(*c->integrations))))
                return;
        c->n_integrations = (size_t)n;
        for (int i = 0; i < n; i++) {
                const config_setting_t *g = config_setting_get_elem(s, i);
                struct integration_parse p = {
                        .in = { .line = line_of(g), .format = FORMAT_JSON },
                        .policy = c->policy,
                };
                unsigned before = x->nerr;

                entry_what(g, "integration", i, what, sizeof(what));
                parse_group(x, g, integration_keys, &p, what);
                if (x->nerr == before)  /* later checks would only repeat the first error */
                        check_integration(x, g, &p, what);
                p.in.policy = intern_policy(x, &p.policy);
                /* Copied whatever happened: config_free frees what it holds. */
                c->integrations[i] = p.in;
                check_dup(x, g, "integration", c->integrations, sizeof(p.in), (size_t)i);
                check_dup_secret(x, g, what, (size_t)i);
        }
}

/* ---- top level ---- */

#define C_OFF(f) offsetof(struct config, f)
/* policy, accounts and stores before integrations, which refer to them. */
static const struct keydef top_keys[] = {
        { "state_dir", h_str, C_OFF(state_dir), 0 },
        { "max_parallel", h_max_parallel, C_OFF(max_parallel), 0 },
        { "oneshot_timeout", h_duration, C_OFF(oneshot_timeout), 0 },
        { "metrics_file", h_path, C_OFF(metrics_file), 0 },
        { "policy", h_policy, 0, 0 },
        { "onplana", h_onplana, 0, 0 },
        { "accounts", h_accounts, 0, 0 },
        { "stores", h_stores, 0, 0 },
        { "integrations", h_integrations, 0, 0 },
        KEY_END
};

static char *abs_dir(const char *path)
{
        char *copy = strdup(path), *d, *r = NULL;
        char cwd[PATH_MAX];

        if (!copy)
                return NULL;
        d = dirname(copy);
        if (d[0] == '/')
                r = strdup(d);
        else if (!getcwd(cwd, sizeof(cwd)))
                r = NULL;
        else if (strcmp(d, ".") == 0)
                r = strdup(cwd);
        else if (asprintf(&r, "%s/%s", cwd, d) < 0)
                r = NULL;
        free(copy);
        return r;
}

static int set_defaults(struct config *c, const char *path)
{
        c->path = strdup(path);
        c->dir = abs_dir(path);
        c->state_dir = strdup(DEFAULT_STATE_DIR);
        c->onplana.url = strdup(DEFAULT_ONPLANA_URL);
        c->max_parallel = 8;
        c->oneshot_timeout = 5 * 60;
        c->policy = (struct policy) {
                .ttl = 90 * 86400, .renew_before = 14 * 86400, .revoke_after = 0,
                .retry_min = 60, .retry_max = 3600,
        };
        if (!c->path || !c->dir || !c->state_dir || !c->onplana.url)
                return -ENOMEM;
        return 0;
}

/* ---- @include ---- */

#define INCLUDE_DEPTH_MAX 10    /* libconfig's MAX_INCLUDE_DEPTH */

static int check_includes(const config_t *cfg, FILE *f, const char *file, int depth);

/* The name in an `@include "name"` line, read the way libconfig's scanner
 * does: the directive starts the line; \\ and \" are the only escapes. */
static bool include_name(const char *line, char *name, size_t size)
{
        const char *p = line + strspn(line, " \t");
        size_t n = 0;

        if (strncmp(p, "@include", 8) != 0 || (p[8] != ' ' && p[8] != '\t'))
                return false;
        p += 8 + strspn(p + 8, " \t");
        if (*p != '"')
                return false;
        for (p++; *p && *p != '"' && n + 1 < size; p++, n++) {
                if (*p == '\\' && (p[1] == '\\' || p[1] == '"'))
                        p++;
                name[n] = *p;
        }
        name[n] = '\0';
        return *p == '"';       /* else libconfig reports it */
}

/* What `@include "name"` on file:line opens must be a regular file; its own
 * @includes are checked in turn.  What cannot be opened is left to libconfig,
 * which names it. */
static int check_include(const config_t *cfg, const char *file, int line, const char *name, int depth)
{
        const char *dir = config_get_include_dir(cfg);
        char path[PATH_MAX];
        struct stat st;
        FILE *f;
        int r;

        /* libconfig 1.5 puts include_dir before every name, absolute or not */
        if (snprintf(path, sizeof(path), "%s%s%s", dir ? dir : "", dir ? "/" : "", name) >= (int)sizeof(path) ||
            depth >= INCLUDE_DEPTH_MAX || stat(path, &st) < 0)
                return 0;
        if (!S_ISREG(st.st_mode)) {
                log_error(NULL, "%s:%d: @include \"%s\": not a regular file", file, line, name);
                return -EINVAL;
        }
        f = fopen(path, "re");
        if (!f)
                return 0;
        r = check_includes(cfg, f, path, depth + 1);
        fclose(f);
        return r;
}

/* libconfig 1.5 has no include hook, and when an @include names a folder (or
 * a FIFO, a device) its flex scanner fails mid-read and calls exit(2): a
 * SIGHUP reload would kill the daemon.  So the @include lines are found here
 * first.  One inside a block comment is checked too: harmless strictness. */
static int check_includes(const config_t *cfg, FILE *f, const char *file, int depth)
{
        char *buf = NULL, name[PATH_MAX];
        size_t cap = 0;
        int line = 0, r = 0;

        while (r == 0 && getline(&buf, &cap, f) >= 0) {
                line++;
                if (include_name(buf, name, sizeof(name)))
                        r = check_include(cfg, file, line, name, depth);
        }
        free(buf);
        return r;
}

/* Open, check the file and its permissions, parse the syntax.  A
 * configuration others can write could point patrol's credentials anywhere,
 * so it is refused. */
static int read_file(struct ctx *x, config_t *cfg)
{
        /* O_NONBLOCK: a FIFO named by mistake must not hang patrol */
        int fd = open(x->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        FILE *f = NULL;
        struct stat st;
        int r = 0;

        if (fd < 0 || fstat(fd, &st) < 0) {
                r = -errno;
                log_error(NULL, "%s: %s", x->path, strerror(errno));
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                log_error(NULL, "%s: not a regular file", x->path);
                r = -EINVAL;
                goto out;
        }
        x->mode = st.st_mode & 07777;
        x->shared = (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
        if (st.st_mode & (S_IWGRP | S_IWOTH)) {
                log_error(NULL, "%s: writable by group or others (mode %04o); refusing it "
                          "(chmod go-w)", x->path, x->mode);
                r = -EINVAL;
                goto out;
        }
        if (!(f = fdopen(fd, "r"))) {
                r = -errno;
                log_error(NULL, "%s: %s", x->path, strerror(errno));
                goto out;
        }
        fd = -1;
        r = check_includes(cfg, f, x->path, 0);
        if (r < 0)
                goto out;
        rewind(f);
        if (!config_read(cfg, f)) {
                log_error(NULL, "%s:%d: %s", config_error_file(cfg) ? config_error_file(cfg) : x->path,
                          config_error_line(cfg), config_error_text(cfg));
                r = -EINVAL;
        }
out:
        if (f)
                fclose(f);
        else if (fd >= 0)
                close(fd);
        return r;
}

int config_load(const char *path, bool check_files, struct config **ret)
{
        struct ctx x = { .path = path, .check_files = check_files };
        const char *cred = secure_getenv("CREDENTIALS_DIRECTORY");
        config_t cfg;
        int r;

        config_init(&cfg);
        x.c = calloc(1, sizeof(*x.c));
        if (!x.c || set_defaults(x.c, path) < 0) {
                r = -ENOMEM;
                goto out;
        }
        x.cred_dir = cred && *cred ? cred : x.c->dir;
        r = read_file(&x, &cfg);
        if (r < 0)
                goto out;
        /* A control character would make every later message about it confusing. */
        check_control(&x, config_root_setting(&cfg));
        if (x.err == 0)
                parse_group(&x, config_root_setting(&cfg), top_keys, x.c, "configuration");
        r = x.err;
        if (r == 0) {
                *ret = x.c;
                x.c = NULL;
        }
out:
        config_destroy(&cfg);
        config_free(x.c);
        free(x.dup_names.slots);
        free(x.dup_secrets.slots);
        free(x.strv_slots);
        return r;
}

/* ---- freeing and lookups ---- */

static void auth_free(struct cfg_auth *a)
{
        free(a->mount);
        a->token = secret_free(a->token);
        free(a->role_id);
        a->secret_id = secret_free(a->secret_id);
        free(a->role);
        free(a->jwt_file);
        free(a->profile);
        free(a->access_key_id);
        a->secret_access_key = secret_free(a->secret_access_key);
        a->session_token = secret_free(a->session_token);
        free(a->role_arn);
        free(a->external_id);
        free(a->session_name);
        free(a->tenant_id);
        free(a->client_id);
        a->client_secret = secret_free(a->client_secret);
        free(a->token_file);
}

static void store_free(struct cfg_store *s)
{
        free(s->name);
        free(s->url);
        free(s->ca_file);
        free(s->mount);
        free(s->namespace_);
        free(s->region);
        free(s->endpoint);
        free(s->sts_endpoint);
        free(s->imds_endpoint);
        free(s->container_endpoint);
        free(s->kms_key_id);
        free(s->authority_url);
        free(s->resource);
        auth_free(&s->auth);
}

static void integration_free(struct cfg_integration *in)
{
        free(in->name);
        free(in->secret);
        strv_free(in->on_rotate);
}

struct config *config_free(struct config *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_accounts; i++) {
                free(c->accounts[i].name);
                free(c->accounts[i].org);
                free(c->accounts[i].client_id);
                secret_free(c->accounts[i].client_secret);
        }
        for (size_t i = 0; i < c->n_stores; i++)
                store_free(&c->stores[i]);
        for (size_t i = 0; i < c->n_integrations; i++)
                integration_free(&c->integrations[i]);
        for (size_t i = 0; i < c->n_strvs; i++)
                strv_free(c->strvs[i]);
        free(c->strvs);
        while (c->policies) {
                struct cfg_policy *next = c->policies->next;

                free(c->policies);
                c->policies = next;
        }
        free(c->accounts);
        free(c->stores);
        free(c->integrations);
        free(c->onplana.url);
        free(c->onplana.ca_file);
        free(c->path);
        free(c->dir);
        free(c->state_dir);
        free(c->metrics_file);
        free(c);
        return NULL;
}

const struct cfg_integration *config_find_integration(const struct config *c, const char *name)
{
        for (size_t i = 0; c && i < c->n_integrations; i++)
                if (c->integrations[i].name && strcmp(c->integrations[i].name, name) == 0)
                        return &c->integrations[i];
        return NULL;
}

const struct cfg_account *config_find_account(const struct config *c, const char *name)
{
        for (size_t i = 0; c && i < c->n_accounts; i++)
                if (c->accounts[i].name && strcmp(c->accounts[i].name, name) == 0)
                        return &c->accounts[i];
        return NULL;
}
