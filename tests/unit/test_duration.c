/* test_duration.c: durations, RFC 3339 times, Retry-After and the clock. */
#include "autoconfig.h"

#include "test_util.h"

#include <inttypes.h>

#include "duration.h"

static void test_parse_good(void **state)
{
        static const struct { const char *s; int64_t v; } cases[] = {
                { "0s", 0 }, { "1s", 1 }, { "90s", 90 }, { "5m", 300 }, { "12h", 43200 },
                { "90d", 7776000 }, { "2w", 1209600 }, { "007m", 420 },
                { "9223372036854775807s", INT64_MAX },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int64_t v = -1;

                assert_int_equal(duration_parse(cases[i].s, &v), 0);
                assert_true(v == cases[i].v);
        }
}

static void test_parse_bad(void **state)
{
        static const char *const einval[] = {
                "", "d", "90", "+90d", "-1d", " 90d", "90d ", "90 d", "90D", "90y", "90dd",
                "1.5h", "0x10s", "9d9",
        };
        static const char *const erange[] = {
                "9223372036854775808s", "99999999999999999999d", "15250284452472w",
        };
        int64_t v = 42;

        for (size_t i = 0; i < sizeof(einval) / sizeof(einval[0]); i++)
                assert_int_equal(duration_parse(einval[i], &v), -EINVAL);
        for (size_t i = 0; i < sizeof(erange) / sizeof(erange[0]); i++)
                assert_int_equal(duration_parse(erange[i], &v), -ERANGE);
        assert_int_equal(duration_parse(NULL, &v), -EINVAL);
        assert_true(v == 42);   /* untouched on failure */
}

static void test_format(void **state)
{
        static const struct { int64_t v; const char *s; } cases[] = {
                { 0, "0s" }, { 59, "59s" }, { 60, "1m" }, { 90, "90s" }, { 3600, "1h" },
                { 129600, "36h" }, { 7776000, "90d" }, { 1209600, "2w" }, { 86401, "86401s" },
                { -120, "-2m" },
        };
        char buf[32];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                duration_format(cases[i].v, buf, sizeof(buf));
                assert_string_equal(buf, cases[i].s);
        }
        duration_format(7776000, buf, 3);       /* truncates, stays terminated */
        assert_string_equal(buf, "90");
}

static void test_format_parse_round_trip(void **state)
{
        static const int64_t values[] = { 0, 1, 61, 3600, 86400 * 365, 14 * 86400, 7 * 3600 + 1 };
        char buf[32];
        int64_t v;

        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
                duration_format(values[i], buf, sizeof(buf));
                assert_int_equal(duration_parse(buf, &v), 0);
                assert_true(v == values[i]);
        }
}

static void test_rfc3339_parse(void **state)
{
        static const struct { const char *s; int64_t v; } cases[] = {
                { "1970-01-01T00:00:00Z", 0 },
                { "2026-11-28T07:00:00Z", 1795849200 },
                { "2026-11-28t07:00:00z", 1795849200 },
                { "2026-11-28 07:00:00Z", 1795849200 },
                { "2026-11-28T07:00:00.123456789Z", 1795849200 },
                { "2026-11-28T09:00:00+02:00", 1795849200 },
                { "2026-11-28T01:30:00-05:30", 1795849200 },
                { "2024-02-29T12:00:00Z", 1709208000 },
                { "2000-03-01T00:00:00Z", 951868800 },
                { "1969-12-31T23:59:59Z", -1 },
                { "2016-12-31T23:59:60Z", 1483228800 },         /* leap second */
        };
        int64_t v;

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                assert_int_equal(time_parse_rfc3339(cases[i].s, &v), 0);
                if (v != cases[i].v)
                        fail_msg("%s: %" PRId64 " != %" PRId64, cases[i].s, v, cases[i].v);
        }
}

static void test_rfc3339_bad(void **state)
{
        static const char *const bad[] = {
                "", "2026-11-28", "2026-11-28T07:00:00", "2026-11-28T07:00Z", "2026-13-01T00:00:00Z",
                "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-28T24:00:00Z",
                "2026-11-28T07:60:00Z", "2026-11-28T07:00:00.Z", "2026-11-28T07:00:00+0200",
                "2026-11-28T07:00:00Z ", " 2026-11-28T07:00:00Z", "26-11-28T07:00:00Z",
                "2026-11-28X07:00:00Z", "2026-11-28T07:00:00+24:00", "2026-00-10T00:00:00Z",
        };
        int64_t v;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (time_parse_rfc3339(bad[i], &v) != -EINVAL)
                        fail_msg("accepted \"%s\"", bad[i]);
}

