#include "policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DAEMON_OBJECT "Pyro.Daemon"

/* ---- client rules --------------------------------------------------------------------- */

static int patterns_match(const config_patterns_t *l, const char *s, size_t n)
{
    for (size_t i = 0; i < l->n; i++) {
        if (pattern_match(&l->items[i], s, n))
            return 1;
    }
    return 0;
}

/* Where each field's values lie in an identity: [first, end), read once per client so that
 * no rule scans values of other fields. */
typedef struct {
    uint8_t first[ID_FIELDS];
    uint8_t end[ID_FIELDS];
} field_ranges_t;

static void field_ranges(const identity_t *id, field_ranges_t *r)
{
    memset(r, 0, sizeof(*r));
    for (size_t i = id->n_values; i-- > 0;) {
        size_t f = id->field_of[i];
        if (f >= ID_FIELDS)
            continue;
        if (r->end[f] == 0)
            r->end[f] = (uint8_t)(i + 1);
        r->first[f] = (uint8_t)i;
    }
}

static int rule_matches(const config_client_t *c, const identity_t *id, const field_ranges_t *r)
{
    for (size_t f = 0; f < ID_FIELDS; f++) {
        const config_patterns_t *l = &c->match[f];
        if (l->n == 0)
            continue;
        int any = 0;
        for (size_t i = r->first[f]; i < r->end[f] && !any; i++) {
            if (id->field_of[i] == f)
                any = patterns_match(l, id->values[i], id->lens[i]);
        }
        if (!any)
            return 0;
    }
    return 1;
}

int policy_match_client(const config_t *cfg, const identity_t *id)
{
    field_ranges_t r;
    const char *only[ID_FIELDS]; /* the value of a field that has exactly one, else NULL */
    size_t only_len[ID_FIELDS];

    field_ranges(id, &r);
    for (size_t f = 0; f < ID_FIELDS; f++) {
        only[f] = r.end[f] == r.first[f] + 1 ? id->values[r.first[f]] : NULL;
        only_len[f] = only[f] != NULL ? id->lens[r.first[f]] : 0;
    }
    for (size_t i = 0; i < cfg->n_cert_rules; i++) { /* egress rules follow: not for certs */
        /* The screen decides most rules from one 24-byte entry (config_screen_t), usually
         * against the one value a certificate has for the field. */
        const config_screen_t *sc = &cfg->screens[i];
        if (sc->active) {
            size_t f = sc->field;
            if (only[f] != NULL) {
                if (!pattern_screen_pass(&sc->screen, only[f], only_len[f]))
                    continue;
            } else {
                size_t v = r.first[f], end = r.end[f];
                while (v < end && !pattern_screen_pass(&sc->screen, id->values[v], id->lens[v]))
                    v++;
                if (v == end)
                    continue;
            }
        }
        if (rule_matches(&cfg->clients[i], id, &r))
            return (int)i;
    }
    return POLICY_NO_RULE;
}

