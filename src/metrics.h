/* metrics.h: the Prometheus text file (node_exporter textfile collector). */
#pragma once

#include "config.h"
#include "records.h"

/* Counters kept by the running process (reset at start, as Prometheus
 * counters may be). */
struct metrics_counters {
        const char *name;
        uint64_t rotations;
        uint64_t failures;
};

/* Write cfg->metrics_file atomically (temporary file + rename); no-op when
 * unset.  counters: one per integration, in configuration order.  up:
 * patrol_up (false once, as the daemon stops: a file left saying 1 would
 * keep an alert on patrol_up == 0 from ever firing). */
int metrics_write(const struct config *cfg, struct records *rec, const struct metrics_counters *counters,
                  bool up);
