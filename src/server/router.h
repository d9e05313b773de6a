#ifndef KEYGATE_SERVER_ROUTER_H
#define KEYGATE_SERVER_ROUTER_H

#include <stddef.h>

struct request;

enum http_method {
	METHOD_GET,
	METHOD_POST,
	METHOD_PUT,
	METHOD_PATCH,
	METHOD_DELETE,
	METHOD__MAX
};

/*
 * One row of a route table: the method, a path pattern whose "{id}"
 * segment matches any one segment, or whose final "{id+}" matches the rest
 * of the path (either copied to req->param), the handler, and
 * the scope a caller needs (NULL = open to anyone).
 */
struct route {
	enum http_method method;
	const char	*pattern;
	void		(*handler)(struct request *);
	const char	*scope;
	unsigned	 flags;		/* ROUTE_* */
};

/* The route belongs to the vault: a missing database is the vault's 503. */
#define ROUTE_VAULT	0x01

enum route_result {
	ROUTE_FOUND,
	ROUTE_NOT_FOUND,		/* no pattern matches the path */
	ROUTE_METHOD_NOT_ALLOWED,	/* a pattern matches, not the method */
	ROUTE_RESULT__MAX
};

/*
 * Looks path up in table.  On ROUTE_FOUND *route is set and the {id}
 * segment, if any, copied to param (truncated segments do not match); on
 * ROUTE_METHOD_NOT_ALLOWED allow holds the methods that would have matched,
 * e.g. "GET, DELETE".
 */
enum route_result router_match(const struct route *table, size_t n,
		    const char *method, const char *path,
		    const struct route **route, char *param, size_t paramsz,
		    char *allow, size_t allowsz);
/* The method's name, and the method of a name (METHOD__MAX = unknown). */
enum http_method http_method_parse(const char *);

extern const char *const http_method_names[METHOD__MAX];

#endif
