#include "autoconfig.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/buf.h"
#include "lib/db.h"
#include "server/config.h"

/* Any fixed number: keeps two concurrent `migrate` runs in single file. */
#define MIGRATE_LOCK "SELECT pg_advisory_xact_lock(7283001)"

#define MAX_MIGRATIONS 1000

struct migration {
	int	 version;
	char	*file;		/* owned: "0001-schema.sql" */
};

static int
cmp_migration(const void *a, const void *b)
{
	const struct migration *x = a, *y = b;

	return (x->version > y->version) - (x->version < y->version);
}

/* "NNNN-name.sql" -> NNNN, or -1 for any other file name. */
static int
migration_version(const char *name)
{
	size_t	 n = strlen(name);
	int	 v = 0, i;

	if (n < 10 || strcmp(name + n - 4, ".sql") != 0 || name[4] != '-')
		return -1;
	for (i = 0; i < 4; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -1;
		v = v * 10 + (name[i] - '0');
	}
	return v > 0 ? v : -1;
}

static int
read_file(const char *path, struct buf *out)
{
	FILE	*f;
	char	 chunk[8192];
	size_t	 n;
	int	 rc = 0;

	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(out, chunk, n) == -1) {
			rc = -1;
			break;
		}
	if (ferror(f))
		rc = -1;
	fclose(f);
	return rc;
}

static int
list_migrations(const char *dir, struct migration *m, int *count)
{
	DIR		*d;
	struct dirent	*e;
	int		 n = 0, v, i;

	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "keygatectl: sql_dir %s: %s\n", dir,
		    strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if ((v = migration_version(e->d_name)) == -1)
			continue;
		if (n == MAX_MIGRATIONS) {
			fprintf(stderr, "keygatectl: %s: too many files\n", dir);
			closedir(d);
			return -1;
		}
		m[n].version = v;
		if ((m[n].file = strdup(e->d_name)) == NULL) {
			closedir(d);
			return -1;
		}
		n++;
	}
	closedir(d);
	qsort(m, (size_t)n, sizeof(*m), cmp_migration);
	for (i = 1; i < n; i++)
		if (m[i].version == m[i - 1].version) {
			fprintf(stderr, "keygatectl: %s and %s have the same "
			    "number\n", m[i - 1].file, m[i].file);
			*count = n;
			return -1;
		}
	*count = n;
	return 0;
}

/*
 * Applies one migration in its own transaction, unless it is already
 * recorded.  Returns 1 applied, 0 already there, -1 failed (printed).
 */
static int
apply(struct db *db, const char *dir, const struct migration *m)
{
	struct buf	 sql = { 0 }, path = { 0 };
	struct db_res	*res;
	char		 ver[16];
	const char	*params[2];
	int		 rc = -1;

	snprintf(ver, sizeof(ver), "%d", m->version);
	params[0] = ver;
	params[1] = m->file;
	if (db_begin(db) == -1 || db_exec_script(db, MIGRATE_LOCK) == -1)
		goto fail;
	if ((res = db_query(db, STMT_MIGRATION_APPLIED, 1, params)) == NULL)
		goto fail;
	if (db_rows(res) > 0) {
		db_res_free(res);
		db_rollback(db);
		return 0;
	}
	db_res_free(res);
	if (buf_printf(&path, "%s/%s", dir, m->file) == -1 ||
	    read_file(path.data, &sql) == -1) {
		fprintf(stderr, "keygatectl: %s/%s: cannot read: %s\n", dir,
		    m->file, strerror(errno));
		db_rollback(db);
		goto out;
	}
	if (db_exec_script(db, sql.data) == -1 ||
	    db_exec(db, STMT_MIGRATION_RECORD, 2, params) == -1 ||
	    db_commit(db) == -1)
		goto fail;
	rc = 1;
	goto out;
fail:
	fprintf(stderr, "keygatectl: migration %s failed, nothing of it was "
	    "applied: %s\n", m->file, db_errmsg(db));
	db_rollback(db);
out:
	buf_free(&sql);
	buf_free(&path);
	return rc;
}

/*
 * Gives the audit log, its sequence and the functions of its chain to
 * another role (keygate.audit_owner, set for the transaction), leaving
 * keygate's own role (the owner of tenants) SELECT and INSERT only: it can
 * no longer edit, delete, truncate, or switch off the triggers.
 */
static const char audit_owner_sql[] =
    "DO $$\n"
    "DECLARE\n"
    "    owner name := current_setting('keygate.audit_owner');\n"
    "    app   name;\n"
    "    f     text;\n"
    "BEGIN\n"
    "    SELECT tableowner INTO app FROM pg_tables\n"
    "        WHERE schemaname = current_schema() AND tablename = 'tenants';\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = owner) THEN\n"
    "        RAISE EXCEPTION 'role % does not exist: create it first "
    "(CREATE ROLE % NOLOGIN)', owner, owner;\n"
    "    END IF;\n"
    "    IF owner = app OR pg_has_role(app, owner, 'MEMBER') THEN\n"
    "        RAISE EXCEPTION 'keygate runs as %, which is or can act as "
    "%: the audit log needs an owner keygate cannot act as', app, owner;\n"
    "    END IF;\n"
    "    IF (SELECT rolsuper FROM pg_roles WHERE rolname = app) THEN\n"
    "        RAISE EXCEPTION 'keygate runs as %, a superuser, whom no "
    "owner can keep out: run it as an ordinary role first', app;\n"
    "    END IF;\n"
    "    EXECUTE format('ALTER TABLE audit_log OWNER TO %I', owner);\n"
    "    FOREACH f IN ARRAY ARRAY['audit_log_chain()', "
    "'audit_log_refuse()', 'audit_row_hash(bytea, audit_log)', "
    "'audit_row_text(audit_log)'] LOOP\n"
    "        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', f, owner);\n"
    "    END LOOP;\n"
    "    EXECUTE format('REVOKE ALL ON audit_log FROM %I', app);\n"
    "    EXECUTE format('GRANT SELECT, INSERT ON audit_log TO %I', app);\n"
    "    EXECUTE format('GRANT USAGE ON SEQUENCE audit_log_id_seq TO %I', "
    "app);\n"
    "END\n"
    "$$";

