/*
 * Escape probes for the sandbox test suite (tests/escape.rs).
 *
 *     probes [-n HOST_PIDNS] [-m HOST_MNTNS] NAME [ARGS...]
 *
 * Each probe attempts one kind of escape and prints exactly one line on stdout:
 *
 *     BLOCKED <what happened to every attempt>     exit 0
 *     ESCAPED <evidence>                           exit 1
 *
 * and exit 2 (with a message on stderr) when it is called wrongly. A few probes whose
 * outcome can only be judged from the host print another word (DETACHED for `daemon`);
 * the test checks the host side. Progress of long probes goes to stderr.
 *
 * The probes are meant to run inside `ci-intel exec`; run directly on a host, most of
 * them print ESCAPED, which shows that each test can fail. Some probes act on the
 * processes whose pids they are given (kill, ptrace, setns, proc_*): never point them at a
 * process you do not own. With `-n HOST_PIDNS` (the host's `readlink /proc/self/ns/pid`),
 * those probes refuse to touch anything when they find themselves in the host's pid
 * namespace (where pid 1 is the host's init) and report that as the escape. Likewise, with
 * `-m HOST_MNTNS` the mount probes (remount, umount, mount) refuse to run in the host's mount
 * namespace; they undo what they can, but without `-m` run them outside a sandbox only in a
 * mount namespace of their own (`unshare -m`).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/rtnetlink.h>
#include <linux/sched.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
/* linux/userfaultfd.h */
#define PROBE_UFFD_USER_MODE_ONLY 1
/* linux/mount.h: struct mount_attr and MOUNT_ATTR_RDONLY (that header clashes with sys/mount.h
 * on older C libraries). */
struct probe_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
#define PROBE_MOUNT_ATTR_RDONLY 0x1ULL

/* ---------------------------------------------------------------------------------------
 * Reporting */

static char notes[16384];
static int escaped;

static void vnote(const char *fmt, va_list ap)
{
    size_t len = strlen(notes);
    if (len + 4 >= sizeof notes)
        return;
    if (len > 0) {
        strcpy(notes + len, "; ");
        len += 2;
    }
    vsnprintf(notes + len, sizeof notes - len, fmt, ap);
}

/* Records what an attempt ran into. */
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vnote(fmt, ap);
    va_end(ap);
}

/* Records an attempt that got through. */
static void escape(const char *fmt, ...)
{
    va_list ap;
    escaped = 1;
    va_start(ap, fmt);
    vnote(fmt, ap);
    va_end(ap);
}

static const char *errname(int e)
{
    const char *name = strerrorname_np(e);
    return name ? name : "unknown errno";
}

/* The name of the current errno. */
static const char *err(void)
{
    return errname(errno);
}

static int verdict(void)
{
    printf("%s %s\n", escaped ? "ESCAPED" : "BLOCKED", notes[0] ? notes : "(no attempt)");
    fflush(stdout);
    return escaped ? 1 : 0;
}

/* The host's pid namespace (`-n`), or NULL. */
static const char *host_pidns;

/* Called by the probes that act on other processes (by pid 1 among others): refuses to act
 * from the host's pid namespace. Without /proc to tell, a pid beyond the first few means
 * this is no fresh pid namespace either. */
static void guard_host_processes(void)
{
    char target[256];
    ssize_t n = readlink("/proc/self/ns/pid", target, sizeof target - 1);
    if (n >= 0) {
        target[n] = 0;
        if (host_pidns && strcmp(target, host_pidns) == 0) {
            escape("in the host's pid namespace %s: not touching other processes", target);
            exit(verdict());
        }
    } else if (getpid() > 100) {
        escape("no /proc and pid %d: not in a fresh pid namespace; not touching other processes",
               (int)getpid());
        exit(verdict());
    }
}

/* The host's mount namespace (`-m`), or NULL. */
static const char *host_mntns;

/* Called by the mount probes: refuses to act from the host's mount namespace. */
static void guard_host_mounts(void)
{
    char target[256];
    ssize_t n = readlink("/proc/self/ns/mnt", target, sizeof target - 1);
    if (n < 0)
        return;
    target[n] = 0;
    if (host_mntns && strcmp(target, host_mntns) == 0) {
        escape("in the host's mount namespace %s: not touching mounts", target);
        exit(verdict());
    }
}

static void usage(const char *text)
{
    fprintf(stderr, "usage: probes %s\n", text);
    exit(2);
}

static long number(const char *text)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || *end || end == text) {
        fprintf(stderr, "probes: not a number: %s\n", text);
        exit(2);
    }
    return value;
}

/* Reads a whole small file; returns its length or -1 with errno set. */
static ssize_t slurp(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0 || len + (size_t)n >= size - 1) {
            len += (size_t)(n > 0 ? n : 0);
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* Whether `hay` (of length `len`, may hold NUL bytes) contains `needle`. */
static int contains(const char *hay, size_t len, const char *needle)
{
    return memmem(hay, len, needle, strlen(needle)) != NULL;
}

/* Runs `fn(arg)` in a forked child, so that an attempt which succeeds (a new namespace, a
 * changed credential) cannot affect the next one. Returns 0 when `fn` returned 0, else
 * the errno it returned, or -1 when the child died otherwise. */
static int in_child(int (*fn)(const void *), const void *arg)
{
    pid_t pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0)
        _exit(fn(arg) & 0xff);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void note_child(const char *what, int result)
{
    if (result == 0)
        escape("%s succeeded", what);
    else if (result < 0)
        note("%s: child died", what);
    else
        note("%s: %s", what, errname(result));
}

/* ---------------------------------------------------------------------------------------
 * File system */

/* create DIR...: creates a new file in each directory. */
static int probe_create(int argc, char **argv)
{
    if (argc < 1)
        usage("create DIR...");
    for (int i = 0; i < argc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/ci-intel-escape-%d", argv[i], (int)getpid());
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            note("create %s: %s", path, err());
            continue;
        }
        close(fd);
        unlink(path);
        escape("created %s", path);
    }
    return verdict();
}

/* open_write FILE...: opens existing files for writing (appending, never truncating). Nothing
 * is written: being allowed to open is the escape. */
static int probe_open_write(int argc, char **argv)
{
    if (argc < 1)
        usage("open_write FILE...");
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
            note("open %s for writing: %s", argv[i], err());
            continue;
        }
        close(fd);
        escape("opened %s for writing", argv[i]);
    }
    return verdict();
}

/* read PATH...: opens files (or directories) for reading; opening is the escape. */
static int probe_read(int argc, char **argv)
{
    if (argc < 1)
        usage("read PATH...");
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
            note("open %s: %s", argv[i], err());
            continue;
        }
        char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n >= 0)
            escape("read %zd bytes of %s", n, argv[i]);
        else
            escape("opened %s (read: %s)", argv[i], err());
        close(fd);
    }
    return verdict();
}

