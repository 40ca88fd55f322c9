#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bytestring.h>

#include "alloc.h"

/* getpwnam_r/getgrnam_r buffers start at sysconf's hint (16 KiB when it gives none) and double
 * on ERANGE (a group listing thousands of members), up to this cap. */
#define SYS_LOOKUP_BUF_DEFAULT (16 * 1024)
#define SYS_LOOKUP_BUF_MAX     (1024 * 1024)

/* A notification waits this long for room in systemd's queue; systemd reads it promptly, so a
 * full queue means something is wrong and the event loop must not hang on it. */
#define SYS_NOTIFY_TIMEOUT_S 1
/* Retries of a send interrupted by a signal before giving up. */
#define SYS_NOTIFY_TRIES 3

static void set_why(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || why_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* ---- systemd notification ------------------------------------------------------------- */

/* notify_address fills |sa| from NOTIFY_SOCKET's value |addr|: "/path" (NUL-terminated in
 * sun_path) or "@name" (abstract: sun_path starts with NUL, the name follows unterminated and
 * the address length says where it ends, as sd_notify(3) does). */
static int notify_address(const char *addr, struct sockaddr_un *sa, socklen_t *out_len, char *why,
                          size_t why_len)
{
    size_t n = strlen(addr);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (addr[0] == '/') {
        if (n > sizeof(sa->sun_path) - 1) {
            set_why(why, why_len,
                    "NOTIFY_SOCKET is a path of %zu bytes, longer than the %zu a socket "
                    "address holds",
                    n, sizeof(sa->sun_path) - 1);
            return 0;
        }
        memcpy(sa->sun_path, addr, n);
        *out_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 1;
    }
    if (addr[0] == '@') {
        if (n - 1 > sizeof(sa->sun_path) - 1) {
            set_why(why, why_len,
                    "NOTIFY_SOCKET is an abstract name of %zu bytes, longer than the %zu a "
                    "socket address holds",
                    n - 1, sizeof(sa->sun_path) - 1);
            return 0;
        }
        memcpy(sa->sun_path + 1, addr + 1, n - 1);
        *out_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return 1;
    }
    /* systemd 253 also hands out "vsock:CID:PORT" to virtual machines; pyroguard runs on hosts
     * and in containers, where it is always a Unix socket. */
    set_why(why, why_len,
            "NOTIFY_SOCKET '%.200s' is not supported: expected an absolute path or '@name'", addr);
    return 0;
}

int sys_notify(const char *state, char *why, size_t why_len)
{
    const struct timeval timeout = {SYS_NOTIFY_TIMEOUT_S, 0};
    struct sockaddr_un sa;
    socklen_t sa_len;
    ssize_t sent = -1;
    int fd, ret = -1;

    size_t state_len = strnlen(state, SYS_NOTIFY_STATE_MAX + 1);
    if (state_len == 0) {
        set_why(why, why_len, "empty notification state");
        return -1;
    }
    if (state_len > SYS_NOTIFY_STATE_MAX) {
        set_why(why, why_len, "notification state longer than %d bytes", SYS_NOTIFY_STATE_MAX);
        return -1;
    }
    const char *addr = getenv("NOTIFY_SOCKET");
    if (addr == NULL || addr[0] == '\0')
        return 0;
    if (!notify_address(addr, &sa, &sa_len, why, why_len))
        return -1;

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_why(why, why_len, "socket(AF_UNIX, SOCK_DGRAM) failed: %s", strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) != 0) {
        set_why(why, why_len, "setsockopt(SO_SNDTIMEO) failed: %s", strerror(errno));
        goto close_socket;
    }
    for (int i = 0; i < SYS_NOTIFY_TRIES; i++) {
        sent = sendto(fd, state, state_len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, sa_len);
        if (sent >= 0 || errno != EINTR)
            break;
    }
    if (sent < 0) {
        int err = errno;
        set_why(why, why_len, "sending to NOTIFY_SOCKET '%.200s' failed: %s", addr,
                err == EAGAIN ? "timed out: systemd is not reading" : strerror(err));
        goto close_socket;
    }
    /* A datagram goes whole or not at all; anything else is not the kernel we know. */
    if ((size_t)sent != state_len) {
        set_why(why, why_len, "sending to NOTIFY_SOCKET '%.200s': %zd of %zu bytes sent", addr,
                sent, state_len);
        goto close_socket;
    }
    ret = 1;
close_socket:
    close(fd);
    return ret;
}

