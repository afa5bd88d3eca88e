/* schedule.h: when each integration next needs work, backoff and splay. */
#pragma once

#include <stdint.h>

#include "config.h"
#include "records.h"

/* Capped exponential backoff with jitter after `failures` consecutive
 * failures (>= 1): retry_min * 2^(failures-1), capped at retry_max, then a
 * random value in [d/2, d]; never below retry_after when that is >= 0. */
int64_t schedule_backoff(const struct policy *p, int failures, int64_t retry_after);

/* A splay of up to 3% of renew_before, capped at one hour, so that many
 * hosts do not rotate in the same second.  It is a hash of the host name and
 * the integration's name: random across hosts, yet stable for one
 * integration so a restart or a changed policy does not move it about. */
int64_t schedule_splay(const struct cfg_integration *in);

/* The next rotation as status and metrics show it (0: none recorded): the
 * recorded time, except for an idle integration, whose follows the policy
 * in force as the scheduler's does. */
int64_t schedule_next_rotation(const struct cfg_integration *in, const struct rec_integration *ri);

/* When the next rotation is due: at once for a rotation in flight or an
 * integration without a token; else next_rotation (or, before any was
 * recorded, expires_at - renew_before). */
int64_t schedule_rotation_due(const struct cfg_integration *in, const struct rec_integration *ri, int64_t now);

/* When the integration next needs work (wall-clock seconds): a rotation in
 * flight or without a token: now; else the earlier of next_rotation and a
 * due revocation.  ri may be NULL (never seen: now). */
int64_t schedule_due(const struct cfg_integration *in, const struct rec_integration *ri, int64_t now);