/* list DIR EXPECTED...: lists a directory; an entry other than the EXPECTED ones is the
 * escape (the parents of a declared path exist, holding only the way to it). */
static int probe_list(int argc, char **argv)
{
    if (argc < 1)
        usage("list DIR EXPECTED...");
    DIR *dir = opendir(argv[0]);
    if (!dir) {
        note("opendir %s: %s", argv[0], err());
        return verdict();
    }
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        int expected = 0;
        for (int i = 1; i < argc; i++)
            expected |= strcmp(entry->d_name, argv[i]) == 0;
        if (expected)
            count++;
        else
            escape("%s/%s is visible", argv[0], entry->d_name);
    }
    closedir(dir);
    note("%d expected entries in %s", count, argv[0]);
    return verdict();
}

/* mknod DIR: creates a character device for /dev/kmsg (1:11) and opens it. */
static int probe_mknod(int argc, char **argv)
{
    if (argc != 1)
        usage("mknod DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/ci-intel-escape-kmsg-%d", argv[0], (int)getpid());
    if (mknod(path, S_IFCHR | 0600, makedev(1, 11)) < 0) {
        note("mknod %s c 1 11: %s", path, err());
        return verdict();
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        escape("mknod %s c 1 11 and opened it", path);
        close(fd);
    } else {
        note("mknod %s c 1 11 succeeded but open: %s", path, err());
    }
    unlink(path);
    return verdict();
}

/* hardlink TARGET DIR: hard links TARGET (outside DIR) into DIR, directly and through
 * /proc/self/fd. Symbolic links are made too, and left in place: they are not an escape
 * from the sandbox (what follows them later is the collector's business). */
static int probe_hardlink(int argc, char **argv)
{
    if (argc != 2)
        usage("hardlink TARGET DIR");
    const char *target = argv[0];
    char path[4096];

    snprintf(path, sizeof path, "%s/evil-hard", argv[1]);
    if (link(target, path) == 0)
        escape("link %s -> %s", path, target);
    else
        note("link %s: %s", path, err());

    int fd = open(target, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        note("open %s: %s", target, err());
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        snprintf(path, sizeof path, "%s/evil-hard-fd", argv[1]);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0)
            escape("linkat %s -> %s", path, proc);
        else
            note("linkat via %s: %s", proc, err());
        close(fd);
    }

    snprintf(path, sizeof path, "%s/evil-symlink", argv[1]);
    if (symlink(target, path) == 0)
        note("symlink %s -> %s made (not an escape by itself)", path, target);
    else
        note("symlink %s: %s", path, err());
    return verdict();
}

/* fill DIR MAX_MIB: writes a file in DIR until the file system is full. */
static int probe_fill(int argc, char **argv)
{
    if (argc != 2)
        usage("fill DIR MAX_MIB");
    long max = number(argv[1]);
    signal(SIGXFSZ, SIG_IGN);
    char path[4096];
    snprintf(path, sizeof path, "%s/ci-intel-escape-fill-%d", argv[0], (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        note("create %s: %s", path, err());
        return verdict();
    }
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    long mib = 0;
    for (; mib < max; mib++) {
        size_t done = 0;
        while (done < sizeof chunk) {
            ssize_t n = write(fd, chunk + done, sizeof chunk - done);
            if (n < 0) {
                note("write stopped after %ld MiB: %s", mib, err());
                goto out;
            }
            done += (size_t)n;
        }
        if (mib % 256 == 0)
            fprintf(stderr, "filled %ld MiB\n", mib);
    }
    escape("wrote %ld MiB to %s without hitting a limit", mib, argv[0]);
out:
    close(fd);
    unlink(path);
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Mounts and namespaces */

static int try_write_in(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ci-intel-escape-remount-%d", dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    close(fd);
    unlink(path);
    return 0;
}

/* remount PATH: tries to make a read-only mount writable, then to write in it. */
static int probe_remount(int argc, char **argv)
{
    if (argc != 1)
        usage("remount PATH");
    guard_host_mounts();
    const char *path = argv[0];
    /* Whatever succeeds is undone at the end (write test included), or right away. */
    int remounted = 0;
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND, NULL) == 0) {
        escape("mount(MS_REMOUNT|MS_BIND) %s read-write", path);
        remounted = 1;
    } else {
        note("mount(MS_REMOUNT|MS_BIND) %s: %s", path, err());
    }
    if (mount(NULL, path, NULL, MS_REMOUNT, NULL) == 0) {
        escape("mount(MS_REMOUNT) %s read-write", path);
        remounted = 1;
    } else {
        note("mount(MS_REMOUNT) %s: %s", path, err());
    }
    struct probe_mount_attr attr = {.attr_clr = PROBE_MOUNT_ATTR_RDONLY};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, 0, &attr, sizeof attr) == 0) {
        escape("mount_setattr %s clearing MOUNT_ATTR_RDONLY", path);
        remounted = 1;
    } else {
        note("mount_setattr %s: %s", path, err());
    }
    int result = try_write_in(path);
    if (result == 0)
        escape("created a file in %s", path);
    else
        note("create in %s: %s", path, errname(result));
    if (remounted)
        mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
    if (mount(path, path, NULL, MS_BIND, NULL) == 0) {
        escape("bind mount of %s onto itself", path);
        result = try_write_in(path);
        if (result == 0)
            escape("created a file in the new bind mount");
        else
            note("create in the new bind mount: %s", errname(result));
        umount2(path, MNT_DETACH);
    } else {
        note("mount(MS_BIND) %s: %s", path, err());
    }
    return verdict();
}

/* umount PATH: tries to unmount PATH to see what is under it. */
static int probe_umount(int argc, char **argv)
{
    if (argc != 1)
        usage("umount PATH");
    guard_host_mounts();
    if (umount2(argv[0], 0) == 0)
        escape("umount2(%s, 0)", argv[0]);
    else
        note("umount2(%s, 0): %s", argv[0], err());
    if (umount2(argv[0], MNT_DETACH) == 0)
        escape("umount2(%s, MNT_DETACH)", argv[0]);
    else
        note("umount2(%s, MNT_DETACH): %s", argv[0], err());
    return verdict();
}

/* mount DIR: tries to mount a new tmpfs and a new proc. */
static int probe_mount(int argc, char **argv)
{
    if (argc != 1)
        usage("mount DIR");
    guard_host_mounts();
    if (mount("ci-intel-escape", argv[0], "tmpfs", 0, "size=1m") == 0) {
        escape("mounted a tmpfs on %s", argv[0]);
        umount2(argv[0], MNT_DETACH);
    } else {
        note("mount tmpfs on %s: %s", argv[0], err());
    }
    if (mount("proc", argv[0], "proc", 0, NULL) == 0) {
        escape("mounted a proc on %s", argv[0]);
        umount2(argv[0], MNT_DETACH);
    } else {
        note("mount proc on %s: %s", argv[0], err());
    }
    return verdict();
}

