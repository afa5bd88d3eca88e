/* stop.h: the daemon's stop request, as seen by what may wait long (HTTP
 * transfers and their retries, on_rotate hooks), so that SIGTERM is obeyed
 * within seconds even in the middle of a slow call or hook. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

/* Watch flag (the daemon's; NULL: nothing to watch, as in --rotate-now). */
void stop_watch(const atomic_int *flag);

/* The watched flag is set. */
bool stop_requested_now(void);
