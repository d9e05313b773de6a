#ifndef KEYGATE_LIB_CRYPTO_H
#define KEYGATE_LIB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The only door to libgcrypt: randomness, hashes and MACs.  Key material
 * handed to these functions is borrowed; none of it is kept.
 */

#define CRYPTO_SHA256_LEN 32

/*
 * Initialises libgcrypt (version check, secure memory).  The master calls
 * it once before forking; each worker calls crypto_after_fork() so that no
 * two processes ever draw the same random bytes.  0, or -1 with a message
 * logged by the caller from the returned text in err.
 */
int	crypto_init(char *err, size_t errsz) __attribute__((warn_unused_result));
void	crypto_after_fork(void);
/* Fills p with n bytes from the strong generator (keys, secrets). */
void	crypto_random(void *p, size_t n);
/* Fills p with n unpredictable bytes from the nonce generator (ids). */
void	crypto_nonce(void *p, size_t n);
/* HMAC-SHA256(key, msg) into out[32]; 0, or -1 when libgcrypt refuses. */
int	crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
	    size_t msglen, uint8_t out[CRYPTO_SHA256_LEN])
	    __attribute__((warn_unused_result));
/* SHA-256(msg) into out[32]. */
void	crypto_sha256(const void *msg, size_t len,
	    uint8_t out[CRYPTO_SHA256_LEN]);
/* Compares n bytes in time that does not depend on where they differ. */
bool	crypto_equal(const void *a, const void *b, size_t n);
/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void	crypto_hex(const void *p, size_t n, char *out);

#endif
