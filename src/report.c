/* report.c: `patrol --report [ACCOUNT...] [--revoke-strays]`: every token
 * of the service accounts with its findings (SPEC.md section 7), as a table
 * or one JSON document, and the revocation of stray tokens.
 *
 * "current" comes from the records, not from the stores: the token id
 * patrol recorded when it placed a token is what the store holds (patrol is
 * the only writer of a managed secret), and reading the records needs no
 * store credentials and no network beyond Onplana.
 *
 * --json prints
 *   {"accounts":[{"name","org","error",
 *     "tokens":[{"id","prefix","name","scopes":[..],"projects":[..],
 *                "created_at","expires_at","last_used_at",
 *                "state":"active"|"expired"|"revoked",
 *                "findings":[{"finding","severity":"info"|"warning"}]}]}]}
 * with times RFC 3339 UTC or null, and "error" null unless the account's
 * tokens could not be listed (its "tokens" is then empty). */
#include "cli.h"
#include "report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "http.h"
#include "json.h"
#include "log.h"

/* ---- the rules ---- */

static const char *const finding_names[_FINDING_MAX] = {
        [FINDING_CURRENT] = "current",
        [FINDING_RETIRING] = "retiring",
        [FINDING_WILDCARD] = "wildcard",
        [FINDING_NO_EXPIRY] = "no-expiry",
        [FINDING_EXPIRES_SOON] = "expires-soon",
        [FINDING_NEVER_USED] = "never-used",
        [FINDING_STALE] = "stale",
        [FINDING_STRAY] = "stray",
        [FINDING_UNMANAGED] = "unmanaged",
};

#define WARNINGS (FINDING_BIT(FINDING_WILDCARD) | FINDING_BIT(FINDING_NO_EXPIRY) | \
                  FINDING_BIT(FINDING_EXPIRES_SOON) | FINDING_BIT(FINDING_NEVER_USED) | \
                  FINDING_BIT(FINDING_STALE) | FINDING_BIT(FINDING_STRAY))

const char *report_finding_name(enum report_finding f)
{
        return f < _FINDING_MAX ? finding_names[f] : "?";
}

bool report_finding_is_warning(enum report_finding f)
{
        return f < _FINDING_MAX && (WARNINGS & FINDING_BIT(f));
}

bool report_has_warning(unsigned findings)
{
        return (findings & WARNINGS) != 0;
}

const char *report_state_name(enum report_state s)
{
        switch (s) {
        case REPORT_ACTIVE: return "active";
        case REPORT_EXPIRED: return "expired";
        default: return "revoked";
        }
}

enum report_state report_token_state(const struct onplana_token *t, int64_t now)
{
        if (t->revoked_at)
                return REPORT_REVOKED;
        if (t->expires_at && t->expires_at <= now)
                return REPORT_EXPIRED;
        return REPORT_ACTIVE;
}

static bool id_in(const char *id, const char *const *v, size_t n)
{
        size_t i;

        for (i = 0; id && i < n; i++)
                if (strcmp(id, v[i]) == 0)
                        return true;
        return false;
}

static bool has_scope(const struct onplana_token *t, const char *scope)
{
        return id_in(scope, (const char *const *)t->scopes, t->n_scopes);
}

const struct cfg_integration *report_integration_for(const struct report_account *ra, const char *name)
{
        size_t i;

        for (i = 0; i < ra->n_integrations; i++)
                if (onplana_token_name_matches(ra->integrations[i]->name, name))
                        return ra->integrations[i];
        return NULL;
}

/* Who the token belongs to: an integration's store, its pending
 * revocation, an integration by name only (stray), or nobody. */
static unsigned ownership(const struct report_account *ra, const struct onplana_token *t)
{
        if (id_in(t->id, ra->current, ra->n_current))
                return FINDING_BIT(FINDING_CURRENT);
        if (id_in(t->id, ra->retiring, ra->n_retiring))
                return FINDING_BIT(FINDING_RETIRING);
        if (report_integration_for(ra, t->name))
                return FINDING_BIT(FINDING_STRAY);
        return FINDING_BIT(FINDING_UNMANAGED);
}

