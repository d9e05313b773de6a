#include "autoconfig.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/vault.h"
#include "lib/base64.h"
#include "lib/crypto.h"
#include "lib/harden.h"
#include "lib/db.h"

#define VAULT_MAX_KEYS	8
#define VAULT_ID_MAX	32
/* HKDF inputs: the purpose is named so no other use can share the key. */
#define VAULT_SALT	"keygate-vault-v1"
#define VAULT_INFO	"llm_keys aes-256-gcm"

struct vault_key {
	char		 id[VAULT_ID_MAX];
	uint8_t		*key;		/* CRYPTO_KEY_LEN, secure memory */
};

struct vault {
	struct vault_key keys[VAULT_MAX_KEYS];
	int		 n;		/* keys[0] is active */
};

void
vault_free(struct vault *v)
{
	int	 i;

	if (v == NULL)
		return;
	for (i = 0; i < v->n; i++)
		crypto_secure_free(v->keys[i].key, CRYPTO_KEY_LEN);
	explicit_bzero(v, sizeof(*v));
	free(v);
}

/*
 * The keyring entry ID:BASE64 from p to end, as v's next key: derived
 * with HKDF into locked memory, the decoded bytes wiped.  0, or -1 with
 * err set (a key already added is v's to free).
 */
static int
add_key(struct vault *v, const char *p, const char *end, char *err,
    size_t errsz)
{
	const char	*colon = memchr(p, ':', (size_t)(end - p));
	uint8_t		 raw[64];
	long		 len;
	size_t		 idl;
	int		 i, rc = -1;

	if (v->n == VAULT_MAX_KEYS) {
		snprintf(err, errsz, "master_keys: more than %d keys",
		    VAULT_MAX_KEYS);
		return -1;
	}
	if (colon == NULL || colon == p ||
	    (idl = (size_t)(colon - p)) >= VAULT_ID_MAX) {
		snprintf(err, errsz, "master_keys: entry %d is not ID:BASE64",
		    v->n + 1);
		return -1;
	}
	len = base64_decode(colon + 1, (size_t)(end - colon - 1), false, raw,
	    sizeof(raw));
	if (len != CRYPTO_KEY_LEN) {
		snprintf(err, errsz, "master_keys: key %.*s does not decode to "
		    "32 bytes", (int)idl, p);
		goto out;
	}
	for (i = 0; i < v->n; i++)
		if (strlen(v->keys[i].id) == idl &&
		    memcmp(v->keys[i].id, p, idl) == 0) {
			snprintf(err, errsz, "master_keys: id %.*s appears "
			    "twice", (int)idl, p);
			goto out;
		}
	memcpy(v->keys[v->n].id, p, idl);
	v->keys[v->n].key = crypto_secure_alloc(CRYPTO_KEY_LEN);
	if (v->keys[v->n].key == NULL ||
	    crypto_hkdf_sha256(raw, CRYPTO_KEY_LEN, VAULT_SALT,
	    sizeof(VAULT_SALT) - 1, VAULT_INFO, sizeof(VAULT_INFO) - 1,
	    v->keys[v->n].key, CRYPTO_KEY_LEN) == -1) {
		snprintf(err, errsz, "master_keys: deriving key %.*s failed",
		    (int)idl, p);
		v->n++;		/* vault_free() frees what was allocated */
		goto out;
	}
	/*
	 * libgcrypt locked its secure pool in the process that made it; a
	 * worker forked since must lock the page again.
	 */
	(void)harden_lock(v->keys[v->n].key, CRYPTO_KEY_LEN);
	v->n++;
	rc = 0;
out:
	explicit_bzero(raw, sizeof(raw));
	return rc;
}

