#ifndef KEYGATE_CORE_TENANTS_H
#define KEYGATE_CORE_TENANTS_H

struct db_res;
struct json_object;

#define TENANT_ROOT "00000000-0000-0000-0000-000000000001"

/* The columns of a tenant row (TENANT_COLS in db.c), in order. */
enum tenant_col {
	TC_ID, TC_PARENT, TC_NAME, TC_PATH, TC_ACTIVE, TC_BALANCE,
	TC_RESERVED, TC_CREATED, TC_UPDATED, TC__MAX
};

/* The columns of a role row (ROLE_COLS in db.c), then "modifiable". */
enum role_col {
	RC_ID, RC_TENANT, RC_NAME, RC_DESCRIPTION, RC_SCOPES, RC_BUILTIN,
	RC_CREATED, RC_UPDATED, RC_MINE, RC__MAX
};

/* The API's view of a tenant row; a new object the caller owns. */
struct json_object *tenant_json(const struct db_res *, int row);
/* The API's view of a role row; a new object the caller owns. */
struct json_object *role_json(const struct db_res *, int row);
/* "a,b,c" as a JSON array of strings; a new object. */
struct json_object *csv_json_array(const char *);

#endif
