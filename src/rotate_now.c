/* rotate_now.c: `patrol --rotate-now [NAME...]`: rotate the named
 * integrations at once, retrying transient failures within
 * oneshot_timeout, and say what was done (a table, or --json). */
#include "cli.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "duration.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "records.h"
#include "rotate.h"

static int select_integrations(const struct config *cfg, const struct cli *c,
                               const struct cfg_integration ***ret, size_t *ret_n)
{
        const struct cfg_integration **v;
        size_t i, n = c->n_names ? c->n_names : cfg->n_integrations;

        v = calloc(n + 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (i = 0; i < n; i++) {
                v[i] = c->n_names ? config_find_integration(cfg, c->names[i]) : &cfg->integrations[i];
                if (!v[i]) {
                        const char **names = calloc(cfg->n_integrations + 1, sizeof(char *));
                        const char *hint = NULL;
                        for (size_t k = 0; names && k < cfg->n_integrations; k++)
                                names[k] = cfg->integrations[k].name;
                        if (names)
                                hint = config_suggest(c->names[i], names, cfg->n_integrations);
                        fprintf(stderr, "patrol: no integration named \"%s\"%s%s%s\n", c->names[i],
                                hint ? "; did you mean \"" : "", hint ? hint : "", hint ? "\"?" : "");
                        free(names);
                        free(v);
                        return -ENOENT;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static void sleep_s(int64_t secs)
{
        struct timespec ts = { .tv_sec = secs, .tv_nsec = 0 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Transient failures are tried again with the policy's backoff until
 * oneshot_timeout, counted from this integration's first attempt. */
static void rotate_one(struct rotate_ctx *ctx, const struct config *cfg,
                       const struct cfg_integration *in, bool dry_run, struct rotate_result *res)
{
        int64_t start = now_mono_ms(), deadline = start + cfg->oneshot_timeout * 1000;
        int64_t delay = in->policy->retry_min;

        http_set_deadline(deadline);
        for (;;) {
                int64_t wait;

                rotate_integration(ctx, in, dry_run, res);
                if (dry_run || !res->transient ||
                    (res->outcome != OUTCOME_FAILED && res->outcome != OUTCOME_INCOMPLETE))
                        break;
                wait = delay / 2 + (delay > 1 ? random() % (delay / 2 + 1) : 0);
                if (res->retry_after > wait)
                        wait = res->retry_after;
                if (now_mono_ms() + wait * 1000 > deadline)
                        break;
                log_warning(in->name, "%s; trying again in %llds", res->error, (long long)wait);
                sleep_s(wait);
                delay = delay * 2 > in->policy->retry_max ? in->policy->retry_max : delay * 2;
        }
        http_set_deadline(0);
}

/* What is kept of an integration's rotate_result until it is printed: the
 * full struct is over a kilobyte, most of it empty buffers.  The struct and
 * its strings are one allocation. */
struct done {
        enum rotate_outcome outcome;
        int64_t expires_at;
        const char *old_token_id;
        const char *new_token_id;
        const char *version;
        const char *error;      /* failed or incomplete only */
};

/* Stands in for a result that could not be kept for want of memory. */
static const struct done done_oom = { .outcome = OUTCOME_FAILED, .error = "out of memory" };

static const struct done *keep(const struct rotate_result *r)
{
        bool failed = r->outcome == OUTCOME_FAILED || r->outcome == OUTCOME_INCOMPLETE;
        const char *src[] = { r->old_token_id, r->new_token_id, r->version,
                              failed ? (r->error[0] ? r->error : "unknown error") : "" };
        struct done *d;
        const char **dst[4];
        size_t len = sizeof(*d), i;
        char *p;

        for (i = 0; i < 4; i++)
                len += src[i][0] ? strlen(src[i]) + 1 : 0;
        d = malloc(len);
        if (!d)
                return &done_oom;
        d->outcome = r->outcome;
        d->expires_at = r->expires_at;
        dst[0] = &d->old_token_id;
        dst[1] = &d->new_token_id;
        dst[2] = &d->version;
        dst[3] = &d->error;
        p = (char *)(d + 1);
        for (i = 0; i < 4; i++) {
                *dst[i] = NULL;
                if (src[i][0]) {
                        *dst[i] = p;
                        p = stpcpy(p, src[i]) + 1;
                }
        }
        return d;
}

static void done_free(const struct done *d)
{
        if (d != &done_oom)
                free((void *)d);
}

static const char *or_dash(const char *s)
{
        return s ? s : "-";
}

static void print_result(const struct cfg_integration *in, const struct done *r)
{
        char exp[32] = "-";

        if (r->expires_at)
                time_format_rfc3339(r->expires_at, exp, sizeof(exp));
        switch (r->outcome) {
        case OUTCOME_ROTATED:
                printf("%s: rotated %s -> %s (%s %s version %s), expires %s\n", in->name,
                       r->old_token_id ? r->old_token_id : "(none)", or_dash(r->new_token_id),
                       in->store->name, in->secret, or_dash(r->version), exp);
                break;
        case OUTCOME_PLANNED:
                break;  /* the plan itself was printed */
        default:
                printf("%s: %s: %s\n", in->name, rotate_outcome_name(r->outcome),
                       r->error ? r->error : "not attempted");
                break;
        }
}

static void add_nullable(struct json_object *o, const char *k, const char *v)
{
        json_object_object_add(o, k, v && *v ? json_object_new_string(v) : NULL);
}

static struct json_object *result_json(const struct cfg_integration *in, const struct done *r)
{
        struct json_object *o = json_object_new_object();
        char exp[32];

        json_object_object_add(o, "integration", json_object_new_string(in->name));
        json_object_object_add(o, "result", json_object_new_string(rotate_outcome_name(r->outcome)));
        add_nullable(o, "old_token_id", r->old_token_id);
        add_nullable(o, "new_token_id", r->new_token_id);
        if (r->expires_at)
                time_format_rfc3339(r->expires_at, exp, sizeof(exp));
        add_nullable(o, "expires_at", r->expires_at ? exp : NULL);
        add_nullable(o, "store", in->store->name);
        add_nullable(o, "secret", in->secret);
        add_nullable(o, "version", r->version);
        add_nullable(o, "error", r->outcome == OUTCOME_FAILED || r->outcome == OUTCOME_INCOMPLETE ?
                                 (r->error ? r->error : "not attempted") : NULL);
        return o;
}

/* The integrations are shared out to up to max_parallel threads, which
 * share one rotation context (sessions, store logins, connections).  Results
 * are printed in configuration order as soon as they and all before them
 * are done, so only those waiting for an earlier one are held: with
 * thousands of integrations the run does not keep one result per
 * integration to the end. */
struct run {
        const struct config *cfg;
        const struct cli *cli;
        struct rotate_ctx *ctx;
        const struct cfg_integration **sel;
        size_t n;
        atomic_size_t next;
        pthread_mutex_t out_lock;
        const struct done **ready;      /* done, not yet printed; NULL: not done */
        size_t printed;                 /* results 0..printed-1 are out */
        bool failed;
};

static void print_one(struct run *run, size_t i, const struct done *d)
{
        if (d->outcome == OUTCOME_FAILED || d->outcome == OUTCOME_INCOMPLETE)
                run->failed = true;
        if (run->cli->json) {
                struct json_object *o = result_json(run->sel[i], d);
                printf("%s%s", i ? ",\n" : "",
                       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                print_result(run->sel[i], d);
        }
        /* Someone watching a long run (a CI log) sees each line as it is settled. */
        fflush(stdout);
}

/* Record integration i's result and print every result now in order. */
static void finish_one(struct run *run, size_t i, const struct done *d)
{
        pthread_mutex_lock(&run->out_lock);
        run->ready[i] = d;
        while (run->printed < run->n && run->ready[run->printed]) {
                size_t k = run->printed++;
                print_one(run, k, run->ready[k]);
                done_free(run->ready[k]);
                run->ready[k] = NULL;
        }
        pthread_mutex_unlock(&run->out_lock);
}

static void *run_worker(void *arg)
{
        struct run *run = arg;
        struct rotate_result res;
        size_t i;

        while ((i = atomic_fetch_add(&run->next, 1)) < run->n) {
                rotate_one(run->ctx, run->cfg, run->sel[i], run->cli->dry_run, &res);
                finish_one(run, i, keep(&res));
        }
        return NULL;
}

static void run_parallel(struct run *run)
{
        /* A dry run prints its plan as it goes: one at a time keeps it readable. */
        size_t want = run->cli->dry_run ? 1 : (size_t)run->cfg->max_parallel, started = 0, i;
        pthread_t *t;

        if (want > run->n)
                want = run->n;
        t = calloc(want + 1, sizeof(*t));
        for (i = 0; t && i < want; i++)
                if (pthread_create(&t[i], NULL, run_worker, run) == 0)
                        started++;
        if (started == 0)
                run_worker(run);
        for (i = 0; i < started; i++)
                pthread_join(t[i], NULL);
        free(t);
}

static int run_all(const struct config *cfg, const struct cli *c, struct records *rec,
                   const struct cfg_integration **sel, size_t n)
{
        struct run run = { .cfg = cfg, .cli = c, .sel = sel, .n = n };
        struct http_client *http = http_client_new(0, 0);
        int status = EXIT_FAILED;
        size_t i;

        pthread_mutex_init(&run.out_lock, NULL);
        run.ready = calloc(n + 1, sizeof(*run.ready));
        if (!http || !run.ready || rotate_ctx_new(cfg, rec, http, &run.ctx) < 0)
                goto oom;
        if (c->json)
                rotate_ctx_set_plan_stream(run.ctx, stderr);
        /* Every entry exists before the threads start: none grows the table. */
        for (i = 0; i < n; i++)
                if (!records_get(rec, sel[i]->name))
                        goto oom;
        atomic_init(&run.next, 0);
        if (c->json)
                fputs("{\"results\": [\n", stdout);
        run_parallel(&run);
        if (c->json)
                fputs("\n]}\n", stdout);
        status = run.failed ? EXIT_FAILED : EXIT_OK;
        goto out;
oom:
        log_error(NULL, "out of memory");
out:
        free(run.ready);
        pthread_mutex_destroy(&run.out_lock);
        rotate_ctx_free(run.ctx);
        http_client_free(http);
        return status;
}

int cli_rotate_now(const struct cli *c)
{
        const struct cfg_integration **sel = NULL;
        struct config *cfg = NULL;
        struct records *rec = NULL;
        char err[512];
        size_t n = 0;
        int status, r;

        if (config_load(c->config_path, false, &cfg) < 0)
                return EXIT_CONFIG;
        if (select_integrations(cfg, c, &sel, &n) < 0) {
                status = EXIT_USAGE;
                goto out;
        }
        /* A dry run writes nothing, so it needs no lock and no new records. */
        r = records_open(cfg->state_dir, c->dry_run, &rec, err, sizeof(err));
        if (r < 0) {
                log_error(NULL, "%s", err);
                status = EXIT_FAILED;
                goto out;
        }
#ifdef M_TRIM_THRESHOLD
        /* The parse trees of the configuration and of state.json are gone:
         * hand their pages back before the workers start. */
        malloc_trim(0);
#endif
        status = run_all(cfg, c, rec, sel, n);
out:
        records_close(rec);
        free(sel);
        config_free(cfg);
        return status;
}
