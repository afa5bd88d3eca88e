/* fuzz_duration.c: duration_parse(), time_parse_rfc3339() and
 * retry_after_parse(), with round trips through the formatters: whatever
 * parses must format to text that parses back to the same value. */
#include <stdio.h>

#include "duration.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = fuzz_cstr(data, size), buf[64];
        int64_t v, w;

        fuzz_quiet();
        if (duration_parse(s, &v) == 0) {
                if (v < 0)
                        abort();
                duration_format(v, buf, sizeof(buf));
                if (duration_parse(buf, &w) != 0 || w != v) {
                        fprintf(stderr, "duration %s -> %lld -> \"%s\" does not parse back\n",
                                s, (long long)v, buf);
                        abort();
                }
        }
        if (time_parse_rfc3339(s, &v) == 0) {
                time_format_rfc3339(v, buf, sizeof(buf));
                if (time_parse_rfc3339(buf, &w) != 0 || w != v) {
                        fprintf(stderr, "time %s -> %lld -> \"%s\" does not parse back\n",
                                s, (long long)v, buf);
                        abort();
                }
        }
        (void)retry_after_parse(s, 1700000000, &v);
        (void)retry_after_parse(s, 0, &v);
        free(s);
        return 0;
}
