/* status.c: `patrol --status`: every integration's store, secret, current
 * token, expiry, next rotation, last result and anything pending. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "duration.h"
#include "json.h"
#include "log.h"
#include "records.h"
#include "schedule.h"

static void fmt_time(int64_t t, char *buf, size_t size)
{
        if (t)
                time_format_rfc3339(t, buf, size);
        else
                snprintf(buf, size, "-");
}

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

static struct json_object *pending_json(const struct rec_integration *ri)
{
        struct json_object *p;

        if (ri && ri->step != STEP_IDLE) {
                p = json_object_new_object();
                json_object_object_add(p, "kind", json_object_new_string("rotation"));
                json_object_object_add(p, "step", json_object_new_string(rot_step_name(ri->step)));
                json_object_object_add(p, "new_token_id", str_json(ri->new_token_id));
                return p;
        }
        if (ri && ri->revoke_token_id) {
                p = json_object_new_object();
                json_object_object_add(p, "kind", json_object_new_string("revocation"));
                json_object_object_add(p, "token_id", str_json(ri->revoke_token_id));
                json_object_object_add(p, "due", time_json(ri->revoke_due));
                return p;
        }
        return NULL;
}

static struct json_object *entry_json(const struct cfg_integration *in, const struct rec_integration *ri)
{
        struct json_object *o = json_object_new_object();

        json_object_object_add(o, "name", json_object_new_string(in->name));
        json_object_object_add(o, "store", json_object_new_string(in->store->name));
        json_object_object_add(o, "secret", json_object_new_string(in->secret));
        json_object_object_add(o, "token_id", str_json(ri ? ri->token_id : NULL));
        json_object_object_add(o, "expires_at", time_json(ri ? ri->expires_at : 0));
        json_object_object_add(o, "next_rotation", time_json(schedule_next_rotation(in, ri)));
        json_object_object_add(o, "last_result",
                               json_object_new_string(last_result_name(ri ? ri->last_result : RESULT_NONE)));
        json_object_object_add(o, "last_rotation", time_json(ri ? ri->last_rotation : 0));
        json_object_object_add(o, "pending", pending_json(ri));
        return o;
}

static void pending_text(const struct rec_integration *ri, char *buf, size_t size)
{
        char due[32];

        if (ri && ri->step != STEP_IDLE) {
                snprintf(buf, size, "rotation at step %s", rot_step_name(ri->step));
        } else if (ri && ri->revoke_token_id) {
                fmt_time(ri->revoke_due, due, sizeof(due));
                snprintf(buf, size, "revoke %s at %s", ri->revoke_token_id, due);
        } else {
                snprintf(buf, size, "-");
        }
}

static void print_row(const struct cfg_integration *in, const struct rec_integration *ri)
{
        char exp[32], next[32], pend[192], where[300];
        int64_t nx = schedule_next_rotation(in, ri);

        fmt_time(ri ? ri->expires_at : 0, exp, sizeof(exp));
        fmt_time(nx, next, sizeof(next));
        if (!nx)
                snprintf(next, sizeof(next), "now");
        pending_text(ri, pend, sizeof(pend));
        snprintf(where, sizeof(where), "%s:%s", in->store->name, in->secret);
        printf("%-28s %-40s %-30s %-20s %-20s %-10s %s\n", in->name, where,
               ri && ri->token_id ? ri->token_id : "-", exp, next,
               last_result_name(ri ? ri->last_result : RESULT_NONE), pend);
        if (ri && ri->last_error && ri->last_result != RESULT_ROTATED)
                printf("%-28s   last error: %s\n", "", ri->last_error);
}

int cli_status(const struct cli *c)
{
        struct config *cfg = NULL;
        struct records *rec = NULL;
        struct json_object *list = NULL;
        char err[512];
        size_t i;

        if (config_load(c->config_path, false, &cfg) < 0)
                return EXIT_CONFIG;
        if (records_open(cfg->state_dir, true, &rec, err, sizeof(err)) < 0) {
                log_error(NULL, "%s", err);
                config_free(cfg);
                return EXIT_FAILED;
        }
        if (c->json)
                list = json_object_new_array();
        else
                printf("%-28s %-40s %-30s %-20s %-20s %-10s %s\n", "INTEGRATION", "STORE:SECRET",
                       "TOKEN", "EXPIRES", "NEXT ROTATION", "LAST", "PENDING");
        for (i = 0; i < cfg->n_integrations; i++) {
                const struct cfg_integration *in = &cfg->integrations[i];
                struct rec_integration *ri = records_find(rec, in->name);
                if (list)
                        json_object_array_add(list, entry_json(in, ri));
                else
                        print_row(in, ri);
        }
        if (list) {
                struct json_object *doc = json_object_new_object();
                json_object_object_add(doc, "integrations", list);
                puts(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(doc);
        }
        records_close(rec);
        config_free(cfg);
        return EXIT_OK;
}
