/* rotate.c: the rotation as an explicit state machine (doc/design.md).
 * Each step is recorded in state.json before the next begins; a rotation
 * found in flight at start is finished (the store holds the new token) or
 * undone (it does not), so every token patrol creates ends up in the store
 * or revoked, and the store never holds a token that is not alive. */
#include "autoconfig.h"
#include "rotate.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "duration.h"
#include "hook.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "onplana.h"
#include "schedule.h"
#include "secret.h"
#include "store.h"

#define HOOK_TIMEOUT_S 60

struct store_handle {
        const struct cfg_store *cfg;
        const struct store_ops *ops;
        pthread_mutex_t open_lock;      /* the first open: a slow login holds back only this store */
        void *st;
};

/* Shared by every worker of a run, so sessions and store logins are made
 * once per account and store (the issuer, the stores and the records are
 * safe to use from several threads). */
struct rotate_ctx {
        const struct config *cfg;
        struct records *rec;
        struct http_client *http;
        struct onplana *onp;
        struct store_handle *stores;    /* one per configured store, opened on first use */
        FILE *plan_out;                 /* where a dry run's plan goes */
};

/* What one run of the machine works with; the token value only ever
 * lives here, never in the records. */
struct flight {
        struct rotate_ctx *ctx;
        const struct cfg_integration *in;
        struct rec_integration *ri;
        struct store_handle *sh;
        struct rotate_result *res;
        char *token;            /* secret: the new token's value */
        /* Recovery found a stored token that cannot be kept (replace_stored):
         * rotate now, even where only recovery was asked for. */
        bool replace;
};

#ifdef ENABLE_CRASH_POINTS
void crash_point(const char *name)
{
        const char *at = secure_getenv("PATROL_CRASH_AT");

        if (at && strcmp(at, name) == 0)
                _exit(99);      /* like SIGKILL: no cleanup, no flush */
}
#endif

void rotate_ctx_set_plan_stream(struct rotate_ctx *ctx, FILE *out)
{
        ctx->plan_out = out;
}

const char *rotate_outcome_name(enum rotate_outcome o)
{
        switch (o) {
        case OUTCOME_ROTATED: return "rotated";
        case OUTCOME_FAILED: return "failed";
        case OUTCOME_INCOMPLETE: return "incomplete";
        case OUTCOME_PLANNED: return "planned";
        default: return "nothing";
        }
}

int rotate_ctx_new(const struct config *cfg, struct records *rec, struct http_client *http,
                   struct rotate_ctx **ret)
{
        struct rotate_ctx *ctx = calloc(1, sizeof(*ctx));
        size_t i;

        if (!ctx)
                return -ENOMEM;
        ctx->cfg = cfg;
        ctx->rec = rec;
        ctx->plan_out = stdout;
        ctx->http = http;
        ctx->onp = onplana_new(&cfg->onplana, http);
        ctx->stores = calloc(cfg->n_stores + 1, sizeof(*ctx->stores));
        for (i = 0; ctx->stores && i < cfg->n_stores; i++) {
                ctx->stores[i].cfg = &cfg->stores[i];
                ctx->stores[i].ops = store_ops_for(cfg->stores[i].type);
                pthread_mutex_init(&ctx->stores[i].open_lock, NULL);
        }
        if (!ctx->onp || !ctx->stores) {
                rotate_ctx_free(ctx);
                return -ENOMEM;
        }
        *ret = ctx;
        return 0;
}

struct rotate_ctx *rotate_ctx_free(struct rotate_ctx *ctx)
{
        size_t i;

        if (!ctx)
                return NULL;
        for (i = 0; ctx->stores && i < ctx->cfg->n_stores; i++) {
                if (ctx->stores[i].st)
                        ctx->stores[i].ops->close(ctx->stores[i].st);
                pthread_mutex_destroy(&ctx->stores[i].open_lock);
        }
        free(ctx->stores);
        onplana_free(ctx->onp);
        free(ctx);
        return NULL;
}

/* ---- small helpers ---- */

static void copy_id(char *dst, size_t size, const char *src)
{
        snprintf(dst, size, "%s", src ? src : "");
}