int sys_notify_reloading(char *why, size_t why_len)
{
    struct timespec now;
    char state[64];

    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        set_why(why, why_len, "clock_gettime(CLOCK_MONOTONIC) failed: %s", strerror(errno));
        return -1;
    }
    uint64_t usec = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
    return sys_notify(state, why, why_len);
}

/* ---- privileges ----------------------------------------------------------------------- */

/* parse_id reads a uid or gid written in decimal: digits only, no sign or space, and never
 * 4294967295, which is (uid_t)-1, "leave unchanged" to setresuid and chown. */
static int parse_id(const char *s, uint32_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v >= UINT32_MAX)
            return 0;
    }
    *out = (uint32_t)v;
    return 1;
}

static size_t lookup_buf_size(int sysconf_name)
{
    long hint = sysconf(sysconf_name);
    if (hint <= 0 || hint > SYS_LOOKUP_BUF_MAX)
        return SYS_LOOKUP_BUF_DEFAULT;
    return (size_t)hint;
}

/* not_found says whether a getpwnam_r/getgrnam_r error means "no such entry": glibc returns 0
 * with a NULL result, but getpwnam_r(3) lists these too, and a container without /etc/passwd
 * gets ENOENT; a numeric id must still work there. */
static int not_found(int err)
{
    return err == 0 || err == ENOENT || err == ESRCH || err == EBADF || err == EPERM;
}

/* lookup_user finds |name| in the passwd database: 1 with its uid and primary gid, 0 when there
 * is no such user, -1 (with |why|) when the lookup itself failed. */
static int lookup_user(const char *name, uid_t *out_uid, gid_t *out_gid, char *why, size_t why_len)
{
    size_t size = lookup_buf_size(_SC_GETPW_R_SIZE_MAX);

    for (;;) {
        struct passwd pw, *found = NULL;
        char *buf = pg_malloc(size);
        if (buf == NULL) {
            set_why(why, why_len, "out of memory looking up user '%s'", name);
            return -1;
        }
        int err = getpwnam_r(name, &pw, buf, size, &found);
        if (err == 0 && found != NULL) {
            *out_uid = pw.pw_uid;
            *out_gid = pw.pw_gid;
        }
        free(buf);
        if (err == 0 && found != NULL)
            return 1;
        if (not_found(err))
            return 0;
        if (err == ERANGE && size < SYS_LOOKUP_BUF_MAX) {
            size *= 2;
            continue;
        }
        set_why(why, why_len, "looking up user '%s' failed: %s", name, strerror(err));
        return -1;
    }
}

/* lookup_group is lookup_user for the group database. */
static int lookup_group(const char *name, gid_t *out_gid, char *why, size_t why_len)
{
    size_t size = lookup_buf_size(_SC_GETGR_R_SIZE_MAX);

    for (;;) {
        struct group gr, *found = NULL;
        char *buf = pg_malloc(size);
        if (buf == NULL) {
            set_why(why, why_len, "out of memory looking up group '%s'", name);
            return -1;
        }
        int err = getgrnam_r(name, &gr, buf, size, &found);
        if (err == 0 && found != NULL)
            *out_gid = gr.gr_gid;
        free(buf);
        if (err == 0 && found != NULL)
            return 1;
        if (not_found(err))
            return 0;
        if (err == ERANGE && size < SYS_LOOKUP_BUF_MAX) {
            size *= 2;
            continue;
        }
        set_why(why, why_len, "looking up group '%s' failed: %s", name, strerror(err));
        return -1;
    }
}

/* resolve_user turns |user| into a uid and, when it has a passwd entry, its primary gid
 * (*out_has_gid says which). */
static int resolve_user(const char *user, uid_t *out_uid, gid_t *out_gid, int *out_has_gid,
                        char *why, size_t why_len)
{
    uint32_t id;

    switch (lookup_user(user, out_uid, out_gid, why, why_len)) {
    case 1:
        *out_has_gid = 1;
        return 1;
    case 0:
        break;
    default:
        return 0;
    }
    if (!parse_id(user, &id)) {
        set_why(why, why_len, "no user '%s'", user);
        return 0;
    }
    *out_uid = (uid_t)id;
    *out_has_gid = 0;
    return 1;
}

