/* json_secret.c: serialises request bodies that hold secrets into patrol's
 * own wiped buffer, byte for byte as json-c would (PLAIN, NOSLASHESCAPE). */
#include "json.h"

#include <string.h>

#include "secret.h"

#define DUMP_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* json-c's json_escape_str: the short escapes, \u00xx (lower case) for the
 * other control characters, everything else (UTF-8, DEL, '/') as is. */
static void dump_escaped(struct secret_buf *b, const char *s, size_t n)
{
        static const char hex[] = "0123456789abcdef";
        size_t i;

        secret_buf_addc(b, '"');
        for (i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf] };

                switch (c) {
                case '\b': secret_buf_adds(b, "\\b"); break;
                case '\n': secret_buf_adds(b, "\\n"); break;
                case '\r': secret_buf_adds(b, "\\r"); break;
                case '\t': secret_buf_adds(b, "\\t"); break;
                case '\f': secret_buf_adds(b, "\\f"); break;
                case '"': secret_buf_adds(b, "\\\""); break;
                case '\\': secret_buf_adds(b, "\\\\"); break;
                default:
                        if (c < ' ')
                                secret_buf_add(b, u, sizeof(u));
                        else
                                secret_buf_addc(b, (char)c);
                }
        }
        secret_buf_addc(b, '"');
}

static void dump_value(struct secret_buf *b, struct json_object *o);

static void dump_object(struct secret_buf *b, struct json_object *o)
{
        bool first = true;

        secret_buf_addc(b, '{');
        /* json-c's own order: insertion order. */
        json_object_object_foreach(o, key, val) {
                if (!first)
                        secret_buf_addc(b, ',');
                first = false;
                dump_escaped(b, key, strlen(key));
                secret_buf_addc(b, ':');
                dump_value(b, val);
        }
        secret_buf_addc(b, '}');
}

static void dump_array(struct secret_buf *b, struct json_object *o)
{
        size_t i, n = json_object_array_length(o);

        secret_buf_addc(b, '[');
        for (i = 0; i < n; i++) {
                if (i > 0)
                        secret_buf_addc(b, ',');
                dump_value(b, json_object_array_get_idx(o, i));
        }
        secret_buf_addc(b, ']');
}

static void dump_value(struct secret_buf *b, struct json_object *o)
{
        const char *s;

        switch (json_object_get_type(o)) {
        case json_type_null:
                secret_buf_adds(b, "null");
                break;
        case json_type_string:
                dump_escaped(b, json_object_get_string(o), (size_t)json_object_get_string_len(o));
                break;
        case json_type_object:
                dump_object(b, o);
                break;
        case json_type_array:
                dump_array(b, o);
                break;
        default:
                /* Numbers and booleans hold no secret: json-c's own text
                 * for them keeps its number formatting exactly. */
                s = json_object_to_json_string_ext(o, DUMP_FLAGS);
                if (s)
                        secret_buf_adds(b, s);
                else
                        b->failed = true;
        }
}

/* json-c would serialise into the object's print buffer, growing it with
 * realloc: the token would be left in every old block it let go. */
char *json_dump_secret(struct json_object *o)
{
        struct secret_buf b = { 0 };
        char *out = NULL;

        dump_value(&b, o);
        return secret_buf_take(&b, &out) < 0 ? NULL : out;
}