static void fail(struct flight *f, enum rotate_outcome o, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void fail(struct flight *f, enum rotate_outcome o, const char *fmt, ...)
{
        va_list ap;

        f->res->outcome = o;
        va_start(ap, fmt);
        vsnprintf(f->res->error, sizeof(f->res->error), fmt, ap);
        va_end(ap);
        secret_redact(f->res->error, f->token);         /* a last net: errors are logged and kept */
        text_one_line(f->res->error);   /* it quotes servers; printed, logged and recorded as one line */
}

/* For clean-up failures: keep the first error of this run, which explains
 * why a clean-up was needed; otherwise this one is the run's error. */
static void fail_cleanup(struct flight *f, const char *what, const char *err)
{
        if (f->res->outcome == OUTCOME_NOTHING) {
                fail(f, OUTCOME_FAILED, "%s: %s", what, err);
                f->res->transient = true;
        }
}

/* A record that cannot be made durable stops the rotation: going on would
 * break the promise that a crash can be recovered. */
static int save(struct flight *f, const char *crash_name)
{
        int r = records_save(f->ctx->rec, f->ri);

        if (r < 0) {
                fail(f, f->ri->step >= STEP_WRITTEN ? OUTCOME_INCOMPLETE : OUTCOME_FAILED,
                     "records: cannot save state: %s", strerror(-r));
                return r;
        }
        crash_point(crash_name);
        return 0;
}

/* A step that recovery treats exactly like the one before it (doc/design.md,
 * "Recovery after a crash") is not recorded: it costs a journal line and an
 * fdatasync and would change nothing after a crash.  It is still the step
 * in memory (a failure recorded later shows it) and its crash point fires. */
static int reached(struct flight *f, enum rot_step step, const char *crash_name)
{
        f->ri->step = step;
        crash_point(crash_name);
        return 0;
}

static void audit(struct flight *f, const char *event, const char *old_id, const char *new_id,
                  const char *version, const char *error)
{
        struct audit_event ev = {
                .integration = f->in->name, .event = event, .old_token_id = old_id,
                .new_token_id = new_id, .store = f->in->store->name, .secret = f->in->secret,
                .version = version, .error = error,
        };
        int r = records_audit(f->ctx->rec, &ev);

        if (r < 0)
                log_error(f->in->name, "audit.jsonl: cannot append: %s", strerror(-r));
}

static int open_store(struct flight *f)
{
        struct store_handle *sh = NULL;
        size_t i;
        int r;

        for (i = 0; i < f->ctx->cfg->n_stores; i++)
                if (f->ctx->stores[i].cfg == f->in->store)
                        sh = &f->ctx->stores[i];
        if (!sh || !sh->ops) {
                fail(f, OUTCOME_FAILED, "%s: store type %s is not supported by this build",
                     f->in->store->name, store_type_name(f->in->store->type));
                return -ENOTSUP;
        }
        pthread_mutex_lock(&sh->open_lock);
        r = sh->st ? 0 : sh->ops->open(sh->cfg, f->ctx->http, &sh->st);
        pthread_mutex_unlock(&sh->open_lock);
        if (r < 0) {
                fail(f, OUTCOME_FAILED, "%s: cannot open store: %s", sh->cfg->name, strerror(-r));
                return r;
        }
        f->sh = sh;
        return 0;
}

static int random_id(char *buf, size_t size)
{
        unsigned char b[16];
        size_t i;

        if (size < 33 || getrandom(b, sizeof(b), 0) != sizeof(b))
                return -EIO;
        for (i = 0; i < sizeof(b); i++)
                snprintf(buf + 2 * i, 3, "%02x", b[i]);
        return 0;
}

/* Revoke a token patrol created but could not place; logged loudly when
 * even that fails, since the token is then alive and unaccounted for
 * until the next start (its id stays in the records). */
static int revoke_new(struct flight *f, const char *id)
{
        char err[512];
        int r = onplana_revoke(f->ctx->onp, f->in->account, id, err, sizeof(err));

        if (r < 0) {
                log_error(f->in->name, "cannot revoke new token %s: %s", id, err);
                fail_cleanup(f, "cannot revoke a token that never reached the store", err);
        } else
                log_info(f->in->name, "revoked new token %s, which never reached the store", id);
        return r;
}

/* Undo: the store does not hold the new token, so it must not stay alive. */
static void undo(struct flight *f)
{
        if (f->ri->new_token_id && revoke_new(f, f->ri->new_token_id) < 0)
                return;         /* keep the flight record: the next start tries again */
        rec_clear_flight(f->ri);
        (void)save(f, "undone");
}

/* ---- the steps ---- */

/* 0, or -ESTALE when /me names another token (not the new one), -EPERM
 * when the new token carries other scopes or projects than configured. */
static int verify_matches(struct flight *f, const struct onplana_me *me)
{
        const struct cfg_integration *in = f->in;

        if (!f->ri->new_token_id || strcmp(me->token_id, f->ri->new_token_id) != 0) {
                fail(f, OUTCOME_FAILED, "onplana: verify token: /me names token %s, expected %s",
                     me->token_id, f->ri->new_token_id ? f->ri->new_token_id : "(none)");
                return -ESTALE;
        }
        if (!strv_equal_as_sets(me->scopes, me->n_scopes, in->scopes, in->n_scopes)) {
                fail(f, OUTCOME_FAILED, "onplana: verify token %s: scopes differ from those requested",
                     me->token_id);
                return -EPERM;
        }
        if (!strv_equal_as_sets(me->project_ids, me->n_project_ids, in->projects, in->n_projects)) {
                fail(f, OUTCOME_FAILED, "onplana: verify token %s: projects differ from those requested",
                     me->token_id);
                return -EPERM;
        }
        return 0;
}

/* The new token authenticates and carries exactly what was asked.  Besides
 * verify_matches' answers: -EACCES when Onplana refuses it (revoked or
 * expired), -EAGAIN when it could not be asked. */
static int verify_token(struct flight *f, const char *token)
{
        struct onplana_me *me = NULL;
        char err[512];
        int r;

        r = onplana_whoami(f->ctx->onp, token, &me, err, sizeof(err));
        if (r < 0) {
                fail(f, OUTCOME_FAILED, "%s", err);
                f->res->transient = r == -EAGAIN;
                return r;
        }
        r = verify_matches(f, me);
        onplana_me_free(me);
        return r;
}

static int step_create(struct flight *f, int64_t now)
{
        struct rec_integration *ri = f->ri;
        struct onplana_token *t = NULL;
        char name[160], rid[40], err[512];
        int r;

        if (onplana_token_name(f->in->name, now, name, sizeof(name)) < 0 || random_id(rid, sizeof(rid)) < 0) {
                fail(f, OUTCOME_FAILED, "cannot make a token name");
                return -EIO;
        }
        rec_set(&ri->new_name, name);
        rec_set(&ri->rotation_id, rid);
        ri->step = STEP_CREATING;
        if (save(f, "creating") < 0)
                return -EIO;
        r = onplana_create(f->ctx->onp, f->in->account, name, f->in->scopes, f->in->n_scopes,
                           f->in->projects, f->in->n_projects, now + f->in->policy->ttl, &t, err, sizeof(err));
        if (r < 0) {
                fail(f, OUTCOME_FAILED, "%s", err);
                f->res->transient = r == -EAGAIN;
                return r;
        }
        crash_point("create-answered");
        f->token = t->token;
        t->token = NULL;
        rec_set(&ri->new_token_id, t->id);
        ri->new_expires_at = t->expires_at;
        ri->step = STEP_CREATED;
        onplana_token_free(t);
        return save(f, "created");
}

/* A create whose answer was lost may still have made a token: find it by
 * its unique name and revoke it. */
static void undo_by_name(struct flight *f)
{
        struct onplana_token **v = NULL;
        char err[512];
        size_t n = 0, i;
        bool all = true;

        if (!f->ri->new_name) {
                rec_clear_flight(f->ri);
                return;
        }
        if (onplana_list(f->ctx->onp, f->in->account, f->ri->new_name, &v, &n, err, sizeof(err)) < 0) {
                log_error(f->in->name, "cannot look for a token named %s: %s", f->ri->new_name, err);
                fail_cleanup(f, "cannot finish the interrupted rotation", err);
                return;
        }
        for (i = 0; i < n; i++)
                if (!v[i]->revoked_at && revoke_new(f, v[i]->id) < 0)
                        all = false;
        onplana_tokens_free(v, n);
        if (!all)
                return;
        rec_clear_flight(f->ri);
        (void)save(f, "undone");
}

static int step_verify(struct flight *f)
{
        /* An answer without an expiry, or with one already past, would put
         * a dead token (and a rotation due at once, for ever) in the store. */
        if (f->ri->new_expires_at <= now_wall()) {
                char exp[32] = "(none)";

                if (f->ri->new_expires_at)
                        time_format_rfc3339(f->ri->new_expires_at, exp, sizeof(exp));
                fail(f, OUTCOME_FAILED, "onplana: create token: token %s expires %s, not in the future",
                     f->ri->new_token_id, exp);
                return -EINVAL;
        }
        if (verify_token(f, f->token) < 0)
                return -EPERM;
        /* Recovered like CREATED: the store is read to see whether it holds the token. */
        return reached(f, STEP_VERIFIED, "verified");
}

static void fill_new(const struct flight *f, struct store_new *v, int64_t now)
{
        memset(v, 0, sizeof(*v));
        v->token = f->token;
        v->token_id = f->ri->new_token_id;
        v->expires_at = f->ri->new_expires_at;
        v->scopes = f->in->scopes;
        v->n_scopes = f->in->n_scopes;
        v->rotated_at = now;
        v->request_id = f->ri->rotation_id;
}

/* Does the store hold our new token now (a write whose answer was lost)?
 * 1 yes, 0 no, negative: cannot tell (the store cannot be read). */
static int store_holds_new(struct flight *f, char **ret_version)
{
        struct store_value cur = { 0 };
        char err[512];
        int r, yes;

        r = f->sh->ops->read_current(f->sh->st, f->in, &cur, err, sizeof(err));
        if (r < 0) {
                log_warning(f->in->name, "cannot tell whether the store holds the new token: %s", err);
                return r;
        }
        yes = cur.token_id && f->ri->new_token_id && strcmp(cur.token_id, f->ri->new_token_id) == 0;
        if (yes && ret_version) {
                *ret_version = cur.version;
                cur.version = NULL;
        }
        store_value_clear(&cur);
        return yes;
}

static int step_write(struct flight *f, const struct store_value *prev, int64_t now)
{
        struct store_new v;
        char *version = NULL, err[512];
        int r;

        fill_new(f, &v, now);
        r = f->sh->ops->write(f->sh->st, f->in, prev, &v, &version, err, sizeof(err));
        if (r < 0 && !f->sh->ops->stages) {
                int held = store_holds_new(f, &version);
                if (held > 0)
                        r = 0;  /* performed, answer lost */
                else if (held < 0)
                        r = -EINPROGRESS;
        }
        if (r == -EINPROGRESS) {
                /* The write may have happened and the store cannot be read:
                 * revoking the new token could leave the store with a dead
                 * one.  The rotation stays in flight for the next attempt. */
                fail(f, OUTCOME_FAILED, "%s (the store may hold the new token: resolved at the next attempt)", err);
                f->res->transient = true;
                return r;
        }
        if (r < 0) {
                fail(f, OUTCOME_FAILED, "%s", err);
                f->res->transient = r == -EAGAIN;
                return r;
        }
        rec_set(&f->ri->new_version, version);
        free(version);
        f->ri->step = STEP_WRITTEN;
        return save(f, "written");
}

static int step_read_back(struct flight *f)
{
        struct store_value got = { 0 };
        char err[512];
        int r;

        /* Without stages this reads what consumers read (store.h): a value
         * written after ours (an operator putting the old token back) must
         * not pass, or retiring the old token would kill what they use. */
        r = f->sh->ops->read_back(f->sh->st, f->in, f->ri->new_version, &got, err, sizeof(err));
        if (r < 0) {
                fail(f, OUTCOME_INCOMPLETE, "%s (the rotation is finished at the next attempt)", err);
                f->res->transient = true;
                goto out;
        }
        if (!got.token || !f->token || strcmp(got.token, f->token) != 0) {
                fail(f, OUTCOME_FAILED, "%s: read back %s: the store does not hold the token written "
                     "(the secret changed since): the new token is revoked, the old one kept",
                     f->sh->cfg->name, f->in->secret);
                r = -ESTALE;
                goto out;
        }
        /* Recovered like WRITTEN: read back and verified again. */
        r = reached(f, STEP_READ_BACK, "read_back");
out:
        store_value_clear(&got);
        return r;
}

static int step_promote(struct flight *f)
{
        char err[512];
        int r;

        struct store_new v;

        fill_new(f, &v, now_wall());
        r = f->sh->ops->promote(f->sh->st, f->in, &v, f->ri->new_version, f->ri->old_version, err, sizeof(err));
        if (r < 0) {
                fail(f, OUTCOME_INCOMPLETE, "%s (the rotation is finished at the next attempt)", err);
                f->res->transient = true;
                return r;
        }
        f->ri->step = STEP_PROMOTED;
        /* From here on consumers read the new token: it is the current one. */
        rec_set(&f->ri->token_id, f->ri->new_token_id);
        rec_set(&f->ri->version, f->ri->new_version);
        f->ri->expires_at = f->ri->new_expires_at;
        return save(f, "promoted");
}

static int step_hook(struct flight *f)
{
        char err[512];

        if (f->in->on_rotate && hook_run(f->in, f->ri->new_token_id, HOOK_TIMEOUT_S, err, sizeof(err)) < 0) {
                fail(f, OUTCOME_INCOMPLETE, "%s; the old token is kept alive", err);
                f->res->transient = true;
                return -EIO;
        }
        /* Without on_rotate, recovery from PROMOTED runs no hook either:
         * HOOKED would add nothing to the record. */
        if (!f->in->on_rotate)
                return reached(f, STEP_HOOKED, "hooked");
        f->ri->step = STEP_HOOKED;
        return save(f, "hooked");
}

/* The old token: revoked now, or recorded as due after revoke_after. */
static int step_retire(struct flight *f, int64_t now)
{
        const char *old = f->ri->old_token_id;
        char err[512];

        if (!old || (f->ri->new_token_id && strcmp(old, f->ri->new_token_id) == 0))
                return 0;
        /* One revocation can be pending; an earlier one still waiting is
         * for a token older than `old`, so its grace is over: revoke it now.
         * If that fails, the rotation stays at this step so neither is lost. */
        if (f->ri->revoke_token_id && strcmp(f->ri->revoke_token_id, old) != 0) {
                if (onplana_revoke(f->ctx->onp, f->in->account, f->ri->revoke_token_id, err, sizeof(err)) < 0) {
                        fail(f, OUTCOME_INCOMPLETE, "%s; the old tokens' revocations are retried later", err);
                        f->res->transient = true;
                        return -EBUSY;
                }
                audit(f, "revoked", f->ri->revoke_token_id, NULL, NULL, NULL);
                rec_set(&f->ri->revoke_token_id, NULL);
        }
        if (f->in->policy->revoke_after > 0) {
                rec_set(&f->ri->revoke_token_id, old);
                f->ri->revoke_due = now + f->in->policy->revoke_after;
                return 0;
        }
        if (onplana_revoke(f->ctx->onp, f->in->account, old, err, sizeof(err)) < 0) {
                /* Keep it due: the next run (or the daemon) tries again. */
                rec_set(&f->ri->revoke_token_id, old);
                f->ri->revoke_due = now;
                fail(f, OUTCOME_INCOMPLETE, "%s; its revocation is retried later", err);
                return -EIO;
        }
        return 0;
}

static void finish(struct flight *f, int64_t now)
{
        struct rec_integration *ri = f->ri;
        struct rotate_result *res = f->res;
        int r = step_retire(f, now);
        bool retired = r == 0;

        if (r == -EBUSY) {
                (void)save(f, "hooked");
                return;
        }
        copy_id(res->old_token_id, sizeof(res->old_token_id), ri->old_token_id);
        copy_id(res->new_token_id, sizeof(res->new_token_id), ri->token_id);
        copy_id(res->version, sizeof(res->version), ri->version);
        res->expires_at = ri->expires_at;
        if (retired)
                res->outcome = OUTCOME_ROTATED;
        ri->last_result = retired ? RESULT_ROTATED : RESULT_INCOMPLETE;
        ri->last_rotation = now;
        ri->failures = 0;
        rec_set(&ri->last_error, retired ? NULL : res->error);
        ri->next_rotation = ri->expires_at - f->in->policy->renew_before + schedule_splay(f->in);
        rec_clear_flight(ri);
        /* The audit line first: a crash between the two repeats the line at
         * recovery rather than losing it. */
        audit(f, "rotated", res->old_token_id[0] ? res->old_token_id : NULL, res->new_token_id,
              res->version, retired ? NULL : res->error);
        if (save(f, "finished") < 0)
                return;
        {
                char exp[32];
                time_format_rfc3339(res->expires_at, exp, sizeof(exp));
                log_event(LOG_NOTICE, LOG_EV_ROTATED, f->in->name, "rotated: %s -> %s (%s %s version %s), expires %s",
                          res->old_token_id[0] ? res->old_token_id : "(none)", res->new_token_id,
                          f->in->store->name, f->in->secret, res->version[0] ? res->version : "-", exp);
        }
}

/* Run the steps from wherever the record says we are. */
static void advance(struct flight *f, const struct store_value *prev, int64_t now)
{
        if (f->ri->step == STEP_CREATED && step_verify(f) < 0) {
                undo(f);
                return;
        }
        if (f->ri->step == STEP_VERIFIED) {
                int r = step_write(f, prev, now);
                if (r == -EINPROGRESS)
                        return;         /* maybe in the store: never revoke it blindly */
                if (r < 0) {
                        undo(f);
                        return;
                }
        }
        if (f->ri->step == STEP_WRITTEN && step_read_back(f) < 0) {
                if (f->res->outcome == OUTCOME_FAILED && !f->sh->ops->stages)
                        undo(f);        /* someone else's value replaced ours */
                return;
        }
        if (f->ri->step == STEP_READ_BACK && step_promote(f) < 0)
                return;
        if (f->ri->step == STEP_PROMOTED && step_hook(f) < 0)
                return;
        if (f->ri->step == STEP_HOOKED)
                finish(f, now);
}

/* ---- reading what the store holds ---- */

static int read_prev(struct flight *f, struct store_value *prev)
{
        char err[512];
        int r = f->sh->ops->read_current(f->sh->st, f->in, prev, err, sizeof(err));

        if (r < 0) {
                fail(f, OUTCOME_FAILED, "%s", err);
                f->res->transient = r == -EAGAIN;
        }
        return r;
}

/* The id of the token a store holds, asked of Onplana (/me).  A token
 * Onplana refuses is no token: *ret_id = NULL and a warning.  what says
 * why we ask: "identify" or "adopt". */
static int token_id_of(struct flight *f, const char *what, const char *token, char **ret_id)
{
        struct onplana_me *me = NULL;
        char err[512];
        int r = onplana_whoami(f->ctx->onp, token, &me, err, sizeof(err));

        *ret_id = NULL;
        if (r == -EACCES) {
                log_warning(f->in->name, "%s %s: the token there is not valid (%s)", what, f->in->secret, err);
                return 0;
        }
        if (r < 0) {
                fail(f, OUTCOME_FAILED, "%s %s: %s", what, f->in->secret, err);
                f->res->transient = r == -EAGAIN;
                return r;
        }
        *ret_id = strdup(me->token_id);
        onplana_me_free(me);
        if (!*ret_id) {
                fail(f, OUTCOME_FAILED, "%s %s: out of memory", what, f->in->secret);
                return -ENOMEM;
        }
        return 0;
}

/* A managed secret whose metadata does not name its token (e.g. raw
 * metadata describing a write that never landed): ask Onplana. */
static int identify(struct flight *f, const char *token, char **ret_id)
{
        return token_id_of(f, "identify", token, ret_id);
}

/* A secret without the marker is someone else's unless adopt = true; then
 * its token is the current one, identified through /me. */
static int adopt_or_refuse(struct flight *f, const struct store_value *prev, char **ret_old_id)
{
        if (!f->in->adopt) {
                fail(f, OUTCOME_FAILED, "%s: secret %s exists and is not managed by patrol; "
                     "set adopt = true to take it over", f->in->store->name, f->in->secret);
                return -EEXIST;
        }
        *ret_old_id = NULL;
        return prev->token ? token_id_of(f, "adopt", prev->token, ret_old_id) : 0;
}

static void print_plan(struct flight *f, const struct store_value *prev, const char *old_id, int64_t now)
{
        FILE *out = f->ctx->plan_out;
        char exp[32], ttl[32];

        time_format_rfc3339(now + f->in->policy->ttl, exp, sizeof(exp));
        duration_format(f->in->policy->ttl, ttl, sizeof(ttl));
        fprintf(out, "%s: would create a token with scopes", f->in->name);
        for (size_t i = 0; i < f->in->n_scopes; i++)
                fprintf(out, "%s%s", i ? "," : " ", f->in->scopes[i]);
        fprintf(out, " (ttl %s, expires %s)\n", ttl, exp);
        fprintf(out, "%s: would %s %s secret %s%s%s%s\n", f->in->name, prev->exists ? "write" : "create",
                store_type_name(f->in->store->type), f->in->secret,
                prev->version ? " (now at version " : "", prev->version ? prev->version : "",
                prev->version ? ")" : "");
        if (old_id)
                fprintf(out, "%s: would revoke %s%s\n", f->in->name, old_id,
                        f->in->policy->revoke_after > 0 ? " after revoke_after" : "");
        fflush(out);
}

static void dry_run(struct flight *f, const struct store_value *prev, const char *old_id, int64_t now)
{
        struct onplana_token **v = NULL;
        char err[512];
        size_t n = 0;

        /* Authenticate with Onplana too: a dry run proves the credentials. */
        if (onplana_list(f->ctx->onp, f->in->account, f->in->name, &v, &n, err, sizeof(err)) < 0) {
                fail(f, OUTCOME_FAILED, "%s", err);
                return;
        }
        onplana_tokens_free(v, n);
        print_plan(f, prev, old_id, now);
        copy_id(f->res->old_token_id, sizeof(f->res->old_token_id), old_id);
        copy_id(f->res->version, sizeof(f->res->version), prev->version);
        f->res->outcome = OUTCOME_PLANNED;
}

static void begin(struct flight *f, bool is_dry_run, int64_t now)
{
        struct store_value prev = { 0 };
        char *old_id = NULL;

        if (read_prev(f, &prev) < 0)
                goto out;
        if (prev.exists && !prev.managed && adopt_or_refuse(f, &prev, &old_id) < 0)
                goto out;
        if (prev.exists && prev.managed && prev.token_id)
                old_id = strdup(prev.token_id);
        else if (prev.exists && prev.managed && prev.token && identify(f, prev.token, &old_id) < 0)
                goto out;
        /* Still unknown: the token patrol last placed there is the one to retire. */
        if (!old_id && prev.exists && prev.managed && f->ri->token_id)
                old_id = strdup(f->ri->token_id);
        if (is_dry_run) {
                dry_run(f, &prev, old_id, now);
                goto out;
        }
        if (prev.exists && !prev.managed)
                audit(f, "adopted", old_id, NULL, prev.version, NULL);
        rec_set(&f->ri->old_token_id, old_id);
        rec_set(&f->ri->old_version, prev.version);
        if (step_create(f, now) < 0) {
                if (f->ri->step == STEP_CREATING)
                        undo_by_name(f);
                goto out;
        }
        advance(f, &prev, now);
out:
        free(old_id);
        store_value_clear(&prev);
}

/* ---- recovery ---- */

/* The token value was only in memory: get it back from the store.
 * -ESTALE: the store can be read but no longer holds the new token (the
 * secret was changed, or the version written is gone). */
static int reload_token(struct flight *f)
{
        struct store_value got = { 0 };
        char err[512];
        int r;

        r = f->sh->ops->read_back(f->sh->st, f->in, f->ri->new_version, &got, err, sizeof(err));
        /* Raw-format metadata may not describe this version yet (AWS tags
         * are written at promotion): then /me, next, says whose token it is. */
        if (r == 0 && (!got.token || (got.token_id && strcmp(got.token_id, f->ri->new_token_id) != 0)))
                r = -ESTALE;
        if (r == -ENOENT)
                r = -ESTALE;    /* the secret (or the staged version) was deleted */
        if (r < 0 && r != -ESTALE) {
                fail(f, OUTCOME_INCOMPLETE, "recover: %s", err);
        } else if (r == 0) {
                f->token = got.token;
                got.token = NULL;
        }
        store_value_clear(&got);
        return r;
}

/* Recovery resolved what it found without finishing it: the failure that
 * told it how (already logged) is not this run's result, the rotation that
 * follows is. */
static void forget_failure(struct flight *f)
{
        f->res->outcome = OUTCOME_NOTHING;
        f->res->error[0] = '\0';
        f->res->transient = false;
}

/* The store holds the new token but it cannot be finished: Onplana refuses
 * it (revoked or expired meanwhile) or it no longer carries the configured
 * scopes.  Consumers read it, so the old token is no longer in use: retire
 * it as a finished rotation would, record the new one as current, and have
 * a fresh rotation replace it at once (f->replace). */
static void replace_stored(struct flight *f, int64_t now)
{
        struct rec_integration *ri = f->ri;
        char reason[sizeof(f->res->error) + 64];
        char old_id[sizeof(f->res->old_token_id)], new_id[sizeof(f->res->new_token_id)];

        snprintf(reason, sizeof(reason), "the stored token is replaced: %s", f->res->error);
        log_warning(f->in->name, "recover: the store holds token %s, which cannot be kept (%s)",
                    ri->new_token_id, f->res->error);
        copy_id(old_id, sizeof(old_id), ri->old_token_id);
        copy_id(new_id, sizeof(new_id), ri->new_token_id);
        forget_failure(f);
        if (step_retire(f, now) == -EBUSY)
                return;         /* an older revocation failed: stay in flight, retried later */
        rec_set(&ri->token_id, ri->new_token_id);
        rec_set(&ri->version, ri->new_version);
        ri->expires_at = ri->new_expires_at;
        rec_clear_flight(ri);
        if (save(f, "replaced") < 0)
                return;
        f->replace = true;
        audit(f, "recovered", old_id[0] ? old_id : NULL, new_id, ri->version, reason);
}

/* The new token never became what consumers read (the store no longer
 * holds it, or holds it only staged): revoke it and leave the old token
 * alone, since it may be the value someone put back. */
static void undo_stale(struct flight *f, int64_t now, const char *why)
{
        char reason[sizeof(f->res->error) + 64];

        snprintf(reason, sizeof(reason), "rotation undone: %s", why);
        log_warning(f->in->name, "recover: new token %s: %s", f->ri->new_token_id, reason);
        forget_failure(f);
        undo(f);
        if (f->ri->step != STEP_IDLE)
                return;         /* the revocation failed: undo said why */
        f->ri->next_rotation = now;
        audit(f, "recovered", NULL, NULL, NULL, reason);
}

/* WRITTEN or READ_BACK: reload the token from the store and verify it. 0 when
 * the rotation can go on; otherwise it was resolved or said why not. */
static int recover_stored(struct flight *f, int64_t now)
{
        char why[sizeof(f->res->error)];
        int r = reload_token(f);

        if (r == -ESTALE) {
                snprintf(why, sizeof(why), "%s secret %s no longer holds it", f->sh->cfg->name, f->in->secret);
                undo_stale(f, now, why);
                return -ESTALE;
        }
        if (r < 0)
                return r;
        r = verify_token(f, f->token);
        if (r != -EACCES && r != -EPERM && r != -ESTALE)
                return r;
        snprintf(why, sizeof(why), "%s", f->res->error);
        f->token = secret_free(f->token);      /* a fresh rotation makes its own */
        if (r == -ESTALE && !f->sh->ops->stages)
                undo_stale(f, now, "the store holds another token");      /* one without patrol's metadata */
        else if (f->sh->ops->stages)
                undo_stale(f, now, why);        /* only staged: it never was current */
        else
                replace_stored(f, now);
        return r;
}

static void recover_before_write(struct flight *f)
{
        char *version = NULL;
        int held = f->sh->ops->stages ? 0 : store_holds_new(f, &version);

        if (held < 0) {
                fail(f, OUTCOME_FAILED, "%s: cannot read secret %s to resolve the rotation in flight",
                     f->sh->cfg->name, f->in->secret);
                f->res->transient = true;
                return;
        }
        /* A crash between the store's write and its record: the store
         * holds the new token, so finish instead of revoking it. */
        if (held == 0) {
                undo(f);
                return;
        }
        rec_set(&f->ri->new_version, version);
        free(version);
        f->ri->step = STEP_WRITTEN;
        (void)save(f, "recovered-written");     /* on failure it said why */
}

static void recover_flight(struct flight *f, int64_t now)
{
        struct rec_integration *ri = f->ri;
        enum rot_step from = ri->step;

        log_event(LOG_NOTICE, LOG_EV_RECOVERED, f->in->name, "recovering a rotation left at step %s",
                  rot_step_name(from));
        if (from == STEP_CREATING) {
                undo_by_name(f);
        } else if (from == STEP_CREATED || from == STEP_VERIFIED) {
                recover_before_write(f);
                /* Still before the write: unresolved (it said why) or undone. */
                if (ri->step == STEP_CREATED || ri->step == STEP_VERIFIED)
                        return;
        }
        if (ri->step == STEP_WRITTEN || ri->step == STEP_READ_BACK) {
                if (recover_stored(f, now) < 0)
                        return;
                if (ri->step == STEP_WRITTEN)
                        (void)reached(f, STEP_READ_BACK, "read_back");  /* read back just now */
        }
        if (ri->step != STEP_IDLE) {
                advance(f, NULL, now);
                if (f->res->outcome == OUTCOME_ROTATED)
                        audit(f, "recovered", f->res->old_token_id[0] ? f->res->old_token_id : NULL,
                              f->res->new_token_id, f->res->version, NULL);
        } else if (from != STEP_IDLE) {
                audit(f, "recovered", NULL, NULL, NULL, "rotation undone: the new token never reached the store");
        }
}

static int revoke_due(struct flight *f, int64_t now)
{
        struct rec_integration *ri = f->ri;
        char err[512];

        if (!ri->revoke_token_id || ri->revoke_due > now)
                return 0;
        if (onplana_revoke(f->ctx->onp, f->in->account, ri->revoke_token_id, err, sizeof(err)) < 0) {
                log_error(f->in->name, "revocation of %s still due: %s", ri->revoke_token_id, err);
                fail_cleanup(f, "the old token's revocation is still due", err);
                return -EAGAIN;
        }
        log_event(LOG_NOTICE, LOG_EV_REVOKED, f->in->name, "revoked old token %s", ri->revoke_token_id);
        audit(f, "revoked", ri->revoke_token_id, NULL, NULL, NULL);
        rec_set(&ri->revoke_token_id, NULL);
        ri->revoke_due = 0;
        return save(f, "revoked");
}

static void result_init(struct rotate_result *res)
{
        memset(res, 0, sizeof(*res));
        res->outcome = OUTCOME_NOTHING;
        res->retry_after = -1;
}

static int flight_init(struct flight *f, struct rotate_ctx *ctx, const struct cfg_integration *in,
                       struct rotate_result *res)
{
        memset(f, 0, sizeof(*f));
        f->ctx = ctx;
        f->in = in;
        f->res = res;
        f->ri = records_get(ctx->rec, in->name);
        if (!f->ri) {
                fail(f, OUTCOME_FAILED, "out of memory");
                return -ENOMEM;
        }
        return open_store(f);
}

static void record_failure(struct flight *f, int64_t now)
{
        struct rec_integration *ri = f->ri;
        enum rotate_outcome o = f->res->outcome;

        bool urgent;

        if (o != OUTCOME_FAILED && o != OUTCOME_INCOMPLETE)
                return;
        urgent = !ri->token_id || ri->expires_at - now < f->in->policy->renew_before / 4;
        ri->last_result = o == OUTCOME_FAILED ? RESULT_FAILED : RESULT_INCOMPLETE;
        rec_set(&ri->last_error, f->res->error);
        ri->failures++;
        ri->next_rotation = now + schedule_backoff(f->in->policy, ri->failures, f->res->retry_after);
        (void)records_save(f->ctx->rec, ri);
        audit(f, "failed", ri->old_token_id ? ri->old_token_id : ri->token_id, ri->new_token_id,
              ri->new_version, f->res->error);
        /* Close to expiry a failure is an emergency: say so at error level. */
        log_event(urgent ? LOG_ERR : LOG_WARNING, LOG_EV_FAILED, f->in->name, "%s: %s",
                  rotate_outcome_name(o), f->res->error);
}

void rotate_recover(struct rotate_ctx *ctx, const struct cfg_integration *in, struct rotate_result *res)
{
        struct flight f;
        int64_t now = now_wall();

        result_init(res);
        if (flight_init(&f, ctx, in, res) == 0) {
                if (f.ri->step != STEP_IDLE)
                        recover_flight(&f, now);
                /* The policy would make it due weeks from now (the token's
                 * expiry is still ahead): a token that cannot be kept is
                 * replaced at once, after any revocation due, as below. */
                if (f.replace && res->outcome == OUTCOME_NOTHING) {
                        if (revoke_due(&f, now) == 0)
                                begin(&f, false, now);
                } else {
                        (void)revoke_due(&f, now);
                }
        }
        record_failure(&f, now);
        f.token = secret_free(f.token);
}

void rotate_integration(struct rotate_ctx *ctx, const struct cfg_integration *in, bool is_dry_run,
                        struct rotate_result *res)
{
        struct flight f;
        int64_t now = now_wall();

        result_init(res);
        if (flight_init(&f, ctx, in, res) < 0)
                goto out;
        if (!is_dry_run && f.ri->step != STEP_IDLE) {
                recover_flight(&f, now);
                if (f.ri->step != STEP_IDLE && res->outcome == OUTCOME_NOTHING) {
                        fail(&f, OUTCOME_FAILED, "a rotation left at step %s could not be resolved yet",
                             rot_step_name(f.ri->step));
                        res->transient = true;
                }
                /* A rotation finished (or stuck) in recovery is this run's
                 * rotation; one that was undone starts afresh below. */
                if (res->outcome != OUTCOME_NOTHING || f.ri->step != STEP_IDLE)
                        goto out;
        }
        /* No new token while an old one's revocation is due and failing:
         * that would leave three tokens alive. */
        if (!is_dry_run && revoke_due(&f, now) < 0)
                goto out;
        begin(&f, is_dry_run, now);
out:
        if (!is_dry_run)
                record_failure(&f, now);
        f.token = secret_free(f.token);
}
