/*
 * jailfs: the file side of `jailfleet cp`, run by the agent on the host. It reads or writes files
 * of a running jail through the jail's root as its init sees it (/proc/<pid>/root: the jail's
 * own mounts included) and resolves every path with openat2(RESOLVE_IN_ROOT), so that `..` and
 * every symlink, however a jail process swaps them meanwhile, stay inside the jail's root (the
 * symlink-swap attacks on `docker cp`, CVE-2018-15664; and it never chroots into the jail nor
 * loads anything from it, CVE-2019-14271).
 *
 * usage: jailfs pack   <root> <path> <max-bytes>   the file or tree at <path>, as a stream on stdout
 *        jailfs unpack <root> <path> <max-bytes>   a stream from stdin, written at <path>
 * <root>: on Linux the jail's root directory; on FreeBSD the jail's name or jid (see enter_root).
 *
 * The stream (the CLI reads and writes the same, services/cli/cp-stream.ts) is a sequence of
 * entries, each a header line "<type> <mode-octal> <size> <name-length>\n", the name, and <size>
 * bytes of body; type F (regular file, body = content), D (directory, no body), L (symlink,
 * body = its target); a last line "E 0 0 0\n". Names are relative, '/'-separated, the first
 * component is the top entry's own name. Other kinds of file (devices, fifos, sockets) are left
 * out with a line on stderr.
 *
 * Unpack: when <path> is a directory, entries go inside it under their names; otherwise the top
 * entry becomes <path> itself. Below the resolved starting directory no symlink is followed at
 * all (O_NOFOLLOW on every component): an entry whose way leads through one is refused. A
 * symlink already at an entry's own place is replaced, never written through. A file is written
 * whole or not at all (see write_file): an interrupted or refused cp leaves the old file in place.
 *
 * Exit: 0, 1 with one line on stderr ("jailfs: ..."), 3 when the stream would exceed <max-bytes>.
 * It must never follow a path out of <root>, never write outside it, and never exec anything.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/openat2.h>
#include <sys/syscall.h>
#else
/* FreeBSD: cc -O2 -o jailfs jailfs.c -ljail (installed as /usr/local/libexec/jailfleet/jailfs) */
#include <sys/param.h>
#include <sys/jail.h>
#include <jail.h>
#endif
#ifndef O_PATH
#define O_PATH 0 /* FreeBSD before 14: a plain open of the directory does as well here */
#endif

#define EXIT_TOO_BIG 3

static unsigned long long max_bytes, total;
/* the named temporary file a write has in flight, removed if jailfs dies before renaming it */
static int pending_dir = -1;
static char pending_name[64];

static void drop_pending(void)
{
    if (pending_dir >= 0)
        unlinkat(pending_dir, pending_name, 0);
    pending_dir = -1;
}

