#include "autoconfig.h"

#include <stdio.h>
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

		/* Valid scopes hold no quote, comma, brace or backslash. */
		if (!scope_valid(scopes[i]) || used + l + 4 >= outsz)
			return -1;
		if (i > 0)
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

enum key_result
key_create(struct db *db, const char *brand, const char *hmac_secret,
    const struct key_spec *s, struct key_created *out)
{
	struct apikey_parts parts;
	struct db_res	*res;
	uint8_t		 mac[APIKEY_HASH_LEN];
	char		 machex[2 * APIKEY_HASH_LEN + 1], scopes[2048];
	const char	*p[12];

	memset(out, 0, sizeof(*out));
	if (key_scopes_literal(s->scopes, s->nscopes, scopes,
	    sizeof(scopes)) == -1)
		return KEY_BAD_INPUT;
	if (apikey_generate(brand, s->env, out->key, sizeof(out->key)) == -1 ||
	    apikey_parse(out->key, brand, &parts) == -1)
		return KEY_BAD_INPUT;
	if (apikey_hash(hmac_secret, out->key, mac) == -1) {
		key_created_wipe(out);
		return KEY_DB;
	}
	crypto_hex(mac, sizeof(mac), machex);

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
	p[3] = parts.prefix;
	p[4] = machex;
	p[5] = parts.last4;
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
	memcpy(out->prefix, parts.prefix, sizeof(out->prefix));
	memcpy(out->last4, parts.last4, sizeof(out->last4));
	return KEY_OK;
}

void
key_created_wipe(struct key_created *k)
{
	explicit_bzero(k->key, sizeof(k->key));
}
