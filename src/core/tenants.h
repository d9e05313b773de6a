#ifndef KEYGATE_CORE_TENANTS_H
#define KEYGATE_CORE_TENANTS_H

#include "lib/db.h"

struct db_res;
struct json_object;

#define TENANT_ROOT "00000000-0000-0000-0000-000000000001"

/* The columns of a tenant row, in order: the list is DB_TENANT_COLUMNS. */
enum tenant_col {
	DB_TENANT_COLUMNS(DB_COLS_ENUM)
	TC__MAX
};

/* The columns of a role row (DB_ROLE_COLUMNS), then "modifiable". */
enum role_col {
	DB_ROLE_COLUMNS(DB_COLS_ENUM)
	RC_MINE,
	RC__MAX
};

/* The API's view of a tenant row; a new object the caller owns. */
struct json_object *tenant_json(const struct db_res *, int row);
/* The API's view of a role row; a new object the caller owns. */
struct json_object *role_json(const struct db_res *, int row);
/* "a,b,c" as a JSON array of strings; a new object. */
struct json_object *csv_json_array(const char *);

#endif
