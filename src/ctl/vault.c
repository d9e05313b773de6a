#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "core/audit.h"
#include "core/vault.h"
#include "ctl/ctl.h"
#include "lib/db.h"
#include "server/config.h"

static struct vault *
open_vault(const struct config *cfg)
{
	struct vault	*v;
	char		 err[160];

	if ((v = vault_new(cfg->master_keys, err, sizeof(err))) == NULL)
		fprintf(stderr, "keygatectl: %s\n", err);
	return v;
}

/*
 * Re-seals every vault value under the active master key in one
 * transaction: after a crash or an error nothing has changed, and every
 * value is still readable under the key that sealed it.
 */
int
ctl_rotate_encryption_key(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct audit_entry audit;
	struct vault	*v;
	char		 err[256], details[128];
	long		 n;

	if (ctl_wants_help(argc, argv, "usage: keygatectl rotate-encryption-key\n\n"
	    "Re-encrypts every stored provider key under the first entry of\n"
	    "master_keys, in one transaction: all or none.\n"))
		return 0;
	if ((v = open_vault(cfg)) == NULL)
		return 2;
	if (db_begin(db) == -1 ||
	    (n = vault_reencrypt_all(db, v, err, sizeof(err))) < 0) {
		if (db_status(db) != DB_OK)
			snprintf(err, sizeof(err), "%s", db_errmsg(db));
		db_rollback(db);
		fprintf(stderr, "keygatectl: rotate-encryption-key: nothing was "
		    "changed: %s\n", err);
		vault_free(v);
		return 1;
	}
	snprintf(details, sizeof(details), "{\"reencrypted\":%ld,"
	    "\"via\":\"keygatectl\"}", n);
	memset(&audit, 0, sizeof(audit));
	audit.actor = "keygatectl";
	audit.action = "vault.reencrypt";
	audit.target_type = "vault";
	audit.target_id = vault_active_id(v);
	audit.details = details;
	if (audit_write(db, &audit) == -1 || db_commit(db) == -1) {
		fprintf(stderr, "keygatectl: rotate-encryption-key: nothing was "
		    "changed: %s\n", db_errmsg(db));
		db_rollback(db);
		vault_free(v);
		return 1;
	}
	printf("re-encrypted %ld values under master key %s\n", n,
	    vault_active_id(v));
	vault_free(v);
	return 0;
}

static void
print_bad(void *ctx, const char *tenant, const char *provider,
    const char *key_id)
{
	(void)ctx;
	printf("bad %s %s (master key %s)\n", tenant, provider, key_id);
}

int
ctl_vault_check(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct vault	*v;
	char		 err[256];
	long		 bad, total;

	if (ctl_wants_help(argc, argv, "usage: keygatectl vault-check\n\n"
	    "Opens every stored provider key with master_keys and prints a\n"
	    "line \"bad TENANT PROVIDER (master key ID)\" for each one that does\n"
	    "not open.  Changes nothing.\n"))
		return 0;
	if ((v = open_vault(cfg)) == NULL)
		return 2;
	bad = vault_check_all(db, v, &total, print_bad, NULL, err, sizeof(err));
	vault_free(v);
	if (bad < 0) {
		fprintf(stderr, "keygatectl: vault-check: %s\n", err);
		return 1;
	}
	if (bad > 0) {
		printf("%ld of %ld values do not open\n", bad, total);
		return 1;
	}
	printf("ok %ld\n", total);
	return 0;
}
