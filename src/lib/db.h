#ifndef KEYGATE_LIB_DB_H
#define KEYGATE_LIB_DB_H

#include <stdbool.h>

/*
 * The only door to PostgreSQL.  Every statement keygate runs is named here
 * and written out once, in db.c's table; each connection prepares them.
 */

/* The highest migration in sql/ this build expects to find applied. */
#define DB_SCHEMA_VERSION 11

/* A timestamp column as ISO 8601 in UTC. */
#define DB_TS(c) "to_char(" c " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/*
 * The columns of the rows the API shows, each list written once: db.c's
 * statements select them in this order (DB_COLS_SQL) and core/ numbers
 * them from the same list (DB_COLS_ENUM), so the two cannot drift apart.
 * X(name, sql): each column's SQL carries what separates it from the next.
 */
#define DB_COLS_SQL(name, sql)	sql
#define DB_COLS_ENUM(name, sql)	name,

/* A key (enum key_col, core/keys.h); rows of KEY_FROM in db.c. */
#define DB_KEY_COLUMNS(X) \
	X(KC_ID, "k.id, ") \
	X(KC_TENANT, "k.tenant_id, ") \
	X(KC_NAME, "k.name, ") \
	X(KC_ENV, "k.env, ") \
	X(KC_PREFIX, "k.key_prefix, ") \
	X(KC_LAST4, "k.last4, ") \
	X(KC_SCOPES, "array_to_string(k.scopes, ','), ") \
	X(KC_ROLE, "coalesce(k.role_id::text, ''), ") \
	X(KC_EXPIRES, DB_TS("k.expires_at") ", ") \
	X(KC_REVOKED, DB_TS("k.revoked_at") ", ") \
	X(KC_DISABLED, DB_TS("k.disabled_at") ", ") \
	X(KC_RL_MAX, "coalesce(k.rate_limit_max::text, ''), ") \
	X(KC_RL_WINDOW, "coalesce(k.rate_limit_window::text, ''), ") \
	X(KC_LAST_USED, DB_TS("k.last_used_at") ", ") \
	X(KC_CREATED, DB_TS("k.created_at") ", ") \
	X(KC_UPDATED, DB_TS("k.updated_at") ", ") \
	X(KC_EFFECTIVE, "array_to_string(coalesce(r.scopes, k.scopes), ',') ")

/* A tenant (enum tenant_col, core/tenants.h), of tenants t. */
#define DB_TENANT_COLUMNS(X) \
	X(TC_ID, "t.id, ") \
	X(TC_PARENT, "coalesce(t.parent_id::text, ''), ") \
	X(TC_NAME, "t.name, ") \
	X(TC_PATH, "array_to_string(t.path, ','), ") \
	X(TC_ACTIVE, "t.active, ") \
	X(TC_BALANCE, "t.credits_balance, ") \
	X(TC_RESERVED, "t.credits_reserved, ") \
	X(TC_CREATED, DB_TS("t.created_at") ", ") \
	X(TC_UPDATED, DB_TS("t.updated_at") " ")

/*
 * A role (enum role_col, core/tenants.h), of roles r; the statements that
 * read one add whether the caller may change it.
 */
#define DB_ROLE_COLUMNS(X) \
	X(RC_ID, "r.id, ") \
	X(RC_TENANT, "coalesce(r.tenant_id::text, ''), ") \
	X(RC_NAME, "r.name, ") \
	X(RC_DESCRIPTION, "r.description, ") \
	X(RC_SCOPES, "array_to_string(r.scopes, ','), ") \
	X(RC_BUILTIN, "r.builtin, ") \
	X(RC_CREATED, DB_TS("r.created_at") ", ") \
	X(RC_UPDATED, DB_TS("r.updated_at") " ")

