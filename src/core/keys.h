#ifndef KEYGATE_CORE_KEYS_H
#define KEYGATE_CORE_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/apikey.h"
#include "lib/db.h"

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

/* The columns of a key row, in order: the list is DB_KEY_COLUMNS. */
enum key_col {
	DB_KEY_COLUMNS(DB_COLS_ENUM)
	KC__MAX
};

struct db_res;

/* "1 minute", "30 seconds", ... for a window in seconds, into out. */
void		 key_window_text(int seconds, char *out, size_t outsz);

/*
 * Mints a key and inserts it inside the caller's transaction.  The secret
 * is generated here from the strong generator; only its prefix and HMAC
 * reach the database.
 */
enum key_result key_create(struct db *, const char *brand,
		    const char *hmac_secret, const struct key_spec *,
		    struct key_created *) __attribute__((warn_unused_result));
/*
 * Gives key id (within caller_tenant's subtree, not revoked) a new secret
 * for env inside the caller's transaction; the old secret stays valid for
 * grace seconds (0 = not at all).  KEY_NO_TENANT means no such usable key.
 */
enum key_result key_rotate(struct db *, const char *brand,
		    const char *hmac_secret, const char *id,
		    const char *caller_tenant, const char *env, long grace,
		    struct key_created *) __attribute__((warn_unused_result));
/*
 * Stores the development key (APIKEY_DEV, id APIKEY_DEV_ID, scope "*",
 * root tenant) inside the caller's transaction unless it exists and is
 * usable; a revoked, disabled or expired one is deleted and replaced by a
 * fresh one.  1 created, 0 already there, -1 database failure.
 */
int		 key_seed_dev(struct db *, char *id,
		    size_t idsz) __attribute__((warn_unused_result));
/* 1 when the development key exists and is usable, 0 not, -1 failure. */
int		 key_dev_active(struct db *) __attribute__((warn_unused_result));
/* Wipes the secret. */
void		 key_created_wipe(struct key_created *);
/*
 * Writes scopes as a PostgreSQL array literal into out; -1 when a scope is
 * not valid or out is too small.
 */
int		 key_scopes_literal(const char *const *, size_t, char *out,
		    size_t outsz) __attribute__((warn_unused_result));

/*
 * Writes key ids as a PostgreSQL array literal ({id,id}) into out; -1
 * when an id holds a character that would end or split an element (a
 * quote, comma, brace, backslash or space), or out is too small.
 */
int		 key_ids_literal(const char *const *ids, size_t n, char *out,
		    size_t outsz) __attribute__((warn_unused_result));
/*
 * Records a use of the keys ids (an array literal, key_ids_literal()):
 * their last_used_at becomes now, except for a key written less than a
 * minute ago.  0, or -1 with db_status() set.
 */
int		 key_touch(struct db *, const char *ids)
		    __attribute__((warn_unused_result));
/*
 * Disables every usable key not used for days days (never used: not
 * since it was made), each with its audit row, in one statement.  How
 * many, or -1 with db_status() set.
 */
int		 key_disable_dormant(struct db *, int days)
		    __attribute__((warn_unused_result));

/* Whether a tenant may have one more active key. */
enum key_room {
	KEY_ROOM,
	KEY_ROOM_FULL,		/* it has the most allowed already */
	KEY_ROOM_DB,		/* see db_status() */
	KEY_ROOM__MAX
};

/*
 * The per-tenant quota: at most max active keys (0 or less = no limit).
 * Inside the caller's transaction, before the insert: locks the tenant's
 * row, which makes the count and the insert one step.
 */
enum key_room	 key_room(struct db *, const char *tenant, long max)
		    __attribute__((warn_unused_result));

/*
 * Key id as caller_tenant sees it (its subtree): a row of enum key_col or
 * none, to be freed with db_res_free(); NULL with db_status() set.
 */
struct db_res	*key_get(struct db *, const char *id,
		    const char *caller_tenant)
		    __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, gives key id of caller_tenant's
 * subtree role (NULL = none).  0, or -1 with db_status() set.
 */
int		 key_set_role(struct db *, const char *id,
		    const char *caller_tenant, const char *role)
		    __attribute__((warn_unused_result));

/*
 * The keys of caller_tenant's subtree (of tenant only when not NULL),
 * revoked ones too when include_revoked, after row id cursor (NULL = from
 * the first), at most limit: rows of enum key_col to be freed with
 * db_res_free(), or NULL with db_status() set.
 */
struct db_res	*key_list(struct db *, const char *caller_tenant,
		    const char *tenant, bool include_revoked,
		    const char *cursor, int limit)
		    __attribute__((warn_unused_result));
/*
 * As key_list() for the usable keys of caller_tenant's subtree not used
 * for days days (never used: not since they were made).
 */
struct db_res	*key_dormant(struct db *, const char *caller_tenant,
		    long days, const char *cursor, int limit)
		    __attribute__((warn_unused_result));

/*
 * Inside the caller's transaction, revokes key id of caller_tenant's
 * subtree.  1 revoked now; 0 nothing changed (revoked already, or no such
 * key); -1 with db_status() set.
 */
int		 key_revoke(struct db *, const char *id,
		    const char *caller_tenant) __attribute__((warn_unused_result));

/* What an update of a key changes: a field only when its has_ is set. */
struct key_change {
	bool		 has_name;
	const char	*name;		/* NULL = "" */
	const char	*scopes;	/* an array literal; NULL = unchanged */
	bool		 has_expires;
	const char	*expires_at;	/* ISO 8601; NULL = never */
	bool		 has_rl_max;
	const char	*rl_max;	/* decimal text; NULL = the default */
	bool		 has_rl_window;
	const char	*rl_window;	/* seconds as text; NULL = the default */
};

/*
 * Inside the caller's transaction, changes key id of caller_tenant's
 * subtree as c says.  1 changed; 0 not (revoked, or no such key); -1 with
 * db_status() set.
 */
int		 key_update(struct db *, const char *id,
		    const char *caller_tenant, const struct key_change *c)
		    __attribute__((warn_unused_result));

#endif
