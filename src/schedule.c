/* schedule.c: the arithmetic of when to rotate; the daemon's loop sleeps
 * until the earliest of these times. */
#include "schedule.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

static uint64_t random_u64(void)
{
        uint64_t v = 0;

        if (getrandom(&v, sizeof(v), 0) != sizeof(v))
                v = (uint64_t)random();
        return v;
}

int64_t schedule_backoff(const struct policy *p, int failures, int64_t retry_after)
{
        int64_t d = p->retry_min > 0 ? p->retry_min : 1;
        int i;

        for (i = 1; i < failures && d < p->retry_max; i++)
                d *= 2;
        if (d > p->retry_max)
                d = p->retry_max;
        if (d > 1)
                d = d / 2 + (int64_t)(random_u64() % (uint64_t)(d / 2 + 1));
        if (retry_after > d)
                d = retry_after;
        return d;
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 1099511628211ULL;
        }
        return h;
}

/* The host name, read once: the daemon computes every integration's due
 * time at each wake-up, and the splay must not change under it anyway. */
static char host_name[256];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void read_host_name(void)
{
        (void)gethostname(host_name, sizeof(host_name) - 1);
}

int64_t schedule_splay(const struct cfg_integration *in)
{
        int64_t cap = in->policy->renew_before * 3 / 100;
        uint64_t h;

        if (cap > 3600)
                cap = 3600;
        if (cap <= 0)
                return 0;
        pthread_once(&host_once, read_host_name);
        h = fnv1a(fnv1a(14695981039346656037ULL, host_name), in->name);
        return (int64_t)(h % (uint64_t)(cap + 1));
}

/* Idle with a token and no failure: derived from the policy in force, so a
 * renew_before changed by a reload counts. */
static bool follows_policy(const struct rec_integration *ri)
{
        return ri->step == STEP_IDLE && ri->token_id && ri->failures == 0;
}

int64_t schedule_next_rotation(const struct cfg_integration *in, const struct rec_integration *ri)
{
        if (!ri)
                return 0;
        if (!follows_policy(ri))
                return ri->next_rotation;
        return ri->expires_at - in->policy->renew_before + schedule_splay(in);
}

int64_t schedule_rotation_due(const struct cfg_integration *in, const struct rec_integration *ri, int64_t now)
{
        /* After a failure next_rotation holds the backoff, even in flight. */
        if (!ri || !follows_policy(ri))
                return ri && ri->next_rotation > now ? ri->next_rotation : now;
        return schedule_next_rotation(in, ri);
}

int64_t schedule_due(const struct cfg_integration *in, const struct rec_integration *ri, int64_t now)
{
        int64_t due = schedule_rotation_due(in, ri, now);

        if (ri && ri->revoke_token_id && ri->revoke_due < due)
                due = ri->revoke_due;
        return due;
}
