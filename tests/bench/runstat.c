/* runstat.c: run a command and print its wall time, user+system CPU and
 * peak RSS, from wait4().  Forked from this small process, not from the
 * Python driver: a child's peak RSS counts its pre-exec copy of the parent.
 *
 *   runstat CMD [ARG...]   ->  stderr: "runstat: WALL_S CPU_S MAXRSS_KIB EXIT"
 */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
        struct timespec a, b;
        struct rusage ru;
        int status;
        pid_t pid;

        if (argc < 2) {
                fprintf(stderr, "usage: runstat CMD [ARG...]\n");
                return 64;
        }
        clock_gettime(CLOCK_MONOTONIC, &a);
        pid = fork();
        if (pid == 0) {
                execvp(argv[1], argv + 1);
                _exit(127);
        }
        if (pid < 0 || wait4(pid, &status, 0, &ru) < 0)
                return 70;
        clock_gettime(CLOCK_MONOTONIC, &b);
        fprintf(stderr, "runstat: %.3f %.3f %ld %d\n",
                (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9,
                (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                        (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
                ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
