/* hook.h: runs an integration's on_rotate command, without a shell. */
#pragma once

#include "config.h"

#include <stdatomic.h>

/* Runs argv with only PATH, PATROL_INTEGRATION, PATROL_TOKEN_ID and
 * PATROL_SECRET in its environment (never the token), no inherited
 * descriptors but /dev/null on stdin and a pipe on stdout/stderr whose
 * lines go to the log, in a process group of its own, and a time limit.
 * Its exit ends the wait, even when something it started in the
 * background still holds the pipe.  After timeout_s, or when the stop flag
 * is set, its group is killed (SIGTERM, then SIGKILL).
 * Returns 0 when it exited 0; otherwise -EIO, or -ECANCELED when stopped
 * (message in err). */
int hook_run(const struct cfg_integration *in, const char *token_id, int timeout_s,
             char *err, size_t errlen);

/* The daemon's stop flag (http_set_stop_flag's): a SIGTERM must not wait
 * for a slow hook. */
void hook_set_stop_flag(const atomic_int *flag);
