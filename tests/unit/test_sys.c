/* Unit tests for proxy/sys.c: systemd notification, dropping privileges, no_new_privs, CPUs.
 *
 * Notifications go to a real AF_UNIX datagram socket the test binds, as systemd would. What
 * changes the process for good (credentials, no_new_privs) runs in a forked child, which
 * reports back through a pipe: an empty report means every check passed, anything else says
 * what did not. The privilege tests need root (as on the build machines and in CI) and skip
 * with a message otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <ftw.h>
#include <time.h>

#include "sys.h"

#define REPORT_MAX 512
/* A child's report starting with this says the test could not be set up: skipped, not failed. */
#define PRECONDITION "precondition: "

/* ---- notification --------------------------------------------------------------------- */

/* The socket playing systemd's part; the teardown closes it and removes its file. */
static struct {
    int fd;
    char dir[64];
    char path[256];
} g_sock = {-1, "", ""};

static int dgram_socket(void)
{
    const struct timeval timeout = {2, 0};
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)), 0);
    return fd;
}

static void make_temp_dir(void)
{
    snprintf(g_sock.dir, sizeof(g_sock.dir), "/tmp/pyroguard-test-sys-XXXXXX");
    assert_non_null(mkdtemp(g_sock.dir));
}

/* bind_path binds the test socket to |path| (a file in g_sock.dir). */
static void bind_path(const char *path)
{
    struct sockaddr_un sa;
    size_t n = strlen(path);

    assert_true(n < sizeof(sa.sun_path));
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n);
    snprintf(g_sock.path, sizeof(g_sock.path), "%s", path);
    g_sock.fd = dgram_socket();
    assert_int_equal(bind(g_sock.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
}

/* bind_abstract binds the test socket to the abstract name |name| (without the '@'). */
static void bind_abstract(const char *name)
{
    struct sockaddr_un sa;
    size_t n = strlen(name);

    assert_true(n < sizeof(sa.sun_path));
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path + 1, name, n);
    g_sock.fd = dgram_socket();
    assert_int_equal(bind(g_sock.fd, (struct sockaddr *)&sa,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)),
                     0);
}

/* receive reads one datagram from the test socket as a string. */
static void receive(char *out, size_t out_len)
{
    ssize_t n = recv(g_sock.fd, out, out_len - 1, 0);
    if (n < 0)
        print_message("recv: %s\n", strerror(errno));
    assert_true(n >= 0);
    out[n] = '\0';
}

static int notify_teardown(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    if (g_sock.fd >= 0)
        close(g_sock.fd);
    g_sock.fd = -1;
    if (g_sock.path[0] != '\0')
        unlink(g_sock.path);
    g_sock.path[0] = '\0';
    if (g_sock.dir[0] != '\0')
        rmdir(g_sock.dir);
    g_sock.dir[0] = '\0';
    return 0;
}

static void test_notify_sends_ready_to_a_socket_path(void **state)
{
    char path[128], why[256] = "", got[SYS_NOTIFY_STATE_MAX + 1];

    make_temp_dir();
    snprintf(path, sizeof(path), "%s/notify", g_sock.dir);
    bind_path(path);
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), 1);
    assert_string_equal(why, "");
    receive(got, sizeof(got));
    assert_string_equal(got, "READY=1");
}

static void test_notify_reaches_an_abstract_socket(void **state)
{
    char name[64], env[65], why[256] = "", got[SYS_NOTIFY_STATE_MAX + 1];

    snprintf(name, sizeof(name), "pyroguard-test-sys-%ld", (long)getpid());
    snprintf(env, sizeof(env), "@%s", name);
    bind_abstract(name);
    assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);
    assert_int_equal(sys_notify("STATUS=serving 2 listeners", why, sizeof(why)), 1);
    receive(got, sizeof(got));
    assert_string_equal(got, "STATUS=serving 2 listeners");
}

