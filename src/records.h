/* records.h: state.json (snapshot + append-only journal) and audit.jsonl.
 * Every step of a rotation is made durable here before the next begins. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The rotation's steps, in order (doc/design.md has the diagram).  The
 * step recorded is the last one *completed*, except CREATING, recorded
 * before the create request is sent so a lost answer can be found by name. */
enum rot_step {
        STEP_IDLE = 0,
        STEP_CREATING,          /* new_name chosen; create sent, answer maybe lost */
        STEP_CREATED,           /* new_token_id known; the value lives only in memory */
        STEP_VERIFIED,          /* /me says scopes and projects are exact */
        STEP_WRITTEN,           /* in the store (staged where possible), new_version known */
        STEP_READ_BACK,         /* the store gives back exactly what was written */
        STEP_PROMOTED,          /* consumers now read the new token */
        STEP_HOOKED,            /* on_rotate succeeded (or there is none) */
        _STEP_MAX,
};

enum last_result { RESULT_NONE = 0, RESULT_ROTATED, RESULT_FAILED, RESULT_INCOMPLETE };

struct rec_integration {
        char *name;
        /* the token the store holds for consumers */
        char *token_id;
        int64_t expires_at;
        char *version;
        int64_t next_rotation;          /* 0: at once */
        int64_t last_rotation;          /* time of the last success */
        enum last_result last_result;
        char *last_error;
        int failures;                   /* consecutive */
        /* a rotation in flight */
        enum rot_step step;
        char *rotation_id;
        char *new_name;
        char *new_token_id;
        int64_t new_expires_at;
        char *new_version;
        char *old_token_id;             /* what the store held when the rotation began */
        char *old_version;
        /* an old token whose revocation is due (revoke_after, or a failed hook) */
        char *revoke_token_id;
        int64_t revoke_due;
        char name_buf[];                /* what name points to: one allocation for both */
};

struct audit_event {
        const char *integration;
        const char *event;              /* rotated failed recovered revoked adopted */
        const char *old_token_id;
        const char *new_token_id;
        const char *store;
        const char *secret;
        const char *version;
        const char *error;
};

struct records;

/* Open (creating state_dir 0700 when missing) and load.  Refuses a
 * state_dir that group or others can write.  readonly: for --status, no lock
 * and no writes.  Returns 0 or -errno with a message in err. */
int records_open(const char *state_dir, bool readonly, struct records **ret, char *err, size_t errlen);
/* Folds the journal into the snapshot (when writable) and frees. */
struct records *records_close(struct records *r);

/* The entry for an integration, created empty on first use (NULL: ENOMEM). */
struct rec_integration *records_get(struct records *r, const char *name);
/* Like records_get, but NULL when absent. */
struct rec_integration *records_find(struct records *r, const char *name);
size_t records_count(const struct records *r);
struct rec_integration *records_at(struct records *r, size_t i);

/* Make one integration's entry durable (a journal line + fsync, shared with
 * the threads saving at the same time).  Only the thread rotating ri may
 * change it; the table itself must not grow while rotations run. */
int records_save(struct records *r, const struct rec_integration *ri);
/* Rewrite the snapshot atomically and empty the journal.  It reads every
 * entry: call it only while no rotation runs (at open, close, between the
 * daemon's batches). */
int records_compact(struct records *r);
/* records_compact once the journal has grown long enough to be worth it. */
int records_compact_if_due(struct records *r);
/* Append one line to audit.jsonl and fsync it (shared like records_save). */
int records_audit(struct records *r, const struct audit_event *ev);

/* Clear the in-flight part of an entry (back to STEP_IDLE). */
void rec_clear_flight(struct rec_integration *ri);
/* Replace a string field (strdup; NULL clears). */
int rec_set(char **field, const char *value);

const char *rot_step_name(enum rot_step s);
const char *last_result_name(enum last_result r);
