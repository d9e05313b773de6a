#include "autoconfig.h"

#include <string.h>

#include "core/scope.h"

/* Every scope of SPEC §3; wildcards are derived from these. */
static const char *const known[] = {
	"api_keys:read", "api_keys:write", "roles:read", "roles:write",
	"tenants:read", "tenants:write", "tenants:admin", "llm_keys:read",
	"llm_keys:write", "chat:write", "embeddings:write", "models:read",
	"account:read", "audit:read", "keys:verify", "maintenance:write",
	"metrics:read",
};

#define NKNOWN (sizeof(known) / sizeof(known[0]))

/* A resource or action name of a service's own: [a-z][a-z0-9_.-]{0,39}. */
static bool
name_ok(const char *s, size_t n)
{
	size_t	 i;

	if (n == 0 || n > 40 || s[0] < 'a' || s[0] > 'z')
		return false;
	for (i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		    s[i] == '.' || s[i] == '-'))
			return false;
	return true;
}

/* True when resource (rl bytes) is one of keygate's own. */
static bool
own_resource(const char *resource, size_t rl)
{
	size_t	 i;

	for (i = 0; i < NKNOWN; i++)
		if (strncmp(known[i], resource, rl) == 0 &&
		    known[i][rl] == ':')
			return true;
	return false;
}

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
	if ((colon = strchr(s, ':')) == NULL)
		return false;
	rl = (size_t)(colon - s);
	/* "resource:*" for keygate's resources and the services'. */
	if (strcmp(colon, ":*") == 0)
		return own_resource(s, rl) || name_ok(s, rl);
	/*
	 * The services keygate guards as an authorizer name their own
	 * scopes ("reports:read"); keygate's own resources have only the
	 * actions listed above.
	 */
	return !own_resource(s, rl) && name_ok(s, rl) &&
	    name_ok(colon + 1, strlen(colon + 1));
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
