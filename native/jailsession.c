/*
 * jailsession: one interactive or streaming command inside a running jail (`jailfleet exec`,
 * `jailfleet console`), started by the agent with pipes on fds 0, 1, 2 and a control pipe on fd 3.
 *
 * usage: jailsession [--target PID] [--seccomp default|unconfined] [--cgroup FILE]... [--tty ROWS COLS] -- <command> [args...]
 *
 *   --target PID   (linux) join the jail whose init has host pid PID: its ipc, uts, net, pid and
 *                  mount namespaces and its root, the way nsenter does, but with the pseudo-
 *                  terminal opened AFTER entering, from the jail's own devpts, so that `tty` in
 *                  the jail names a /dev/pts device the jail can see.
 *   --cgroup FILE  (linux) a cgroup.procs file this process joins first: the command counts
 *                  against the jail's cpu, memory and pids limits like the jail's own command.
 *   --seccomp M   (linux, with --target) the jail's syscall filter, as its init loads it
 *                  (native/jail-seccomp.h): "default" unless the jail's spec says "unconfined".
 *   --tty R C      a pseudo-terminal of R rows and C columns: the command's stdin, stdout and
 *                  stderr and controlling terminal; this process relays fd 0 to it and its
 *                  output to fd 1. Without it, the command inherits fds 0, 1 and 2 as they are.
 *
 * fd 3 carries control lines from the agent: "w ROWS COLS" (the window size changed; the kernel
 * then sends SIGWINCH to the terminal's foreground group) and "k SIGNO" (a signal for the
 * foreground group of the terminal, or the command's group without one). Its end (the agent
 * closed it, or died) ends the session: the command's group gets SIGKILL.
 *
 * The command runs in its own session, its capabilities cut to the jail's (KEPT_CAPS and no more than its init's bounding set, the same
 * set as native/jailinit.c), no_new_privs set, and the jail's seccomp filter loaded last. This process stays outside the jail's pid
 * namespace (setns(CLONE_NEWPID) moves only children), so nothing in the jail can see or signal
 * it. On SIGTERM or SIGHUP (the agent ends the session) the command's group gets SIGKILL.
 *
 * It exits with the command's exit code (128 + signal when killed); its own failures: 125 setup,
 * 126 hardening, 127 command not runnable, each with one line on stderr. It must never run
 * anything through a shell, never open a path of the jail before it is chrooted into the jail,
 * and never hand the command a capability the jail's own command does not have.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/capability.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#define EXIT_SETUP 125
#define EXIT_HARDEN 126
#define EXIT_NOEXEC 127
#define MAX_CGROUPS 8

static pid_t child = -1;
static int sigchld_pipe[2] = {-1, -1};
static volatile sig_atomic_t ending = 0;

static void die(int code, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    fputs("jailsession: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (saved)
        fprintf(stderr, ": %s", strerror(saved));
    fputc('\n', stderr);
    _exit(code);
}

#ifdef __linux__
#include "jail-caps.h"
#include "jail-seccomp.h"

/* The jail's capabilities and no more, for good (jail-caps.h, as the jail's init). */
static void drop_privileges(unsigned long long kept)
{
    const char *what = "";
    unsigned long cap = 0;

    if (jail_drop_caps(kept, &what, &cap) < 0)
        die(EXIT_HARDEN, what, cap);
}

/* The jail's seccomp filter (jail-seccomp.h), last before exec, unless the jail has none. */
static void confine(int seccomp_default)
{
    const char *what = "";

    if (seccomp_default && jail_load_seccomp(&what) < 0)
        die(EXIT_HARDEN, "%s", what);
}