enum stmt {
	STMT_SCHEMA_VERSION,	/* () -> max(version) */
	STMT_MIGRATION_APPLIED,	/* (version) -> 1 row when applied */
	STMT_MIGRATION_RECORD,	/* (version, name) */
	STMT_SET_LOCAL,		/* (setting, value): to the transaction's end */
	STMT_TENANT_EXISTS,	/* (id) -> 1 row when it exists and is active */
	STMT_KEY_INSERT,	/* (tenant, name, env, prefix, hash hex, last4,
				    scopes, role, expires, rl max, rl window,
				    created_by) -> id, created_at */
	STMT_AUDIT_INSERT,	/* (tenant, actor key, actor, action,
				    target type, target id, request id,
				    client addr, details json) */
	STMT_KEY_LOOKUP,	/* (prefix) -> see core/auth.c */
	STMT_KEY_TOUCH,		/* (ids as uuid[] literal) */
	STMT_TENANT_IN_SUBTREE,	/* (tenant, ancestor) -> 1 row when inside */
	STMT_TENANT_LOCK,	/* (tenant) -> locks its row FOR UPDATE */
	STMT_KEY_COUNT_ACTIVE,	/* (tenant) -> count */
	STMT_ROLE_SCOPES,	/* (role, key's tenant) -> scopes csv */
	STMT_KEY_GET,		/* (id, caller tenant) -> KEY_COLS */
	STMT_KEY_LIST,		/* (caller tenant, tenant or NULL,
				    include revoked, cursor id or NULL,
				    limit) -> KEY_COLS */
	STMT_KEY_DORMANT,	/* (caller tenant, days, cursor, limit) */
	STMT_KEY_UPDATE,	/* (id, caller tenant, then set-flag/value
				    pairs: name, scopes, expires_at,
				    rate_limit_max, rate_limit_window) -> id */
	STMT_KEY_REVOKE,	/* (id, caller tenant) -> id, was active */
	STMT_KEY_ROTATE,	/* (id, caller tenant, prefix, hash hex,
				    last4, grace s) -> id */
	STMT_DEV_KEY_ACTIVE,	/* (prefix) -> 1 row when usable */
	STMT_DEV_KEY_CLEAR,	/* (id, prefix): deletes the revoked, disabled
				    or expired development key */
	STMT_DEV_KEY_INSERT,	/* (id, tenant, prefix, hash hex, last4) ->
				    id; no row when it exists */
	STMT_AUDIT_VERIFY,	/* () -> rows, first bad id, link ok, row ok */
	STMT_AUDIT_HEAD,	/* () -> id, row hash hex of the newest row */
	STMT_AUDIT_ROW_HASH,	/* (id) -> row hash hex */
	STMT_KEY_DISABLE_DORMANT, /* (days) -> one row per key disabled */
	STMT_BUILTIN_ROLE_SCOPES, /* (name) -> scopes csv */
	STMT_TENANT_INSERT,	/* (parent, name) -> id */
	STMT_TENANT_GET,	/* (id, caller tenant) -> TENANT_COLS */
	STMT_TENANT_LIST,	/* (caller, cursor, limit) -> TENANT_COLS */
	STMT_TENANT_UPDATE,	/* (id, caller, name set, name) -> id */
	STMT_TENANT_DEACTIVATE,	/* (id) -> ids of the subtree */
	STMT_EXPORT_TENANTS,	/* (id) -> one JSON object a row, for */
	STMT_EXPORT_KEYS,	/*   each part of a subtree's export */
	STMT_EXPORT_ROLES,
	STMT_EXPORT_LLM_KEYS,
	STMT_EXPORT_USAGE,
	STMT_EXPORT_AUDIT,
	STMT_TENANT_PURGE,	/* (id) -> counts as JSON */
	STMT_ROLE_INSERT,	/* (tenant or NULL, name, description,
				    scopes) -> id */
	STMT_ROLE_GET,		/* (id, caller) -> ROLE_COLS, modifiable */
	STMT_ROLE_LIST,		/* (caller, cursor, limit) -> ROLE_COLS */
	STMT_ROLE_UPDATE,	/* (id, caller, name set, name, description
				    set, description, scopes set, scopes) */
	STMT_ROLE_DELETE,	/* (id, caller) -> id */
	STMT_ROLE_ASSIGNED,	/* (id) -> count of keys with the role */
	STMT_KEY_SET_ROLE,	/* (key, caller, role or NULL) -> id */
	STMT_LLM_KEY_UPSERT,	/* (tenant, provider, ciphertext, key id,
				    validated) */
	STMT_LLM_KEY_STATUS,	/* (tenant) -> provider, last validated */
	STMT_LLM_KEY_DELETE,	/* (tenant, provider or NULL) -> provider */
	STMT_LLM_KEY_ALL,	/* () -> tenant, provider, ciphertext, key id;
				    rows locked */
	STMT_LLM_KEY_REWRITE,	/* (tenants, providers, ciphertexts as array
				    literals, key id) */
	STMT_LLM_KEY_GET,	/* (tenant, provider) -> ciphertext, key id */
	STMT_RATE_TAKE,		/* (subject, window start, limit, wanted) ->
				    count, granted (>= 1); no row when the
				    window is full */
	STMT_RATE_GIVE_BACK,	/* (subject, window start, n) */
	STMT_RATE_PEEK,		/* (subject, window start) -> count */
	STMT_RATE_PRUNE,	/* (before) */
	STMT_PRICE_FOR,		/* (model) -> in, out per Mtok, pattern */
	STMT_CREDITS_RESERVE,	/* (tenant, key, request, amount, host,
				    pid, seconds to deadline) ->
				    reservation id; no row when short */
	STMT_CREDITS_AVAILABLE,	/* (tenant) -> balance - reserved */
	STMT_CREDITS_RELEASE,	/* (reservation id, why) */
	STMT_CREDITS_SETTLE,	/* (reservation id, cost, tenant, key,
				    request, provider, model, source, prompt,
				    completion, markup, status) -> charged */
	STMT_CREDITS_SETTLED,	/* (reservation id) -> charged, or no row */
	STMT_CREDITS_RESERVE_MANY, /* (ids, tenants, keys, requests, amounts,
				    seconds to deadline: array literals; host,
				    pid) -> ids of the holds taken */
	STMT_CREDITS_HELD,	/* (ids as uuid[]) -> those that are held */
	STMT_CREDITS_SETTLE_MANY, /* (ids, costs, tenants, keys, requests,
				    providers, models, sources, prompts,
				    completions, markups, statuses: array
				    literals) -> ids settled */
	STMT_CREDITS_SETTLED_MANY, /* (ids as uuid[]) -> id, charged of those
				    settled */
	STMT_CREDITS_ADD,	/* (tenant, amount, kind, giver, request)
				   -> balance */
	STMT_CREDITS_DEBIT,	/* (tenant, amount, receiver, request)
				   -> balance, or no row */
	STMT_CREDITS_STALE,	/* (host) -> id, owner pid, past deadline */
	STMT_LEASE_NEW,		/* (tenant, need, want, host, pid, seconds)
				   -> lease id, amount; no row when short */
	STMT_LEASE_GROW,	/* (lease, tenant, need, want, seconds) ->
				   amount (NULL when short), lease exists */
	STMT_LEASE_RENEW,	/* (lease ids as uuid[], seconds) -> ids */
	STMT_LEASE_WRITE,	/* (tenants, keys, requests, providers,
				    models, sources, prompts, completions,
				    charges, markups, statuses, leases, call
				    ids, costs: array literals) -> rows
				    written */
	STMT_LEDGER_CHECK,	/* -> tenant, what is wrong */
	STMT_ACCOUNT,		/* (tenant) -> balance, reserved, active keys,
				    all keys */
	STMT_PRICE_LIST,	/* () -> pattern, in, out per Mtok */
	STMT_PRICE_SET,		/* (pattern, in, out) */
	STMT_OPENROUTER_MODEL_GET, /* (model) -> OpenRouter id; no row when
				    it has none */
	STMT_OPENROUTER_MODEL_LIST, /* () -> model, OpenRouter id */
	STMT_OPENROUTER_MODEL_SET, /* (model, OpenRouter id) */
	STMT_MODEL_IDS,		/* () -> model, created (Unix s): the native
				    ids of openrouter_models and the exact
				    names of prices, once each */
	STMT_USAGE_LIST,	/* (tenant, from, to, cursor id, limit) */
	STMT_USAGE_TOTALS,	/* (tenant, from, to) -> n, prompt, completion,
				    charged */
	STMT_AUDIT_LIST,	/* (caller, action, actor key, target, since,
				    until, cursor id, limit) -> AUDIT_COLS */
	STMT__MAX
};

