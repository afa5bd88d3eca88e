/* test_util.h: helpers shared by the cmocka unit programs: scratch folders,
 * files written with a given mode, and captured log lines (log_set_capture). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

#define CAPTURE_MAX 64

/* Log lines received while a test runs. */
struct capture {
        char *msg[CAPTURE_MAX];
        int level[CAPTURE_MAX];
        size_t n;
};

static inline void capture_line(int level, const char *integration, const char *msg, void *userdata)
{
        struct capture *c = userdata;

        if (c->n < CAPTURE_MAX) {
                c->level[c->n] = level;
                c->msg[c->n] = strdup(msg);
                c->n++;
        }
}

static inline void capture_clear(struct capture *c)
{
        for (size_t i = 0; i < c->n; i++)
                free(c->msg[i]);
        c->n = 0;
}

static inline void capture_start(struct capture *c)
{
        c->n = 0;
        log_set_capture(capture_line, c);
}

static inline void capture_stop(struct capture *c)
{
        log_set_capture(NULL, NULL);
        capture_clear(c);
}

static inline size_t capture_count(const struct capture *c, int level)
{
        size_t n = 0;

        for (size_t i = 0; i < c->n; i++)
                n += c->level[i] == level;
        return n;
}

/* The first line at `level` holding `needle`, or NULL. */
static inline const char *capture_find(const struct capture *c, int level, const char *needle)
{
        for (size_t i = 0; i < c->n; i++)
                if (c->level[i] == level && c->msg[i] && strstr(c->msg[i], needle))
                        return c->msg[i];
        return NULL;
}

/* Print everything captured: for failure messages. */
static inline void capture_dump(const struct capture *c)
{
        for (size_t i = 0; i < c->n; i++)
                print_message("# captured [%d] %s\n", c->level[i], c->msg[i] ? c->msg[i] : "(null)");
}

/* A fresh folder under $TMPDIR (or /tmp); free() the result. */
static inline char *test_mkdtemp(void)
{
        const char *t = getenv("TMPDIR");
        char *p = NULL;

        if (asprintf(&p, "%s/patrol-test-XXXXXX", t && *t ? t : "/tmp") < 0)
                return NULL;
        if (!mkdtemp(p)) {
                free(p);
                return NULL;
        }
        return p;
}

/* Write dir/name with exactly `mode` (umask does not apply); returns the
 * path (free() it) or NULL. */
static inline char *write_file(const char *dir, const char *name, const char *content, mode_t mode)
{
        char *p = NULL;
        size_t len = strlen(content);
        int fd;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return NULL;
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, content, len) != (ssize_t)len || fchmod(fd, mode) < 0) {
                if (fd >= 0)
                        close(fd);
                free(p);
                return NULL;
        }
        close(fd);
        return p;
}

/* Read a whole (small) file; free() the result. */
static inline char *read_text(const char *path)
{
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t n = 0;
        long len;

        if (!f)
                return NULL;
        if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
            (buf = malloc((size_t)len + 1)))
                n = fread(buf, 1, (size_t)len, f);
        if (buf)
                buf[n] = '\0';
        fclose(f);
        return buf;
}

static inline int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path);
}

static inline void rm_rf(const char *dir)
{
        if (dir)
                nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
