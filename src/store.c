/* store.c: picks a store backend by type, and the value format that every
 * store shares (SPEC.md section 3). */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "json.h"
#include "secret.h"

const struct store_ops *store_ops_for(enum store_type t)
{
        switch (t) {
        case STORE_VAULT:
                return &store_vault_ops;
        case STORE_AWS:
                return &store_aws_ops;
        case STORE_AZURE:
                return &store_azure_ops;
        default:
                return NULL;
        }
}

void store_value_clear(struct store_value *v)
{
        if (!v)
                return;
        v->token = secret_free(v->token);
        free(v->token_id);
        free(v->version);
        memset(v, 0, sizeof(*v));
}

char *store_format_json(const struct store_new *v)
{
        struct json_object *o = json_object_new_object();
        char exp[32], rot[32];
        char *out;

        if (!o)
                return NULL;
        time_format_rfc3339(v->expires_at, exp, sizeof(exp));
        time_format_rfc3339(v->rotated_at, rot, sizeof(rot));
        json_object_object_add(o, "token", json_object_new_string(v->token));
        json_object_object_add(o, "token_id", json_object_new_string(v->token_id));
        json_object_object_add(o, "expires_at", json_object_new_string(exp));
        json_object_object_add(o, "scopes", json_strv_new(v->scopes, v->n_scopes));
        json_object_object_add(o, "rotated_at", json_object_new_string(rot));
        json_object_object_add(o, "managed_by", json_object_new_string("patrol"));
        /* json-c's own serialisation and json_object_put would both leave
         * the token in freed memory. */
        out = json_dump_secret(o);
        json_put_wiped(o);
        return out;
}

/* A JSON object with a string "token" is patrol's (or a compatible) object;
 * anything else is taken whole as the token (adoption of a raw secret). */
int store_parse_value(const char *value, struct store_value *ret)
{
        struct json_object *o;
        const char *tok = NULL, *id = NULL, *exp = NULL, *mb = NULL;

        o = json_parse(value, strlen(value));
        if (!o || !json_object_is_type(o, json_type_object) ||
            json_get_str_opt(o, "token", &tok) < 0 || !tok) {
                json_put_wiped(o);      /* a bare JSON string is the token */
                ret->token = secret_dup(value);
                return ret->token ? 0 : -ENOMEM;
        }
        (void)json_get_str_opt(o, "token_id", &id);
        (void)json_get_str_opt(o, "expires_at", &exp);
        (void)json_get_str_opt(o, "managed_by", &mb);
        ret->token = secret_dup(tok);
        ret->token_id = id ? strdup(id) : NULL;
        if (exp)
                (void)time_parse_rfc3339(exp, &ret->expires_at);
        ret->managed = mb && strcmp(mb, "patrol") == 0;
        /* The parsed tree holds a copy of the token. */
        json_put_wiped(o);
        return ret->token ? 0 : -ENOMEM;
}
