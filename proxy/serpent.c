/* serpent: a Python literal, read exactly as serpent.loads (serpent 1.41 on CPython 3.11) reads
 * it: strict UTF-8 decode, refuse NUL, str.lstrip(" \t"), then ast.literal_eval
 * (PROTOCOL.md §5.1, §9, §10).
 *
 * The decoder is a real, if small, Python tokenizer and parser. The tokenizer follows
 * CPython 3.11's Parser/tokenizer.c rule for rule where a literal can reach it: newline
 * translation (\r\n and \r read as \n, also inside strings), indentation of the first logical
 * line and of every later non-blank line, comments, backslash continuations (also in the
 * indentation of a line), bracket levels that swallow newlines, string prefixes and quotes,
 * and numbers with their underscore and leading-zero rules. The parser accepts exactly the
 * shapes ast.literal_eval evaluates: constants, tuples (bracketed or bare at the top level),
 * lists, dicts, sets, `set()` (also `(set)()`), unary +/- on a number constant, and
 * int-or-float +/- imaginary constant. Anything else is refused, as are the places where
 * Python raises while evaluating: unhashable set elements and dict keys, int + complex with an
 * int too large for a float, decimal int literals over 4300 digits.
 *
 * Sets are deduplicated as Python does (first element kept; 1 == 1.0 == True == 1+0j), which
 * needs the exact value of every number in a set element: those are computed only there.
 *
 * Limits: every container counts one level against the arena's max_depth, the bare top-level
 * tuple included, and so do parentheses around a non-tuple (stricter than Python's 200);
 * values and string bytes (also those left in the input) as the arena allows. `\N{...}`
 * escapes in str literals are refused: the Unicode name database is not here, and serpent
 * never writes them. */
#include "alloc.h"
#include "decode.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* CPython 3.11's default sys.int_info.default_max_str_digits: a longer decimal int literal is
 * a SyntaxError ("Exceeds the limit (4300 digits) for integer string conversion"). */
#define SERPENT_MAX_DECIMAL_DIGITS 4300

/* Python's tokenizer expands a tab to the next multiple of 8 columns. */
#define SERPENT_TABSIZE 8

/* ---- growable scratch buffers --------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} sbuf_t;

static int sbuf_reserve(sbuf_t *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 1;
    if (extra > SIZE_MAX / 2 - b->len)
        return 0;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = pg_realloc(b->p, cap);
    if (p == NULL)
        return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

static int sbuf_put(sbuf_t *b, const uint8_t *s, size_t n)
{
    if (!sbuf_reserve(b, n))
        return 0;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return 1;
}

static int sbuf_byte(sbuf_t *b, uint8_t c)
{
    if (b->len == b->cap && !sbuf_reserve(b, 1))
        return 0;
    b->p[b->len++] = c;
    return 1;
}

/* ---- tokens and parser state ---------------------------------------------------------- */

typedef enum {
    T_END,
    T_NEWLINE,
    T_NUMBER,
    T_STRING,
    T_NAME,
    T_LPAR,
    T_RPAR,
    T_LSQB,
    T_RSQB,
    T_LBRACE,
    T_RBRACE,
    T_COMMA,
    T_COLON,
    T_PLUS,
    T_MINUS,
    T_ELLIPSIS,
} tok_type_t;

enum { NUM_INT, NUM_FLOAT, NUM_IMAG };

typedef struct {
    tok_type_t type;
    const uint8_t *start, *end; /* the whole token */
    /* T_NUMBER */
    uint8_t num_kind; /* NUM_* */
    uint8_t base;     /* NUM_INT: 2, 8, 10 or 16 */
    /* T_STRING */
    uint8_t bytes; /* b prefix */
    uint8_t raw;   /* r prefix */
    uint8_t plain; /* the contents are the value byte for byte (no escape, no \r) */
    const uint8_t *cstart, *cend;
} token_t;

/* What a parsed expression is, as far as literal_eval's number rules care. */
typedef enum {
    EK_OTHER,   /* any other value */
    EK_NUM,     /* an int, float or complex constant (possibly parenthesized) */
    EK_SIGNED,  /* + or - applied to an EK_NUM */
    EK_SUM,     /* (EK_NUM or EK_SIGNED real) +/- imaginary EK_NUM */
    EK_SETNAME, /* the bare name `set`, only valid when called with no arguments */
} expr_kind_t;

/* A number expression, kept only as the tokens it came from: its exact value is computed
 * when a set needs it (set_key_number). */
typedef struct {
    expr_kind_t kind;
    token_t a;   /* the (first) number */
    token_t b;   /* EK_SUM: the imaginary number */
    int neg;     /* unary minus on a */
    int minus_b; /* EK_SUM: a - b */
} expr_t;

/* Hashability requirements of the expression being parsed (sets and dict keys). */
enum {
    KEY_NONE = 0, /* anything goes */
    KEY_HASH = 1, /* must be hashable: list, dict and set refused */
    KEY_EMIT = 2, /* hashable, and its equality key is appended to parser.key */
};

typedef struct {
    const uint8_t *p, *end;
    value_arena_t *arena;
    const char *reason;

    /* tokenizer */
    size_t level;  /* open brackets: newlines inside are not tokens */
    int atbol;     /* at the beginning of a physical line */
    int blankline; /* the current line holds only whitespace and/or a comment */
    token_t tok;   /* lookahead */

    /* parser */
    size_t depth;     /* containers (brackets) open around the current position */
    size_t depth_max; /* the most that were ever open */
    int key_mode;
    value_t **stack; /* items of the containers being built, innermost last */
    size_t nstack, capstack;
    value_t *stack_inline[64];
    sbuf_t str;  /* decoded string contents */
    sbuf_t key;  /* equality keys of set elements (set_dedupe) */
    sbuf_t koff; /* size_t offsets into key, one per set element */
    sbuf_t num;  /* a number's text without underscores, for strtod */
} parser_t;

static int fail(parser_t *P, const char *reason)
{
    if (P->reason == NULL)
        P->reason = reason;
    return 0;
}

/* ---- byte classes and fast scanning --------------------------------------------------- */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_ident_start(int c)
{
    return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_' || c >= 0x80;
}

static int is_ident_char(int c)
{
    return is_ident_start(c) || is_digit(c);
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

static int digit_in_base(int c, int base)
{
    int v = hex_value(c);
    return v >= 0 && v < base;
}

static unsigned ctz32(unsigned x)
{
    return (unsigned)__builtin_ctz(x);
}

/* scan_string returns the first byte in [p, end) that a string literal's scanner must look
 * at: |quote|, a backslash, \r, \n (when |stop_nl|) or a non-ASCII byte (when |stop_high|:
 * bytes literals); |end| if none. */
static const uint8_t *scan_string(const uint8_t *p, const uint8_t *end, uint8_t quote, int stop_nl,
                                  int stop_high)
{
#if defined(__SSE2__)
    const __m128i vq = _mm_set1_epi8((char)quote);
    const __m128i vb = _mm_set1_epi8('\\');
    const __m128i vr = _mm_set1_epi8('\r');
    const __m128i vn = _mm_set1_epi8(stop_nl ? '\n' : (char)quote);
    const unsigned high = stop_high ? 0xFFFFu : 0;
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, vq), _mm_cmpeq_epi8(x, vb)),
                                 _mm_or_si128(_mm_cmpeq_epi8(x, vr), _mm_cmpeq_epi8(x, vn)));
        unsigned mask = (unsigned)_mm_movemask_epi8(m) | ((unsigned)_mm_movemask_epi8(x) & high);
        if (mask)
            return p + ctz32(mask);
        p += 16;
    }
