#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/usage.h"
#include "lib/db.h"

enum usage_result
usage_account(struct db *db, const char *tenant, struct usage_account *out)
{
	const char	*p[1] = { tenant };
	struct db_res	*res;

	if ((res = db_query(db, STMT_ACCOUNT, 1, p)) == NULL)
		return USAGE_DB;
	if (db_rows(res) != 1) {
		db_res_free(res);
		return USAGE_NOT_FOUND;
	}
	out->balance = atoll(db_value(res, 0, 0));
	out->reserved = atoll(db_value(res, 0, 1));
	out->active_keys = atoll(db_value(res, 0, 2));
	out->total_keys = atoll(db_value(res, 0, 3));
	db_res_free(res);
	return USAGE_OK;
}

struct db_res *
usage_list(struct db *db, const char *tenant, const char *from,
    const char *to, const char *cursor, int limit)
{
	const char	*p[5] = { tenant, from, to, cursor, NULL };
	char		 lim[16];

	snprintf(lim, sizeof(lim), "%d", limit);
	p[4] = lim;
	return db_query(db, STMT_USAGE_LIST, 5, p);
}

int
usage_totals(struct db *db, const char *tenant, const char *from,
    const char *to, struct usage_totals *out)
{
	const char	*p[3] = { tenant, from, to };
	struct db_res	*res;

	if ((res = db_query(db, STMT_USAGE_TOTALS, 3, p)) == NULL)
		return -1;
	out->requests = atoll(db_value(res, 0, 0));
	out->prompt_tokens = atoll(db_value(res, 0, 1));
	out->completion_tokens = atoll(db_value(res, 0, 2));
	out->charged = atoll(db_value(res, 0, 3));
	db_res_free(res);
	return 0;
}
