/* json.c: typed getters over json-c; every failure says which field and why. */
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct json_object *json_parse(const char *buf, size_t len)
{
        struct json_tokener *tok;
        struct json_object *o;

        if (!buf || len > INT32_MAX - 2)
                return NULL;
        tok = json_tokener_new();
        if (!tok)
                return NULL;
        /* The tokener collects each string (tokens, secrets) in tok->pb and
         * grows it with realloc, leaving unwiped copies behind.  json-c has
         * no API for that buffer, so its deprecated public fields are used:
         * sized once to the input plus the NUL and one byte printbuf_memappend
         * keeps free (nothing it collects is longer than the input; answers
         * are capped by http.c, so this costs at most that cap), it never
         * grows, and it is wiped before json_tokener_free frees it. */
        if (printbuf_memset(tok->pb, 0, 0, (int)len + 2) < 0) {
                json_tokener_free(tok);
                return NULL;
        }
        printbuf_reset(tok->pb);
        o = json_tokener_parse_ex(tok, buf, (int)len);
        /* Trailing garbage after a complete value is a malformed answer. */
        if (o && (json_tokener_get_error(tok) != json_tokener_success ||
                  json_tokener_get_parse_end(tok) < len)) {
                size_t end = json_tokener_get_parse_end(tok);
                while (end < len && strchr(" \t\r\n", buf[end]))
                        end++;
                if (end < len)
                        o = json_put_wiped(o);
        }
        explicit_bzero(tok->pb->buf, (size_t)tok->pb->size);
        json_tokener_free(tok);
        return o;
}

static int field_error(char *err, size_t errlen, const char *key, const char *what)
{
        if (err && errlen)
                snprintf(err, errlen, "field \"%s\" %s", key, what);
        return -EBADMSG;
}

static int get_typed(struct json_object *o, const char *key, json_type type, const char *tname,
                     struct json_object **ret, char *err, size_t errlen)
{
        struct json_object *v;
        char what[48];

        if (!o || !json_object_is_type(o, json_type_object))
                return field_error(err, errlen, key, "missing: answer is not an object");
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return field_error(err, errlen, key, "is missing");
        if (!json_object_is_type(v, type)) {
                snprintf(what, sizeof(what), "is not %s", tname);
                return field_error(err, errlen, key, what);
        }
        *ret = v;
        return 0;
}

int json_get_str(struct json_object *o, const char *key, const char **ret, char *err, size_t errlen)
{
        struct json_object *v;
        int r = get_typed(o, key, json_type_string, "a string", &v, err, errlen);

        if (r < 0)
                return r;
        *ret = json_object_get_string(v);
        return 0;
}

int json_get_str_opt(struct json_object *o, const char *key, const char **ret)
{
        struct json_object *v;

        *ret = NULL;
        if (!o || !json_object_is_type(o, json_type_object) ||
            !json_object_object_get_ex(o, key, &v) || !v)
                return 0;
        if (!json_object_is_type(v, json_type_string))
                return -EBADMSG;
        *ret = json_object_get_string(v);
        return 0;
}

int json_get_int(struct json_object *o, const char *key, int64_t *ret, char *err, size_t errlen)
{
        struct json_object *v;
        int r = get_typed(o, key, json_type_int, "an integer", &v, err, errlen);

        if (r < 0)
                return r;
        *ret = json_object_get_int64(v);
        return 0;
}

int json_get_obj(struct json_object *o, const char *key, struct json_object **ret, char *err, size_t errlen)
{
        return get_typed(o, key, json_type_object, "an object", ret, err, errlen);
}

int json_get_array(struct json_object *o, const char *key, struct json_object **ret, char *err, size_t errlen)
{
        return get_typed(o, key, json_type_array, "an array", ret, err, errlen);
}

int json_get_strv(struct json_object *o, const char *key, char ***ret, size_t *ret_n, char *err, size_t errlen)
{
        struct json_object *a;
        char **v = NULL;
        size_t n, i;
        int r;

        r = json_get_array(o, key, &a, err, errlen);
        if (r < 0)
                return r;
        n = json_object_array_length(a);
        v = calloc(n + 1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (i = 0; i < n; i++) {
                struct json_object *e = json_object_array_get_idx(a, i);
                if (!json_object_is_type(e, json_type_string)) {
                        strv_free(v, i);
                        return field_error(err, errlen, key, "holds a non-string");
                }
                v[i] = strdup(json_object_get_string(e));
                if (!v[i]) {
                        strv_free(v, i);
                        return -ENOMEM;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

char *json_dump(struct json_object *o)
{
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

        return s ? strdup(s) : NULL;
}

struct json_object *json_strv_new(char *const *v, size_t n)
{
        struct json_object *a = json_object_new_array();
        size_t i;

        for (i = 0; a && i < n; i++)
                json_object_array_add(a, json_object_new_string(v[i]));
        return a;
}

void strv_free(char **v, size_t n)
{
        size_t i;

        if (!v)
                return;
        for (i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static bool strv_contains(char *const *v, size_t n, const char *s)
{
        size_t i;

        for (i = 0; i < n; i++)
                if (strcmp(v[i], s) == 0)
                        return true;
        return false;
}

bool strv_equal_as_sets(char *const *a, size_t na, char *const *b, size_t nb)
{
        size_t i;

        for (i = 0; i < na; i++)
                if (!strv_contains(b, nb, a[i]))
                        return false;
        for (i = 0; i < nb; i++)
                if (!strv_contains(a, na, b[i]))
                        return false;
        return true;
}

void json_wipe(struct json_object *o)
{
        size_t i;

        switch (json_object_get_type(o)) {
        case json_type_string:
                explicit_bzero((char *)json_object_get_string(o), (size_t)json_object_get_string_len(o));
                break;
        case json_type_object: {
                json_object_object_foreach(o, key, val) {
                        (void)key;
                        json_wipe(val);
                }
                break;
        }
        case json_type_array:
                for (i = 0; i < json_object_array_length(o); i++)
                        json_wipe(json_object_array_get_idx(o, i));
                break;
        default:
                break;
        }
}

struct json_object *json_put_wiped(struct json_object *o)
{
        if (o) {
                json_wipe(o);
                json_object_put(o);
        }
        return NULL;
}

int json_obj_add(struct json_object *o, const char *key, struct json_object *val)
{
        if (!val)
                return -ENOMEM;
        if (json_object_object_add(o, key, val) < 0) {
                json_put_wiped(val);    /* it may be a secret */
                return -ENOMEM;
        }
        return 0;
}