enum db_status {
	DB_OK,
	DB_UNAVAILABLE,		/* no connection: answer 503 */
	DB_ERROR,		/* the statement failed: see db_sqlstate() */
	DB_STATUS__MAX
};

struct db;
struct db_res;

/*
 * Makes a handle; nothing is connected yet.  conninfo is a libpq
 * conninfo string or URI; it is copied and wiped on db_free().
 */
struct db	*db_new(const char *conninfo, int connect_timeout,
		    const char *application_name)
		    __attribute__((warn_unused_result));
void		 db_free(struct db *);

/*
 * Connects when not connected (at most one attempt a second while the
 * server is unreachable).  Returns 0, or -1 with db_status() set.
 */
int		 db_connect(struct db *) __attribute__((warn_unused_result));
/*
 * LISTENs to channel on this connection and every later one.
 * fn(arg, payload, own) runs for each notification on it (read after each
 * statement and by db_poll()), own being true when it was raised by this
 * handle's own transaction (heard when its COMMIT returns); and after
 * every new connection as fn(arg, "*", true), since what was notified
 * while disconnected (or committed just before) is unknown.  More than 64
 * at once are handed over as the first 64 and one "*".  0, or -1 for a channel name that is not
 * [a-z0-9_]+.
 */
int		 db_listen(struct db *, const char *channel,
		    void (*fn)(void *, const char *, bool), void *arg)
		    __attribute__((warn_unused_result));
