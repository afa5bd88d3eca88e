/* util.h: two small helpers every module that builds error lines uses. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Equal strings; NULL equals nothing. */
static inline bool streq(const char *a, const char *b)
{
        return a && b && strcmp(a, b) == 0;
}

/* snprintf into a caller's error buffer, which may be NULL. */
__attribute__((format(printf, 3, 4)))
static inline void set_err(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;

        if (!err || errlen == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}
