#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/credits.h"
#include "core/tenants.h"
#include "lib/db.h"
#include "lib/json.h"

struct json_object *
csv_json_array(const char *csv)
{
	struct json_object *a = json_object_new_array();
	const char	*p = csv, *comma;

	while (*p != '\0') {
		comma = strchr(p, ',');
		if (comma == NULL)
			comma = p + strlen(p);
		json_object_array_add(a,
		    json_object_new_string_len(p, (int)(comma - p)));
		p = *comma == ',' ? comma + 1 : comma;
	}
	return a;
}

static struct json_object *
str_or_null(const struct db_res *r, int row, int col)
{
	const char *v = db_value(r, row, col);

	return *v == '\0' ? NULL : json_object_new_string(v);
}

struct json_object *
tenant_json(const struct db_res *r, int row)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", str_or_null(r, row, TC_ID));
	json_object_object_add(o, "object", json_object_new_string("tenant"));
	json_object_object_add(o, "name",
	    json_object_new_string(db_value(r, row, TC_NAME)));
	json_object_object_add(o, "parent_id", str_or_null(r, row, TC_PARENT));
	json_object_object_add(o, "path",
	    csv_json_array(db_value(r, row, TC_PATH)));
	json_object_object_add(o, "active", json_object_new_boolean(
	    strcmp(db_value(r, row, TC_ACTIVE), "t") == 0));
	json_object_object_add(o, "credits_balance",
	    credits_json(atoll(db_value(r, row, TC_BALANCE))));
	json_object_object_add(o, "credits_reserved",
	    credits_json(atoll(db_value(r, row, TC_RESERVED))));
	json_object_object_add(o, "created_at",
	    str_or_null(r, row, TC_CREATED));
	json_object_object_add(o, "updated_at",
	    str_or_null(r, row, TC_UPDATED));
	return o;
}

struct json_object *
role_json(const struct db_res *r, int row)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", str_or_null(r, row, RC_ID));
	json_object_object_add(o, "object", json_object_new_string("role"));
	json_object_object_add(o, "name",
	    json_object_new_string(db_value(r, row, RC_NAME)));
	json_object_object_add(o, "description",
	    json_object_new_string(db_value(r, row, RC_DESCRIPTION)));
	json_object_object_add(o, "tenant_id", str_or_null(r, row, RC_TENANT));
	json_object_object_add(o, "scopes",
	    csv_json_array(db_value(r, row, RC_SCOPES)));
	json_object_object_add(o, "builtin", json_object_new_boolean(
	    strcmp(db_value(r, row, RC_BUILTIN), "t") == 0));
	json_object_object_add(o, "created_at",
	    str_or_null(r, row, RC_CREATED));
	json_object_object_add(o, "updated_at",
	    str_or_null(r, row, RC_UPDATED));
	return o;
}

enum tenant_result
tenant_within(struct db *db, const char *tenant, const char *caller)
{
	const char	*p[2] = { tenant, caller };
	struct db_res	*res;
	bool		 ok;

	if ((res = db_query(db, STMT_TENANT_IN_SUBTREE, 2, p)) == NULL)
		return TENANT_DB;
	ok = db_rows(res) == 1;
	db_res_free(res);
	return ok ? TENANT_OK : TENANT_NOT_FOUND;
}

enum tenant_result
tenant_below(struct db *db, const char *tenant, const char *caller)
{
	enum tenant_result rc;

	if ((rc = tenant_within(db, tenant, caller)) != TENANT_OK)
		return rc;
	return strcmp(tenant, caller) == 0 ? TENANT_SELF : TENANT_OK;
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
	struct db_res	*res;
	bool		 found;

	p[0] = id;
	p[1] = caller;
	p[2] = name != NULL ? "true" : "false";
	p[3] = name != NULL ? name : "";
	if ((res = db_query(db, STMT_TENANT_UPDATE, 4, p)) == NULL)
		return TENANT_DB;
	found = db_rows(res) == 1;
	db_res_free(res);
	return found ? TENANT_OK : TENANT_NOT_FOUND;
}

int
tenant_deactivate(struct db *db, const char *id)
{
	const char	*p[1] = { id };
	struct db_res	*res;
	int		 n;

	if ((res = db_query(db, STMT_TENANT_DEACTIVATE, 1, p)) == NULL)
		return -1;
	n = db_rows(res);
	db_res_free(res);
	return n;
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