static void test_notify_without_notify_socket_does_nothing(void **state)
{
    char why[256] = "";

    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), 0);
    assert_string_equal(why, "");
}

/* sun_path holds 108 bytes: a path of 107 and its NUL fit, 108 do not. */
static void test_notify_accepts_the_longest_path_a_socket_address_holds(void **state)
{
    struct sockaddr_un sa;
    char path[sizeof(sa.sun_path)], why[256] = "", got[64];
    size_t n;

    make_temp_dir();
    n = (size_t)snprintf(path, sizeof(path), "%s/", g_sock.dir);
    memset(path + n, 'a', sizeof(path) - 1 - n);
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(strlen(path), 107);
    bind_path(path);
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), 1);
    receive(got, sizeof(got));
    assert_string_equal(got, "READY=1");
}

static void test_notify_refuses_a_path_longer_than_sun_path(void **state)
{
    char path[109], why[256] = "";

    path[0] = '/';
    memset(path + 1, 'a', sizeof(path) - 2);
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), -1);
    assert_string_equal(why, "NOTIFY_SOCKET is a path of 108 bytes, longer than the 107 a socket "
                             "address holds");
}

/* An abstract name has no NUL after it: 107 bytes after the leading NUL fit, 108 do not. */
static void test_notify_accepts_the_longest_abstract_name_and_refuses_one_more(void **state)
{
    char name[109], env[110], why[256] = "", got[64];
    size_t n = (size_t)snprintf(name, sizeof(name), "pyroguard-test-sys-%ld-", (long)getpid());

    memset(name + n, 'b', 107 - n);
    name[107] = '\0';
    snprintf(env, sizeof(env), "@%s", name);
    bind_abstract(name);
    assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), 1);
    receive(got, sizeof(got));
    assert_string_equal(got, "READY=1");

    name[107] = 'b';
    name[108] = '\0';
    snprintf(env, sizeof(env), "@%s", name);
    assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), -1);
    assert_string_equal(why, "NOTIFY_SOCKET is an abstract name of 108 bytes, longer than the 107 "
                             "a socket address holds");
}

static void test_notify_refuses_an_address_that_is_neither_path_nor_abstract(void **state)
{
    char why[256] = "";

    assert_int_equal(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), -1);
    assert_string_equal(why, "NOTIFY_SOCKET 'vsock:2:1234' is not supported: expected an absolute "
                             "path or '@name'");
    assert_int_equal(setenv("NOTIFY_SOCKET", "run/notify", 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), -1);
    assert_string_equal(why, "NOTIFY_SOCKET 'run/notify' is not supported: expected an absolute "
                             "path or '@name'");
}

static void test_notify_to_a_missing_socket_says_why(void **state)
{
    char path[128], expected[256], why[256] = "";

    make_temp_dir();
    snprintf(path, sizeof(path), "%s/nobody-listens", g_sock.dir);
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    assert_int_equal(sys_notify("READY=1", why, sizeof(why)), -1);
    snprintf(expected, sizeof(expected),
             "sending to NOTIFY_SOCKET '%s' failed: No such file or directory", path);
    assert_string_equal(why, expected);
}

static void test_notify_refuses_an_empty_or_oversized_state(void **state)
{
    char big[SYS_NOTIFY_STATE_MAX + 2], why[256] = "";

    assert_int_equal(setenv("NOTIFY_SOCKET", "@pyroguard-test-sys-unused", 1), 0);
    assert_int_equal(sys_notify("", why, sizeof(why)), -1);
    assert_string_equal(why, "empty notification state");
    memcpy(big, "STATUS=", 7);
    memset(big + 7, 'x', sizeof(big) - 8);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(sys_notify(big, why, sizeof(why)), -1);
    assert_string_equal(why, "notification state longer than 4096 bytes");
}

