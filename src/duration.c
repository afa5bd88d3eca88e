/* duration.c: "90d"-style durations, RFC 3339 and HTTP dates, and the one
 * clock every other module reads "now" from (so tests can move it). */
#include "autoconfig.h"
#include "duration.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_AFTER_MAX 86400

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static int64_t unit_seconds(char u)
{
        switch (u) {
        case 's': return 1;
        case 'm': return 60;
        case 'h': return 3600;
        case 'd': return 86400;
        case 'w': return 7 * 86400;
        default:  return 0;
        }
}

int duration_parse(const char *s, int64_t *ret)
{
        int64_t v = 0, mult;
        const char *p = s;

        if (!s || !is_digit(*p))        /* rejects "", sign and leading space */
                return -EINVAL;
        for (; is_digit(*p); p++) {
                if (v > (INT64_MAX - (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (*p - '0');
        }
        mult = unit_seconds(*p);
        if (mult == 0 || p[1] != '\0')
                return -EINVAL;
        if (v > INT64_MAX / mult)
                return -ERANGE;
        *ret = v * mult;
        return 0;
}

void duration_format(int64_t secs, char *buf, size_t size)
{
        static const char units[] = "wdhm";
        int64_t a = secs < 0 ? -secs : secs;

        if (size == 0)
                return;
        for (const char *u = units; *u && a != 0; u++) {
                int64_t m = unit_seconds(*u);

                if (a % m == 0) {
                        snprintf(buf, size, "%" PRId64 "%c", secs / m, *u);
                        return;
                }
        }
        snprintf(buf, size, "%" PRId64 "s", secs);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * algorithm): avoids timegm(), which depends on the process's TZ handling. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned)(y - era * 400);
        unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

        return era * 146097 + (int64_t)doe - 719468;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
        static const unsigned dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

        return m == 2 && leap ? 29 : dm[m - 1];
}

/* Read exactly n digits. */
static bool digits(const char **p, int n, int *ret)
{
        int v = 0;

        for (int i = 0; i < n; i++) {
                if (!is_digit((*p)[i]))
                        return false;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

static bool expect(const char **p, char c)
{
        if (**p != c)
                return false;
        (*p)++;
        return true;
}

struct civil {
        int year, mon, day, hour, min, sec;
};

static int civil_to_time(const struct civil *t, int64_t *ret)
{
        if (t->mon < 1 || t->mon > 12 || t->day < 1 ||
            (unsigned)t->day > days_in_month(t->year, (unsigned)t->mon) ||
            t->hour > 23 || t->min > 59 || t->sec > 60)     /* 60: leap second */
                return -EINVAL;
        *ret = days_from_civil(t->year, (unsigned)t->mon, (unsigned)t->day) * 86400 +
               t->hour * 3600 + t->min * 60 + t->sec;
        return 0;
}

/* "Z", or "+hh:mm" / "-hh:mm"; the offset is subtracted to get UTC. */
static bool parse_offset(const char **p, int *ret)
{
        int sign, hh, mm;

        if (**p == 'Z' || **p == 'z') {
                (*p)++;
                *ret = 0;
                return true;
        }
        if (**p != '+' && **p != '-')
                return false;
        sign = **p == '-' ? -1 : 1;
        (*p)++;
        if (!digits(p, 2, &hh) || !expect(p, ':') || !digits(p, 2, &mm) || hh > 23 || mm > 59)
                return false;
        *ret = sign * (hh * 3600 + mm * 60);
        return true;
}

int time_parse_rfc3339(const char *s, int64_t *ret)
{
        struct civil t;
        const char *p = s;
        int off;
        int64_t v;

        if (!s || !digits(&p, 4, &t.year) || !expect(&p, '-') || !digits(&p, 2, &t.mon) ||
            !expect(&p, '-') || !digits(&p, 2, &t.day))
                return -EINVAL;
        /* RFC 3339 5.6 allows "t" and, as a note, a space for the separator. */
        if (*p != 'T' && *p != 't' && *p != ' ')
                return -EINVAL;
        p++;
        if (!digits(&p, 2, &t.hour) || !expect(&p, ':') || !digits(&p, 2, &t.min) ||
            !expect(&p, ':') || !digits(&p, 2, &t.sec))
                return -EINVAL;
        if (*p == '.') {                /* fraction: accepted, truncated */
                if (!is_digit(*++p))
                        return -EINVAL;
                while (is_digit(*p))
                        p++;
        }
        if (!parse_offset(&p, &off) || *p != '\0' || civil_to_time(&t, &v) < 0)
                return -EINVAL;
        /* UTC must still be a four-digit year, or it would not format back
         * (e.g. 9999-12-31T23:00:00-02:00). 253402300799 is 9999-12-31T23:59:59Z. */
        if (v - off < -62167219200LL || v - off > 253402300799LL)
                return -ERANGE;
        *ret = v - off;
        return 0;
}

void time_format_rfc3339(int64_t t, char *buf, size_t size)
{
        struct tm tm;
        time_t tt = (time_t)t;

        if (size == 0)
                return;
        if (!gmtime_r(&tt, &tm)) {
                buf[0] = '\0';
                return;
        }
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static int lookup3(const char *p, const char *const *names, int n)
{
        for (int i = 0; i < n; i++)
                if (strncmp(p, names[i], 3) == 0)
                        return i;
        return -1;
}

/* IMF-fixdate, the HTTP-date form servers must send (RFC 9110 5.6.7):
 * "Sun, 06 Nov 1994 08:49:37 GMT".  The obsolete forms are not accepted. */
static int parse_imf_fixdate(const char *s, int64_t *ret)
{
        static const char *const wdays[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
        static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        struct civil t;
        const char *p = s;

        if (strlen(s) != 29 || lookup3(p, wdays, 7) < 0)
                return -EINVAL;
        p += 3;
        if (!expect(&p, ',') || !expect(&p, ' ') || !digits(&p, 2, &t.day) || !expect(&p, ' '))
                return -EINVAL;
        t.mon = lookup3(p, months, 12) + 1;
        if (t.mon == 0)
                return -EINVAL;
        p += 3;
        if (!expect(&p, ' ') || !digits(&p, 4, &t.year) || !expect(&p, ' ') ||
            !digits(&p, 2, &t.hour) || !expect(&p, ':') || !digits(&p, 2, &t.min) ||
            !expect(&p, ':') || !digits(&p, 2, &t.sec) || strcmp(p, " GMT") != 0)
                return -EINVAL;
        return civil_to_time(&t, ret);
}

static int64_t clamp_retry(int64_t v)
{
        return v < 0 ? 0 : v > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : v;
}

/* Header values may carry optional whitespace around them. */
static size_t trimmed(const char *s, const char **start)
{
        size_t n;

        while (*s == ' ' || *s == '\t')
                s++;
        n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
                n--;
        *start = s;
        return n;
}

int retry_after_parse(const char *s, int64_t now, int64_t *ret)
{
        char buf[64];
        const char *p;
        size_t n;
        int64_t v = 0, when;

        if (!s)
                return -EINVAL;
        n = trimmed(s, &p);
        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, p, n);
        buf[n] = '\0';
        if (is_digit(buf[0])) {
                for (p = buf; is_digit(*p); p++)        /* huge values clamp, never overflow */
                        v = v > RETRY_AFTER_MAX ? v : v * 10 + (*p - '0');
                if (*p != '\0')
                        return -EINVAL;
                *ret = clamp_retry(v);
                return 0;
        }
        if (parse_imf_fixdate(buf, &when) < 0)
                return -EINVAL;
        *ret = clamp_retry(when - now);
        return 0;
}

static pthread_once_t fake_once = PTHREAD_ONCE_INIT;
static int64_t fake_offset;

/* Read once: the environment must not change what "now" means mid-run. */
static void read_fake_offset(void)
{
        const char *e = secure_getenv("PATROL_FAKE_NOW_OFFSET");
        char *end;
        long long v;

        if (!e || !*e)
                return;
        errno = 0;
        v = strtoll(e, &end, 10);
        if (errno == 0 && *end == '\0')
                fake_offset = v;
}

int64_t now_wall(void)
{
        struct timespec ts;

        pthread_once(&fake_once, read_fake_offset);
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec + fake_offset;
}

int64_t now_mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
