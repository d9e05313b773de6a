#include "autoconfig.h"

#include <string.h>

#include "core/scope.h"

/* Every scope of SPEC §3; wildcards are derived from these. */
static const char *const known[] = {
	"api_keys:read", "api_keys:write", "roles:read", "roles:write",
	"tenants:read", "tenants:write", "tenants:admin", "llm_keys:read",
	"llm_keys:write", "chat:write", "embeddings:write", "models:read",
	"account:read",
	"audit:read", "keys:verify", "maintenance:write",
};

#define NKNOWN (sizeof(known) / sizeof(known[0]))

bool
scope_valid(const char *s)
{
	size_t	 i, rl;
	const char *colon;

	if (strcmp(s, "*") == 0)
		return true;
	for (i = 0; i < NKNOWN; i++)
		if (strcmp(s, known[i]) == 0)
			return true;
	/* "resource:*" for a resource that exists. */
	if ((colon = strchr(s, ':')) == NULL || strcmp(colon, ":*") != 0)
		return false;
	rl = (size_t)(colon - s);
	for (i = 0; i < NKNOWN; i++)
		if (strncmp(known[i], s, rl) == 0 && known[i][rl] == ':')
			return true;
	return false;
}

static bool
one_allows(const char *g, const char *need)
{
	size_t	 gl = strlen(g);

	if (strcmp(g, "*") == 0 || strcmp(g, need) == 0)
		return true;
	/* "api_keys:*" allows "api_keys:read". */
	return gl >= 2 && strcmp(g + gl - 2, ":*") == 0 &&
	    strncmp(g, need, gl - 1) == 0;
}

bool
scope_allows(const char *const *granted, size_t n, const char *need)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (one_allows(granted[i], need))
			return true;
	return false;
}