#endif
    for (; p < end; p++) {
        uint8_t c = *p;
        if (c == quote || c == '\\' || c == '\r' || (c == '\n' && stop_nl) ||
            (c >= 0x80 && stop_high))
            return p;
    }
    return end;
}

/* scan_two returns the first byte in [p, end) equal to |a| or |b|, or |end|. */
static const uint8_t *scan_two(const uint8_t *p, const uint8_t *end, uint8_t a, uint8_t b)
{
#if defined(__SSE2__)
    const __m128i va = _mm_set1_epi8((char)a);
    const __m128i vb = _mm_set1_epi8((char)b);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned mask =
            (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(x, va), _mm_cmpeq_epi8(x, vb)));
        if (mask)
            return p + ctz32(mask);
        p += 16;
    }
#endif
    for (; p < end; p++) {
        if (*p == a || *p == b)
            return p;
    }
    return end;
}

/* utf8_seq returns the length of the valid, strict UTF-8 sequence at s (lead byte >= 0x80),
 * or 0: Python's decoder refuses surrogates, overlong forms and anything past U+10FFFF. */
static size_t utf8_seq(const uint8_t *s, const uint8_t *end)
{
    uint8_t c = s[0];
    size_t avail = (size_t)(end - s);
    if (c < 0xE0) {
        if (c < 0xC2 || avail < 2 || (s[1] & 0xC0) != 0x80)
            return 0;
        return 2;
    }
    if (c < 0xF0) {
        if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (c > 0xF4 || avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
        (s[3] & 0xC0) != 0x80)
        return 0;
    if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
        return 0; /* overlong, past U+10FFFF */
    return 4;
}

/* utf8_check is Python's strict UTF-8 decode plus serpent's own refusal of NUL. Runs of
 * ASCII are skipped 16 bytes at a time, runs of non-ASCII decoded in a tight loop. */
static int utf8_check(parser_t *P, const uint8_t *s, const uint8_t *end)
{
    for (;;) {
#if defined(__SSE2__)
        const __m128i zero = _mm_setzero_si128();
        while (end - s >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
            unsigned mask = (unsigned)_mm_movemask_epi8(x) |
                            (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, zero));
            if (mask) {
                s += ctz32(mask);
                break;
            }
            s += 16;
        }
#endif
        while (s < end && *s != 0 && *s < 0x80)
            s++;
        if (s == end)
            return 1;
        if (*s == 0)
            return fail(P, "NUL character");
        do {
            size_t n = utf8_seq(s, end);
            if (n == 0)
                return fail(P, "invalid UTF-8");
            s += n;
        } while (s < end && *s >= 0x80);
    }
}

/* ---- tokenizer ------------------------------------------------------------------------ */

static int peek(const parser_t *P, const uint8_t *c)
{
    return c < P->end ? *c : -1;
}

/* skip_newline consumes one logical newline at P->p: \n, \r\n or a lone \r (CPython's
 * translate_newlines turns the last two into \n before tokenizing). */
static void skip_newline(parser_t *P)
{
    if (*P->p == '\r' && P->end - P->p >= 2 && P->p[1] == '\n')
        P->p++;
    P->p++;
}

/* lex_continuation consumes what follows a backslash outside a string: a newline, which must
 * not be the end of the input. */
static int lex_continuation(parser_t *P)
{
    if (P->p == P->end || (*P->p != '\n' && *P->p != '\r'))
        return fail(P, "unexpected character after line continuation");
    skip_newline(P);
    if (P->p == P->end)
        return fail(P, "unexpected end of input after line continuation");
    return 1;
}

/* decimal_tail consumes digits with single underscores between them; *c is a digit. */
static int decimal_tail(parser_t *P, const uint8_t **c)
{
    for (;;) {
        while (is_digit(peek(P, *c)))
            (*c)++;
        if (peek(P, *c) != '_')
            return 1;
        (*c)++;
        if (!is_digit(peek(P, *c)))
            return fail(P, "invalid number literal");
    }
}

/* lex_number follows tok_get's number rules; P->p is at a digit, or at a '.' before one. */
static int lex_number(parser_t *P)
{
    token_t *t = &P->tok;
    const uint8_t *c = P->p;
    int nonzero = 0;

    t->type = T_NUMBER;
    t->start = c;
    t->num_kind = NUM_INT;
    t->base = 10;
    if (*c == '.') {
        c++;
        goto fraction;
    }
    if (*c == '0') {
        c++;
        int x = peek(P, c) | 0x20;
        if (x == 'x' || x == 'o' || x == 'b') {
            int base = x == 'x' ? 16 : x == 'o' ? 8 : 2;
            c++;
            do {
                if (peek(P, c) == '_')
                    c++;
                if (!digit_in_base(peek(P, c), base))
                    return fail(P, "invalid number literal");
                while (digit_in_base(peek(P, c), base))
                    c++;
            } while (peek(P, c) == '_');
            t->base = (uint8_t)base;
            goto end_check;
        }
        /* zeros (with underscores) make 0; more digits only before '.', 'e' or 'j' */
        for (;;) {
            if (peek(P, c) == '_') {
                c++;
                if (!is_digit(peek(P, c)))
                    return fail(P, "invalid number literal");
            }
            if (peek(P, c) != '0')
                break;
            c++;
        }
        if (is_digit(peek(P, c))) {
            nonzero = 1;
            if (!decimal_tail(P, &c))
                return 0;
        }
        if (peek(P, c) == '.') {
            c++;
            goto fraction;
        }
        if ((peek(P, c) | 0x20) == 'e')
            goto exponent;
        if ((peek(P, c) | 0x20) == 'j')
            goto imaginary;
        if (nonzero)
            return fail(P, "leading zeros in decimal integer literal");
        goto end_check;
    }
    if (!decimal_tail(P, &c))
        return 0;
    if (peek(P, c) == '.') {
        c++;
    fraction:
        t->num_kind = NUM_FLOAT;
        if (is_digit(peek(P, c)) && !decimal_tail(P, &c))
            return 0;
    }
    if ((peek(P, c) | 0x20) == 'e') {
    exponent:
        t->num_kind = NUM_FLOAT;
        c++;
        if (peek(P, c) == '+' || peek(P, c) == '-')
            c++;
        if (!is_digit(peek(P, c)))
            return fail(P, "invalid number literal");
        if (!decimal_tail(P, &c))
            return 0;
    }
    if ((peek(P, c) | 0x20) == 'j') {
    imaginary:
        t->num_kind = NUM_IMAG;
        c++;
    }
end_check:
    /* a letter, digit or non-ASCII right after a number is a SyntaxError, or a keyword
     * (`1if`), which no literal can contain */
    if (is_ident_char(peek(P, c)))
        return fail(P, "invalid number literal");
    t->end = c;
    P->p = c;
    return 1;
}

