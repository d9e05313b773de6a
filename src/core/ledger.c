#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ledger.h"
#include "core/tenants.h"
#include "lib/db.h"

bool
ledger_mints(const char *giver)
{
	return strcmp(giver, TENANT_ROOT) == 0;
}

enum ledger_result
ledger_may_give(const char *giver, const char *to)
{
	if (!ledger_mints(giver) && strcmp(giver, to) == 0)
		return LEDGER_NOT_BELOW;
	return LEDGER_OK;
}

enum ledger_result
ledger_give(struct db *db, const char *giver, const char *to,
    long long micro, const char *request_id, long long *balance)
{
	struct db_res	*res;
	const char	*p[5];
	char		 amt[32];
	bool		 mint = ledger_mints(giver);
	int		 rows;

	snprintf(amt, sizeof(amt), "%lld", micro);
	if (!mint) {
		/* The giver's debit first: no row when it is short. */
		p[0] = giver;
		p[1] = amt;
		p[2] = to;
		p[3] = request_id;
		if ((res = db_query(db, STMT_CREDITS_DEBIT, 4, p)) == NULL)
			return LEDGER_DB;
		rows = db_rows(res);
		db_res_free(res);
		if (rows != 1)
			return LEDGER_SHORT;
	}
	p[0] = to;
	p[1] = amt;
	p[2] = mint ? "mint" : "transfer_in";
	p[3] = mint ? NULL : giver;
	p[4] = request_id;
	if ((res = db_query(db, STMT_CREDITS_ADD, 5, p)) == NULL)
		return LEDGER_DB;
	/* No row: the receiver's row went since the caller looked. */
	if ((rows = db_rows(res)) == 1)
		*balance = atoll(db_value(res, 0, 0));
	db_res_free(res);
	return rows == 1 ? LEDGER_OK : LEDGER_GONE;
}

int
ledger_available(struct db *db, const char *tenant, long long *available)
{
	const char	*p[1] = { tenant };
	struct db_res	*res;

	if ((res = db_query(db, STMT_CREDITS_AVAILABLE, 1, p)) == NULL)
		return -1;
	*available = db_rows(res) == 1 ? atoll(db_value(res, 0, 0)) : 0;
	db_res_free(res);
	return 0;
}
