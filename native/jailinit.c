/*
 * jailinit: pid 1 of a jailfleet linux jail.
 *
 * usage: jailinit <exit-code-file> <root> <hostname> <inherit|none> -- <command> [args...]
 *
 * The linux driver starts it as the child of
 *   unshare --pid --fork --mount --uts --ipc [--net] --propagation private -- jailinit ...
 * so it is pid 1 of fresh pid, mount, uts and ipc namespaces. It then:
 *   1. blocks the signals it forwards (see main), then waits for the driver's start barrier: when stdin is a pipe or socket it reads it until
 *      EOF (the driver closes it once it has recorded this process's host pid, so even a
 *      command that exits at once cannot vanish before the driver saw it), then puts
 *      /dev/null on stdin;
 *   2. opens the exit-code file (before chroot: the file lives outside the root);
 *   3. sets the hostname, mounts a fresh proc at <root>/proc, brings "lo" up when the jail
 *      has its own (empty) network namespace;
 *   4. chroots into <root>, blanks its own argv (so /proc/1/cmdline in the jail does not show
 *      the host paths of the root and the exit-code file) and forks the command (execvp,
 *      inherited environment);
 *   5. as init: forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command,
 *      reaps every zombie, and when the command exits writes its status (exit code, or
 *      128 + signal) to the exit-code file and exits with it. Its exit makes the kernel kill
 *      whatever is left in the pid namespace.
 *
 * It must never run anything through a shell and never touch the host outside <root>
 * and the exit-code file. Exit codes of its own: 125 setup failed, 127 command not runnable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_SETUP 125
#define EXIT_NOEXEC 127

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

/* A setup step failed: say which, record 125 and stop. */
static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("jailinit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", strerror(errno));
    write_exit_code(EXIT_SETUP);
    _exit(EXIT_SETUP);
}

/* The start barrier on stdin (see the header), then /dev/null as the command's stdin. */
static void wait_for_barrier(void)
{
    struct stat st;
    char buf[64];
    ssize_t n;
    int fd;

    if (fstat(STDIN_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
        do
            n = read(STDIN_FILENO, buf, sizeof buf);
        while (n > 0 || (n < 0 && errno == EINTR));
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

int main(int argc, char **argv)
{
    const char *exit_file, *root, *hostname, *network;
    char proc_dir[4096];
    char **cmd;
    sigset_t set, none;
    struct sigaction sa;
    pid_t child;
    size_t i;

    if (argc < 7 || strcmp(argv[5], "--") != 0) {
        fprintf(stderr, "usage: jailinit <exit-code-file> <root> <hostname> <inherit|none> -- <command> [args...]\n");
        return EXIT_SETUP;
    }
    exit_file = argv[1];
    root = argv[2];
    hostname = argv[3];
    network = argv[4];
    if (strcmp(network, "inherit") != 0 && strcmp(network, "none") != 0) {
        fprintf(stderr, "jailinit: network mode must be inherit or none, not \"%s\"\n", network);
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

    if ((size_t)snprintf(proc_dir, sizeof proc_dir, "%s/proc", root) >= sizeof proc_dir) {
        errno = ENAMETOOLONG;
        die("root path too long");
    }
    if (mkdir(proc_dir, 0555) < 0 && errno != EEXIST)
        die("cannot create %s", proc_dir);
    if (mount("proc", proc_dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die("cannot mount proc at %s", proc_dir);

    if (strcmp(network, "none") == 0)
        loopback_up();

    if (chroot(root) < 0)
        die("cannot chroot to %s", root);
    if (chdir("/") < 0)
        die("cannot chdir to / in the jail");
    cmd = take_command(argc, argv, 6);

    child = fork();
    if (child < 0)
        die("cannot fork the command");
    if (child == 0) {
        sigemptyset(&none);
        sa.sa_handler = SIG_DFL;
        for (i = 0; i < NFORWARDED; i++)
            sigaction(forwarded[i], &sa, NULL);
        sigaction(SIGCHLD, &sa, NULL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(cmd[0], cmd);
        fprintf(stderr, "jailinit: cannot run %s: %s\n", cmd[0], strerror(errno));
        _exit(EXIT_NOEXEC);
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