/* lex_string scans one string literal; P->p is at its opening quote, |start| at its prefix. */
static int lex_string(parser_t *P, const uint8_t *start, int bytes, int raw)
{
    token_t *t = &P->tok;
    const uint8_t *c = P->p, *end = P->end;
    uint8_t q = *c;
    int triple = end - c >= 3 && c[1] == q && c[2] == q;
    int plain = 1;

    c += triple ? 3 : 1;
    t->cstart = c;
    for (;;) {
        c = scan_string(c, end, q, !triple, bytes);
        if (c == end)
            return fail(P, "unterminated string literal");
        uint8_t ch = *c;
        if (ch == q) {
            if (!triple) {
                t->cend = c;
                c++;
                break;
            }
            if (end - c >= 3 && c[1] == q && c[2] == q) {
                t->cend = c;
                c += 3;
                break;
            }
            c++;
        } else if (ch == '\\') {
            /* the tokenizer only skips the escaped character; decoding comes later */
            if (!raw)
                plain = 0;
            c++;
            if (c == end)
                return fail(P, "unterminated string literal");
            if (*c == '\r') {
                plain = 0;
                c++;
                if (c < end && *c == '\n')
                    c++;
            } else if (*c >= 0x80 && bytes) {
                return fail(P, "bytes can only contain ASCII characters");
            } else {
                c++;
            }
        } else if (ch == '\n' || ch == '\r') {
            if (!triple)
                return fail(P, "unterminated string literal");
            if (ch == '\r')
                plain = 0;
            c++;
        } else {
            return fail(P, "bytes can only contain ASCII characters");
        }
    }
    t->type = T_STRING;
    t->start = start;
    t->end = c;
    t->bytes = (uint8_t)bytes;
    t->raw = (uint8_t)raw;
    t->plain = (uint8_t)plain;
    P->p = c;
    return 1;
}

/* string_prefix decides whether the name [s, e) directly before a quote is a string prefix
 * (tok_get accepts b r u f, br rb fr rf in any case; never u with another letter). */
static int string_prefix(parser_t *P, const uint8_t *s, const uint8_t *e, int *bytes, int *raw)
{
    int b = 0, r = 0, u = 0, f = 0;
    if (e - s > 2)
        return fail(P, "name not allowed");
    for (; s < e; s++) {
        int c = *s | 0x20;
        if (c == 'b' && !b && !u && !f)
            b = 1;
        else if (c == 'r' && !r && !u)
            r = 1;
        else if (c == 'u' && !b && !r && !u && !f)
            u = 1;
        else if (c == 'f' && !f && !b && !u)
            f = 1;
        else
            return fail(P, "name not allowed");
    }
    if (f)
        return fail(P, "f-strings are not literals");
    *bytes = b;
    *raw = r;
    return 1;
}

/* lex reads the next token into P->tok (tok_get of CPython 3.11, reduced to what a literal
 * may contain; every other token is refused here). */
static int lex(parser_t *P)
{
    token_t *t = &P->tok;
    const uint8_t *e = P->end;

nextline:
    P->blankline = 0;
    if (P->atbol) {
        /* Indentation. literal_eval parses in eval mode, where any INDENT is an error;
         * a backslash continuation inside the indentation fixes the column at the first
         * backslash unless that column is 0 (bpo-46091, as in 3.11). */
        size_t col = 0, cont_col = 0;
        P->atbol = 0;
        while (P->p < e) {
            uint8_t c = *P->p;
            if (c == ' ') {
                col++;
            } else if (c == '\t') {
                col = (col / SERPENT_TABSIZE + 1) * SERPENT_TABSIZE;
            } else if (c == '\f') {
                col = 0;
            } else if (c == '\\') {
                if (cont_col == 0)
                    cont_col = col;
                P->p++;
                if (!lex_continuation(P))
                    return 0;
                continue;
            } else {
                break;
            }
            P->p++;
        }
        int c = peek(P, P->p);
        if (c == '#' || c == '\n' || c == '\r')
            P->blankline = 1;
        else if (P->level == 0 && (cont_col ? cont_col : col) != 0)
            return fail(P, "unexpected indent");
    }
again:
    while (P->p < e && (*P->p == ' ' || *P->p == '\t' || *P->p == '\f'))
        P->p++;
    t->start = P->p;
    t->end = P->p + 1;
    if (P->p == e) {
        t->type = T_END;
        t->end = e;
        return 1;
    }
    uint8_t c = *P->p;
    if (c == '#') {
        P->p = scan_two(P->p, e, '\n', '\r');
        if (P->p == e) {
            t->type = T_END;
            t->start = t->end = e;
            return 1;
        }
        c = *P->p;
    }
    if (c == '\n' || c == '\r') {
        skip_newline(P);
        P->atbol = 1;
        if (P->blankline || P->level > 0)
            goto nextline;
        t->type = T_NEWLINE;
        return 1;
    }
    if (c == '\\') {
        P->p++;
        if (!lex_continuation(P))
            return 0;
        goto again;
    }
    if (is_ident_start(c)) {
        const uint8_t *s = P->p, *n = P->p;
        while (n < e && is_ident_char(*n))
            n++;
        if (n < e && (*n == '\'' || *n == '"')) {
            int bytes, raw;
            if (!string_prefix(P, s, n, &bytes, &raw))
                return 0;
            P->p = n;
            return lex_string(P, s, bytes, raw);
        }
        t->type = T_NAME;
        t->end = n;
        P->p = n;
        return 1;
    }
    if (is_digit(c))
        return lex_number(P);
    if (c == '\'' || c == '"')
        return lex_string(P, P->p, 0, 0);
    if (c == '.') {
        if (is_digit(peek(P, P->p + 1)))
            return lex_number(P);
        if (peek(P, P->p + 1) == '.' && peek(P, P->p + 2) == '.') {
            P->p += 3;
            t->type = T_ELLIPSIS;
            t->end = P->p;
            return 1;
        }
        return fail(P, "not a literal");
    }
    P->p++;
    switch (c) {
    case '(':
        t->type = T_LPAR;
        P->level++;
        return 1;
    case '[':
        t->type = T_LSQB;
        P->level++;
        return 1;
    case '{':
        t->type = T_LBRACE;
        P->level++;
        return 1;
    case ')':
    case ']':
    case '}':
        if (P->level == 0)
            return fail(P, "unmatched bracket");
        P->level--;
        t->type = c == ')' ? T_RPAR : c == ']' ? T_RSQB : T_RBRACE;
        return 1;
    case ',':
        t->type = T_COMMA;
        return 1;
    case ':':
        t->type = T_COLON;
        return 1;
    case '+':
        t->type = T_PLUS;
        return 1;
    case '-':
        t->type = T_MINUS;
        return 1;
    default:
        return fail(P, "not a literal");
    }
}

/* ---- values --------------------------------------------------------------------------- */

static value_t *new_value(parser_t *P, value_type_t type)
{
    value_t *v = value_new(P->arena, type);
    if (v == NULL)
        fail(P,
             P->arena->values >= P->arena->limits.max_values ? "too many values" : "out of memory");
    return v;
}

static int push(parser_t *P, value_t *v)
{
    if (P->nstack == P->capstack) {
        size_t cap = P->capstack * 2;
        value_t **s = pg_malloc(cap * sizeof(*s));
        if (s == NULL)
            return fail(P, "out of memory");
        memcpy(s, P->stack, P->nstack * sizeof(*s));
        if (P->stack != P->stack_inline)
            free(P->stack);
        P->stack = s;
        P->capstack = cap;
    }
    P->stack[P->nstack++] = v;
    return 1;
}

