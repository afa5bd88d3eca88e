/* duration.h: "90d"-style durations, RFC 3339 times and Retry-After values. */
#pragma once

#include <stdint.h>
#include <stddef.h>
#include <time.h>

/* "<integer><unit>" with unit one of s m h d w; no sign, no spaces.
 * Returns 0 and seconds in *ret, or -EINVAL / -ERANGE. */
int duration_parse(const char *s, int64_t *ret);

/* Format seconds as the largest exact unit ("90d", "36h", "0s"). */
void duration_format(int64_t secs, char *buf, size_t size);

/* RFC 3339 UTC with optional fraction and Z or +hh:mm offset. */
int time_parse_rfc3339(const char *s, int64_t *ret);
/* "2026-11-28T07:00:00Z"; buf needs 21 bytes. */
void time_format_rfc3339(int64_t t, char *buf, size_t size);

/* HTTP Retry-After: delta-seconds or an HTTP-date; result in seconds from
 * `now`, clamped to [0, 86400].  Returns 0 or -EINVAL. */
int retry_after_parse(const char *s, int64_t now, int64_t *ret);

/* A lifetime a server announced (a session's expires_in, a lease), bounded
 * to [0, LIFETIME_MAX_S] seconds: an absurd one must not overflow the
 * millisecond arithmetic of the timers that follow it. */
#define LIFETIME_MAX_S  (400LL * 86400)
static inline int64_t lifetime_clamp(int64_t secs)
{
        return secs < 0 ? 0 : secs > LIFETIME_MAX_S ? LIFETIME_MAX_S : secs;
}

/* The one wall clock: tests move it with $PATROL_FAKE_NOW_OFFSET (seconds
 * added to the real time) in builds and runs that need it. */
int64_t now_wall(void);
/* Monotonic milliseconds for timers and timeouts. */
int64_t now_mono_ms(void);
