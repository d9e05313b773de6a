#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "lib/db.h"

const char *const db_status_names[DB_STATUS__MAX] = {
	"ok",		/* DB_OK */
	"unavailable",	/* DB_UNAVAILABLE */
	"error",	/* DB_ERROR */
};

/*
 * Every statement keygate sends.  Parameters are always bound: no value
 * from a request is ever spliced into SQL text.
 */
static const struct {
	const char	*name;
	const char	*sql;
} stmts[STMT__MAX] = {
	/* STMT_SCHEMA_VERSION */
	{ "schema_version",
	  "SELECT coalesce(max(version), 0) FROM schema_migrations" },
	/* STMT_MIGRATION_APPLIED */
	{ "migration_applied",
	  "SELECT 1 FROM schema_migrations WHERE version = $1::int" },
	/* STMT_MIGRATION_RECORD */
	{ "migration_record",
	  "INSERT INTO schema_migrations (version, name) "
	  "VALUES ($1::int, $2)" },
	/* STMT_TENANT_EXISTS */
	{ "tenant_exists",
	  "SELECT 1 FROM tenants WHERE id = $1::uuid AND active" },
	/* STMT_KEY_INSERT */
	{ "key_insert",
	  "INSERT INTO api_keys (tenant_id, name, env, key_prefix, key_hash, "
	  "last4, scopes, role_id, expires_at, rate_limit_max, "
	  "rate_limit_window, created_by) VALUES ($1::uuid, $2, $3, $4, "
	  "decode($5, 'hex'), $6, $7::text[], $8::uuid, $9::timestamptz, "
	  "$10::int, $11::int, $12::uuid) "
	  "RETURNING id, to_char(created_at AT TIME ZONE 'UTC', "
	  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" },
	/* STMT_AUDIT_INSERT */
	{ "audit_insert",
	  "INSERT INTO audit_log (tenant_id, actor_key_id, actor, action, "
	  "target_type, target_id, request_id, client_addr, details) VALUES "
	  "($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9::jsonb)" },
};

/* Seconds between connection attempts while the server is unreachable. */
#define RECONNECT_INTERVAL 1.0

struct db {
	PGconn		*conn;		/* NULL = not connected */
	char		*conninfo;	/* secret: may hold a password */
	char		 timeout[16];	/* connect_timeout, s */
	char		*appname;
	bool		 prepared[STMT__MAX]; /* on this connection */
	bool		 in_tx;		/* between db_begin and commit */
	double		 next_attempt;	/* monotonic s, 0 = now */
	enum db_status	 status;
	char		 sqlstate[6];
	char		 errmsg[256];
};

static double
now_mono(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Copies the first line of a libpq message, without a trailing newline. */
static void
set_error(struct db *db, enum db_status st, const char *sqlstate,
    const char *msg)
{
	size_t	 n;

	db->status = st;
	snprintf(db->sqlstate, sizeof(db->sqlstate), "%s",
	    sqlstate != NULL ? sqlstate : "");
	snprintf(db->errmsg, sizeof(db->errmsg), "%s",
	    msg != NULL ? msg : "");
	n = strcspn(db->errmsg, "\n");
	db->errmsg[n] = '\0';
}

struct db *
db_new(const char *conninfo, int connect_timeout, const char *appname)
{
	struct db	*db;

	if ((db = calloc(1, sizeof(*db))) == NULL)
		return NULL;
	db->conninfo = strdup(conninfo);
	db->appname = strdup(appname);
	if (db->conninfo == NULL || db->appname == NULL) {
		db_free(db);
		return NULL;
	}
	snprintf(db->timeout, sizeof(db->timeout), "%d", connect_timeout);
	return db;
}

static void
disconnect(struct db *db)
{
	if (db->conn != NULL)
		PQfinish(db->conn);
	db->conn = NULL;
	db->in_tx = false;
	memset(db->prepared, 0, sizeof(db->prepared));
}

void
db_free(struct db *db)
{
	if (db == NULL)
		return;
	disconnect(db);
	if (db->conninfo != NULL) {
		explicit_bzero(db->conninfo, strlen(db->conninfo));
		free(db->conninfo);
	}
	free(db->appname);
	free(db);
}

/* Server notices (\"relation already exists, skipping\") are not errors. */
static void
ignore_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

int
db_connect(struct db *db)
{
	/*
	 * Our defaults come first so that the operator's conninfo, expanded
	 * from "dbname", can override them.
	 */
	const char *const kw[] = { "connect_timeout", "application_name",
	    "dbname", NULL };
	const char *const val[] = { db->timeout, db->appname, db->conninfo,
	    NULL };
	double	 now;

	if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK) {
		db->status = DB_OK;
		return 0;
	}
	disconnect(db);
	now = now_mono();
	if (now < db->next_attempt) {
		db->status = DB_UNAVAILABLE;
		return -1;
	}
	db->conn = PQconnectdbParams(kw, val, 1);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		set_error(db, DB_UNAVAILABLE, NULL, db->conn != NULL ?
		    PQerrorMessage(db->conn) : "out of memory");
		disconnect(db);
		db->next_attempt = now + RECONNECT_INTERVAL;
		return -1;
	}
	PQsetNoticeProcessor(db->conn, ignore_notice, NULL);
	db->next_attempt = 0;
	db->status = DB_OK;
	return 0;
}

