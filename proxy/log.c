#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static log_level_t g_level = LOG_INFO;
static int g_fd = 2;

/* Room kept free at the end of every line for `,"truncated":true}\n`. */
#define LOG_TAIL_RESERVE 32

void log_set_level(log_level_t level)
{
    __atomic_store_n(&g_level, level, __ATOMIC_RELAXED); /* a reload, read by every loop */
}

void log_set_fd(int fd)
{
    g_fd = fd;
}

int log_enabled(log_level_t level)
{
    return level <= __atomic_load_n(&g_level, __ATOMIC_RELAXED);
}

const char *log_level_name(log_level_t level)
{
    switch (level) {
    case LOG_ERROR:
        return "error";
    case LOG_WARN:
        return "warn";
    case LOG_INFO:
        return "info";
    case LOG_DEBUG:
        return "debug";
    }
    return "info";
}

/* put_raw writes all of |s| or, once the line is full, nothing more at all: log_end then
 * closes whatever string or array was open, so a truncated line is still valid JSON. */
static void put_raw(log_line_t *l, const char *s, size_t n)
{
    if (!l->enabled || l->truncated)
        return;
    if (n > LOG_LINE_MAX - LOG_TAIL_RESERVE - l->len) {
        l->truncated = 1;
        return;
    }
    memcpy(l->text + l->len, s, n);
    l->len += n;
}

static void put_cstr(log_line_t *l, const char *s)
{
    put_raw(l, s, strlen(s));
}

/* utf8_next decodes one well-formed UTF-8 sequence (no overlong form, no surrogate, at most
 * U+10FFFF) at |s|; returns its length, or 0 if the bytes there are not one. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t min, v;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, min = 0x80, v = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, min = 0x800, v = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, min = 0x10000, v = s[0] & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

static void put_u16(log_line_t *l, uint32_t u)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6] = {'\\',       'u', hex[(u >> 12) & 15], hex[(u >> 8) & 15], hex[(u >> 4) & 15],
                   hex[u & 15]};
    put_raw(l, esc, 6);
}

/* put_escaped writes a JSON string body in ASCII: well-formed UTF-8 becomes \uXXXX (a
 * surrogate pair past U+FFFF), so "CN=café" reads back as itself; any other byte outside
 * printable ASCII becomes \u00XX. The line is valid JSON whatever the client sent. */
static void put_escaped(log_line_t *l, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t len;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put_raw(l, esc, 2);
        } else if (c >= 0x20 && c < 0x7f) {
            put_raw(l, (const char *)&s[i], 1);
        } else if (c >= 0x80 && (len = utf8_next(s + i, n - i, &cp)) != 0) {
            if (cp >= 0x10000) {
                put_u16(l, 0xd800 + ((cp - 0x10000) >> 10));
                put_u16(l, 0xdc00 + ((cp - 0x10000) & 0x3ff));
            } else {
                put_u16(l, cp);
            }
            i += len - 1;
        } else {
            put_u16(l, c);
        }
        if (l->truncated)
            return;
    }
}

static void put_key(log_line_t *l, const char *key)
{
    put_raw(l, ",\"", 2);
    put_cstr(l, key);
    put_raw(l, "\":", 2);
}

void log_begin(log_line_t *l, log_level_t level, const char *event)
{
    struct timeval tv;
    struct tm tm;
    char ts[64];

    l->len = 0;
    l->truncated = 0;
    l->in_string = 0;
    l->in_array = 0;
    l->enabled = log_enabled(level);
    if (!l->enabled)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    put_cstr(l, "{\"ts\":\"");
    put_cstr(l, ts);
    put_cstr(l, "\",\"level\":\"");
    put_cstr(l, log_level_name(level));
    put_cstr(l, "\",\"event\":\"");
    put_escaped(l, (const uint8_t *)event, strlen(event));
    put_raw(l, "\"", 1);
}

void log_begin_record(log_line_t *l, const char *key, const char *value)
{
    l->len = 0;
    l->truncated = 0;
    l->in_string = 0;
    l->in_array = 0;
    l->enabled = 1;
    put_raw(l, "{\"", 2);
    put_cstr(l, key);
    put_raw(l, "\":\"", 3);
    put_escaped(l, (const uint8_t *)value, strlen(value));
    put_raw(l, "\"", 1);
}

void log_str(log_line_t *l, const char *key, const char *value)
{
    if (value == NULL) {
        put_key(l, key);
        put_cstr(l, "null");
        return;
    }
    log_strn(l, key, (const uint8_t *)value, strlen(value));
}

void log_strn(log_line_t *l, const char *key, const uint8_t *value, size_t n)
{
    put_key(l, key);
    put_raw(l, "\"", 1);
    l->in_string = 1;
    put_escaped(l, value, n);
    put_raw(l, "\"", 1);
    if (!l->truncated)
        l->in_string = 0;
}

void log_int(log_line_t *l, const char *key, int64_t value)
{
    char num[32];
    snprintf(num, sizeof(num), "%" PRId64, value);
    put_key(l, key);
    put_cstr(l, num);
}

void log_uint(log_line_t *l, const char *key, uint64_t value)
{
    char num[32];
    snprintf(num, sizeof(num), "%" PRIu64, value);
    put_key(l, key);
    put_cstr(l, num);
}

void log_bool(log_line_t *l, const char *key, int value)
{
    put_key(l, key);
    put_cstr(l, value ? "true" : "false");
}

void log_strlist(log_line_t *l, const char *key, const char *const *values, size_t n)
{
    put_key(l, key);
    put_raw(l, "[", 1);
    l->in_array = 1;
    for (size_t i = 0; i < n && !l->truncated; i++) {
        if (i > 0)
            put_raw(l, ",", 1);
        put_raw(l, "\"", 1);
        l->in_string = 1;
        put_escaped(l, (const uint8_t *)values[i], strlen(values[i]));
        put_raw(l, "\"", 1);
        if (!l->truncated)
            l->in_string = 0;
    }
    put_raw(l, "]", 1);
    if (!l->truncated)
        l->in_array = 0;
}

void log_end(log_line_t *l)
{
    log_end_fd(l, g_fd);
}

void log_end_fd(log_line_t *l, int fd)
{
    if (!l->enabled)
        return;
    /* The reserve guarantees room for the closing text even after truncation. */
    static const char trunc_tail[] = ",\"truncated\":true}\n";
    if (l->truncated) {
        if (l->in_string)
            l->text[l->len++] = '"';
        if (l->in_array)
            l->text[l->len++] = ']';
        memcpy(l->text + l->len, trunc_tail, sizeof(trunc_tail) - 1);
        l->len += sizeof(trunc_tail) - 1;
    } else {
        l->text[l->len++] = '}';
        l->text[l->len++] = '\n';
    }
    size_t done = 0;
    while (done < l->len) {
        ssize_t w = write(fd, l->text + done, l->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
}

void log_msg(log_level_t level, const char *event, const char *msg)
{
    log_line_t l;
    log_begin(&l, level, event);
    log_str(&l, "msg", msg);
    log_end(&l);
}
