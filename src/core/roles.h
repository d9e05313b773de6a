#ifndef KEYGATE_CORE_ROLES_H
#define KEYGATE_CORE_ROLES_H

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

#endif
