/* hook.h: runs an integration's on_rotate command, without a shell. */
#pragma once

#include "config.h"

/* Runs argv with only PATH, PATROL_INTEGRATION, PATROL_TOKEN_ID and
 * PATROL_SECRET in its environment (never the token), no inherited
 * descriptors but /dev/null on stdin and a pipe on stdout/stderr whose
 * lines go to the log, in a process group of its own, and a time limit.
 * Its exit ends the wait, even when something it started in the
 * background still holds the pipe.  After timeout_s, or when the daemon is
 * asked to stop (stop.h), its group is killed (SIGTERM, then SIGKILL).
 * Returns 0 when it exited 0; otherwise -EIO, or -ECANCELED when stopped
 * (message in err). */
int hook_run(const struct cfg_integration *in, const char *token_id, int timeout_s,
             char *err, size_t errlen);

