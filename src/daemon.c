/* daemon.c: the long-running service.  Recovers what a crash left in
 * flight, then sleeps until the earliest due time (a timerfd on the wall
 * clock, cancelled by clock jumps), rotates what is due with up to
 * max_parallel worker threads, and obeys SIGHUP/SIGTERM via a signalfd. */
#include "daemon.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "duration.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "records.h"
#include "rotate.h"
#include "schedule.h"
#include "stop.h"

/* Checked by http.c between attempts and during transfers. */
static atomic_int stop_requested;      /* set by the main thread, read by the workers */

struct daemon {
        const char *config_path;
        struct config *cfg;
        struct records *rec;
        struct metrics_counters *counters;      /* parallel to cfg->integrations */
        int sfd;
        int tfd;
        int64_t watchdog_ms;
        bool stopping;
        bool reload_pending;    /* SIGHUP seen; acted on between batches */
};

struct batch {
        struct daemon *d;
        struct rotate_ctx *ctx;         /* shared by the batch's workers: sessions, logins, connections */
        const struct cfg_integration **due;
        size_t n;
        atomic_size_t next;
        atomic_size_t done;
};

/* ---- one integration ---- */

static void work_one(struct daemon *d, struct rotate_ctx *ctx, const struct cfg_integration *in)
{
        struct rec_integration *ri = records_find(d->rec, in->name);
        struct metrics_counters *c = &d->counters[in - d->cfg->integrations];
        struct rotate_result res;
        int64_t now = now_wall();

        if (schedule_rotation_due(in, ri, now) <= now)
                rotate_integration(ctx, in, false, &res);
        else
                rotate_recover(ctx, in, &res);
        if (res.outcome == OUTCOME_ROTATED)
                c->rotations++;
        else if (res.outcome == OUTCOME_FAILED || res.outcome == OUTCOME_INCOMPLETE)
                c->failures++;
}

static void *worker(void *arg)
{
        struct batch *b = arg;
        size_t i;

        while (!stop_requested && (i = atomic_fetch_add(&b->next, 1)) < b->n) {
                work_one(b->d, b->ctx, b->due[i]);
                atomic_fetch_add(&b->done, 1);
        }
        return NULL;
}

/* ---- signals ---- */

static int setup_signals(struct daemon *d)
{
        sigset_t set;

        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGHUP);
        /* Blocked before any thread starts, so only the signalfd sees them. */
        if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
                return -errno;
        d->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        return d->sfd < 0 ? -errno : 0;
}

/* Only flags here: a reload must wait until no worker uses the old
 * configuration, while a stop is passed to the workers at once. */
static void handle_signals(struct daemon *d)
{
        struct signalfd_siginfo si;

        while (read(d->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGHUP) {
                        d->reload_pending = true;
                } else {
                        log_event(LOG_NOTICE, LOG_EV_STOPPED, NULL, "stopping on signal %u", si.ssi_signo);
                        d->stopping = true;
                        stop_requested = 1;
                }
        }
}

/* ---- status ---- */

static void publish(struct daemon *d)
{
        int64_t now = now_wall(), next = INT64_MAX;
        const char *next_name = NULL;
        size_t i, failing = 0;
        char when[32];

        for (i = 0; i < d->cfg->n_integrations; i++) {
                const struct cfg_integration *in = &d->cfg->integrations[i];
                struct rec_integration *ri = records_find(d->rec, in->name);
                int64_t due = schedule_due(in, ri, now);
                if (ri && (ri->last_result == RESULT_FAILED || ri->last_result == RESULT_INCOMPLETE))
                        failing++;
                if (due < next) {
                        next = due;
                        next_name = in->name;
                }
        }
        if (next_name)
                time_format_rfc3339(next, when, sizeof(when));
        notify_status("%zu integrations; next rotation: %s at %s; %zu failing", d->cfg->n_integrations,
                      next_name ? next_name : "none", next_name ? when : "-", failing);
        if (metrics_write(d->cfg, d->rec, d->counters, true) < 0)
                log_warning(NULL, "metrics_file %s: cannot write: %s", d->cfg->metrics_file, strerror(errno));
}

/* ---- the batch of due integrations ---- */