static int do_unshare(const void *flags)
{
    return unshare(*(const int *)flags) == 0 ? 0 : errno;
}

static int do_clone(const void *flags)
{
    long pid = syscall(SYS_clone, (unsigned long)*(const int *)flags | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        return errno;
    if (pid == 0)
        _exit(0);
    waitpid((pid_t)pid, NULL, 0);
    return 0;
}

static int do_clone3(const void *flags)
{
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = (uint64_t)*(const int *)flags;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0)
        return errno;
    if (pid == 0)
        _exit(0);
    waitpid((pid_t)pid, NULL, 0);
    return 0;
}

/* userns: tries to create a user namespace (and other namespaces) with unshare, clone and
 * clone3. */
static int probe_userns(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        usage("userns");
    static const struct {
        const char *name;
        int flags;
    } kinds[] = {
        {"CLONE_NEWUSER", CLONE_NEWUSER},
        {"CLONE_NEWUSER|CLONE_NEWNS", CLONE_NEWUSER | CLONE_NEWNS},
        {"CLONE_NEWNS", CLONE_NEWNS},
        {"CLONE_NEWNET", CLONE_NEWNET},
        {"CLONE_NEWPID", CLONE_NEWPID},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char what[128];
        snprintf(what, sizeof what, "unshare(%s)", kinds[i].name);
        note_child(what, in_child(do_unshare, &kinds[i].flags));
        snprintf(what, sizeof what, "clone(%s)", kinds[i].name);
        note_child(what, in_child(do_clone, &kinds[i].flags));
        snprintf(what, sizeof what, "clone3(%s)", kinds[i].name);
        note_child(what, in_child(do_clone3, &kinds[i].flags));
    }
    return verdict();
}

struct setns_arg {
    const char *path;
    int pidfd;
    int flags;
};

static int do_setns(const void *p)
{
    const struct setns_arg *arg = p;
    int fd = arg->pidfd;
    if (arg->path) {
        fd = open(arg->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return errno;
    }
    return setns(fd, arg->flags) == 0 ? 0 : errno;
}

/* setns PID...: tries to join the namespaces of other processes, by /proc/PID/ns/NAME and by
 * pidfd. */
static int probe_setns(int argc, char **argv)
{
    if (argc < 1)
        usage("setns PID...");
    guard_host_processes();
    static const char *kinds[] = {"user", "mnt", "net", "pid", "uts", "ipc", "cgroup", "time"};
    for (int i = 0; i < argc; i++) {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            char path[256], what[300];
            snprintf(path, sizeof path, "/proc/%s/ns/%s", argv[i], kinds[k]);
            struct setns_arg arg = {.path = path};
            snprintf(what, sizeof what, "setns(%s)", path);
            note_child(what, in_child(do_setns, &arg));
        }
        int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)number(argv[i]), 0);
        if (pidfd < 0) {
            note("pidfd_open(%s): %s", argv[i], err());
            continue;
        }
        struct setns_arg arg = {
            .pidfd = pidfd,
            .flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC,
        };
        char what[128];
        snprintf(what, sizeof what, "setns(pidfd of %s, mnt|net|uts|ipc)", argv[i]);
        note_child(what, in_child(do_setns, &arg));
        close(pidfd);
    }
    return verdict();
}

/* pidns HOST_PIDNS: whether this process, or the pid 1 it sees, is in the host's pid
 * namespace (HOST_PIDNS is the host's `readlink /proc/self/ns/pid`). */
static int probe_pidns(int argc, char **argv)
{
    if (argc != 1)
        usage("pidns HOST_PIDNS");
    static const char *links[] = {"/proc/self/ns/pid", "/proc/1/ns/pid"};
    for (size_t i = 0; i < 2; i++) {
        char target[256];
        ssize_t n = readlink(links[i], target, sizeof target - 1);
        if (n < 0) {
            note("readlink %s: %s", links[i], err());
            continue;
        }
        target[n] = 0;
        if (strcmp(target, argv[0]) == 0)
            escape("%s is the host's %s", links[i], target);
        else
            note("%s is %s, not the host's %s", links[i], target, argv[0]);
    }
    char cmdline[4096];
    ssize_t n = slurp("/proc/1/cmdline", cmdline, sizeof cmdline);
    if (n < 0) {
        note("/proc/1/cmdline: %s", err());
    } else {
        for (ssize_t i = 0; i < n; i++)
            if (cmdline[i] == 0)
                cmdline[i] = ' ';
        note("pid 1 is `%.80s`", cmdline);
    }
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Processes */

/* Number of processes in /proc, and the pid of one whose command line holds `marker` (or 0). */
static int scan_proc(const char *marker, int *count)
{
    DIR *dir = opendir("/proc");
    int found = 0;
    *count = 0;
    if (!dir)
        return 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        ++*count;
        if (pid == getpid())
            continue;
        char path[64], cmdline[4096];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        ssize_t n = slurp(path, cmdline, sizeof cmdline);
        if (marker && n > 0 && contains(cmdline, (size_t)n, marker))
            found = (int)pid;
    }
    closedir(dir);
    return found;
}

/* The marker of a host process, given in two parts: whole, it would show in the command
 * line of the sandbox's pid 1 (a copy of `ci-intel exec`, which has this probe's arguments). */
static const char *marker_of(const char *head, const char *tail)
{
    static char marker[512];
    snprintf(marker, sizeof marker, "%s%s", head, tail);
    return marker;
}

/* procs MARKER_HEAD MARKER_TAIL: looks for a host process whose command line holds the
 * marker. */
static int probe_procs(int argc, char **argv)
{
    if (argc != 2)
        usage("procs MARKER_HEAD MARKER_TAIL");
    int count;
    int pid = scan_proc(marker_of(argv[0], argv[1]), &count);
    if (pid)
        escape("pid %d has the host marker in its command line", pid);
    else
        note("no process with the host marker");
    note("%d processes visible in /proc", count);
    return verdict();
}

/* kill HOST_PID MARKER_HEAD MARKER_TAIL: signals the host process HOST_PID (whose command
 * line holds the marker) and then every process (kill -1). Whether the host process survived is for the test to
 * check; this probe reports what it could see and what the calls returned. */
