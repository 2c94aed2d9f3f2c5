/* stand-in for FreeBSD <sys/param.h>: jailfs needs nothing from it on the test build */
