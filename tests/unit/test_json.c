/* test_json.c: the typed JSON getters, the serialiser for secret bodies,
 * the store value format, token names, and redaction of error text. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"
#include "onplana.h"
#include "secret.h"
#include "store.h"

static void test_parse_rejects_trailing_garbage(void **state)
{
        struct json_object *o;

        (void)state;
        o = json_parse("{\"a\":1}  \n", 10);
        assert_non_null(o);
        json_object_put(o);
        assert_null(json_parse("{\"a\":1} x", 9));
        assert_null(json_parse("{\"a\":", 5));
        assert_null(json_parse("", 0));
}

static void test_getters_name_the_field(void **state)
{
        const char *doc = "{\"s\":\"x\",\"n\":3,\"a\":[\"p\",\"q\"],\"bad\":[1]}";
        struct json_object *o = json_parse(doc, strlen(doc));
        const char *s;
        int64_t n;
        char **v;
        size_t nv;
        char err[128];

        (void)state;
        assert_non_null(o);
        assert_int_equal(json_get_str(o, "s", &s, err, sizeof(err)), 0);
        assert_string_equal(s, "x");
        assert_int_equal(json_get_int(o, "n", &n, err, sizeof(err)), 0);
        assert_int_equal(n, 3);
        assert_int_equal(json_get_str(o, "missing", &s, err, sizeof(err)), -EBADMSG);
        assert_string_equal(err, "field \"missing\" is missing");
        assert_int_equal(json_get_str(o, "n", &s, err, sizeof(err)), -EBADMSG);
        assert_string_equal(err, "field \"n\" is not a string");
        assert_int_equal(json_get_strv(o, "a", &v, &nv, err, sizeof(err)), 0);
        assert_int_equal(nv, 2);
        assert_string_equal(v[1], "q");
        strv_free(v, nv);
        assert_int_equal(json_get_strv(o, "bad", &v, &nv, err, sizeof(err)), -EBADMSG);
        json_object_put(o);
}

static void test_sets(void **state)
{
        char *a[] = { "x.read", "y.read" }, *b[] = { "y.read", "x.read" }, *c[] = { "x.read" };

        (void)state;
        assert_true(strv_equal_as_sets(a, 2, b, 2));
        assert_false(strv_equal_as_sets(a, 2, c, 1));
        assert_false(strv_equal_as_sets(c, 1, a, 2));
        assert_true(strv_equal_as_sets(NULL, 0, NULL, 0));
}

static void test_store_value_round_trip(void **state)
{
        char *scopes[] = { "projects.read", "tasks.read" };
        struct store_new v = { .token = "onp_pat_\"quoted\\", .token_id = "pat_1", .expires_at = 1800000000,
                               .scopes = scopes, .n_scopes = 2, .rotated_at = 1790000000 };
        struct store_value got = { 0 };
        char *s;

        (void)state;
        s = store_format_json(&v);
        assert_non_null(s);
        assert_non_null(strstr(s, "\"managed_by\":\"patrol\""));
        assert_non_null(strstr(s, "\"expires_at\":\"2027-01-15T08:00:00Z\""));
        assert_int_equal(store_parse_value(s, &got), 0);
        assert_string_equal(got.token, v.token);
        assert_string_equal(got.token_id, "pat_1");
        assert_int_equal(got.expires_at, 1800000000);
        assert_true(got.managed);
        store_value_clear(&got);
        secret_free(s);
}

static void test_foreign_value_is_the_token(void **state)
{
        struct store_value got = { 0 };

        (void)state;
        assert_int_equal(store_parse_value("onp_pat_plain", &got), 0);
        assert_string_equal(got.token, "onp_pat_plain");
        assert_false(got.managed);
        assert_null(got.token_id);
        store_value_clear(&got);
        assert_int_equal(store_parse_value("{\"token\":\"t\",\"other\":1}", &got), 0);
        assert_string_equal(got.token, "t");
        assert_false(got.managed);
        store_value_clear(&got);
}

static void test_token_names(void **state)
{
        char name[128];

        (void)state;
        assert_int_equal(onplana_token_name("ci-reader", 1795939200, name, sizeof(name)), 0);
        assert_int_equal(strncmp(name, "ci-reader-20261129-", 19), 0);
        assert_int_equal(strlen(name), strlen("ci-reader-20261129-") + 8);
        assert_true(onplana_token_name_matches("ci-reader", name));
        assert_false(onplana_token_name_matches("ci", name));
        assert_false(onplana_token_name_matches("ci-reader", "ci-reader-20261129-XYZ12345"));
        assert_false(onplana_token_name_matches("ci-reader", "ci-reader-2026112-0123abcd"));
        assert_false(onplana_token_name_matches("ci-reader", "hand-made"));
}

/* json_dump_secret writes what json-c would, byte for byte: every string
 * escape, nesting, empty containers and the scalar types. */