static void test_notify_sends_a_state_of_exactly_the_maximum(void **state)
{
    static char big[SYS_NOTIFY_STATE_MAX + 1], got[SYS_NOTIFY_STATE_MAX + 2];
    char path[128], why[256] = "";

    make_temp_dir();
    snprintf(path, sizeof(path), "%s/notify", g_sock.dir);
    bind_path(path);
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    memcpy(big, "STATUS=", 7);
    memset(big + 7, 'x', SYS_NOTIFY_STATE_MAX - 7);
    big[SYS_NOTIFY_STATE_MAX] = '\0';
    assert_int_equal(sys_notify(big, why, sizeof(why)), 1);
    receive(got, sizeof(got));
    assert_int_equal(strlen(got), SYS_NOTIFY_STATE_MAX);
    assert_string_equal(got, big);
}

static uint64_t monotonic_usec(void)
{
    struct timespec now;
    assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &now), 0);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

static void test_notify_reloading_carries_the_monotonic_clock(void **state)
{
    static const char prefix[] = "RELOADING=1\nMONOTONIC_USEC=";
    char path[128], why[256] = "", got[128];
    uint64_t before, after, usec = 0;

    make_temp_dir();
    snprintf(path, sizeof(path), "%s/notify", g_sock.dir);
    bind_path(path);
    assert_int_equal(setenv("NOTIFY_SOCKET", path, 1), 0);
    before = monotonic_usec();
    assert_int_equal(sys_notify_reloading(why, sizeof(why)), 1);
    after = monotonic_usec();
    receive(got, sizeof(got));
    assert_memory_equal(got, prefix, sizeof(prefix) - 1);
    const char *digits = got + sizeof(prefix) - 1;
    assert_true(*digits >= '1' && *digits <= '9');
    for (const char *p = digits; *p != '\0'; p++) {
        assert_true(*p >= '0' && *p <= '9');
        assert_true(p - digits < 20);
        usec = usec * 10 + (uint64_t)(*p - '0');
    }
    assert_true(before <= usec);
    assert_true(usec <= after);
}

/* ---- forked children ------------------------------------------------------------------ */

typedef void (*child_fn)(const void *arg, char *report, size_t report_len);