static int probe_kill(int argc, char **argv)
{
    if (argc != 3)
        usage("kill HOST_PID MARKER_HEAD MARKER_TAIL");
    guard_host_processes();
    pid_t victim = (pid_t)number(argv[0]);
    const char *marker = marker_of(argv[1], argv[2]);
    int count;
    int seen = scan_proc(marker, &count);
    if (seen)
        escape("host process visible as pid %d", seen);
    /* kill(-1) and kill(victim) only when the victim is out of sight, as it should be: run
     * on a host (or in a sandbox without a pid namespace), they would kill far too much. */
    int reachable = kill(victim, 0) == 0;
    if (reachable) {
        char path[64], cmdline[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)victim);
        ssize_t n = slurp(path, cmdline, sizeof cmdline);
        if (n > 0 && contains(cmdline, (size_t)n, marker))
            escape("kill(%d, 0) reached the host process", (int)victim);
        else
            note("kill(%d, 0) reached some process", (int)victim);
    } else {
        note("kill(%d, 0): %s", (int)victim, err());
    }
    if (seen || reachable) {
        note("not sending kill(-1): too much is in reach");
        return verdict();
    }
    if (kill(victim, SIGKILL) == 0)
        note("kill(%d, SIGKILL) returned 0", (int)victim);
    else
        note("kill(%d, SIGKILL): %s", (int)victim, err());
    if (kill(-1, SIGKILL) == 0)
        note("kill(-1, SIGKILL) returned 0");
    else
        note("kill(-1, SIGKILL): %s", err());
    return verdict();
}

/* The start of the first readable mapping of `pid`, or a guess. */
static unsigned long readable_address(const char *pid)
{
    char path[64], maps[65536];
    snprintf(path, sizeof path, "/proc/%s/maps", pid);
    if (slurp(path, maps, sizeof maps) > 0) {
        for (char *line = maps; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
            unsigned long start;
            char perms[8];
            if (sscanf(line, "%lx-%*x %7s", &start, perms) == 2 && perms[0] == 'r')
                return start;
        }
    }
    return 0x400000;
}

static void ptrace_attach_detach(pid_t pid)
{
    if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0) {
        note("ptrace(PTRACE_ATTACH, %d): %s", (int)pid, err());
        return;
    }
    escape("ptrace(PTRACE_ATTACH, %d) succeeded", (int)pid);
    waitpid(pid, NULL, __WALL);
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
}

/* ptrace PID|ppid...: attaches to each process with ptrace, reads its memory with
 * process_vm_readv and /proc/PID/mem. `ppid` stands for getppid(). */
static int probe_ptrace(int argc, char **argv)
{
    if (argc < 1)
        usage("ptrace PID|ppid...");
    guard_host_processes();
    for (int i = 0; i < argc; i++) {
        char pidtext[32];
        if (strcmp(argv[i], "ppid") == 0)
            snprintf(pidtext, sizeof pidtext, "%d", (int)getppid());
        else
            snprintf(pidtext, sizeof pidtext, "%ld", number(argv[i]));
        pid_t pid = (pid_t)number(pidtext);
        if (pid <= 0) {
            note("%s is pid %d: no process to attach to", argv[i], (int)pid);
            continue;
        }
        ptrace_attach_detach(pid);
        unsigned long address = readable_address(pidtext);
        char buf[16];
        struct iovec local = {buf, sizeof buf};
        struct iovec remote = {(void *)address, sizeof buf};
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n >= 0)
            escape("process_vm_readv(%d) read %zd bytes", (int)pid, n);
        else if (errno == EFAULT)
            escape("process_vm_readv(%d) was permitted (EFAULT at %#lx)", (int)pid, address);
        else
            note("process_vm_readv(%d): %s", (int)pid, err());
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            escape("opened %s", path);
            close(fd);
        } else {
            note("open %s: %s", path, err());
        }
    }
    return verdict();
}

/* proc_environ PID CANARY...: reads /proc/PID/environ and looks for the canaries. */
static int probe_proc_environ(int argc, char **argv)
{
    if (argc < 2)
        usage("proc_environ PID CANARY...");
    guard_host_processes();
    char path[64];
    static char environ_text[1 << 20];
    snprintf(path, sizeof path, "/proc/%s/environ", argv[0]);
    ssize_t n = slurp(path, environ_text, sizeof environ_text);
    if (n < 0) {
        note("read %s: %s", path, err());
        return verdict();
    }
    int found = 0;
    for (int i = 1; i < argc; i++) {
        if (contains(environ_text, (size_t)n, argv[i])) {
            escape("%s holds canary #%d", path, i);
            found = 1;
        }
    }
    if (!found)
        note("%s is readable (%zd bytes) but holds no canary", path, n);
    return verdict();
}

/* env CANARY...: looks for the canaries in this process's environment. */
static int probe_env(int argc, char **argv)
{
    extern char **environ;
    if (argc < 1)
        usage("env CANARY...");
    int count = 0;
    for (char **entry = environ; *entry; entry++, count++) {
        for (int i = 0; i < argc; i++) {
            if (strstr(*entry, argv[i])) {
                const char *eq = strchr(*entry, '=');
                int name_len = eq ? (int)(eq - *entry) : (int)strlen(*entry);
                escape("%.*s holds canary #%d", name_len, *entry, i + 1);
            }
        }
    }
    if (escaped)
        note("%d variables", count);
    else
        note("%d variables, no canary among them", count);
    return verdict();
}

/* proc_root PID HOST_PATH...: reaches host files through /proc/PID/root, /proc/PID/cwd and
 * the directory descriptors of PID and of this process (climbing with `..` from each, which
 * leaves a root it is not under). */
static int probe_proc_root(int argc, char **argv)
{
    if (argc < 2)
        usage("proc_root PID HOST_PATH...");
    guard_host_processes();
    const char *pid = argv[0];
    char link[256], target[4096];
    snprintf(link, sizeof link, "/proc/%s/root", pid);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n >= 0) {
        target[n] = 0;
        note("%s -> %s", link, target);
    } else {
        note("readlink %s: %s", link, err());
    }

    /* Every base: the root and cwd of PID and every descriptor of PID and of this process. */
    char bases[512][64];
    int count = 0;
    snprintf(bases[count++], 64, "/proc/%s/root", pid);
    snprintf(bases[count++], 64, "/proc/%s/cwd", pid);
    const char *fd_dirs[2] = {NULL, "/proc/self/fd"};
    char pid_fd_dir[64];
    snprintf(pid_fd_dir, sizeof pid_fd_dir, "/proc/%s/fd", pid);
    fd_dirs[0] = pid_fd_dir;
    for (int d = 0; d < 2; d++) {
        DIR *dir = opendir(fd_dirs[d]);
        if (!dir) {
            note("opendir %s: %s", fd_dirs[d], err());
            continue;
        }
        struct dirent *entry;
        while ((entry = readdir(dir)) && count < 512) {
            if (entry->d_name[0] == '.')
                continue;
            if (d == 1 && atoi(entry->d_name) == dirfd(dir))
                continue;
            snprintf(bases[count++], 64, "%.30s/%.20s", fd_dirs[d], entry->d_name);
        }
        closedir(dir);
    }

    int tried = 0;
    for (int b = 0; b < count; b++) {
        for (int up = 0; up < 2; up++) {
            for (int i = 1; i < argc; i++) {
                char path[8192];
                snprintf(path, sizeof path, "%.63s%s%s", bases[b],
                         up ? "/../../../../../../../../../../../../../../../.." : "", argv[i]);
                int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
                tried++;
                if (fd >= 0) {
                    escape("opened %s", path);
                    close(fd);
                }
            }
        }
    }
    note("%d paths through %d bases tried", tried, count);
    return verdict();
}

