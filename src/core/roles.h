#ifndef KEYGATE_CORE_ROLES_H
#define KEYGATE_CORE_ROLES_H

#include <stddef.h>

struct db;
struct principal;

enum role_lookup {
	ROLE_FOUND,
	ROLE_NOT_FOUND,		/* no such role, or not one tenant can see */
	ROLE_TOO_MANY_SCOPES,	/* more than a principal holds */
	ROLE_DB,		/* the database failed: db_status() says how */
	ROLE_LOOKUP__MAX
};

/*
 * The scopes role grants, when it is one of the roles tenant can see
 * (its own, an ancestor's, or a built-in one) and the caller's tenant can
 * see that tenant: into *scopes, a principal holding those scopes alone.
 * Whoever gives the role must hold them all; that check is the caller's.
 */
enum role_lookup role_scopes(struct db *, const char *role,
		    const char *tenant, const char *caller_tenant,
		    struct principal *scopes);

/*
 * No role above its giver's scopes: nobody grants a scope it does not
 * hold itself, to a key or through a role.  The first of scopes the giver
 * lacks, or NULL when it holds them all.
 */
const char	*role_scope_beyond(const struct principal *giver,
		    const char *const *scopes, size_t n);

/* What deleting a role came to. */
enum role_removal {
	ROLE_REMOVED,
	ROLE_IN_USE,		/* keys hold it: *assigned says how many */
	ROLE_REMOVAL_DB,	/* the database failed: db_status() says how */
	ROLE_REMOVAL__MAX
};

/*
 * Inside the caller's transaction, deletes role id (one the caller's
 * tenant may change) unless a key holds it: a role in use cannot be
 * deleted, it is taken from its keys first.
 */
enum role_removal role_delete(struct db *, const char *id,
		    const char *caller_tenant, long *assigned)
		    __attribute__((warn_unused_result));

#endif
