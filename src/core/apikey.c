#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/apikey.h"
#include "lib/crypto.h"

static const char b62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

uint32_t
apikey_crc32(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint32_t crc = 0xffffffffu;
	size_t	 i;
	int	 k;

	for (i = 0; i < n; i++) {
		crc ^= s[i];
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

/*
 * Repeated division of the big-endian number by 62 gives the digits from
 * the least significant one, written from the right; the rest are '0'.
 */
int
apikey_base62(const uint8_t *num, size_t len, char *out, size_t width)
{
	uint8_t	 work[64];
	size_t	 i, pos;
	bool	 nonzero = true;

	if (len > sizeof(work))
		return -1;
	memcpy(work, num, len);
	for (pos = width; pos > 0; pos--) {
		unsigned int rem = 0;

		nonzero = false;
		for (i = 0; i < len; i++) {
			unsigned int cur = (rem << 8) | work[i];

			work[i] = (uint8_t)(cur / 62);
			rem = cur % 62;
			nonzero |= work[i] != 0;
		}
		out[pos - 1] = b62[rem];
	}
	explicit_bzero(work, sizeof(work));
	out[width] = '\0';
	/* Digits left over: the number does not fit in width. */
	return nonzero ? -1 : 0;
}

static bool
env_valid(const char *env)
{
	return strcmp(env, "live") == 0 || strcmp(env, "test") == 0;
}

static void
checksum(const char *s, size_t n, char out[APIKEY_CHECKSUM_LEN + 1])
{
	uint32_t crc = apikey_crc32(s, n);
	uint8_t	 be[4] = { (uint8_t)(crc >> 24), (uint8_t)(crc >> 16),
	    (uint8_t)(crc >> 8), (uint8_t)crc };

	(void)apikey_base62(be, sizeof(be), out, APIKEY_CHECKSUM_LEN);
}

int
apikey_generate(const char *brand, const char *env, char *out, size_t outsz)
{
	uint8_t	 rnd[32];
	size_t	 head;
	int	 n;

	if (!env_valid(env) || outsz < APIKEY_MAX)
		return -1;
	n = snprintf(out, outsz, "%s_%s_", brand, env);
	if (n < 0 || (size_t)n + APIKEY_RANDOM_LEN + APIKEY_CHECKSUM_LEN >=
	    outsz)
		return -1;
	head = (size_t)n;
	crypto_random(rnd, sizeof(rnd));
	if (apikey_base62(rnd, sizeof(rnd), out + head,
	    APIKEY_RANDOM_LEN) == -1) {
		explicit_bzero(rnd, sizeof(rnd));
		return -1;
	}
	explicit_bzero(rnd, sizeof(rnd));
	head += APIKEY_RANDOM_LEN;
	checksum(out, head, out + head);
	return 0;
}

int
apikey_parse(const char *key, const char *brand, struct apikey_parts *p)
{
	size_t	 bl = strlen(brand), kl, i, envlen;
	const char *env, *rnd;
	char	 sum[APIKEY_CHECKSUM_LEN + 1];

	memset(p, 0, sizeof(*p));
	kl = strnlen(key, APIKEY_MAX);
	if (kl >= APIKEY_MAX || kl <= bl + 1 || strncmp(key, brand, bl) != 0 ||
	    key[bl] != '_')
		return -1;
	env = key + bl + 1;
	if (strncmp(env, "live_", 5) == 0 || strncmp(env, "test_", 5) == 0)
		envlen = 4;
	else
		return -1;
	rnd = env + envlen + 1;
	if ((size_t)(key + kl - rnd) != APIKEY_RANDOM_LEN + APIKEY_CHECKSUM_LEN)
		return -1;
	for (i = 0; i < APIKEY_RANDOM_LEN + APIKEY_CHECKSUM_LEN; i++)
		if (strchr(b62, rnd[i]) == NULL || rnd[i] == '\0')
			return -1;
	checksum(key, (size_t)(rnd - key) + APIKEY_RANDOM_LEN, sum);
	if (memcmp(sum, rnd + APIKEY_RANDOM_LEN, APIKEY_CHECKSUM_LEN) != 0)
		return -1;
	memcpy(p->env, env, envlen);
	p->env[envlen] = '\0';
	snprintf(p->prefix, sizeof(p->prefix), "%.*s",
	    (int)(rnd - key) + APIKEY_PREFIX_RANDOM, key);
	memcpy(p->last4, key + kl - 4, 4);
	p->last4[4] = '\0';
	return 0;
}

int
apikey_hash(const char *secret, const char *key, uint8_t out[APIKEY_HASH_LEN])
{
	return crypto_hmac_sha256(secret, strlen(secret), key, strlen(key),
	    out);
}
