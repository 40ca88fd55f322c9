/* policy: which verified client may call what (DESIGN.md `clients:`), decided after the name
 * rules of call.h have passed.
 *
 * A client's rule is the first of cfg->clients whose every given match key matches its
 * identity (a key matches when any of the certificate's values for that field matches any of
 * the key's patterns). A client without a rule is refused at CONNECT.
 *
 * A name is allowed when no deny entry of the rule covers it and an allow entry does. An entry
 * covers a name when one of its object patterns matches the object id and one of the
 * patterns of the name's kind matches the name: `methods` for method calls (plain or in a
 * BATCH), `get` for property reads, `set` for property writes. A deny entry with none of
 * those lists covers every name on its objects, and makes the objects unusable.
 *
 * An object is usable when an allow entry's object patterns match it and no name-less deny
 * entry does. The CONNECT `object` (metadata lookup, PROTOCOL.md §8 row 3) must be usable.
 *
 * `Pyro.Daemon` (PROTOCOL.md §6.3) is usable by every client with a rule. When the rule allows
 * anything at all, `ping`, `get_next_stream_item` and `close_stream` are allowed with it, and
 * `get_metadata(objectId)` when objectId is a str naming a usable object; `registered` and `info`
 * (which discloses the internal address) only through an allow entry whose object is the literal
 * "Pyro.Daemon". Deny entries apply to Pyro.Daemon like to any object.
 *
 * Nothing here allocates; decisions are pure functions of the configuration and the call. */
#ifndef PYROGUARD_POLICY_H
#define PYROGUARD_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "call.h"
#include "config.h"
#include "identity.h"

#define POLICY_NO_RULE (-1)

typedef struct {
    int allowed;
    /* Stable code for logs and metrics: "allowed", "no_matching_rule", "denied_by_rule",
     * "not_allowed", "object_not_allowed", "name_too_long", "malformed_call". */
    const char *reason;
    char detail[320]; /* "pyroguard: …", what the client and the operator are told */
    /* The entry that decided: 'a' (allow), 'd' (deny), 'p' (built-in Pyro.Daemon rule) or 0
     * (nothing matched), and its index in the rule's allow or deny list. */
    char entry_kind;
    size_t entry_index;
    size_t name_index; /* the call name the decision is about (the first refused one) */
} policy_decision_t;

/* policy_match_client returns the index of the first rule of |cfg| matching |id|, or
 * POLICY_NO_RULE. */
int policy_match_client(const config_t *cfg, const identity_t *id);

/* policy_refuse_unmatched fills |d| with the refusal of a client that matches no rule, naming
 * its identity. */
void policy_refuse_unmatched(const identity_t *id, policy_decision_t *d);

/* policy_decide judges |call| (names already checked by call.h) for rule |rule| of |cfg|;
 * |connect_wants_metadata| is set for a CONNECT carrying META_ON_CONNECT (Pyro4 flag 0x10).
 * Returns d->allowed. */
int policy_decide(const config_t *cfg, int rule, const call_t *call, int connect_wants_metadata,
                  policy_decision_t *d);

/* policy_entry_text describes the deciding entry of |d| ("clients[0].allow[1]"), or "" . */
void policy_entry_text(const config_t *cfg, int rule, const policy_decision_t *d, char *out,
                       size_t out_len);

#endif
