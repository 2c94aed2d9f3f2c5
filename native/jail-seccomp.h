/*
 * The default seccomp filter of a jail, and the one way to load it: used by the jail init
 * (native/jailinit.c) for the jail's command and by the session helper (native/jailsession.c)
 * for a command run inside a jail, so an exec is never less confined than the jail itself.
 * Linux only, built with libseccomp (link with -lseccomp). It only refuses syscalls; it never
 * reports by itself (each program says so in its own words).
 *
 * Docker's default profile is the anchor, as a deny list (every syscall not named here is
 * allowed, so any userland runs): what lets root in a jail reach the kernel's global state or
 * another process is refused with EPERM. The capabilities the jail keeps (jail-caps.h) already
 * stop most of these; the filter is the second wall, and the only one for what needs no
 * capability at all: a new user namespace (where root gets every capability again), bpf,
 * userfaultfd, perf_event_open, keyctl, io_uring, ptrace.
 *
 * A syscall of another ABI (i386 through int 0x80, x32) is not in the filter's architecture:
 * libseccomp's default for it kills the thread, so no compat entry point slips around the list.
 */
#ifndef JAILFLEET_JAIL_SECCOMP_H
#define JAILFLEET_JAIL_SECCOMP_H

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stddef.h>

/* Refused outright (names libseccomp does not know on this architecture are skipped). */
static const char *const jail_denied_syscalls[] = {
    /* the mount table: a jail's mounts are made for it by its init, before the filter */
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
    /* joining another process's namespaces */
    "setns",
    /* the kernel's keyrings are not namespaced */
    "keyctl", "add_key", "request_key",
    /* kernel programs, counters and tracing */
    "bpf", "perf_event_open", "lookup_dcookie",
    /* a file handle names any inode of the filesystem, past the jail's root (the "shocker" escape) */
    "open_by_handle_at",
    /* other kernels and modules */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module",
    /* a page-fault handler in user space widens every kernel race */
    "userfaultfd",
    /* reading and writing other processes */
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    /* the host's clock */
    "clock_settime", "clock_settime64", "settimeofday", "stime", "adjtimex", "clock_adjtime",
    "clock_adjtime64",
    /* names the jail's init set for it */
    "sethostname", "setdomainname",
    /* the machine itself */
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "iopl", "ioperm", "_sysctl", "nfsservctl", "uselib", "ustat", "vm86", "vm86old",
    /* io_uring runs syscalls the filter never sees */
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    /* notification of the whole filesystem */
    "fanotify_init",
};

/* Namespace flags of clone(2) and unshare(2): refused like Docker refuses them without CAP_SYS_ADMIN. */
static const unsigned long jail_namespace_flags[] = {
    CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWCGROUP,
#ifdef CLONE_NEWTIME
    CLONE_NEWTIME,
#endif
};

#define JAIL_NELEMS(a) (sizeof (a) / sizeof (a)[0])

/*
 * Loads the default filter into this process for good (fork and exec pass it on). Call it
 * last before exec, after the capabilities are dropped (no_new_privs is already set then).
 * Returns 0, or -1 with errno set and `*what` naming the step that failed.
 */
static int jail_load_seccomp(const char **what)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    size_t i;
    int rc = 0;

    if (!ctx) {
        errno = ENOMEM;
        return *what = "cannot make the seccomp filter", -1;
    }
    for (i = 0; i < JAIL_NELEMS(jail_denied_syscalls) && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(jail_denied_syscalls[i]);

        if (nr != __NR_SCMP_ERROR)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    if (rc < 0) {
        seccomp_release(ctx);
        errno = -rc;
        return *what = "cannot add a refused syscall to the seccomp filter", -1;
    }
    /* flags are the first argument of both on every architecture jailfleet runs on (not s390) */
    for (i = 0; i < JAIL_NELEMS(jail_namespace_flags) && rc == 0; i++) {
        scmp_datum_t f = jail_namespace_flags[i];

        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, f, f));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, f, f));
    }
    /*
     * clone3 passes its flags in memory, where a filter cannot look: ENOSYS, as Docker does,
     * makes the C library fall back to clone, whose flags are checked above.
     */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc < 0) {
        seccomp_release(ctx);
        errno = -rc;
        return *what = "cannot add the namespace rules to the seccomp filter", -1;
    }
    rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc < 0) {
        errno = -rc;
        return *what = "cannot load the seccomp filter", -1;
    }
    return 0;
}

#endif
