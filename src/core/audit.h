#ifndef KEYGATE_CORE_AUDIT_H
#define KEYGATE_CORE_AUDIT_H

struct db;

/*
 * One audit row.  Every field is borrowed text; NULL ids are stored as
 * NULL, other NULLs as "".  details is a JSON object's text or NULL.  Never
 * put a secret here.
 */
struct audit_entry {
	const char	*tenant_id;
	const char	*actor_key_id;
	const char	*actor;		/* "keygatectl", a JWT sub, ... */
	const char	*action;	/* "api_key.create", ... */
	const char	*target_type;
	const char	*target_id;
	const char	*request_id;
	const char	*client_addr;
	const char	*details;
};

/*
 * Keys the chain of every session db opens from now on.  Each row's hash
 * is an HMAC-SHA256 under a key derived from hmac_secret, a secret kept out
 * of the database: whoever can only write the table cannot make a row that
 * verifies.  The key reaches PostgreSQL as the session setting
 * keygate.audit_key (its inner and outer pads, hex); without it a session
 * cannot append.  0, or -1 out of memory.
 */
int	audit_attach(struct db *, const char *hmac_secret)
	    __attribute__((warn_unused_result));

/*
 * Appends the row.  Call it inside the transaction that makes the change,
 * so both commit or neither does.  0, or -1 with db_status() set.
 */
int	audit_write(struct db *, const struct audit_entry *)
	    __attribute__((warn_unused_result));

/* The columns of an audit row as audit_list() reads them, in order. */
enum audit_col {
	AL_ID, AL_CREATED, AL_TENANT, AL_ACTOR_KEY, AL_ACTOR, AL_ACTION,
	AL_TARGET_TYPE, AL_TARGET, AL_REQUEST, AL_CLIENT, AL_DETAILS, AL__MAX
};

/* Which rows audit_list() reads; NULL = any. */
struct audit_filter {
	const char	*action;
	const char	*actor_key_id;
	const char	*target_id;
	const char	*since;		/* ISO 8601 */
	const char	*until;		/* ISO 8601 */
	const char	*cursor;	/* rows older than this id */
};

struct db_res;

/*
 * The audit rows of caller_tenant's subtree that f lets through, newest
 * first, at most limit: rows of enum audit_col (who acted is shown only
 * to whom may see it), to be freed with db_res_free(), or NULL with
 * db_status() set.
 */
struct db_res	*audit_list(struct db *, const char *caller_tenant,
		    const struct audit_filter *f, int limit)
		    __attribute__((warn_unused_result));

#endif
