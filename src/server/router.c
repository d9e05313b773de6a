#include "autoconfig.h"

#include <stdbool.h>
#include <string.h>

#include "server/router.h"

const char *const http_method_names[METHOD__MAX] = {
	"GET",		/* METHOD_GET */
	"POST",		/* METHOD_POST */
	"PUT",		/* METHOD_PUT */
	"PATCH",	/* METHOD_PATCH */
	"DELETE",	/* METHOD_DELETE */
};

enum http_method
http_method_parse(const char *s)
{
	int	 m;

	for (m = 0; m < METHOD__MAX; m++)
		if (strcmp(s, http_method_names[m]) == 0)
			return (enum http_method)m;
	return METHOD__MAX;
}

/*
 * Matches one pattern against a path segment by segment.  "{id}" takes one
 * non-empty segment, and "{id+}" at the end of a pattern the rest of the
 * path, slashes included (model ids such as "openai/gpt-4o"); everything
 * else must be equal.  A trailing slash is not the same path.
 */
static bool
match(const char *pat, const char *path, char *param, size_t paramsz)
{
	while (*pat != '\0' && *path != '\0') {
		if (strcmp(pat, "{id+}") == 0) {
			size_t n = strlen(path);

			if (n >= paramsz || path[n - 1] == '/')
				return false;
			memcpy(param, path, n + 1);
			return true;
		}
		if (strncmp(pat, "{id}", 4) == 0) {
			size_t n = strcspn(path, "/");

			if (n == 0 || n >= paramsz)
				return false;
			memcpy(param, path, n);
			param[n] = '\0';
			pat += 4;
			path += n;
			continue;
		}
		if (*pat != *path)
			return false;
		pat++;
		path++;
	}
	return *pat == '\0' && *path == '\0';
}

enum route_result
router_match(const struct route *table, size_t n, const char *method,
    const char *path, const struct route **route, char *param,
    size_t paramsz, char *allow, size_t allowsz)
{
	enum http_method m = http_method_parse(method);
	bool		 seen[METHOD__MAX] = { false };
	bool		 any = false;
	size_t		 i, used = 0;
	char		 scratch[256];

	*route = NULL;
	if (allowsz > 0)
		allow[0] = '\0';
	for (i = 0; i < n; i++) {
		if (!match(table[i].pattern, path, scratch,
		    paramsz < sizeof(scratch) ? paramsz : sizeof(scratch)))
			continue;
		any = true;
		if (table[i].method == m) {
			(void)match(table[i].pattern, path, param, paramsz);
			*route = &table[i];
			return ROUTE_FOUND;
		}
		seen[table[i].method] = true;
	}
	if (!any)
		return ROUTE_NOT_FOUND;
	for (i = 0; i < METHOD__MAX; i++) {
		size_t len = strlen(http_method_names[i]);

		if (!seen[i] || used + len + 3 > allowsz)
			continue;
		if (used > 0) {
			memcpy(allow + used, ", ", 2);
			used += 2;
		}
		memcpy(allow + used, http_method_names[i], len);
		used += len;
		allow[used] = '\0';
	}
	return ROUTE_METHOD_NOT_ALLOWED;
}