/* proc_exe PID: opens the executable of PID, a host file outside the sandbox. */
static int probe_proc_exe(int argc, char **argv)
{
    if (argc != 1)
        usage("proc_exe PID");
    guard_host_processes();
    char path[64], target[4096];
    snprintf(path, sizeof path, "/proc/%s/exe", argv[0]);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n >= 0) {
        target[n] = 0;
        note("%s -> %s", path, target);
    } else {
        note("readlink %s: %s", path, err());
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        escape("opened %s for reading", path);
        close(fd);
    } else {
        note("open %s: %s", path, err());
    }
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        escape("opened %s for writing", path);
        close(fd);
    } else {
        note("open %s for writing: %s", path, err());
    }
    return verdict();
}

/* open_by_handle PATH...: decodes file handles, which needs CAP_DAC_READ_SEARCH ("shocker"). */
static int probe_open_by_handle(int argc, char **argv)
{
    if (argc < 1)
        usage("open_by_handle PATH...");
    for (int i = 0; i < argc; i++) {
        union {
            struct file_handle handle;
            char bytes[sizeof(struct file_handle) + MAX_HANDLE_SZ];
        } h;
        h.handle.handle_bytes = MAX_HANDLE_SZ;
        int mount_id;
        if (name_to_handle_at(AT_FDCWD, argv[i], &h.handle, &mount_id, 0) < 0) {
            note("name_to_handle_at %s: %s", argv[i], err());
            continue;
        }
        int mount_fd = open(argv[i], O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        int fd = open_by_handle_at(mount_fd, &h.handle, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            escape("open_by_handle_at %s", argv[i]);
            close(fd);
        } else {
            note("open_by_handle_at %s: %s", argv[i], err());
        }
        if (mount_fd >= 0)
            close(mount_fd);
    }
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Credentials */

/* ids: checks that this process is not root and holds no capability, with no_new_privs
 * set, and tries to become root. */
static int probe_ids(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        usage("ids");
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    if (ruid == 0 || euid == 0 || suid == 0)
        escape("uids %d/%d/%d", (int)ruid, (int)euid, (int)suid);
    else
        note("uids %d/%d/%d", (int)ruid, (int)euid, (int)suid);
    if (rgid == 0 || egid == 0 || sgid == 0)
        escape("gids %d/%d/%d", (int)rgid, (int)egid, (int)sgid);

    char status[16384];
    if (slurp("/proc/self/status", status, sizeof status) < 0) {
        note("/proc/self/status: %s", err());
    } else {
        static const char *fields[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"};
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            char *line = strstr(status, fields[i]);
            if (!line) {
                note("no %s", fields[i]);
                continue;
            }
            unsigned long long caps = strtoull(line + strlen(fields[i]), NULL, 16);
            if (caps)
                escape("%s %llx", fields[i], caps);
        }
        char *line = strstr(status, "NoNewPrivs:");
        if (!line || atoi(line + strlen("NoNewPrivs:")) != 1)
            escape("no_new_privs is not set");
        else
            note("no capabilities, no_new_privs set");
    }
    int bits = prctl(PR_GET_SECUREBITS);
    note("securebits %#x", bits);

    if (setuid(0) == 0 && geteuid() == 0)
        escape("setuid(0)");
    else
        note("setuid(0): %s", err());
    if (setresuid(0, 0, 0) == 0 && geteuid() == 0)
        escape("setresuid(0, 0, 0)");
    else
        note("setresuid(0, 0, 0): %s", err());
    if (setgid(0) == 0 && getegid() == 0)
        escape("setgid(0)");
    else
        note("setgid(0): %s", err());
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Terminals */

static void try_tiocsti(const char *name, int fd)
{
    char c = '#';
    if (ioctl(fd, TIOCSTI, &c) == 0)
        escape("TIOCSTI on %s", name);
    else
        note("TIOCSTI on %s: %s", name, err());
    /* The command with bit 32 set: the kernel only looks at the low 32 bits, a seccomp
     * filter comparing all 64 does not match it. Through syscall() so that the C library
     * does not truncate it. */
    if (syscall(SYS_ioctl, fd, 0x100000000UL | TIOCSTI, &c) == 0)
        escape("TIOCSTI|1<<32 on %s", name);
    else
        note("TIOCSTI|1<<32 on %s: %s", name, err());
}

/* tiocsti: pushes characters into the input of stdin, /dev/tty and a new pseudo-terminal
 * made the controlling terminal. */
static int probe_tiocsti(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        usage("tiocsti");
    /* Closing a controlling terminal hangs up its session. */
    signal(SIGHUP, SIG_IGN);
    try_tiocsti("stdin", 0);
    int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (tty >= 0) {
        try_tiocsti("/dev/tty", tty);
        close(tty);
    } else {
        note("open /dev/tty: %s", err());
    }
    if (setsid() < 0)
        note("setsid: %s", err());
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) {
        note("posix_openpt: %s", err());
        return verdict();
    }
    if (grantpt(master) < 0 || unlockpt(master) < 0) {
        note("grantpt/unlockpt: %s", err());
        return verdict();
    }
    const char *name = ptsname(master);
    int slave = name ? open(name, O_RDWR | O_CLOEXEC) : -1;
    if (slave < 0) {
        note("open pty slave: %s", err());
    } else {
        if (ioctl(slave, TIOCSCTTY, 0) < 0)
            note("TIOCSCTTY: %s", err());
        try_tiocsti("pty slave", slave);
        close(slave);
    }
    try_tiocsti("pty master", master);
    close(master);
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Network */

union address {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

static socklen_t parse_address(const char *host, const char *port, union address *out)
{
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, host, &out->in.sin_addr) == 1) {
        out->in.sin_family = AF_INET;
        out->in.sin_port = htons((uint16_t)number(port));
        return sizeof out->in;
    }
    if (inet_pton(AF_INET6, host, &out->in6.sin6_addr) == 1) {
        out->in6.sin6_family = AF_INET6;
        out->in6.sin6_port = htons((uint16_t)number(port));
        return sizeof out->in6;
    }
    fprintf(stderr, "probes: not an IP address: %s\n", host);
    exit(2);
}

/* Connects `fd` to `addr`, waiting at most `ms`; returns 0, an errno, or ETIMEDOUT. */
static int connect_within(int fd, const struct sockaddr *addr, socklen_t len, int ms)
{
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, addr, len) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return errno;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, ms) <= 0)
        return ETIMEDOUT;
    int error = 0;
    socklen_t size = sizeof error;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
    return error;
}

/* tcp ADDRESS PORT...: connects to each address (IPv4 or IPv6). A connection that neither
 * succeeds nor fails within two seconds counts as an escape: packets may have left. */
