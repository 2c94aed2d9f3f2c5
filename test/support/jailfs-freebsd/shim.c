/*
 * A Linux stand-in for FreeBSD's libjail, to run native/jailfs.c's FreeBSD code path here
 * (test/integration/jailfs-attach.test.ts): jail_attach(2) becomes chroot(2) into
 * $FAKE_JAIL_ROOT, which confines lookups the same way for what jailfs does (one process, no
 * second chroot, no fd kept outside). Never built into anything but that test's binary.
 */
#include <stdlib.h>
#include <unistd.h>

char jail_errmsg[256];

int jail_getid(const char *name)
{
    (void)name;
    return getenv("FAKE_JAIL_ROOT") ? 1 : -1;
}

int jail_attach(int jid)
{
    (void)jid;
    return chroot(getenv("FAKE_JAIL_ROOT"));
}