/* in_child runs |fn| in a forked child and returns its report ("" when every check passed). */
static void in_child(child_fn fn, const void *arg, char *out, size_t out_len)
{
    int p[2], status = 0;
    size_t got = 0;
    pid_t pid;

    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char report[REPORT_MAX] = "";
        close(p[0]);
        fn(arg, report, sizeof(report));
        size_t n = strlen(report);
        _exit(write(p[1], report, n) == (ssize_t)n ? 0 : 2);
    }
    close(p[1]);
    for (;;) {
        ssize_t n = read(p[0], out + got, out_len - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == out_len - 1)
            break;
    }
    out[got] = '\0';
    close(p[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (strncmp(out, PRECONDITION, strlen(PRECONDITION)) == 0) {
        print_message("skipped: %s\n", out + strlen(PRECONDITION));
        skip();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_message("child status %d, report: %s\n", status, out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- dropping privileges -------------------------------------------------------------- */

typedef struct {
    const char *user;
    const char *group;
    uid_t uid; /* what the child must end up with */
    gid_t gid;
    int drop_cap;    /* >= 0: remove this capability from the effective set first */
    int securebits;  /* set with PR_SET_SECUREBITS first */
    int become_user; /* switch to nobody by hand first */
    int root_groups; /* start with supplementary groups 0 and 4, as an admin's shell has */
} drop_case_t;

#define DROP_CASE(u, g)                                                                            \
    {                                                                                              \
        (u), (g), 0, 0, -1, 0, 0, 0                                                                \
    }

static int require_root(void)
{
    if (geteuid() != 0) {
        print_message("skipped: dropping privileges needs the tests to run as root (euid %ld)\n",
                      (long)geteuid());
        return 0;
    }
    return 1;
}

static int lookup_ids(const char *user, const char *group, uid_t *uid, gid_t *gid)
{
    struct passwd *pw = getpwnam(user);
    struct group *gr = group != NULL ? getgrnam(group) : NULL;
    if (pw == NULL || (group != NULL && gr == NULL)) {
        print_message("skipped: no user '%s' or group '%s' on this machine\n", user,
                      group != NULL ? group : "(primary)");
        return 0;
    }
    *uid = pw->pw_uid;
    *gid = gr != NULL ? gr->gr_gid : pw->pw_gid;
    return 1;
}

static int drop_effective_cap(int cap)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];

    if (syscall(SYS_capget, &hdr, data) != 0)
        return 0;
    data[cap / 32].effective &= ~(1u << (cap % 32));
    return syscall(SYS_capset, &hdr, data) == 0;
}

static void become_nobody(char *report, size_t report_len)
{
    struct passwd *pw = getpwnam("nobody");
    if (pw == NULL || setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        snprintf(report, report_len, PRECONDITION "could not become nobody by hand: %s",
                 strerror(errno));
}

/* child_drop calls sys_drop_privileges and reports "refused: <why>" when it returns 0. */
static void child_drop(const void *arg, char *report, size_t report_len)
{
    const drop_case_t *c = arg;
    char why[256] = "";

    if (c->drop_cap >= 0 && !drop_effective_cap(c->drop_cap)) {
        snprintf(report, report_len, PRECONDITION "capset: %s", strerror(errno));
        return;
    }
    if (c->securebits != 0 && prctl(PR_SET_SECUREBITS, c->securebits, 0, 0, 0) != 0) {
        snprintf(report, report_len, PRECONDITION "PR_SET_SECUREBITS: %s", strerror(errno));
        return;
    }
    if (c->root_groups) {
        const gid_t groups[] = {0, 4};
        if (setgroups(2, groups) != 0) {
            snprintf(report, report_len, PRECONDITION "setgroups(0, 4): %s", strerror(errno));
            return;
        }
    }
    if (c->become_user) {
        become_nobody(report, report_len);
        if (report[0] != '\0')
            return;
    }
    if (!sys_drop_privileges(c->user, c->group, why, sizeof(why)))
        snprintf(report, report_len, "refused: %s", why);
}

/* child_drop_and_check drops as asked, then checks every id and that root stays out of reach. */
static void child_drop_and_check(const void *arg, char *report, size_t report_len)
{
    const drop_case_t *c = arg;
    uid_t ru, eu, su;
    gid_t rg, eg, sg, groups[8];

    child_drop(arg, report, report_len);
    if (report[0] != '\0')
        return;
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) {
        snprintf(report, report_len, "getres[ug]id: %s", strerror(errno));
        return;
    }
    if (ru != c->uid || eu != c->uid || su != c->uid) {
        snprintf(report, report_len, "uids %ld/%ld/%ld, expected %ld", (long)ru, (long)eu, (long)su,
                 (long)c->uid);
        return;
    }
    if (rg != c->gid || eg != c->gid || sg != c->gid) {
        snprintf(report, report_len, "gids %ld/%ld/%ld, expected %ld", (long)rg, (long)eg, (long)sg,
                 (long)c->gid);
        return;
    }
    int n = getgroups(8, groups);
    if (n != 0) {
        snprintf(report, report_len, "%d supplementary groups left", n);
        return;
    }
    if (setuid(0) == 0 || errno != EPERM) {
        snprintf(report, report_len, "setuid(0) after dropping: %s",
                 errno == EPERM ? "succeeded" : strerror(errno));
        return;
    }
    if (seteuid(0) == 0 || setgid(0) == 0 || setgroups(0, NULL) == 0)
        snprintf(report, report_len, "seteuid(0), setgid(0) or setgroups() succeeded");
}

static void test_drop_privileges_to_nobody_cannot_regain_root(void **state)
{
    drop_case_t c = DROP_CASE("nobody", "nogroup");
    char report[REPORT_MAX];

    if (!require_root() || !lookup_ids(c.user, c.group, &c.uid, &c.gid))
        skip();
    c.root_groups = 1;
    in_child(child_drop_and_check, &c, report, sizeof(report));
    assert_string_equal(report, "");
}

static void test_drop_privileges_without_a_group_takes_the_users_primary_group(void **state)
{
    drop_case_t c = DROP_CASE("nobody", NULL);
    char report[REPORT_MAX];

    if (!require_root() || !lookup_ids(c.user, NULL, &c.uid, &c.gid))
        skip();
    in_child(child_drop_and_check, &c, report, sizeof(report));
    assert_string_equal(report, "");
}

/* Container images often run as 65532 ("nonroot" in distroless) with no passwd entry. */
static void test_drop_privileges_accepts_numeric_ids_without_passwd_entries(void **state)
{
    drop_case_t c = DROP_CASE("65532", "65532");
    char report[REPORT_MAX];

    if (!require_root())
        skip();
    if (getpwnam("65532") != NULL || getgrnam("65532") != NULL) {
        print_message("skipped: this machine has a user or group named '65532'\n");
        skip();
    }
    c.uid = 65532;
    c.gid = 65532;
    in_child(child_drop_and_check, &c, report, sizeof(report));
    assert_string_equal(report, "");
}

static void test_drop_privileges_wants_a_group_for_a_uid_without_passwd_entry(void **state)
{
    drop_case_t c = DROP_CASE("65532", NULL);
    char report[REPORT_MAX];

    if (getpwnam("65532") != NULL) {
        print_message("skipped: this machine has a user named '65532'\n");
        skip();
    }
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: no user named '65532', so as a uid it has no primary "
                                "group: set the group too");
}

static void test_drop_privileges_names_an_unknown_user(void **state)
{
    drop_case_t c = DROP_CASE("pyroguard-no-such-user", "nogroup");
    char report[REPORT_MAX];

    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: no user 'pyroguard-no-such-user'");
}

static void test_drop_privileges_names_an_unknown_group(void **state)
{
    drop_case_t c = DROP_CASE("nobody", "pyroguard-no-such-group");
    char report[REPORT_MAX];

    if (getpwnam("nobody") == NULL) {
        print_message("skipped: no user 'nobody' on this machine\n");
        skip();
    }
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: no group 'pyroguard-no-such-group'");
}

static void test_drop_privileges_refuses_ids_out_of_range(void **state)
{
    drop_case_t c = DROP_CASE("4294967295", "65532");
    char report[REPORT_MAX];

    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: no user '4294967295'");
    c.user = "-1";
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: no user '-1'");
}

static void test_drop_privileges_when_not_root_says_so(void **state)
{
    drop_case_t c = DROP_CASE("root", NULL);
    char report[REPORT_MAX];

    /* As root, the child becomes nobody first; otherwise the test runs as it is. */
    if (geteuid() == 0) {
        if (getpwnam("nobody") == NULL) {
            print_message("skipped: no user 'nobody' to become first\n");
            skip();
        }
        c.become_user = 1;
    }
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: not running as root: cannot switch to user 'root'");
}

/* Started by systemd with User=nobody and configured with user: nobody: nothing to do. */
static void test_drop_privileges_when_already_that_user_succeeds(void **state)
{
    drop_case_t c = DROP_CASE("nobody", NULL);
    char report[REPORT_MAX], user[256], group[256];

    /* As root, the child becomes nobody first; otherwise it asks for the user it runs as. */
    if (geteuid() == 0) {
        if (!lookup_ids(c.user, NULL, &c.uid, &c.gid))
            skip();
        c.become_user = 1;
    } else {
        struct passwd *pw = getpwuid(geteuid());
        struct group *gr = getgrgid(getegid());
        if (pw == NULL || gr == NULL) {
            print_message("skipped: no passwd or group entry for the ids this test runs as\n");
            skip();
        }
        snprintf(user, sizeof(user), "%s", pw->pw_name);
        snprintf(group, sizeof(group), "%s", gr->gr_name);
        c.user = user;
        c.group = group;
    }
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "");
}

