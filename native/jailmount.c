/*
 * jailmount: the linux driver's mount and unmount steps in one process.
 *
 * usage: jailmount OP... where every OP is four arguments:
 *   bind   <source> <target> <flags>   bind mount; flags: ro, private, unbindable, nosuid, nodev, noexec
 *   tmpfs  <options> <target> <flags>  a tmpfs with the given data options (e.g. mode=1777,size=1m)
 *   devpts <options> <target> <flags>  a new devpts instance
 *   umount -         <target> -        unmount; a busy mount is detached (lazy) instead
 * "-" stands for no options / no flags.
 *
 * Why: mount(8) is one process per call and a jail needs about a dozen; every call spawned from
 * the agent (a large Node process) costs far more than the syscall itself. This does the same
 * syscalls mount(8) makes for these cases (bind, then remount for read-only, then the propagation
 * change), in order, and stops at the first failure with one line on stderr naming the operation.
 *
 * It never runs anything, never resolves or creates paths (the driver has checked and made every
 * target inside the jail's root before calling), and takes no input but its argv.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

struct flag {
    const char *name;
    unsigned long bits;
};

static const struct flag remount_flags[] = {
    {"ro", MS_RDONLY}, {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC},
};

static int fail(const char *op, const char *target, const char *what)
{
    fprintf(stderr, "jailmount: %s %s: %s: %s\n", op, target, what, strerror(errno));
    return 1;
}

/* Parses "ro,private,..." into remount flags and a propagation type; returns -1 on an unknown flag. */
static int parse_flags(const char *spec, unsigned long *remount, unsigned long *propagation)
{
    char buf[256];
    char *tok, *save = NULL;
    size_t i;

    *remount = 0;
    *propagation = 0;
    if (strcmp(spec, "-") == 0)
        return 0;
    if (strlen(spec) >= sizeof buf)
        return -1;
    strcpy(buf, spec);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int known = 0;

        for (i = 0; i < sizeof remount_flags / sizeof remount_flags[0]; i++) {
            if (strcmp(tok, remount_flags[i].name) == 0) {
                *remount |= remount_flags[i].bits;
                known = 1;
            }
        }
        if (strcmp(tok, "private") == 0) {
            *propagation = MS_PRIVATE;
            known = 1;
        } else if (strcmp(tok, "unbindable") == 0) {
            *propagation = MS_UNBINDABLE;
            known = 1;
        }
        if (!known)
            return -1;
    }
    return 0;
}

static int do_op(const char *op, const char *arg, const char *target, const char *flags)
{
    unsigned long remount, propagation;

    if (parse_flags(flags, &remount, &propagation) < 0) {
        fprintf(stderr, "jailmount: %s %s: unknown flags \"%s\"\n", op, target, flags);
        return 1;
    }
    if (strcmp(op, "umount") == 0) {
        if (umount2(target, UMOUNT_NOFOLLOW) == 0)
            return 0;
        if (errno == EBUSY && umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
            return 0;
        return fail(op, target, "cannot unmount");
    }
    if (strcmp(op, "bind") == 0) {
        if (mount(arg, target, NULL, MS_BIND, NULL) < 0)
            return fail(op, target, "cannot bind");
        /* a bind keeps the source's flags; read-only and the others need a remount of the bind */
        if (remount && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | remount, NULL) < 0)
            return fail(op, target, "cannot remount the bind");
    } else if (strcmp(op, "tmpfs") == 0 || strcmp(op, "devpts") == 0) {
        const char *data = strcmp(arg, "-") == 0 ? NULL : arg;

        if (mount(op, target, op, remount, data) < 0)
            return fail(op, target, "cannot mount");
    } else {
        fprintf(stderr, "jailmount: unknown operation \"%s\"\n", op);
        return 1;
    }
    if (propagation && mount(NULL, target, NULL, propagation, NULL) < 0)
        return fail(op, target, "cannot change propagation");
    return 0;
}

int main(int argc, char **argv)
{
    int i;

    if (argc < 5 || (argc - 1) % 4 != 0) {
        fprintf(stderr, "usage: jailmount {bind|tmpfs|devpts|umount} <source|options> <target> <flags> ...\n");
        return 2;
    }
    for (i = 1; i < argc; i += 4) {
        if (do_op(argv[i], argv[i + 1], argv[i + 2], argv[i + 3]) != 0)
            return 1;
    }
    return 0;
}
