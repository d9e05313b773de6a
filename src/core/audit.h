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
 * Appends the row.  Call it inside the transaction that makes the change,
 * so both commit or neither does.  0, or -1 with db_status() set.
 */
int	audit_write(struct db *, const struct audit_entry *)
	    __attribute__((warn_unused_result));

#endif
