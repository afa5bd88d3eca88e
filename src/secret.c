/* secret.c: credentials and tokens in memory that is wiped before it is freed. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Credential files are small; a larger one is a mistake (a wrong path). */
#define SECRET_FILE_MAX (64 * 1024)

void secret_wipe(void *p, size_t len)
{
        if (p && len)
                explicit_bzero(p, len);
}

char *secret_free(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
        return NULL;
}

char *secret_dup(const char *s)
{
        return s ? strdup(s) : NULL;
}

static int read_all(int fd, char *buf, size_t cap, size_t *ret_len)
{
        size_t len = 0;

        for (;;) {
                ssize_t n = read(fd, buf + len, cap - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
                *ret_len = len;         /* what to wipe, even on failure */
                if (len == cap)
                        return -EFBIG;
        }
        return 0;
}

int secret_read_file(const char *path, char **ret)
{
        char *buf = NULL;
        size_t got = 0, len;
        int fd, r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        buf = malloc(SECRET_FILE_MAX + 1);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        r = read_all(fd, buf, SECRET_FILE_MAX, &got);
        if (r < 0)
                goto out;
        len = got;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
                len--;
        if (len == 0 || memchr(buf, '\0', len)) {
                r = -EINVAL;
                goto out;
        }
        buf[len] = '\0';
        /* Keep only what the file held: a process with many integrations
         * holds many of these for its lifetime. */
        *ret = malloc(len + 1);
        if (!*ret) {
                r = -ENOMEM;
                goto out;
        }
        memcpy(*ret, buf, len + 1);
        r = 0;
out:
        if (buf) {
                explicit_bzero(buf, got);
                free(buf);
        }
        close(fd);
        return r;
}