/* pop_items moves the stack above |base| into a new array of the arena. */
static int pop_items(parser_t *P, size_t base, value_t ***out)
{
    size_t n = P->nstack - base;
    *out = NULL;
    if (n > 0) {
        *out = value_alloc(P->arena, n * sizeof(**out));
        if (*out == NULL)
            return fail(P, "out of memory");
        memcpy(*out, P->stack + base, n * sizeof(**out));
    }
    P->nstack = base;
    return 1;
}

static int finish_seq(parser_t *P, value_type_t type, size_t base, value_t **out)
{
    value_t *v = new_value(P, type);
    if (v == NULL)
        return 0;
    v->u.seq.n = P->nstack - base;
    if (!pop_items(P, base, &v->u.seq.items))
        return 0;
    *out = v;
    return 1;
}

/* ---- equality keys (sets) --------------------------------------------------------------
 *
 * A set keeps the first of equal elements, and Python's equality crosses types: 1 == 1.0 ==
 * True == (1+0j), -0.0 == 0, (1, 2) == (1.0, 2). Each element of a set display gets a byte
 * key such that two elements are equal exactly when their keys are; sorting the keys finds
 * the duplicates. Keys are framed at their end (payload, 8-byte length, tag) so that a tuple
 * can simply follow its items with its count and tag:
 *   Z sign magnitude  an integral number (int, bool, integral float or complex)
 *   F bits            a finite float that is not integral
 *   I sign            an infinite float
 *   C bits bits       a complex with a non-zero imaginary part
 *   S/B contents      str / bytes;  N None;  E Ellipsis;  T count  a tuple */

static int key_trailer(parser_t *P, size_t len, uint8_t tag)
{
    uint8_t t[9];
    for (int i = 0; i < 8; i++)
        t[i] = (uint8_t)((uint64_t)len >> (8 * i));
    t[8] = tag;
    return sbuf_put(&P->key, t, sizeof(t)) || fail(P, "out of memory");
}

static int key_put(parser_t *P, uint8_t tag, const uint8_t *payload, size_t len)
{
    if (!sbuf_put(&P->key, payload, len))
        return fail(P, "out of memory");
    return key_trailer(P, len, tag);
}

/* A non-negative integer as little-endian 32-bit limbs. */
typedef struct {
    uint32_t *d;
    size_t n, cap;
    uint32_t small[8];
} big_t;

static void big_init(big_t *b)
{
    b->d = b->small;
    b->n = 0;
    b->cap = sizeof(b->small) / sizeof(b->small[0]);
}

static void big_cleanup(big_t *b)
{
    if (b->d != b->small)
        free(b->d);
    big_init(b);
}

static int big_reserve(big_t *b, size_t cap)
{
    if (cap <= b->cap)
        return 1;
    if (cap > SIZE_MAX / sizeof(uint32_t))
        return 0;
    uint32_t *d = pg_calloc(cap, sizeof(uint32_t));
    if (d == NULL)
        return 0;
    memcpy(d, b->d, b->n * sizeof(uint32_t));
    if (b->d != b->small)
        free(b->d);
    b->d = d;
    b->cap = cap;
    return 1;
}

static void big_trim(big_t *b)
{
    while (b->n > 0 && b->d[b->n - 1] == 0)
        b->n--;
}

/* big_muladd sets b = b * mul + add; b has room for one more limb. */
static void big_muladd(big_t *b, uint32_t mul, uint32_t add)
{
    uint64_t carry = add;
    for (size_t i = 0; i < b->n; i++) {
        uint64_t x = (uint64_t)b->d[i] * mul + carry;
        b->d[i] = (uint32_t)x;
        carry = x >> 32;
    }
    if (carry)
        b->d[b->n++] = (uint32_t)carry;
}

static size_t big_bitlen(const big_t *b)
{
    if (b->n == 0)
        return 0;
    uint32_t top = b->d[b->n - 1];
    return (b->n - 1) * 32 + (32 - (size_t)__builtin_clz(top));
}

static int big_bit(const big_t *b, size_t i)
{
    return (int)((b->d[i / 32] >> (i % 32)) & 1);
}

/* int_digits returns the digits of an int token (after any 0x/0o/0b prefix) and how many
 * there are, underscores excluded. */
static const uint8_t *int_digits(const token_t *t, size_t *count)
{
    const uint8_t *s = t->start + (t->base == 10 ? 0 : 2);
    size_t n = 0;
    for (const uint8_t *c = s; c < t->end; c++)
        n += *c != '_';
    *count = n;
    return s;
}

/* big_from_int_token sets |b| to the magnitude of the int literal |t|. */
static int big_from_int_token(parser_t *P, const token_t *t, big_t *b)
{
    size_t ndigits;
    const uint8_t *s = int_digits(t, &ndigits);
    b->n = 0;
    if (t->base == 10) {
        /* log2(10) < 3.33: 10 bits per 3 digits, plus slack */
        if (!big_reserve(b, ndigits / 9 + 2))
            return fail(P, "out of memory");
        uint32_t chunk = 0, mul = 1;
        for (const uint8_t *c = s; c < t->end; c++) {
            if (*c == '_')
                continue;
            chunk = chunk * 10 + (uint32_t)(*c - '0');
            mul *= 10;
            if (mul == 1000000000u) {
                big_muladd(b, mul, chunk);
                chunk = 0;
                mul = 1;
            }
        }
        if (mul > 1)
            big_muladd(b, mul, chunk);
    } else {
        unsigned bits = t->base == 16 ? 4 : t->base == 8 ? 3 : 1;
        if (ndigits > (SIZE_MAX - 64) / bits || !big_reserve(b, ndigits * bits / 32 + 2))
            return fail(P, "out of memory");
        memset(b->d, 0, b->cap * sizeof(uint32_t));
        size_t pos = 0;
        for (const uint8_t *c = t->end; c > s;) {
            c--;
            if (*c == '_')
                continue;
            uint32_t v = (uint32_t)hex_value(*c);
            for (unsigned i = 0; i < bits; i++, pos++) {
                if ((v >> i) & 1)
                    b->d[pos / 32] |= 1u << (pos % 32);
            }
        }
        b->n = pos / 32 + 1;
    }
    big_trim(b);
    return 1;
}

/* big_to_double_bits rounds |b| to the nearest double (ties to even), as PyLong_AsDouble
 * does; 0 if the result would not be finite (OverflowError in Python). */
static int big_to_double_bits(const big_t *b, uint64_t *out_bits)
{
    size_t len = big_bitlen(b);
    if (len == 0) {
        *out_bits = 0;
        return 1;
    }
    /* the top 53 bits, the next (round) bit and whether anything below is set */
    uint64_t mant = 0;
    int round = 0, sticky = 0;
    for (size_t i = 0; i < 53; i++)
        mant = (mant << 1) | (uint64_t)(len > i ? big_bit(b, len - 1 - i) : 0);
    if (len > 53) {
        round = big_bit(b, len - 54);
        for (size_t i = 0; i + 54 < len && !sticky; i++)
            sticky = big_bit(b, i);
    }
    if (len < 53)
        mant >>= 53 - len;
    if (round && (sticky || (mant & 1))) {
        mant++;
        if (mant == (1ull << 53)) {
            mant >>= 1;
            len++;
        }
    }
    if (len > 1024)
        return 0;
    if (len < 53) {
        /* exact: a small integer */
        double d = (double)mant;
        memcpy(out_bits, &d, sizeof(d));
        return 1;
    }
    *out_bits = ((uint64_t)(len - 1 + 1023) << 52) | (mant & ((1ull << 52) - 1));
    return 1;
}

