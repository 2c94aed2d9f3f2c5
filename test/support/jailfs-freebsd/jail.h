/* stand-in for FreeBSD <jail.h> (libjail), for the Linux test build of jailfs.c */
extern char jail_errmsg[];
int jail_getid(const char *);
