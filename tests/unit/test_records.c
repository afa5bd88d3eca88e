/* test_records.c: state.json + journal durability and recovery, audit lines,
 * file modes, and the refusal of a state_dir others can write. */
#include "test_util.h"

#include <json-c/json.h>

#include "records.h"

static char *scratch(void)
{
        char tmpl[] = "/tmp/patrol-records-XXXXXX";
        char *d = mkdtemp(tmpl);

        assert_non_null(d);
        return strdup(d);
}

static char *path_of(const char *dir, const char *f)
{
        static char buf[512];

        snprintf(buf, sizeof(buf), "%s/%s", dir, f);
        return buf;
}

/* dir/file holding exactly text (test_util.h's write_file, mode 0600). */
static void write_text(const char *dir, const char *file, const char *text)
{
        char *p = write_file(dir, file, text, 0600);

        assert_non_null(p);
        free(p);
}

static void test_steps_survive_reopen(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;
        struct rec_integration *ri;

        (void)state;
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        ri = records_get(r, "ci-reader");
        ri->step = STEP_WRITTEN;
        rec_set(&ri->new_token_id, "pat_NEW");
        rec_set(&ri->new_version, "7");
        ri->new_expires_at = 1800000000;
        assert_int_equal(records_save(r, ri), 0);
        /* A crash: the journal was written but never folded (no close). */
        {
                struct records *r2 = NULL;
                assert_int_equal(records_open(dir, true, &r2, err, sizeof(err)), 0);
                ri = records_find(r2, "ci-reader");
                assert_non_null(ri);
                assert_int_equal(ri->step, STEP_WRITTEN);
                assert_string_equal(ri->new_token_id, "pat_NEW");
                assert_string_equal(ri->new_version, "7");
                assert_int_equal(ri->new_expires_at, 1800000000);
                records_close(r2);
        }
        records_close(r);
        free(dir);
}

static void test_torn_journal_line_is_ignored(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;
        struct rec_integration *ri;

        (void)state;
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        ri = records_get(r, "a");
        rec_set(&ri->token_id, "pat_A");
        assert_int_equal(records_save(r, ri), 0);
        records_close(r);
        write_text(dir, "state.journal", "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_TO");   /* torn */
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        assert_string_equal(records_find(r, "a")->token_id, "pat_A");
        records_close(r);
        free(dir);
}

/* Whole lines before a torn last one still load. */
static void test_lines_before_a_torn_last_line_load(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;

        (void)state;
        write_text(dir, "state.journal",
                   "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_A\"}}\n"
                   "{\"integration\":\"b\",\"entry\":{\"in_flight\":{\"step\":\"created\","
                   "\"new_token_id\":\"pat_NEW\"}}}\n"
                   "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_TO");    /* torn */
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        assert_string_equal(records_find(r, "a")->token_id, "pat_A");
        assert_int_equal(records_find(r, "b")->step, STEP_CREATED);
        records_close(r);
        free(dir);
}

/* Only the LAST journal line can be torn (a crash mid-append; every open folds
 * the journal away).  A bad line followed by whole ones is damage: silently
 * dropping the lines after it loses a rotation in flight (a created token
 * nobody revokes).  It is refused, file and line named, and nothing folded. */
static void test_bad_middle_journal_line_does_not_drop_later_lines(void **state)
{
        char *dir = scratch(), err[256], *text;
        struct records *r = NULL;
        int rc;

        (void)state;
        write_text(dir, "state.journal",
                   "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_A\"}}\n"
                   "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_XX\n"
                   "{\"integration\":\"b\",\"entry\":{\"token_id\":\"pat_B\","
                   "\"in_flight\":{\"step\":\"created\",\"new_token_id\":\"pat_NEW\"}}}\n");
        rc = records_open(dir, false, &r, err, sizeof(err));
        assert_int_equal(rc, -EBADMSG);
        assert_non_null(strstr(err, "/state.journal:2: not a journal line"));
        /* Refused before the fold: every line is still there for a person. */
        text = read_text(path_of(dir, "state.journal"));
        assert_non_null(strstr(text, "pat_NEW"));
        free(text);
        assert_int_equal(records_open(dir, true, &r, err, sizeof(err)), -EBADMSG);
        free(dir);
}

/* Whole JSON with a step patrol does not know is no torn line, even last. */
static void test_unknown_step_in_the_journal_is_refused(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;

        (void)state;
        write_text(dir, "state.journal",
                   "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_A\"}}\n"
                   "{\"integration\":\"b\",\"entry\":{\"in_flight\":{\"step\":\"verifying\","
                   "\"new_token_id\":\"pat_NEW\"}}}\n");
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), -EBADMSG);
        assert_non_null(strstr(err, "/state.journal:2: integration \"b\": bad entry (unknown step \"verifying\")"));
        free(dir);
}

