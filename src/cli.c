/* cli.c: getopt_long parsing and the one-shot actions; main.c only calls
 * cli_parse and cli_run. */
#include "autoconfig.h"
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "config.h"
#include "daemon.h"
#include "log.h"

static void usage(FILE *f)
{
        fputs("Usage: patrol [-c FILE] [--rotate-now [NAME...]] [--dry-run] [--check-config]\n"
              "              [--status] [--report [ACCOUNT...]] [--revoke-strays] [--json]\n"
              "              [-v|-q] [--version] [--help]\n"
              "\n"
              "Keeps service-account Onplana tokens fresh in Vault, AWS Secrets Manager\n"
              "and Azure Key Vault.  Without an action, runs as a daemon.\n"
              "\n"
              "  -c, --config FILE     configuration (default " PATROL_DEFAULT_CONFIG ", or $PATROL_CONFIG)\n"
              "      --rotate-now      rotate the named integrations (all when none) now, then exit\n"
              "      --dry-run         with --rotate-now or --revoke-strays: change nothing, print the plan\n"
              "      --check-config    validate the configuration and exit\n"
              "      --status          show every integration's token, expiry and last result\n"
              "      --report          the token posture of the named accounts (all when none)\n"
              "      --revoke-strays   with --report: revoke stray tokens\n"
              "      --json            one JSON document on stdout (--status, --report, --rotate-now)\n"
              "  -v, --verbose         more logging\n"
              "  -q, --quiet           less logging\n"
              "      --version         print the version\n"
              "  -h, --help            this help\n"
              "\n"
              "Exit status: 0 success, 1 a rotation failed or is incomplete, 64 bad usage,\n"
              "78 invalid configuration.  See patrol(8) and patrol.conf(5).\n", f);
}

enum { OPT_ROTATE_NOW = 256, OPT_DRY_RUN, OPT_CHECK_CONFIG, OPT_STATUS, OPT_REPORT,
       OPT_REVOKE_STRAYS, OPT_JSON, OPT_VERSION };