/*
 * Reads, without waiting, whatever the server has sent since the last
 * statement, handing notifications to the listener; when the server has
 * not answered anything for 5 seconds, asks it (one round trip).  0 while
 * connected; -1 when there is no connection, the server has closed it or
 * does not answer (the next statement reconnects).
 */
int		 db_poll(struct db *);
/* Prepares every statement of the table now; 0, or -1 on the first failure. */
int		 db_prepare_all(struct db *) __attribute__((warn_unused_result));
/* The outcome of the last call. */
enum db_status	 db_status(const struct db *);
/* Connections made again after the first one (NULL: 0). */
unsigned long	 db_reconnects(const struct db *);
/*
 * Sets statement_timeout and lock_timeout (ms, 0 = none) for every
 * session from now on; the current one, if any, is closed.  A statement
 * that runs into either fails with DB_UNAVAILABLE, on a connection that
 * stays usable, and db_timed_out() says so.
 */
void		 db_set_timeouts(struct db *, int statement_ms, int lock_ms);
/*
 * Sets the custom setting name (e.g. "keygate.x") to value in every
 * session from now on, passed as a parameter so that it shows in no query
 * text; the current session, if any, is closed.  The value may be secret:
 * it is wiped when replaced or freed.  0, or -1 out of memory.
 */
int		 db_set_session(struct db *, const char *name,
		    const char *value) __attribute__((warn_unused_result));
/*
 * Plans every prepared statement once (after db_set_timeouts()): for a
 * connection that sends one costly statement over and over.
 */
void		 db_prefer_generic_plans(struct db *);
/* True when the last failure was a statement or lock timeout. */
bool		 db_timed_out(const struct db *);
/* Connections made so far, the first included. */
unsigned long	 db_connects(const struct db *);
/* The next call tries to connect, however recent the last attempt. */
void		 db_retry_now(struct db *);
/* True between db_begin() (or _snapshot) and the commit or rollback. */
bool		 db_in_transaction(const struct db *);
/* The SQLSTATE of the last DB_ERROR ("" when none). */
const char	*db_sqlstate(const struct db *);
/* The server's message for the last failure; never contains parameters. */
const char	*db_errmsg(const struct db *);

