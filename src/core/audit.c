#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/audit.h"
#include "lib/crypto.h"
#include "lib/db.h"

#define HMAC_BLOCK	64	/* SHA-256's block */

int
audit_attach(struct db *db, const char *hmac_secret)
{
	static const char label[] = "keygate-audit-chain";
	uint8_t		 key[CRYPTO_SHA256_LEN], pads[2 * HMAC_BLOCK];
	char		 hex[4 * HMAC_BLOCK + 1];
	size_t		 i;
	int		 rc;

	if (crypto_hmac_sha256(hmac_secret, strlen(hmac_secret), label,
	    sizeof(label) - 1, key) == -1)
		return -1;
	/* HMAC's two padded keys: PostgreSQL then needs only sha256(). */
	memset(pads, 0, sizeof(pads));
	memcpy(pads, key, sizeof(key));
	memcpy(pads + HMAC_BLOCK, key, sizeof(key));
	for (i = 0; i < HMAC_BLOCK; i++) {
		pads[i] ^= 0x36;
		pads[HMAC_BLOCK + i] ^= 0x5c;
	}
	crypto_hex(pads, sizeof(pads), hex);
	rc = db_set_session(db, "keygate.audit_key", hex);
	explicit_bzero(key, sizeof(key));
	explicit_bzero(pads, sizeof(pads));
	explicit_bzero(hex, sizeof(hex));
	return rc;
}

static const char *
or_empty(const char *s)
{
	return s != NULL ? s : "";
}

int
audit_write(struct db *db, const struct audit_entry *e)
{
	const char *p[9] = {
		e->tenant_id, e->actor_key_id, or_empty(e->actor), e->action,
		or_empty(e->target_type), or_empty(e->target_id),
		or_empty(e->request_id), or_empty(e->client_addr),
		e->details != NULL ? e->details : "{}",
	};

	return db_exec(db, STMT_AUDIT_INSERT, 9, p);
}

struct db_res *
audit_list(struct db *db, const char *caller_tenant,
    const struct audit_filter *f, int limit)
{
	const char	*p[8];
	char		 lim[16];

	snprintf(lim, sizeof(lim), "%d", limit);
	p[0] = caller_tenant;
	p[1] = f->action;
	p[2] = f->actor_key_id;
	p[3] = f->target_id;
	p[4] = f->since;
	p[5] = f->until;
	p[6] = f->cursor;
	p[7] = lim;
	return db_query(db, STMT_AUDIT_LIST, 8, p);
}
