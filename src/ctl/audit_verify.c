#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/db.h"
#include "server/config.h"

/*
 * Walks the audit log's hash chain in the database.  Each row's hash covers
 * the previous row's hash and its own contents, so an edited row fails its
 * own hash, and a removed or reordered one breaks the link of the row after
 * it.  (Removing the newest rows leaves a shorter, intact chain: keep the
 * row count or last hash elsewhere to notice that.)
 */
int
ctl_audit_verify(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct db_res	*res;
	int		 code;

	(void)cfg;
	if (argc > 1 && (strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0)) {
		printf("usage: keygatectl audit-verify\n\n"
		    "Checks the audit log's hash chain; exits 1 naming the "
		    "first bad row.\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "keygatectl: audit-verify takes no "
		    "arguments\n");
		return 2;
	}
	if ((res = db_query(db, STMT_AUDIT_VERIFY, 0, NULL)) == NULL) {
		fprintf(stderr, "keygatectl: audit-verify: %s\n",
		    db_errmsg(db));
		return 1;
	}
	if (db_isnull(res, 0, 1)) {
		printf("audit log intact: %s rows\n", db_value(res, 0, 0));
		code = 0;
	} else if (strcmp(db_value(res, 0, 3), "f") == 0) {
		printf("audit log broken at row %s: its contents do not match "
		    "its hash (the row was edited)\n", db_value(res, 0, 1));
		code = 1;
	} else {
		printf("audit log broken at row %s: it does not follow the row "
		    "before it (a row was removed, inserted or reordered)\n",
		    db_value(res, 0, 1));
		code = 1;
	}
	db_res_free(res);
	return code;
}
