/* secret.h: memory for credentials and tokens that is always wiped when freed. */
#pragma once

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