/* int_to_double_bits converts the int literal |t| for int + complex. */
static int int_to_double_bits(parser_t *P, const token_t *t, uint64_t *out_bits)
{
    size_t ndigits;
    const uint8_t *s = int_digits(t, &ndigits);
    /* avoid building huge numbers only to find them too large */
    if (t->base == 10) {
        int zero = 1;
        for (const uint8_t *c = s; c < t->end; c++)
            zero &= *c == '0' || *c == '_';
        if (!zero && ndigits > 309)
            return fail(P, "int too large to convert to float");
    } else {
        size_t sig = 0;
        for (const uint8_t *c = s; c < t->end; c++) {
            if (sig || (*c != '0' && *c != '_'))
                sig += *c != '_';
        }
        unsigned bits = t->base == 16 ? 4 : t->base == 8 ? 3 : 1;
        if (sig > 1024 / bits + 1)
            return fail(P, "int too large to convert to float");
    }
    big_t b;
    big_init(&b);
    int ok = big_from_int_token(P, t, &b);
    if (ok && !big_to_double_bits(&b, out_bits))
        ok = fail(P, "int too large to convert to float");
    big_cleanup(&b);
    return ok;
}

/* float_value converts a float or imaginary token (without the j) as Python does: the text
 * without underscores, correctly rounded (glibc's strtod in the C locale, as pyroguard never
 * calls setlocale). */
static int float_value(parser_t *P, const token_t *t, double *out)
{
    P->num.len = 0;
    for (const uint8_t *c = t->start; c < t->end; c++) {
        if (*c == '_' || (*c | 0x20) == 'j')
            continue;
        if (!sbuf_byte(&P->num, *c))
            return fail(P, "out of memory");
    }
    if (!sbuf_byte(&P->num, 0))
        return fail(P, "out of memory");
    *out = strtod((const char *)P->num.p, NULL);
    return 1;
}

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static int key_big(parser_t *P, int neg, const big_t *b)
{
    size_t nbytes = (big_bitlen(b) + 7) / 8;
    if (!sbuf_reserve(&P->key, nbytes + 1))
        return fail(P, "out of memory");
    P->key.p[P->key.len++] = (uint8_t)(neg && nbytes ? '-' : '+');
    for (size_t i = nbytes; i > 0; i--)
        P->key.p[P->key.len++] = (uint8_t)(b->d[(i - 1) / 4] >> (8 * ((i - 1) % 4)));
    return key_trailer(P, nbytes + 1, 'Z');
}

/* key_float appends the key of a real number held as a double. */
static int key_float(parser_t *P, uint64_t bits)
{
    int neg = (int)(bits >> 63);
    int exp = (int)((bits >> 52) & 0x7FF);
    uint64_t frac = bits & ((1ull << 52) - 1);
    uint8_t payload[8];

    if (exp == 0x7FF) {
        /* infinite (literals cannot make a NaN) */
        uint8_t sign = neg ? '-' : '+';
        return key_put(P, 'I', &sign, 1);
    }
    if (exp == 0 && frac == 0) {
        big_t zero;
        big_init(&zero);
        return key_big(P, 0, &zero);
    }
    /* value = m * 2^shift */
    uint64_t m = exp == 0 ? frac : frac | (1ull << 52);
    int shift = (exp == 0 ? 1 : exp) - 1075;
    if (shift < 0 && (shift <= -64 || (m & ((1ull << -shift) - 1)) != 0)) {
        for (int i = 0; i < 8; i++)
            payload[i] = (uint8_t)(bits >> (8 * i));
        return key_put(P, 'F', payload, sizeof(payload));
    }
    /* integral: the same key as the int of that value */
    big_t b;
    big_init(&b);
    if (shift < 0) {
        m >>= -shift;
        shift = 0;
    }
    size_t limbs = (size_t)shift / 32 + 3;
    if (!big_reserve(&b, limbs)) {
        big_cleanup(&b);
        return fail(P, "out of memory");
    }
    memset(b.d, 0, limbs * sizeof(uint32_t));
    size_t at = (size_t)shift / 32;
    unsigned off = (unsigned)shift % 32;
    unsigned __int128 wide = (unsigned __int128)m << off;
    b.d[at] = (uint32_t)wide;
    b.d[at + 1] = (uint32_t)(wide >> 32);
    b.d[at + 2] = (uint32_t)(wide >> 64);
    b.n = limbs;
    big_trim(&b);
    int ok = key_big(P, neg, &b);
    big_cleanup(&b);
    return ok;
}

static int key_complex(parser_t *P, uint64_t re, uint64_t im)
{
    const uint64_t sign = 1ull << 63;
    if ((im & ~sign) == 0)
        return key_float(P, re);
    if ((re & ~sign) == 0)
        re = 0; /* -0.0 == 0.0 */
    uint8_t payload[16];
    for (int i = 0; i < 8; i++) {
        payload[i] = (uint8_t)(re >> (8 * i));
        payload[8 + i] = (uint8_t)(im >> (8 * i));
    }
    return key_put(P, 'C', payload, sizeof(payload));
}

/* key_number appends the key of the number expression |x|. */
static int key_number(parser_t *P, const expr_t *x)
{
    const uint64_t sign = 1ull << 63;
    uint64_t re = 0, im = 0;
    double d;

    if (x->kind == EK_SUM) {
        if (x->a.num_kind == NUM_INT) {
            if (!int_to_double_bits(P, &x->a, &re))
                return 0;
        } else {
            if (!float_value(P, &x->a, &d))
                return 0;
            re = double_bits(d);
        }
        if (x->neg)
            re ^= sign;
        if (!float_value(P, &x->b, &d))
            return 0;
        im = double_bits(d) ^ (x->minus_b ? sign : 0);
        return key_complex(P, re, im);
    }
    if (x->a.num_kind == NUM_INT) {
        big_t b;
        big_init(&b);
        int ok = big_from_int_token(P, &x->a, &b) && key_big(P, x->neg, &b);
        big_cleanup(&b);
        return ok;
    }
    if (!float_value(P, &x->a, &d))
        return 0;
    if (x->a.num_kind == NUM_FLOAT)
        return key_float(P, double_bits(d) ^ (x->neg ? sign : 0));
    /* imaginary: 0.0 + dj, negated as a whole */
    im = double_bits(d);
    if (x->neg) {
        re ^= sign;
        im ^= sign;
    }
    return key_complex(P, re, im);
}

/* key_element appends the key of a finished set element or tuple item when keys are being
 * collected. Strings, constants and tuples append theirs as they are built; numbers only
 * once their whole expression is known, which is here. */
static int key_element(parser_t *P, const expr_t *x)
{
    if (P->key_mode != KEY_EMIT || x->kind == EK_OTHER)
        return 1;
    return key_number(P, x);
}

typedef struct {
    const uint8_t *key;
    size_t len;
    size_t index;
} keyref_t;

