#ifndef KEYGATE_CORE_ROLES_H
#define KEYGATE_CORE_ROLES_H

#include <stdbool.h>
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

/* Global roles reach every tenant: only the root tenant adds them. */
bool		 role_may_add_global(const char *caller_tenant);

/* What writing a role came to. */
enum role_write {
	ROLE_WRITTEN,
	ROLE_NAME_TAKEN,	/* its tenant has a role of that name */
	ROLE_WRITE_NOT_FOUND,	/* no such role the caller may change */
	ROLE_WRITE_DB,		/* the database failed: db_status() says how */
	ROLE_WRITE__MAX
};

/*
 * Inside the caller's transaction, a new role of tenant (NULL = global)
 * granting scopes (a PostgreSQL array literal, key_scopes_literal()); its
 * id into id.  A failure other than ROLE_WRITE_DB leaves the transaction
 * to be rolled back.
 */
enum role_write	 role_create(struct db *, const char *tenant,
		    const char *name, const char *description,
		    const char *scopes, char *id, size_t idsz)
		    __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, changes role id of caller's subtree:
 * each of name, description and scopes that is not NULL.
 */
enum role_write	 role_update(struct db *, const char *id,
		    const char *caller_tenant, const char *name,
		    const char *description, const char *scopes)
		    __attribute__((warn_unused_result));
/*
 * Role id as caller_tenant sees it: a row of enum role_col (core/tenants.h)
 * or none, to be freed with db_res_free(); NULL with db_status() set.
 */
struct db_res	*role_get(struct db *, const char *id,
		    const char *caller_tenant)
		    __attribute__((warn_unused_result));
/*
 * The roles caller_tenant sees after the one of id cursor (NULL = from the
 * first), at most limit: rows of enum role_col to be freed with
 * db_res_free(), or NULL with db_status() set.
 */
struct db_res	*role_list(struct db *, const char *caller_tenant,
		    const char *cursor, int limit)
		    __attribute__((warn_unused_result));

#endif
