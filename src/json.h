/* json.h: typed getters over json-c that fail with a clear message. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse a whole buffer; NULL on bad JSON. */
struct json_object *json_parse(const char *buf, size_t len);

/* Getters: return 0, or -EBADMSG when the key is missing or of the wrong
 * type, writing "missing field "x"" / "field "x" is not a string" into err.
 * Strings returned by _str point into the object (not copied). */
int json_get_str(struct json_object *o, const char *key, const char **ret, char *err, size_t errlen);
int json_get_str_opt(struct json_object *o, const char *key, const char **ret);   /* NULL when absent/null */
int json_get_int(struct json_object *o, const char *key, int64_t *ret, char *err, size_t errlen);
int json_get_obj(struct json_object *o, const char *key, struct json_object **ret, char *err, size_t errlen);
int json_get_array(struct json_object *o, const char *key, struct json_object **ret, char *err, size_t errlen);
/* Array of strings -> freshly allocated char** (n entries). */
int json_get_strv(struct json_object *o, const char *key, char ***ret, size_t *ret_n, char *err, size_t errlen);

/* Serialize without escaping slashes; caller frees (wipe if it held a secret). */
char *json_dump(struct json_object *o);

/* Array of strings from a C array. */
struct json_object *json_strv_new(char *const *v, size_t n);

void strv_free(char **v, size_t n);
bool strv_equal_as_sets(char *const *a, size_t na, char *const *b, size_t nb);

/* ---- trees that held secrets ----
 * json-c frees without wiping: these overwrite every string of a tree (and
 * json-c's print buffer) before letting it go. */
void json_wipe(struct json_object *o);
/* Wipe and put; returns NULL (`o = json_put_wiped(o);`). */
struct json_object *json_put_wiped(struct json_object *o);
/* Serialise as json_dump does, but into patrol's own buffer that leaves no
 * unwiped copy behind (json_secret.c); free with secret_free. */
char *json_dump_secret(struct json_object *o);
/* Add, taking ownership of val; -ENOMEM on a NULL val (allocation failure). */
int json_obj_add(struct json_object *o, const char *key, struct json_object *val);