static int keyref_cmp(const void *x, const void *y)
{
    const keyref_t *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c != 0)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static size_t koff_get(const parser_t *P, size_t i)
{
    size_t v;
    memcpy(&v, P->koff.p + i * sizeof(v), sizeof(v));
    return v;
}

static int koff_push(parser_t *P)
{
    size_t v = P->key.len;
    return sbuf_put(&P->koff, (const uint8_t *)&v, sizeof(v)) || fail(P, "out of memory");
}

/* set_dedupe drops from the stack items [base, base+n) every element equal to an earlier
 * one; element i's key lies between koff entries kbase+i and kbase+i+1. */
static int set_dedupe(parser_t *P, size_t base, size_t n, size_t kbase)
{
    if (n < 2)
        return 1;
    keyref_t *refs = pg_malloc(n * sizeof(*refs));
    if (refs == NULL)
        return fail(P, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t s = koff_get(P, kbase + i), e = koff_get(P, kbase + i + 1);
        refs[i].key = P->key.p + s;
        refs[i].len = e - s;
        refs[i].index = i;
    }
    qsort(refs, n, sizeof(*refs), keyref_cmp);
    /* mark the later duplicates by clearing their stack slot */
    for (size_t i = 1; i < n; i++) {
        if (refs[i].len == refs[i - 1].len &&
            (refs[i].len == 0 || memcmp(refs[i].key, refs[i - 1].key, refs[i].len) == 0))
            P->stack[base + refs[i].index] = NULL;
    }
    free(refs);
    size_t w = base;
    for (size_t i = base; i < base + n; i++) {
        if (P->stack[i] != NULL)
            P->stack[w++] = P->stack[i];
    }
    P->nstack = w;
    return 1;
}

/* ---- strings -------------------------------------------------------------------------- */

/* put_utf8 writes |cp| at |o| and returns the byte after it. Lone surrogates come out as
 * their 3-byte generalized UTF-8 form (value.h). */
static uint8_t *put_utf8(uint8_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        *o++ = (uint8_t)cp;
    } else if (cp < 0x800) {
        *o++ = (uint8_t)(0xC0 | (cp >> 6));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (uint8_t)(0xE0 | (cp >> 12));
        *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (uint8_t)(0xF0 | (cp >> 18));
        *o++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* read_hex reads exactly |n| hex digits at *s (before |e|). */
static int read_hex(const uint8_t **s, const uint8_t *e, int n, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int h = *s + i < e ? hex_value((*s)[i]) : -1;
        if (h < 0)
            return 0;
        v = (v << 4) | (uint32_t)h;
    }
    *s += n;
    *out = v;
    return 1;
}

/* decode_piece appends the value of one string token to P->str: raw contents with newlines
 * translated, or escapes decoded as _PyUnicode_DecodeUnicodeEscapeInternal (str) and
 * _PyBytes_DecodeEscape (bytes) of CPython 3.11 do. Unknown escapes keep their backslash
 * (a DeprecationWarning only); octal escapes above \377 give U+0100..U+01FF in a str and
 * the low byte in bytes. The tokenizer guarantees a backslash never ends the contents.
 * No escape decodes to more bytes than it is written with, nor does a newline, so the
 * contents' length is reserved once and written through a plain pointer. */
static int decode_piece(parser_t *P, const token_t *t)
{
    const uint8_t *s = t->cstart, *e = t->cend;
    sbuf_t *b = &P->str;

    if (s == e)
        return 1;
    if (!sbuf_reserve(b, (size_t)(e - s)))
        return fail(P, "out of memory");
    uint8_t *o = b->p + b->len;
    if (t->plain) {
        memcpy(o, s, (size_t)(e - s));
        b->len += (size_t)(e - s);
        return 1;
    }
    const uint8_t stop = t->raw ? '\r' : '\\';
    while (s < e) {
        /* a run of ordinary characters */
        const uint8_t *r = s, *lim = e - s > 16 ? s + 16 : e;
        while (r < lim && *r != stop && *r != '\r')
            r++;
        if (r == lim && r < e)
            r = scan_two(r, e, stop, '\r');
        memcpy(o, s, (size_t)(r - s));
        o += r - s;
        if (r == e)
            break;
        s = r;
        if (*s == '\r') {
            *o++ = '\n';
            s++;
            if (s < e && *s == '\n')
                s++;
            continue;
        }
        s++; /* the backslash */
        uint8_t c = *s++;
        uint32_t v;
        switch (c) {
        case '\r':
            if (s < e && *s == '\n')
                s++;
            continue;
        case '\n':
            continue;
        case '\\':
        case '\'':
        case '"':
            v = c;
            break;
        case 'a':
            v = 7;
            break;
        case 'b':
            v = 8;
            break;
        case 'f':
            v = 12;
            break;
        case 'n':
            v = 10;
            break;
        case 'r':
            v = 13;
            break;
        case 't':
            v = 9;
            break;
        case 'v':
            v = 11;
            break;
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
            v = (uint32_t)(c - '0');
            for (int i = 0; i < 2 && s < e && *s >= '0' && *s <= '7'; i++)
                v = (v << 3) | (uint32_t)(*s++ - '0');
            if (t->bytes)
                v &= 0xFF;
            break;
        case 'x':
            if (!read_hex(&s, e, 2, &v))
                return fail(P, "invalid \\x escape");
            break;
        case 'u':
        case 'U':
            if (t->bytes)
                goto unknown;
            if (!read_hex(&s, e, c == 'u' ? 4 : 8, &v) || v > 0x10FFFF)
                return fail(P, "invalid unicode escape");
            break;
        case 'N':
            if (t->bytes)
                goto unknown;
            return fail(P, "\\N{...} escapes are not supported");
        default:
        unknown:
            /* kept as written: the backslash now, the character with the next run */
            *o++ = '\\';
            s--;
            continue;
        }
        if (t->bytes)
            *o++ = (uint8_t)v;
        else
            o = put_utf8(o, v);
    }
    b->len = (size_t)(o - b->p);
    return 1;
}

/* store_string makes a str/bytes value of |data| (already in the arena or the input). */
static value_t *store_string(parser_t *P, int bytes, const uint8_t *data, size_t len)
{
    value_t *v = new_value(P, bytes ? VAL_BYTES : VAL_STR);
    if (v == NULL)
        return NULL;
    v->u.str.data = data;
    v->u.str.len = len;
    if (P->key_mode == KEY_EMIT && !key_put(P, bytes ? 'B' : 'S', data, len))
        return NULL;
    return v;
}

/* parse_strings reads adjacent string literals, concatenated (never bytes with str). */
static int parse_strings(parser_t *P, value_t **out)
{
    token_t first = P->tok;
    value_arena_t *a = P->arena;

    if (!lex(P))
        return 0;
    if (P->tok.type != T_STRING && first.plain) {
        /* the common case: one literal whose contents are its value, left in the input; it
         * still counts against the arena's string budget */
        size_t len = (size_t)(first.cend - first.cstart);
        if (len > a->limits.max_string_bytes - a->string_bytes)
            return fail(P, "string too long");
        a->string_bytes += len;
        *out = store_string(P, first.bytes, first.cstart, len);
        return *out != NULL;
    }
    P->str.len = 0;
    if (!decode_piece(P, &first))
        return 0;
    while (P->tok.type == T_STRING) {
        if (P->tok.bytes != first.bytes)
            return fail(P, "cannot mix bytes and str literals");
        if (!decode_piece(P, &P->tok) || !lex(P))
            return 0;
        if (P->str.len > a->limits.max_string_bytes)
            return fail(P, "string too long");
    }
    uint8_t *data = value_alloc_string(a, P->str.len);
    if (data == NULL)
        return fail(P, "string too long");
    if (P->str.len)
        memcpy(data, P->str.p, P->str.len);
    *out = store_string(P, first.bytes, data, P->str.len);
    return *out != NULL;
}

