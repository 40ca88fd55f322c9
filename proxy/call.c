#include "call.h"

#include <stdio.h>
#include <string.h>

#include "frame.h"

/* The names Pyro4 4.82 refuses as private even though they are dunders (PROTOCOL.md §7.1). */
static const char *const kDenied[] = {
    "__init__",
    "__init_subclass__",
    "__class__",
    "__module__",
    "__weakref__",
    "__call__",
    "__new__",
    "__del__",
    "__repr__",
    "__unicode__",
    "__str__",
    "__format__",
    "__nonzero__",
    "__bool__",
    "__coerce__",
    "__cmp__",
    "__eq__",
    "__ne__",
    "__hash__",
    "__ge__",
    "__gt__",
    "__le__",
    "__lt__",
    "__dir__",
    "__enter__",
    "__exit__",
    "__copy__",
    "__deepcopy__",
    "__sizeof__",
    "__getattr__",
    "__setattr__",
    "__hasattr__",
    "__getattribute__",
    "__delattr__",
    "__instancecheck__",
    "__subclasscheck__",
    "__getinitargs__",
    "__getnewargs__",
    "__getstate__",
    "__setstate__",
    "__reduce__",
    "__reduce_ex__",
    "__getstate_for_dict__",
    "__setstate_from_dict__",
    "__subclasshook__",
};

void call_render_str(const value_t *v, char *out, size_t out_len)
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;
    if (out_len < 8) {
        if (out_len)
            out[0] = '\0';
        return;
    }
    for (size_t i = 0; i < v->u.str.len; i++) {
        uint8_t c = v->u.str.data[i];
        size_t need = (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') ? 1 : 4;
        if (j + need + 4 > out_len) {
            memcpy(out + j, "...", 3);
            j += 3;
            break;
        }
        if (need == 1) {
            out[j++] = (char)c;
        } else {
            out[j++] = '\\';
            out[j++] = 'x';
            out[j++] = hex[c >> 4];
            out[j++] = hex[c & 15];
        }
    }
    out[j] = '\0';
}

/* refuse fills |r| with "pyroguard: <what> name '<name>' <tail>". */
static int refuse(call_refusal_t *r, const char *reason, const char *what, const value_t *name,
                  const char *tail)
{
    char shown[96];
    r->reason = reason;
    call_render_str(name, shown, sizeof(shown));
    snprintf(r->detail, sizeof(r->detail), "pyroguard: %s name '%s' %s", what, shown, tail);
    return 0;
}

static int malformed(call_refusal_t *r, const char *msg)
{
    r->reason = "malformed_call";
    snprintf(r->detail, sizeof(r->detail), "pyroguard: %s", msg);
    return 0;
}

static int is_private(const uint8_t *s, size_t n)
{
    if (s[0] != '_')
        return 0;
    /* Dunders longer than 4 characters are public in Pyro's rule (§7.1) unless deny-listed;
     * every deny-listed name is such a dunder, so the list is only searched for those. */
    if (n > 4 && s[1] == '_' && s[n - 2] == '_' && s[n - 1] == '_') {
        for (size_t i = 0; i < sizeof(kDenied) / sizeof(kDenied[0]); i++) {
            if (strlen(kDenied[i]) == n && memcmp(kDenied[i], s, n) == 0)
                return 1;
        }
        return 0;
    }
    return 1;
}

int call_check_name(const value_t *name, const char *what, call_refusal_t *r)
{
    if (name == NULL || name->type != VAL_STR) {
        r->reason = "invalid_name";
        snprintf(r->detail, sizeof(r->detail), "pyroguard: %s name is not a str but %s", what,
                 name ? value_type_name(name->type) : "missing");
        return 0;
    }
    const uint8_t *s = name->u.str.data;
    size_t n = name->u.str.len;
    if (n == 0)
        return refuse(r, "invalid_name", what, name, "is empty");
    if (memchr(s, '.', n) != NULL)
        return refuse(r, "dotted_name", what, name, "contains a dot");
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return refuse(r, "invalid_name", what, name, "is not a plain ASCII identifier");
    }
    if (is_private(s, n))
        return refuse(r, "private_name", what, name, "is private");
    return 1;
}

