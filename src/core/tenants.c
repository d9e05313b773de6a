#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tenants.h"
#include "lib/db.h"

enum tenant_result
tenant_within(struct db *db, const char *tenant, const char *caller)
{
	const char	*p[2] = { tenant, caller };
	int		 n;

	if ((n = db_query_count(db, STMT_TENANT_IN_SUBTREE, 2, p)) == -1)
		return TENANT_DB;
	return n == 1 ? TENANT_OK : TENANT_NOT_FOUND;
}

enum tenant_result
tenant_below(struct db *db, const char *tenant, const char *caller)
{
	enum tenant_result rc;

	if ((rc = tenant_within(db, tenant, caller)) != TENANT_OK)
		return rc;
	return strcmp(tenant, caller) == 0 ? TENANT_SELF : TENANT_OK;
}

struct db_res *
tenant_get(struct db *db, const char *id, const char *caller)
{
	const char	*p[2] = { id, caller };

	return db_query(db, STMT_TENANT_GET, 2, p);
}

struct db_res *
tenant_list(struct db *db, const char *caller, const char *cursor, int limit)
{
	return db_query_page(db, STMT_TENANT_LIST, caller, cursor, limit);
}

int
tenant_create(struct db *db, const char *parent, const char *name, char *id,
    size_t idsz)
{
	const char	*p[2] = { parent, name };
	struct db_res	*res;

	if ((res = db_query(db, STMT_TENANT_INSERT, 2, p)) == NULL)
		return -1;
	snprintf(id, idsz, "%s", db_value(res, 0, 0));
	db_res_free(res);
	return 0;
}

enum tenant_result
tenant_rename(struct db *db, const char *id, const char *caller,
    const char *name)
{
	const char	*p[4];
	int		 n;

	p[0] = id;
	p[1] = caller;
	db_param_change(p + 2, name, "");
	if ((n = db_query_count(db, STMT_TENANT_UPDATE, 4, p)) == -1)
		return TENANT_DB;
	return n == 1 ? TENANT_OK : TENANT_NOT_FOUND;
}

int
tenant_deactivate(struct db *db, const char *id)
{
	const char	*p[1] = { id };

	return db_query_count(db, STMT_TENANT_DEACTIVATE, 1, p);
}

/* The parts of an export, in the order they are handed over. */
static const struct {
	const char	*name;
	enum stmt	 stmt;
} export_parts[] = {
	{ "tenants", STMT_EXPORT_TENANTS },
	{ "api_keys", STMT_EXPORT_KEYS },
	{ "roles", STMT_EXPORT_ROLES },
	{ "llm_keys", STMT_EXPORT_LLM_KEYS },
	{ "usage", STMT_EXPORT_USAGE },
	{ "audit_log", STMT_EXPORT_AUDIT },
};

/* Each row of an export statement is one column: an object's JSON. */
static int
export_row(void *arg, const struct db_res *row)
{
	struct tenant_export_sink *sink = arg;

	return sink->row(sink->arg, db_value(row, 0, 0));
}

int
tenant_export(struct db *db, const char *id,
    const struct tenant_export_sink *sink)
{
	struct tenant_export_sink to = *sink;	/* db_each_row()'s arg */
	const char	*p[1] = { id };
	size_t		 i;
	int		 rc;

	for (i = 0; i < sizeof(export_parts) / sizeof(export_parts[0]); i++) {
		if (to.part(to.arg, export_parts[i].name) == -1)
			return 1;
		if ((rc = db_each_row(db, export_parts[i].stmt, 1, p,
		    export_row, &to)) != 0)
			return rc;
		if (to.part_end(to.arg) == -1)
			return 1;
	}
	return 0;
}

char *
tenant_purge(struct db *db, const char *id)
{
	const char	*p[1] = { id };
	struct db_res	*res;
	char		*counts;

	if ((res = db_query(db, STMT_TENANT_PURGE, 1, p)) == NULL)
		return NULL;
	counts = strdup(db_value(res, 0, 0));
	db_res_free(res);
	return counts;
}
