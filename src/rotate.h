/* rotate.h: the rotation of one integration, step by step (SPEC.md 4), and
 * the recovery of a rotation left in flight by a crash. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>

#include "config.h"
#include "records.h"

struct http_client;
struct onplana;

enum rotate_outcome {
        OUTCOME_ROTATED,        /* a new token is in the store, the old one revoked or scheduled */
        OUTCOME_FAILED,         /* the store still holds the old token (or none) */
        OUTCOME_INCOMPLETE,     /* new token in place, old one kept alive (hook failed, or a
                                 * step after the write must be retried) */
        OUTCOME_PLANNED,        /* dry run */
        OUTCOME_NOTHING,        /* nothing was due */
};

struct rotate_result {
        enum rotate_outcome outcome;
        char old_token_id[128];
        char new_token_id[128];
        int64_t expires_at;
        char version[128];
        int64_t retry_after;    /* seconds, -1: none (from a 429) */
        bool transient;         /* worth another attempt (5xx, 429, network, a hook) */
        char error[768];
};

/* What the rotations of one run share: the issuer's sessions, the opened
 * stores (their logins) and the HTTP client.  Safe to use from several
 * threads at once. */
struct rotate_ctx;

int rotate_ctx_new(const struct config *cfg, struct records *rec, struct http_client *http,
                   struct rotate_ctx **ret);
struct rotate_ctx *rotate_ctx_free(struct rotate_ctx *ctx);
/* Where a dry run prints its plan (default stdout; stderr under --json,
 * whose stdout holds exactly one JSON document). */
void rotate_ctx_set_plan_stream(struct rotate_ctx *ctx, FILE *out);

/* Rotate now (recovering first when a rotation is in flight).  dry_run:
 * authenticate and read, print the plan to stdout, change nothing. */
void rotate_integration(struct rotate_ctx *ctx, const struct cfg_integration *in, bool dry_run,
                        struct rotate_result *res);

/* Finish or undo a rotation left in flight, and carry out a revocation
 * that is due.  OUTCOME_NOTHING when there was nothing to do. */
void rotate_recover(struct rotate_ctx *ctx, const struct cfg_integration *in, struct rotate_result *res);

const char *rotate_outcome_name(enum rotate_outcome o);

/* Test builds: die at a named point (PATROL_CRASH_AT=name). */
#ifdef ENABLE_CRASH_POINTS
void crash_point(const char *name);
#else
#define crash_point(name) ((void)0)
#endif
