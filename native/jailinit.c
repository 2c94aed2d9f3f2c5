/*
 * jailinit: pid 1 of a jailfleet linux jail.
 *
 * usage: jailinit [--seccomp default|unconfined] <exit-code-file> <root> <hostname> <inherit|none> [OP ARG TARGET FLAGS]... -- <command> [args...]
 *
 * --seccomp: the jail's syscall filter (native/jail-seccomp.h), loaded last before the command
 * runs; "default" when absent. "unconfined" is the spec's `security.seccomp` for the rare
 * service that needs more (the capabilities are cut all the same).
 *
 * Every OP is four arguments, the jail's mount plan (made by the driver's mount step):
 *   bind    <source>  <target> <flags>  bind mount; flags: ro, nosuid, nodev, noexec (or "-")
 *   beneath <prefix>//<path> <target> <flags>  bind mount of <path> resolved beneath <prefix>
 *                     (an allowed mount source: openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) and
 *                     mounted from that very fd, so a symlink swapped in after the driver's
 *                     check cannot redirect it (the mount fails instead)
 *   tmpfs   <options> <target> <flags>  a tmpfs with the given data options
 *   devpts  <options> <target> <flags>  a new devpts instance
 *   overlay <options> <target> <flags>  an overlay (lowerdir=,upperdir=,workdir=): an image's root
 *   mkdir   <mode>    <target> -        a directory (octal mode), kept if it exists
 *   file    -         <target> -        an empty regular file (a bind target), kept if it exists
 *   symlink <link>    <path>   -        a symlink to <link>, kept if it exists
 * They run in order inside the jail's new mount namespace (made private by unshare), after the
 * start barrier and before pivot_root: the host's mount table never sees them, and they vanish
 * with the namespace when the jail's last process is gone, however it ends. The first op must
 * bind the root onto itself, or mount the jail's overlay on it (pivot_root needs a mount point). mkdir, file and symlink are only
 * for paths inside a tmpfs this same plan just mounted (nothing else has touched it, so nothing
 * there can be a symlink planted by the jail); the driver makes every other target on the host,
 * checked, before the start.
 *
 * The linux driver starts it as the child of
 *   unshare --pid --fork --mount --uts --ipc [--net] --propagation private -- jailinit EXIT ROOT HOSTNAME NETWORK PLAN... -- CMD...
 * so it is pid 1 of fresh pid, mount, uts and ipc namespaces. It then:
 *   1. blocks the signals it forwards (see main), then waits for the driver's start barrier: when stdin is a pipe or socket it reads it until
 *      EOF (the driver writes "go" and closes it once it has recorded this process's host pid,
 *      so even a command that exits at once cannot vanish before the driver saw it; an EOF
 *      without a word means the driver died first, and the jail ends unstarted), then puts
 *      /dev/null on stdin;
 *   2. opens the exit-code file (before chroot: the file lives outside the root);
 *   3. sets the hostname, makes the mounts of the plan, mounts a fresh proc at <root>/proc, brings "lo" up when the jail
 *      has its own network namespace (none: empty; "vnet:A.B.C.D/N:GW": the driver made eth0 before "go",
 *      and it gets its address, comes up and routes through GW here);
 *   4. pivots into <root> and detaches the host's mount tree (see main);
 *   5. hardens the jail, like Docker's default profile (see harden_proc and drop_privileges):
 *      the kernel knobs of its proc are made read-only and its kernel-information files masked
 *      with /dev/null, then the capability bounding set is cut to KEPT_CAPS (Docker's default
 *      set less CAP_MKNOD and CAP_SYS_CHROOT: the jail is a chroot, not a pivot_root), the
 *      dropped capabilities leave the permitted and effective sets (with network "none", CAP_NET_RAW
 *      goes too: NETLESS_DROPPED_CAPS), the inheritable and ambient
 *      sets are emptied, no_new_privs is set, and this process becomes non-dumpable (so the
 *      command, root with the same capabilities, cannot ptrace it nor open its /proc/1/fd links (the
 *      exit-code file on the host is one). The command inherits all of it through fork and exec;
 *      as uid 0 it gets exactly the bounding set at exec. Last, the default seccomp filter
 *      (jail-seccomp.h) is loaded into this process, so the command inherits it too. Any failure here ends the jail with
 *      126 before the command runs: a jail never runs half-hardened;
 *   6. blanks its own argv (so /proc/1/cmdline in the jail does not show the host paths of the
 *      root and the exit-code file) and forks the command (execvp, inherited environment);
 *   7. as init: forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command,
 *      reaps every zombie, and when the command exits writes its status (exit code, or
 *      128 + signal) to the exit-code file and exits with it. Its exit makes the kernel kill
 *      whatever is left in the pid namespace.
 *
 * usage: jailinit [--seccomp default|unconfined] --enter <pid> -- <command> [args...]
 *   runs a command inside the running jail whose init is <pid> (the driver's exec for jails whose
 *   root is an image, which holds no setpriv of the host's): joins its ipc, uts, net, pid and
 *   mount namespaces and its root, forks, drops to KEPT_CAPS and loads the seccomp filter exactly as the init does, and execs
 *   the command; it exits with the command's status. Nothing of the host is reachable by path
 *   once it has joined, and it never execs anything before the drop.
 *
 * When fd 3 is a pipe, a one-line start report goes there ("ok" or "failed: <why>"): see report().
 *
 * It must never run anything through a shell and never touch the host outside <root>
 * and the exit-code file. Exit codes of its own: 125 setup failed, 126 hardening failed,
 * 127 command not runnable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/capability.h>
#include <arpa/inet.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <net/route.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jail-caps.h"
#include "jail-seccomp.h"

#define EXIT_SETUP 125
#define EXIT_HARDEN 126
#define EXIT_NOEXEC 127

/* Bound read-only onto themselves (Docker's readonly paths, and the masked directories). */
static const char *const readonly_paths[] = {
    "/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs",
    "/proc/acpi", "/proc/asound", "/proc/scsi",
};
/* Covered with /dev/null (Docker's masked files). */
static const char *const masked_paths[] = {
    "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/kmsg",
    "/proc/latency_stats", "/proc/timer_stats",
};
#define NELEMS(a) (sizeof (a) / sizeof (a)[0])

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
#define NFORWARDED (sizeof forwarded / sizeof forwarded[0])

