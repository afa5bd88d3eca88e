/* notify.c: sd_notify messages; no-ops when built --without-systemd or
 * when not started by systemd ($NOTIFY_SOCKET unset). */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static void notify_send(const char *msg)
{
#ifdef HAVE_SYSTEMD
        (void)sd_notify(0, msg);
#else
        (void)msg;
#endif
}

void notify_ready(void)
{
        notify_send("READY=1");
}

void notify_reloading(void)
{
        notify_send("RELOADING=1");
}

void notify_stopping(void)
{
        notify_send("STOPPING=1");
}

void notify_watchdog(void)
{
        notify_send("WATCHDOG=1");
}

void notify_status(const char *fmt, ...)
{
        char buf[512];
        va_list ap;
        int n;

        n = snprintf(buf, sizeof(buf), "STATUS=");
        va_start(ap, fmt);
        vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
        va_end(ap);
        notify_send(buf);
}

int64_t notify_watchdog_interval_ms(void)
{
#ifdef HAVE_SYSTEMD
        uint64_t usec = 0;

        if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
                return (int64_t)(usec / 2000);
#endif
        return 0;
}