static void test_rfc3339_round_trip(void **state)
{
        static const int64_t values[] = { 0, 1795849200, 951782400, 4102444799, 1709208000 };
        char buf[21];
        int64_t v;

        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
                time_format_rfc3339(values[i], buf, sizeof(buf));
                assert_int_equal(strlen(buf), 20);
                assert_int_equal(time_parse_rfc3339(buf, &v), 0);
                assert_true(v == values[i]);
        }
        time_format_rfc3339(1795849200, buf, sizeof(buf));
        assert_string_equal(buf, "2026-11-28T07:00:00Z");
}

static void test_retry_after_seconds(void **state)
{
        int64_t v;

        assert_int_equal(retry_after_parse("120", 1000, &v), 0);
        assert_true(v == 120);
        assert_int_equal(retry_after_parse("0", 1000, &v), 0);
        assert_true(v == 0);
        assert_int_equal(retry_after_parse(" 7 \r\n", 1000, &v), 0);
        assert_true(v == 7);
        assert_int_equal(retry_after_parse("86401", 0, &v), 0);
        assert_true(v == 86400);
        assert_int_equal(retry_after_parse("99999999999999999999999999", 0, &v), 0);
        assert_true(v == 86400);
        assert_int_equal(retry_after_parse("-5", 0, &v), -EINVAL);
        assert_int_equal(retry_after_parse("5s", 0, &v), -EINVAL);
        assert_int_equal(retry_after_parse("1.5", 0, &v), -EINVAL);
        assert_int_equal(retry_after_parse("", 0, &v), -EINVAL);
        assert_int_equal(retry_after_parse("   ", 0, &v), -EINVAL);
        assert_int_equal(retry_after_parse(NULL, 0, &v), -EINVAL);
}

static void test_retry_after_date(void **state)
{
        const int64_t t = 784111777;    /* Sun, 06 Nov 1994 08:49:37 GMT */
        int64_t v;

        assert_int_equal(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", t - 30, &v), 0);
        assert_true(v == 30);
        assert_int_equal(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", t + 30, &v), 0);
        assert_true(v == 0);            /* a date in the past: retry now */
        assert_int_equal(retry_after_parse("Mon, 07 Nov 1994 08:49:37 GMT", t - 10, &v), 0);
        assert_true(v == 86400);        /* clamped */
        assert_int_equal(retry_after_parse("Sat, 28 Nov 2026 07:00:05 GMT", 1795849200, &v), 0);
        assert_true(v == 5);
        /* obsolete RFC 850 and asctime forms, and malformed dates */
        assert_int_equal(retry_after_parse("Sunday, 06-Nov-94 08:49:37 GMT", t, &v), -EINVAL);
        assert_int_equal(retry_after_parse("Sun Nov  6 08:49:37 1994", t, &v), -EINVAL);
        assert_int_equal(retry_after_parse("Sun, 06 Nov 1994 08:49:37 UTC", t, &v), -EINVAL);
        assert_int_equal(retry_after_parse("Sun, 31 Nov 1994 08:49:37 GMT", t, &v), -EINVAL);
        assert_int_equal(retry_after_parse("Xyz, 06 Nov 1994 08:49:37 GMT", t, &v), -EINVAL);
        assert_int_equal(retry_after_parse("Sun, 06 Noo 1994 08:49:37 GMT", t, &v), -EINVAL);
}

/* $PATROL_FAKE_NOW_OFFSET is read once, at the first call: set it first. */
static void test_now(void **state)
{
        struct timespec ts;
        int64_t w, m1, m2;

        clock_gettime(CLOCK_REALTIME, &ts);
        w = now_wall();
        assert_true(w >= ts.tv_sec + 86400 * 10 && w <= ts.tv_sec + 86400 * 10 + 5);
        setenv("PATROL_FAKE_NOW_OFFSET", "0", 1);       /* no effect any more */
        assert_true(now_wall() >= ts.tv_sec + 86400 * 10);
        m1 = now_mono_ms();
        m2 = now_mono_ms();
        assert_true(m1 > 0 && m2 >= m1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_good),
                cmocka_unit_test(test_parse_bad),
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_format_parse_round_trip),
                cmocka_unit_test(test_rfc3339_parse),
                cmocka_unit_test(test_rfc3339_bad),
                cmocka_unit_test(test_rfc3339_round_trip),
                cmocka_unit_test(test_retry_after_seconds),
                cmocka_unit_test(test_retry_after_date),
                cmocka_unit_test(test_now),
        };

        setenv("PATROL_FAKE_NOW_OFFSET", "864000", 1);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
