#include "autoconfig.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <gcrypt.h>

#include "lib/crypto.h"

#define GCRYPT_MIN_VERSION "1.8.0"

int
crypto_init(char *err, size_t errsz)
{
	/*
	 * The kernel's generator (getrandom) for every random byte.  The
	 * default one stirs its pool at every hash and cipher opened, with
	 * getrusage(): a walk over every thread of the process, which in a
	 * worker holding thousands of calls made each request's key check
	 * cost milliseconds.  Only honoured before gcry_check_version().
	 */
	gcry_control(GCRYCTL_SET_PREFERRED_RNG_TYPE, GCRY_RNG_TYPE_SYSTEM);
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

const char *
crypto_generator(void)
{
	int	 type = 0;

	gcry_control(GCRYCTL_GET_CURRENT_RNG_TYPE, &type);
	switch (type) {
	case GCRY_RNG_TYPE_SYSTEM:
		return "system";
	case GCRY_RNG_TYPE_FIPS:
		return "fips";
	case GCRY_RNG_TYPE_STANDARD:
		return "standard";
	default:
		return "unknown";
	}
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

void
crypto_time_id(uint8_t *p, size_t n)
{
	struct timespec	 ts;
	uint64_t	 ms;
	int		 i;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	for (i = 5; i >= 0; i--, ms >>= 8)
		p[i] = (uint8_t)(ms & 0xff);
	gcry_create_nonce(p + 6, n - 6);
}

void
crypto_uuid7(char out[CRYPTO_UUID_LEN + 1])
{
	uint8_t		 b[16];

	crypto_time_id(b, sizeof(b));
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x70);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, CRYPTO_UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-"
	    "%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
	    b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
	    b[13], b[14], b[15]);
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

int
crypto_gcm_seal(const uint8_t key[CRYPTO_KEY_LEN],
    const uint8_t iv[CRYPTO_GCM_IV_LEN], const void *aad, size_t aadlen,
    const void *in, size_t n, uint8_t *out, uint8_t tag[CRYPTO_GCM_TAG_LEN])
{
	gcry_cipher_hd_t h = NULL;
	int		 rc = -1;

	if (gcry_cipher_open(&h, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM,
	    GCRY_CIPHER_SECURE) != 0)
		return -1;
	if (gcry_cipher_setkey(h, key, CRYPTO_KEY_LEN) == 0 &&
	    gcry_cipher_setiv(h, iv, CRYPTO_GCM_IV_LEN) == 0 &&
	    (aadlen == 0 || gcry_cipher_authenticate(h, aad, aadlen) == 0) &&
	    gcry_cipher_final(h) == 0 &&
	    gcry_cipher_encrypt(h, out, n, in, n) == 0 &&
	    gcry_cipher_gettag(h, tag, CRYPTO_GCM_TAG_LEN) == 0)
		rc = 0;
	gcry_cipher_close(h);
	return rc;
}

int
crypto_gcm_open(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t *iv,
    size_t ivlen, const void *aad, size_t aadlen, const void *in, size_t n,
    const uint8_t *tag, size_t taglen, uint8_t *out)
{
	gcry_cipher_hd_t h = NULL;
	int		 rc = -1;

	/*
	 * libgcrypt would check a shorter tag against a prefix of the real
	 * one; a truncated tag is forgery made easier, so it is refused.
	 */
	if (ivlen != CRYPTO_GCM_IV_LEN || taglen != CRYPTO_GCM_TAG_LEN)
		return -1;
	if (gcry_cipher_open(&h, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM,
	    GCRY_CIPHER_SECURE) != 0)
		return -1;
	if (gcry_cipher_setkey(h, key, CRYPTO_KEY_LEN) == 0 &&
	    gcry_cipher_setiv(h, iv, ivlen) == 0 &&
	    (aadlen == 0 || gcry_cipher_authenticate(h, aad, aadlen) == 0) &&
	    gcry_cipher_final(h) == 0 &&
	    gcry_cipher_decrypt(h, out, n, in, n) == 0 &&
	    gcry_cipher_checktag(h, tag, taglen) == 0)
		rc = 0;
	gcry_cipher_close(h);
	if (rc == -1 && n > 0)
		explicit_bzero(out, n);
	return rc;
}

int
crypto_hkdf_sha256(const void *ikm, size_t ikmlen, const void *salt,
    size_t saltlen, const void *info, size_t infolen, uint8_t *out,
    size_t outlen)
{
	static const uint8_t zeros[CRYPTO_SHA256_LEN];
	uint8_t		 prk[CRYPTO_SHA256_LEN], t[CRYPTO_SHA256_LEN];
	gcry_mac_hd_t	 h = NULL;
	size_t		 done = 0, tlen = 0, len;
	uint8_t		 counter;
	int		 rc = -1;

	if (outlen == 0 || outlen > 255 * CRYPTO_SHA256_LEN)
		return -1;
	/* Extract: PRK = HMAC(salt or zeros, IKM). */
	if (crypto_hmac_sha256(saltlen > 0 ? salt : zeros,
	    saltlen > 0 ? saltlen : sizeof(zeros), ikm, ikmlen, prk) == -1)
		return -1;
	/* Expand: T(i) = HMAC(PRK, T(i-1) | info | i). */
	if (gcry_mac_open(&h, GCRY_MAC_HMAC_SHA256, GCRY_MAC_FLAG_SECURE,
	    NULL) != 0)
		goto out;
	for (counter = 1; done < outlen; counter++) {
		len = sizeof(t);
		if (gcry_mac_reset(h) != 0 ||
		    gcry_mac_setkey(h, prk, sizeof(prk)) != 0 ||
		    (tlen > 0 && gcry_mac_write(h, t, tlen) != 0) ||
		    (infolen > 0 && gcry_mac_write(h, info, infolen) != 0) ||
		    gcry_mac_write(h, &counter, 1) != 0 ||
		    gcry_mac_read(h, t, &len) != 0 || len != sizeof(t))
			goto out;
		tlen = sizeof(t);
		len = outlen - done < tlen ? outlen - done : tlen;
		memcpy(out + done, t, len);
		done += len;
	}
	rc = 0;
out:
	gcry_mac_close(h);
	explicit_bzero(prk, sizeof(prk));
	explicit_bzero(t, sizeof(t));
	if (rc == -1)
		explicit_bzero(out, outlen);
	return rc;
}

void *
crypto_secure_alloc(size_t n)
{
	return gcry_calloc_secure(1, n);
}

void
crypto_secure_free(void *p, size_t n)
{
	if (p == NULL)
		return;
	explicit_bzero(p, n);
	gcry_free(p);
}
