/* log: structured JSON-lines logging to stderr.
 *
 * One line per event, always with "ts", "level" and "event", then the fields the caller adds.
 * A log_line_t is a stack object: log_begin starts it, log_* add fields, log_end writes it with
 * one write(2) so lines from concurrent processes never interleave. Values longer than the
 * line can hold are truncated and the line gains "truncated":true; nothing is ever allocated. */
#ifndef PYROGUARD_LOG_H
#define PYROGUARD_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level_t;

#define LOG_LINE_MAX 8192

typedef struct {
    char text[LOG_LINE_MAX];
    size_t len;
    int truncated;
    int in_string; /* a string value was open when the line filled up */
    int in_array;
    int enabled;
} log_line_t;

/* log_set_level sets the most verbose level written; default LOG_INFO. */
void log_set_level(log_level_t level);

/* log_set_fd redirects output (tests); default 2. */
void log_set_fd(int fd);

/* log_enabled returns 1 if lines of |level| are written. */
int log_enabled(log_level_t level);

/* log_level_name returns "error", "warn", "info" or "debug". */
const char *log_level_name(log_level_t level);

void log_begin(log_line_t *l, log_level_t level, const char *event);
/* log_begin_record starts a JSON object that is not a log event (command output): its first
 * field is |key|:|value|; log_end_fd writes it to |fd| instead of the log. */
void log_begin_record(log_line_t *l, const char *key, const char *value);
void log_end_fd(log_line_t *l, int fd);
void log_str(log_line_t *l, const char *key, const char *value);
/* log_strn adds |n| bytes of |value|; bytes that are not printable ASCII are escaped. */
void log_strn(log_line_t *l, const char *key, const uint8_t *value, size_t n);
void log_int(log_line_t *l, const char *key, int64_t value);
void log_uint(log_line_t *l, const char *key, uint64_t value);
void log_bool(log_line_t *l, const char *key, int value);
/* log_strlist adds a JSON array of |n| strings. */
void log_strlist(log_line_t *l, const char *key, const char *const *values, size_t n);
void log_end(log_line_t *l);

/* log_msg writes a line with just an event and a "msg" field. */
void log_msg(log_level_t level, const char *event, const char *msg);

#endif