/* The same for a last_result, and an in_flight without any step. */
static void test_unknown_result_and_missing_step_are_refused(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;

        (void)state;
        write_text(dir, "state.json", "{\"version\":1,\"integrations\":{\"a\":{\"last_result\":\"rotatd\"}}}");
        assert_int_equal(records_open(dir, true, &r, err, sizeof(err)), -EBADMSG);
        assert_non_null(strstr(err, "/state.json: integration \"a\": bad entry (unknown last_result \"rotatd\")"));
        write_text(dir, "state.json", "{\"version\":1,\"integrations\":{\"a\":{\"in_flight\":"
                   "{\"new_token_id\":\"pat_NEW\"}}}}");
        assert_int_equal(records_open(dir, true, &r, err, sizeof(err)), -EBADMSG);
        assert_non_null(strstr(err, "integration \"a\": bad entry (in_flight without a step)"));
        free(dir);
}

/* A step name patrol does not know (a newer patrol's, a typo, damage) must not
 * load as "no rotation in flight": the created token it names would never be
 * revoked.  Refused with the file and entry named, like a wrong type is. */
static void test_unknown_step_is_not_read_as_idle(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;
        int rc;

        (void)state;
        write_text(dir, "state.json",
                   "{\"version\":1,\"integrations\":{\"a\":{\"token_id\":\"pat_A\","
                   "\"in_flight\":{\"step\":\"verifying\",\"new_token_id\":\"pat_NEW\"}}}}");
        rc = records_open(dir, true, &r, err, sizeof(err));
        assert_int_equal(rc, -EBADMSG);
        assert_non_null(strstr(err, "/state.json: integration \"a\": bad entry (unknown step \"verifying\")"));
        free(dir);
}

/* A crash mid-write left only a torn line; the steps recorded after it
 * must not be glued to it (a bad line that is not the last is refused). */
static void test_steps_after_a_torn_tail_survive(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL, *r2 = NULL;
        struct rec_integration *ri;

        (void)state;
        write_text(dir, "state.journal", "{\"integration\":\"a\",\"entry\":{\"token_id\":\"pat_TO");   /* torn */
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        ri = records_get(r, "a");
        ri->step = STEP_CREATED;
        rec_set(&ri->new_token_id, "pat_NEW");
        assert_int_equal(records_save(r, ri), 0);
        /* A crash: read what is on disk without closing r. */
        assert_int_equal(records_open(dir, true, &r2, err, sizeof(err)), 0);
        ri = records_find(r2, "a");
        assert_non_null(ri);
        assert_int_equal(ri->step, STEP_CREATED);
        assert_string_equal(ri->new_token_id, "pat_NEW");
        records_close(r2);
        records_close(r);
        free(dir);
}

/* The same in audit.jsonl: the next event starts a line of its own. */
static void test_audit_event_after_a_torn_line_is_whole(void **state)
{
        char *dir = scratch(), err[256], *text;
        struct records *r = NULL;
        struct audit_event ev = { .integration = "a", .event = "rotated", .new_token_id = "pat_X",
                                  .store = "vault", .secret = "s", .version = "3" };
        struct json_object *parsed;
        const char *second;

        (void)state;
        write_text(dir, "audit.jsonl", "{\"time\":\"2026-11-28T10:00:00Z\",\"integ");       /* torn */
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        assert_int_equal(records_audit(r, &ev), 0);
        records_close(r);
        text = read_text(path_of(dir, "audit.jsonl"));
        assert_non_null(text);
        second = strchr(text, '\n');
        assert_non_null(second);
        parsed = json_tokener_parse(second + 1);
        assert_non_null(parsed);
        json_object_put(parsed);
        assert_non_null(strstr(second + 1, "\"event\":\"rotated\""));
        free(text);
        free(dir);
}

/* state.json is read one entry at a time (records.c): any JSON layout of the
 * snapshot loads, and anything that is not JSON is still refused. */