static int resolve_group(const char *group, gid_t *out_gid, char *why, size_t why_len)
{
    uint32_t id;

    switch (lookup_group(group, out_gid, why, why_len)) {
    case 1:
        return 1;
    case 0:
        break;
    default:
        return 0;
    }
    if (!parse_id(group, &id)) {
        set_why(why, why_len, "no group '%s'", group);
        return 0;
    }
    *out_gid = (gid_t)id;
    return 1;
}

/* has_ids says whether the real, effective and saved ids are all |uid| (unless !check_uid) and
 * all |gid|. */
static int has_ids(int check_uid, uid_t uid, gid_t gid)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0)
        return 0;
    if (check_uid && (ru != uid || eu != uid || su != uid))
        return 0;
    return rg == gid && eg == gid && sg == gid;
}

int sys_resolve_ids(const char *user, const char *group, uid_t *uid, gid_t *gid, char *why,
                    size_t why_len)
{
    int has_gid = 0;
    *uid = geteuid();
    *gid = getegid();
    if (user != NULL && !resolve_user(user, uid, gid, &has_gid, why, why_len))
        return 0;
    if (group != NULL && !resolve_group(group, gid, why, why_len))
        return 0;
    if (user != NULL && group == NULL && !has_gid) {
        set_why(why, why_len,
                "no user named '%s', so as a uid it has no primary group: set the group too", user);
        return 0;
    }
    return 1;
}

int sys_drop_privileges(const char *user, const char *group, char *why, size_t why_len)
{
    uid_t uid = 0;
    gid_t gid = 0;
    int has_gid = 0;

    if (user == NULL && group == NULL)
        return 1;
    if (user != NULL && !resolve_user(user, &uid, &gid, &has_gid, why, why_len))
        return 0;
    if (group != NULL) {
        if (!resolve_group(group, &gid, why, why_len))
            return 0;
        has_gid = 1;
    }
    if (!has_gid) {
        set_why(why, why_len,
                "no user named '%s', so as a uid it has no primary group: set the group too", user);
        return 0;
    }
    const char *what = user != NULL ? "user" : "group";
    const char *name = user != NULL ? user : group;

    if (geteuid() != 0) {
        if (has_ids(user != NULL, uid, gid))
            return 1;
        set_why(why, why_len, "not running as root: cannot switch to %s '%s'", what, name);
        return 0;
    }
    /* Groups before the uid: once the uid is not 0 the process may no longer change them. */
    if (setgroups(0, NULL) != 0) {
        set_why(why, why_len, "setgroups() failed: %s", strerror(errno));
        return 0;
    }
    if (setgid(gid) != 0) {
        set_why(why, why_len, "setgid(%u) failed: %s", (unsigned)gid, strerror(errno));
        return 0;
    }
    if (user != NULL && setuid(uid) != 0) {
        set_why(why, why_len, "setuid(%u) failed: %s", (unsigned)uid, strerror(errno));
        return 0;
    }
    if (!has_ids(user != NULL, uid, gid) || getgroups(0, NULL) != 0) {
        set_why(why, why_len, "switched to %s '%s' but the process ids read back differ", what,
                name);
        return 0;
    }
    /* Root keeps its capabilities across setuid when securebits say so (SECBIT_NO_SETUID_FIXUP,
     * SECBIT_KEEP_CAPS with a later capset): then it could become root again. */
    if (user != NULL && uid != 0) {
        if (setuid(0) == 0) {
            set_why(why, why_len,
                    "setuid(0) succeeded after switching to user '%s': root can be regained", user);
            return 0;
        }
        if (gid != 0 && setgid(0) == 0) {
            set_why(why, why_len,
                    "setgid(0) succeeded after switching to user '%s': group root can be "
                    "regained",
                    user);
            return 0;
        }
    }
    return 1;
}

int sys_no_new_privs(char *why, size_t why_len)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        set_why(why, why_len, "prctl(PR_SET_NO_NEW_PRIVS) failed: %s", strerror(errno));
        return 0;
    }
    return 1;
}

/* ---- CPUs ----------------------------------------------------------------------------- */

/* /proc/self/cgroup, cpu.max and the cfs files are a few lines; a larger one is not what we
 * expect and is ignored. */