struct vault *
vault_new(const char *ring, char *err, size_t errsz)
{
	struct vault	*v;
	const char	*p = ring, *end;

	if (ring == NULL || *ring == '\0') {
		snprintf(err, errsz, "master_keys is empty");
		return NULL;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	while (*p != '\0') {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		end = p + strcspn(p, ", ");
		if (add_key(v, p, end, err, errsz) == -1)
			goto fail;
		p = end;
	}
	if (v->n == 0) {
		snprintf(err, errsz, "master_keys is empty");
		goto fail;
	}
	return v;
fail:
	vault_free(v);
	return NULL;
}

const char *
vault_active_id(const struct vault *v)
{
	return v->keys[0].id;
}

/* "llm_keys|<tenant>|<provider>": what a value is bound to. */
static int
aad(const char *tenant, const char *provider, struct buf *out)
{
	return buf_printf(out, "llm_keys|%s|%s", tenant, provider);
}

int
vault_seal(const struct vault *v, const char *tenant, const char *provider,
    const char *plaintext, struct buf *out)
{
	uint8_t		 iv[CRYPTO_GCM_IV_LEN], tag[CRYPTO_GCM_TAG_LEN], *ct;
	size_t		 n = strlen(plaintext);
	struct buf	 ad = { 0 };
	char		 ivh[2 * CRYPTO_GCM_IV_LEN + 1];
	char		 tagh[2 * CRYPTO_GCM_TAG_LEN + 1], *cth;
	int		 rc = -1;

	if ((ct = malloc(n + 1)) == NULL || (cth = malloc(2 * n + 1)) == NULL) {
		free(ct);
		return -1;
	}
	/* A fresh IV from the strong generator for every value. */
	crypto_random(iv, sizeof(iv));
	if (aad(tenant, provider, &ad) == 0 &&
	    crypto_gcm_seal(v->keys[0].key, iv, ad.data, ad.len, plaintext, n,
	    ct, tag) == 0) {
		crypto_hex(iv, sizeof(iv), ivh);
		crypto_hex(tag, sizeof(tag), tagh);
		crypto_hex(ct, n, cth);
		buf_reset(out);
		rc = buf_printf(out, "v1:%s:%s:%s", ivh, tagh, cth);
	}
	buf_free(&ad);
	free(ct);
	free(cth);
	return rc;
}

static int
unhex(const char *s, size_t n, uint8_t *out)
{
	size_t	 i;
	int	 hi, lo;

	if (n % 2 != 0)
		return -1;
	for (i = 0; i < n / 2; i++) {
		hi = isxdigit((unsigned char)s[2 * i]) ?
		    (isdigit((unsigned char)s[2 * i]) ? s[2 * i] - '0' :
		    (tolower((unsigned char)s[2 * i]) - 'a' + 10)) : -1;
		lo = isxdigit((unsigned char)s[2 * i + 1]) ?
		    (isdigit((unsigned char)s[2 * i + 1]) ? s[2 * i + 1] - '0' :
		    (tolower((unsigned char)s[2 * i + 1]) - 'a' + 10)) : -1;
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi * 16 + lo);
	}
	return 0;
}

int
vault_open(const struct vault *v, const char *key_id, const char *tenant,
    const char *provider, const char *stored, struct buf *out)
{
	const uint8_t	*key = NULL;
	const char	*ivh, *tagh, *cth;
	uint8_t		 iv[CRYPTO_GCM_IV_LEN], tag[CRYPTO_GCM_TAG_LEN], *ct = NULL;
	uint8_t		*pt = NULL;
	struct buf	 ad = { 0 };
	size_t		 ivl, tagl, ctl;
	int		 i, rc = -1;

	for (i = 0; i < v->n; i++)
		if (strcmp(v->keys[i].id, key_id) == 0)
			key = v->keys[i].key;
	if (key == NULL || strncmp(stored, "v1:", 3) != 0)
		return -1;
	ivh = stored + 3;
	if ((tagh = strchr(ivh, ':')) == NULL)
		return -1;
	ivl = (size_t)(tagh++ - ivh);
	if ((cth = strchr(tagh, ':')) == NULL)
		return -1;
	tagl = (size_t)(cth++ - tagh);
	ctl = strlen(cth);
	/* Lengths first: a short tag is refused before any decryption. */
	if (ivl != 2 * sizeof(iv) || tagl != 2 * sizeof(tag) || ctl == 0 ||
	    ctl > 4096 || unhex(ivh, ivl, iv) == -1 ||
	    unhex(tagh, tagl, tag) == -1)
		return -1;
	if ((ct = malloc(ctl / 2 + 1)) == NULL ||
	    (pt = crypto_secure_alloc(ctl / 2 + 1)) == NULL)
		goto out;
	if (unhex(cth, ctl, ct) == -1 || aad(tenant, provider, &ad) == -1 ||
	    crypto_gcm_open(key, iv, sizeof(iv), ad.data, ad.len, ct, ctl / 2,
	    tag, sizeof(tag), pt) == -1)
		goto out;
	buf_reset(out);
	rc = buf_append(out, pt, ctl / 2);
out:
	buf_free(&ad);
	free(ct);
	crypto_secure_free(pt, ctl / 2 + 1);
	return rc;
}

/* Columns of STMT_LLM_KEY_ALL. */
enum { VA_TENANT, VA_PROVIDER, VA_CIPHERTEXT, VA_KEY_ID };

/* Rows rewritten by one statement during a re-encryption. */
#define REWRITE_BATCH 500

/* Array literals of a batch: tenants, providers, ciphertexts. */
struct rewrite {
	struct buf	 col[3];
	int		 n;
};

/* Writes the batch (if any) and empties it.  0, or -1. */
static int
rewrite_flush(struct db *db, const struct vault *v, struct rewrite *rw)
{
	const char	*p[4];
	int		 i, rc = 0;

	if (rw->n == 0)
		return 0;
	for (i = 0; i < 3; i++) {
		if (buf_puts(&rw->col[i], "}") == -1)
			return -1;
		p[i] = rw->col[i].data;
	}
	p[3] = vault_active_id(v);
	if (db_exec(db, STMT_LLM_KEY_REWRITE, 4, p) == -1)
		rc = -1;
	for (i = 0; i < 3; i++)
		buf_reset(&rw->col[i]);
	rw->n = 0;
	return rc;
}