/* Joins the cgroups, then the namespaces and the root of the jail whose init is `pid`. */
static void enter_jail(const char *pid, char **cgroups, int ncgroups, unsigned long long *bounding)
{
    static const char *const ns[] = {"ipc", "uts", "net", "pid", "mnt"};
    int fds[5], root, i;
    char path[64], me[32];

    for (i = 0; i < ncgroups; i++) {
        int fd = open(cgroups[i], O_WRONLY | O_CLOEXEC);
        int n = snprintf(me, sizeof me, "%d\n", (int)getpid());

        if (fd < 0 || write(fd, me, (size_t)n) != n)
            die(EXIT_SETUP, "cannot join the cgroup %s", cgroups[i]);
        close(fd);
    }
    /* the command never gets more than the jail's init has (no CAP_NET_RAW in a netless jail) */
    if (jail_bounding_of(pid, bounding) < 0)
        die(EXIT_SETUP, "cannot read the capabilities of pid %s", pid);
    /* every fd first: after setns(mnt) /proc is the jail's */
    for (i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "/proc/%s/ns/%s", pid, ns[i]);
        if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            die(EXIT_SETUP, "cannot open %s", path);
    }
    snprintf(path, sizeof path, "/proc/%s/root", pid);
    if ((root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        die(EXIT_SETUP, "cannot open %s", path);
    for (i = 0; i < 5; i++) {
        if (setns(fds[i], 0) < 0)
            die(EXIT_SETUP, "cannot join the %s namespace of pid %s", ns[i], pid);
        close(fds[i]);
    }
    if (fchdir(root) < 0 || chroot(".") < 0 || chdir("/") < 0)
        die(EXIT_SETUP, "cannot enter the root of pid %s", pid);
    close(root);
}
#endif

/* A new pseudo-terminal: the master, and the slave opened through it (never by a path the jail could swap). */
static void open_pty(int *master, int *slave, unsigned short rows, unsigned short cols)
{
    struct winsize ws = {.ws_row = rows, .ws_col = cols};

#ifdef __linux__
    /* the jail's own devpts instance (mounted with ptmxmode=0666 by its mount plan) */
    *master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0)
        die(EXIT_SETUP, "cannot open /dev/pts/ptmx");
    if (unlockpt(*master) < 0)
        die(EXIT_SETUP, "cannot unlock the pseudo-terminal");
    *slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
#else
    *master = posix_openpt(O_RDWR | O_NOCTTY);
    if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0)
        die(EXIT_SETUP, "cannot open a pseudo-terminal");
    *slave = open(ptsname(*master), O_RDWR | O_NOCTTY);
#endif
    if (*slave < 0)
        die(EXIT_SETUP, "cannot open the pseudo-terminal's slave");
    if (ioctl(*master, TIOCSWINSZ, &ws) < 0)
        die(EXIT_SETUP, "cannot set the window size");
}

static void on_sigchld(int sig)
{
    int saved = errno;

    (void)sig;
    if (write(sigchld_pipe[1], "c", 1) < 0) {
        /* the pipe is full: a wake-up is pending anyway */
    }
    errno = saved;
}

static void on_end(int sig)
{
    (void)sig;
    ending = 1;
    if (child > 0)
        kill(-child, SIGKILL);
}

/* Writes all of buf to fd (blocking: the agent's reading pace is the flow control). */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (errno == EAGAIN) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                poll(&p, 1, -1);
                continue;
            }
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One control line from the agent (see the header). */
static void control(const char *line, int master)
{
    unsigned rows, cols;
    int signo;

    if (sscanf(line, "w %u %u", &rows, &cols) == 2 && master >= 0) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        ioctl(master, TIOCSWINSZ, &ws);
    } else if (sscanf(line, "k %d", &signo) == 1 && signo > 0 && signo < 65) {
        pid_t group = master >= 0 ? tcgetpgrp(master) : -1;
        kill(group > 0 ? -group : -child, signo);
    }
}

