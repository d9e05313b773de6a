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

#endif