static int exit_fd = -1;

static void write_exit_code(int code)
{
    char buf[16];
    int n;

    if (exit_fd < 0)
        return;
    n = snprintf(buf, sizeof buf, "%d\n", code);
    if (write(exit_fd, buf, (size_t)n) != n)
        fprintf(stderr, "jailinit: cannot write the exit code: %s\n", strerror(errno));
    close(exit_fd);
    exit_fd = -1;
}

/*
 * The start report: when fd 3 is a pipe or socket (the driver's), one line on it says how the start went,
 * "ok" once the command has been exec'd, or "failed: <why>" when setup, hardening or the exec
 * failed. The driver's start step waits for it, so a jail whose command cannot run fails its
 * start instead of looking started. Closed (and close-on-exec) so the command never sees it.
 */
static int report_fd = -1;

static void report(const char *line)
{
    if (report_fd < 0)
        return;
    if (write(report_fd, line, strlen(line)) < 0) {
        /* the driver went away: the jail goes on, nobody is waiting for the report */
    }
    close(report_fd);
    report_fd = -1;
}

static void vdie(int code, const char *fmt, va_list ap)
{
    int err = errno;
    char msg[1024];

    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "jailinit: %s: %s\n", msg, strerror(err));
    if (report_fd >= 0) {
        char line[1200];

        snprintf(line, sizeof line, "failed: %s: %s\n", msg, strerror(err));
        report(line);
    }
    write_exit_code(code);
    _exit(code);
}