int main(int argc, char **argv)
{
    char *cgroups[MAX_CGROUPS];
    int ncgroups = 0, i, master = -1, slave = -1, tty = 0, status = 0, ctl = 3, in = 0, seccomp_default = 1;
    unsigned long long bounding = 0;
    const char *target = NULL;
    unsigned rows = 24, cols = 80;
    char ctlbuf[256], buf[65536];
    size_t ctllen = 0;
    struct sigaction sa;

    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--target") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (strcmp(argv[i], "--seccomp") == 0 && i + 1 < argc &&
                 (strcmp(argv[i + 1], "default") == 0 || strcmp(argv[i + 1], "unconfined") == 0))
            seccomp_default = strcmp(argv[++i], "default") == 0;
        else if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc && ncgroups < MAX_CGROUPS)
            cgroups[ncgroups++] = argv[++i];
        else if (strcmp(argv[i], "--tty") == 0 && i + 2 < argc) {
            tty = 1;
            rows = (unsigned)strtoul(argv[++i], NULL, 10);
            cols = (unsigned)strtoul(argv[++i], NULL, 10);
        } else {
            errno = 0;
            die(EXIT_SETUP, "unknown argument %s", argv[i]);
        }
    }
    if (i + 1 >= argc) {
        errno = 0;
        die(EXIT_SETUP, "usage: jailsession [--target PID] [--seccomp default|unconfined] [--cgroup FILE]... [--tty ROWS COLS] -- command [args...]");
    }
    argv += i + 1;

    if (target) {
#ifdef __linux__
        enter_jail(target, cgroups, ncgroups, &bounding);
#else
        errno = 0;
        die(EXIT_SETUP, "--target works on linux only (FreeBSD sessions run jexec)");
#endif
    }
    if (fcntl(ctl, F_GETFD) < 0)
        ctl = -1;
    if (tty)
        open_pty(&master, &slave, (unsigned short)rows, (unsigned short)cols);
    if (pipe(sigchld_pipe) < 0)
        die(EXIT_SETUP, "cannot make a pipe");
    fcntl(sigchld_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(sigchld_pipe[1], F_SETFD, FD_CLOEXEC);
    fcntl(sigchld_pipe[1], F_SETFL, O_NONBLOCK);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = on_end;
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    child = fork();
    if (child < 0)
        die(EXIT_SETUP, "cannot fork");
    if (child == 0) {
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        if (setsid() < 0)
            die(EXIT_SETUP, "cannot start a session");
        if (tty) {
            if (ioctl(slave, TIOCSCTTY, 0) < 0)
                die(EXIT_SETUP, "cannot make the pseudo-terminal the controlling terminal");
            if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0)
                die(EXIT_SETUP, "cannot put the pseudo-terminal on fds 0, 1 and 2");
            if (slave > 2)
                close(slave);
        }
        if (ctl >= 0)
            close(ctl);
#ifdef __linux__
        if (target) {
            drop_privileges(bounding);
            confine(seccomp_default);
        }
#else
        (void)seccomp_default;
        (void)bounding;
#endif
        execvp(argv[0], argv);
        die(errno == ENOENT ? EXIT_NOEXEC : 126, "cannot run %s", argv[0]);
    }
    if (slave >= 0)
        close(slave);

    /* relay: fd 0 to the terminal, the terminal to fd 1, control lines from fd 3 */
    for (;;) {
        struct pollfd p[4];
        int n = 0, ip = -1, im = -1, ic = -1, is;

        p[n].fd = sigchld_pipe[0], p[n].events = POLLIN, is = n++;
        if (master >= 0)
            p[n].fd = master, p[n].events = POLLIN, im = n++;
        if (tty && in >= 0)
            p[n].fd = in, p[n].events = POLLIN, ip = n++;
        if (ctl >= 0)
            p[n].fd = ctl, p[n].events = POLLIN, ic = n++;
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            die(EXIT_SETUP, "poll");
        }
        if (p[is].revents) {
            char c;
            if (read(sigchld_pipe[0], &c, 1) < 0) {
                /* nothing to do: waitpid below says whether the command ended */
            }
            if (waitpid(child, &status, WNOHANG) == child)
                break;
        }
        if (im >= 0 && p[im].revents) {
            ssize_t r = read(master, buf, sizeof buf);
            if (r > 0) {
                if (write_all(1, buf, (size_t)r) < 0)
                    on_end(0);
            } else if (r < 0 && errno != EINTR && errno != EAGAIN) {
                /* EIO: every holder of the slave is gone; the command's exit follows */
                close(master);
                master = -1;
            }
        }
        if (ip >= 0 && p[ip].revents) {
            ssize_t r = read(in, buf, sizeof buf);
            if (r > 0) {
                write_all(master, buf, (size_t)r);
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                /* stdin ended: the terminal stays (the command decides when it is done) */
                in = -1;
            }
        }
        if (ic >= 0 && p[ic].revents) {
            ssize_t r = read(ctl, ctlbuf + ctllen, sizeof ctlbuf - 1 - ctllen);
            if (r == 0 || (r < 0 && errno != EINTR)) {
                /* the agent is gone (or ended the session): so is the command */
                ctl = -1;
                on_end(0);
            } else if (r > 0) {
                char *nl;
                ctllen += (size_t)r;
                ctlbuf[ctllen] = '\0';
                while ((nl = strchr(ctlbuf, '\n')) != NULL) {
                    *nl = '\0';
                    control(ctlbuf, master);
                    ctllen -= (size_t)(nl + 1 - ctlbuf);
                    memmove(ctlbuf, nl + 1, ctllen + 1);
                }
                if (ctllen == sizeof ctlbuf - 1)
                    ctllen = 0; /* a line that long is no control line */
            }
        }
    }
    /* what the command wrote just before it ended is still in the terminal */
    if (master >= 0) {
        fcntl(master, F_SETFL, O_NONBLOCK);
        for (;;) {
            ssize_t r = read(master, buf, sizeof buf);
            if (r <= 0)
                break;
            if (write_all(1, buf, (size_t)r) < 0)
                break;
        }
    }
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
