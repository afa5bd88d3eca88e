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

/* Read the child's output until it closes or the deadline passes. */
static bool drain(const char *integration, int fd, int64_t deadline_ms)
{
        char buf[4096];
        size_t len = 0;

        for (;;) {
                int64_t left = deadline_ms - now_mono_ms();
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (left <= 0)
                        return false;
                if (poll(&p, 1, (int)(left > 1000 ? 1000 : left)) <= 0)
                        continue;
                n = read(fd, buf + len, sizeof(buf) - 1 - len);
                if (n <= 0 && !(n < 0 && errno == EINTR)) {
                        log_output(integration, buf, &len, true);
                        return true;
                }
                if (n > 0)
                        len += (size_t)n;
                if (len == sizeof(buf) - 1) {
                        buf[len++] = '\n';
                }
                log_output(integration, buf, &len, false);
        }
}

int hook_run(const struct cfg_integration *in, const char *token_id, int timeout_s,
             char *err, size_t errlen)
{
        int pipefd[2], status = 0;
        bool finished;
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
        close(pipefd[1]);
        finished = drain(in->name, pipefd[0], now_mono_ms() + (int64_t)timeout_s * 1000);
        close(pipefd[0]);
        if (!finished)
                kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (!finished) {
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
