#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "core/auth.h"
#include "core/roles.h"
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