/* ---- parser --------------------------------------------------------------------------- */

static int parse_expr(parser_t *P, value_t **out, expr_t *x, int allow_setname);

static int expect(parser_t *P, tok_type_t type)
{
    if (P->tok.type != type)
        return fail(P, "invalid syntax");
    return lex(P);
}

static int enter(parser_t *P)
{
    if (P->depth >= P->arena->limits.max_depth)
        return fail(P, "nesting too deep");
    P->depth++;
    if (P->depth > P->depth_max)
        P->depth_max = P->depth;
    return 1;
}

/* parse_element parses one item of a tuple, list or set, or a dict key or value. */
static int parse_element(parser_t *P, value_t **out)
{
    expr_t x;
    return parse_expr(P, out, &x, 0) && push(P, *out) && key_element(P, &x);
}

/* parse_tuple_rest parses the items after the first one and its comma, up to |close|
 * (T_END for the bare top-level tuple, where a newline ends it too). */
static int parse_tuple_rest(parser_t *P, size_t base, tok_type_t close, value_t **out)
{
    for (;;) {
        tok_type_t t = P->tok.type;
        if (t == close || (close == T_END && t == T_NEWLINE))
            break;
        value_t *v;
        if (!parse_element(P, &v))
            return 0;
        if (P->tok.type != T_COMMA)
            break;
        if (!lex(P))
            return 0;
    }
    size_t n = P->nstack - base;
    if (!finish_seq(P, VAL_TUPLE, base, out))
        return 0;
    if (P->key_mode == KEY_EMIT && !key_trailer(P, n, 'T'))
        return 0;
    return 1;
}

/* parse_paren: `()`, `(expr)` (transparent, as in Python's AST), or a tuple. */
static int parse_paren(parser_t *P, value_t **out, expr_t *x)
{
    if (!enter(P) || !lex(P))
        return 0;
    if (P->tok.type == T_RPAR) {
        P->depth--;
        if (!finish_seq(P, VAL_TUPLE, P->nstack, out))
            return 0;
        if (P->key_mode == KEY_EMIT && !key_trailer(P, 0, 'T'))
            return 0;
        return lex(P);
    }
    if (!parse_expr(P, out, x, 1))
        return 0;
    if (P->tok.type == T_RPAR) {
        P->depth--;
        return lex(P);
    }
    if (P->tok.type != T_COMMA || x->kind == EK_SETNAME)
        return fail(P, "invalid syntax");
    size_t base = P->nstack;
    if (!push(P, *out) || !key_element(P, x) || !lex(P))
        return 0;
    if (!parse_tuple_rest(P, base, T_RPAR, out) || !expect(P, T_RPAR))
        return 0;
    P->depth--;
    x->kind = EK_OTHER;
    return 1;
}

static int parse_list(parser_t *P, value_t **out)
{
    if (P->key_mode != KEY_NONE)
        return fail(P, "unhashable type: list");
    if (!enter(P) || !lex(P))
        return 0;
    size_t base = P->nstack;
    while (P->tok.type != T_RSQB) {
        value_t *v;
        if (!parse_element(P, &v))
            return 0;
        if (P->tok.type != T_COMMA)
            break;
        if (!lex(P))
            return 0;
    }
    if (!expect(P, T_RSQB) || !finish_seq(P, VAL_LIST, base, out))
        return 0;
    P->depth--;
    return 1;
}

static int parse_dict_rest(parser_t *P, size_t base, value_t **out)
{
    /* the first key is on the stack, the colon is the lookahead */
    for (;;) {
        value_t *v;
        P->key_mode = KEY_NONE;
        if (!expect(P, T_COLON) || !parse_element(P, &v))
            return 0;
        if (P->tok.type != T_COMMA)
            break;
        if (!lex(P))
            return 0;
        if (P->tok.type == T_RBRACE)
            break;
        P->key_mode = KEY_HASH;
        if (!parse_element(P, &v))
            return 0;
    }
    P->key_mode = KEY_NONE;
    if (!expect(P, T_RBRACE))
        return 0;
    value_t *d = new_value(P, VAL_DICT);
    if (d == NULL)
        return 0;
    size_t n = (P->nstack - base) / 2;
    d->u.dict.n = n;
    d->u.dict.keys = value_alloc(P->arena, n * sizeof(value_t *));
    d->u.dict.values = value_alloc(P->arena, n * sizeof(value_t *));
    if (d->u.dict.keys == NULL || d->u.dict.values == NULL)
        return fail(P, "out of memory");
    for (size_t i = 0; i < n; i++) {
        d->u.dict.keys[i] = P->stack[base + 2 * i];
        d->u.dict.values[i] = P->stack[base + 2 * i + 1];
    }
    P->nstack = base;
    *out = d;
    return 1;
}

static int parse_set_rest(parser_t *P, size_t base, size_t kbase, value_t **out)
{
    /* the first element is on the stack and its key collected; the lookahead follows it */
    while (P->tok.type == T_COMMA) {
        if (!lex(P))
            return 0;
        if (P->tok.type == T_RBRACE)
            break;
        value_t *v;
        if (!parse_element(P, &v) || !koff_push(P))
            return 0;
    }
    P->key_mode = KEY_NONE;
    if (!expect(P, T_RBRACE))
        return 0;
    size_t n = P->nstack - base;
    if (!set_dedupe(P, base, n, kbase))
        return 0;
    return finish_seq(P, VAL_SET, base, out);
}

/* parse_brace: `{}`, a dict or a set. Which one is known after the first element, so that
 * one is parsed as a set element would be (hashable, key collected). */
static int parse_brace(parser_t *P, value_t **out)
{
    if (P->key_mode != KEY_NONE)
        return fail(P, "unhashable type: dict or set");
    if (!enter(P) || !lex(P))
        return 0;
    size_t base = P->nstack;
    int ok;
    if (P->tok.type == T_RBRACE) {
        value_t *d = new_value(P, VAL_DICT);
        if (d == NULL || !lex(P))
            return 0;
        *out = d;
        P->depth--;
        return 1;
    }
    size_t key_len = P->key.len, koff_len = P->koff.len;
    size_t kbase = koff_len / sizeof(size_t);
    value_t *first;
    P->key_mode = KEY_EMIT;
    if (!koff_push(P) || !parse_element(P, &first) || !koff_push(P))
        return 0;
    if (P->tok.type == T_COLON) {
        P->key.len = key_len;
        P->koff.len = koff_len;
        ok = parse_dict_rest(P, base, out);
    } else {
        ok = parse_set_rest(P, base, kbase, out);
        P->key.len = key_len;
        P->koff.len = koff_len;
    }
    P->key_mode = KEY_NONE;
    if (!ok)
        return 0;
    P->depth--;
    return 1;
}

