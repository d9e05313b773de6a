/* Unit tests for src/core/apikey.c: format, checksum, prefix, HMAC. */
#include "../unit.h"

#include "core/apikey.h"
#include "lib/crypto.h"

static void
test_crc32_vector(void **state)
{
	(void)state;
	/* The standard check value of CRC-32/ISO-HDLC. */
	assert_int_equal(apikey_crc32("123456789", 9), 0xcbf43926u);
	assert_int_equal(apikey_crc32("", 0), 0);
}

static void
test_base62(void **state)
{
	const uint8_t	 zero[4] = { 0 }, v61[1] = { 61 }, v62[1] = { 62 };
	const uint8_t	 max32[4] = { 0xff, 0xff, 0xff, 0xff };
	uint8_t		 ones[32];
	char		 out[64];

	(void)state;
	assert_int_equal(apikey_base62(zero, 4, out, 6), 0);
	assert_string_equal(out, "000000");
	assert_int_equal(apikey_base62(v61, 1, out, 3), 0);
	assert_string_equal(out, "00z");
	assert_int_equal(apikey_base62(v62, 1, out, 3), 0);
	assert_string_equal(out, "010");
	/* 4294967295 = 4 * 62^5 + ... fits in 6 digits: "4gfFC3". */
	assert_int_equal(apikey_base62(max32, 4, out, 6), 0);
	assert_string_equal(out, "4gfFC3");
	assert_int_equal(apikey_base62(max32, 4, out, 5), -1);
	/* 2^256 - 1 needs exactly 43 digits. */
	memset(ones, 0xff, sizeof(ones));
	assert_int_equal(apikey_base62(ones, 32, out, 43), 0);
	assert_int_equal(strlen(out), 43);
	assert_int_equal(apikey_base62(ones, 32, out, 42), -1);
}

static void
test_generate_and_parse(void **state)
{
	char	 key[APIKEY_MAX], key2[APIKEY_MAX];
	struct apikey_parts p;

	(void)state;
	assert_int_equal(apikey_generate("kg", "live", key, sizeof(key)), 0);
	assert_int_equal(strlen(key), 8 + APIKEY_RANDOM_LEN +
	    APIKEY_CHECKSUM_LEN);
	assert_memory_equal(key, "kg_live_", 8);
	assert_int_equal(apikey_parse(key, "kg", &p), 0);
	assert_string_equal(p.env, "live");
	assert_int_equal(strlen(p.prefix), 16);
	assert_memory_equal(p.prefix, key, 16);
	assert_string_equal(p.last4, key + strlen(key) - 4);

	assert_int_equal(apikey_generate("kg", "test", key2, sizeof(key2)), 0);
	assert_memory_equal(key2, "kg_test_", 8);
	assert_string_not_equal(key, key2);
	assert_int_equal(apikey_generate("kg", "prod", key2, sizeof(key2)), -1);
}

static void
test_parse_rejects(void **state)
{
	char	 key[APIKEY_MAX], bad[APIKEY_MAX + 8];
	struct apikey_parts p;
	size_t	 n, i;

	(void)state;
	assert_int_equal(apikey_generate("kg", "live", key, sizeof(key)), 0);
	n = strlen(key);
	/* Wrong brand. */
	assert_int_equal(apikey_parse(key, "xx", &p), -1);
	/* Truncated. */
	snprintf(bad, sizeof(bad), "%.*s", (int)n - 1, key);
	assert_int_equal(apikey_parse(bad, "kg", &p), -1);
	/* Every single-character typo in the random part is caught. */
	for (i = 8; i < n; i++) {
		memcpy(bad, key, n + 1);
		bad[i] = bad[i] == 'a' ? 'b' : 'a';
		assert_int_equal(apikey_parse(bad, "kg", &p), -1);
	}
	/* Non-base62 and SQL. */
	memcpy(bad, key, n + 1);
	bad[20] = '\'';
	assert_int_equal(apikey_parse(bad, "kg", &p), -1);
	assert_int_equal(apikey_parse("' OR (SELECT pg_sleep(3)) IS NULL --",
	    "kg", &p), -1);
	assert_int_equal(apikey_parse("", "kg", &p), -1);
	assert_int_equal(apikey_parse(
	    "kg_dev_local_default_tenant_do_not_use_in_production", "kg", &p),
	    -1);
}

static void
test_hmac_is_keyed(void **state)
{
	uint8_t	 a[APIKEY_HASH_LEN], b[APIKEY_HASH_LEN];

	(void)state;
	assert_int_equal(apikey_hash("secret-one-0123456789abcdef012345",
	    "kg_live_x", a), 0);
	assert_int_equal(apikey_hash("secret-two-0123456789abcdef012345",
	    "kg_live_x", b), 0);
	assert_false(crypto_equal(a, b, sizeof(a)));
	assert_int_equal(apikey_hash("secret-one-0123456789abcdef012345",
	    "kg_live_x", b), 0);
	assert_true(crypto_equal(a, b, sizeof(a)));
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_crc32_vector),
    cmocka_unit_test(test_base62),
    cmocka_unit_test(test_generate_and_parse),
    cmocka_unit_test(test_parse_rejects),
    cmocka_unit_test(test_hmac_is_keyed))
