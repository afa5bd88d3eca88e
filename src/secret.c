/* secret.c: credentials and tokens in memory that is wiped before it is freed. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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

/* ---- a growable string whose old copies are wiped -------------------- */

/* realloc would leave the old block, secret and all, to the allocator:
 * grow by copying into a new block and wiping the old one instead. */
static void secret_buf_reserve(struct secret_buf *b, size_t extra)
{
        size_t cap;
        char *p;

        if (b->failed || (b->p && b->len + extra < b->cap))
                return;
        if (extra > SIZE_MAX / 4 - b->len) {
                b->failed = true;
                return;
        }
        for (cap = b->cap ? b->cap : 128; cap <= b->len + extra; cap *= 2)
                ;
        p = malloc(cap);
        if (!p) {
                b->failed = true;
                return;
        }
        p[0] = '\0';
        if (b->p) {
                memcpy(p, b->p, b->len + 1);
                secret_wipe(b->p, b->cap);
                free(b->p);
        }
        b->p = p;
        b->cap = cap;
}

void secret_buf_add(struct secret_buf *b, const char *s, size_t n)
{
        secret_buf_reserve(b, n);
        if (b->failed || n == 0)
                return;
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = '\0';
}

void secret_buf_adds(struct secret_buf *b, const char *s)
{
        secret_buf_add(b, s, strlen(s));
}

void secret_buf_addc(struct secret_buf *b, char c)
{
        secret_buf_add(b, &c, 1);
}

void secret_buf_done(struct secret_buf *b)
{
        if (b->p) {
                secret_wipe(b->p, b->cap);
                free(b->p);
        }
        *b = (struct secret_buf){ 0 };
}

int secret_buf_take(struct secret_buf *b, char **ret)
{
        secret_buf_reserve(b, 0);
        if (b->failed) {
                secret_buf_done(b);
                return -ENOMEM;
        }
        *ret = b->p;
        *b = (struct secret_buf){ 0 };
        return 0;
}

/* ---- error text ------------------------------------------------------- */

/* Error text is cut to fit its buffer: a secret quoted at the end may be
 * cut too, and its first bytes would pass the whole-secret match.  Text
 * ending in 4 or more of them ends in the mask instead. */
static void mask_cut_tail(char *text, const char *secret, size_t n)
{
        size_t len = strlen(text), k;

        for (k = (len < n - 1 ? len : n - 1); k >= 4; k--)
                if (memcmp(text + len - k, secret, k) == 0) {
                        strcpy(text + len - k, "***");  /* k >= 4: never longer */
                        return;
                }
}

void secret_redact(char *text, const char *secret)
{
        static const char mask[] = "***";
        size_t n = secret ? strlen(secret) : 0;
        char *hit, *out, *start = text;

        if (!text || n < 4)
                return;
        /* The mask is never longer than the secret, so the text only
         * shrinks and can be rewritten in place, left to right. */
        out = text;
        while ((hit = strstr(text, secret))) {
                memmove(out, text, (size_t)(hit - text));
                out += hit - text;
                memcpy(out, mask, sizeof(mask) - 1);
                out += sizeof(mask) - 1;
                text = hit + n;
        }
        memmove(out, text, strlen(text) + 1);
        mask_cut_tail(start, secret, n);
}