static int is_seq(const value_t *v)
{
    return v != NULL && (v->type == VAL_TUPLE || v->type == VAL_LIST);
}

static int add_name(call_t *out, call_name_kind_t kind, const value_t *name, size_t index,
                    size_t cap, const value_t *args, const value_t *kwargs)
{
    if (out->n_names == cap)
        return 0;
    out->names[out->n_names].kind = kind;
    out->names[out->n_names].name = name;
    out->names[out->n_names].index = index;
    out->names[out->n_names].args = args;
    out->names[out->n_names].kwargs = kwargs;
    out->n_names++;
    return 1;
}

static int alloc_names(value_arena_t *arena, call_t *out, size_t n, call_refusal_t *r)
{
    out->names = value_alloc(arena, (n ? n : 1) * sizeof(*out->names));
    if (out->names == NULL)
        return malformed(r, "request too large to inspect");
    return 1;
}

static int check_object(const value_t *obj, call_refusal_t *r)
{
    /* Object ids may contain dots (Pyro.Daemon, Pyro.NameServer): the policy checks them. */
    if (obj == NULL || obj->type != VAL_STR)
        return malformed(r, "object id is not a str");
    return 1;
}

/* resolve_method applies the daemon's steps 5-7 (§6) once objId, method and vargs are known. */
static int resolve_method(const value_t *method, const value_t *vargs, const value_t *kwargs,
                          uint16_t flags, value_arena_t *arena, call_t *out, call_refusal_t *r)
{
    out->method = method;
    if (method == NULL || method->type != VAL_STR)
        return call_check_name(method, "method", r);

    if (flags & FLAG4_BATCH) {
        /* The daemon ignores the outer name (§6 step 5); honest clients send "<batch>". */
        if (!value_is_str(method, "<batch>"))
            return malformed(r, "a BATCH call must name method '<batch>'");
        if (!is_seq(vargs))
            return malformed(r, "BATCH arguments are not a list of calls");
        out->batch = 1;
        if (!alloc_names(arena, out, vargs->u.seq.n, r))
            return 0;
        for (size_t i = 0; i < vargs->u.seq.n; i++) {
            const value_t *entry = vargs->u.seq.items[i];
            if (!is_seq(entry) || entry->u.seq.n != 3)
                return malformed(r, "a BATCH entry is not (method, args, kwargs)");
            const value_t *m = entry->u.seq.items[0];
            if (!call_check_name(m, "batch method", r))
                return 0;
            add_name(out, CALL_NAME_BATCH_METHOD, m, i, vargs->u.seq.n, entry->u.seq.items[1],
                     entry->u.seq.items[2]);
        }
        return 1;
    }
    if (!alloc_names(arena, out, 1, r))
        return 0;
    /* Property access is dispatched on the exact decoded strings, before the private check
     * (§6 step 6): the attribute name in vargs[0] is what gets looked up. */
    int getattr = value_is_str(method, "__getattr__");
    int setattr = value_is_str(method, "__setattr__");
    if (getattr || setattr) {
        if (!is_seq(vargs) || vargs->u.seq.n != (getattr ? 1u : 2u))
            return malformed(r, getattr ? "__getattr__ needs exactly one argument in a list"
                                        : "__setattr__ needs exactly two arguments in a list");
        const value_t *attr = vargs->u.seq.items[0];
        if (!call_check_name(attr, "attribute", r))
            return 0;
        out->property = getattr ? 'g' : 's';
        add_name(out, CALL_NAME_ATTRIBUTE, attr, 0, 1, NULL, NULL);
        return 1;
    }
    if (!call_check_name(method, "method", r))
        return 0;
    add_name(out, CALL_NAME_METHOD, method, 0, 1, vargs, kwargs);
    return 1;
}

