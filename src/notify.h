/* notify.h: the only door to sd_notify (systemd Type=notify). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_watchdog(void);
/* Half the watchdog interval in milliseconds, or 0 when systemd set none. */
int64_t notify_watchdog_interval_ms(void);
