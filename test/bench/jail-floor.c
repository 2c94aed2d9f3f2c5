/*
 * jail-floor: the floor of a jail start on this machine, for the `jail-floor` bench figure.
 *
 * usage: jail-floor N DIR [-- command [args...]]      (default command: /bin/sleep 3600)
 *
 * Starts N jails in a row, each with the isolation the linux driver gives a jail
 * (services/agent/drivers/linux.ts, native/jailmount.c, native/jailinit.c), in one clone() and
 * no orchestration: new pid, mount, uts and ipc namespaces; the host's mounts made private; the
 * thin root under DIR/j-<i>/root (its own bind, read-only binds of /usr and the other base
 * directories or the host's merged-usr symlinks, a generated /etc, a tmpfs /dev with the six
 * device binds, its links, devpts and /dev/shm, a tmpfs /tmp, its own /proc), pivot_root into
 * it, and exec of the command as the jail's pid 1. Every mount is made inside the jail's new
 * mount namespace, so the host's mount table is the same before, during and after.
 * Left out, as they are not isolation: the driver's cgroup, its start barrier, jailinit's
 * proc masking and capability drop (a handful of syscalls), and its fork of the command.
 *
 * A start is timed from just before clone() to the exec of the command (a close-on-exec pipe
 * reads EOF then). Once all N run it kills them, waits for them, and removes DIR/j-*, then prints
 * one JSON line: {"jails","p50","p95","min","max","mountLinesBefore","mountLinesRunning",
 * "mountLinesAfter"} (times in ms; mount-table lines of the host's /proc/self/mountinfo).
 *
 * It must never mount anything in the host's mount namespace, and never delete through a mount
 * (it refuses to remove DIR when anything is mounted under it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const base_dirs[] = { "usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32" };
static const char *const dev_nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
static const char *const dev_links[][2] = {
    { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" }, { "stdout", "/proc/self/fd/1" },
    { "stderr", "/proc/self/fd/2" }, { "ptmx", "pts/ptmx" },
};
#define NELEMS(a) (sizeof (a) / sizeof (a)[0])

static int report_fd = -1;

/* In the jail: a step failed. Tell the parent which (the pipe) and stop. */
static void fail(const char *step, const char *path)
{
    char line[1200];
    int n = snprintf(line, sizeof line, "%s %s: %s", step, path, strerror(errno));

    if (write(report_fd, line, (size_t)n) < 0) {
        /* the parent reports a bare failure */
    }
    _exit(125);
}

static void path_of(char *out, const char *root, const char *rel)
{
    if ((size_t)snprintf(out, 4096, "%s/%s", root, rel) >= 4096) {
        errno = ENAMETOOLONG;
        fail("path", rel);
    }
}

/* jailmount's bind: bind, then a remount for the flags, then the propagation. */
static void bind(const char *src, const char *target, unsigned long remount, unsigned long propagation)
{
    if (mount(src, target, NULL, MS_BIND, NULL) < 0)
        fail("bind", target);
    if (remount && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | remount, NULL) < 0)
        fail("remount", target);
    if (propagation && mount(NULL, target, NULL, propagation, NULL) < 0)
        fail("propagation", target);
}

/* jailmount's tmpfs and devpts: a mount with its flags and data, then the propagation. */
static void fs(const char *type, const char *data, const char *target, unsigned long flags)
{
    if (mount(type, target, type, flags, data) < 0)
        fail(type, target);
    if (mount(NULL, target, NULL, MS_PRIVATE, NULL) < 0)
        fail("propagation", target);
}

static void dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        fail("mkdir", path);
}

static void file(const char *path, const char *content)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(content);

    if (fd < 0 || write(fd, content, len) != (ssize_t)len || close(fd) < 0)
        fail("write", path);
}

