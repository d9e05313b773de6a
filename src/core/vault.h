#ifndef KEYGATE_CORE_VAULT_H
#define KEYGATE_CORE_VAULT_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "providers/provider.h"

/*
 * The vault: tenants' LLM provider keys, sealed with AES-256-GCM under keys
 * derived by HKDF-SHA256 from a keyring of master keys.  A value is bound to
 * its tenant and provider through the associated data, so a value copied to
 * another row does not open.
 */

struct vault;

/*
 * Parses a keyring "id:base64,id:base64" (each key exactly 32 bytes, the
 * first active) and derives the encryption keys into secure memory.
 * Returns NULL with the reason in err; the text is never echoed back.
 */
struct vault	*vault_new(const char *master_keys, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/* Wipes and frees; NULL is accepted. */
void		 vault_free(struct vault *);
/* The id of the key new values are sealed under. */
const char	*vault_active_id(const struct vault *);
/*
 * Seals plaintext for tenant and provider under the active key into out
 * as "v1:<iv hex>:<tag hex>:<ciphertext hex>" with a fresh random IV.
 * 0, or -1.
 */
int		 vault_seal(const struct vault *, const char *tenant,
		    const char *provider, const char *plaintext, struct buf *out)
		    __attribute__((warn_unused_result));
/*
 * Opens a stored value sealed under keyring entry key_id for tenant and
 * provider into out (free it with buf_free_secret()).  0, or -1 when the
 * key id is unknown, the text malformed or the tag does not verify.
 */
int		 vault_open(const struct vault *, const char *key_id,
		    const char *tenant, const char *provider, const char *stored,
		    struct buf *out) __attribute__((warn_unused_result));

struct db;

/*
 * Inside the caller's transaction, re-seals every stored value under the
 * active key (values already under it are re-sealed too, with a fresh IV).
 * Returns the number of values, or -1 with err set: a value that does not
 * open, or a database failure (see db_status()).  The caller commits or
 * rolls back, so it is all or none.
 */
long		 vault_reencrypt_all(struct db *, const struct vault *,
		    char *err, size_t errsz) __attribute__((warn_unused_result));
/*
 * Opens every stored value without changing anything, calling bad for
 * each one that does not open.  Returns how many failed, or -1 on a
 * database failure (reason in err).
 */
long		 vault_check_all(struct db *, const struct vault *, long *total,
		    void (*bad)(void *, const char *tenant, const char *provider,
		    const char *key_id), void *ctx, char *err, size_t errsz)
		    __attribute__((warn_unused_result));

/*
 * Inside the caller's transaction, stores tenant's key for provider,
 * sealed under the active key (vault_seal()), in place of the one it had;
 * validated says whether the provider accepted it.  0, or -1 with
 * db_status() set.
 */
int		 vault_store(struct db *, const struct vault *,
		    const char *tenant, const char *provider,
		    const char *sealed, bool validated)
		    __attribute__((warn_unused_result));

/* Which providers a tenant has a stored key for, and when each was tried. */
struct vault_status {
	bool	 has[PROVIDER__MAX];
	char	 validated[PROVIDER__MAX][40];	/* ISO 8601, "" = never */
};

/* tenant's stored keys into *out.  0, or -1 with db_status() set. */
int		 vault_status(struct db *, const char *tenant,
		    struct vault_status *out) __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, deletes tenant's stored key for
 * provider (NULL = every one): rows of the providers deleted, to be freed
 * with db_res_free(), or NULL with db_status() set.
 */
struct db_res	*vault_delete(struct db *, const char *tenant,
		    const char *provider) __attribute__((warn_unused_result));

#endif