static void wait_for_batch(struct daemon *d, struct batch *b)
{
        struct pollfd p = { .fd = d->sfd, .events = POLLIN };
        int64_t last_ping = now_mono_ms();

        /* The main loop stays responsive (signals, watchdog) while workers run. */
        while (atomic_load(&b->done) < b->n && !(stop_requested && atomic_load(&b->next) >= b->n)) {
                if (poll(&p, 1, 100) > 0)
                        handle_signals(d);
                if (d->watchdog_ms && now_mono_ms() - last_ping >= d->watchdog_ms) {
                        notify_watchdog();
                        last_ping = now_mono_ms();
                }
                if (stop_requested)
                        break;
        }
}

static void run_batch(struct daemon *d, const struct cfg_integration **due, size_t n)
{
        struct batch b = { .d = d, .due = due, .n = n };
        size_t nthreads = (size_t)d->cfg->max_parallel < n ? (size_t)d->cfg->max_parallel : n;
        struct http_client *http = http_client_new(0, 0);
        pthread_t *t = NULL;
        size_t i, started = 0;

        if (!http || rotate_ctx_new(d->cfg, d->rec, http, &b.ctx) < 0) {
                log_error(NULL, "out of memory starting rotations");
                goto out;
        }
        t = calloc(nthreads, sizeof(*t));
        atomic_init(&b.next, 0);
        atomic_init(&b.done, 0);
        for (i = 0; t && i < nthreads; i++)
                if (pthread_create(&t[i], NULL, worker, &b) == 0)
                        started++;
        if (started == 0)
                worker(&b);     /* no threads to be had: do it here */
        else
                wait_for_batch(d, &b);
        for (i = 0; i < started; i++)
                pthread_join(t[i], NULL);
out:
        free(t);
        rotate_ctx_free(b.ctx);
        http_client_free(http);
}

static size_t collect_due(struct daemon *d, const struct cfg_integration **due, int64_t *ret_next)
{
        int64_t now = now_wall(), next = INT64_MAX;
        size_t i, n = 0;

        for (i = 0; i < d->cfg->n_integrations; i++) {
                const struct cfg_integration *in = &d->cfg->integrations[i];
                int64_t t = schedule_due(in, records_find(d->rec, in->name), now);
                if (t <= now)
                        due[n++] = in;
                else if (t < next)
                        next = t;
        }
        *ret_next = next;
        return n;
}

/* ---- sleeping ---- */

/* An absolute CLOCK_REALTIME timer, cancelled when the clock is set: a
 * jump or a resume from suspend wakes us to look again. */
static void arm_timer(struct daemon *d, int64_t when)
{
        struct itimerspec its = { 0 };

        its.it_value.tv_sec = when - (now_wall() - time(NULL));   /* back to the real clock */
        if (its.it_value.tv_sec <= 0)
                its.it_value.tv_nsec = 1;
        timerfd_settime(d->tfd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL);
}

static void sleep_until(struct daemon *d, int64_t when)
{
        struct pollfd p[2] = { { .fd = d->sfd, .events = POLLIN }, { .fd = d->tfd, .events = POLLIN } };
        uint64_t ticks;
        int r;

        if (when != INT64_MAX)
                arm_timer(d, when);
        r = poll(p, 2, d->watchdog_ms ? (int)d->watchdog_ms : -1);
        if (d->watchdog_ms)
                notify_watchdog();
        if (r <= 0)
                return;
        if (p[0].revents)
                handle_signals(d);
        if (p[1].revents)
                (void)!read(d->tfd, &ticks, sizeof(ticks));     /* ECANCELED on a clock jump: just look again */
}

/* ---- configuration ---- */

static int adopt_config(struct daemon *d, struct config *cfg)
{
        struct metrics_counters *c = calloc(cfg->n_integrations + 1, sizeof(*c));
        size_t i, j;

        if (!c)
                return -ENOMEM;
        for (i = 0; i < cfg->n_integrations; i++) {
                c[i].name = cfg->integrations[i].name;
                for (j = 0; d->cfg && j < d->cfg->n_integrations; j++)
                        if (strcmp(d->counters[j].name, c[i].name) == 0) {
                                c[i].rotations = d->counters[j].rotations;
                                c[i].failures = d->counters[j].failures;
                        }
                /* Entries exist before workers run, so no thread grows the table. */
                if (!records_get(d->rec, cfg->integrations[i].name)) {
                        free(c);
                        return -ENOMEM;
                }
        }
        free(d->counters);
        config_free(d->cfg);
        d->counters = c;
        d->cfg = cfg;
        return 0;
}