static unsigned hygiene(const struct report_account *ra, const struct onplana_token *t,
                        int64_t now, unsigned owner)
{
        unsigned f = 0;

        if (has_scope(t, "WILDCARD"))
                f |= FINDING_BIT(FINDING_WILDCARD);
        if (!t->expires_at)
                f |= FINDING_BIT(FINDING_NO_EXPIRY);
        /* A retiring token is on its way out, usually because it came within
         * renew_before: flagging it would fail every report taken during the
         * revoke_after grace of an ordinary rotation. */
        else if (t->expires_at - now <= ra->renew_before && !(owner & FINDING_BIT(FINDING_RETIRING)))
                f |= FINDING_BIT(FINDING_EXPIRES_SOON);
        if (!t->last_used_at && now - t->created_at > REPORT_NEVER_USED_AFTER)
                f |= FINDING_BIT(FINDING_NEVER_USED);
        if (t->last_used_at && now - t->last_used_at > REPORT_STALE_AFTER)
                f |= FINDING_BIT(FINDING_STALE);
        return f;
}

unsigned report_findings(const struct report_account *ra, const struct onplana_token *t, int64_t now)
{
        unsigned owner;

        if (report_token_state(t, now) != REPORT_ACTIVE)
                return 0;
        owner = ownership(ra, t);
        return owner | hygiene(ra, t, now, owner);
}

/* ---- what the records say about an account ---- */

static int push(const char ***v, size_t *n, const char *id)
{
        const char **nv;

        if (!id || !*id || id_in(id, *v, *n))
                return 0;
        nv = realloc(*v, (*n + 1) * sizeof(*nv));
        if (!nv)
                return -ENOMEM;
        nv[(*n)++] = id;
        *v = nv;
        return 0;
}

/* A rotation in flight has a new token that the store holds or is about
 * to hold (current), and an old one that stays current until consumers
 * read the new one (PROMOTED) and is merely retiring after that. */
static int collect_ids(struct report_account *ra, const struct rec_integration *ri)
{
        bool promoted = ri->step >= STEP_PROMOTED;
        int r = push(&ra->current, &ra->n_current, ri->token_id);

        if (r == 0 && ri->step != STEP_IDLE) {
                r = push(&ra->current, &ra->n_current, ri->new_token_id);
                if (r == 0)
                        r = promoted ? push(&ra->retiring, &ra->n_retiring, ri->old_token_id)
                                     : push(&ra->current, &ra->n_current, ri->old_token_id);
        }
        if (r == 0)
                r = push(&ra->retiring, &ra->n_retiring, ri->revoke_token_id);
        return r;
}

static int add_integration(struct report_account *ra, const struct cfg_integration *in, struct records *rec)
{
        const struct rec_integration *ri = records_find(rec, in->name);

        ra->integrations[ra->n_integrations++] = in;
        if (ra->n_integrations == 1 || in->policy->renew_before < ra->renew_before)
                ra->renew_before = in->policy->renew_before;
        return ri ? collect_ids(ra, ri) : 0;
}

int report_account_init(struct report_account *ra, const struct config *cfg,
                        const struct cfg_account *acct, struct records *rec)
{
        size_t i;
        int r = 0;

        memset(ra, 0, sizeof(*ra));
        ra->acct = acct;
        ra->renew_before = cfg->policy.renew_before;
        ra->integrations = calloc(cfg->n_integrations + 1, sizeof(*ra->integrations));
        if (!ra->integrations)
                return -ENOMEM;
        for (i = 0; r == 0 && i < cfg->n_integrations; i++)
                if (cfg->integrations[i].account == acct)
                        r = add_integration(ra, &cfg->integrations[i], rec);
        if (r < 0)
                report_account_done(ra);
        return r;
}