static int refuse(policy_decision_t *d, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(policy_decision_t *d, const char *reason, const char *fmt, ...)
{
    va_list ap;
    d->allowed = 0;
    d->reason = reason;
    va_start(ap, fmt);
    vsnprintf(d->detail, sizeof(d->detail), fmt, ap);
    va_end(ap);
    return 0;
}

void policy_refuse_unmatched(const identity_t *id, policy_decision_t *d)
{
    char who[240];
    memset(d, 0, sizeof(*d));
    identity_summary(id, who, sizeof(who));
    refuse(d, "no_matching_rule", "pyroguard: no client rule matches the certificate of %s", who);
}

/* ---- objects and names ---------------------------------------------------------------- */

static const config_patterns_t *names_of(const config_access_t *a, call_name_kind_t kind,
                                         int property)
{
    if (kind == CALL_NAME_ATTRIBUTE)
        return property == 's' ? &a->set : &a->get;
    return &a->methods;
}

static int entry_has_names(const config_access_t *a)
{
    return a->methods.n != 0 || a->get.n != 0 || a->set.n != 0;
}

/* find_entry returns the index of the first entry of |list| covering (object, name), or -1.
 * With |name| NULL it looks for entries covering the whole object (deny entries without
 * names). */
static long find_entry(const config_access_t *list, size_t n, const char *obj, size_t obj_len,
                       call_name_kind_t kind, int property, const char *name, size_t name_len)
{
    for (size_t i = 0; i < n; i++) {
        const config_access_t *a = &list[i];
        if (!patterns_match(&a->objects, obj, obj_len))
            continue;
        if (name == NULL) {
            if (!entry_has_names(a))
                return (long)i;
            continue;
        }
        if (!entry_has_names(a) || patterns_match(names_of(a, kind, property), name, name_len))
            return (long)i;
    }
    return -1;
}

/* allow_entry_for_object returns the first allow entry naming |obj| at all, or -1. */
static long allow_entry_for_object(const config_client_t *c, const char *obj, size_t n)
{
    for (size_t i = 0; i < c->n_allow; i++) {
        if (patterns_match(&c->allow[i].objects, obj, n))
            return (long)i;
    }
    return -1;
}

static int is_daemon(const char *obj, size_t n)
{
    return n == sizeof(DAEMON_OBJECT) - 1 && memcmp(obj, DAEMON_OBJECT, n) == 0;
}

/* object_usable decides whether |obj| may be used at all (CONNECT metadata, get_metadata). */
static int object_usable(const config_client_t *c, const char *obj, size_t n, policy_decision_t *d,
                         const char *what)
{
    char shown[200];
    value_t v = {.type = VAL_STR};
    v.u.str.data = (const uint8_t *)obj;
    v.u.str.len = n;

    long deny = find_entry(c->deny, c->n_deny, obj, n, CALL_NAME_METHOD, 0, NULL, 0);
    if (deny >= 0) {
        call_render_str(&v, shown, sizeof(shown));
        d->entry_kind = 'd';
        d->entry_index = (size_t)deny;
        return refuse(d, "denied_by_rule", "pyroguard: %s '%s' is denied for client rule '%s'",
                      what, shown, c->name);
    }
    if (is_daemon(obj, n)) {
        d->entry_kind = 'p';
        return 1;
    }
    long allow = allow_entry_for_object(c, obj, n);
    if (allow < 0) {
        call_render_str(&v, shown, sizeof(shown));
        d->entry_kind = 0;
        return refuse(d, "object_not_allowed",
                      "pyroguard: %s '%s' is not allowed for client rule '%s'", what, shown,
                      c->name);
    }
    d->entry_kind = 'a';
    d->entry_index = (size_t)allow;
    return 1;
}

static int too_long(const value_t *v)
{
    return v->u.str.len > PATTERN_MAX_SUBJECT;
}

/* metadata_target reads get_metadata(objectId, as_lists=False)'s object id (§6.3, §8 row 8):
 * vargs[0], or kwargs["objectId"] when vargs is empty. */
static const value_t *metadata_target(const call_name_t *nm)
{
    const value_t *a = nm->args, *kw = nm->kwargs, *target = NULL;
    if (a == NULL || (a->type != VAL_TUPLE && a->type != VAL_LIST))
        return NULL;
    int in_kwargs = 0;
    if (kw != NULL && kw->type == VAL_DICT) {
        in_kwargs = value_dict_get(kw, "objectId", &target);
        if (in_kwargs < 0)
            return NULL;
    } else if (kw != NULL) {
        return NULL;
    }
    if (a->u.seq.n >= 1) {
        if (in_kwargs)
            return NULL; /* given twice: the daemon raises TypeError; refuse the ambiguity */
        target = a->u.seq.items[0];
    }
    return target != NULL && target->type == VAL_STR ? target : NULL;
}

/* daemon_builtin decides the methods of Pyro.Daemon that come with the objects a client may
 * use. Returns 1 (allowed), 0 (refused, |d| filled) or -1 (not a built-in: normal rules). */
static int daemon_builtin(const config_client_t *c, const call_name_t *nm, policy_decision_t *d)
{
    if (nm->kind == CALL_NAME_ATTRIBUTE)
        return -1;
    const value_t *m = nm->name;
    /* They serve the objects a client may use: a rule that allows nothing gets none. */
    if (c->n_allow == 0)
        return -1;
    if (value_is_str(m, "ping") || value_is_str(m, "get_next_stream_item") ||
        value_is_str(m, "close_stream")) {
        d->entry_kind = 'p';
        return 1;
    }
    if (!value_is_str(m, "get_metadata"))
        return -1;
    const value_t *target = metadata_target(nm);
    if (target == NULL)
        return refuse(d, "malformed_call",
                      "pyroguard: Pyro.Daemon.get_metadata needs one object id (a str)");
    if (too_long(target))
        return refuse(d, "name_too_long", "pyroguard: object id longer than %d bytes",
                      PATTERN_MAX_SUBJECT);
    if (!object_usable(c, (const char *)target->u.str.data, target->u.str.len, d,
                       "metadata of object"))
        return 0;
    return 1;
}

static const char *kind_word(call_name_kind_t kind, int property)
{
    if (kind == CALL_NAME_ATTRIBUTE)
        return property == 's' ? "writing property" : "reading property";
    return kind == CALL_NAME_BATCH_METHOD ? "batch method" : "method";
}

static int decide_name(const config_client_t *c, const value_t *obj, const call_name_t *nm,
                       int property, policy_decision_t *d)
{
    const char *o = (const char *)obj->u.str.data;
    size_t on = obj->u.str.len;
    const char *name = (const char *)nm->name->u.str.data;
    size_t nn = nm->name->u.str.len;
    char shown_obj[160], shown_name[160];

    if (too_long(nm->name))
        return refuse(d, "name_too_long", "pyroguard: name longer than %d bytes",
                      PATTERN_MAX_SUBJECT);
    /* The object and the name are rendered for messages only when refusing: most calls are
     * allowed, and rendering costs more than deciding. */
    long deny = find_entry(c->deny, c->n_deny, o, on, nm->kind, property, name, nn);
    if (deny >= 0) {
        call_render_str(obj, shown_obj, sizeof(shown_obj));
        call_render_str(nm->name, shown_name, sizeof(shown_name));
        d->entry_kind = 'd';
        d->entry_index = (size_t)deny;
        return refuse(d, "denied_by_rule",
                      "pyroguard: %s '%s' of object '%s' is denied for "
                      "client rule '%s'",
                      kind_word(nm->kind, property), shown_name, shown_obj, c->name);
    }
    /* get_metadata(objectId) discloses another object's methods: whatever entry allows the
     * call, its target must be usable, so a name-less deny entry keeps hiding its objects. */
    if (is_daemon(o, on) && nm->kind != CALL_NAME_ATTRIBUTE &&
        value_is_str(nm->name, "get_metadata")) {
        int r = daemon_builtin(c, nm, d);
        if (r >= 0)
            return r;
    }
    /* Explicit allow entries first: they also open registered() and info() on Pyro.Daemon,
     * but only when the entry names the object literally. */
    int daemon_by_glob = 0;
    for (size_t i = 0; i < c->n_allow; i++) {
        const config_access_t *a = &c->allow[i];
        if (!patterns_match(&a->objects, o, on) ||
            !patterns_match(names_of(a, nm->kind, property), name, nn))
            continue;
        if (is_daemon(o, on)) {
            int literal = 0;
            for (size_t k = 0; k < a->objects.n && !literal; k++)
                literal = pattern_is_literal(&a->objects.items[k], DAEMON_OBJECT);
            if (!literal) {
                daemon_by_glob = 1;
                continue;
            }
        }
        d->entry_kind = 'a';
        d->entry_index = i;
        return 1;
    }
    if (is_daemon(o, on)) {
        int r = daemon_builtin(c, nm, d);
        if (r >= 0)
            return r;
    }
    call_render_str(obj, shown_obj, sizeof(shown_obj));
    call_render_str(nm->name, shown_name, sizeof(shown_name));
    d->entry_kind = 0;
    if (daemon_by_glob)
        return refuse(d, "not_allowed",
                      "pyroguard: %s '%s' of object 'Pyro.Daemon' is allowed only by an entry "
                      "naming the object \"Pyro.Daemon\" literally (client rule '%s')",
                      kind_word(nm->kind, property), shown_name, c->name);
    /* Say which it is: the object is not the client's at all, or just not this name. */
    if (!is_daemon(o, on) && allow_entry_for_object(c, o, on) < 0)
        return refuse(d, "object_not_allowed",
                      "pyroguard: object '%s' is not allowed for client rule '%s'", shown_obj,
                      c->name);
    return refuse(d, "not_allowed",
                  "pyroguard: %s '%s' of object '%s' is not allowed for "
                  "client rule '%s'",
                  kind_word(nm->kind, property), shown_name, shown_obj, c->name);
}

/* decision_reset empties |d| without clearing all of |detail|, which most decisions never
 * write. */
static void decision_reset(policy_decision_t *d)
{
    d->allowed = 0;
    d->reason = NULL;
    d->detail[0] = '\0';
    d->entry_kind = 0;
    d->entry_index = 0;
    d->name_index = 0;
}

int policy_decide(const config_t *cfg, int rule, const call_t *call, int connect_wants_metadata,
                  policy_decision_t *d)
{
    decision_reset(d);
    if (rule < 0 || (size_t)rule >= cfg->n_clients)
        return refuse(d, "no_matching_rule", "pyroguard: no client rule matches");
    const config_client_t *c = &cfg->clients[rule];

    if (call->kind == CALL_CONNECT) {
        if (call->object == NULL) {
            if (connect_wants_metadata)
                return refuse(d, "malformed_call",
                              "pyroguard: CONNECT asks for metadata without naming an object");
            /* Nothing named: the matching rule is all it takes. */
            d->allowed = 1;
            d->reason = "allowed";
            return 1;
        }
        if (too_long(call->object))
            return refuse(d, "name_too_long", "pyroguard: object id longer than %d bytes",
                          PATTERN_MAX_SUBJECT);
        if (!object_usable(c, (const char *)call->object->u.str.data, call->object->u.str.len, d,
                           "object"))
            return 0;
        d->allowed = 1;
        d->reason = "allowed";
        return 1;
    }
    if (call->object == NULL || call->object->type != VAL_STR)
        return refuse(d, "malformed_call", "pyroguard: call without an object id");
    if (too_long(call->object))
        return refuse(d, "name_too_long", "pyroguard: object id longer than %d bytes",
                      PATTERN_MAX_SUBJECT);
    if (call->n_names == 0)
        return refuse(d, "malformed_call", "pyroguard: call without a name");
    for (size_t i = 0; i < call->n_names; i++) {
        d->name_index = i;
        if (!decide_name(c, call->object, &call->names[i], call->property, d))
            return 0;
    }
    d->allowed = 1;
    d->reason = "allowed";
    return 1;
}

void policy_entry_text(const config_t *cfg, int rule, const policy_decision_t *d, char *out,
                       size_t out_len)
{
    if (rule < 0 || (size_t)rule >= cfg->n_clients || d->entry_kind == 0) {
        snprintf(out, out_len, "%s", "");
        return;
    }
    if (d->entry_kind == 'p')
        snprintf(out, out_len, "built-in Pyro.Daemon rule");
    else if (cfg->clients[rule].egress)
        snprintf(out, out_len, "%s.%s[%zu]", cfg->clients[rule].name,
                 d->entry_kind == 'a' ? "allow" : "deny", d->entry_index);
    else
        snprintf(out, out_len, "clients[%d].%s[%zu]", rule, d->entry_kind == 'a' ? "allow" : "deny",
                 d->entry_index);
}
