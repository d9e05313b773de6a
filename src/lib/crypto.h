#ifndef KEYGATE_LIB_CRYPTO_H
#define KEYGATE_LIB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The only door to libgcrypt: randomness, hashes and MACs.  Key material
 * handed to these functions is borrowed; none of it is kept.
 */

#define CRYPTO_SHA256_LEN	32
#define CRYPTO_GCM_IV_LEN	12
#define CRYPTO_GCM_TAG_LEN	16
#define CRYPTO_KEY_LEN		32

/*
 * Initialises libgcrypt (version check, secure memory, the kernel's random
 * generator).  The master calls it once before forking: the generator
 * keeps no state in the process, so no two processes ever draw the same
 * bytes, and the nonce generator reseeds itself in a new process.  0, or
 * -1 with a message logged by the caller from the returned text in err.
 */
int	crypto_init(char *err, size_t errsz) __attribute__((warn_unused_result));
/* The random generator in use: "system" (getrandom), "standard", "fips". */
const char *crypto_generator(void);
/* Fills p with n bytes from the strong generator (keys, secrets). */
void	crypto_random(void *p, size_t n);
/* Fills p with n unpredictable bytes from the nonce generator (ids). */
void	crypto_nonce(void *p, size_t n);
/*
 * A time-ordered uuid (RFC 9562 version 7: the Unix time in milliseconds,
 * then 74 bits from the nonce generator) as text, in out[37].  Ids made
 * one after another sort in that order, so rows keyed by them are added
 * at the end of their indexes instead of on random pages.
 */
#define CRYPTO_UUID_LEN	36
void	crypto_uuid7(char out[CRYPTO_UUID_LEN + 1]);
/*
 * n bytes (at least 6) of an id in time order: the Unix time in
 * milliseconds (48 bits, big-endian), then nonce bytes.
 */
void	crypto_time_id(uint8_t *p, size_t n);
/* HMAC-SHA256(key, msg) into out[32]; 0, or -1 when libgcrypt refuses. */
int	crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
	    size_t msglen, uint8_t out[CRYPTO_SHA256_LEN])
	    __attribute__((warn_unused_result));
/* SHA-256(msg) into out[32]. */
void	crypto_sha256(const void *msg, size_t len,
	    uint8_t out[CRYPTO_SHA256_LEN]);
/*
 * AES-256-GCM encryption with a 12-byte IV: n bytes of in become n bytes of
 * out, and the 16-byte tag covers them and the aad (NULL only when aadlen
 * is 0).  0, or -1 when libgcrypt refuses.
 */
int	crypto_gcm_seal(const uint8_t key[CRYPTO_KEY_LEN],
	    const uint8_t iv[CRYPTO_GCM_IV_LEN], const void *aad, size_t aadlen,
	    const void *in, size_t n, uint8_t *out,
	    uint8_t tag[CRYPTO_GCM_TAG_LEN]) __attribute__((warn_unused_result));
/*
 * AES-256-GCM decryption.  An IV that is not 12 bytes or a tag that is not
 * 16 bytes is refused before anything is decrypted; a tag that does not
 * verify leaves out wiped.  0, or -1.
 */
int	crypto_gcm_open(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t *iv,
	    size_t ivlen, const void *aad, size_t aadlen, const void *in,
	    size_t n, const uint8_t *tag, size_t taglen, uint8_t *out)
	    __attribute__((warn_unused_result));
/*
 * HKDF-SHA256 (RFC 5869) built on libgcrypt's HMAC, which Debian 12's
 * libgcrypt 1.10 lacks as a KDF: extract with salt, expand with info into
 * outlen (1..8160) bytes.  0, or -1.
 */
int	crypto_hkdf_sha256(const void *ikm, size_t ikmlen, const void *salt,
	    size_t saltlen, const void *info, size_t infolen, uint8_t *out,
	    size_t outlen) __attribute__((warn_unused_result));
/* Memory for key material: libgcrypt's secure (unswappable) heap. */
void	*crypto_secure_alloc(size_t);
/* Wipes and frees memory from crypto_secure_alloc(); NULL is accepted. */
void	 crypto_secure_free(void *, size_t);
/* Compares n bytes in time that does not depend on where they differ. */
bool	crypto_equal(const void *a, const void *b, size_t n);
/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void	crypto_hex(const void *p, size_t n, char *out);

#endif