/* A setup step failed: say which, record 125 and stop. */
static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vdie(EXIT_SETUP, fmt, ap);
    va_end(ap);
}

/* A hardening step failed: say which, record 126 and stop, before the command ever runs. */
static void die_harden(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vdie(EXIT_HARDEN, fmt, ap);
    va_end(ap);
}

/* The start barrier on stdin (see the header), then /dev/null as the command's stdin. */
static void wait_for_barrier(void)
{
    struct stat st;
    char buf[64];
    ssize_t n;
    int fd;

    if (fstat(STDIN_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
        size_t got = 0;

        do {
            n = read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0)
                got += (size_t)n;
        } while (n > 0 || (n < 0 && errno == EINTR));
        /*
         * The driver says "go" before it closes: a bare EOF means it died before it recorded
         * this jail (an agent killed mid-start). Its successor will start the jail again, so
         * this copy must never run.
         */
        if (got == 0) {
            errno = ECANCELED;
            die("the driver went away before the start barrier opened");
        }
    }
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
        die("cannot open /dev/null as stdin");
    close(fd);
}

static void loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (s < 0)
        die("cannot open a socket to bring lo up");
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("cannot read the flags of lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("cannot bring lo up");
    close(s);
}

/*
 * A vnet jail's interface: network is "vnet:A.B.C.D/N:G.H.I.J". The driver made eth0 in this
 * namespace before "go"; here it gets the address and mask, comes up, and routes through the
 * gateway (ioctls, not a spawned ip: a start pays no extra process for its network).
 */
static int vnet_parse(const char *how, struct in_addr *addr, unsigned *prefix, struct in_addr *gw)
{
    char a[16], g[16];
    int n = 0;

    if (sscanf(how, "vnet:%15[0-9.]/%u:%15[0-9.]%n", a, prefix, g, &n) != 3 || how[n] != '\0')
        return 0;
    return *prefix >= 1 && *prefix <= 30 && inet_pton(AF_INET, a, addr) == 1 && inet_pton(AF_INET, g, gw) == 1;
}

