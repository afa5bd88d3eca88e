/* log.h: the one logging module: stderr when run by hand, the journal under systemd. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

/* verbosity: 0 normal (info and above), >0 debug, <0 warnings and errors only. */
void log_init(int verbosity);
int log_get_verbosity(void);

/* Event kinds that get a journal MESSAGE_ID (see doc/patrol.catalog). */
enum log_event {
        LOG_EV_NONE = 0,
        LOG_EV_ROTATED,
        LOG_EV_FAILED,
        LOG_EV_RECOVERED,
        LOG_EV_REVOKED,
        LOG_EV_ADOPTED,
        LOG_EV_CONFIG,
        LOG_EV_STARTED,
        LOG_EV_STOPPED,
};

/* Make text that came from outside (a server's error message, a token name)
 * safe to print as one line: control characters (a newline, the escape of a
 * terminal sequence) become '?'.  In place. */
void text_one_line(char *s);

/* Log one line (text_one_line applies).  `integration` may be NULL.  Never
 * pass a secret. */
void log_event(int level, enum log_event ev, const char *integration, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

#define log_error(integ, ...)   log_event(LOG_ERR, LOG_EV_NONE, (integ), __VA_ARGS__)
#define log_warning(integ, ...) log_event(LOG_WARNING, LOG_EV_NONE, (integ), __VA_ARGS__)
#define log_info(integ, ...)    log_event(LOG_INFO, LOG_EV_NONE, (integ), __VA_ARGS__)
#define log_debug(integ, ...)   log_event(LOG_DEBUG, LOG_EV_NONE, (integ), __VA_ARGS__)

/* Tests: receive every formatted line instead of the sink (NULL restores). */
typedef void (*log_capture_fn)(int level, const char *integration, const char *msg, void *userdata);
void log_set_capture(log_capture_fn fn, void *userdata);
