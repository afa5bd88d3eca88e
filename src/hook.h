/* hook.h: runs an integration's on_rotate command, without a shell. */
#pragma once

#include "config.h"

/* Runs argv with only PATH, PATROL_INTEGRATION, PATROL_TOKEN_ID and
 * PATROL_SECRET in its environment (never the token), no inherited
 * descriptors but /dev/null on stdin and a pipe on stdout/stderr whose
 * lines go to the log, and a time limit (SIGKILL after timeout_s).
 * Returns 0 when it exited 0; otherwise -EIO (message in err). */
int hook_run(const struct cfg_integration *in, const char *token_id, int timeout_s,
             char *err, size_t errlen);
