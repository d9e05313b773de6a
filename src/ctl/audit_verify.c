#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/crypto.h"
#include "lib/db.h"
#include "server/config.h"

#define HASH_HEX	(2 * CRYPTO_SHA256_LEN)
#define HEAD_MAX	(20 + 1 + HASH_HEX + 1 + HASH_HEX + 1)

/*
 * The signature of a head: HMAC-SHA256 under hmac_secret, a secret kept
 * out of the database, of "keygate-audit-head:<id>:<row hash>" (a text no
 * API key can be, so the two uses of the secret never meet).  Whoever
 * holds only the database password can rebuild the chain but cannot sign
 * a head for it.  0, or -1.
 */
static int
head_mac(const struct config *cfg, const char *id, const char *hash,
    char out[HASH_HEX + 1])
{
	uint8_t	 mac[CRYPTO_SHA256_LEN];
	char	 msg[96];

	snprintf(msg, sizeof(msg), "keygate-audit-head:%s:%s", id, hash);
	if (crypto_hmac_sha256(cfg->hmac_secret, strlen(cfg->hmac_secret),
	    msg, strlen(msg), mac) == -1)
		return -1;
	crypto_hex(mac, sizeof(mac), out);
	explicit_bzero(mac, sizeof(mac));
	return 0;
}

int
ctl_audit_head(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct db_res	*res;
	char		 mac[HASH_HEX + 1];
	int		 code = 1;

	if (ctl_wants_help(argc, argv, "usage: keygatectl audit-head\n\n"
	    "Prints the audit log's newest row as ID:HASH:SIGNATURE, signed "
	    "with\nhmac_secret; keep it outside the database and give it "
	    "to\naudit-verify --head later.\n"))
		return 0;
	if (argc > 1) {
		fprintf(stderr, "keygatectl: audit-head takes no arguments\n");
		return 2;
	}
	if ((res = db_query(db, STMT_AUDIT_HEAD, 0, NULL)) == NULL) {
		fprintf(stderr, "keygatectl: audit-head: %s\n", db_errmsg(db));
		return 1;
	}
	if (db_rows(res) == 0)
		fprintf(stderr, "keygatectl: audit-head: the audit log is "
		    "empty\n");
	else if (head_mac(cfg, db_value(res, 0, 0), db_value(res, 0, 1),
	    mac) == -1)
		fprintf(stderr, "keygatectl: audit-head: signing failed\n");
	else {
		printf("%s:%s:%s\n", db_value(res, 0, 0), db_value(res, 0, 1),
		    mac);
		code = 0;
	}
	db_res_free(res);
	return code;
}

/*
 * Checks a head printed by audit-head: its signature, then that the log
 * still holds its row with the same hash.  0, or 1 after saying why.
 */
static int
check_head(const struct config *cfg, struct db *db, const char *head)
{
	struct db_res	*res;
	char		 id[21], hash[HASH_HEX + 1], mac[HASH_HEX + 1],
			 want[HASH_HEX + 1];
	const char	*c1, *c2;
	int		 code = 1;

	c1 = strchr(head, ':');
	c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
	if (c1 == NULL || c2 == NULL || c1 == head ||
	    (size_t)(c1 - head) >= sizeof(id) || c2 - c1 - 1 != HASH_HEX ||
	    strlen(c2 + 1) != HASH_HEX ||
	    strspn(head, "0123456789") != (size_t)(c1 - head)) {
		printf("audit head malformed: expected ID:HASH:SIGNATURE as "
		    "audit-head prints it\n");
		return 1;
	}
	memcpy(id, head, (size_t)(c1 - head));
	id[c1 - head] = '\0';
	memcpy(hash, c1 + 1, HASH_HEX);
	hash[HASH_HEX] = '\0';
	memcpy(mac, c2 + 1, HASH_HEX + 1);
	if (head_mac(cfg, id, hash, want) == -1 ||
	    !crypto_equal(want, mac, HASH_HEX)) {
		printf("audit head refused: its signature does not match "
		    "hmac_secret\n");
		return 1;
	}
	{
		const char *p[1] = { id };

		if ((res = db_query(db, STMT_AUDIT_ROW_HASH, 1, p)) == NULL) {
			fprintf(stderr, "keygatectl: audit-verify: %s\n",
			    db_errmsg(db));
			return 1;
		}
	}
	if (db_rows(res) == 0)
		printf("audit log broken at row %s: the signed head is gone "
		    "(the newest rows were removed)\n", id);
	else if (strcmp(db_value(res, 0, 0), hash) != 0)
		printf("audit log broken at row %s: it differs from the signed "
		    "head (the log was rewritten up to it)\n", id);
	else
		code = 0;
	db_res_free(res);
	return code;
}

/*
 * Walks the audit log's hash chain in the database.  Each row's hash covers
 * the previous row's hash and its own contents, so an edited row fails its
 * own hash, and a removed or reordered one breaks the link of the row after
 * it.  Removing the newest rows leaves a shorter, intact chain, and whoever
 * can write the table can rebuild the whole chain: a head signed earlier
 * by audit-head (--head) catches both.
 */
int
ctl_audit_verify(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct db_res	*res;
	const char	*head = NULL;
	int		 code;

	if (ctl_wants_help(argc, argv, "usage: keygatectl audit-verify "
	    "[--head ID:HASH:SIGNATURE]\n\nChecks the audit log's hash chain; "
	    "exits 1 naming the first bad row.\nWith --head, also that the "
	    "log still holds the head audit-head\nprinted and signed "
	    "earlier.\n"))
		return 0;
	if (argc == 3 && strcmp(argv[1], "--head") == 0)
		head = argv[2];
	else if (argc > 1) {
		fprintf(stderr, "keygatectl: audit-verify takes only --head "
		    "ID:HASH:SIGNATURE\n");
		return 2;
	}
	if ((res = db_query(db, STMT_AUDIT_VERIFY, 0, NULL)) == NULL) {
		fprintf(stderr, "keygatectl: audit-verify: %s\n",
		    db_errmsg(db));
		return 1;
	}
	if (db_isnull(res, 0, 1)) {
		code = head != NULL ? check_head(cfg, db, head) : 0;
		if (code == 0)
			printf("audit log intact: %s rows%s\n",
			    db_value(res, 0, 0), head != NULL ?
			    ", up to and past the signed head" : "");
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
