#ifndef KEYGATE_CORE_KEYS_H
#define KEYGATE_CORE_KEYS_H

#include <stddef.h>

#include "core/apikey.h"

struct db;

/* What a new key is made of; every pointer is borrowed. */
struct key_spec {
	const char	*tenant_id;
	const char	*name;
	const char	*env;		/* "live" or "test" */
	const char *const *scopes;
	size_t		 nscopes;
	const char	*role_id;	/* NULL = none */
	const char	*expires_at;	/* ISO 8601 or NULL */
	const char	*rate_limit_max; /* decimal text or NULL */
	const char	*rate_limit_window; /* seconds as text or NULL */
	const char	*created_by;	/* key id or NULL */
};

/* A created key: the secret is here once, to be shown and wiped. */
struct key_created {
	char	 id[40];
	char	 key[APIKEY_MAX];
	char	 prefix[APIKEY_PREFIX_MAX];
	char	 last4[5];
	char	 created_at[40];
};

enum key_result {
	KEY_OK,
	KEY_DB,			/* see db_status() */
	KEY_NO_TENANT,		/* tenant does not exist */
	KEY_BAD_INPUT,		/* env or scopes malformed */
	KEY_RESULT__MAX
};

/*
 * Mints a key and inserts it inside the caller's transaction.  The secret
 * is generated here from the strong generator; only its prefix and HMAC
 * reach the database.
 */
enum key_result key_create(struct db *, const char *brand,
		    const char *hmac_secret, const struct key_spec *,
		    struct key_created *) __attribute__((warn_unused_result));
/* Wipes the secret. */
void		 key_created_wipe(struct key_created *);
/*
 * Writes scopes as a PostgreSQL array literal into out; -1 when a scope is
 * not valid or out is too small.
 */
int		 key_scopes_literal(const char *const *, size_t, char *out,
		    size_t outsz) __attribute__((warn_unused_result));

#endif
