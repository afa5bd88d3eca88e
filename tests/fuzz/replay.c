/* replay.c: a main() for the fuzz harnesses without libFuzzer, so that the
 * configured compiler (gcc) can build them for `make check`: runs
 * LLVMFuzzerTestOneInput once over each file of the given folders (default:
 * tests/fuzz/corpus/NAME and tests/fuzz/regress/NAME under $PATROL_SRCDIR)
 * and prints TAP, one line per input. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"config\" (the harness name)"
#endif

struct list { char **v; size_t n, cap; };

static void add(struct list *l, const char *path)
{
        if (l->n == l->cap) {
                l->cap = l->cap ? 2 * l->cap : 64;
                l->v = realloc(l->v, l->cap * sizeof(*l->v));
                if (!l->v)
                        abort();
        }
        if (!(l->v[l->n++] = strdup(path)))
                abort();
}

static int cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void collect(struct list *l, const char *path)
{
        struct stat st;
        struct dirent *e;
        DIR *d;
        char sub[4096];

        if (stat(path, &st) < 0)
                return;
        if (!S_ISDIR(st.st_mode)) {
                add(l, path);
                return;
        }
        if (!(d = opendir(path)))
                return;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
                collect(l, sub);
        }
        closedir(d);
}

static unsigned char *slurp(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rbe");
        unsigned char *buf = NULL;
        size_t len = 0, cap = 0, n;

        if (!f)
                return NULL;
        do {
                if (len + 4096 > cap && !(buf = realloc(buf, cap = cap * 2 + 8192)))
                        abort();
                n = fread(buf + len, 1, cap - len, f);
                len += n;
        } while (n > 0);
        fclose(f);
        *ret_len = len;
        return buf;
}

int main(int argc, char **argv)
{
        struct list l = { 0 };
        const char *top = getenv("PATROL_SRCDIR");
        char path[4096];
        size_t i;
        int k, bad = 0;

        if (argc > 1) {
                for (k = 1; k < argc; k++)
                        collect(&l, argv[k]);
        } else {
                top = top && *top ? top : ".";
                snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/%s", top, FUZZ_NAME);
                collect(&l, path);
                snprintf(path, sizeof(path), "%s/tests/fuzz/regress/%s", top, FUZZ_NAME);
                collect(&l, path);
        }
        if (l.n)
                qsort(l.v, l.n, sizeof(*l.v), cmp);
        printf("1..%zu\n", l.n);
        if (!l.n)
                printf("# no inputs for fuzz_%s\n", FUZZ_NAME);
        fflush(stdout);
        for (i = 0; i < l.n; i++) {
                size_t len = 0;
                unsigned char *buf = slurp(l.v[i], &len);

                if (!buf) {
                        printf("not ok %zu - %s: cannot read\n", i + 1, l.v[i]);
                        bad = 1;
                        continue;
                }
                /* a crash ends the run here: the TAP driver sees the missing lines */
                printf("# %s\n", l.v[i]);
                fflush(stdout);
                LLVMFuzzerTestOneInput(buf, len);
                free(buf);
                printf("ok %zu - fuzz_%s %s\n", i + 1, FUZZ_NAME, l.v[i]);
                fflush(stdout);
                free(l.v[i]);
        }
        free(l.v);
        return bad;
}
