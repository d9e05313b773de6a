#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/auth.h"
#include "core/roles.h"
#include "core/tenants.h"
#include "lib/db.h"

enum role_lookup
role_scopes(struct db *db, const char *role, const char *tenant,
    const char *caller_tenant, struct principal *scopes)
{
	const char	*p[3] = { role, tenant, caller_tenant };
	struct db_res	*res;
	enum role_lookup rc = ROLE_FOUND;

	if ((res = db_query(db, STMT_ROLE_SCOPES, 3, p)) == NULL)
		return ROLE_DB;
	memset(scopes, 0, sizeof(*scopes));
	if (db_rows(res) == 0)
		rc = ROLE_NOT_FOUND;
	else if (auth_set_scopes(scopes, db_value(res, 0, 0)) == -1)
		rc = ROLE_TOO_MANY_SCOPES;
	db_res_free(res);
	return rc;
}

const char *
role_scope_beyond(const struct principal *giver, const char *const *scopes,
    size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (!auth_allows(giver, scopes[i]))
			return scopes[i];
	return NULL;
}

enum role_removal
role_delete(struct db *db, const char *id, const char *caller_tenant,
    long *assigned)
{
	const char	*p[2] = { id, caller_tenant };
	struct db_res	*res;

	if ((res = db_query(db, STMT_ROLE_ASSIGNED, 1, p)) == NULL)
		return ROLE_REMOVAL_DB;
	*assigned = atol(db_value(res, 0, 0));
	db_res_free(res);
	if (*assigned > 0)
		return ROLE_IN_USE;
	if (db_exec(db, STMT_ROLE_DELETE, 2, p) == -1)
		return ROLE_REMOVAL_DB;
	return ROLE_REMOVED;
}

bool
role_may_add_global(const char *caller_tenant)
{
	return strcmp(caller_tenant, TENANT_ROOT) == 0;
}

/* A unique_violation: the name is its tenant's already. */
static enum role_write
write_failed(struct db *db)
{
	return strcmp(db_sqlstate(db), "23505") == 0 ? ROLE_NAME_TAKEN :
	    ROLE_WRITE_DB;
}

enum role_write
role_create(struct db *db, const char *tenant, const char *name,
    const char *description, const char *scopes, char *id, size_t idsz)
{
	const char	*p[4] = { tenant, name, description, scopes };
	struct db_res	*res;

	if (p[2] == NULL)
		p[2] = "";
	if ((res = db_query(db, STMT_ROLE_INSERT, 4, p)) == NULL)
		return write_failed(db);
	snprintf(id, idsz, "%s", db_value(res, 0, 0));
	db_res_free(res);
	return ROLE_WRITTEN;
}

enum role_write
role_update(struct db *db, const char *id, const char *caller_tenant,
    const char *name, const char *description, const char *scopes)
{
	const char	*p[8];
	int		 n;

	p[0] = id;
	p[1] = caller_tenant;
	db_param_change(p + 2, name, "");
	db_param_change(p + 4, description, "");
	db_param_change(p + 6, scopes, "{}");
	if ((n = db_query_count(db, STMT_ROLE_UPDATE, 8, p)) == -1)
		return write_failed(db);
	return n == 1 ? ROLE_WRITTEN : ROLE_WRITE_NOT_FOUND;
}

struct db_res *
role_get(struct db *db, const char *id, const char *caller_tenant)
{
	const char	*p[2] = { id, caller_tenant };

	return db_query(db, STMT_ROLE_GET, 2, p);
}

struct db_res *
role_list(struct db *db, const char *caller_tenant, const char *cursor,
    int limit)
{
	return db_query_page(db, STMT_ROLE_LIST, caller_tenant, cursor, limit);
}