/*
 * Records why res failed.  A broken connection is dropped so that the next
 * call reconnects.
 */
static void
note_failure(struct db *db, const PGresult *res)
{
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		set_error(db, DB_UNAVAILABLE, NULL, db->conn != NULL ?
		    PQerrorMessage(db->conn) : "not connected");
		disconnect(db);
		return;
	}
	set_error(db, DB_ERROR,
	    res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL,
	    res != NULL ? PQresultErrorMessage(res) :
	    PQerrorMessage(db->conn));
}

static int
prepare(struct db *db, enum stmt s)
{
	PGresult	*res;
	int		 rc = -1;

	if (db->prepared[s])
		return 0;
	res = PQprepare(db->conn, stmts[s].name, stmts[s].sql, 0, NULL);
	if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
		db->prepared[s] = true;
		rc = 0;
	} else
		note_failure(db, res);
	PQclear(res);
	return rc;
}

int
db_prepare_all(struct db *db)
{
	int	 s;

	if (db_connect(db) == -1)
		return -1;
	for (s = 0; s < STMT__MAX; s++)
		if (prepare(db, (enum stmt)s) == -1)
			return -1;
	return 0;
}

static PGresult *
run(struct db *db, enum stmt s, int n, const char *const *params)
{
	PGresult	*res;
	ExecStatusType	 st;

	if (db_connect(db) == -1 || prepare(db, s) == -1)
		return NULL;
	res = PQexecPrepared(db->conn, stmts[s].name, n, params, NULL, NULL,
	    0);
	st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		db->status = DB_OK;
		return res;
	}
	note_failure(db, res);
	PQclear(res);
	return NULL;
}

struct db_res *
db_query(struct db *db, enum stmt s, int n, const char *const *params)
{
	PGresult	*res;
	bool		 was_connected = db->conn != NULL, in_tx = db->in_tx;

	res = run(db, s, n, params);
	/*
	 * A connection that died since the last request (PostgreSQL
	 * restarted) is only noticed now.  Outside a transaction nothing
	 * was done, so one retry on a fresh connection is safe.
	 */
	if (res == NULL && db->status == DB_UNAVAILABLE && was_connected &&
	    !in_tx) {
		db->next_attempt = 0;
		res = run(db, s, n, params);
	}
	return (struct db_res *)res;
}

int
db_exec(struct db *db, enum stmt s, int n, const char *const *params)
{
	struct db_res	*res;

	if ((res = db_query(db, s, n, params)) == NULL)
		return -1;
	db_res_free(res);
	return 0;
}

static int
simple(struct db *db, const char *sql)
{
	PGresult	*res;
	int		 rc = -1;

	if (db_connect(db) == -1)
		return -1;
	res = PQexec(db->conn, sql);
	if (res != NULL && (PQresultStatus(res) == PGRES_COMMAND_OK ||
	    PQresultStatus(res) == PGRES_TUPLES_OK)) {
		db->status = DB_OK;
		rc = 0;
	} else
		note_failure(db, res);
	PQclear(res);
	return rc;
}

int
db_exec_script(struct db *db, const char *sql)
{
	return simple(db, sql);
}

int
db_begin(struct db *db)
{
	if (simple(db, "BEGIN") == -1)
		return -1;
	db->in_tx = true;
	return 0;
}

int
db_commit(struct db *db)
{
	int	 rc;

	rc = simple(db, "COMMIT");
	db->in_tx = false;
	return rc;
}

void
db_rollback(struct db *db)
{
	PGresult	*res;

	if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK &&
	    PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
		res = PQexec(db->conn, "ROLLBACK");
		PQclear(res);
	}
	db->in_tx = false;
}

int
db_rows(const struct db_res *r)
{
	return PQntuples((const PGresult *)r);
}

const char *
db_value(const struct db_res *r, int row, int col)
{
	return PQgetvalue((const PGresult *)r, row, col);
}

bool
db_isnull(const struct db_res *r, int row, int col)
{
	return PQgetisnull((const PGresult *)r, row, col) != 0;
}

void
db_res_free(struct db_res *r)
{
	PQclear((PGresult *)r);
}

enum db_status
db_status(const struct db *db)
{
	return db->status;
}

const char *
db_sqlstate(const struct db *db)
{
	return db->sqlstate;
}

const char *
db_errmsg(const struct db *db)
{
	return db->errmsg;
}

int
db_schema_version(struct db *db, int *version)
{
	PGresult	*res;
	int		 rc = -1;

	if (db_connect(db) == -1)
		return -1;
	res = PQexec(db->conn, "SELECT coalesce(max(version), 0) "
	    "FROM schema_migrations");
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
		*version = atoi(PQgetvalue(res, 0, 0));
		db->status = DB_OK;
		rc = 0;
	} else if (res != NULL && PQstatus(db->conn) == CONNECTION_OK &&
	    strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE) ?
	    PQresultErrorField(res, PG_DIAG_SQLSTATE) : "", "42P01") == 0) {
		/* undefined_table: never migrated */
		*version = 0;
		db->status = DB_OK;
		rc = 0;
	} else
		note_failure(db, res);
	PQclear(res);
	return rc;
}