static int probe_tcp(int argc, char **argv)
{
    if (argc < 2 || argc % 2)
        usage("tcp ADDRESS PORT [ADDRESS PORT]...");
    for (int i = 0; i < argc; i += 2) {
        union address addr;
        socklen_t len = parse_address(argv[i], argv[i + 1], &addr);
        int fd = socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            note("socket for %s: %s", argv[i], err());
            continue;
        }
        int result = connect_within(fd, &addr.sa, len, 2000);
        if (result == 0)
            escape("connected to %s port %s", argv[i], argv[i + 1]);
        else if (result == ETIMEDOUT)
            escape("connect to %s port %s still pending after 2 s (packets may leave)",
                   argv[i], argv[i + 1]);
        else
            note("connect %s port %s: %s", argv[i], argv[i + 1], errname(result));
        close(fd);
    }
    return verdict();
}

/* udp ADDRESS PORT...: sends a datagram to each address. Delivery is shown by a refusal
 * (ICMP port unreachable: nobody listens there, so not the host's socket) or not; a
 * datagram sent without refusal within a second counts as an escape. */
static int probe_udp(int argc, char **argv)
{
    if (argc < 2 || argc % 2)
        usage("udp ADDRESS PORT [ADDRESS PORT]...");
    for (int i = 0; i < argc; i += 2) {
        union address addr;
        socklen_t len = parse_address(argv[i], argv[i + 1], &addr);
        int fd = socket(addr.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            note("socket for %s: %s", argv[i], err());
            continue;
        }
        if (connect(fd, &addr.sa, len) < 0) {
            note("connect udp %s port %s: %s", argv[i], argv[i + 1], err());
            close(fd);
            continue;
        }
        static const char message[] = "ci-intel escape probe";
        if (send(fd, message, sizeof message, 0) < 0) {
            note("send udp %s port %s: %s", argv[i], argv[i + 1], err());
            close(fd);
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, 1000);
        char buf[512];
        if (ready > 0 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0)
            note("udp %s port %s refused: %s", argv[i], argv[i + 1], err());
        else if (ready > 0)
            escape("udp %s port %s answered", argv[i], argv[i + 1]);
        else
            escape("udp %s port %s: sent, no refusal within 1 s", argv[i], argv[i + 1]);
        close(fd);
    }
    return verdict();
}

/* icmp ADDRESS: sends an echo request with a ping socket and a raw socket (v4 or v6). */
static int probe_icmp(int argc, char **argv)
{
    if (argc != 1)
        usage("icmp ADDRESS");
    union address addr;
    socklen_t len = parse_address(argv[0], "0", &addr);
    int v6 = addr.sa.sa_family == AF_INET6;
    int proto = v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
    static const struct {
        const char *name;
        int type;
    } kinds[] = {{"SOCK_DGRAM", SOCK_DGRAM}, {"SOCK_RAW", SOCK_RAW}};
    for (size_t k = 0; k < 2; k++) {
        int fd = socket(addr.sa.sa_family, kinds[k].type | SOCK_CLOEXEC, proto);
        if (fd < 0) {
            note("socket(%s, %s, ICMP): %s", v6 ? "AF_INET6" : "AF_INET", kinds[k].name, err());
            continue;
        }
        if (kinds[k].type == SOCK_RAW)
            escape("created a raw ICMP socket");
        struct icmphdr echo = {.type = v6 ? 128 : ICMP_ECHO};
        if (sendto(fd, &echo, sizeof echo, 0, &addr.sa, len) >= 0)
            escape("sent an ICMP echo to %s with %s", argv[0], kinds[k].name);
        else
            note("send ICMP echo with %s: %s", kinds[k].name, err());
        close(fd);
    }
    return verdict();
}

/* socket KIND: creates sockets of a kind the sandbox forbids. */
static int probe_socket(int argc, char **argv)
{
    static const struct {
        const char *kind, *name;
        int domain, type, protocol;
    } table[] = {
        {"raw", "AF_INET SOCK_RAW IPPROTO_RAW", AF_INET, SOCK_RAW, IPPROTO_RAW},
        {"raw", "AF_INET SOCK_RAW IPPROTO_TCP", AF_INET, SOCK_RAW, IPPROTO_TCP},
        {"raw", "AF_INET6 SOCK_RAW IPPROTO_RAW", AF_INET6, SOCK_RAW, IPPROTO_RAW},
        {"raw", "AF_INET6 SOCK_RAW IPPROTO_UDP", AF_INET6, SOCK_RAW, IPPROTO_UDP},
        {"packet", "AF_PACKET SOCK_RAW", AF_PACKET, SOCK_RAW, 0x0300 /* htons(ETH_P_ALL) */},
        {"packet", "AF_PACKET SOCK_DGRAM", AF_PACKET, SOCK_DGRAM, 0x0008 /* htons(ETH_P_IP) */},
        {"vsock", "AF_VSOCK SOCK_STREAM", AF_VSOCK, SOCK_STREAM, 0},
        {"vsock", "AF_VSOCK SOCK_DGRAM", AF_VSOCK, SOCK_DGRAM, 0},
        {"vsock", "AF_VSOCK SOCK_SEQPACKET", AF_VSOCK, SOCK_SEQPACKET, 0},
        {"mptcp", "AF_INET SOCK_STREAM IPPROTO_MPTCP", AF_INET, SOCK_STREAM, IPPROTO_MPTCP},
        {"mptcp", "AF_INET6 SOCK_STREAM IPPROTO_MPTCP", AF_INET6, SOCK_STREAM, IPPROTO_MPTCP},
    };
    if (argc != 1)
        usage("socket raw|packet|vsock|mptcp");
    int tried = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(table[i].kind, argv[0]) != 0)
            continue;
        tried++;
        int fd = socket(table[i].domain, table[i].type | SOCK_CLOEXEC, table[i].protocol);
        if (fd >= 0) {
            escape("socket(%s)", table[i].name);
            close(fd);
        } else {
            note("socket(%s): %s", table[i].name, err());
        }
    }
    if (!tried)
        usage("socket raw|packet|vsock|mptcp");
    return verdict();
}

/* families: tries every address family but AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK
 * (probed by `netlink`) with every common socket type. */
static int probe_families(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        usage("families");
    static const int types[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET};
    int refused = 0;
    for (int family = 0; family < AF_MAX; family++) {
        if (family == AF_UNIX || family == AF_INET || family == AF_INET6 || family == AF_NETLINK)
            continue;
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            int fd = socket(family, types[t] | SOCK_CLOEXEC, 0);
            if (fd >= 0) {
                escape("socket(family %d, type %d)", family, types[t]);
                close(fd);
            } else {
                refused++;
            }
        }
    }
    note("%d socket() calls refused", refused);
    return verdict();
}

