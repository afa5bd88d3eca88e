/* fuzz_config.c: config_load() over arbitrary configuration text (written to a
 * temporary file, since libconfig reads files).  Credential files are not
 * checked (check_files = false): the parser and every validation rule are. */
#include <stdio.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char dir[] = "/tmp/patrol-fuzz-config.XXXXXX";
        static int ready;
        char path[sizeof(dir) + 16];
        struct config *c = NULL;
        FILE *f;

        if (!ready) {
                if (!mkdtemp(dir))
                        abort();
                fuzz_quiet();
                ready = 1;
        }
        snprintf(path, sizeof(path), "%s/patrol.conf", dir);
        f = fopen(path, "we");
        if (!f)
                abort();
        if (size && fwrite(data, 1, size, f) != size)
                abort();
        fclose(f);
        if (config_load(path, false, &c) == 0)
                config_free(c);
        unlink(path);
        return 0;
}
