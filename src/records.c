/* records.c: durable records.  state.json is a snapshot; state.journal holds
 * one line per recorded step (the whole entry of one integration), so that
 * recording a step costs one small append + fsync however many integrations
 * there are, and steps recorded at the same time share one fsync (group
 * commit).  Loading replays the journal over the snapshot; a torn last line
 * (crash mid-write) is ignored, and any other bad line is refused: only the
 * last can be torn.  Entries are found through a hash index.
 * Files are 0600 under umask 077. */
#include "records.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "duration.h"
#include "json.h"
#include "log.h"

/* Fold the journal into the snapshot after this many lines. */
#define JOURNAL_COMPACT_LINES 4096

/* Group commit: a thread that records a line waits until a flush has made
 * it durable.  Whoever finds no flush running writes everything queued so
 * far with one write() and one fsync, so concurrent steps share a sync.
 * Each waiter sleeps on its own condition: a flush wakes the threads whose
 * lines it carried and the first one queued behind them (the next flusher),
 * not every thread waiting on either file. */
struct commit_waiter {
        struct commit_waiter *next;
        pthread_cond_t wake;
        int rc;
        bool done;
};

struct appender {
        int fd;                 /* the journal: kept open; audit.jsonl: -1, opened per flush */
        const char *file;
        char *buf;              /* lines queued, not yet written */
        size_t len, cap;
        struct commit_waiter *head, **tail;
        bool flushing;
};

struct records {
        pthread_mutex_t lock;   /* rotations run in parallel threads */
        pthread_cond_t flushed; /* a flush finished */
        char *dir;
        bool readonly;
        int lock_fd;
        struct appender journal, audit;
        size_t journal_lines;
        struct rec_integration **v;
        size_t n, cap;
        struct rec_integration **index;         /* open addressing by name, 2 * cap slots */
};

static const char *const step_names[_STEP_MAX] = {
        [STEP_IDLE] = "idle", [STEP_CREATING] = "creating", [STEP_CREATED] = "created",
        [STEP_VERIFIED] = "verified", [STEP_WRITTEN] = "written", [STEP_READ_BACK] = "read_back",
        [STEP_PROMOTED] = "promoted", [STEP_HOOKED] = "hooked",
};

static const char *const result_names[] = {
        [RESULT_NONE] = "none", [RESULT_ROTATED] = "rotated",
        [RESULT_FAILED] = "failed", [RESULT_INCOMPLETE] = "incomplete",
};

const char *rot_step_name(enum rot_step s)
{
        return s < _STEP_MAX ? step_names[s] : "unknown";
}

const char *last_result_name(enum last_result r)
{
        return r <= RESULT_INCOMPLETE ? result_names[r] : "none";
}

/* A new value that fits where the old one is goes there: a rotation sets
 * ids of the same length as those it replaces, and new allocations kept
 * for the rest of a long run would be scattered among short-lived ones,
 * holding more of the heap resident than the records need. */
int rec_set(char **field, const char *value)
{
        char *c = NULL;

        if (value && *field) {
                size_t len = strlen(value) + 1;
                if (len <= malloc_usable_size(*field)) {
                        memmove(*field, value, len);
                        return 0;
                }
        }
        if (value && !(c = strdup(value)))
                return -ENOMEM;
        free(*field);
        *field = c;
        return 0;
}

void rec_clear_flight(struct rec_integration *ri)
{
        ri->step = STEP_IDLE;
        rec_set(&ri->rotation_id, NULL);
        rec_set(&ri->new_name, NULL);
        rec_set(&ri->new_token_id, NULL);
        rec_set(&ri->new_version, NULL);
        rec_set(&ri->old_token_id, NULL);
        rec_set(&ri->old_version, NULL);
        ri->new_expires_at = 0;
}

static void rec_free(struct rec_integration *ri)
{
        if (!ri)
                return;
        rec_clear_flight(ri);
        free(ri->token_id);
        free(ri->version);
        free(ri->last_error);
        free(ri->revoke_token_id);
        free(ri);
}

/* ---- JSON form of one entry ---- */

static void add_str(struct json_object *o, const char *k, const char *v)
{
        if (v)
                json_object_object_add(o, k, json_object_new_string(v));
}

static void add_time(struct json_object *o, const char *k, int64_t t)
{
        char buf[32];

        if (t) {
                time_format_rfc3339(t, buf, sizeof(buf));
                json_object_object_add(o, k, json_object_new_string(buf));
        }
}

static struct json_object *entry_to_json(const struct rec_integration *ri)
{
        struct json_object *o = json_object_new_object();