static void on_signal(int sig)
{
    drop_pending();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void die(int code, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    fputs("jailfs: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (saved)
        fprintf(stderr, ": %s", strerror(saved));
    fputc('\n', stderr);
    drop_pending();
    exit(code);
}

/* `path` resolved inside the directory `root` as if it were "/" (see the header). */
static int open_in_root(int root, const char *path, int flags)
{
#ifdef __linux__
    struct open_how how;

    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, root, path, &how, sizeof how);
#else
    /* attached to the jail (enter_root): its root is this process's "/", which `..` and every
       symlink, absolute or not, resolve against and never leave */
    return openat(root, path, flags | O_CLOEXEC);
#endif
}

/*
 * The jail's root as a directory fd. Linux: <root> is a path (/proc/<init>/root) and paths are
 * resolved under it by openat2. FreeBSD: <root> is the jail's name or jid; jailfs attaches to
 * the jail (jail_attach(2), as jexec does) so that the kernel itself confines every lookup to the
 * jail's root; everything it loads is loaded by then, and it never execs (CVE-2019-14271).
 */
static int enter_root(const char *root)
{
#ifdef __linux__
    return open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
#else
    int jid = jail_getid(root);

    if (jid < 0) {
        errno = 0;
        die(1, "no jail %s: %s", root, jail_errmsg);
    }
    if (jail_attach(jid) < 0 || chdir("/") < 0)
        die(1, "cannot attach to the jail %s", root);
    return open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
#endif
}

static void count(unsigned long long n)
{
    total += n;
    if (total > max_bytes) {
        errno = 0;
        die(EXIT_TOO_BIG, "more than %llu bytes: over the size limit", max_bytes);
    }
}

static void put(const void *buf, size_t n)
{
    if (fwrite(buf, 1, n, stdout) != n)
        die(1, "cannot write the stream");
}

static void header(char type, mode_t mode, unsigned long long size, const char *name)
{
    if (printf("%c %o %llu %zu\n", type, (unsigned)(mode & 07777), size, strlen(name)) < 0)
        die(1, "cannot write the stream");
    put(name, strlen(name));
}

static void pack_entry(int dir, const char *leaf, const char *name);

/* The regular file open on `fd` as `name`; closes fd. */
static void pack_file(int fd, const char *name)
{
    struct stat st;
    unsigned long long left;
    char buf[65536];

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        die(1, "cannot open %s", name);
    count((unsigned long long)st.st_size);
    header('F', st.st_mode, (unsigned long long)st.st_size, name);
    /* exactly the size announced, even if the file grows or shrinks meanwhile */
    for (left = (unsigned long long)st.st_size; left > 0;) {
        ssize_t n = read(fd, buf, left < sizeof buf ? (size_t)left : sizeof buf);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            memset(buf, 0, sizeof buf);
            n = (ssize_t)(left < sizeof buf ? left : sizeof buf);
        }
        put(buf, (size_t)n);
        left -= (unsigned long long)n;
    }
    close(fd);
}

/* Every entry of the directory `fd` (which pack_entry owns), under `name`. */
static void pack_dir(int fd, const char *name)
{
    DIR *d = fdopendir(fd);
    struct dirent *e;

    if (!d)
        die(1, "cannot read the directory %s", name);
    while ((errno = 0, e = readdir(d)) != NULL) {
        char *sub;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (asprintf(&sub, "%s/%s", name, e->d_name) < 0)
            die(1, "out of memory");
        pack_entry(dirfd(d), e->d_name, sub);
        free(sub);
    }
    if (errno)
        die(1, "cannot read the directory %s", name);
    closedir(d);
}

