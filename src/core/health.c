#include "autoconfig.h"

#include <stddef.h>

#include "core/health.h"
#include "lib/db.h"

void
health_check(struct db *db, bool vault_configured, struct health *out)
{
	struct db_res	*res;

	/* A prepared statement: it fails when schema_migrations is absent. */
	res = db_query(db, STMT_SCHEMA_VERSION, 0, NULL);
	out->database = res != NULL;
	db_res_free(res);
	out->vault = out->database && vault_configured;
}