static const struct option options[] = {
        { "config", required_argument, NULL, 'c' },
        { "rotate-now", no_argument, NULL, OPT_ROTATE_NOW },
        { "dry-run", no_argument, NULL, OPT_DRY_RUN },
        { "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
        { "status", no_argument, NULL, OPT_STATUS },
        { "report", no_argument, NULL, OPT_REPORT },
        { "revoke-strays", no_argument, NULL, OPT_REVOKE_STRAYS },
        { "json", no_argument, NULL, OPT_JSON },
        { "verbose", no_argument, NULL, 'v' },
        { "quiet", no_argument, NULL, 'q' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
};

static int bad_usage(const char *msg, const char *arg)
{
        fprintf(stderr, "patrol: %s%s%s\nTry 'patrol --help'.\n", msg, arg ? ": " : "", arg ? arg : "");
        return EXIT_USAGE;
}

static int set_action(struct cli *c, enum cli_action a, const char *opt)
{
        if (c->action != ACT_DAEMON && c->action != a)
                return bad_usage("only one action at a time", opt);
        c->action = a;
        return 0;
}

static int check_combination(const struct cli *c)
{
        if (c->revoke_strays && c->action != ACT_REPORT)
                return bad_usage("--revoke-strays goes with --report", NULL);
        if (c->dry_run && c->action != ACT_ROTATE_NOW && !c->revoke_strays)
                return bad_usage("--dry-run goes with --rotate-now or --report --revoke-strays", NULL);
        if (c->json && c->action != ACT_ROTATE_NOW && c->action != ACT_STATUS && c->action != ACT_REPORT)
                return bad_usage("--json goes with --status, --report or --rotate-now", NULL);
        if (c->n_names > 0 && c->action != ACT_ROTATE_NOW && c->action != ACT_REPORT)
                return bad_usage("unexpected argument", c->names[0]);
        return 0;
}

static int handle_option(struct cli *c, int opt, char **argv)
{
        switch (opt) {
        case 'c': c->config_path = optarg; return 0;
        case OPT_ROTATE_NOW: return set_action(c, ACT_ROTATE_NOW, "--rotate-now");
        case OPT_CHECK_CONFIG: return set_action(c, ACT_CHECK_CONFIG, "--check-config");
        case OPT_STATUS: return set_action(c, ACT_STATUS, "--status");
        case OPT_REPORT: return set_action(c, ACT_REPORT, "--report");
        case OPT_VERSION: return set_action(c, ACT_VERSION, "--version");
        case 'h': return set_action(c, ACT_HELP, "--help");
        case OPT_DRY_RUN: c->dry_run = true; return 0;
        case OPT_REVOKE_STRAYS: c->revoke_strays = true; return 0;
        case OPT_JSON: c->json = true; return 0;
        case 'v': c->verbosity++; return 0;
        case 'q': c->verbosity--; return 0;
        default: (void)argv; return bad_usage("unknown option", NULL);
        }
}

/* A name given twice is one: two workers rotating one integration at once
 * race on its store and its records, and one of them leaves a live token
 * nowhere.  First mention kept; quadratic, but these are typed names. */
static size_t unique_names(char **names, size_t n)
{
        size_t i, j, k = 0;

        for (i = 0; i < n; i++) {
                for (j = 0; j < k && strcmp(names[j], names[i]) != 0; j++)
                        ;
                if (j == k)
                        names[k++] = names[i];
        }
        return k;
}

int cli_parse(int argc, char **argv, struct cli *ret)
{
        struct cli c = { .action = ACT_DAEMON };
        int opt, r;

        opterr = 0;
        optind = 1;
        while ((opt = getopt_long(argc, argv, ":c:vqh", options, NULL)) != -1) {
                if (opt == '?')
                        return bad_usage("unknown option", argv[optind - 1]);
                if (opt == ':')
                        return bad_usage("option needs an argument", argv[optind - 1]);
                r = handle_option(&c, opt, argv);
                if (r)
                        return r;
        }
        c.names = argv + optind;
        c.n_names = unique_names(c.names, (size_t)(argc - optind));
        if (!c.config_path)
                c.config_path = secure_getenv("PATROL_CONFIG");
        if (!c.config_path || !*c.config_path)
                c.config_path = PATROL_DEFAULT_CONFIG;
        r = check_combination(&c);
        if (r)
                return r;
        *ret = c;
        return 0;
}

/* Secrets live in this process's memory: no core dumps, no ptrace by
 * other users' processes, and every file we create is ours alone. */
static void harden_process(void)
{
        struct rlimit rl = { 0, 0 };

        (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        (void)setrlimit(RLIMIT_CORE, &rl);
        umask(077);
        /* A reader of stdout or stderr that goes away (`| head`, a restarted
         * journald) must not kill a rotation between two steps: the write
         * fails instead.  Hooks get the default back (hook.c). */
        signal(SIGPIPE, SIG_IGN);
}

static const char *base_name(const char *p)
{
        const char *s = strrchr(p, '/');

        return s ? s + 1 : p;
}

static int check_config(const struct cli *c)
{
        struct config *cfg = NULL;

        if (config_load(c->config_path, true, &cfg) < 0)
                return EXIT_CONFIG;
        printf("%s: ok: %zu store%s, %zu account%s, %zu integration%s\n", base_name(c->config_path),
               cfg->n_stores, cfg->n_stores == 1 ? "" : "s", cfg->n_accounts,
               cfg->n_accounts == 1 ? "" : "s", cfg->n_integrations, cfg->n_integrations == 1 ? "" : "s");
        config_free(cfg);
        return EXIT_OK;
}

int cli_run(const struct cli *c)
{
        log_init(c->verbosity);
        switch (c->action) {
        case ACT_HELP:
                usage(stdout);
                return EXIT_OK;
        case ACT_VERSION:
                printf("patrol %s\n", PACKAGE_VERSION);
                return EXIT_OK;
        default:
                break;
        }
        /* Every other action loads the configuration, which reads every
         * credential file: no core dump, no ptrace peer from here on. */
        harden_process();
        if (c->action == ACT_CHECK_CONFIG)
                return check_config(c);
        /* One malloc arena for every thread: rotations wait on the network,
         * not on malloc's lock, and each extra arena kept its own free
         * memory (about 1 MiB of RSS per worker thread). */
#ifdef M_ARENA_MAX
        mallopt(M_ARENA_MAX, 1);
#endif
        switch (c->action) {
        case ACT_ROTATE_NOW:
                return cli_rotate_now(c);
        case ACT_STATUS:
                return cli_status(c);
        case ACT_REPORT:
                return cli_report(c);
        default:
                return daemon_run(c->config_path);
        }
}
