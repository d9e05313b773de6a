#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/keys.h"
#include "core/scope.h"
#include "lib/crypto.h"
#include "lib/db.h"

int
key_scopes_literal(const char *const *scopes, size_t n, char *out,
    size_t outsz)
{
	size_t	 i, used = 1;

	if (outsz < 3)
		return -1;
	out[0] = '{';
	for (i = 0; i < n; i++) {
		size_t l = strlen(scopes[i]);

		size_t j;
		bool dup = false;

		/* Valid scopes hold no quote, comma, brace or backslash. */
		if (!scope_valid(scopes[i]) || used + l + 4 >= outsz)
			return -1;
		for (j = 0; j < i; j++)
			dup |= strcmp(scopes[j], scopes[i]) == 0;
		if (dup)
			continue;
		if (used > 1)
			out[used++] = ',';
		out[used++] = '"';
		memcpy(out + used, scopes[i], l);
		used += l;
		out[used++] = '"';
	}
	out[used++] = '}';
	out[used] = '\0';
	return 0;
}

static int mint(const char *, const char *, const char *,
    struct key_created *, char [2 * APIKEY_HASH_LEN + 1]);

enum key_result
key_create(struct db *db, const char *brand, const char *hmac_secret,
    const struct key_spec *s, struct key_created *out)
{
	struct db_res	*res;
	char		 machex[2 * APIKEY_HASH_LEN + 1], scopes[2048];
	const char	*p[12];

	memset(out, 0, sizeof(*out));
	if (key_scopes_literal(s->scopes, s->nscopes, scopes,
	    sizeof(scopes)) == -1)
		return KEY_BAD_INPUT;
	if (mint(brand, s->env, hmac_secret, out, machex) == -1)
		return KEY_BAD_INPUT;

	p[0] = s->tenant_id;
	if ((res = db_query(db, STMT_TENANT_EXISTS, 1, p)) == NULL) {
		key_created_wipe(out);
		return KEY_DB;
	}
	if (db_rows(res) == 0) {
		db_res_free(res);
		key_created_wipe(out);
		return KEY_NO_TENANT;
	}
	db_res_free(res);

	p[0] = s->tenant_id;
	p[1] = s->name != NULL ? s->name : "";
	p[2] = s->env;
	p[3] = out->prefix;
	p[4] = machex;
	p[5] = out->last4;
	p[6] = scopes;
	p[7] = s->role_id;
	p[8] = s->expires_at;
	p[9] = s->rate_limit_max;
	p[10] = s->rate_limit_window;
	p[11] = s->created_by;
	if ((res = db_query(db, STMT_KEY_INSERT, 12, p)) == NULL) {
		key_created_wipe(out);
		return KEY_DB;
	}
	snprintf(out->id, sizeof(out->id), "%s", db_value(res, 0, 0));
	snprintf(out->created_at, sizeof(out->created_at), "%s",
	    db_value(res, 0, 1));
	db_res_free(res);
	return KEY_OK;
}

/* Mints a secret and its stored form: the prefix and the HMAC in hex. */
static int
mint(const char *brand, const char *env, const char *hmac_secret,
    struct key_created *out, char machex[2 * APIKEY_HASH_LEN + 1])
{
	struct apikey_parts parts;
	uint8_t		 mac[APIKEY_HASH_LEN];

	if (apikey_generate(brand, env, out->key, sizeof(out->key)) == -1 ||
	    apikey_parse(out->key, brand, &parts) == -1 ||
	    apikey_hash(hmac_secret, out->key, mac) == -1) {
		key_created_wipe(out);
		return -1;
	}
	crypto_hex(mac, sizeof(mac), machex);
	explicit_bzero(mac, sizeof(mac));
	memcpy(out->prefix, parts.prefix, sizeof(out->prefix));
	memcpy(out->last4, parts.last4, sizeof(out->last4));
	return 0;
}

enum key_result
key_rotate(struct db *db, const char *brand, const char *hmac_secret,
    const char *id, const char *caller_tenant, const char *env, long grace,
    struct key_created *out)
{
	struct db_res	*res;
	char		 machex[2 * APIKEY_HASH_LEN + 1], g[24];
	const char	*p[6];
	bool		 found;

	memset(out, 0, sizeof(*out));
	if (mint(brand, env, hmac_secret, out, machex) == -1)
		return KEY_BAD_INPUT;
	snprintf(g, sizeof(g), "%ld", grace);
	p[0] = id;
	p[1] = caller_tenant;
	p[2] = out->prefix;
	p[3] = machex;
	p[4] = out->last4;
	p[5] = g;
	if ((res = db_query(db, STMT_KEY_ROTATE, 6, p)) == NULL) {
		key_created_wipe(out);
		return KEY_DB;
	}
	found = db_rows(res) == 1;
	db_res_free(res);
	if (!found) {
		key_created_wipe(out);
		return KEY_NO_TENANT;
	}
	snprintf(out->id, sizeof(out->id), "%s", id);
	return KEY_OK;
}

void
key_created_wipe(struct key_created *k)
{
	explicit_bzero(k->key, sizeof(k->key));
}

void
key_window_text(int secs, char *out, size_t outsz)
{
	static const struct { int secs; const char *unit; } units[] = {
		{ 86400, "day" }, { 3600, "hour" }, { 60, "minute" },
		{ 1, "second" },
	};
	size_t	 i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (secs > 0 && secs % units[i].secs == 0) {
			int n = secs / units[i].secs;

			snprintf(out, outsz, "%d %s%s", n, units[i].unit,
			    n == 1 ? "" : "s");
			return;
		}
	snprintf(out, outsz, "%d seconds", secs);
}

