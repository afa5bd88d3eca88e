/* cli.h: the command line (SPEC.md section 1) and the actions it runs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 64
#define EXIT_CONFIG 78

enum cli_action {
        ACT_DAEMON,
        ACT_ROTATE_NOW,
        ACT_CHECK_CONFIG,
        ACT_STATUS,
        ACT_REPORT,
        ACT_VERSION,
        ACT_HELP,
};

struct cli {
        const char *config_path;
        enum cli_action action;
        char **names;           /* positional: integrations or accounts (argv pointers) */
        size_t n_names;
        bool dry_run;
        bool json;
        bool revoke_strays;
        int verbosity;
};

/* Parse argv.  Returns 0, or an exit status (64) after printing why. */
int cli_parse(int argc, char **argv, struct cli *ret);
/* Run the action; returns the process exit status. */
int cli_run(const struct cli *c);

int cli_rotate_now(const struct cli *c);
int cli_status(const struct cli *c);
int cli_report(const struct cli *c);