static void test_drop_privileges_names_the_call_the_kernel_refused(void **state)
{
    drop_case_t c = DROP_CASE("nobody", "nogroup");
    char report[REPORT_MAX], expected[128];

    if (!require_root() || !lookup_ids(c.user, c.group, &c.uid, &c.gid))
        skip();
    c.drop_cap = CAP_SETGID;
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(report, "refused: setgroups() failed: Operation not permitted");

    c.drop_cap = CAP_SETUID;
    in_child(child_drop, &c, report, sizeof(report));
    snprintf(expected, sizeof(expected), "refused: setuid(%ld) failed: Operation not permitted",
             (long)c.uid);
    assert_string_equal(report, expected);
}

/* With SECBIT_NO_SETUID_FIXUP root keeps its capabilities across setuid: the switch "works"
 * but root is one call away, and sys_drop_privileges must notice. */
static void test_drop_privileges_fails_loudly_when_root_can_be_regained(void **state)
{
    drop_case_t c = DROP_CASE("nobody", "nogroup");
    char report[REPORT_MAX];

    if (!require_root() || !lookup_ids(c.user, c.group, &c.uid, &c.gid))
        skip();
    c.securebits = SECBIT_NO_SETUID_FIXUP;
    in_child(child_drop, &c, report, sizeof(report));
    assert_string_equal(
        report,
        "refused: setuid(0) succeeded after switching to user 'nobody': root can be regained");
}

