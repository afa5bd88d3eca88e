/* fuzz_records.c: records_open() over a state_dir holding a fuzzed state.json
 * and state.journal (the input is split at the first "\n--journal--\n"; without
 * it, all of it is the snapshot).  Opened read-only (--status) and then
 * writable (replay, compaction, close), as patrol does after a crash. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "records.h"

static void put(const char *dir, const char *name, const uint8_t *data, size_t size)
{
        char path[256];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                abort();
        if (size && write(fd, data, size) != (ssize_t)size)
                abort();
        close(fd);
}

static void rm(const char *dir, const char *name)
{
        char path[256];

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        unlink(path);
}

static void open_and_use(const char *dir, bool readonly)
{
        struct records *r = NULL;
        char err[512];
        size_t i;

        if (records_open(dir, readonly, &r, err, sizeof(err)) < 0)
                return;
        for (i = 0; i < records_count(r); i++) {
                struct rec_integration *ri = records_at(r, i);
                (void)rot_step_name(ri->step);
                (void)last_result_name(ri->last_result);
                if (!readonly && i == 0)
                        (void)records_save(r, ri);
        }
        records_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char dir[] = "/tmp/patrol-fuzz-records.XXXXXX";
        static int ready;
        static const char sep[] = "\n--journal--\n";
        const uint8_t *j = NULL;
        size_t n = size, i;

        if (!ready) {
                if (!mkdtemp(dir))
                        abort();
                fuzz_quiet();
                ready = 1;
        }
        for (i = 0; i + sizeof(sep) - 1 <= size; i++)
                if (memcmp(data + i, sep, sizeof(sep) - 1) == 0) {
                        n = i;
                        j = data + i + sizeof(sep) - 1;
                        break;
                }
        put(dir, "state.json", data, n);
        if (j)
                put(dir, "state.journal", j, size - (size_t)(j - data));
        else
                rm(dir, "state.journal");
        open_and_use(dir, true);
        open_and_use(dir, false);
        rm(dir, "state.json");
        rm(dir, "state.json.tmp");
        rm(dir, "state.journal");
        rm(dir, "audit.jsonl");
        rm(dir, "lock");
        return 0;
}
