/* notify.c: sd_notify messages; no-ops when built --without-systemd or
 * when not started by systemd (libsystemd not loaded: see sd.c). */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sd.h"

static void notify_send(const char *msg)
{
        libsystemd_notify(msg);
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
        /* Half the interval, in ms. */
        return (int64_t)(libsystemd_watchdog_usec() / 2000);
}
