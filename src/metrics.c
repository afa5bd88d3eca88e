/* metrics.c: writes the metrics file after every change: per integration
 * token expiry, next rotation, last success, rotations and failures; patrol_up. */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schedule.h"

static void help(FILE *f, const char *name, const char *type, const char *text)
{
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* Label values are names (validated: [A-Za-z0-9._-]) so need no escaping. */
static void gauge_rows(FILE *f, const struct config *cfg, struct records *rec, int which)
{
        size_t i;

        for (i = 0; i < cfg->n_integrations; i++) {
                const struct cfg_integration *in = &cfg->integrations[i];
                struct rec_integration *ri = records_find(rec, in->name);
                int64_t v = 0;
                const char *metric = "";
                switch (which) {
                case 0: metric = "patrol_token_expiry_timestamp_seconds"; v = ri ? ri->expires_at : 0; break;
                case 1: metric = "patrol_next_rotation_timestamp_seconds"; v = schedule_next_rotation(in, ri); break;
                default: metric = "patrol_last_success_timestamp_seconds"; v = ri ? ri->last_rotation : 0; break;
                }
                fprintf(f, "%s{integration=\"%s\",store=\"%s\"} %lld\n", metric, in->name,
                        in->store->name, (long long)v);
        }
}

static void counter_rows(FILE *f, const struct config *cfg, const struct metrics_counters *c, bool failures)
{
        size_t i;

        for (i = 0; i < cfg->n_integrations; i++)
                fprintf(f, "%s{integration=\"%s\",store=\"%s\"} %llu\n",
                        failures ? "patrol_rotation_failures_total" : "patrol_rotations_total",
                        cfg->integrations[i].name, cfg->integrations[i].store->name,
                        (unsigned long long)(failures ? c[i].failures : c[i].rotations));
}

static void write_body(FILE *f, const struct config *cfg, struct records *rec, const struct metrics_counters *c,
                       bool up)
{
        help(f, "patrol_up", "gauge", "1 while the patrol daemon runs.");
        fprintf(f, "patrol_up %d\n", up ? 1 : 0);
        help(f, "patrol_token_expiry_timestamp_seconds", "gauge", "Expiry of the token in the store (0: none).");
        gauge_rows(f, cfg, rec, 0);
        help(f, "patrol_next_rotation_timestamp_seconds", "gauge", "When the next rotation is due.");
        gauge_rows(f, cfg, rec, 1);
        help(f, "patrol_last_success_timestamp_seconds", "gauge", "Time of the last successful rotation (0: never).");
        gauge_rows(f, cfg, rec, 2);
        help(f, "patrol_rotations_total", "counter", "Successful rotations since the daemon started.");
        counter_rows(f, cfg, c, false);
        help(f, "patrol_rotation_failures_total", "counter", "Failed or incomplete rotations since the daemon started.");
        counter_rows(f, cfg, c, true);
}

int metrics_write(const struct config *cfg, struct records *rec, const struct metrics_counters *c, bool up)
{
        char tmp[4096];
        FILE *f = NULL;
        int fd, r = 0;

        if (!cfg->metrics_file)
                return 0;
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", cfg->metrics_file) >= sizeof(tmp))
                return -ENAMETOOLONG;
        /* Readable by the node exporter: no secret is ever in it. */
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        (void)fchmod(fd, 0644);
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                close(fd);
                goto out;
        }
        write_body(f, cfg, rec, c, up);
        if (fflush(f) != 0 || fsync(fileno(f)) < 0)
                r = -errno;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, cfg->metrics_file) < 0)
                r = -errno;
out:
        if (r < 0)
                unlink(tmp);
        return r;
}
