/* sd.h: the three libsystemd calls patrol makes, loaded only when patrol
 * runs under systemd. */
#ifndef PATROL_SD_H
#define PATROL_SD_H

#include <stdbool.h>
#include <stdint.h>

/* Load libsystemd if, and only if, $NOTIFY_SOCKET, $WATCHDOG_USEC or
 * want_journal says patrol was started by systemd.  Call once, before any
 * thread starts.  Returns whether the calls below do anything. */
bool libsystemd_load(bool want_journal);
/* Why libsystemd_load() could not load it when it should have, else NULL. */
const char *libsystemd_error(void);

/* sd_notify(0, state); nothing without libsystemd. */
void libsystemd_notify(const char *state);
/* sd_watchdog_enabled(0, &usec) > 0 ? usec : 0. */
uint64_t libsystemd_watchdog_usec(void);
/* One journal entry with these fields; returns false when none was sent. */
bool libsystemd_journal(int priority, const char *message, const char *message_id, const char *integration);

#endif
