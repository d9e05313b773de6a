#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include <gcrypt.h>

#include "lib/crypto.h"

#define GCRYPT_MIN_VERSION "1.8.0"

int
crypto_init(char *err, size_t errsz)
{
	if (gcry_check_version(GCRYPT_MIN_VERSION) == NULL) {
		snprintf(err, errsz, "libgcrypt is older than %s",
		    GCRYPT_MIN_VERSION);
		return -1;
	}
	/*
	 * Secure memory keeps key material out of swap.  Without the
	 * privilege to lock memory libgcrypt warns once and carries on;
	 * silence that, the rest of the protection still holds.
	 */
	gcry_control(GCRYCTL_SUSPEND_SECMEM_WARN);
	gcry_control(GCRYCTL_INIT_SECMEM, 65536, 0);
	gcry_control(GCRYCTL_RESUME_SECMEM_WARN);
	gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
	return 0;
}

/*
 * libgcrypt notices a fork by its pid check and reseeds the child's pools;
 * stirring in fresh entropy here as well costs one getrandom() and does not
 * rely on that detection.
 */
void
crypto_after_fork(void)
{
	gcry_control(GCRYCTL_FAST_POLL, 0);
	gcry_control(GCRYCTL_UPDATE_RANDOM_SEED_FILE, 0);
}

void
crypto_random(void *p, size_t n)
{
	gcry_randomize(p, n, GCRY_STRONG_RANDOM);
}

void
crypto_nonce(void *p, size_t n)
{
	gcry_create_nonce(p, n);
}

int
crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
    size_t msglen, uint8_t out[CRYPTO_SHA256_LEN])
{
	gcry_mac_hd_t	 h = NULL;
	size_t		 outlen = CRYPTO_SHA256_LEN;
	int		 rc = -1;

	if (gcry_mac_open(&h, GCRY_MAC_HMAC_SHA256, GCRY_MAC_FLAG_SECURE,
	    NULL) != 0)
		return -1;
	if (gcry_mac_setkey(h, key, keylen) == 0 &&
	    gcry_mac_write(h, msg, msglen) == 0 &&
	    gcry_mac_read(h, out, &outlen) == 0 &&
	    outlen == CRYPTO_SHA256_LEN)
		rc = 0;
	gcry_mac_close(h);
	return rc;
}

void
crypto_sha256(const void *msg, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
	gcry_md_hash_buffer(GCRY_MD_SHA256, out, msg, len);
}

bool
crypto_equal(const void *a, const void *b, size_t n)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char	 d = 0;
	size_t		 i;

	for (i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

void
crypto_hex(const void *p, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *b = p;
	size_t	 i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 0xf];
	}
	out[2 * n] = '\0';
}