static void test_dump_secret_matches_json_c(void **state)
{
        static const char odd[] = "q\"b\\s/c\x01\x1f\b\f\n\r\t\x7f \xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91";
        struct json_object *o = json_object_new_object(), *a = json_object_new_array();
        struct json_object *in = json_object_new_object();
        char *mine;

        (void)state;
        assert_int_equal(json_obj_add(o, "token", json_object_new_string(odd)), 0);
        assert_int_equal(json_obj_add(o, "k\"\\\x02\xc3\xa9/", json_object_new_string("v")), 0);
        assert_int_equal(json_obj_add(o, "nul", json_object_new_string_len("a\0b", 3)), 0);
        assert_int_equal(json_obj_add(in, "empty_obj", json_object_new_object()), 0);
        assert_int_equal(json_obj_add(in, "empty_arr", json_object_new_array()), 0);
        assert_int_equal(json_obj_add(in, "empty_str", json_object_new_string("")), 0);
        json_object_array_add(a, json_object_new_int64(-9007199254740993LL));
        json_object_array_add(a, json_object_new_int(0));
        json_object_array_add(a, json_object_new_boolean(1));
        json_object_array_add(a, json_object_new_boolean(0));
        json_object_array_add(a, NULL);
        json_object_array_add(a, json_object_new_double(0.5));
        json_object_array_add(a, json_object_new_string(odd));
        json_object_array_add(a, json_object_new_array());
        assert_int_equal(json_obj_add(in, "list", a), 0);
        assert_int_equal(json_object_object_add(in, "null", NULL), 0);
        assert_int_equal(json_obj_add(o, "nested", in), 0);
        assert_int_equal(json_obj_add(o, "last", json_object_new_int(42)), 0);
        mine = json_dump_secret(o);
        assert_non_null(mine);
        assert_string_equal(mine, json_object_to_json_string_ext(
                                          o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        secret_free(mine);
        mine = json_dump_secret(a);
        assert_non_null(mine);
        assert_string_equal(mine, json_object_to_json_string_ext(
                                          a, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        secret_free(mine);
        json_object_put(o);
}

static void redacted(const char *text, const char *secret, const char *want)
{
        char buf[256];

        strcpy(buf, text);
        secret_redact(buf, secret);
        assert_string_equal(buf, want);
}

static void test_secret_redact(void **state)
{
        (void)state;
        redacted("client_secret 's3cr3t' does not match", "s3cr3t", "client_secret '***' does not match");
        redacted("s3cr3ts3cr3t and s3cr3t", "s3cr3t", "****** and ***");
        redacted("abcd", "abcd", "***");
        redacted("xabcdabcx", "abcdabc", "x***x");
        redacted("nothing here", "s3cr3t", "nothing here");
        redacted("a secret too short: abc", "abc", "a secret too short: abc");
        redacted("no secret at all", NULL, "no secret at all");
        redacted("", "s3cr3t", "");
        /* Error text cut to fit in the middle of the secret. */
        redacted("invalid client secret 's3cr3", "s3cr3t", "invalid client secret '***");
        redacted("cut at s3c", "s3cr3t", "cut at s3c");
        secret_redact(NULL, "s3cr3t");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_rejects_trailing_garbage),
                cmocka_unit_test(test_getters_name_the_field),
                cmocka_unit_test(test_sets),
                cmocka_unit_test(test_store_value_round_trip),
                cmocka_unit_test(test_foreign_value_is_the_token),
                cmocka_unit_test(test_token_names),
                cmocka_unit_test(test_dump_secret_matches_json_c),
                cmocka_unit_test(test_secret_redact),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