static void test_drop_privileges_with_nothing_configured_changes_nothing(void **state)
{
    char why[256] = "";
    uid_t uid = getuid();
    gid_t gid = getgid();

    assert_int_equal(sys_drop_privileges(NULL, NULL, why, sizeof(why)), 1);
    assert_string_equal(why, "");
    assert_int_equal(getuid(), uid);
    assert_int_equal(getgid(), gid);
}

static void child_group_only(const void *arg, char *report, size_t report_len)
{
    const drop_case_t *c = arg;
    child_drop(arg, report, report_len);
    if (report[0] == '\0' && (getuid() != 0 || getgid() != c->gid || getegid() != c->gid))
        snprintf(report, report_len, "uid %ld gid %ld, expected 0 and %ld", (long)getuid(),
                 (long)getgid(), (long)c->gid);
}

static void test_drop_privileges_with_only_a_group_keeps_the_uid(void **state)
{
    drop_case_t c = DROP_CASE(NULL, "nogroup");
    struct group *gr = getgrnam("nogroup");
    char report[REPORT_MAX];

    if (!require_root() || gr == NULL)
        skip();
    c.gid = gr->gr_gid;
    in_child(child_group_only, &c, report, sizeof(report));
    assert_string_equal(report, "");
}

/* ---- no_new_privs and CPUs ------------------------------------------------------------ */

static void child_no_new_privs(const void *arg, char *report, size_t report_len)
{
    char why[256] = "";

    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0) {
        snprintf(report, report_len, "no_new_privs already set before the call");
        return;
    }
    if (!sys_no_new_privs(why, sizeof(why))) {
        snprintf(report, report_len, "refused: %s", why);
        return;
    }
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        snprintf(report, report_len, "PR_GET_NO_NEW_PRIVS is not 1 after the call");
}

static void test_no_new_privs_is_set_for_the_process(void **state)
{
    char report[REPORT_MAX];

    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0) {
        print_message("skipped: the test runner already has no_new_privs set\n");
        skip();
    }
    in_child(child_no_new_privs, NULL, report, sizeof(report));
    assert_string_equal(report, "");
}

static void test_cpu_count_is_between_one_and_the_cpus_configured(void **state)
{
    long configured = sysconf(_SC_NPROCESSORS_CONF);
    unsigned n = sys_cpu_count();

    assert_true(n >= 1);
    if (configured > 0)
        assert_true((long)n <= configured);
}

