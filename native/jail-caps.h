/*
 * The capabilities a jail keeps, and the one way to cut a process down to them: used by the jail
 * init (native/jailinit.c) for the jail's pid 1 and by the session helper (native/jailsession.c)
 * for a command run inside a jail, so the two can never drift apart. Linux only. It only takes
 * capabilities away; it never reports by itself (each program says so in its own words).
 */
#ifndef JAILFLEET_JAIL_CAPS_H
#define JAILFLEET_JAIL_CAPS_H

#include <errno.h>
#include <stdio.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CAPBIT(c) (1ULL << (c))
/*
 * Docker's default set without CAP_MKNOD and CAP_SYS_CHROOT (the chroot-again escape). The
 * driver's exec path (setpriv in services/agent/drivers/linux.ts) keeps the same list; the
 * tests compute the mask from it: 0xa00025fb.
 */
#define KEPT_CAPS                                                                              \
    (CAPBIT(CAP_CHOWN) | CAPBIT(CAP_DAC_OVERRIDE) | CAPBIT(CAP_FOWNER) | CAPBIT(CAP_FSETID) |  \
     CAPBIT(CAP_KILL) | CAPBIT(CAP_SETGID) | CAPBIT(CAP_SETUID) | CAPBIT(CAP_SETPCAP) |       \
     CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_NET_RAW) | CAPBIT(CAP_AUDIT_WRITE) |           \
     CAPBIT(CAP_SETFCAP))

/*
 * A jail with no network of its own (`network: none`) keeps no CAP_NET_RAW either: a raw
 * socket there could only ever see its loopback, and an escape that reaches the host's network
 * would find no raw socket to use.
 */
#define NETLESS_DROPPED_CAPS CAPBIT(CAP_NET_RAW)

/*
 * The bounding set of process `pid` (its /proc/<pid>/status CapBnd line), read before joining a
 * jail: a command run inside a jail keeps KEPT_CAPS & the jail init's bounding set, so it is
 * never more capable than the jail's own command. Returns 0, or -1 with errno set.
 */
static int jail_bounding_of(const char *pid, unsigned long long *mask)
{
    char path[64], line[256];
    FILE *f;
    int found = 0;

    snprintf(path, sizeof path, "/proc/%s/status", pid);
    if (!(f = fopen(path, "re")))
        return -1;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "CapBnd: %llx", mask) == 1;
    fclose(f);
    if (!found) {
        errno = ENODATA;
        return -1;
    }
    return 0;
}

/*
 * Cuts this process down to `kept` (KEPT_CAPS or less) for good: the bounding set (up to the last capability the
 * kernel knows: PR_CAPBSET_READ says EINVAL past it), the ambient set, the permitted, effective
 * and inheritable sets, then no_new_privs. Fork and exec pass it all on. Returns 0, or -1 with
 * errno set and `*what` naming the step that failed (`*cap` the capability, where one is meant).
 */
static int jail_drop_caps(unsigned long long kept_caps, const char **what, unsigned long *cap)
{
    struct __user_cap_header_struct hdr;
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    int i;

    for (*cap = 0;; (*cap)++) {
        int r = prctl(PR_CAPBSET_READ, *cap, 0, 0, 0);

        if (r < 0 && errno == EINVAL)
            break;
        if (r < 0)
            return *what = "cannot read capability %lu of the bounding set", -1;
        if (*cap >= 64) {
            errno = ERANGE;
            return *what = "capability %lu is beyond what this build knows", -1;
        }
        if (r == 1 && !(kept_caps & KEPT_CAPS & CAPBIT(*cap)) && prctl(PR_CAPBSET_DROP, *cap, 0, 0, 0) < 0)
            return *what = "cannot drop capability %lu from the bounding set", -1;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return *what = "cannot clear the ambient capabilities", -1;

    memset(&hdr, 0, sizeof hdr);
    memset(data, 0, sizeof data);
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    hdr.pid = 0;
    if (syscall(SYS_capget, &hdr, data) < 0)
        return *what = "cannot read the capabilities", -1;
    for (i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        __u32 kept = (__u32)((kept_caps & KEPT_CAPS) >> (32 * i));

        data[i].permitted &= kept;
        data[i].effective &= kept;
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &hdr, data) < 0)
        return *what = "cannot drop the capabilities", -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return *what = "cannot set no_new_privs", -1;
    return 0;
}

#endif
