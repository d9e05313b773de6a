#ifndef KEYGATE_CORE_JWT_H
#define KEYGATE_CORE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/*
 * JWT bearer tokens: HS256 only, signed with jwt_secret.  Every other "alg",
 * "none" included, is refused before the signature is looked at.
 */

enum jwt_result {
	JWT_OK,
	JWT_MALFORMED,		/* not three base64url parts of JSON */
	JWT_BAD_ALG,		/* alg is not HS256 */
	JWT_BAD_SIGNATURE,
	JWT_NO_EXP,		/* exp is required */
	JWT_EXPIRED,
	JWT_NOT_YET_VALID,	/* nbf in the future */
	JWT_BAD_CLAIMS,		/* sub, tenant_id or scopes malformed */
	JWT_RESULT__MAX
};

struct jwt_claims {
	char	 sub[128];
	char	 tenant_id[40];
	char	 scopes[1024];	/* comma-separated, valid scopes only */
	bool	 has_scopes;	/* false: the token is read-only */
	long long exp;		/* s since the epoch */
	long long nbf;		/* 0 = none */
};

/* True when the text has the shape of a JWT (three dot-separated parts). */
bool		 jwt_looks_like(const char *);
/*
 * Verifies token against secret at time now, allowing leeway seconds of
 * clock skew for exp and nbf, and fills claims.
 */
enum jwt_result	 jwt_verify(const char *token, const char *secret,
		    long leeway, time_t now, struct jwt_claims *)
		    __attribute__((warn_unused_result));
/* Makes an HS256 token (for tests and tools); 0, or -1 when out is short. */
int		 jwt_sign(const char *payload_json, const char *secret,
		    char *out, size_t outsz) __attribute__((warn_unused_result));

extern const char *const jwt_result_names[JWT_RESULT__MAX];

#endif