/* A no-op RTM_SETLINK on the loopback interface, a route write that changes nothing.
 * Returns the kernel's answer (0 or an errno). */
static int netlink_route_write(int fd)
{
    struct {
        struct nlmsghdr header;
        struct ifinfomsg info;
    } request;
    memset(&request, 0, sizeof request);
    request.header.nlmsg_len = sizeof request;
    request.header.nlmsg_type = RTM_SETLINK;
    request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    request.header.nlmsg_seq = 1;
    request.info.ifi_family = AF_UNSPEC;
    request.info.ifi_index = 1;
    if (send(fd, &request, sizeof request, 0) < 0)
        return errno;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 2000) <= 0)
        return ETIMEDOUT;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0)
        return errno;
    struct nlmsghdr *answer = (struct nlmsghdr *)buf;
    if ((size_t)n >= sizeof *answer + sizeof(struct nlmsgerr) && answer->nlmsg_type == NLMSG_ERROR)
        return -((struct nlmsgerr *)NLMSG_DATA(answer))->error;
    return EPROTO;
}

/* netlink: a route write, and netlink protocols other than NETLINK_ROUTE. */
static int probe_netlink(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        usage("netlink");
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) {
        note("socket(NETLINK_ROUTE): %s", err());
    } else {
        int result = netlink_route_write(fd);
        if (result == 0)
            escape("RTM_SETLINK on interface 1 accepted");
        else
            note("RTM_SETLINK: %s", errname(result));
        close(fd);
    }
    static const struct {
        const char *name;
        int protocol;
    } others[] = {
        {"NETLINK_SOCK_DIAG", NETLINK_SOCK_DIAG},
        {"NETLINK_NFLOG", NETLINK_NFLOG},
        {"NETLINK_XFRM", NETLINK_XFRM},
        {"NETLINK_SELINUX", NETLINK_SELINUX},
        {"NETLINK_AUDIT", NETLINK_AUDIT},
        {"NETLINK_CONNECTOR", NETLINK_CONNECTOR},
        {"NETLINK_NETFILTER", NETLINK_NETFILTER},
        {"NETLINK_KOBJECT_UEVENT", NETLINK_KOBJECT_UEVENT},
        {"NETLINK_GENERIC", NETLINK_GENERIC},
        {"NETLINK_CRYPTO", NETLINK_CRYPTO},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, others[i].protocol);
        if (fd >= 0) {
            escape("socket(%s)", others[i].name);
            close(fd);
        } else {
            note("socket(%s): %s", others[i].name, err());
        }
    }
    return verdict();
}

static int unix_connect(const char *path, int abstract)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len + 1 >= sizeof addr.sun_path) {
        fprintf(stderr, "probes: socket name too long: %s\n", path);
        exit(2);
    }
    memcpy(addr.sun_path + (abstract ? 1 : 0), path, len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    socklen_t size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (abstract ? 1 : 0));
    int result = connect(fd, (struct sockaddr *)&addr, size) == 0 ? 0 : errno;
    close(fd);
    return result;
}

/* abstract NAME: connects to the abstract Unix socket "\0NAME". */
static int probe_abstract(int argc, char **argv)
{
    if (argc != 1)
        usage("abstract NAME");
    int result = unix_connect(argv[0], 1);
    if (result == 0)
        escape("connected to abstract socket @%s", argv[0]);
    else
        note("connect @%s: %s", argv[0], errname(result));
    return verdict();
}

/* unix PATH...: connects to Unix sockets in the file system. */
static int probe_unix(int argc, char **argv)
{
    if (argc < 1)
        usage("unix PATH...");
    for (int i = 0; i < argc; i++) {
        int result = unix_connect(argv[i], 0);
        if (result == 0)
            escape("connected to %s", argv[i]);
        else
            note("connect %s: %s", argv[i], errname(result));
    }
    return verdict();
}

/* dns NAME...: resolves names with the C library's resolver (one try, one second each). */
static int probe_dns(int argc, char **argv)
{
    if (argc < 1)
        usage("dns NAME...");
    char conf[4096];
    ssize_t n = slurp("/etc/resolv.conf", conf, sizeof conf);
    if (n < 0) {
        note("/etc/resolv.conf: %s", err());
    } else {
        char *line = strstr(conf, "nameserver");
        note("/etc/resolv.conf: %.60s", line ? strtok(line, "\n") : "no nameserver");
    }
    setenv("RES_OPTIONS", "timeout:1 attempts:1", 1);
    for (int i = 0; i < argc; i++) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *result;
        int error = getaddrinfo(argv[i], "443", &hints, &result);
        if (error) {
            note("getaddrinfo %s: %s", argv[i], gai_strerror(error));
            continue;
        }
        char text[INET6_ADDRSTRLEN] = "?";
        if (result->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)result->ai_addr)->sin_addr, text, sizeof text);
        else if (result->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)result->ai_addr)->sin6_addr, text, sizeof text);
        escape("%s resolved to %s", argv[i], text);
        freeaddrinfo(result);
    }
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Kernel interfaces */

/* syscall NAME: a kernel interface the sandbox denies. Each call is harmless when allowed
 * (and undone where it leaves something behind). */
static int probe_syscall(int argc, char **argv)
{
    if (argc != 1)
        usage("syscall bpf|perf_event_open|userfaultfd|io_uring|keyctl|syslog");
    const char *name = argv[0];
    long result;
    if (strcmp(name, "bpf") == 0) {
        struct bpf_insn program[] = {
            {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
            {.code = BPF_JMP | BPF_EXIT},
        };
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insns = (uint64_t)(uintptr_t)program;
        attr.insn_cnt = 2;
        attr.license = (uint64_t)(uintptr_t) "GPL";
        result = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    } else if (strcmp(name, "perf_event_open") == 0) {
        struct perf_event_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.size = sizeof attr;
        attr.type = PERF_TYPE_SOFTWARE;
        attr.config = PERF_COUNT_SW_CPU_CLOCK;
        attr.exclude_kernel = 1;
        attr.exclude_hv = 1;
        result = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    } else if (strcmp(name, "userfaultfd") == 0) {
        result = syscall(SYS_userfaultfd, O_CLOEXEC | PROBE_UFFD_USER_MODE_ONLY);
    } else if (strcmp(name, "io_uring") == 0) {
        uint64_t params[64];
        memset(params, 0, sizeof params);
        result = syscall(SYS_io_uring_setup, 1, params);
    } else if (strcmp(name, "keyctl") == 0) {
        result = syscall(SYS_add_key, "user", "ci-intel-escape", "x", 1, -3 /* session */);
        if (result >= 0)
            syscall(SYS_keyctl, 21 /* KEYCTL_INVALIDATE */, result);
    } else if (strcmp(name, "syslog") == 0) {
        char buf[256];
        result = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf);
    } else {
        usage("syscall bpf|perf_event_open|userfaultfd|io_uring|keyctl|syslog");
        return 2;
    }
    if (result >= 0)
        escape("%s succeeded", name);
    else
        note("%s: %s", name, err());
    return verdict();
}

