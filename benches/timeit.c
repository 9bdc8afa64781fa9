/*
 * Timing driver for benches/run: runs several commands round-robin and reports the wall
 * time of each, from just before fork to just after waitpid, on CLOCK_MONOTONIC.
 *
 *   timeit ITERATIONS WARMUP LABEL PROGRAM [ARG]... [:: LABEL PROGRAM [ARG]...]...
 *
 * Every iteration runs each command once, in the order given. WARMUP untimed iterations
 * come first. Every command is started the same way (fork, then execv of PROGRAM, which
 * must be a path) with stdin, stdout and stderr on /dev/null, so the driver's own cost is
 * the same for all of them. A command that does not exit with status 0 stops the driver
 * with exit status 1 and a message naming it.
 *
 * Output, one line per command in the order given, times in nanoseconds:
 *
 *   LABEL MEDIAN P90 MIN MAX
 *
 * The median of an even count is the mean of the two middle samples; P90 is the
 * nearest-rank 90th percentile.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_COMMANDS 8

struct command {
    const char *label;
    char **argv;
    uint64_t *samples;
};

static int devnull = -1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs one command to completion; returns its wall time in nanoseconds. */
static uint64_t run_once(const struct command *c, long iteration) {
    uint64_t start = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("timeit: fork");
        exit(1);
    }
    if (pid == 0) {
        if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0) {
            _exit(126);
        }
        execv(c->argv[0], c->argv);
        _exit(errno == ENOENT ? 127 : 126);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("timeit: waitpid");
            exit(1);
        }
    }
    uint64_t elapsed = now_ns() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFSIGNALED(status)) {
            fprintf(stderr, "timeit: %s killed by signal %d (iteration %ld): %s\n", c->label,
                    WTERMSIG(status), iteration, c->argv[0]);
        } else {
            fprintf(stderr, "timeit: %s exited with status %d (iteration %ld): %s\n", c->label,
                    WEXITSTATUS(status), iteration, c->argv[0]);
        }
        exit(1);
    }
    return elapsed;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static long parse_count(const char *s, const char *what, long min) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < min) {
        fprintf(stderr, "timeit: %s must be an integer of at least %ld, got '%s'\n", what, min, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr,
                "usage: timeit ITERATIONS WARMUP LABEL PROGRAM [ARG]... [:: LABEL PROGRAM [ARG]...]...\n");
        return 2;
    }
    long iterations = parse_count(argv[1], "ITERATIONS", 1);
    long warmup = parse_count(argv[2], "WARMUP", 0);

    struct command commands[MAX_COMMANDS];
    int n = 0;
    for (int i = 3; i < argc;) {
        if (n == MAX_COMMANDS) {
            fprintf(stderr, "timeit: at most %d commands\n", MAX_COMMANDS);
            return 2;
        }
        int start = i;
        while (i < argc && strcmp(argv[i], "::") != 0) {
            i++;
        }
        if (i - start < 2) {
            fprintf(stderr, "timeit: every command needs a LABEL and a PROGRAM\n");
            return 2;
        }
        commands[n].label = argv[start];
        commands[n].argv = &argv[start + 1];
        commands[n].samples = calloc((size_t)iterations, sizeof(uint64_t));
        if (commands[n].samples == NULL) {
            perror("timeit: calloc");
            return 1;
        }
        n++;
        if (i < argc) {
            argv[i] = NULL; /* terminates this command's argv */
            i++;
        }
    }

    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        perror("timeit: /dev/null");
        return 1;
    }

    for (long it = 0; it < warmup; it++) {
        for (int c = 0; c < n; c++) {
            (void)run_once(&commands[c], -(it + 1));
        }
    }
    for (long it = 0; it < iterations; it++) {
        for (int c = 0; c < n; c++) {
            commands[c].samples[it] = run_once(&commands[c], it + 1);
        }
    }

    for (int c = 0; c < n; c++) {
        uint64_t *s = commands[c].samples;
        qsort(s, (size_t)iterations, sizeof *s, compare);
        uint64_t median = (iterations % 2) ? s[iterations / 2]
                                           : (s[iterations / 2 - 1] + s[iterations / 2]) / 2;
        long rank = (iterations * 9 + 9) / 10; /* ceil(0.9 * iterations) */
        uint64_t p90 = s[rank - 1];
        printf("%s %llu %llu %llu %llu\n", commands[c].label, (unsigned long long)median,
               (unsigned long long)p90, (unsigned long long)s[0],
               (unsigned long long)s[iterations - 1]);
    }
    return 0;
}