        add_str(o, "token_id", ri->token_id);
        add_time(o, "expires_at", ri->expires_at);
        add_str(o, "version", ri->version);
        add_time(o, "next_rotation", ri->next_rotation);
        add_time(o, "last_rotation", ri->last_rotation);
        add_str(o, "last_result", last_result_name(ri->last_result));
        add_str(o, "last_error", ri->last_error);
        json_object_object_add(o, "failures", json_object_new_int(ri->failures));
        if (ri->step != STEP_IDLE) {
                struct json_object *f = json_object_new_object();
                add_str(f, "step", rot_step_name(ri->step));
                add_str(f, "rotation_id", ri->rotation_id);
                add_str(f, "new_name", ri->new_name);
                add_str(f, "new_token_id", ri->new_token_id);
                add_time(f, "new_expires_at", ri->new_expires_at);
                add_str(f, "new_version", ri->new_version);
                add_str(f, "old_token_id", ri->old_token_id);
                add_str(f, "old_version", ri->old_version);
                json_object_object_add(o, "in_flight", f);
        }
        if (ri->revoke_token_id) {
                struct json_object *p = json_object_new_object();
                add_str(p, "token_id", ri->revoke_token_id);
                add_time(p, "due", ri->revoke_due);
                json_object_object_add(o, "revocation", p);
        }
        return o;
}

static int get_s(struct json_object *o, const char *k, char **field)
{
        const char *s;

        if (json_get_str_opt(o, k, &s) < 0)
                return -EBADMSG;
        return rec_set(field, s);
}

static int get_t(struct json_object *o, const char *k, int64_t *field)
{
        const char *s;

        *field = 0;
        if (json_get_str_opt(o, k, &s) < 0)
                return -EBADMSG;
        return s ? time_parse_rfc3339(s, field) : 0;
}

/* A name this patrol does not know (a newer one's, damage) is an error, not
 * "idle" or "none": read so, a rotation in flight would be forgotten and the
 * token it created never revoked.  An in_flight always has a step past idle. */
static int step_from_name(const char *s, enum rot_step *ret, char *why, size_t whylen)
{
        int i;

        for (i = STEP_IDLE + 1; s && i < _STEP_MAX; i++)
                if (strcmp(s, step_names[i]) == 0) {
                        *ret = (enum rot_step)i;
                        return 0;
                }
        if (s)
                snprintf(why, whylen, "unknown step \"%.32s\"", s);
        else
                snprintf(why, whylen, "in_flight without a step");
        return -EBADMSG;
}

/* No last_result at all is "none"; one patrol does not know is an error. */
static int result_from_name(const char *s, enum last_result *ret, char *why, size_t whylen)
{
        int i;

        for (i = 0; s && i <= RESULT_INCOMPLETE; i++)
                if (strcmp(s, result_names[i]) == 0) {
                        *ret = (enum last_result)i;
                        return 0;
                }
        if (!s) {
                *ret = RESULT_NONE;
                return 0;
        }
        snprintf(why, whylen, "unknown last_result \"%.32s\"", s);
        return -EBADMSG;
}

static int flight_from_json(struct json_object *f, struct rec_integration *ri, char *why, size_t whylen)
{
        const char *step;
        int r = 0;

        if (json_get_str_opt(f, "step", &step) < 0 || step_from_name(step, &ri->step, why, whylen) < 0)
                return -EBADMSG;
        r |= get_s(f, "rotation_id", &ri->rotation_id);
        r |= get_s(f, "new_name", &ri->new_name);
        r |= get_s(f, "new_token_id", &ri->new_token_id);
        r |= get_t(f, "new_expires_at", &ri->new_expires_at);
        r |= get_s(f, "new_version", &ri->new_version);
        r |= get_s(f, "old_token_id", &ri->old_token_id);
        r |= get_s(f, "old_version", &ri->old_version);
        return r ? -EBADMSG : 0;
}