/* Writes the file `leaf` of directory `dir` (never followed when it is a symlink) as `name`. */
static void pack_entry(int dir, const char *leaf, const char *name)
{
    struct stat st;

    if (fstatat(dir, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
        die(1, "cannot stat %s", name);
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(dir, leaf, target, sizeof target);

        if (n < 0)
            die(1, "cannot read the symlink %s", name);
        count((unsigned long long)n);
        header('L', 0777, (unsigned long long)n, name);
        put(target, (size_t)n);
    } else if (S_ISDIR(st.st_mode)) {
        int fd = openat(dir, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0)
            die(1, "cannot open the directory %s", name);
        header('D', st.st_mode, 0, name);
        pack_dir(fd, name);
    } else if (S_ISREG(st.st_mode)) {
        int fd = openat(dir, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

        if (fd < 0)
            die(1, "cannot open %s", name);
        pack_file(fd, name);
    } else {
        fprintf(stderr, "jailfs: %s is not a file, a directory or a symlink: left out\n", name);
    }
}

/* The last component of `path` ("." for "/"). */
static const char *last_name(const char *path, char *out, size_t size)
{
    size_t end = strlen(path), start;

    while (end > 0 && path[end - 1] == '/')
        end--;
    start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    if (end == start || end - start >= size)
        return ".";
    memcpy(out, path + start, end - start);
    out[end - start] = '\0';
    return out;
}

static void pack(int root, const char *path)
{
    char leaf[NAME_MAX + 1];
    const char *name = last_name(path, leaf, sizeof leaf);
    struct stat st;
    int fd = open_in_root(root, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);

    if (fd < 0 || fstat(fd, &st) < 0)
        die(1, "%s", path);
    if (S_ISDIR(st.st_mode)) {
        header('D', st.st_mode, 0, name);
        pack_dir(fd, name);
    } else if (S_ISREG(st.st_mode)) {
        pack_file(fd, name);
    } else {
        errno = 0;
        die(1, "%s is not a file or a directory", path);
    }
}

/* Reads exactly n bytes of the stream. */
static void take(void *buf, size_t n)
{
    if (n && fread(buf, 1, n, stdin) != n) {
        errno = 0;
        die(1, "the stream ended early");
    }
}

/*
 * Opens the directory that holds the entry `name` (a path below `base`), walking each component
 * with O_NOFOLLOW, and returns it with the leaf in *leaf.
 */
static int parent_of(int base, char *name, char **leaf)
{
    char *slash = strrchr(name, '/'), *comp, *save = NULL;
    int fd = dup(base);

    if (fd < 0)
        die(1, "dup");
    if (!slash) {
        *leaf = name;
        return fd;
    }
    *slash = '\0';
    for (comp = strtok_r(name, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
        int next;

        if (strcmp(comp, "..") == 0 || strcmp(comp, ".") == 0) {
            errno = 0;
            die(1, "entry name with %s refused", comp);
        }
        next = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0)
            die(1, "%s: not a directory of the jail (a symlink is never followed here)", comp);
        close(fd);
        fd = next;
    }
    *leaf = slash + 1;
    return fd;
}

/*
 * Writes the next `size` bytes of the stream as the file `leaf` of `dir`, all at once or not at
 * all: the bytes go into an unnamed file (O_TMPFILE) that is linked under a temporary name and
 * renamed over `leaf` only when complete, so a cp that is interrupted or refused halfway leaves
 * the old file (or none), never a partial one. A filesystem without O_TMPFILE gets a named
 * temporary file, removed by die() and on SIGTERM/SIGINT/SIGHUP/SIGPIPE (only SIGKILL can leave it).
 */
static void write_file(int dir, const char *leaf, unsigned mode, unsigned long long size, char *buf, size_t bufsize)
{
    char tmp[64];
    struct stat st;
    unsigned long long left;
#if defined(O_TMPFILE) && !defined(JAILFS_NO_TMPFILE)
    int fd = openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
#else
    int fd = -1; /* FreeBSD has no unnamed files: a named one, removed if jailfs dies */
#endif
    int named = fd < 0;

    snprintf(tmp, sizeof tmp, ".jailfs-%ld", (long)getpid());
    if (named) {
        fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            pending_dir = dir;
            snprintf(pending_name, sizeof pending_name, "%s", tmp);
        }
    }
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        die(1, "cannot write %s", leaf);
    for (left = size; left > 0;) {
        size_t n = left < bufsize ? (size_t)left : bufsize;

        take(buf, n);
        for (size_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                die(1, "cannot write %s", leaf);
            off += (size_t)w;
        }
        left -= n;
    }
    if (fchmod(fd, mode & 07777) < 0)
        die(1, "cannot finish %s", leaf);
#if defined(O_TMPFILE) && !defined(JAILFS_NO_TMPFILE)
    if (!named) {
        /* AT_EMPTY_PATH links the open file itself (the agent's root has CAP_DAC_READ_SEARCH) */
        if (linkat(fd, "", dir, tmp, AT_EMPTY_PATH) < 0)
            die(1, "cannot finish %s", leaf);
        pending_dir = dir;
        snprintf(pending_name, sizeof pending_name, "%s", tmp);
    }
#endif
    if (close(fd) < 0 || renameat(dir, tmp, dir, leaf) < 0)
        die(1, "cannot finish %s", leaf);
    pending_dir = -1;
}

static void unpack(int root, const char *path)
{
    char leafbuf[NAME_MAX + 1];
    const char *rename_to = NULL;
    int base = open_in_root(root, path, O_PATH | O_DIRECTORY);
    char line[128], buf[65536];

    if (base < 0) {
        /* not a directory: the top entry becomes <path>, in its parent */
        char *parent = strdup(path), *slash;

        if (!parent)
            die(1, "out of memory");
        slash = strrchr(parent, '/');
        if (slash)
            slash[slash == parent ? 1 : 0] = '\0';
        base = open_in_root(root, slash ? parent : ".", O_PATH | O_DIRECTORY);
        if (base < 0)
            die(1, "%s: its directory does not exist in the jail", path);
        rename_to = last_name(path, leafbuf, sizeof leafbuf);
        free(parent);
    }
    for (;;) {
        char type, *name, *leaf, *rest, *full;
        unsigned mode;
        unsigned long long size;
        size_t len;
        int dir;

        if (!fgets(line, sizeof line, stdin) || sscanf(line, "%c %o %llu %zu", &type, &mode, &size, &len) != 4 || len > 4096) {
            errno = 0;
            die(1, "the stream is not a jailfleet cp stream");
        }
        if (type == 'E')
            break;
        name = malloc(len + 1);
        if (!name)
            die(1, "out of memory");
        take(name, len);
        name[len] = '\0';
        if (len == 0 || name[0] == '/' || memchr(name, '\0', len)) {
            errno = 0;
            die(1, "entry name refused");
        }
        count(type == 'D' ? 0 : size);
        full = name;
        if (rename_to) {
            /* the top component becomes the destination's own name */
            rest = strchr(name, '/');
            if (asprintf(&full, "%s%s", rename_to, rest ? rest : "") < 0)
                die(1, "out of memory");
            free(name);
        }
        dir = parent_of(base, full, &leaf);
        if (strcmp(leaf, "..") == 0 || strcmp(leaf, ".") == 0 || leaf[0] == '\0') {
            errno = 0;
            die(1, "entry name refused");
        }
        if (type == 'D') {
            struct stat st;
            int fd;

            if (mkdirat(dir, leaf, 0700) < 0 && errno != EEXIST)
                die(1, "cannot make the directory %s", leaf);
            fd = openat(dir, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 || fstat(fd, &st) < 0 || fchmod(fd, mode & 07777) < 0)
                die(1, "%s: not a directory", leaf);
            close(fd);
        } else if (type == 'F' || type == 'L') {
            struct stat st;

            if (fstatat(dir, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && (S_ISLNK(st.st_mode) || type == 'L') && !S_ISDIR(st.st_mode))
                unlinkat(dir, leaf, 0);
            if (type == 'L') {
                char *target = malloc(size + 1);

                if (!target || size > PATH_MAX)
                    die(1, "symlink target too long");
                take(target, size);
                target[size] = '\0';
                if (symlinkat(target, dir, leaf) < 0)
                    die(1, "cannot make the symlink %s", leaf);
                free(target);
            } else {
                write_file(dir, leaf, mode, size, buf, sizeof buf);
            }
        } else {
            errno = 0;
            die(1, "the stream is not a jailfleet cp stream");
        }
        close(dir);
        free(full);
    }
}

int main(int argc, char **argv)
{
    int root;
    char *end;

    if (argc != 5 || (strcmp(argv[1], "pack") != 0 && strcmp(argv[1], "unpack") != 0)) {
        errno = 0;
        die(1, "usage: jailfs pack|unpack <root> <path> <max-bytes>");
    }
    max_bytes = strtoull(argv[4], &end, 10);
    if (*end) {
        errno = 0;
        die(1, "max-bytes: not a number");
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGHUP, on_signal);
    signal(SIGPIPE, on_signal);
    root = enter_root(argv[2]);
    if (root < 0)
        die(1, "cannot open the jail's root %s", argv[2]);
    if (strcmp(argv[1], "pack") == 0) {
        pack(root, argv[3]);
        if (printf("E 0 0 0\n") < 0 || fflush(stdout) != 0)
            die(1, "cannot write the stream");
    } else {
        unpack(root, argv[3]);
    }
    return 0;
}
