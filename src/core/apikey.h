#ifndef KEYGATE_CORE_APIKEY_H
#define KEYGATE_CORE_APIKEY_H

#include <stddef.h>
#include <stdint.h>

/*
 * The key format: <brand>_<env>_<random><checksum>.  random is 32 bytes from
 * the strong generator written in base62 (43 characters); checksum is the
 * CRC32 of everything before it in base62 (6 characters), so a mistyped or
 * truncated key is refused without a database lookup.
 */
#define APIKEY_RANDOM_LEN	43
#define APIKEY_CHECKSUM_LEN	6
#define APIKEY_PREFIX_RANDOM	8	/* random characters in the prefix */
#define APIKEY_MAX		96	/* longest key we look at, with NUL */
#define APIKEY_PREFIX_MAX	48
#define APIKEY_HASH_LEN		32

/*
 * The development key seeded by `keygatectl seed-dev-key`: a fixed, public
 * value outside the key format, accepted only outside production mode.
 */
#define APIKEY_DEV		"kg_dev_local_default_tenant_do_not_use_in_production"
#define APIKEY_DEV_PREFIX	"kg_dev_local_default"
#define APIKEY_DEV_ID		"00000000-0000-0000-0000-000000000010"
/*
 * Its HMAC is keyed with this public value rather than hmac_secret: the key
 * is public anyway, and it must keep working whatever secret the instance
 * was migrated with.
 */
#define APIKEY_DEV_HMAC		"keygate-development-key"

struct apikey_parts {
	char	 prefix[APIKEY_PREFIX_MAX];	/* "kg_live_AbCdEfGh" */
	char	 env[8];			/* "live" or "test" */
	char	 last4[5];
};

/*
 * Writes a new key for brand and env ("live" or "test") into out, which
 * must hold APIKEY_MAX bytes.  0, or -1 for a bad brand or env.
 */
int	apikey_generate(const char *brand, const char *env, char *out,
	    size_t outsz) __attribute__((warn_unused_result));
/*
 * Checks a presented key's shape and checksum for brand, and splits out the
 * lookup prefix.  0, or -1 when it cannot be one of our keys.
 */
int	apikey_parse(const char *key, const char *brand,
	    struct apikey_parts *) __attribute__((warn_unused_result));
/* HMAC-SHA256(secret, key): what is stored instead of the key. */
int	apikey_hash(const char *secret, const char *key,
	    uint8_t out[APIKEY_HASH_LEN]) __attribute__((warn_unused_result));
/* CRC-32 (IEEE 802.3), as zlib computes it. */
uint32_t apikey_crc32(const void *, size_t);
/* base62 of a big-endian number into exactly width characters; 0 or -1. */
int	apikey_base62(const uint8_t *num, size_t len, char *out, size_t width);

#endif
