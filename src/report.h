/* report.h: the token posture report (SPEC.md section 7).  The rules that
 * give a token its findings live here apart from the I/O in report.c, so
 * they can be read, and tested, on their own. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "onplana.h"
#include "records.h"

enum report_finding {
        FINDING_CURRENT,
        FINDING_RETIRING,
        FINDING_WILDCARD,
        FINDING_NO_EXPIRY,
        FINDING_EXPIRES_SOON,
        FINDING_NEVER_USED,
        FINDING_STALE,
        FINDING_STRAY,
        FINDING_UNMANAGED,
        _FINDING_MAX,
};

#define FINDING_BIT(f) (1u << (f))

enum report_state { REPORT_ACTIVE, REPORT_EXPIRED, REPORT_REVOKED };

#define REPORT_NEVER_USED_AFTER (30 * 86400)    /* created this long ago and never used */
#define REPORT_STALE_AFTER (90 * 86400)         /* last used this long ago */

/* What patrol itself knows about one account: its integrations and the
 * token ids its records hold for them.  The ids point into the records,
 * which must stay open while this is used. */
struct report_account {
        const struct cfg_account *acct;
        const struct cfg_integration **integrations;
        size_t n_integrations;
        const char **current;           /* held by a store, or about to be (rotation in flight) */
        size_t n_current;
        const char **retiring;          /* kept alive only until their revocation */
        size_t n_retiring;
        int64_t renew_before;           /* the shortest over its integrations */
};

int report_account_init(struct report_account *ra, const struct config *cfg,
                        const struct cfg_account *acct, struct records *rec);
void report_account_done(struct report_account *ra);

enum report_state report_token_state(const struct onplana_token *t, int64_t now);
/* The findings of one token, a mask of FINDING_BIT()s; 0 unless active. */
unsigned report_findings(const struct report_account *ra, const struct onplana_token *t, int64_t now);
/* True when the mask holds a warning. */
bool report_has_warning(unsigned findings);

const char *report_finding_name(enum report_finding f);
const char *report_state_name(enum report_state s);
bool report_finding_is_warning(enum report_finding f);

/* The integration of this account whose new-token names `name` has, or NULL. */
const struct cfg_integration *report_integration_for(const struct report_account *ra, const char *name);
