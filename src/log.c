/* log.c: one line per event, to stderr by hand or to the journal under
 * systemd, with structured fields (PATROL_INTEGRATION=, MESSAGE_ID=). */
#include "autoconfig.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sd.h"

static int verbosity;
static bool use_journal;
static log_capture_fn capture_fn;
static void *capture_data;

/* Made with `systemd-id128 new`; described in doc/patrol.catalog. */
static const char *const event_ids[] = {
        [LOG_EV_NONE] = NULL,
        [LOG_EV_ROTATED] = "8ee6c5ae523140e88b72ca0e0f5251bf",
        [LOG_EV_FAILED] = "1e4bf86084844b95ae88b766776723d5",
        [LOG_EV_RECOVERED] = "3dec8d18c96640eab1b625f815fed31f",
        [LOG_EV_REVOKED] = "e472ff14219642c7808e169283f5904b",
        [LOG_EV_ADOPTED] = "ab2b2b9c8a994ea89fbe220690dc42b0",
        [LOG_EV_CONFIG] = "fb131ba457bf481585dddc5ecbcd6881",
        [LOG_EV_STARTED] = "20cdd6610e72476dbaa06ee24b56560d",
        [LOG_EV_STOPPED] = "fdc3895ea3b54a51ab16b3b56cc33903",
};

/* systemd sets $JOURNAL_STREAM to "dev:ino" of the stream stderr is
 * connected to; only when it still matches fd 2 are we logging into it. */
static bool stderr_is_journal(void)
{
        const char *e = secure_getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(2, &st) < 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Also where libsystemd is loaded, if systemd started patrol (sd.c): this
 * runs first, before any thread. */
void log_init(int v)
{
        bool journal = stderr_is_journal();

        verbosity = v;
        use_journal = libsystemd_load(journal) && journal;
        /* Under systemd without it, nothing reaches the journal's fields or
         * sd_notify (a Type=notify unit then times out): say why, on stderr. */
        if (libsystemd_error())
                log_warning(NULL, "cannot load libsystemd (%s): no sd_notify, and logging to stderr",
                            libsystemd_error());
}

int log_get_verbosity(void)
{
        return verbosity;
}

void log_set_capture(log_capture_fn fn, void *userdata)
{
        capture_fn = fn;
        capture_data = userdata;
}

static bool level_enabled(int level)
{
        if (verbosity < 0)
                return level <= LOG_WARNING;
        if (verbosity == 0)
                return level <= LOG_INFO;
        return true;
}

static const char *level_name(int level)
{
        switch (level) {
        case LOG_EMERG: case LOG_ALERT: case LOG_CRIT: case LOG_ERR:
                return "error";
        case LOG_WARNING:
                return "warning";
        case LOG_NOTICE: case LOG_INFO:
                return "info";
        default:
                return "debug";
        }
}

static void write_journal(int level, enum log_event ev, const char *integration, const char *msg)
{
        const char *id = ev < sizeof(event_ids) / sizeof(event_ids[0]) ? event_ids[ev] : NULL;

        (void)libsystemd_journal(level, msg, id, integration);
}

void text_one_line(char *s)
{
        for (; s && *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        *s = '?';
}

void log_event(int level, enum log_event ev, const char *integration, const char *fmt, ...)
{
        char msg[2048];
        va_list ap;

        if (!capture_fn && !level_enabled(level))
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        /* Messages quote servers' error text: one line, no terminal escapes. */
        text_one_line(msg);

        if (capture_fn) {
                capture_fn(level, integration, msg, capture_data);
                return;
        }
        if (use_journal) {
                write_journal(level, ev, integration, msg);
                return;
        }
        if (integration)
                fprintf(stderr, "patrol: %s: %s: %s\n", level_name(level), integration, msg);
        else
                fprintf(stderr, "patrol: %s: %s\n", level_name(level), msg);
}