/* why: what is wrong, when more can be said than "bad entry" (else left alone). */
static int entry_from_json(struct json_object *o, struct rec_integration *ri, char *why, size_t whylen)
{
        struct json_object *sub, *fail;
        const char *res;
        int r = 0;

        if (!json_object_is_type(o, json_type_object))
                return -EBADMSG;
        rec_clear_flight(ri);
        r |= get_s(o, "token_id", &ri->token_id);
        r |= get_t(o, "expires_at", &ri->expires_at);
        r |= get_s(o, "version", &ri->version);
        r |= get_t(o, "next_rotation", &ri->next_rotation);
        r |= get_t(o, "last_rotation", &ri->last_rotation);
        r |= get_s(o, "last_error", &ri->last_error);
        if (json_get_str_opt(o, "last_result", &res) < 0 ||
            result_from_name(res, &ri->last_result, why, whylen) < 0)
                return -EBADMSG;
        ri->failures = json_object_object_get_ex(o, "failures", &fail) ? json_object_get_int(fail) : 0;
        if (json_object_object_get_ex(o, "in_flight", &sub) && sub)
                r |= flight_from_json(sub, ri, why, whylen);
        rec_set(&ri->revoke_token_id, NULL);
        ri->revoke_due = 0;
        if (json_object_object_get_ex(o, "revocation", &sub) && sub) {
                r |= get_s(sub, "token_id", &ri->revoke_token_id);
                r |= get_t(sub, "due", &ri->revoke_due);
        }
        return r ? -EBADMSG : 0;
}

/* ---- the entry table ---- */

static size_t name_hash(const char *s)
{
        size_t h = 14695981039346656037ULL;     /* FNV-1a */

        while (*s)
                h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
        return h;
}

/* The slot holding name, or the empty one where it would go. */
static size_t index_slot(struct rec_integration *const *index, size_t slots, const char *name)
{
        size_t i = name_hash(name) & (slots - 1);

        while (index[i] && strcmp(index[i]->name, name) != 0)
                i = (i + 1) & (slots - 1);
        return i;
}

/* cap is a power of two: the index has twice as many slots, never over half full. */
static int grow(struct records *r)
{
        size_t cap = r->cap ? r->cap * 2 : 16, i;
        struct rec_integration **nv = realloc(r->v, cap * sizeof(*nv));
        struct rec_integration **ni;

        if (!nv)
                return -ENOMEM;
        r->v = nv;
        ni = calloc(2 * cap, sizeof(*ni));
        if (!ni)
                return -ENOMEM;
        for (i = 0; i < r->n; i++)
                ni[index_slot(ni, 2 * cap, r->v[i]->name)] = r->v[i];
        free(r->index);
        r->index = ni;
        r->cap = cap;
        return 0;
}

struct rec_integration *records_find(struct records *r, const char *name)
{
        if (!r->index)
                return NULL;
        return r->index[index_slot(r->index, 2 * r->cap, name)];
}

struct rec_integration *records_get(struct records *r, const char *name)
{
        struct rec_integration *ri = records_find(r, name);
        size_t len;

        if (ri)
                return ri;
        if (r->n == r->cap && grow(r) < 0)
                return NULL;
        len = strlen(name) + 1;
        ri = calloc(1, sizeof(*ri) + len);
        if (!ri)
                return NULL;
        ri->name = memcpy(ri->name_buf, name, len);
        r->v[r->n++] = ri;
        r->index[index_slot(r->index, 2 * r->cap, name)] = ri;
        return ri;
}

size_t records_count(const struct records *r)
{
        return r->n;
}

struct rec_integration *records_at(struct records *r, size_t i)
{
        return i < r->n ? r->v[i] : NULL;
}

/* ---- files ---- */

static char *path_in(const struct records *r, const char *file)
{
        size_t n = strlen(r->dir) + strlen(file) + 2;
        char *p = malloc(n);

        if (p)
                snprintf(p, n, "%s/%s", r->dir, file);
        return p;
}

static int read_file(const char *path, char **ret, size_t *ret_len)
{
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0, cap = 0, first = 65536;
        struct stat st;

        if (!f)
                return -errno;
        /* Sized to the file (room for the read that sees its end): no doubling. */
        if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX / 4)
                first = (size_t)st.st_size + 4096 + 2;
        for (;;) {
                if (len + 4096 + 1 > cap) {
                        char *nb = realloc(buf, cap = cap ? cap * 2 : first);
                        if (!nb) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = nb;
                }
                size_t n = fread(buf + len, 1, cap - len - 1, f);
                len += n;
                if (n == 0)
                        break;
        }
        fclose(f);
        buf[len] = '\0';
        *ret = buf;
        *ret_len = len;
        return 0;
}

static int apply_entry(struct records *r, const char *name, struct json_object *o, char *why, size_t whylen)
{
        struct rec_integration *ri = records_get(r, name);

        return ri ? entry_from_json(o, ri, why, whylen) : -ENOMEM;
}

