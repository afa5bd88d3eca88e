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
 * unset.  counters: one per integration, in configuration order. */
int metrics_write(const struct config *cfg, struct records *rec, const struct metrics_counters *counters);