void report_account_done(struct report_account *ra)
{
        free(ra->integrations);
        free(ra->current);
        free(ra->retiring);
        memset(ra, 0, sizeof(*ra));
}

/* ---- the run ---- */

struct report_run {
        const struct cli *cli;
        const struct config *cfg;
        struct records *rec;
        struct onplana *onp;
        int64_t now;
        bool failed;            /* something could not be listed or revoked */
};

/* One account's part of the report. */
struct account_report {
        struct report_account ra;
        struct onplana_token **tokens;
        size_t n;
        char error[512];        /* set when the tokens could not be listed */
};

static int select_accounts(const struct config *cfg, const struct cli *c,
                           const struct cfg_account ***ret, size_t *ret_n)
{
        size_t i, n = c->n_names ? c->n_names : cfg->n_accounts;
        const struct cfg_account **v = calloc(n + 1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        for (i = 0; i < n; i++) {
                v[i] = c->n_names ? config_find_account(cfg, c->names[i]) : &cfg->accounts[i];
                if (!v[i]) {
                        const char **names = calloc(cfg->n_accounts + 1, sizeof(char *));
                        const char *hint = NULL;
                        for (size_t k = 0; names && k < cfg->n_accounts; k++)
                                names[k] = cfg->accounts[k].name;
                        if (names)
                                hint = config_suggest(c->names[i], names, cfg->n_accounts);
                        fprintf(stderr, "patrol: no account named \"%s\"%s%s%s\n", c->names[i],
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

/* True when any record, of any integration, names the token: whatever the
 * records hold on to is never revoked as a stray. */
static bool recorded(struct records *rec, const char *id)
{
        size_t i;

        for (i = 0; i < records_count(rec); i++) {
                const struct rec_integration *ri = records_at(rec, i);
                const char *ids[] = { ri->token_id, ri->new_token_id, ri->old_token_id, ri->revoke_token_id };
                for (size_t k = 0; k < sizeof(ids) / sizeof(ids[0]); k++)
                        if (ids[k] && strcmp(ids[k], id) == 0)
                                return true;
        }
        return false;
}

/* Right before revoking: not in the records (held under the state_dir lock
 * since before the list was fetched), and Onplana still has it active
 * under the same stray name. */
static bool still_stray(struct report_run *run, const struct account_report *ar,
                        const struct onplana_token *t)
{
        struct onplana_token *now_t = NULL;
        char err[512];
        bool yes;

        if (recorded(run->rec, t->id))
                return false;
        if (onplana_get(run->onp, ar->ra.acct, t->id, &now_t, err, sizeof(err)) < 0) {
                log_warning(NULL, "%s: not revoking %s: %s", ar->ra.acct->name, t->id, err);
                return false;
        }
        yes = report_token_state(now_t, run->now) == REPORT_ACTIVE &&
              now_t->name && strcmp(now_t->name, t->name) == 0;
        onplana_token_free(now_t);
        return yes;
}

static void audit_revoked(struct report_run *run, const struct cfg_integration *in, const char *id)
{
        struct audit_event ev = {
                .integration = in->name, .event = "revoked", .old_token_id = id,
                .store = in->store->name, .secret = in->secret,
        };
        int r = records_audit(run->rec, &ev);

        if (r < 0) {
                log_error(in->name, "audit.jsonl: cannot append: %s", strerror(-r));
                run->failed = true;
        }
}

static void revoke_stray(struct report_run *run, struct account_report *ar, struct onplana_token *t)
{
        const struct cfg_integration *in = report_integration_for(&ar->ra, t->name);
        char err[512];

        if (run->cli->dry_run) {
                /* stdout carries the one JSON document under --json */
                fprintf(run->cli->json ? stderr : stdout, "would revoke %s (%s)\n", t->id, t->name);
                return;
        }
        if (!still_stray(run, ar, t))
                return;
        if (onplana_revoke(run->onp, ar->ra.acct, t->id, err, sizeof(err)) < 0) {
                log_error(in->name, "cannot revoke stray token %s: %s", t->id, err);
                run->failed = true;
                return;
        }
        log_event(LOG_NOTICE, LOG_EV_REVOKED, in->name, "revoked stray token %s (%s)", t->id, t->name);
        audit_revoked(run, in, t->id);
        t->revoked_at = run->now;       /* what Onplana now says, without listing again */
}

static void revoke_strays(struct report_run *run, struct account_report *ar)
{
        size_t i;

        for (i = 0; i < ar->n; i++)
                if (report_findings(&ar->ra, ar->tokens[i], run->now) & FINDING_BIT(FINDING_STRAY))
                        revoke_stray(run, ar, ar->tokens[i]);
}

/* ---- JSON ---- */

static struct json_object *time_json(int64_t t)
{
        char buf[32];

        if (!t)
                return NULL;
        time_format_rfc3339(t, buf, sizeof(buf));
        return json_object_new_string(buf);
}

static struct json_object *str_json(const char *s)
{
        return s ? json_object_new_string(s) : NULL;
}

static struct json_object *findings_json(unsigned f)
{
        struct json_object *a = json_object_new_array();
        int i;

        for (i = 0; i < _FINDING_MAX; i++) {
                struct json_object *o;
                if (!(f & FINDING_BIT(i)))
                        continue;
                o = json_object_new_object();
                json_object_object_add(o, "finding", json_object_new_string(finding_names[i]));
                json_object_object_add(o, "severity", json_object_new_string(
                        report_finding_is_warning((enum report_finding)i) ? "warning" : "info"));
                json_object_array_add(a, o);
        }
        return a;
}

static struct json_object *token_json(const struct onplana_token *t, unsigned f, int64_t now)
{
        struct json_object *o = json_object_new_object();

        json_object_object_add(o, "id", str_json(t->id));
        json_object_object_add(o, "prefix", str_json(t->prefix));
        json_object_object_add(o, "name", str_json(t->name));
        json_object_object_add(o, "scopes", json_strv_new(t->scopes, t->n_scopes));
        json_object_object_add(o, "projects", json_strv_new(t->project_ids, t->n_project_ids));
        json_object_object_add(o, "created_at", time_json(t->created_at));
        json_object_object_add(o, "expires_at", time_json(t->expires_at));
        json_object_object_add(o, "last_used_at", time_json(t->last_used_at));
        json_object_object_add(o, "state", json_object_new_string(report_state_name(report_token_state(t, now))));
        json_object_object_add(o, "findings", findings_json(f));
        return o;
}

static struct json_object *account_json(const struct account_report *ar, int64_t now)
{
        struct json_object *o = json_object_new_object(), *toks = json_object_new_array();
        size_t i;

        for (i = 0; i < ar->n; i++)
                json_object_array_add(toks, token_json(ar->tokens[i],
                                                       report_findings(&ar->ra, ar->tokens[i], now), now));
        json_object_object_add(o, "name", json_object_new_string(ar->ra.acct->name));
        json_object_object_add(o, "org", json_object_new_string(ar->ra.acct->org));
        json_object_object_add(o, "error", ar->error[0] ? json_object_new_string(ar->error) : NULL);
        json_object_object_add(o, "tokens", toks);
        return o;
}

/* ---- the table ---- */

enum { COL_ID, COL_PREFIX, COL_NAME, COL_STATE, COL_CREATED, COL_EXPIRES, COL_LAST_USED,
       COL_SCOPES, COL_PROJECTS, COL_FINDINGS, N_COLS };

static const char *const col_titles[N_COLS] = {
        "ID", "PREFIX", "NAME", "STATE", "CREATED", "EXPIRES", "LAST USED", "SCOPES", "PROJECTS", "FINDINGS",
};

struct row {
        char *cell[N_COLS];
};

/* Names come from Onplana: keep terminal control sequences out of the table. */
static char *cell_dup(const char *s)
{
        char *d = strdup(s && *s ? s : "-");

        text_one_line(d);
        return d;
}

static char *join(char *const *v, size_t n)
{
        size_t i, len = 1;
        char *s;

        for (i = 0; i < n; i++)
                len += strlen(v[i]) + 1;
        s = calloc(1, len);
        for (i = 0; s && i < n; i++) {
                if (i)
                        strcat(s, ",");
                strcat(s, v[i]);
        }
        if (s && !*s) {
                free(s);
                return NULL;
        }
        return s;
}

static char *time_cell(int64_t t)
{
        char buf[32] = "-";

        if (t)
                time_format_rfc3339(t, buf, sizeof(buf));
        return strdup(buf);
}

static char *findings_cell(unsigned f)
{
        char buf[256] = "";
        int i;

        for (i = 0; i < _FINDING_MAX; i++)
                if (f & FINDING_BIT(i))
                        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
                                 buf[0] ? "," : "", finding_names[i]);
        return strdup(buf[0] ? buf : "-");
}

static void row_fill(struct row *row, const struct onplana_token *t, unsigned f, int64_t now)
{
        char *scopes = join(t->scopes, t->n_scopes), *projects = join(t->project_ids, t->n_project_ids);

        row->cell[COL_ID] = cell_dup(t->id);
        row->cell[COL_PREFIX] = cell_dup(t->prefix);
        row->cell[COL_NAME] = cell_dup(t->name);
        row->cell[COL_STATE] = strdup(report_state_name(report_token_state(t, now)));
        row->cell[COL_CREATED] = time_cell(t->created_at);
        row->cell[COL_EXPIRES] = time_cell(t->expires_at);
        row->cell[COL_LAST_USED] = time_cell(t->last_used_at);
        row->cell[COL_SCOPES] = cell_dup(scopes);
        row->cell[COL_PROJECTS] = cell_dup(projects);
        row->cell[COL_FINDINGS] = findings_cell(f);
        free(scopes);
        free(projects);
}

static void row_print(const char *const *cell, const size_t *width)
{
        int k;

        for (k = 0; k < N_COLS; k++) {
                const char *s = cell[k] ? cell[k] : "?";
                if (k == N_COLS - 1)
                        printf("%s\n", s);
                else
                        printf("%-*s  ", (int)width[k], s);
        }
}

static void rows_free(struct row *rows, size_t n)
{
        for (size_t i = 0; rows && i < n; i++)
                for (int k = 0; k < N_COLS; k++)
                        free(rows[i].cell[k]);
        free(rows);
}

static size_t count_warned(const struct account_report *ar, int64_t now)
{
        size_t i, n = 0;

        for (i = 0; i < ar->n; i++)
                n += report_has_warning(report_findings(&ar->ra, ar->tokens[i], now));
        return n;
}

static void print_header(const struct account_report *ar, int64_t now)
{
        size_t warned = count_warned(ar, now);

        printf("%s (org %s): %zu token%s, %zu with warnings\n", ar->ra.acct->name, ar->ra.acct->org,
               ar->n, ar->n == 1 ? "" : "s", warned);
}

/* Columns as wide as their widest cell, so long names and scope lists
 * stay readable. */
static void print_table(const struct account_report *ar, int64_t now)
{
        struct row *rows = calloc(ar->n + 1, sizeof(*rows));
        size_t width[N_COLS], i;
        int k;

        print_header(ar, now);
        if (!rows) {
                log_error(NULL, "out of memory");
                return;
        }
        for (k = 0; k < N_COLS; k++)
                width[k] = strlen(col_titles[k]);
        for (i = 0; i < ar->n; i++) {
                row_fill(&rows[i], ar->tokens[i], report_findings(&ar->ra, ar->tokens[i], now), now);
                for (k = 0; k < N_COLS; k++)
                        if (rows[i].cell[k] && strlen(rows[i].cell[k]) > width[k])
                                width[k] = strlen(rows[i].cell[k]);
        }
        row_print(col_titles, width);
        for (i = 0; i < ar->n; i++)
                row_print((const char *const *)rows[i].cell, width);
        rows_free(rows, ar->n);
}

/* ---- putting it together ---- */

static void account_report_free(struct account_report *ar)
{
        onplana_tokens_free(ar->tokens, ar->n);
        report_account_done(&ar->ra);
}

static bool has_warning(const struct account_report *ar, int64_t now)
{
        return count_warned(ar, now) > 0;
}

/* List, revoke the strays when asked, and show what remains. */
static bool report_account(struct report_run *run, const struct cfg_account *acct, struct json_object *list)
{
        struct account_report ar = { .n = 0 };
        bool warned;

        if (report_account_init(&ar.ra, run->cfg, acct, run->rec) < 0) {
                log_error(NULL, "out of memory");
                return true;
        }
        if (onplana_list(run->onp, acct, NULL, &ar.tokens, &ar.n, ar.error, sizeof(ar.error)) < 0) {
                log_error(NULL, "%s: %s", acct->name, ar.error);
                run->failed = true;
        } else if (run->cli->revoke_strays) {
                revoke_strays(run, &ar);
        }
        if (list)
                json_object_array_add(list, account_json(&ar, run->now));
        else
                print_table(&ar, run->now);
        warned = has_warning(&ar, run->now);
        account_report_free(&ar);
        return warned;
}

static int report_all(struct report_run *run, const struct cfg_account **sel, size_t n)
{
        struct json_object *list = run->cli->json ? json_object_new_array() : NULL;
        bool warned = false;
        size_t i;

        for (i = 0; i < n; i++) {
                if (!list && i > 0)
                        putchar('\n');
                warned |= report_account(run, sel[i], list);
        }
        if (list) {
                struct json_object *doc = json_object_new_object();
                json_object_object_add(doc, "accounts", list);
                puts(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(doc);
        }
        return warned || run->failed ? EXIT_FAILED : EXIT_OK;
}

static int open_records(const struct cli *c, const struct config *cfg, struct records **ret)
{
        /* Revoking takes the state_dir lock, so no rotation can record a
         * token between our reading the records and revoking a stray. */
        bool readonly = !c->revoke_strays || c->dry_run;
        char err[512];
        int r = records_open(cfg->state_dir, readonly, ret, err, sizeof(err));

        if (r < 0)
                log_error(NULL, "%s", err);
        return r;
}

int cli_report(const struct cli *c)
{
        const struct cfg_account **sel = NULL;
        struct report_run run = { .cli = c };
        struct config *cfg = NULL;
        struct http_client *http = NULL;
        size_t n = 0;
        int status = EXIT_FAILED, r;

        if (config_load(c->config_path, false, &cfg) < 0)
                return EXIT_CONFIG;
        run.cfg = cfg;
        r = select_accounts(cfg, c, &sel, &n);
        if (r < 0) {
                if (r == -ENOMEM)
                        log_error(NULL, "out of memory");
                status = r == -ENOENT ? EXIT_USAGE : EXIT_FAILED;
                goto out;
        }
        if (open_records(c, cfg, &run.rec) < 0)
                goto out;
        http = http_client_new(0, 0);
        run.onp = http ? onplana_new(&cfg->onplana, http) : NULL;
        if (!run.onp) {
                log_error(NULL, "out of memory");
                goto out;
        }
        run.now = now_wall();
        status = report_all(&run, sel, n);
out:
        onplana_free(run.onp);
        http_client_free(http);
        records_close(run.rec);
        free(sel);
        config_free(cfg);
        return status;
}