/*
 * Runs a prepared statement with text parameters (NULL = SQL NULL).
 * Returns a result the caller frees with db_res_free(), or NULL on failure
 * with db_status() saying why.  Outside a transaction a lost connection is
 * re-established and the statement retried once.
 */
struct db_res	*db_query(struct db *, enum stmt, int nparams,
		    const char *const *params) __attribute__((warn_unused_result));
/*
 * As db_query() when only the number of rows matters (those a statement
 * changed, or found): that number, or -1 with db_status() set.
 */
int		 db_query_count(struct db *, enum stmt, int nparams,
		    const char *const *params)
		    __attribute__((warn_unused_result));
/*
 * As db_query() for a page of a listing whose statement takes (owner,
 * cursor, limit): cursor NULL = from the first row; limit is written out
 * here.
 */
struct db_res	*db_query_page(struct db *, enum stmt, const char *owner,
		    const char *cursor, int limit)
		    __attribute__((warn_unused_result));
/*
 * Writes the two parameters of a change a statement makes only when it is
 * asked for: into p[0] "true" and into p[1] value when value is not NULL,
 * else "false" and absent (a placeholder the statement leaves unread, of
 * the parameter's type).  The strings are borrowed.
 */
void		 db_param_change(const char **p, const char *value,
		    const char *absent);
/* As db_query() for a statement that returns no rows. */
int		 db_exec(struct db *, enum stmt, int nparams,
		    const char *const *params) __attribute__((warn_unused_result));
/*
 * Runs SQL text that may hold several statements and no parameters: for
 * migrations only.  0, or -1 with db_status() set.
 */
int		 db_exec_script(struct db *, const char *)
		    __attribute__((warn_unused_result));

/*
 * Runs a prepared statement and hands its rows to fn one at a time, as
 * PostgreSQL sends them (libpq's single-row mode), so that a result of
 * any size takes the memory of one row.  The row is borrowed for the
 * call (row 0 of it).  fn returns 0 to go on, -1 to stop: the statement
 * is then cancelled.  0 when every row was handed over, 1 when fn
 * stopped, -1 on a failure with db_status() set.
 */
int		 db_each_row(struct db *, enum stmt, int nparams,
		    const char *const *params,
		    int (*fn)(void *arg, const struct db_res *row), void *arg)
		    __attribute__((warn_unused_result));
/*
 * Begins a transaction that reads one snapshot of the database and
 * writes nothing (REPEATABLE READ, READ ONLY).  0, or -1.
 */
int		 db_begin_snapshot(struct db *) __attribute__((warn_unused_result));
int		 db_begin(struct db *) __attribute__((warn_unused_result));
int		 db_commit(struct db *) __attribute__((warn_unused_result));
/* Rolls back if a transaction is open; safe to call after a failure. */
void		 db_rollback(struct db *);

int		 db_rows(const struct db_res *);
/* A borrowed value ("" for NULL); valid until db_res_free(). */
const char	*db_value(const struct db_res *, int row, int col);
bool		 db_isnull(const struct db_res *, int row, int col);
void		 db_res_free(struct db_res *);

/*
 * Reads the applied schema version: 0 and *version set (0 = no migration
 * table at all), or -1 with db_status() set.
 */
int		 db_schema_version(struct db *, int *version)
		    __attribute__((warn_unused_result));

extern const char *const db_status_names[DB_STATUS__MAX];

/*
 * The statement table as it is written, for the tests that check it: the
 * name, the SQL text and the number of parameters it says it takes.
 */
const char	*db_stmt_name(enum stmt);
const char	*db_stmt_sql(enum stmt);
int		 db_stmt_nparams(enum stmt);

#endif