/* pid 1 of the new namespaces: the thin root, pivot_root, exec. Never returns. */
static void jail(const char *root, const char *hostname, char **cmd)
{
    char p[4096], q[4096], link[4096], hosts[512];
    struct stat st;
    size_t i;

    /* unshare --propagation private: nothing below propagates back to the host */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        fail("propagation", "/");
    if (sethostname(hostname, strlen(hostname)) < 0)
        fail("sethostname", hostname);
    dir(root, 0755);
    bind(root, root, 0, MS_UNBINDABLE);
    for (i = 0; i < NELEMS(base_dirs); i++) {
        char host[64];
        ssize_t n;

        snprintf(host, sizeof host, "/%s", base_dirs[i]);
        if (lstat(host, &st) < 0)
            continue;
        path_of(p, root, base_dirs[i]);
        if (S_ISLNK(st.st_mode)) {
            n = readlink(host, link, sizeof link - 1);
            if (n < 0)
                fail("readlink", host);
            link[n] = 0;
            if (symlink(link, p) < 0 && errno != EEXIST)
                fail("symlink", p);
        } else if (S_ISDIR(st.st_mode)) {
            dir(p, 0755);
            bind(host, p, MS_RDONLY, MS_PRIVATE);
        }
    }
    path_of(p, root, "etc");
    dir(p, 0755);
    snprintf(hosts, sizeof hosts, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n", hostname);
    path_of(q, p, "passwd");
    file(q, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    path_of(q, p, "group");
    file(q, "root:x:0:\nnogroup:x:65534:\n");
    path_of(q, p, "hosts");
    file(q, hosts);
    path_of(q, p, "hostname");
    snprintf(hosts, sizeof hosts, "%s\n", hostname);
    file(q, hosts);
    path_of(q, p, "nsswitch.conf");
    file(q, "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n");
    {
        char resolv[8192];
        int fd = open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, resolv, sizeof resolv - 1);

        if (fd >= 0)
            close(fd);
        if (n >= 0) {
            resolv[n] = 0;
            path_of(q, p, "resolv.conf");
            file(q, resolv);
        }
    }
    path_of(p, root, "proc");
    dir(p, 0555);
    path_of(p, root, "root");
    dir(p, 0700);
    path_of(p, root, "tmp");
    dir(p, 0755);
    fs("tmpfs", "mode=1777", p, MS_NOSUID | MS_NODEV);
    path_of(p, root, "dev");
    dir(p, 0755);
    fs("tmpfs", "mode=755,size=1m", p, MS_NOSUID | MS_NODEV | MS_NOEXEC);
    for (i = 0; i < NELEMS(dev_nodes); i++) {
        char host[64];
        int fd;

        snprintf(host, sizeof host, "/dev/%s", dev_nodes[i]);
        path_of(q, p, dev_nodes[i]);
        fd = open(q, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            fail("create", q);
        close(fd);
        bind(host, q, 0, MS_PRIVATE);
    }
    path_of(q, p, "pts");
    dir(q, 0755);
    fs("devpts", "newinstance,ptmxmode=0666,mode=0620", q, MS_NOSUID | MS_NOEXEC);
    path_of(q, p, "shm");
    dir(q, 0755);
    fs("tmpfs", "mode=1777", q, MS_NOSUID | MS_NODEV);
    for (i = 0; i < NELEMS(dev_links); i++) {
        path_of(q, p, dev_links[i][0]);
        if (symlink(dev_links[i][1], q) < 0)
            fail("symlink", q);
    }
    /* jailinit: its own proc, then pivot_root and detach the host's tree */
    path_of(p, root, "proc");
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        fail("mount proc", p);
    if (chdir(root) < 0)
        fail("chdir", root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail("pivot_root", root);
    if (umount2(".", MNT_DETACH) < 0)
        fail("detach", "the host's root");
    if (chroot(".") < 0 || chdir("/") < 0)
        fail("chroot", root);
    execv(cmd[0], cmd);
    fail("exec", cmd[0]);
}

static int mount_lines(void)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    int c, n = 0;

    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* The same rank as the bench's percentile(): the ceil(p/100 * n)-th smallest. */
static double percentile(const double *sorted, int n, int p)
{
    int k = (p * n + 99) / 100 - 1;

    return sorted[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT ? -1 : 0;
}

/* True when anything is mounted at or below `dir` in this (the host's) namespace. */
static int mounted_under(const char *dir)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[8192];
    size_t len = strlen(dir);
    int found = 0;

    if (!f)
        return 1;
    while (!found && fgets(line, sizeof line, f)) {
        char *field = line;
        int i;

        for (i = 0; i < 4 && field; i++)
            field = strchr(field, ' ') ? strchr(field, ' ') + 1 : NULL;
        if (field && strncmp(field, dir, len) == 0 && (field[len] == ' ' || field[len] == '/'))
            found = 1;
    }
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    char *default_cmd[] = { "/bin/sleep", "3600", NULL };
    char **cmd = default_cmd;
    const char *base;
    double *took;
    pid_t *pids;
    int n, i, started = 0, before, running, after, status = 0;

    if (argc < 3 || (n = atoi(argv[1])) < 1 || (argc > 3 && (strcmp(argv[3], "--") != 0 || argc < 5))) {
        fprintf(stderr, "usage: jail-floor N DIR [-- command [args...]]\n");
        return 2;
    }
    if (argc > 4)
        cmd = argv + 4;
    base = argv[2];
    took = calloc((size_t)n, sizeof *took);
    pids = calloc((size_t)n, sizeof *pids);
    if (!took || !pids || (mkdir(base, 0700) < 0 && errno != EEXIST)) {
        fprintf(stderr, "jail-floor: cannot set up %s: %s\n", base, strerror(errno));
        return 1;
    }
    before = mount_lines();
    for (i = 0; i < n; i++) {
        char jdir[2048], root[4096], hostname[64], why[1200];
        int pipefd[2];
        double t0;
        ssize_t got;
        pid_t pid;

        snprintf(jdir, sizeof jdir, "%s/j-%d", base, i);
        snprintf(root, sizeof root, "%s/root", jdir);
        snprintf(hostname, sizeof hostname, "floor-%d", i);
        t0 = now_ms();
        if (mkdir(jdir, 0700) < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
            fprintf(stderr, "jail-floor: cannot make %s: %s\n", jdir, strerror(errno));
            status = 1;
            break;
        }
        pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD, NULL, NULL, NULL, NULL);
        if (pid == 0) {
            close(pipefd[0]);
            report_fd = pipefd[1];
            jail(root, hostname, cmd);
        }
        close(pipefd[1]);
        if (pid < 0) {
            fprintf(stderr, "jail-floor: clone: %s\n", strerror(errno));
            close(pipefd[0]);
            status = 1;
            break;
        }
        pids[started++] = pid;
        do
            got = read(pipefd[0], why, sizeof why - 1);
        while (got < 0 && errno == EINTR);
        took[i] = now_ms() - t0;
        close(pipefd[0]);
        if (got != 0) {
            why[got > 0 ? got : 0] = 0;
            fprintf(stderr, "jail-floor: jail %d failed: %s\n", i, got > 0 ? why : strerror(errno));
            status = 1;
            break;
        }
    }
    running = mount_lines();
    for (i = 0; i < started; i++)
        kill(pids[i], SIGKILL);
    for (i = 0; i < started; i++)
        while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    after = mount_lines();
    if (mounted_under(base)) {
        fprintf(stderr, "jail-floor: something is mounted under %s: not removing it\n", base);
        return 1;
    }
    if (nftw(base, remove_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0) {
        fprintf(stderr, "jail-floor: cannot remove %s: %s\n", base, strerror(errno));
        status = 1;
    }
    if (status)
        return status;
    qsort(took, (size_t)n, sizeof *took, by_value);
    printf("{\"jails\":%d,\"p50\":%.2f,\"p95\":%.2f,\"min\":%.2f,\"max\":%.2f,\"mountLinesBefore\":%d,\"mountLinesRunning\":%d,\"mountLinesAfter\":%d}\n",
           n, percentile(took, n, 50), percentile(took, n, 95), took[0], took[n - 1], before, running, after);
    return 0;
}
