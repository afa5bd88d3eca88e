/* daemon.h: daemon mode (SPEC.md section 6). */
#pragma once

/* Runs until SIGTERM/SIGINT; returns the exit status (0 after a signal,
 * 78 for a configuration that does not load at start, 1 otherwise). */
int daemon_run(const char *config_path);