static void test_snapshot_layouts(void **state)
{
        static const char *const good[] = {
                "{\"version\":1,\"integrations\":{\"a\":{\"token_id\":\"pat_A\",\"failures\":2},"
                "\"b\\u0062\":{\"token_id\":\"pat_\\\"B\"}}}",
                " {\n \"integrations\" : { \"a\" : { \"token_id\" : \"pat_A\" , \"failures\" : 2 } ,"
                "\"bb\":{\"token_id\":\"pat_\\\"B\",\"x\":[1,{\"y\":\"}]\"}]}} , \"version\" : 1.0e0 } \n",
        };
        static const char *const bad[] = {
                "", "[]", "{}", "{\"version\":1}", "{\"integrations\":[]}",
                "{\"integrations\":{\"a\":{}}} x", "{\"integrations\":{\"a\":{}}",
                "{\"integrations\":{\"a\":{},}}", "{\"integrations\":{\"a\" {}}}",
                "{\"integrations\":{\"a\":{\"token_id\":5}}}", "{\"integrations\":{\"a\":{\"token_id\":\"x}}}",
        };
        char err[256];
        size_t i;

        (void)state;
        for (i = 0; i < sizeof(good) / sizeof(*good); i++) {
                char *dir = scratch();
                struct records *r = NULL;
                struct rec_integration *ri;

                write_text(dir, "state.json", good[i]);
                assert_int_equal(records_open(dir, true, &r, err, sizeof(err)), 0);
                assert_int_equal(records_count(r), 2);
                ri = records_find(r, "a");
                assert_non_null(ri);
                assert_string_equal(ri->token_id, "pat_A");
                assert_int_equal(ri->failures, 2);
                ri = records_find(r, "bb");
                assert_non_null(ri);
                assert_string_equal(ri->token_id, "pat_\"B");
                records_close(r);
                free(dir);
        }
        for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                char *dir = scratch();
                struct records *r = NULL;

                write_text(dir, "state.json", bad[i]);
                if (records_open(dir, true, &r, err, sizeof(err)) == 0)
                        fail_msg("state.json %s loaded", bad[i]);
                free(dir);
        }
}

static void test_files_are_private(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;
        struct audit_event ev = { .integration = "a", .event = "rotated", .new_token_id = "pat_X",
                                  .store = "vault", .secret = "s", .version = "3" };
        struct stat st;

        (void)state;
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        assert_int_equal(records_save(r, records_get(r, "a")), 0);
        assert_int_equal(records_audit(r, &ev), 0);
        records_close(r);
        assert_int_equal(stat(path_of(dir, "state.json"), &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(stat(path_of(dir, "audit.jsonl"), &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        free(dir);
}

static void test_world_writable_state_dir_refused(void **state)
{
        char *dir = scratch(), err[256];
        struct records *r = NULL;

        (void)state;
        assert_int_equal(chmod(dir, 0777), 0);
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), -EPERM);
        assert_non_null(strstr(err, "writable by group or others"));
        free(dir);
}

static void test_second_writer_is_refused(void **state)
{
        char *dir = scratch(), err[256];
        struct records *a = NULL, *b = NULL;

        (void)state;
        assert_int_equal(records_open(dir, false, &a, err, sizeof(err)), 0);
        assert_int_equal(records_open(dir, false, &b, err, sizeof(err)), -EBUSY);
        assert_non_null(strstr(err, "another patrol"));
        records_close(a);
        free(dir);
}

static void test_audit_line_fields(void **state)
{
        char *dir = scratch(), err[256], *line;
        struct records *r = NULL;
        struct audit_event ev = { .integration = "a", .event = "failed", .old_token_id = "pat_O",
                                  .store = "vault", .secret = "s", .error = "boom" };

        (void)state;
        assert_int_equal(records_open(dir, false, &r, err, sizeof(err)), 0);
        assert_int_equal(records_audit(r, &ev), 0);
        records_close(r);
        line = read_text(path_of(dir, "audit.jsonl"));
        assert_non_null(line);
        assert_non_null(strstr(line, "\"event\":\"failed\""));
        assert_non_null(strstr(line, "\"old_token_id\":\"pat_O\""));
        assert_non_null(strstr(line, "\"new_token_id\":null"));
        assert_non_null(strstr(line, "\"error\":\"boom\""));
        assert_non_null(strstr(line, "\"time\":\""));
        free(line);
        free(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_steps_survive_reopen),
                cmocka_unit_test(test_torn_journal_line_is_ignored),
                cmocka_unit_test(test_lines_before_a_torn_last_line_load),
                cmocka_unit_test(test_unknown_step_is_not_read_as_idle),
                cmocka_unit_test(test_bad_middle_journal_line_does_not_drop_later_lines),
                cmocka_unit_test(test_unknown_step_in_the_journal_is_refused),
                cmocka_unit_test(test_unknown_result_and_missing_step_are_refused),
                cmocka_unit_test(test_steps_after_a_torn_tail_survive),
                cmocka_unit_test(test_audit_event_after_a_torn_line_is_whole),
                cmocka_unit_test(test_snapshot_layouts),
                cmocka_unit_test(test_files_are_private),
                cmocka_unit_test(test_world_writable_state_dir_refused),
                cmocka_unit_test(test_second_writer_is_refused),
                cmocka_unit_test(test_audit_line_fields),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
