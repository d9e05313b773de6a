#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/apikey.h"
#include "core/auth.h"
#include "core/jwt.h"
#include "core/keycache.h"
#include "core/scope.h"
#include "lib/clock.h"
#include "lib/crypto.h"
#include "lib/db.h"

/* Columns of STMT_KEY_LOOKUP. */
enum {
	LK_ID, LK_TENANT, LK_HASH, LK_USABLE, LK_SCOPES, LK_RL_MAX,
	LK_RL_WINDOW, LK_ENV, LK_PREFIX, LK_STALE, LK_ROLE, LK_UNTIL
};

/* last_used_at is written at most this often per key (s). */
#define TOUCH_EVERY 60.0

const char *
auth_credential(const char *authorization, const char *x_api_key)
{
	const char	*p = authorization;

	if (p != NULL && *p != '\0') {
		if (strncasecmp(p, "Bearer", 6) != 0 ||
		    (p[6] != ' ' && p[6] != '\0'))
			return p;	/* another scheme: refused as invalid */
		for (p += 6; *p == ' '; p++)
			continue;
		/* "Bearer" with nothing after it carries no credential. */
		if (*p != '\0')
			return p;
	}
	if (x_api_key != NULL && *x_api_key != '\0')
		return x_api_key;
	return NULL;
}

