/* stop.c: the daemon's stop request, read by http.c and hook.c. */
#include "stop.h"

#include <stddef.h>

static const atomic_int *stop_flag;

void stop_watch(const atomic_int *flag)
{
        stop_flag = flag;
}

bool stop_requested_now(void)
{
        return stop_flag && atomic_load(stop_flag);
}