static void reload(struct daemon *d)
{
        struct config *cfg = NULL;

        notify_reloading();
        if (config_load(d->config_path, true, &cfg) < 0) {
                log_event(LOG_ERR, LOG_EV_CONFIG, NULL, "reload: %s is invalid; keeping the previous configuration",
                          d->config_path);
        } else if (strcmp(cfg->state_dir, d->cfg->state_dir) != 0) {
                log_event(LOG_ERR, LOG_EV_CONFIG, NULL, "reload: state_dir changed; restart patrol to move it. "
                          "Keeping the previous configuration");
                config_free(cfg);
        } else if (adopt_config(d, cfg) < 0) {
                log_error(NULL, "reload: out of memory; keeping the previous configuration");
                config_free(cfg);
        } else {
                log_event(LOG_NOTICE, LOG_EV_CONFIG, NULL, "reloaded %s: %zu integrations", d->config_path,
                          cfg->n_integrations);
        }
        notify_ready();
        publish(d);
}

/* ---- start and loop ---- */

static int start(struct daemon *d, const char *config_path)
{
        struct config *cfg = NULL;
        char err[512];
        int r;

        d->config_path = config_path;
        d->sfd = d->tfd = -1;
        /* Signals first: a SIGTERM during start-up is obeyed, not fatal. */
        if (setup_signals(d) < 0) {
                log_error(NULL, "cannot set up signals: %s", strerror(errno));
                return EXIT_FAILED;
        }
        if (config_load(config_path, true, &cfg) < 0)
                return EXIT_CONFIG;
        r = records_open(cfg->state_dir, false, &d->rec, err, sizeof(err));
        if (r < 0) {
                log_error(NULL, "%s", err);
                config_free(cfg);
                return EXIT_FAILED;
        }
        if (adopt_config(d, cfg) < 0 ||
            (d->tfd = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK)) < 0) {
                log_error(NULL, "cannot set up the daemon: %s", strerror(errno));
                return EXIT_FAILED;
        }
        stop_watch(&stop_requested);
        d->watchdog_ms = notify_watchdog_interval_ms();
        return 0;
}

/* Rotations a crash left in flight are finished or undone before READY=1. */
static void recover_all(struct daemon *d)
{
        const struct cfg_integration **v = calloc(d->cfg->n_integrations + 1, sizeof(*v));
        size_t i, n = 0;

        for (i = 0; v && i < d->cfg->n_integrations; i++) {
                struct rec_integration *ri = records_find(d->rec, d->cfg->integrations[i].name);
                if (ri && ri->step != STEP_IDLE)
                        v[n++] = &d->cfg->integrations[i];
        }
        if (n)
                run_batch(d, v, n);
        free(v);
}

static void stop(struct daemon *d)
{
        notify_stopping();
        if (d->cfg && d->rec && d->counters && metrics_write(d->cfg, d->rec, d->counters, false) < 0)
                log_warning(NULL, "metrics_file %s: cannot write: %s", d->cfg->metrics_file, strerror(errno));
        records_close(d->rec);
        free(d->counters);
        config_free(d->cfg);
        if (d->sfd >= 0)
                close(d->sfd);
        if (d->tfd >= 0)
                close(d->tfd);
        stop_watch(NULL);
}

int daemon_run(const char *config_path)
{
        struct daemon d = { 0 };
        int r = start(&d, config_path);

        if (r != 0) {
                stop(&d);
                return r;
        }
        log_event(LOG_NOTICE, LOG_EV_STARTED, NULL, "started with %zu integrations", d.cfg->n_integrations);
#ifdef M_TRIM_THRESHOLD
        malloc_trim(0);         /* the parse trees of loading are gone: give their pages back */
#endif
        recover_all(&d);
        notify_ready();
        publish(&d);
        handle_signals(&d);     /* any that came during start-up */
        while (!d.stopping) {
                const struct cfg_integration **due;
                if (d.reload_pending) {
                        d.reload_pending = false;
                        reload(&d);
                        continue;
                }
                due = calloc(d.cfg->n_integrations + 1, sizeof(*due));
                int64_t next;
                size_t n = due ? collect_due(&d, due, &next) : 0;
                if (n) {
                        run_batch(&d, due, n);
                        /* No worker runs now: the snapshot may read every entry. */
                        int rc = records_compact_if_due(d.rec);
                        if (rc < 0)
                                log_warning(NULL, "state.json: cannot fold the journal in: %s", strerror(-rc));
                        publish(&d);
                } else {
                        sleep_until(&d, due ? next : now_wall() + 60);
                }
                free(due);
        }
        stop(&d);
        return EXIT_OK;
}