int call_from_invoke(const value_t *top, call_form_t form, uint16_t flags, value_arena_t *arena,
                     call_t *out, call_refusal_t *r)
{
    const value_t *obj, *method, *vargs, *kwargs;

    memset(out, 0, sizeof(*out));
    out->kind = CALL_INVOKE;
    if (form == CALL_FORM_JSON) {
        /* json.loads then data["object"], data["method"], data["params"], data["kwargs"]
         * (§5.2); a duplicated key is already refused by the decoder, extra keys here. */
        if (top == NULL || top->type != VAL_DICT || top->u.dict.n != 4 ||
            value_dict_get(top, "object", &obj) != 1 ||
            value_dict_get(top, "method", &method) != 1 ||
            value_dict_get(top, "params", &vargs) != 1 ||
            value_dict_get(top, "kwargs", &kwargs) != 1)
            return malformed(r, "a json call must be an object with exactly the keys object, "
                                "method, params and kwargs");
    } else {
        /* `objId, method, vargs, kwargs = value` unpacks any 4-iterable (§5); only the honest
         * tuple/list shape is accepted (§10). */
        if (!is_seq(top) || top->u.seq.n != 4)
            return malformed(r, "a call must be a 4-element tuple (object, method, args, kwargs)");
        obj = top->u.seq.items[0];
        method = top->u.seq.items[1];
        vargs = top->u.seq.items[2];
        kwargs = top->u.seq.items[3];
    }
    if (!check_object(obj, r))
        return 0;
    out->object = obj;
    return resolve_method(method, vargs, kwargs, flags, arena, out, r);
}

int call_from_blob(const value_t *blbi, uint16_t flags, value_arena_t *arena, call_t *out,
                   call_refusal_t *r)
{
    memset(out, 0, sizeof(*out));
    out->kind = CALL_INVOKE;
    /* marshal.dumps((blob.info, objectId, methodName)) (§2.8). */
    if (blbi == NULL || blbi->type != VAL_TUPLE || blbi->u.seq.n != 3)
        return malformed(r, "BLBI annotation is not (info, object, method)");
    if (flags & FLAG4_BATCH)
        return malformed(r, "a BATCH call cannot carry a serialized blob");
    const value_t *obj = blbi->u.seq.items[1];
    const value_t *method = blbi->u.seq.items[2];
    if (!check_object(obj, r))
        return 0;
    out->object = obj;
    out->method = method;
    if (value_is_str(method, "__getattr__") || value_is_str(method, "__setattr__"))
        return malformed(r, "property access cannot carry a serialized blob");
    if (!call_check_name(method, "method", r))
        return 0;
    if (!alloc_names(arena, out, 1, r))
        return 0;
    add_name(out, CALL_NAME_METHOD, method, 0, 1, NULL, NULL);
    return 1;
}

int call_from_connect(const value_t *top, int object_required, value_arena_t *arena, call_t *out,
                      call_refusal_t *r)
{
    const value_t *handshake, *obj = NULL;
    memset(out, 0, sizeof(*out));
    out->kind = CALL_CONNECT;
    if (top == NULL || top->type != VAL_DICT)
        return malformed(r, "CONNECT payload is not a dict");
    if (value_dict_get(top, "handshake", &handshake) != 1)
        return malformed(r, "CONNECT payload needs exactly one 'handshake'");
    int has_object = value_dict_get(top, "object", &obj);
    if (has_object < 0)
        return malformed(r, "CONNECT payload has 'object' twice");
    /* Pyro5 reads data["object"] unconditionally (PROTOCOL.md §3.5, §4.2). */
    if (object_required && !has_object)
        return malformed(r, "a Pyro5 CONNECT payload needs 'object'");
    if (top->u.dict.n != 1u + (unsigned)has_object)
        return malformed(r, "CONNECT payload has keys other than 'handshake' and 'object'");
    if (has_object) {
        if (!check_object(obj, r))
            return 0;
        out->object = obj;
    }
    (void)arena;
    return 1;
}
