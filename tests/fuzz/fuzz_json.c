/* fuzz_json.c: the answer parsers patrol exposes: json_parse() and the typed
 * getters over whatever it returns (the fields Onplana, Vault, AWS and Azure
 * answers are read through), and store_parse_value() (a secret's value: the
 * JSON object of SPEC section 3, or a bare token). */
#include <json-c/json.h>

#include "fuzz.h"
#include "json.h"
#include "store.h"

static const char *const keys[] = {
        "token", "token_id", "id", "expiresAt", "expires_at", "scopes", "projectIds",
        "data", "metadata", "version", "tokens", "nextCursor", "error", "errors",
        "access_token", "expires_in", "SecretString", "VersionId", "value", "attributes",
};

static void walk(struct json_object *o, int depth)
{
        const char *s;
        int64_t i;
        struct json_object *sub;
        char **v = NULL, err[128];
        size_t n = 0, k;

        if (!o || depth > 4)
                return;
        for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
                (void)json_get_str(o, keys[k], &s, err, sizeof(err));
                (void)json_get_str_opt(o, keys[k], &s);
                (void)json_get_int(o, keys[k], &i, err, sizeof(err));
                if (json_get_strv(o, keys[k], &v, &n, err, sizeof(err)) == 0)
                        strv_free(v, n);
                if (json_get_array(o, keys[k], &sub, err, sizeof(err)) == 0 &&
                    json_object_array_length(sub) > 0)
                        walk(json_object_array_get_idx(sub, 0), depth + 1);
                if (json_get_obj(o, keys[k], &sub, err, sizeof(err)) == 0)
                        walk(sub, depth + 1);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = fuzz_cstr(data, size);
        struct json_object *o = json_parse(s, size);
        struct store_value v = { 0 };

        fuzz_quiet();
        walk(o, 0);
        if (o)
                json_object_put(o);
        if (store_parse_value(s, &v) == 0)
                store_value_clear(&v);
        free(s);
        return 0;
}