/* ---------------------------------------------------------------------------------------
 * Limits */

static void raise_soft_limit(int resource)
{
    struct rlimit limit;
    if (getrlimit(resource, &limit) == 0) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(resource, &limit);
    }
}

/* forkbomb MAX: forks waiting children until fork fails, at most MAX; then kills them. */
static int probe_forkbomb(int argc, char **argv)
{
    if (argc != 1)
        usage("forkbomb MAX");
    long max = number(argv[0]);
    raise_soft_limit(RLIMIT_NPROC);
    pid_t *children = calloc((size_t)max, sizeof *children);
    if (!children) {
        note("calloc: %s", err());
        return verdict();
    }
    long count = 0;
    for (; count < max; count++) {
        pid_t pid = fork();
        if (pid < 0) {
            note("fork failed after %ld children: %s", count, err());
            break;
        }
        if (pid == 0) {
            for (;;)
                pause();
        }
        children[count] = pid;
    }
    if (count == max)
        escape("forked %ld children without hitting a limit", count);
    for (long i = 0; i < count; i++)
        kill(children[i], SIGKILL);
    for (long i = 0; i < count; i++)
        waitpid(children[i], NULL, 0);
    return verdict();
}

/* balloon MAX_MIB: allocates and touches memory in 64 MiB chunks, at most MAX_MIB. Being
 * killed (by an OOM killer) also stops it; the test treats that as blocked. */
static int probe_balloon(int argc, char **argv)
{
    if (argc != 1)
        usage("balloon MAX_MIB");
    long max = number(argv[0]);
    raise_soft_limit(RLIMIT_DATA);
    raise_soft_limit(RLIMIT_AS);
    const size_t chunk = 64UL << 20;
    long mib = 0;
    long page = sysconf(_SC_PAGESIZE);
    while (mib < max) {
        char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            note("mmap failed after %ld MiB: %s", mib, err());
            return verdict();
        }
        for (size_t i = 0; i < chunk; i += (size_t)page)
            p[i] = 1;
        mib += 64;
        fprintf(stderr, "allocated %ld MiB\n", mib);
    }
    escape("allocated %ld MiB without hitting a limit", mib);
    return verdict();
}

/* fds MAX: opens files until open fails, at most MAX. */
static int probe_fds(int argc, char **argv)
{
    if (argc != 1)
        usage("fds MAX");
    long max = number(argv[0]);
    raise_soft_limit(RLIMIT_NOFILE);
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    long count = 0;
    for (; count < max; count++) {
        if (open("/dev/null", O_RDONLY | O_CLOEXEC) < 0) {
            note("open failed after %ld files: %s (RLIMIT_NOFILE %llu)", count, err(),
                 (unsigned long long)limit.rlim_max);
            return verdict();
        }
    }
    escape("opened %ld files without hitting a limit", count);
    return verdict();
}

/* daemon MARKER: starts a daemon (double fork, new session, standard streams closed,
 * SIGHUP and SIGTERM ignored) that sleeps for five minutes. Its command line holds MARKER
 * (this process's arguments); the test looks for it on the host after the step. */
static int probe_daemon(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        usage("daemon MARKER");
    int channel[2];
    if (pipe2(channel, O_CLOEXEC) < 0) {
        note("pipe: %s", err());
        return verdict();
    }
    pid_t child = fork();
    if (child < 0) {
        note("fork: %s", err());
        return verdict();
    }
    if (child == 0) {
        setsid();
        pid_t daemon = fork();
        if (daemon == 0) {
            signal(SIGHUP, SIG_IGN);
            signal(SIGTERM, SIG_IGN);
            int null = open("/dev/null", O_RDWR);
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            pid_t self = getpid();
            if (write(channel[1], &self, sizeof self) < 0)
                _exit(1);
            close(channel[1]);
            for (int i = 0; i < 300; i++)
                sleep(1);
            _exit(0);
        }
        _exit(daemon > 0 ? 0 : 1);
    }
    close(channel[1]);
    waitpid(child, NULL, 0);
    pid_t daemon = 0;
    if (read(channel[0], &daemon, sizeof daemon) != sizeof daemon) {
        note("the daemon did not start");
        return verdict();
    }
    printf("DETACHED daemon started as pid %d (the host checks it died with the step)\n",
           (int)daemon);
    return 0;
}

/* sleep SECONDS [WORDS...]: not a probe: a process for the test to start on the host, its
 * command line marked with WORDS. */
static int probe_sleep(int argc, char **argv)
{
    if (argc < 1)
        usage("sleep SECONDS [WORDS...]");
    long seconds = number(argv[0]);
    for (long i = 0; i < seconds; i++)
        sleep(1);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Dispatch */

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} probes[] = {
    {"abstract", probe_abstract},
    {"balloon", probe_balloon},
    {"create", probe_create},
    {"daemon", probe_daemon},
    {"dns", probe_dns},
    {"env", probe_env},
    {"families", probe_families},
    {"fds", probe_fds},
    {"fill", probe_fill},
    {"forkbomb", probe_forkbomb},
    {"hardlink", probe_hardlink},
    {"icmp", probe_icmp},
    {"ids", probe_ids},
    {"kill", probe_kill},
    {"list", probe_list},
    {"mknod", probe_mknod},
    {"mount", probe_mount},
    {"netlink", probe_netlink},
    {"open_by_handle", probe_open_by_handle},
    {"open_write", probe_open_write},
    {"pidns", probe_pidns},
    {"proc_environ", probe_proc_environ},
    {"proc_exe", probe_proc_exe},
    {"proc_root", probe_proc_root},
    {"procs", probe_procs},
    {"ptrace", probe_ptrace},
    {"read", probe_read},
    {"remount", probe_remount},
    {"setns", probe_setns},
    {"sleep", probe_sleep},
    {"socket", probe_socket},
    {"syscall", probe_syscall},
    {"tcp", probe_tcp},
    {"tiocsti", probe_tiocsti},
    {"udp", probe_udp},
    {"umount", probe_umount},
    {"unix", probe_unix},
    {"userns", probe_userns},
};

int main(int argc, char **argv)
{
    while (argc >= 3 && (strcmp(argv[1], "-n") == 0 || strcmp(argv[1], "-m") == 0)) {
        if (argv[1][1] == 'n')
            host_pidns = argv[2];
        else
            host_mntns = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc >= 2) {
        for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
            if (strcmp(argv[1], probes[i].name) == 0)
                return probes[i].run(argc - 2, argv + 2);
    }
    fprintf(stderr, "usage: probes [-n HOST_PIDNS] [-m HOST_MNTNS] NAME [ARGS...]; NAME is one of:");
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        fprintf(stderr, " %s", probes[i].name);
    fprintf(stderr, "\n");
    return 2;
}