/* ---- state.json, one entry at a time ----
 * The snapshot is {"version": 1, "integrations": {NAME: ENTRY, ...}}.  json-c
 * spends about 2 KiB per entry on a tree, which for thousands of entries made
 * loading the peak of patrol's memory; instead the two outer levels are
 * walked here and json-c parses one member (key, then value) at a time, each
 * freed before the next.  Every value is still parsed in full, so anything
 * that is not JSON is refused as before. */

static const char *skip_ws(const char *p, const char *end)
{
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                p++;
        return p;
}

static bool is_delim(char c)
{
        return c == ',' || c == '}' || c == ']' || c == ':' || c == ' ' || c == '\t' || c == '\n' ||
               c == '\r';
}

/* The end of the JSON value that starts at p, or NULL when it never ends.
 * Only strings and brackets are followed; json-c checks the rest. */
static const char *skip_value(const char *p, const char *end)
{
        size_t depth = 0;

        do {
                if (p >= end)
                        return NULL;
                if (*p == '"') {
                        for (p++; p < end && *p != '"'; p++)
                                if (*p == '\\')
                                        p++;
                        if (p >= end)
                                return NULL;
                        p++;
                } else if (*p == '{' || *p == '[') {
                        depth++;
                        p++;
                } else if (*p == '}' || *p == ']') {
                        if (depth == 0)
                                return NULL;
                        depth--;
                        p++;
                } else if (depth == 0) {
                        while (p < end && !is_delim(*p))
                                p++;
                } else {
                        p++;
                }
        } while (depth > 0);
        return p;
}

/* json-c's tree of exactly [p, end), or NULL. */
static struct json_object *parse_slice(struct json_tokener *tok, const char *p, const char *end)
{
        struct json_object *o;

        if (end - p > INT32_MAX)
                return NULL;
        json_tokener_reset(tok);
        o = json_tokener_parse_ex(tok, p, (int)(end - p));
        /* A number at the very end is only known to be whole at a NUL. */
        if (!o && json_tokener_get_error(tok) == json_tokener_continue)
                return json_tokener_parse_ex(tok, "", 1);
        if (o && (json_tokener_get_error(tok) != json_tokener_success ||
                  json_tokener_get_parse_end(tok) != (size_t)(end - p))) {
                json_object_put(o);
                o = NULL;
        }
        return o;
}

/* Calls fn(key, value start, value end) for each member of the object at
 * [p, end); *ret_end is where the object ends.  0, -EBADMSG, or fn's error. */
static int for_each_member(struct json_tokener *tok, const char *p, const char *end, const char **ret_end,
                           int (*fn)(void *u, const char *key, const char *v, const char *vend), void *u)
{
        bool first = true;

        p = skip_ws(p, end);
        if (p >= end || *p != '{')
                return -EBADMSG;
        for (p++;; first = false) {
                struct json_object *k;
                const char *kend, *v, *vend;
                int rc;

                p = skip_ws(p, end);
                if (p < end && *p == '}')
                        break;          /* a '}' right after a ',' is a key missing, below */
                if (!first) {
                        if (p >= end || *p != ',')
                                return -EBADMSG;
                        p = skip_ws(p + 1, end);
                }
                if (p >= end || *p != '"' || !(kend = skip_value(p, end)))
                        return -EBADMSG;
                k = parse_slice(tok, p, kend);
                if (!k || !json_object_is_type(k, json_type_string)) {
                        json_object_put(k);
                        return -EBADMSG;
                }
                p = skip_ws(kend, end);
                v = p < end && *p == ':' ? skip_ws(p + 1, end) : NULL;
                vend = v ? skip_value(v, end) : NULL;
                rc = vend ? fn(u, json_object_get_string(k), v, vend) : -EBADMSG;
                json_object_put(k);
                if (rc < 0)
                        return rc;
                p = vend;
        }
        *ret_end = p + 1;
        return 0;
}

struct snapshot_load {
        struct records *r;
        struct json_tokener *tok;
        const char *bad;                /* the entry that did not load */
        char why[96];                   /* what is wrong with it, when known */
        bool seen;                      /* "integrations" was there */
};

static int load_entry(void *u, const char *name, const char *v, const char *vend)
{
        struct snapshot_load *l = u;
        struct json_object *o = parse_slice(l->tok, v, vend);
        int rc = o ? apply_entry(l->r, name, o, l->why, sizeof(l->why)) : -EBADMSG;

        json_object_put(o);
        if (rc < 0 && !l->bad)
                l->bad = strdup(name);
        return rc;
}