static void vnet_up(const char *how)
{
    struct in_addr addr, gw;
    unsigned prefix;
    struct ifreq ifr;
    struct rtentry rt;
    struct sockaddr_in *sin;
    int s;

    if (!vnet_parse(how, &addr, &prefix, &gw)) {
        errno = EINVAL;
        die("bad vnet network %s", how);
    }
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("cannot open a socket to set up eth0");
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    sin->sin_addr = addr;
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
        die("cannot set the address of eth0");
    sin->sin_addr.s_addr = htonl(0xffffffffu << (32 - prefix));
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
        die("cannot set the netmask of eth0");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("cannot read the flags of eth0");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("cannot bring eth0 up");
    /* the default route, once eth0 is up (a gateway on a down link is unreachable) */
    memset(&rt, 0, sizeof rt);
    ((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
    ((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
    sin = (struct sockaddr_in *)&rt.rt_gateway;
    sin->sin_family = AF_INET;
    sin->sin_addr = gw;
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    if (ioctl(s, SIOCADDRT, &rt) < 0)
        die("cannot add the default route through the gateway");
    close(s);
}

/* lstat(path), false when it does not exist; any other error is fatal. */
static int exists(const char *path)
{
    struct stat st;

    if (lstat(path, &st) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    die_harden("cannot look at %s", path);
    return 0;
}

/*
 * Docker's readonly and masked paths of proc, done after the chroot so that every path
 * resolves inside the jail (/dev/null is the driver's bind of the host's null device, checked
 * to be one: it is never a host file reached through a symlink). Paths the kernel does not
 * have are skipped.
 */
static void harden_proc(void)
{
    const unsigned long ro = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    struct stat st;
    size_t i;

    for (i = 0; i < NELEMS(readonly_paths); i++) {
        const char *p = readonly_paths[i];

        if (!exists(p))
            continue;
        if (mount(p, p, NULL, MS_BIND, NULL) < 0)
            die_harden("cannot bind %s onto itself", p);
        if (mount(NULL, p, NULL, ro, NULL) < 0)
            die_harden("cannot make %s read-only", p);
    }

    if (lstat("/dev/null", &st) < 0)
        die_harden("cannot look at /dev/null in the jail");
    if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 || minor(st.st_rdev) != 3) {
        errno = EINVAL;
        die_harden("/dev/null in the jail is not the null device (1:3), cannot mask proc with it");
    }
    for (i = 0; i < NELEMS(masked_paths); i++) {
        const char *p = masked_paths[i];

        if (!exists(p))
            continue;
        if (mount("/dev/null", p, NULL, MS_BIND, NULL) < 0)
            die_harden("cannot mask %s with /dev/null", p);
    }
}

/*
 * Cuts this process down to `kept` (KEPT_CAPS or less) for good (jail-caps.h), and makes it not dumpable. Fork and
 * exec pass it all on.
 */
static void drop_privileges(unsigned long long kept)
{
    const char *what = "";
    unsigned long cap = 0;

    if (jail_drop_caps(kept, &what, &cap) < 0)
        die_harden(what, cap);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        die_harden("cannot make the jail init non-dumpable");
}

/* Whether the command gets the default seccomp filter (see the header's --seccomp). */
static int seccomp_default = 1;

/* The jail's seccomp filter (jail-seccomp.h), unless the spec asked for none: last before exec. */
static void confine(void)
{
    const char *what = "";

    if (seccomp_default && jail_load_seccomp(&what) < 0)
        die_harden("%s", what);
}

/*
 * Takes a leading `--seccomp MODE` out of argv (the entries, not the strings: take_command
 * still blanks the whole of argv's memory). Returns the new argc, or -1 on a bad mode.
 */
static int take_seccomp_option(int argc, char **argv)
{
    int i;

    if (argc < 3 || strcmp(argv[1], "--seccomp") != 0)
        return argc;
    if (strcmp(argv[2], "unconfined") == 0)
        seccomp_default = 0;
    else if (strcmp(argv[2], "default") != 0)
        return -1;
    for (i = 3; i <= argc; i++)
        argv[i - 2] = argv[i];
    return argc - 2;
}

struct mount_flag {
    const char *name;
    unsigned long bits;
};

static const struct mount_flag mount_flags[] = {
    {"ro", MS_RDONLY}, {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC},
};

/* "ro,nosuid,..." as mount flags; "-" is none. An unknown flag ends the start. */
static unsigned long parse_mount_flags(const char *op, const char *target, const char *spec)
{
    char buf[256];
    char *tok, *save = NULL;
    unsigned long bits = 0;
    size_t i;

    if (strcmp(spec, "-") == 0)
        return 0;
    if (strlen(spec) >= sizeof buf) {
        errno = EINVAL;
        die("mount %s %s: flags too long", op, target);
    }
    strcpy(buf, spec);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int known = 0;

        for (i = 0; i < NELEMS(mount_flags); i++) {
            if (strcmp(tok, mount_flags[i].name) == 0) {
                bits |= mount_flags[i].bits;
                known = 1;
            }
        }
        if (!known) {
            errno = EINVAL;
            die("mount %s %s: unknown flag \"%s\"", op, target, tok);
        }
    }
    return bits;
}

/*
 * One op of the mount plan (see the header), the same syscalls mount(8) makes: a bind keeps
 * its source's flags, so read-only and the others need a remount of the bind.
 */
static void mount_op(const char *op, const char *arg, const char *target, const char *flags)
{
    unsigned long bits = parse_mount_flags(op, target, flags);

    if (strcmp(op, "bind") == 0) {
        if (mount(arg, target, NULL, MS_BIND, NULL) < 0)
            die("mount: cannot bind %s at %s", arg, target);
        if (bits && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | bits, NULL) < 0)
            die("mount: cannot remount the bind at %s", target);
    } else if (strcmp(op, "beneath") == 0) {
        struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
        /* the last "//": neither an allowed prefix nor a spec path has one (the prefix "/" makes "///") */
        const char *sep = NULL, *at = arg;
        char prefix[4096], fdpath[64];
        int dfd, fd;

        while ((at = strstr(at, "//")) != NULL)
            sep = at++;

        if (!sep || (size_t)(sep - arg) >= sizeof prefix) {
            errno = EINVAL;
            die("mount: %s is not <prefix>//<path>", arg);
        }
        memcpy(prefix, arg, (size_t)(sep - arg));
        prefix[sep - arg] = '\0';
        if (!prefix[0])
            strcpy(prefix, "/");
        if ((dfd = open(prefix, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
            die("mount: cannot open the allowed mount source %s", prefix);
        fd = (int)syscall(SYS_openat2, dfd, sep[2] ? sep + 2 : ".", &how, sizeof how);
        if (fd < 0)
            die("mount: cannot resolve %s beneath %s without a symlink", sep + 2, prefix);
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
        if (mount(fdpath, target, NULL, MS_BIND, NULL) < 0)
            die("mount: cannot bind %s/%s at %s", prefix, sep + 2, target);
        close(fd);
        close(dfd);
        if (bits && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | bits, NULL) < 0)
            die("mount: cannot remount the bind at %s", target);
    } else if (strcmp(op, "tmpfs") == 0 || strcmp(op, "devpts") == 0 || strcmp(op, "overlay") == 0) {
        if (mount(op, target, op, bits, strcmp(arg, "-") == 0 ? NULL : arg) < 0)
            die("mount: cannot mount %s at %s", op, target);
    } else if (strcmp(op, "mkdir") == 0) {
        if (mkdir(target, (mode_t)strtoul(arg, NULL, 8)) < 0 && errno != EEXIST)
            die("mount: cannot make the directory %s", target);
    } else if (strcmp(op, "file") == 0) {
        int fd = open(target, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);

        if (fd < 0)
            die("mount: cannot make the file %s", target);
        close(fd);
    } else if (strcmp(op, "symlink") == 0) {
        if (symlink(arg, target) < 0 && errno != EEXIST)
            die("mount: cannot make the symlink %s", target);
    } else {
        errno = EINVAL;
        die("mount: unknown operation \"%s\"", op);
    }
}

/*
 * Copies the command out of argv, then overwrites argv's strings in place with "jailinit":
 * the jail can read /proc/1/cmdline, and the host paths in it are none of its business.
 */
static char **take_command(int argc, char **argv, int first)
{
    char **cmd = calloc((size_t)(argc - first + 1), sizeof *cmd);
    char *end = argv[argc - 1] + strlen(argv[argc - 1]);
    int i;

    if (!cmd)
        die("out of memory");
    for (i = first; i < argc; i++)
        if (!(cmd[i - first] = strdup(argv[i])))
            die("out of memory");
    memset(argv[0], 0, (size_t)(end - argv[0]));
    strncpy(argv[0], "jailinit", (size_t)(end - argv[0]));
    return cmd;
}

/* Signals only interrupt sigwaitinfo(); the handler exists so that pid 1 receives them. */
static void noop(int sig)
{
    (void)sig;
}

static int status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return EXIT_SETUP;
}

/* `jailinit --enter <pid> -- command...` (see the header). */
static int enter_jail(int argc, char **argv)
{
    static const char *const kinds[] = { "ipc", "uts", "net", "pid", "mnt" };
    int fds[5], root_fd, status;
    unsigned long long bounding;
    size_t i;
    char path[64];
    char *end;
    long pid;
    pid_t child;

    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: jailinit --enter <pid> -- <command> [args...]\n");
        return EXIT_SETUP;
    }
    errno = 0;
    pid = strtol(argv[2], &end, 10);
    if (errno || *end || pid < 1)
        die("not a pid: %s", argv[2]);
    /* the command never gets more than the jail's init has (no CAP_NET_RAW in a netless jail) */
    if (jail_bounding_of(argv[2], &bounding) < 0)
        die("cannot read the capabilities of pid %ld", pid);
    /* every handle first, by the init's /proc entries: after the first setns they mean another namespace */
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(path, sizeof path, "/proc/%ld/ns/%s", pid, kinds[i]);
        if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            die("cannot open %s", path);
    }
    snprintf(path, sizeof path, "/proc/%ld/root", pid);
    if ((root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        die("cannot open %s", path);
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (setns(fds[i], 0) < 0)
            die("cannot join the jail's %s namespace", kinds[i]);
    if (fchdir(root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)
        die("cannot enter the jail's root");
    /* the pid namespace applies to children only */
    child = fork();
    if (child < 0)
        die("cannot fork");
    if (child == 0) {
        drop_privileges(bounding);
        confine();
        execvp(argv[4], &argv[4]);
        fprintf(stderr, "jailinit: cannot run %s: %s\n", argv[4], strerror(errno));
        _exit(EXIT_NOEXEC);
    }
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            die("cannot wait for the command");
    return status_code(status);
}

int main(int argc, char **argv)
{
    const char *exit_file, *root, *hostname, *network;
    struct in_addr vnet_addr, vnet_gw;
    unsigned vnet_prefix;
    char proc_dir[4096];
    char **cmd;
    sigset_t set, none;
    struct sigaction sa;
    pid_t child;
    size_t i;
    int exec_check[2];
    int exec_errno = 0;
    int plan_end, op;

    if ((argc = take_seccomp_option(argc, argv)) < 0) {
        fprintf(stderr, "jailinit: --seccomp must be default or unconfined\n");
        return EXIT_SETUP;
    }
    if (argc > 1 && strcmp(argv[1], "--enter") == 0)
        return enter_jail(argc, argv);

    /* the mount plan: four arguments per op, up to the "--" before the command */
    for (plan_end = 5; plan_end < argc && strcmp(argv[plan_end], "--") != 0; plan_end += 4)
        ;
    if (plan_end + 1 >= argc) {
        fprintf(stderr, "usage: jailinit <exit-code-file> <root> <hostname> <inherit|none> [OP ARG TARGET FLAGS]... -- <command> [args...]\n");
        return EXIT_SETUP;
    }
    {
        struct stat st;

        if (fstat(3, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) && fcntl(3, F_SETFD, FD_CLOEXEC) == 0)
            report_fd = 3;
    }
    exit_file = argv[1];
    root = argv[2];
    hostname = argv[3];
    network = argv[4];
    if (strcmp(network, "inherit") != 0 && strcmp(network, "none") != 0 &&
        !(strncmp(network, "vnet:", 5) == 0 && vnet_parse(network, &vnet_addr, &vnet_prefix, &vnet_gw))) {
        fprintf(stderr, "jailinit: network mode must be inherit, none or vnet:ADDRESS/PREFIX:GATEWAY, not \"%s\"\n", network);
        return EXIT_SETUP;
    }

    /*
     * Block the signals we handle first of all: pid 1 of a pid namespace drops a signal whose
     * disposition is the default, but a blocked one stays pending. So a SIGTERM that arrives
     * during the setup below is forwarded to the command as soon as it runs. The driver waits
     * for this mask (in /proc/<pid>/status) before it considers the jail started.
     */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (i = 0; i < NFORWARDED; i++)
        sigaddset(&set, forwarded[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        die("cannot block signals");
    for (i = 0; i < NFORWARDED; i++)
        if (sigaction(forwarded[i], &sa, NULL) < 0)
            die("cannot install a signal handler");
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        die("cannot install a signal handler");

    wait_for_barrier();

    exit_fd = open(exit_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (exit_fd < 0)
        die("cannot open the exit-code file %s", exit_file);

    if (sethostname(hostname, strlen(hostname)) < 0)
        die("cannot set the hostname to %s", hostname);

    for (op = 5; op < plan_end; op += 4)
        mount_op(argv[op], argv[op + 1], argv[op + 2], argv[op + 3]);

    if ((size_t)snprintf(proc_dir, sizeof proc_dir, "%s/proc", root) >= sizeof proc_dir) {
        errno = ENAMETOOLONG;
        die("root path too long");
    }
    if (mkdir(proc_dir, 0555) < 0 && errno != EEXIST)
        die("cannot create %s", proc_dir);
    if (mount("proc", proc_dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die("cannot mount proc at %s", proc_dir);

    /* none and vnet: a namespace of its own (vnet's eth0 is made by the driver before "go") */
    if (strcmp(network, "inherit") != 0)
        loopback_up();
    if (strncmp(network, "vnet:", 5) == 0)
        vnet_up(network);

    /*
     * pivot_root rather than a bare chroot: the new mount namespace began as a copy of the
     * host's whole mount table (every other jail's mounts included); pivoting into the root and
     * detaching the old one drops all of that, so the jail holds only its own mounts and the
     * host's table is out of reach for good. The usual pivot_root(".", ".") idiom: the old root
     * ends up stacked on "/", and detaching "." removes it.
     */
    if (chdir(root) < 0)
        die("cannot enter %s", root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        die("cannot pivot_root into %s", root);
    if (umount2(".", MNT_DETACH) < 0)
        die("cannot detach the host's root");
    if (chroot(".") < 0)
        die("cannot chroot to the new root");
    if (chdir("/") < 0)
        die("cannot chdir to / in the jail");
    harden_proc();
    drop_privileges(strcmp(network, "none") == 0 ? KEPT_CAPS & ~NETLESS_DROPPED_CAPS : KEPT_CAPS);
    confine();
    cmd = take_command(argc, argv, plan_end + 1);

    if (pipe2(exec_check, O_CLOEXEC) < 0)
        die("cannot make the exec check pipe");
    child = fork();
    if (child < 0)
        die("cannot fork the command");
    if (child == 0) {
        close(exec_check[0]);
        sigemptyset(&none);
        sa.sa_handler = SIG_DFL;
        for (i = 0; i < NFORWARDED; i++)
            sigaction(forwarded[i], &sa, NULL);
        sigaction(SIGCHLD, &sa, NULL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(cmd[0], cmd);
        exec_errno = errno;
        fprintf(stderr, "jailinit: cannot run %s: %s\n", cmd[0], strerror(exec_errno));
        if (write(exec_check[1], &exec_errno, sizeof exec_errno) < 0) {
            /* the parent then reports a plain exit 127 */
        }
        _exit(EXIT_NOEXEC);
    }
    /* EOF: the exec succeeded (the pipe was close-on-exec); an int: the exec's errno */
    close(exec_check[1]);
    {
        ssize_t n;

        do
            n = read(exec_check[0], &exec_errno, sizeof exec_errno);
        while (n < 0 && errno == EINTR);
        close(exec_check[0]);
        if (n == (ssize_t)sizeof exec_errno) {
            char line[1200];

            snprintf(line, sizeof line, "failed: cannot run %s: %s\n", cmd[0], strerror(exec_errno));
            report(line);
        } else {
            report("ok\n");
        }
    }

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);

        if (sig < 0)
            continue; /* EINTR */
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);

            if (pid <= 0)
                break;
            if (pid == child) {
                int code = status_code(status);

                write_exit_code(code);
                _exit(code);
            }
        }
    }
}