static int
give_audit_log(struct db *db, const char *owner)
{
	const char	*p[2] = { "keygate.audit_owner", owner };

	if (db_begin(db) == -1 || db_exec_script(db, MIGRATE_LOCK) == -1 ||
	    db_exec(db, STMT_SET_LOCAL, 2, p) == -1 ||
	    db_exec_script(db, audit_owner_sql) == -1 || db_commit(db) == -1) {
		fprintf(stderr, "keygatectl: giving the audit log to %s: %s\n",
		    owner, db_errmsg(db));
		db_rollback(db);
		return -1;
	}
	printf("the audit log now belongs to %s; keygate's role may only read "
	    "and append to it\n", owner);
	return 0;
}

/* Each migration, applied or pending; changes nothing.  0, or 1. */
static int
list_status(struct db *db, const struct migration *m, int n)
{
	struct db_res	*res;
	const char	*params[1];
	char		 ver[16];
	int		 i;

	for (i = 0; i < n; i++) {
		snprintf(ver, sizeof(ver), "%d", m[i].version);
		params[0] = ver;
		if ((res = db_query(db, STMT_MIGRATION_APPLIED, 1, params)) ==
		    NULL) {
			fprintf(stderr, "keygatectl: %s\n", db_errmsg(db));
			return 1;
		}
		printf("%-8s %s\n", db_rows(res) > 0 ? "applied" : "pending",
		    m[i].file);
		db_res_free(res);
	}
	return 0;
}

static void
usage(const struct config *cfg)
{
	printf("usage: keygatectl migrate [--status] [--audit-owner ROLE]\n\n"
	    "Applies the migrations in %s that the database does not have "
	    "yet,\neach in its own transaction.  --status lists them without "
	    "applying.\n--audit-owner then gives the audit log to ROLE (an "
	    "existing role keygate\ncannot act as), so that keygate's role "
	    "may only read and append to it;\nrun it as a superuser, e.g. with "
	    "KEYGATE_DATABASE_URL naming one.\n", cfg->sql_dir);
}

static const char migrations_table[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

/* schema_migrations, made when missing.  0, or -1 (said). */
static int
prepare_table(struct db *db)
{
	if (db_begin(db) == -1 || db_exec_script(db, MIGRATE_LOCK) == -1 ||
	    db_exec_script(db, "SET LOCAL client_min_messages = warning") ==
	    -1 || db_exec_script(db, migrations_table) == -1 ||
	    db_commit(db) == -1) {
		fprintf(stderr, "keygatectl: preparing schema_migrations: %s\n",
		    db_errmsg(db));
		db_rollback(db);
		return -1;
	}
	return 0;
}

static char seed_name[] = "seed-dev-key";
static char *seed_args[] = { seed_name, NULL };

int
ctl_migrate(const struct config *cfg, struct db *db, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "status", no_argument, NULL, 's' },
		{ "audit-owner", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct migration *m;
	const char	*audit_owner = NULL;
	int		 n = 0, i, rc, applied = 0, status_only = 0, ch;
	int		 code = 1;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "sh", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			status_only = 1;
			break;
		case 'o':
			if (*optarg == '\0') {
				fprintf(stderr, "keygatectl: --audit-owner needs "
				    "a role\n");
				return 2;
			}
			audit_owner = optarg;
			break;
		case 'h':
			usage(cfg);
			return 0;
		default:
			return 2;
		}
	}
	if ((m = calloc(MAX_MIGRATIONS, sizeof(*m))) == NULL)
		return 1;
	if (list_migrations(cfg->sql_dir, m, &n) == -1)
		goto out;
	if (n == 0) {
		fprintf(stderr, "keygatectl: no migrations found in %s\n",
		    cfg->sql_dir);
		goto out;
	}
	if (prepare_table(db) == -1)
		goto out;
	if (status_only) {
		code = list_status(db, m, n);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((rc = apply(db, cfg->sql_dir, &m[i])) == -1)
			goto out;
		if (rc == 1) {
			printf("applied %s\n", m[i].file);
			applied++;
		}
	}
	if (applied == 0)
		printf("nothing to apply: the database is up to date "
		    "(version %d)\n", m[n - 1].version);
	if (audit_owner != NULL && give_audit_log(db, audit_owner) == -1)
		goto out;
	code = 0;
	/* KEYGATE_SEED_DEV_KEY=true at migrate time seeds the dev key. */
	if (config_getenv("KEYGATE_SEED_DEV_KEY") != NULL &&
	    strcmp(config_getenv("KEYGATE_SEED_DEV_KEY"), "true") == 0)
		code = ctl_seed_dev_key(cfg, db, 1, seed_args);
out:
	for (i = 0; i < n; i++)
		free(m[i].file);
	free(m);
	return code;
}
