#ifndef KEYGATE_CORE_SCOPE_H
#define KEYGATE_CORE_SCOPE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Scopes are "resource:action" strings; "resource:*" and "*" are wildcards.
 */

/*
 * True when s is a scope a key may hold: one of keygate's own (a wildcard
 * included), or a scope of a service keygate guards as an authorizer,
 * "resource:action" in lower case, whose resource is not keygate's.
 */
bool	scope_valid(const char *s);
/* True when the granted set allows the needed scope. */
bool	scope_allows(const char *const *granted, size_t n, const char *need);

#endif