static int load_top(void *u, const char *key, const char *v, const char *vend)
{
        struct snapshot_load *l = u;
        struct json_object *o;
        const char *e;

        if (strcmp(key, "integrations") == 0) {
                l->seen = true;
                return for_each_member(l->tok, v, vend, &e, load_entry, l) < 0 || skip_ws(e, vend) != vend
                        ? -EBADMSG : 0;
        }
        o = parse_slice(l->tok, v, vend);       /* "version" and the like: JSON, unused */
        json_object_put(o);
        return o ? 0 : -EBADMSG;
}

static int load_snapshot(struct records *r, char *err, size_t errlen)
{
        char *path = path_in(r, "state.json"), *buf = NULL;
        struct snapshot_load l = { .r = r };
        const char *end = NULL;
        size_t len = 0;
        int rc;

        if (!path)
                return -ENOMEM;
        rc = read_file(path, &buf, &len);
        if (rc == -ENOENT) {
                rc = 0;
                goto out;
        }
        if (rc < 0) {
                snprintf(err, errlen, "%s: %s", path, strerror(-rc));
                goto out;
        }
        l.tok = json_tokener_new();
        if (!l.tok) {
                rc = -ENOMEM;
                goto out;
        }
        rc = for_each_member(l.tok, buf, buf + len, &end, load_top, &l);
        if (rc == -ENOMEM) {
                snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
        } else if (rc < 0 && l.bad) {
                snprintf(err, errlen, "%s: integration \"%s\": bad entry%s%s%s", path, l.bad,
                         l.why[0] ? " (" : "", l.why, l.why[0] ? ")" : "");
        } else if (rc < 0 || !l.seen || skip_ws(end, buf + len) != buf + len) {
                snprintf(err, errlen, "%s: not a patrol state file (bad JSON)", path);
                rc = -EBADMSG;
        }
out:
        if (l.tok)
                json_tokener_free(l.tok);
        free((char *)l.bad);
        free(buf);
        free(path);
        return rc;
}

/* One journal line, {"integration":NAME,"entry":{...}}, applied.  On
 * -EBADMSG, why says what is wrong and *ret_unparsable whether the line is
 * not even JSON (what a crash mid-append leaves). */
static int apply_journal_line(struct records *r, const char *line, size_t len, bool *ret_unparsable,
                              char *why, size_t whylen)
{
        struct json_object *o = json_parse(line, len), *e;
        const char *name;
        char detail[96] = "";
        int rc = -EBADMSG;

        *ret_unparsable = !o;
        if (!o || json_get_str(o, "integration", &name, NULL, 0) < 0 ||
            json_get_obj(o, "entry", &e, NULL, 0) < 0) {
                snprintf(why, whylen, "not a journal line (bad JSON, or no \"integration\" and \"entry\")");
                goto out;
        }
        rc = apply_entry(r, name, e, detail, sizeof(detail));
        if (rc == -EBADMSG)
                snprintf(why, whylen, "integration \"%.64s\": bad entry%s%s%s", name,
                         detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
out:
        json_object_put(o);
        return rc;
}

static bool at_end(FILE *f)
{
        int c = getc(f);

        if (c == EOF)
                return true;
        ungetc(c, f);
        return false;
}

/* Only the last line can be torn: a crash mid-append, and every open folds
 * the journal away.  So a last line that is not JSON is ignored, and any
 * other bad line refuses the records: skipping it, or stopping there, would
 * lose the lines after it for good (the open folds what it loaded into the
 * snapshot), a rotation in flight among them. */
static int load_journal(struct records *r, char *err, size_t errlen)
{
        char *path = path_in(r, "state.journal"), *buf = NULL, why[256];
        size_t cap = 0, lineno = 0;
        bool unparsable;
        ssize_t len;
        FILE *f = NULL;
        int rc = 0;

        if (!path)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f) {
                if (errno != ENOENT)
                        rc = -errno;
                goto out;
        }
        /* A line at a time: after a crash mid-run the journal can hold
         * several lines per integration. */
        while ((len = getline(&buf, &cap, f)) >= 0) {
                lineno++;
                while (len > 0 && buf[len - 1] == '\n')
                        buf[--len] = '\0';
                if (len == 0)
                        continue;
                rc = apply_journal_line(r, buf, (size_t)len, &unparsable, why, sizeof(why));
                if (rc == -EBADMSG && unparsable && at_end(f)) {
                        log_warning(NULL, "%s:%zu: ignoring a torn last line", path, lineno);
                        rc = 0;
                        break;
                }
                if (rc == -EBADMSG)
                        snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
                if (rc < 0)
                        goto out;
                r->journal_lines++;
        }
        if (ferror(f))
                rc = -EIO;
out:
        if (rc < 0 && rc != -EBADMSG)
                snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        if (f)
                fclose(f);
        free(buf);
        free(path);
        return rc;
}