/* ---- cgroup CPU quota -------------------------------------------------------------------- */

/* A fake system root for sys_cgroup_cpu_limit: proc/self/cgroup and sys/fs/cgroup/... under a
 * temporary directory, removed by the teardown. */
static char g_root[64];

static int cg_setup(void **state)
{
    snprintf(g_root, sizeof(g_root), "/tmp/pg-cgroup.XXXXXX");
    return mkdtemp(g_root) == NULL ? -1 : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int cg_teardown(void **state)
{
    return nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* cg_write writes |content| to ROOT/|rel|, creating the directories on the way. */
static void cg_write(const char *rel, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", g_root, rel);
    for (char *p = path + strlen(g_root) + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void test_cgroup_v2_quota_is_rounded_up_to_whole_cpus(void **state)
{
    cg_write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
    cg_write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "150000 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 2);
    cg_write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "100000 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 1);
    cg_write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "10000 100000\n"); /* 0.1 CPU */
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 1);
}

static void test_cgroup_v2_without_a_limit_is_no_limit_and_a_parent_limit_binds(void **state)
{
    cg_write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
    cg_write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 0);
    cg_write("sys/fs/cgroup/kubepods/pod1/cpu.max", "300000 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 3);
    /* The smallest limit on the way up wins. */
    cg_write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "400000 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 3);
}

static void test_cgroup_path_missing_inside_a_container_falls_back_to_its_root(void **state)
{
    /* Without a cgroup namespace the path names the host's view; inside, the container's own
     * cgroup is the mount's root. */
    cg_write("proc/self/cgroup", "0::/system.slice/docker-abc.scope\n");
    cg_write("sys/fs/cgroup/cpu.max", "200000 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 2);
}

static void test_cgroup_v1_cfs_quota_of_the_cpu_controller(void **state)
{
    cg_write("proc/self/cgroup", "12:cpuset:/kubepods/pod1\n"
                                 "4:cpu,cpuacct:/kubepods/pod1\n"
                                 "0::/\n");
    cg_write("sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us", "250000\n");
    cg_write("sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us", "100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 3);
    cg_write("sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 0);
}

static void test_cgroup_v1_cpuset_is_not_the_cpu_controller(void **state)
{
    cg_write("proc/self/cgroup", "12:cpuset:/a\n");
    cg_write("sys/fs/cgroup/cpu/a/cpu.cfs_quota_us", "100000\n");
    cg_write("sys/fs/cgroup/cpu/a/cpu.cfs_period_us", "100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 0);
    cg_write("proc/self/cgroup", "12:cpuset:/a\n3:cpu:/a\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 1);
}

static void test_cgroup_files_that_are_not_what_the_kernel_writes_mean_no_limit(void **state)
{
    static const char *const bad_cpu_max[] = {
        "abc 100000\n",
        "100000\n",
        "100000 0\n",
        "0 100000\n",
        "-5 100000\n",
        "100000 100000 7\n",
        "100000  100000\n",
        "99999999999999999999 1\n",
        "1152921504606846976 1\n", /* 2^60 CPUs */
        "",
    };
    cg_write("proc/self/cgroup", "0::/x\n");
    for (size_t i = 0; i < sizeof(bad_cpu_max) / sizeof(bad_cpu_max[0]); i++) {
        cg_write("sys/fs/cgroup/x/cpu.max", bad_cpu_max[i]);
        if (sys_cgroup_cpu_limit(g_root) != 0)
            fail_msg("cpu.max %s gave a limit", bad_cpu_max[i]);
    }
    cg_write("sys/fs/cgroup/x/cpu.max", "100000 100000\n");
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 1);

    static const char *const bad_cgroup[] = {
        "0::/x",   /* no newline */
        "0::x\n",  /* relative path */
        "0:/x\n",  /* too few fields */
        "1::/x\n", /* not the v2 line */
    };
    for (size_t i = 0; i < sizeof(bad_cgroup) / sizeof(bad_cgroup[0]); i++) {
        cg_write("proc/self/cgroup", bad_cgroup[i]);
        if (sys_cgroup_cpu_limit(g_root) != 0)
            fail_msg("/proc/self/cgroup %s gave a limit", bad_cgroup[i]);
    }
}

static void test_cgroup_without_proc_files_is_no_limit(void **state)
{
    assert_int_equal(sys_cgroup_cpu_limit(g_root), 0);
    assert_int_equal(sys_cgroup_cpu_limit("/nonexistent-root"), 0);
}

static void test_cpu_count_is_capped_by_this_process_cgroup_quota(void **state)
{
    unsigned quota = sys_cgroup_cpu_limit("");
    unsigned n = sys_cpu_count();
    if (quota != 0)
        assert_true(n <= quota);
    assert_true(n >= 1);
}

int main(void)
{
#define T(f)  cmocka_unit_test(f)
#define TN(f) cmocka_unit_test_teardown(f, notify_teardown)
#define TC(f) cmocka_unit_test_setup_teardown(f, cg_setup, cg_teardown)
    const struct CMUnitTest tests[] = {
        TN(test_notify_sends_ready_to_a_socket_path),
        TN(test_notify_reaches_an_abstract_socket),
        TN(test_notify_without_notify_socket_does_nothing),
        TN(test_notify_accepts_the_longest_path_a_socket_address_holds),
        TN(test_notify_refuses_a_path_longer_than_sun_path),
        TN(test_notify_accepts_the_longest_abstract_name_and_refuses_one_more),
        TN(test_notify_refuses_an_address_that_is_neither_path_nor_abstract),
        TN(test_notify_to_a_missing_socket_says_why),
        TN(test_notify_refuses_an_empty_or_oversized_state),
        TN(test_notify_sends_a_state_of_exactly_the_maximum),
        TN(test_notify_reloading_carries_the_monotonic_clock),
        T(test_drop_privileges_to_nobody_cannot_regain_root),
        T(test_drop_privileges_without_a_group_takes_the_users_primary_group),
        T(test_drop_privileges_accepts_numeric_ids_without_passwd_entries),
        T(test_drop_privileges_wants_a_group_for_a_uid_without_passwd_entry),
        T(test_drop_privileges_names_an_unknown_user),
        T(test_drop_privileges_names_an_unknown_group),
        T(test_drop_privileges_refuses_ids_out_of_range),
        T(test_drop_privileges_when_not_root_says_so),
        T(test_drop_privileges_when_already_that_user_succeeds),
        T(test_drop_privileges_names_the_call_the_kernel_refused),
        T(test_drop_privileges_fails_loudly_when_root_can_be_regained),
        T(test_drop_privileges_with_nothing_configured_changes_nothing),
        T(test_drop_privileges_with_only_a_group_keeps_the_uid),
        T(test_no_new_privs_is_set_for_the_process),
        T(test_cpu_count_is_between_one_and_the_cpus_configured),
        TC(test_cgroup_v2_quota_is_rounded_up_to_whole_cpus),
        TC(test_cgroup_v2_without_a_limit_is_no_limit_and_a_parent_limit_binds),
        TC(test_cgroup_path_missing_inside_a_container_falls_back_to_its_root),
        TC(test_cgroup_v1_cfs_quota_of_the_cpu_controller),
        TC(test_cgroup_v1_cpuset_is_not_the_cpu_controller),
        TC(test_cgroup_files_that_are_not_what_the_kernel_writes_mean_no_limit),
        TC(test_cgroup_without_proc_files_is_no_limit),
        T(test_cpu_count_is_capped_by_this_process_cgroup_quota),
    };
#undef T
#undef TN
    return cmocka_run_group_tests_name("sys", tests, NULL, NULL);
}
