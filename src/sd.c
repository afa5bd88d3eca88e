/* sd.c: libsystemd, loaded with dlopen() only when patrol runs under
 * systemd.  Linked, it and what it links (libgcrypt, libgpg-error, liblz4,
 * liblzma, libcap) would be mapped into every patrol process, about 0.7 MiB
 * of a `--rotate-now` in CI that never speaks to systemd.  The daemon under
 * systemd loads it at start and calls it as before. */
#include "autoconfig.h"
#include "sd.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef HAVE_SYSTEMD
#include <dlfcn.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

/* The soname has been libsystemd.so.0 since libsystemd exists. */
#define LIBSYSTEMD "libsystemd.so.0"

static struct {
        void *dl;
        char error[256];
        __typeof__(sd_notify) *notify;
        __typeof__(sd_watchdog_enabled) *watchdog_enabled;
        __typeof__(sd_journal_send) *journal_send;
} sd;

bool libsystemd_load(bool want_journal)
{
        if (sd.dl)
                return true;
        if (!want_journal && !secure_getenv("NOTIFY_SOCKET") && !secure_getenv("WATCHDOG_USEC"))
                return false;
        sd.dl = dlopen(LIBSYSTEMD, RTLD_NOW | RTLD_LOCAL);
        if (!sd.dl) {
                snprintf(sd.error, sizeof(sd.error), "%s", dlerror());
                return false;
        }
        sd.notify = (__typeof__(sd.notify))dlsym(sd.dl, "sd_notify");
        sd.watchdog_enabled = (__typeof__(sd.watchdog_enabled))dlsym(sd.dl, "sd_watchdog_enabled");
        sd.journal_send = (__typeof__(sd.journal_send))dlsym(sd.dl, "sd_journal_send");
        if (!sd.notify || !sd.watchdog_enabled || !sd.journal_send) {
                snprintf(sd.error, sizeof(sd.error), "%s: sd_notify, sd_watchdog_enabled or sd_journal_send missing",
                         LIBSYSTEMD);
                dlclose(sd.dl);
                sd.dl = NULL;
                return false;
        }
        return true;
}

const char *libsystemd_error(void)
{
        return sd.error[0] ? sd.error : NULL;
}

void libsystemd_notify(const char *state)
{
        if (sd.dl)
                (void)sd.notify(0, state);
}

uint64_t libsystemd_watchdog_usec(void)
{
        uint64_t usec = 0;

        if (sd.dl && sd.watchdog_enabled(0, &usec) > 0)
                return usec;
        return 0;
}

bool libsystemd_journal(int priority, const char *message, const char *message_id, const char *integration)
{
        if (!sd.dl)
                return false;
        return sd.journal_send("MESSAGE=%s", message, "PRIORITY=%d", priority,
                               "SYSLOG_IDENTIFIER=patrol",
                               message_id ? "MESSAGE_ID=%s" : "PATROL_NO_ID=%s", message_id ? message_id : "1",
                               integration ? "PATROL_INTEGRATION=%s" : "PATROL_GLOBAL=%s",
                               integration ? integration : "1", NULL) >= 0;
}

#else

bool libsystemd_load(bool want_journal)
{
        (void)want_journal;
        return false;
}

const char *libsystemd_error(void)
{
        return NULL;
}

void libsystemd_notify(const char *state)
{
        (void)state;
}

uint64_t libsystemd_watchdog_usec(void)
{
        return 0;
}

bool libsystemd_journal(int priority, const char *message, const char *message_id, const char *integration)
{
        (void)priority; (void)message; (void)message_id; (void)integration;
        return false;
}

#endif
