#include "autoconfig.h"

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
