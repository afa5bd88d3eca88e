/* secret.h: memory for credentials and tokens that is always wiped when freed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Wipe and free a NUL-terminated secret; returns NULL so callers write
 * `s = secret_free(s);`.  Accepts NULL. */
char *secret_free(char *s);

/* Wipe a buffer of known length (for request bodies holding secrets). */
void secret_wipe(void *p, size_t len);

/* Duplicate a secret (NULL on allocation failure or NULL input). */
char *secret_dup(const char *s);

/* Read a credential file into a fresh NUL-terminated secret, trailing
 * newlines stripped.  Returns 0, -errno, or -EINVAL for an empty file or one
 * holding a NUL byte.  The file is read with O_CLOEXEC|O_NOFOLLOW-free open so
 * systemd credential symlinks work. */
int secret_read_file(const char *path, char **ret);

/* A growable string whose old copies are wiped when it grows, for text that
 * holds a secret (a request body, a canonical request with a session token).
 * Start from `struct secret_buf b = { 0 };`.  Failures are sticky and checked
 * once by secret_buf_take(), which keeps the builders linear. */
struct secret_buf {
        char *p;
        size_t len, cap;
        bool failed;
};

void secret_buf_add(struct secret_buf *b, const char *s, size_t n);
void secret_buf_adds(struct secret_buf *b, const char *s);
void secret_buf_addc(struct secret_buf *b, char c);
/* Wipe and free the buffer; b is empty again. */
void secret_buf_done(struct secret_buf *b);
/* Hand over the string (an empty one if nothing was added; free it with
 * secret_free); -ENOMEM if any step failed (the buffer is wiped then). */
int secret_buf_take(struct secret_buf *b, char **ret);

/* Replace, in place, every occurrence of secret in text with "***": for
 * error text a server built from the request it was sent.  So does a tail
 * of 4 or more of its first bytes (text cut to fit mid-secret).  Secrets
 * shorter than 4 bytes (or NULL) are left alone: they would mask ordinary
 * words. */
void secret_redact(char *text, const char *secret);
