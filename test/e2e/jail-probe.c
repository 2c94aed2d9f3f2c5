/*
 * jail-probe: the escape suite's hands inside a jail (test/e2e/escape.test.ts), for the syscalls
 * busybox has no applet for. Static, so it runs in any jail's root.
 *
 * usage: jail-probe <attempt> [args...]
 *
 * Each attempt makes one escape syscall. It prints "escaped" and exits 0 when the kernel let it
 * through (the test then fails), or prints "refused: <errno name>" and exits 1. It never does
 * more than the one syscall: an attempt that succeeds touches only what the test pointed it at
 * (a scratch file, a throwaway process, a name set straight back), so a broken jail harms nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>

static int verdict(long r)
{
    if (r >= 0) {
        puts("escaped");
        return 0;
    }
    printf("refused: %s\n", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    return 1;
}

int main(int argc, char **argv)
{
    const char *a = argc > 1 ? argv[1] : "";
    const char *arg = argc > 2 ? argv[2] : "";

    if (!strcmp(a, "unshare-user"))
        return verdict(unshare(CLONE_NEWUSER));
    if (!strcmp(a, "clone-user")) {
        /* the raw syscall with CLONE_NEWUSER: the child exits at once if it was made */
        long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);

        if (r == 0)
            _exit(0);
        if (r > 0)
            waitpid((pid_t)r, NULL, 0);
        return verdict(r);
    }
    if (!strcmp(a, "mount-tmpfs"))
        return verdict(mount("tmpfs", arg, "tmpfs", 0, "size=1m"));
    if (!strcmp(a, "mount-proc"))
        return verdict(mount("proc", arg, "proc", 0, NULL));
    if (!strcmp(a, "mount-cgroup"))
        return verdict(mount("cgroup", arg, "cgroup", 0, "rdma,release_agent=/x"));
    if (!strcmp(a, "mknod-disk"))
        /* /dev/loop7 style: block 7:7, a device nobody may use from a jail */
        return verdict(mknod(arg, S_IFBLK | 0600, makedev(7, 7)));
    if (!strcmp(a, "open-by-handle")) {
        /* the "shocker" escape: a handle for inode 2 (a filesystem's root) of the jail's filesystem */
        struct { struct file_handle h; unsigned char bytes[8]; } fh;
        int mfd = open("/", O_RDONLY | O_DIRECTORY);

        memset(&fh, 0, sizeof fh);
        fh.h.handle_bytes = 8;
        fh.h.handle_type = 1;
        fh.bytes[0] = 2;
        return verdict(syscall(SYS_open_by_handle_at, mfd, &fh.h, O_RDONLY));
    }
    if (!strcmp(a, "ptrace"))
        return verdict(ptrace(PTRACE_ATTACH, (pid_t)atoi(arg), 0, 0));
    if (!strcmp(a, "vm-read")) {
        char buf[16];
        struct iovec local = { buf, sizeof buf }, remote = { (void *)0x400000, sizeof buf };

        return verdict(process_vm_readv((pid_t)atoi(arg), &local, 1, &remote, 1, 0));
    }
    if (!strcmp(a, "kill"))
        return verdict(kill((pid_t)atoi(arg), 0));
    if (!strcmp(a, "bpf")) {
        union bpf_attr attr;

        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return verdict(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (!strcmp(a, "perf")) {
        struct perf_event_attr pe;

        memset(&pe, 0, sizeof pe);
        pe.type = PERF_TYPE_SOFTWARE;
        pe.size = sizeof pe;
        pe.config = PERF_COUNT_SW_CPU_CLOCK;
        return verdict(syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
    }
    if (!strcmp(a, "keyctl"))
        /* KEYCTL_GET_KEYRING_ID of the session keyring */
        return verdict(syscall(SYS_keyctl, 0, -3, 0));
    if (!strcmp(a, "userfaultfd"))
        return verdict(syscall(SYS_userfaultfd, O_CLOEXEC));
    if (!strcmp(a, "init-module"))
        /* an empty image: refused before the kernel would look at it, or EINVAL/ENOEXEC after */
        return verdict(syscall(SYS_init_module, "", 0, ""));
    if (!strcmp(a, "settime")) {
        /* sets the clock to what it already reads: harmless if it ever went through */
        struct timespec now;

        clock_gettime(CLOCK_REALTIME, &now);
        return verdict(clock_settime(CLOCK_REALTIME, &now));
    }
    if (!strcmp(a, "sethostname"))
        return verdict(sethostname(arg, strlen(arg)));
    if (!strcmp(a, "raw-socket"))
        return verdict(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(a, "chroot-escape")) {
        /* the seed's escape: chroot into a subdirectory, climb out of it, chroot there */
        int i;

        if (mkdir(arg, 0700) < 0 && errno != EEXIST)
            return verdict(-1);
        if (chroot(arg) < 0)
            return verdict(-1);
        for (i = 0; i < 64; i++)
            if (chdir("..") < 0)
                return verdict(-1);
        return verdict(chroot("."));
    }
    fprintf(stderr, "jail-probe: unknown attempt \"%s\"\n", a);
    return 2;
}
