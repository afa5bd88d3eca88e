/* hook.c: on_rotate.  fork + execve with a clean environment and no
 * inherited descriptors; its output is logged under the integration. */
#include "hook.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "duration.h"
#include "log.h"
#include "stop.h"

#define HOOK_POLL_MS     100     /* how soon the hook's exit or a stop is noticed */
#define HOOK_TERM_WAIT_MS 2000   /* SIGTERM to SIGKILL */

static void child_exec(const struct cfg_integration *in, const char *token_id, int out_fd)
{
        char e_int[256], e_tok[256], e_sec[1100];
        char *envp[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         e_int, e_tok, e_sec, NULL };
        int devnull = open("/dev/null", O_RDONLY);
        sigset_t none;

        snprintf(e_int, sizeof(e_int), "PATROL_INTEGRATION=%s", in->name);
        snprintf(e_tok, sizeof(e_tok), "PATROL_TOKEN_ID=%s", token_id ? token_id : "");
        snprintf(e_sec, sizeof(e_sec), "PATROL_SECRET=%s", in->secret);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
                _exit(127);
        /* Nothing patrol holds open (records, sockets) reaches the hook. */
        closefrom(3);
        /* The daemon blocks SIGTERM, SIGINT and SIGHUP for its signalfd and
         * patrol ignores SIGPIPE (cli.c): a hook, and what it starts, gets
         * the defaults back, or it could not be stopped the usual way. */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* Its own group: a timeout or a stop kills what it started too. */
        setpgid(0, 0);
        execve(in->on_rotate[0], in->on_rotate, envp);
        _exit(127);
}

static void log_output(const char *integration, char *buf, size_t *len, bool flush)
{
        char *nl;

        while ((nl = memchr(buf, '\n', *len)) || (flush && *len)) {
                size_t n = nl ? (size_t)(nl - buf) : *len;
                log_info(integration, "on_rotate: %.*s", (int)n, buf);
                n = nl ? n + 1 : n;
                memmove(buf, buf + n, *len - n);
                *len -= n;
        }
}

enum hook_end { HOOK_EXITED, HOOK_TIMED_OUT, HOOK_STOPPED };

/* Read what the pipe holds now, without waiting; false once it is closed. */
static bool read_ready(const char *integration, int fd, char *buf, size_t size, size_t *len)
{
        for (;;) {
                ssize_t n = read(fd, buf + *len, size - 1 - *len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 && errno == EAGAIN;
                *len += (size_t)n;
                if (*len == size - 1)
                        buf[(*len)++] = '\n';
                log_output(integration, buf, len, false);
        }
}

/* Log the hook's output until it exits (*status), the deadline passes or
 * patrol is asked to stop.  Its exit, not the pipe closing, ends the wait:
 * a command it left running in the background may hold the pipe for ever. */
static enum hook_end wait_hook(const char *integration, int fd, pid_t pid, int *status, int64_t deadline_ms)
{
        char buf[4096];
        size_t len = 0;
        bool open = true;
        enum hook_end end;

        for (;;) {
                int64_t left = deadline_ms - now_mono_ms();
                struct pollfd p = { .fd = fd, .events = POLLIN };

                if (waitpid(pid, status, WNOHANG) == pid) {
                        end = HOOK_EXITED;
                        break;
                }
                if (left <= 0 || stop_requested_now()) {
                        end = left <= 0 ? HOOK_TIMED_OUT : HOOK_STOPPED;
                        break;
                }
                if (poll(open ? &p : NULL, open ? 1 : 0, (int)(left > HOOK_POLL_MS ? HOOK_POLL_MS : left)) > 0)
                        open = read_ready(integration, fd, buf, sizeof(buf), &len);
        }
        if (open)
                (void)read_ready(integration, fd, buf, sizeof(buf), &len);
        log_output(integration, buf, &len, true);
        return end;
}

/* SIGTERM to the hook's group, SIGKILL if it is still there after a while. */
static void kill_hook(pid_t pid, int *status)
{
        int64_t until = now_mono_ms() + HOOK_TERM_WAIT_MS;

        kill(-pid, SIGTERM);
        while (waitpid(pid, status, WNOHANG) == 0 && now_mono_ms() < until)
                poll(NULL, 0, 20);
        kill(-pid, SIGKILL);
        while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
}

int hook_run(const struct cfg_integration *in, const char *token_id, int timeout_s,
             char *err, size_t errlen)
{
        int pipefd[2], status = 0;
        enum hook_end end;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                snprintf(err, errlen, "on_rotate: pipe: %s", strerror(errno));
                return -EIO;
        }
        pid = fork();
        if (pid < 0) {
                snprintf(err, errlen, "on_rotate: fork: %s", strerror(errno));
                close(pipefd[0]);
                close(pipefd[1]);
                return -EIO;
        }
        if (pid == 0)
                child_exec(in, token_id, pipefd[1]);
        setpgid(pid, pid);      /* as the child does: whichever runs first */
        close(pipefd[1]);
        (void)fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
        end = wait_hook(in->name, pipefd[0], pid, &status, now_mono_ms() + (int64_t)timeout_s * 1000);
        close(pipefd[0]);
        if (end != HOOK_EXITED) {
                kill_hook(pid, &status);
                if (end == HOOK_STOPPED) {
                        snprintf(err, errlen, "on_rotate %s: interrupted: patrol is stopping", in->on_rotate[0]);
                        return -ECANCELED;
                }
                snprintf(err, errlen, "on_rotate %s: killed after %d s", in->on_rotate[0], timeout_s);
                return -EIO;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        if (WIFEXITED(status))
                snprintf(err, errlen, "on_rotate %s: exit status %d", in->on_rotate[0], WEXITSTATUS(status));
        else
                snprintf(err, errlen, "on_rotate %s: killed by signal %d", in->on_rotate[0],
                         WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        return -EIO;
}
