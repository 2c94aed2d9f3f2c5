/* stand-in for FreeBSD <sys/jail.h>, for the Linux test build of jailfs.c */
int jail_attach(int);
