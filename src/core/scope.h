#ifndef KEYGATE_CORE_SCOPE_H
#define KEYGATE_CORE_SCOPE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Scopes are "resource:action" strings; "resource:*" and "*" are wildcards.
 */

/* True when s is a scope keygate knows (a wildcard included). */
bool	scope_valid(const char *s);
/* True when the granted set allows the needed scope. */
bool	scope_allows(const char *const *granted, size_t n, const char *need);

#endif