#define SYS_CGROUP_FILE_MAX 4096
/* Paths are built in buffers of this size; a longer one is ignored. */
#define SYS_CGROUP_PATH_MAX 1024
/* At most this many CPUs from a quota (a quota of 2^60 µs per 1 µs is "unlimited" too). */
#define SYS_CGROUP_CPUS_MAX 4096

/* read_small reads a whole file of fewer than |cap| bytes into |buf|. Returns 0 if it cannot be
 * opened or read, or does not fit. */
static int read_small(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t got = 0;
    int ok = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        if (n == 0) {
            ok = 1;
            break;
        }
        got += (size_t)n;
        if (got == cap)
            break; /* no room left to see the end: too large */
    }
    close(fd);
    *len = got;
    return ok;
}

/* path_join writes A followed by B into |out|; 0 if that does not fit. */
static int path_join(char *out, size_t out_len, const char *a, const char *b)
{
    int n = snprintf(out, out_len, "%s%s", a, b);
    return n > 0 && (size_t)n < out_len;
}

/* cbs_get_decimal reads one or more decimal digits into |out|, refusing overflow. */
static int cbs_get_decimal(CBS *cbs, uint64_t *out)
{
    uint64_t v = 0;
    size_t digits = 0;
    while (CBS_len(cbs) > 0 && CBS_data(cbs)[0] >= '0' && CBS_data(cbs)[0] <= '9') {
        uint64_t d = (uint64_t)(CBS_data(cbs)[0] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
        digits++;
        CBS_skip(cbs, 1);
    }
    *out = v;
    return digits > 0;
}

/* cbs_is_line_end: nothing left but one optional trailing newline. */
static int cbs_is_line_end(const CBS *cbs)
{
    return CBS_len(cbs) == 0 || (CBS_len(cbs) == 1 && CBS_data(cbs)[0] == '\n');
}

static unsigned cpus_of_quota(uint64_t quota, uint64_t period)
{
    if (period == 0 || quota == 0)
        return 0;
    uint64_t n = quota / period + (quota % period != 0);
    return n > SYS_CGROUP_CPUS_MAX ? 0 : (unsigned)n;
}

/* cgroup_v2_limit parses cpu.max: "max PERIOD" (0: no limit) or "QUOTA PERIOD". */
static unsigned cgroup_v2_limit(const char *path)
{
    uint8_t buf[SYS_CGROUP_FILE_MAX];
    size_t len;
    if (!read_small(path, buf, sizeof(buf), &len))
        return 0;
    CBS cbs, quota_s;
    CBS_init(&cbs, buf, len);
    uint64_t quota, period;
    if (!CBS_get_until_first(&cbs, &quota_s, ' ') || !CBS_skip(&cbs, 1) ||
        !cbs_get_decimal(&cbs, &period) || !cbs_is_line_end(&cbs))
        return 0;
    if (CBS_mem_equal(&quota_s, (const uint8_t *)"max", 3))
        return 0;
    if (!cbs_get_decimal(&quota_s, &quota) || CBS_len(&quota_s) != 0)
        return 0;
    return cpus_of_quota(quota, period);
}

/* read_decimal_file parses a file holding one integer, possibly "-1", and a newline. Returns 0
 * for -1 or anything else unexpected. */
static int read_decimal_file(const char *path, uint64_t *out)
{
    uint8_t buf[SYS_CGROUP_FILE_MAX];
    size_t len;
    if (!read_small(path, buf, sizeof(buf), &len))
        return 0;
    CBS cbs;
    CBS_init(&cbs, buf, len);
    return cbs_get_decimal(&cbs, out) && cbs_is_line_end(&cbs);
}

static unsigned cgroup_v1_limit(const char *dir)
{
    char path[SYS_CGROUP_PATH_MAX * 2];
    uint64_t quota, period;
    if (!path_join(path, sizeof(path), dir, "/cpu.cfs_quota_us") ||
        !read_decimal_file(path, &quota)) /* "-1": no limit */
        return 0;
    if (!path_join(path, sizeof(path), dir, "/cpu.cfs_period_us") ||
        !read_decimal_file(path, &period))
        return 0;
    return cpus_of_quota(quota, period);
}

/* cgroup_relative_path finds, in /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines), the path of
 * the v2 hierarchy (|controller| NULL: the "0::" line) or of the v1 hierarchy whose
 * comma-separated controllers include |controller|. */
static int cgroup_relative_path(const uint8_t *data, size_t len, const char *controller, char *out,
                                size_t out_len)
{
    CBS all, line;
    CBS_init(&all, data, len);
    while (CBS_len(&all) > 0) {
        if (!CBS_get_until_first(&all, &line, '\n'))
            return 0; /* every line ends in a newline */
        CBS_skip(&all, 1);
        CBS id, controllers;
        if (!CBS_get_until_first(&line, &id, ':') || !CBS_skip(&line, 1) ||
            !CBS_get_until_first(&line, &controllers, ':') || !CBS_skip(&line, 1))
            return 0;
        int match = 0;
        if (controller == NULL) {
            match = CBS_mem_equal(&id, (const uint8_t *)"0", 1) && CBS_len(&controllers) == 0;
        } else {
            CBS one;
            size_t want = strlen(controller);
            while (!match && CBS_len(&controllers) > 0) {
                if (!CBS_get_until_first(&controllers, &one, ','))
                    CBS_get_bytes(&controllers, &one, CBS_len(&controllers));
                else
                    CBS_skip(&controllers, 1);
                match = CBS_mem_equal(&one, (const uint8_t *)controller, want);
            }
        }
        if (!match)
            continue;
        /* PATH: absolute, no NUL, fits. */
        if (CBS_len(&line) == 0 || CBS_data(&line)[0] != '/' || CBS_len(&line) >= out_len ||
            memchr(CBS_data(&line), '\0', CBS_len(&line)) != NULL)
            return 0;
        memcpy(out, CBS_data(&line), CBS_len(&line));
        out[CBS_len(&line)] = '\0';
        return 1;
    }
    return 0;
}

/* walk_limits reads the limit of MOUNT/REL and of each parent up to MOUNT, keeping the smallest
 * found (0: none). |rel| is cut down in place. */
static unsigned walk_limits(const char *mount, char *rel, int v2)
{
    unsigned best = 0;
    for (;;) {
        char dir[SYS_CGROUP_PATH_MAX * 2];
        char file[SYS_CGROUP_PATH_MAX * 2];
        if (path_join(dir, sizeof(dir), mount, rel)) {
            unsigned limit = 0;
            if (!v2)
                limit = cgroup_v1_limit(dir);
            else if (path_join(file, sizeof(file), dir, "/cpu.max"))
                limit = cgroup_v2_limit(file);
            if (limit != 0 && (best == 0 || limit < best))
                best = limit;
        }
        char *slash = strrchr(rel, '/');
        if (slash == NULL || rel[0] == '\0')
            break;
        *slash = '\0'; /* "/a/b" -> "/a" -> "" (the mount itself) */
    }
    return best;
}

unsigned sys_cgroup_cpu_limit(const char *root)
{
    uint8_t buf[SYS_CGROUP_FILE_MAX];
    size_t len;
    char path[SYS_CGROUP_PATH_MAX];
    char rel[SYS_CGROUP_PATH_MAX];

    if (!path_join(path, sizeof(path), root, "/proc/self/cgroup") ||
        !read_small(path, buf, sizeof(buf), &len))
        return 0;

    unsigned limit = 0;
    if (cgroup_relative_path(buf, len, NULL, rel, sizeof(rel)) &&
        path_join(path, sizeof(path), root, "/sys/fs/cgroup"))
        limit = walk_limits(path, rel, 1);
    if (limit == 0 && cgroup_relative_path(buf, len, "cpu", rel, sizeof(rel))) {
        /* The v1 cpu controller's usual mount points (co-mounted with cpuacct or alone). */
        static const char *const mounts[] = {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"};
        for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]) && limit == 0; i++) {
            char copy[SYS_CGROUP_PATH_MAX];
            memcpy(copy, rel, sizeof(copy));
            if (path_join(path, sizeof(path), root, mounts[i]))
                limit = walk_limits(path, copy, 0);
        }
    }
    return limit;
}

static unsigned cpus_available(void)
{
    cpu_set_t set;

    /* A fixed cpu_set_t holds 1024 CPUs; on a larger machine the call fails with EINVAL and
     * the count of CPUs online is close enough. */
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online < 1 ? 1 : (unsigned)online;
}

unsigned sys_cpu_count(void)
{
    unsigned n = cpus_available();
    unsigned quota = sys_cgroup_cpu_limit("");
    return quota != 0 && quota < n ? quota : n;
}
