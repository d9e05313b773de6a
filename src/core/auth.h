#ifndef KEYGATE_CORE_AUTH_H
#define KEYGATE_CORE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct db;
struct keycache;

#define AUTH_MAX_SCOPES 32

/*
 * Who is calling: an API key (or, later, a JWT) and what it may do.  All
 * strings are owned copies; nothing in here is secret.
 */
struct principal {
	char	 key_id[40];		/* "" for a JWT */
	char	 tenant_id[40];
	char	 key_prefix[48];		/* or "jwt:<sub>" for a token */
	char	 env[8];
	char	 role_id[40];		/* "" = none */
	char	 scope_buf[1024];	/* backing store for scopes[] */
	const char *scopes[AUTH_MAX_SCOPES]; /* effective scopes */
	size_t	 nscopes;
	long	 rate_limit_max;	/* 0 = the configured default */
	int	 rate_limit_window;	/* s, 0 = the configured default */
	time_t	 until;			/* when the key stops working, 0 = never */
	bool	 touch;			/* last_used_at is over a minute old */
};

enum auth_result {
	AUTH_OK,
	AUTH_MISSING,		/* no credential at all: 401 missing_api_key */
	AUTH_INVALID,		/* anything else wrong: 401 invalid_api_key */
	AUTH_UNAVAILABLE,	/* the database is down: 503 */
	AUTH_RESULT__MAX
};

/*
 * Picks the credential from an Authorization header ("Bearer X") or an
 * X-API-Key header; NULL when neither carries one.  Returns a pointer into
 * the header text.
 */
const char	*auth_credential(const char *authorization, const char *x_api_key);
/*
 * Checks an API key: shape and checksum first (no database work), then a
 * lookup by prefix (in the cache, when one is given and holds it) and a
 * constant-time compare of its HMAC.  Every failure takes the same path to
 * AUTH_INVALID, and an unknown prefix still costs an HMAC, so the answer
 * and its timing say nothing about the secret.  (A cached prefix answers
 * sooner than one read from PostgreSQL; prefixes are not secret.)
 */
/*
 * What checking a credential needs of keygate.conf, as plain values (the
 * API fills it in from its configuration).
 */
struct auth_settings {
	bool		 dev_key;	/* the development key may be used */
	const char	*key_brand;	/* the keys' brand prefix */
	const char	*hmac_secret;	/* keys are stored as its HMAC */
	const char	*jwt_secret;	/* "" = no tokens */
	int		 jwt_leeway;	/* s of clock skew for exp/nbf */
};

enum auth_result auth_key(struct db *, const struct auth_settings *,
		    struct keycache *, const char *key, struct principal *)
		    __attribute__((warn_unused_result));
/*
 * Checks a JWT bearer token (HS256, jwt_secret) and the tenant it names.
 * A token without "scopes" gets the built-in role reader's.  Failures are
 * AUTH_INVALID, like a bad key.
 */
enum auth_result auth_jwt(struct db *, const struct auth_settings *,
		    const char *token,
		    struct principal *) __attribute__((warn_unused_result));
/* True when the principal's effective scopes allow scope. */
bool		 auth_allows(const struct principal *, const char *scope);
/*
 * Splits "a,b,c" into p->scopes (copying into p->scope_buf).  0, or -1
 * when it does not fit.
 */
int		 auth_set_scopes(struct principal *, const char *csv)
		    __attribute__((warn_unused_result));

#endif
