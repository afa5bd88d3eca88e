/* fuzz.h: shared bits of the libFuzzer harnesses (run-fuzz.sh builds them with
 * clang -fsanitize=fuzzer,address; replay.c drives them without libFuzzer). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline void fuzz_no_log(int level, const char *integration, const char *msg, void *userdata)
{
        (void)level; (void)integration; (void)msg; (void)userdata;
}

static inline void fuzz_quiet(void)
{
        log_set_capture(fuzz_no_log, NULL);
}

/* A NUL-terminated copy of the input (the parsers take C strings). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);

        if (!s)
                abort();
        if (size)
                memcpy(s, data, size);
        s[size] = '\0';
        return s;
}
