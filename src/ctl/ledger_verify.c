/*
 * keygatectl ledger-verify: the credit invariants, checked in PostgreSQL
 * for every tenant at once.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/db.h"

/*
 * Names every tenant that breaks one of the credit invariants: a negative
 * balance or reserve; a reserve that is not the sum of its holds; a
 * balance or reserve that is not the sum of its ledger rows; a hold
 * past its deadline (its call cannot still run: a running keygated
 * releases such holds within seconds).  The exit status: 0 clean, 1 with
 * a line per finding, 2 on a usage or database error.
 */
int
ctl_ledger_verify(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct db_res	*res;
	int		 i, n;

	(void)cfg;
	if (ctl_wants_help(argc, argv, "usage: keygatectl ledger-verify\n\n"
	    "Checks every tenant's credits: no negative balance or reserve, "
	    "a reserve\nequal to the sum of its holds, no hold past its "
	    "deadline.  Prints one\nline per tenant that breaks one and exits "
	    "1; exits 0 when all hold.\n"))
		return 0;
	if (argc > 1) {
		fprintf(stderr, "keygatectl: ledger-verify takes no "
		    "arguments\n");
		return 2;
	}
	if ((res = db_query(db, STMT_LEDGER_CHECK, 0, NULL)) == NULL) {
		fprintf(stderr, "keygatectl: ledger-verify: %s\n",
		    db_errmsg(db));
		return 2;
	}
	n = db_rows(res);
	for (i = 0; i < n; i++)
		printf("tenant %s: %s\n", db_value(res, i, 0),
		    db_value(res, i, 1));
	db_res_free(res);
	if (n > 0) {
		fprintf(stderr, "keygatectl: ledger-verify: %d finding%s\n", n,
		    n == 1 ? "" : "s");
		return 1;
	}
	printf("ledger: every tenant's credits hold\n");
	return 0;
}