static int fsync_dir(const char *dir)
{
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r = 0;

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

static int write_all(int fd, const char *buf, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

#ifdef ENABLE_CRASH_POINTS
void crash_point(const char *name);
#else
#define crash_point(name) ((void)0)
#endif

/* state.json, written one entry at a time (no tree of every entry in
 * memory), in the shape load_snapshot reads. */
static int write_snapshot(const struct records *r, FILE *f)
{
        const int flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;
        size_t i;

        fputs("{\n  \"version\": 1,\n  \"integrations\": {", f);
        for (i = 0; i < r->n; i++) {
                struct json_object *name = json_object_new_string(r->v[i]->name);
                struct json_object *e = entry_to_json(r->v[i]);
                if (name && e)
                        fprintf(f, "%s\n    %s: %s", i ? "," : "", json_object_to_json_string_ext(name, flags),
                                json_object_to_json_string_ext(e, flags));
                json_object_put(name);
                json_object_put(e);
                if (!name || !e)
                        return -ENOMEM;
        }
        fputs("\n  }\n}\n", f);
        return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

/* temporary file, write, fsync, rename, fsync the folder. */
static int write_atomic(const struct records *r, const char *file)
{
        char *path = path_in(r, file), *tmp = path_in(r, "state.json.tmp");
        FILE *f = NULL;
        int fd = -1, rc;

        if (!path || !tmp) {
                rc = -ENOMEM;
                goto out;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || !(f = fdopen(fd, "w"))) {
                rc = -errno;
                goto out;
        }
        rc = write_snapshot(r, f);
        if (rc == 0 && fsync(fd) < 0)
                rc = -errno;
        if (rc < 0)
                goto out;
        crash_point("records-before-rename");
        if (rename(tmp, path) < 0) {
                rc = -errno;
                goto out;
        }
        rc = fsync_dir(r->dir);
out:
        if (f)
                fclose(f);
        else if (fd >= 0)
                close(fd);
        free(path);
        free(tmp);
        return rc;
}

/* ---- group commit ---- */

static int append_line(struct appender *a, const char *line, size_t len)
{
        if (a->len + len + 1 > a->cap) {
                size_t cap = a->cap ? a->cap : 4096;
                char *nb;
                while (cap < a->len + len + 1)
                        cap *= 2;
                nb = realloc(a->buf, cap);
                if (!nb)
                        return -ENOMEM;
                a->buf = nb;
                a->cap = cap;
        }
        memcpy(a->buf + a->len, line, len);
        a->buf[a->len + len] = '\n';
        a->len += len + 1;
        return 0;
}

/* One write() of whole lines: O_APPEND keeps them whole, and a crash leaves
 * at most a torn last line, which no caller was told was durable. */
static int write_synced(const struct records *r, const struct appender *a, const char *buf, size_t len)
{
        char *path = NULL;
        int fd = a->fd, rc;

        if (fd < 0) {
                path = path_in(r, a->file);
                if (!path)
                        return -ENOMEM;
                fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
                free(path);
                if (fd < 0)
                        return -errno;
        }
        rc = write_all(fd, buf, len);
        if (rc == 0 && (a->fd >= 0 ? fdatasync(fd) : fsync(fd)) < 0)
                rc = -errno;
        if (fd != a->fd)
                close(fd);
        return rc;
}

/* Write and sync everything queued, outside the lock so that other threads
 * queue the next batch meanwhile.  Called and returns with r->lock held. */
static void flush(struct records *r, struct appender *a)
{
        struct commit_waiter *w = a->head, *next;
        char *buf = a->buf;
        size_t len = a->len;
        int rc;

        a->buf = NULL;
        a->len = a->cap = 0;
        a->head = NULL;
        a->tail = &a->head;
        a->flushing = true;
        pthread_mutex_unlock(&r->lock);
        rc = write_synced(r, a, buf, len);
        free(buf);
        pthread_mutex_lock(&r->lock);
        for (; w; w = next) {
                next = w->next;
                w->rc = rc;
                w->done = true;
                pthread_cond_signal(&w->wake);
        }
        a->flushing = false;
        if (a->head)
                pthread_cond_signal(&a->head->wake);    /* the next batch's flusher */
        pthread_cond_broadcast(&r->flushed);
}

/* Queue one line and return once it is durable (r->lock held). */
static int commit(struct records *r, struct appender *a, const char *line, size_t len)
{
        struct commit_waiter me = { .next = NULL }, *w = &me;

        if (append_line(a, line, len) < 0)
                return -ENOMEM;
        pthread_cond_init(&w->wake, NULL);
        *a->tail = w;
        a->tail = &w->next;
        while (!w->done) {
                if (a->flushing)
                        pthread_cond_wait(&w->wake, &r->lock);
                else
                        flush(r, a);
        }
        pthread_cond_destroy(&w->wake);
        return w->rc;
}

/* ---- snapshot, journal, audit ---- */

static int compact_locked(struct records *r)
{
        int rc;

        if (r->readonly)
                return -EROFS;
        while (r->journal.flushing || r->journal.head) {
                if (r->journal.flushing)
                        pthread_cond_wait(&r->flushed, &r->lock);
                else
                        flush(r, &r->journal);
        }
        rc = write_atomic(r, "state.json");
        if (rc < 0)
                return rc;
        /* The snapshot now holds everything the journal did; replaying the
         * journal again after a crash here would be harmless (whole entries). */
        if (ftruncate(r->journal.fd, 0) < 0 || fsync(r->journal.fd) < 0)
                return -errno;
        r->journal_lines = 0;
        return 0;
}

/* json-c's text of o, copied (o is released either way). */
static char *dump_line(struct json_object *o, size_t *ret_len)
{
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        char *line = s ? strdup(s) : NULL;

        if (line)
                *ret_len = strlen(line);
        json_object_put(o);
        return line;
}

static char *journal_line(const struct rec_integration *ri, size_t *ret_len)
{
        struct json_object *line = json_object_new_object();

        json_object_object_add(line, "integration", json_object_new_string(ri->name));
        json_object_object_add(line, "entry", entry_to_json(ri));
        return dump_line(line, ret_len);
}

static char *audit_line(const struct audit_event *ev, size_t *ret_len)
{
        struct json_object *o = json_object_new_object();
        char now[32];

        time_format_rfc3339(now_wall(), now, sizeof(now));
        add_str(o, "time", now);
        add_str(o, "integration", ev->integration);
        add_str(o, "event", ev->event);
        json_object_object_add(o, "old_token_id", ev->old_token_id ? json_object_new_string(ev->old_token_id) : NULL);
        json_object_object_add(o, "new_token_id", ev->new_token_id ? json_object_new_string(ev->new_token_id) : NULL);
        add_str(o, "store", ev->store);
        add_str(o, "secret", ev->secret);
        json_object_object_add(o, "version", ev->version ? json_object_new_string(ev->version) : NULL);
        if (ev->error)
                add_str(o, "error", ev->error);
        return dump_line(o, ret_len);
}

int records_compact(struct records *r)
{
        int rc;

        pthread_mutex_lock(&r->lock);
        rc = compact_locked(r);
        pthread_mutex_unlock(&r->lock);
        return rc;
}

int records_compact_if_due(struct records *r)
{
        return r->journal_lines >= JOURNAL_COMPACT_LINES ? records_compact(r) : 0;
}

/* The caller owns ri, so its line is built outside the lock. */
int records_save(struct records *r, const struct rec_integration *ri)
{
        size_t len = 0;
        char *line;
        int rc;

        if (r->readonly)
                return -EROFS;
        line = journal_line(ri, &len);
        if (!line)
                return -ENOMEM;
        pthread_mutex_lock(&r->lock);
        rc = commit(r, &r->journal, line, len);
        if (rc == 0)
                r->journal_lines++;
        pthread_mutex_unlock(&r->lock);
        free(line);
        return rc;
}

int records_audit(struct records *r, const struct audit_event *ev)
{
        size_t len = 0;
        char *line = audit_line(ev, &len);
        int rc;

        if (!line)
                return -ENOMEM;
        pthread_mutex_lock(&r->lock);
        rc = commit(r, &r->audit, line, len);
        pthread_mutex_unlock(&r->lock);
        free(line);
        return rc;
}

static int prepare_dir(const char *dir, bool readonly, char *err, size_t errlen)
{
        struct stat st;

        if (stat(dir, &st) < 0) {
                if (errno == ENOENT && readonly)
                        return 0;       /* nothing recorded yet: empty records */
                if (errno != ENOENT) {
                        snprintf(err, errlen, "state_dir %s: %s", dir, strerror(errno));
                        return -errno;
                }
                if (mkdir(dir, 0700) < 0 || stat(dir, &st) < 0) {
                        snprintf(err, errlen, "state_dir %s: cannot create: %s", dir, strerror(errno));
                        return -errno;
                }
        }
        if (!S_ISDIR(st.st_mode)) {
                snprintf(err, errlen, "state_dir %s: not a folder", dir);
                return -ENOTDIR;
        }
        /* Anyone who can write here can forge the records patrol acts on. */
        if (st.st_mode & (S_IWGRP | S_IWOTH)) {
                snprintf(err, errlen, "state_dir %s: writable by group or others (mode %03o); refusing",
                         dir, (unsigned)(st.st_mode & 0777));
                return -EPERM;
        }
        return 0;
}

static int take_lock(struct records *r, char *err, size_t errlen)
{
        char *path = path_in(r, "lock");
        int rc = 0;

        if (!path)
                return -ENOMEM;
        r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (r->lock_fd < 0)
                rc = -errno;
        else if (flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0)
                rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (rc == -EBUSY)
                snprintf(err, errlen, "state_dir %s: another patrol is running on it", r->dir);
        else if (rc < 0)
                snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        free(path);
        return rc;
}

static int open_journal(struct records *r, char *err, size_t errlen)
{
        char *path = path_in(r, "state.journal");

        if (!path)
                return -ENOMEM;
        r->journal.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (r->journal.fd < 0) {
                int rc = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                free(path);
                return rc;
        }
        free(path);
        return 0;
}

/* A line torn by a crash mid-write ends at the next line appended: without
 * this, the next event would be glued to it and lost to line readers. */
static int end_torn_audit_line(const struct records *r, char *err, size_t errlen)
{
        char *path = path_in(r, r->audit.file), last;
        int fd, rc = 0;

        if (!path)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                if (errno != ENOENT) {
                        rc = -errno;
                        snprintf(err, errlen, "%s: %s", path, strerror(errno));
                }
                goto out;
        }
        if (pread(fd, &last, 1, lseek(fd, 0, SEEK_END) - 1) == 1 && last != '\n' &&
            (write_all(fd, "\n", 1) < 0 || fsync(fd) < 0)) {
                rc = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
        }
        close(fd);
out:
        free(path);
        return rc;
}

static bool journal_has_bytes(const struct records *r)
{
        struct stat st;

        return fstat(r->journal.fd, &st) < 0 || st.st_size > 0;
}

int records_open(const char *state_dir, bool readonly, struct records **ret, char *err, size_t errlen)
{
        struct records *r = calloc(1, sizeof(*r));
        int rc;

        if (!r || !(r->dir = strdup(state_dir))) {
                free(r);
                return -ENOMEM;
        }
        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->flushed, NULL);
        r->readonly = readonly;
        r->lock_fd = r->journal.fd = r->audit.fd = -1;
        r->journal.file = "state.journal";
        r->audit.file = "audit.jsonl";
        r->journal.tail = &r->journal.head;
        r->audit.tail = &r->audit.head;
        rc = prepare_dir(state_dir, readonly, err, errlen);
        if (rc == 0 && !readonly)
                rc = take_lock(r, err, errlen);
        if (rc == 0)
                rc = load_snapshot(r, err, errlen);
        if (rc == 0)
                rc = load_journal(r, err, errlen);
        if (rc == 0 && !readonly)
                rc = open_journal(r, err, errlen);
        if (rc == 0 && !readonly)
                rc = end_torn_audit_line(r, err, errlen);
        /* Start from a clean snapshot so the journal only holds this run.
         * Even a journal with no whole line is folded away: a torn tail left
         * there would glue itself to the next line appended, and a bad line
         * that is not the last is refused at the next load. */
        if (rc == 0 && !readonly && journal_has_bytes(r)) {
                rc = records_compact(r);
                if (rc < 0)
                        snprintf(err, errlen, "%s/state.json: %s", state_dir, strerror(-rc));
        }
        if (rc < 0) {
                records_close(r);
                return rc;
        }
        *ret = r;
        return 0;
}

struct records *records_close(struct records *r)
{
        size_t i;

        if (!r)
                return NULL;
        if (!r->readonly && r->journal.fd >= 0 && r->journal_lines > 0)
                (void)records_compact(r);
        for (i = 0; i < r->n; i++)
                rec_free(r->v[i]);
        free(r->v);
        if (r->journal.fd >= 0)
                close(r->journal.fd);
        if (r->lock_fd >= 0)
                close(r->lock_fd);
        free(r->dir);
        free(r->index);
        pthread_cond_destroy(&r->flushed);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
}