int
key_dev_active(struct db *db)
{
	const char	*p[1] = { APIKEY_DEV_PREFIX };
	int		 n;

	if ((n = db_query_count(db, STMT_DEV_KEY_ACTIVE, 1, p)) == -1)
		return -1;
	return n > 0;
}

int
key_seed_dev(struct db *db, char *id, size_t idsz)
{
	uint8_t		 mac[APIKEY_HASH_LEN];
	char		 machex[2 * APIKEY_HASH_LEN + 1];
	const char	*p[5];
	struct db_res	*res;
	int		 rc;

	if (apikey_hash(APIKEY_DEV_HMAC, APIKEY_DEV, mac) == -1)
		return -1;
	crypto_hex(mac, sizeof(mac), machex);
	/* A revoked, disabled or expired one makes way for a fresh one. */
	p[0] = APIKEY_DEV_ID;
	p[1] = APIKEY_DEV_PREFIX;
	if (db_exec(db, STMT_DEV_KEY_CLEAR, 2, p) == -1)
		return -1;
	p[1] = "00000000-0000-0000-0000-000000000001";
	p[2] = APIKEY_DEV_PREFIX;
	p[3] = machex;
	p[4] = APIKEY_DEV + sizeof(APIKEY_DEV) - 5;
	if ((res = db_query(db, STMT_DEV_KEY_INSERT, 5, p)) == NULL)
		return -1;
	rc = db_rows(res) == 1 ? 1 : 0;
	if (rc == 1)
		snprintf(id, idsz, "%s", db_value(res, 0, 0));
	db_res_free(res);
	return rc;
}

enum key_room
key_room(struct db *db, const char *tenant, long max)
{
	const char	*p[1] = { tenant };
	struct db_res	*res;
	long		 have;

	if (db_exec(db, STMT_TENANT_LOCK, 1, p) == -1)
		return KEY_ROOM_DB;
	if (max <= 0)
		return KEY_ROOM;
	if ((res = db_query(db, STMT_KEY_COUNT_ACTIVE, 1, p)) == NULL)
		return KEY_ROOM_DB;
	have = atol(db_value(res, 0, 0));
	db_res_free(res);
	return have < max ? KEY_ROOM : KEY_ROOM_FULL;
}

struct db_res *
key_get(struct db *db, const char *id, const char *caller_tenant)
{
	const char	*p[2] = { id, caller_tenant };

	return db_query(db, STMT_KEY_GET, 2, p);
}

int
key_set_role(struct db *db, const char *id, const char *caller_tenant,
    const char *role)
{
	const char	*p[3] = { id, caller_tenant, role };

	return db_exec(db, STMT_KEY_SET_ROLE, 3, p);
}

struct db_res *
key_list(struct db *db, const char *caller_tenant, const char *tenant,
    bool include_revoked, const char *cursor, int limit)
{
	const char	*p[5];
	char		 lim[16];

	snprintf(lim, sizeof(lim), "%d", limit);
	p[0] = caller_tenant;
	p[1] = tenant;
	p[2] = include_revoked ? "true" : "false";
	p[3] = cursor;
	p[4] = lim;
	return db_query(db, STMT_KEY_LIST, 5, p);
}

struct db_res *
key_dormant(struct db *db, const char *caller_tenant, long days,
    const char *cursor, int limit)
{
	const char	*p[4];
	char		 d[24], lim[16];

	snprintf(d, sizeof(d), "%ld", days);
	snprintf(lim, sizeof(lim), "%d", limit);
	p[0] = caller_tenant;
	p[1] = d;
	p[2] = cursor;
	p[3] = lim;
	return db_query(db, STMT_KEY_DORMANT, 4, p);
}

int
key_revoke(struct db *db, const char *id, const char *caller_tenant)
{
	const char	*p[2] = { id, caller_tenant };
	int		 n;

	if ((n = db_query_count(db, STMT_KEY_REVOKE, 2, p)) == -1)
		return -1;
	return n == 1;
}

int
key_update(struct db *db, const char *id, const char *caller_tenant,
    const struct key_change *c)
{
	const char	*p[12];
	int		 n;

	p[0] = id;
	p[1] = caller_tenant;
	p[2] = c->has_name ? "true" : "false";
	p[3] = c->name != NULL ? c->name : "";
	db_param_change(p + 4, c->scopes, "{}");
	p[6] = c->has_expires ? "true" : "false";
	p[7] = c->expires_at;
	p[8] = c->has_rl_max ? "true" : "false";
	p[9] = c->rl_max;
	p[10] = c->has_rl_window ? "true" : "false";
	p[11] = c->rl_window;
	if ((n = db_query_count(db, STMT_KEY_UPDATE, 12, p)) == -1)
		return -1;
	return n == 1;
}

int
key_ids_literal(const char *const *ids, size_t n, char *out, size_t outsz)
{
	size_t	 i, l, used = 1;

	if (outsz < 3)
		return -1;
	out[0] = '{';
	for (i = 0; i < n; i++) {
		l = strlen(ids[i]);
		if (l == 0 || strcspn(ids[i], "\"\\,{} ") != l ||
		    used + l + 2 >= outsz)
			return -1;
		if (i > 0)
			out[used++] = ',';
		memcpy(out + used, ids[i], l);
		used += l;
	}
	out[used++] = '}';
	out[used] = '\0';
	return 0;
}

int
key_touch(struct db *db, const char *ids)
{
	const char	*p[1] = { ids };

	return db_exec(db, STMT_KEY_TOUCH, 1, p);
}

int
key_disable_dormant(struct db *db, int days)
{
	const char	*p[1];
	char		 d[16];

	snprintf(d, sizeof(d), "%d", days);
	p[0] = d;
	return db_query_count(db, STMT_KEY_DISABLE_DORMANT, 1, p);
}