/*
 * Adds one value to the batch.  Every element is safe in an array literal
 * unquoted: a UUID, a provider name and v1:hex:hex:hex.
 */
static int
rewrite_add(struct rewrite *rw, const char *tenant, const char *prov,
    const char *sealed)
{
	const char	*v[3] = { tenant, prov, sealed };
	int		 i;

	for (i = 0; i < 3; i++)
		if (buf_printf(&rw->col[i], "%s%s", rw->n == 0 ? "{" : ",",
		    v[i]) == -1)
			return -1;
	rw->n++;
	return 0;
}

long
vault_reencrypt_all(struct db *db, const struct vault *v, char *err,
    size_t errsz)
{
	struct db_res	*res;
	struct buf	 plain = { 0 }, sealed = { 0 };
	struct rewrite	 rw = { 0 };
	long		 n = 0;
	int		 r, i;

	if ((res = db_query(db, STMT_LLM_KEY_ALL, 0, NULL)) == NULL) {
		snprintf(err, errsz, "%s", db_errmsg(db));
		return -1;
	}
	for (r = 0; r < db_rows(res); r++) {
		const char *tenant = db_value(res, r, VA_TENANT);
		const char *prov = db_value(res, r, VA_PROVIDER);

		if (vault_open(v, db_value(res, r, VA_KEY_ID), tenant, prov,
		    db_value(res, r, VA_CIPHERTEXT), &plain) == -1) {
			snprintf(err, errsz, "the %s key of tenant %s does not "
			    "open under master key %s", prov, tenant,
			    db_value(res, r, VA_KEY_ID));
			n = -1;
			break;
		}
		if (buf_puts(&plain, "") == -1 ||
		    vault_seal(v, tenant, prov, plain.data, &sealed) == -1 ||
		    rewrite_add(&rw, tenant, prov, sealed.data) == -1) {
			snprintf(err, errsz, "sealing failed");
			n = -1;
			break;
		}
		buf_free_secret(&plain);
		if (rw.n == REWRITE_BATCH && rewrite_flush(db, v, &rw) == -1) {
			snprintf(err, errsz, "%s", db_errmsg(db));
			n = -1;
			break;
		}
		n++;
	}
	if (n != -1 && rewrite_flush(db, v, &rw) == -1) {
		snprintf(err, errsz, "%s", db_errmsg(db));
		n = -1;
	}
	buf_free_secret(&plain);
	buf_free(&sealed);
	for (i = 0; i < 3; i++)
		buf_free(&rw.col[i]);
	db_res_free(res);
	return n;
}

long
vault_check_all(struct db *db, const struct vault *v, long *total,
    void (*bad)(void *, const char *, const char *, const char *), void *ctx,
    char *err, size_t errsz)
{
	struct db_res	*res;
	struct buf	 plain = { 0 };
	long		 nbad = 0;
	int		 r;

	*total = 0;
	err[0] = '\0';
	if ((res = db_query(db, STMT_LLM_KEY_ALL, 0, NULL)) == NULL) {
		snprintf(err, errsz, "%s", db_errmsg(db));
		return -1;
	}
	for (r = 0; r < db_rows(res); r++) {
		(*total)++;
		if (vault_open(v, db_value(res, r, VA_KEY_ID),
		    db_value(res, r, VA_TENANT), db_value(res, r, VA_PROVIDER),
		    db_value(res, r, VA_CIPHERTEXT), &plain) == 0)
			continue;
		nbad++;
		bad(ctx, db_value(res, r, VA_TENANT),
		    db_value(res, r, VA_PROVIDER), db_value(res, r, VA_KEY_ID));
	}
	buf_free_secret(&plain);
	db_res_free(res);
	return nbad;
}

int
vault_store(struct db *db, const struct vault *v, const char *tenant,
    const char *provider, const char *sealed, bool validated)
{
	const char	*p[5];

	p[0] = tenant;
	p[1] = provider;
	p[2] = sealed;
	p[3] = vault_active_id(v);
	p[4] = validated ? "true" : "false";
	return db_exec(db, STMT_LLM_KEY_UPSERT, 5, p);
}

int
vault_status(struct db *db, const char *tenant, struct vault_status *out)
{
	const char	*p[1] = { tenant };
	struct db_res	*res;
	enum provider	 pv;
	int		 r;

	memset(out, 0, sizeof(*out));
	if ((res = db_query(db, STMT_LLM_KEY_STATUS, 1, p)) == NULL)
		return -1;
	for (r = 0; r < db_rows(res); r++)
		if ((pv = provider_parse(db_value(res, r, 0))) !=
		    PROVIDER__MAX) {
			out->has[pv] = true;
			snprintf(out->validated[pv], sizeof(out->validated[pv]),
			    "%s", db_value(res, r, 1));
		}
	db_res_free(res);
	return 0;
}

struct db_res *
vault_delete(struct db *db, const char *tenant, const char *provider)
{
	const char	*p[2] = { tenant, provider };

	return db_query(db, STMT_LLM_KEY_DELETE, 2, p);
}
