/* Unit tests for src/core/vault.c: keyring, sealing, binding, formats. */
#include "../unit.h"

#include "core/vault.h"
#include "lib/crypto.h"

/* base64 of 32 bytes 0x00..0x1f and of 32 bytes 0x20..0x3f */
#define K1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define T1 "00000000-0000-0000-0000-000000000001"
#define T2 "11111111-1111-1111-1111-111111111111"
#define SECRET "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"

static void
test_keyring_errors(void **state)
{
	char	 err[160];

	(void)state;
	assert_null(vault_new("", err, sizeof(err)));
	assert_string_equal(err, "master_keys is empty");
	assert_null(vault_new("k1", err, sizeof(err)));
	assert_string_equal(err, "master_keys: entry 1 is not ID:BASE64");
	assert_null(vault_new("k1:AAAA", err, sizeof(err)));
	assert_string_equal(err, "master_keys: key k1 does not decode to 32 "
	    "bytes");
	assert_null(vault_new("k1:" K1 ",k1:" K2, err, sizeof(err)));
	assert_string_equal(err, "master_keys: id k1 appears twice");
	assert_null(vault_new("k1:" K1 "!", err, sizeof(err)));
}

static void
test_seal_open_and_format(void **state)
{
	struct vault	*v;
	struct buf	 sealed = { 0 }, again = { 0 }, plain = { 0 };
	char		 err[160];

	(void)state;
	v = vault_new("k1:" K1 ", k0:" K2, err, sizeof(err));
	assert_non_null(v);
	assert_string_equal(vault_active_id(v), "k1");
	assert_int_equal(vault_seal(v, T1, "openai", SECRET, &sealed), 0);
	/* v1:<24 hex>:<32 hex>:<2 x plaintext hex> */
	assert_int_equal(sealed.len, 3 + 24 + 1 + 32 + 1 + 2 * strlen(SECRET));
	assert_memory_equal(sealed.data, "v1:", 3);
	assert_null(strstr(sealed.data, "sk-proj"));
	assert_int_equal(vault_open(v, "k1", T1, "openai", sealed.data,
	    &plain), 0);
	assert_int_equal(plain.len, strlen(SECRET));
	assert_memory_equal(plain.data, SECRET, plain.len);
	/* A fresh IV every time. */
	assert_int_equal(vault_seal(v, T1, "openai", SECRET, &again), 0);
	assert_memory_not_equal(sealed.data, again.data, 28);
	buf_free_secret(&plain);
	buf_free(&sealed);
	buf_free(&again);
	vault_free(v);
}

static void
test_binding_and_tampering(void **state)
{
	struct vault	*v;
	struct buf	 sealed = { 0 }, plain = { 0 };
	char		 err[160], copy[512];
	size_t		 i;

	(void)state;
	v = vault_new("k1:" K1, err, sizeof(err));
	assert_non_null(v);
	assert_int_equal(vault_seal(v, T1, "openai", SECRET, &sealed), 0);
	/* Bound to its tenant, provider and key id. */
	assert_int_equal(vault_open(v, "k1", T2, "openai", sealed.data,
	    &plain), -1);
	assert_int_equal(vault_open(v, "k1", T1, "anthropic", sealed.data,
	    &plain), -1);
	assert_int_equal(vault_open(v, "k9", T1, "openai", sealed.data,
	    &plain), -1);
	/* Any changed hex digit, in IV, tag or ciphertext, fails cleanly. */
	for (i = 3; i < sealed.len; i++) {
		if (sealed.data[i] == ':')
			continue;
		memcpy(copy, sealed.data, sealed.len + 1);
		copy[i] = copy[i] == '0' ? '1' : '0';
		assert_int_equal(vault_open(v, "k1", T1, "openai", copy,
		    &plain), -1);
	}
	/* A truncated tag is refused before decryption. */
	memcpy(copy, sealed.data, 3 + 24 + 1);
	memcpy(copy + 28, sealed.data + 28, 30);
	strcpy(copy + 58, sealed.data + 60);
	assert_int_equal(vault_open(v, "k1", T1, "openai", copy, &plain), -1);
	assert_int_equal(vault_open(v, "k1", T1, "openai", "v2:00:00:00",
	    &plain), -1);
	assert_int_equal(vault_open(v, "k1", T1, "openai", "v1::", &plain), -1);
	buf_free(&sealed);
	vault_free(v);
}

static void
test_old_key_readable_after_rotation(void **state)
{
	struct vault	*old, *both;
	struct buf	 sealed = { 0 }, plain = { 0 };
	char		 err[160];

	(void)state;
	old = vault_new("k1:" K1, err, sizeof(err));
	both = vault_new("k2:" K2 ",k1:" K1, err, sizeof(err));
	assert_non_null(old);
	assert_non_null(both);
	assert_int_equal(vault_seal(old, T1, "google", "AIzaSyExampleKey0123456",
	    &sealed), 0);
	assert_int_equal(vault_open(both, "k1", T1, "google", sealed.data,
	    &plain), 0);
	assert_string_equal(vault_active_id(both), "k2");
	buf_free_secret(&plain);
	buf_free(&sealed);
	vault_free(old);
	vault_free(both);
}

static void
test_provider_formats(void **state)
{
	(void)state;
	assert_true(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-proj-0123456789abcdefghij"));
	assert_true(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-0123456789abcdefghijkl"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-ant-0123456789abcdefghij"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-or-v1-0123456789abcdefghij"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI, "sk-short"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-proj-0123456789 abcdefghij"));
	assert_true(provider_key_format_ok(PROVIDER_ANTHROPIC,
	    "sk-ant-api03-0123456789abcdef"));
	assert_false(provider_key_format_ok(PROVIDER_ANTHROPIC,
	    "sk-proj-0123456789abcdefghij"));
	assert_true(provider_key_format_ok(PROVIDER_GOOGLE,
	    "AIzaSyA0123456789abcdefghij"));
	assert_false(provider_key_format_ok(PROVIDER_GOOGLE,
	    "aiza0123456789abcdefghijk"));
	assert_true(provider_key_format_ok(PROVIDER_OPENROUTER,
	    "sk-or-v1-0123456789abcdefghij"));
	assert_int_equal(provider_parse("google"), PROVIDER_GOOGLE);
	assert_int_equal(provider_parse("azure"), PROVIDER__MAX);
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_keyring_errors),
    cmocka_unit_test(test_seal_open_and_format),
    cmocka_unit_test(test_binding_and_tampering),
    cmocka_unit_test(test_old_key_readable_after_rotation),
    cmocka_unit_test(test_provider_formats))