int
auth_set_scopes(struct principal *p, const char *csv)
{
	size_t	 n = strlen(csv);
	char	*s, *tok, *save = NULL;

	p->nscopes = 0;
	if (n >= sizeof(p->scope_buf))
		return -1;
	memcpy(p->scope_buf, csv, n + 1);
	s = p->scope_buf;
	for (tok = strtok_r(s, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (p->nscopes == AUTH_MAX_SCOPES)
			return -1;
		p->scopes[p->nscopes++] = tok;
	}
	return 0;
}

bool
auth_allows(const struct principal *p, const char *scope)
{
	return scope_allows(p->scopes, p->nscopes, scope);
}

/* Copies a looked-up row into e.  0, or -1 when a value does not fit. */
static int
fill_entry(struct keycache_entry *e, const struct db_res *res, double now)
{
	const char	*until = db_value(res, 0, LK_UNTIL);
	int		 n = 0;

	e->usable = strcmp(db_value(res, 0, LK_USABLE), "t") == 0;
	e->until = *until != '\0' ? (time_t)atoll(until) : 0;
	e->rate_limit_max = atol(db_value(res, 0, LK_RL_MAX));
	e->rate_limit_window = atoi(db_value(res, 0, LK_RL_WINDOW));
	e->next_touch = strcmp(db_value(res, 0, LK_STALE), "t") == 0 ? now :
	    now + TOUCH_EVERY;
#define COPY(f, col) \
	n |= (size_t)snprintf(e->f, sizeof(e->f), "%s", \
	    db_value(res, 0, col)) >= sizeof(e->f)
	COPY(hash, LK_HASH);
	COPY(key_id, LK_ID);
	COPY(tenant_id, LK_TENANT);
	COPY(env, LK_ENV);
	COPY(key_prefix, LK_PREFIX);
	COPY(role_id, LK_ROLE);
	COPY(scopes, LK_SCOPES);
#undef COPY
	return n ? -1 : 0;
}

/*
 * The key row for a prefix, from the cache or else PostgreSQL (then
 * cached).  *e is NULL when there is none.  AUTH_OK, or AUTH_UNAVAILABLE /
 * AUTH_INVALID when the lookup failed.
 */
static enum auth_result
lookup(struct db *db, struct keycache *kc, const char *prefix,
    struct keycache_entry *tmp, struct keycache_entry **e)
{
	struct db_res	*res;
	const char	*params[1] = { prefix };
	double		 now = clock_mono();
	unsigned long	 gen = 0;

	*e = NULL;
	/*
	 * Cached rows are trusted only while the connection that hears of
	 * changes is up; that also keeps answering 503 while PostgreSQL is
	 * down.
	 */
	if (kc != NULL && db_poll(db) == 0 &&
	    ((*e = keycache_get(kc, prefix, now)) != NULL ||
	    keycache_miss_get(kc, prefix, now)))
		return AUTH_OK;
	if (kc != NULL)
		gen = keycache_token(kc);
	if ((res = db_query(db, STMT_KEY_LOOKUP, 1, params)) == NULL)
		return db_status(db) == DB_UNAVAILABLE ? AUTH_UNAVAILABLE :
		    AUTH_INVALID;
	if (db_rows(res) == 1) {
		if (kc == NULL ||
		    (*e = keycache_put(kc, prefix, now, gen)) == NULL) {
			memset(tmp, 0, sizeof(*tmp));
			*e = tmp;
		}
		if (fill_entry(*e, res, now) == -1) {
			memset(*e, 0, sizeof(**e));
			*e = NULL;
		}
	} else if (kc != NULL)
		keycache_miss_put(kc, prefix, now, gen);
	db_res_free(res);
	return AUTH_OK;
}

enum auth_result
auth_key(struct db *db, const struct auth_settings *set, struct keycache *kc,
    const char *key, struct principal *p)
{
	/* Compared against when the prefix is unknown: same work, no match. */
	static const char nomatch[2 * APIKEY_HASH_LEN + 1] =
	    "0000000000000000000000000000000000000000000000000000000000000000";
	struct apikey_parts parts;
	struct keycache_entry tmp, *e;
	uint8_t		 mac[APIKEY_HASH_LEN];
	char		 machex[2 * APIKEY_HASH_LEN + 1];
	const char	*stored = nomatch;
	bool		 match, usable, dev = false;
	enum auth_result rc;
	double		 now;

	memset(p, 0, sizeof(*p));
	if (key == NULL || *key == '\0')
		return AUTH_MISSING;
	if (set->dev_key && strcmp(key, APIKEY_DEV) == 0) {
		memset(&parts, 0, sizeof(parts));
		memcpy(parts.prefix, APIKEY_DEV_PREFIX,
		    sizeof(APIKEY_DEV_PREFIX));
		dev = true;
	} else if (apikey_parse(key, set->key_brand, &parts) == -1)
		return AUTH_INVALID;
	if ((rc = lookup(db, kc, parts.prefix, &tmp, &e)) != AUTH_OK)
		return rc;
	if (e != NULL)
		stored = e->hash;
	rc = AUTH_INVALID;
	match = false;
	if (apikey_hash(dev ? APIKEY_DEV_HMAC : set->hmac_secret, key,
	    mac) == 0) {
		crypto_hex(mac, sizeof(mac), machex);
		match = strlen(stored) == sizeof(machex) - 1 &&
		    crypto_equal(machex, stored, sizeof(machex) - 1);
	}
	usable = e != NULL && e->usable &&
	    (e->until == 0 || time(NULL) < e->until);
	if (match && usable) {
		memcpy(p->key_id, e->key_id, sizeof(p->key_id));
		memcpy(p->tenant_id, e->tenant_id, sizeof(p->tenant_id));
		memcpy(p->env, e->env, sizeof(p->env));
		memcpy(p->key_prefix, e->key_prefix, sizeof(p->key_prefix));
		memcpy(p->role_id, e->role_id, sizeof(p->role_id));
		p->rate_limit_max = e->rate_limit_max;
		p->rate_limit_window = e->rate_limit_window;
		p->until = e->until;
		now = clock_mono();
		if (now >= e->next_touch) {
			p->touch = true;
			e->next_touch = now + TOUCH_EVERY;
		}
		if (auth_set_scopes(p, e->scopes) == 0)
			rc = AUTH_OK;
	}
	explicit_bzero(machex, sizeof(machex));
	explicit_bzero(mac, sizeof(mac));
	/* Only a row the cache did not keep was copied here. */
	if (e == &tmp)
		explicit_bzero(&tmp, sizeof(tmp));
	if (rc != AUTH_OK)
		memset(p, 0, sizeof(*p));
	return rc;
}

enum auth_result
auth_jwt(struct db *db, const struct auth_settings *set, const char *token,
    struct principal *p)
{
	struct jwt_claims c;
	struct db_res	*res;
	const char	*params[1];
	enum auth_result rc = AUTH_INVALID;

	memset(p, 0, sizeof(*p));
	/* No jwt_secret, no tokens: there is no fallback secret. */
	if (set->jwt_secret[0] == '\0')
		return AUTH_INVALID;
	if (jwt_verify(token, set->jwt_secret, set->jwt_leeway, time(NULL),
	    &c) != JWT_OK)
		return AUTH_INVALID;
	params[0] = c.tenant_id;
	if ((res = db_query(db, STMT_TENANT_EXISTS, 1, params)) == NULL)
		return db_status(db) == DB_UNAVAILABLE ? AUTH_UNAVAILABLE :
		    AUTH_INVALID;
	if (db_rows(res) != 1) {
		db_res_free(res);
		return AUTH_INVALID;
	}
	db_res_free(res);
	memcpy(p->tenant_id, c.tenant_id, sizeof(p->tenant_id));
	snprintf(p->key_prefix, sizeof(p->key_prefix), "jwt:%.40s", c.sub);
	snprintf(p->env, sizeof(p->env), "jwt");
	if (c.has_scopes)
		return auth_set_scopes(p, c.scopes) == 0 ? AUTH_OK :
		    AUTH_INVALID;
	/* No scopes claim: read-only, as the built-in role reader. */
	params[0] = "reader";
	if ((res = db_query(db, STMT_BUILTIN_ROLE_SCOPES, 1, params)) == NULL)
		return db_status(db) == DB_UNAVAILABLE ? AUTH_UNAVAILABLE :
		    AUTH_INVALID;
	if (db_rows(res) == 1 && auth_set_scopes(p, db_value(res, 0, 0)) == 0)
		rc = AUTH_OK;
	db_res_free(res);
	return rc;
}