static int parse_name(parser_t *P, value_t **out, expr_t *x)
{
    const token_t *t = &P->tok;
    size_t n = (size_t)(t->end - t->start);
    value_t *v = NULL;

    if (n == 4 && memcmp(t->start, "True", 4) == 0) {
        v = new_value(P, VAL_BOOL);
        if (v != NULL)
            v->u.boolean = 1;
    } else if (n == 5 && memcmp(t->start, "False", 5) == 0) {
        v = new_value(P, VAL_BOOL);
    } else if (n == 4 && memcmp(t->start, "None", 4) == 0) {
        v = new_value(P, VAL_NONE);
    } else if (n == 3 && memcmp(t->start, "set", 3) == 0) {
        x->kind = EK_SETNAME;
        *out = NULL;
        return lex(P);
    } else {
        return fail(P, "name not allowed");
    }
    if (v == NULL)
        return 0;
    if (P->key_mode == KEY_EMIT) {
        uint8_t payload[2] = {'+', 1};
        int ok = v->type == VAL_NONE ? key_put(P, 'N', NULL, 0)
                                     : key_put(P, 'Z', payload, v->u.boolean ? 2 : 1);
        if (!ok)
            return 0;
    }
    *out = v;
    return lex(P);
}

/* parse_atom parses one atom; |x| says whether it is a number constant or the name set. */
static int parse_atom(parser_t *P, value_t **out, expr_t *x)
{
    x->kind = EK_OTHER;
    switch (P->tok.type) {
    case T_NUMBER: {
        static const value_type_t types[] = {VAL_INT, VAL_FLOAT, VAL_COMPLEX};
        const token_t *t = &P->tok;
        if (t->num_kind == NUM_INT && t->base == 10 &&
            (size_t)(t->end - t->start) > SERPENT_MAX_DECIMAL_DIGITS) {
            size_t ndigits;
            int_digits(t, &ndigits);
            if (ndigits > SERPENT_MAX_DECIMAL_DIGITS && *t->start != '0')
                return fail(P, "int literal over 4300 digits");
        }
        x->kind = EK_NUM;
        x->a = *t;
        x->neg = 0;
        *out = new_value(P, types[t->num_kind]);
        return *out != NULL && lex(P);
    }
    case T_STRING:
        return parse_strings(P, out);
    case T_NAME:
        return parse_name(P, out, x);
    case T_ELLIPSIS:
        *out = new_value(P, VAL_ELLIPSIS);
        if (*out == NULL)
            return 0;
        if (P->key_mode == KEY_EMIT && !key_put(P, 'E', NULL, 0))
            return 0;
        return lex(P);
    case T_LPAR:
        return parse_paren(P, out, x);
    case T_LSQB:
        return parse_list(P, out);
    case T_LBRACE:
        return parse_brace(P, out);
    default:
        return fail(P, "invalid syntax");
    }
}

/* parse_primary: an atom and its trailers; the only trailer literal_eval accepts is the
 * empty call of the name set. */
static int parse_primary(parser_t *P, value_t **out, expr_t *x)
{
    if (!parse_atom(P, out, x))
        return 0;
    while (P->tok.type == T_LPAR || P->tok.type == T_LSQB) {
        if (x->kind != EK_SETNAME || P->tok.type != T_LPAR)
            return fail(P, "not a literal");
        if (!lex(P) || !expect(P, T_RPAR))
            return 0;
        if (P->key_mode != KEY_NONE)
            return fail(P, "unhashable type: set");
        if (!finish_seq(P, VAL_SET, P->nstack, out))
            return 0;
        x->kind = EK_OTHER;
    }
    return 1;
}

/* parse_expr parses one expression: ast.literal_eval's _convert for BinOp and UnaryOp. */
static int parse_expr(parser_t *P, value_t **out, expr_t *x, int allow_setname)
{
    if (P->tok.type == T_PLUS || P->tok.type == T_MINUS) {
        int neg = P->tok.type == T_MINUS;
        if (!lex(P) || !parse_primary(P, out, x))
            return 0;
        if (x->kind != EK_NUM)
            return fail(P, "unary operator on a non-number");
        x->kind = EK_SIGNED;
        x->neg = neg;
    } else if (!parse_primary(P, out, x)) {
        return 0;
    }
    if (P->tok.type == T_PLUS || P->tok.type == T_MINUS) {
        /* only real +/- imaginary constant */
        int minus = P->tok.type == T_MINUS;
        expr_t r;
        value_t *rv;
        if ((x->kind != EK_NUM && x->kind != EK_SIGNED) || x->a.num_kind == NUM_IMAG)
            return fail(P, "binary operator not allowed");
        if (!lex(P))
            return 0;
        if (P->tok.type == T_PLUS || P->tok.type == T_MINUS)
            return fail(P, "binary operator not allowed");
        if (!parse_primary(P, &rv, &r))
            return 0;
        if (r.kind != EK_NUM || r.a.num_kind != NUM_IMAG)
            return fail(P, "binary operator not allowed");
        if (P->tok.type == T_PLUS || P->tok.type == T_MINUS)
            return fail(P, "binary operator not allowed");
        uint64_t bits;
        if (x->a.num_kind == NUM_INT && !int_to_double_bits(P, &x->a, &bits))
            return 0;
        x->kind = EK_SUM;
        x->b = r.a;
        x->minus_b = minus;
        (*out)->type = VAL_COMPLEX;
    }
    if (x->kind == EK_SETNAME && !allow_setname)
        return fail(P, "name not allowed");
    return 1;
}

/* parse_top: eval_input, `expressions NEWLINE* ENDMARKER`; a comma makes a tuple. */
static int parse_top(parser_t *P, value_t **out)
{
    expr_t x;
    if (!lex(P))
        return 0;
    if (!parse_expr(P, out, &x, 0))
        return 0;
    if (P->tok.type == T_COMMA) {
        /* the bare tuple is a container like any other: its first item, parsed before the
         * comma showed it, must have room for one more level */
        size_t base = P->nstack;
        if (P->depth_max >= P->arena->limits.max_depth)
            return fail(P, "nesting too deep");
        P->depth = 1;
        if (!push(P, *out) || !lex(P) || !parse_tuple_rest(P, base, T_END, out))
            return 0;
    }
    while (P->tok.type == T_NEWLINE) {
        if (!lex(P))
            return 0;
    }
    if (P->tok.type != T_END)
        return fail(P, "invalid syntax");
    return 1;
}

int decode_serpent(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                   const char **out_reason)
{
    parser_t P;
    value_t *v = NULL;
    int ok;

    memset(&P, 0, sizeof(P));
    P.end = data + len;
    P.arena = arena;
    P.stack = P.stack_inline;
    P.capstack = sizeof(P.stack_inline) / sizeof(P.stack_inline[0]);
    P.atbol = 1;

    ok = utf8_check(&P, data, P.end);
    if (ok) {
        /* serpent.loads: ast.literal_eval(text) strips leading spaces and tabs */
        P.p = data;
        while (P.p < P.end && (*P.p == ' ' || *P.p == '\t'))
            P.p++;
        ok = parse_top(&P, &v);
    }
    if (P.stack != P.stack_inline)
        free(P.stack);
    free(P.str.p);
    free(P.key.p);
    free(P.koff.p);
    free(P.num.p);
    if (!ok) {
        *out_reason = P.reason != NULL ? P.reason : "invalid syntax";
        return 0;
    }
    *out = v;
    return 1;
}
