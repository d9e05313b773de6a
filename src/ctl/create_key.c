#include "autoconfig.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/audit.h"
#include "core/keys.h"
#include "core/scope.h"
#include "ctl/ctl.h"
#include "lib/db.h"
#include "server/config.h"

#define ROOT_TENANT "00000000-0000-0000-0000-000000000001"
#define MAX_SCOPES 64

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: keygatectl create-key [--name NAME] [--scopes S,S,...]\n"
	    "                             [--tenant UUID] [--env live|test]\n"
	    "\n"
	    "Creates an API key and prints it once on standard output; only\n"
	    "its prefix and HMAC are stored.  Defaults: scopes \"*\", the root\n"
	    "tenant %s, env live.\n", ROOT_TENANT);
}

/* The scopes of --scopes, comma- or space-separated.  0, or -1 (said). */
static int
split_scopes(char *list, const char *scopes[MAX_SCOPES], size_t *n)
{
	char	*tok, *save = NULL;

	*n = 0;
	for (tok = strtok_r(list, ", ", &save); tok != NULL;
	    tok = strtok_r(NULL, ", ", &save)) {
		if (!scope_valid(tok)) {
			fprintf(stderr, "keygatectl: create-key: unknown scope "
			    "\"%s\"\n", tok);
			return -1;
		}
		if (*n == MAX_SCOPES) {
			fprintf(stderr, "keygatectl: create-key: too many "
			    "scopes\n");
			return -1;
		}
		scopes[(*n)++] = tok;
	}
	if (*n == 0) {
		fprintf(stderr, "keygatectl: create-key: --scopes is empty\n");
		return -1;
	}
	return 0;
}

/*
 * Makes the key and its audit row in one transaction and prints it, once.
 * The exit code.
 */
static int
write_key(const struct config *cfg, struct db *db, const struct key_spec *spec)
{
	struct key_created out;
	struct audit_entry audit;
	char		 details[256];
	enum key_result	 kr;

	if (db_begin(db) == -1)
		goto dberr;
	kr = key_create(db, cfg->key_brand, cfg->hmac_secret, spec, &out);
	if (kr == KEY_NO_TENANT) {
		fprintf(stderr, "keygatectl: create-key: tenant %s does not "
		    "exist or is inactive\n", spec->tenant_id);
		db_rollback(db);
		return 1;
	}
	if (kr != KEY_OK) {
		db_rollback(db);
		goto dberr;
	}
	snprintf(details, sizeof(details), "{\"key_prefix\":\"%s\","
	    "\"via\":\"keygatectl\"}", out.prefix);
	memset(&audit, 0, sizeof(audit));
	audit.tenant_id = spec->tenant_id;
	audit.actor = "keygatectl";
	audit.action = "api_key.create";
	audit.target_type = "api_key";
	audit.target_id = out.id;
	audit.details = details;
	if (audit_write(db, &audit) == -1 || db_commit(db) == -1) {
		key_created_wipe(&out);
		db_rollback(db);
		goto dberr;
	}
	printf("%s\n", out.key);
	fflush(stdout);
	key_created_wipe(&out);
	fprintf(stderr, "created key %s (%s...%s) in tenant %s; it is shown "
	    "only this once\n", out.id, out.prefix, out.last4,
	    spec->tenant_id);
	return 0;
dberr:
	fprintf(stderr, "keygatectl: create-key: %s\n", db_errmsg(db));
	return 1;
}

int
ctl_create_key(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "scopes", required_argument, NULL, 's' },
		{ "tenant", required_argument, NULL, 't' },
		{ "env", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct key_spec	 spec;
	const char	*scopes[MAX_SCOPES];
	char		*scopelist = NULL;
	int		 ch, code;

	memset(&spec, 0, sizeof(spec));
	spec.tenant_id = ROOT_TENANT;
	spec.env = "live";
	spec.name = "admin";
	optind = 1;
	while ((ch = getopt_long(argc, argv, "n:s:t:e:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			spec.name = optarg;
			break;
		case 's':
			free(scopelist);
			scopelist = strdup(optarg);
			break;
		case 't':
			spec.tenant_id = optarg;
			break;
		case 'e':
			spec.env = optarg;
			break;
		case 'h':
			usage(stdout);
			free(scopelist);
			return 0;
		default:
			usage(stderr);
			free(scopelist);
			return 2;
		}
	}
	if (scopelist == NULL && (scopelist = strdup("*")) == NULL)
		return 1;
	if (split_scopes(scopelist, scopes, &spec.nscopes) == -1)
		code = 2;
	else if (strcmp(spec.env, "live") != 0 &&
	    strcmp(spec.env, "test") != 0) {
		fprintf(stderr, "keygatectl: create-key: --env must be live or "
		    "test\n");
		code = 2;
	} else {
		spec.scopes = scopes;
		code = write_key(cfg, db, &spec);
	}
	free(scopelist);
	return code;
}

int
ctl_seed_dev_key(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	struct audit_entry audit;
	char		 id[40];
	int		 rc;

	if (ctl_wants_help(argc, argv, "usage: keygatectl seed-dev-key\n\n"
	    "Stores the development key " APIKEY_DEV "\n(id " APIKEY_DEV_ID
	    ", scope *, root tenant) unless it exists and is usable;\na "
	    "revoked, disabled or expired one is replaced by a fresh one.\n"
	    "Refused in mode = production.\n"))
		return 0;
	if (cfg->mode == MODE_PRODUCTION) {
		fprintf(stderr, "keygatectl: seed-dev-key: refused in mode = "
		    "production\n");
		return 2;
	}
	if (db_begin(db) == -1)
		goto dberr;
	if ((rc = key_seed_dev(db, id, sizeof(id))) == -1) {
		db_rollback(db);
		goto dberr;
	}
	if (rc == 0) {
		db_rollback(db);
		fprintf(stderr, "the development key already exists\n");
		return 0;
	}
	memset(&audit, 0, sizeof(audit));
	audit.tenant_id = ROOT_TENANT;
	audit.actor = "keygatectl";
	audit.action = "api_key.create";
	audit.target_type = "api_key";
	audit.target_id = id;
	audit.details = "{\"key_prefix\":\"" APIKEY_DEV_PREFIX "\","
	    "\"via\":\"seed-dev-key\"}";
	if (audit_write(db, &audit) == -1 || db_commit(db) == -1) {
		db_rollback(db);
		goto dberr;
	}
	fprintf(stderr, "stored the development key %s; never use it in "
	    "production\n", APIKEY_DEV);
	return 0;
dberr:
	fprintf(stderr, "keygatectl: seed-dev-key: %s\n", db_errmsg(db));
	return 1;
}
