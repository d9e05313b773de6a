/*
 * Unit tests for src/core/keys.c, its parts that need no database: a
 * key's scopes and a batch of key ids as PostgreSQL array literals, and a
 * window in words.
 */
#include "../unit.h"

#include "core/keys.h"

/* Scopes as {"a","b"}: checked, each once, and only when they fit. */
static void
test_scopes_literal(void **state)
{
	const char *const two[] = { "api_keys:read", "models:read",
	    "api_keys:read" };
	const char *const bad[] = { "api_keys:read", "a\",\"*" };
	const char *const star[] = { "*" };
	char	 out[64];

	(void)state;
	assert_int_equal(key_scopes_literal(two, 3, out, sizeof(out)), 0);
	assert_string_equal(out, "{\"api_keys:read\",\"models:read\"}");
	assert_int_equal(key_scopes_literal(two, 0, out, sizeof(out)), 0);
	assert_string_equal(out, "{}");
	assert_int_equal(key_scopes_literal(two, 0, out, 3), 0);
	assert_string_equal(out, "{}");
	assert_int_equal(key_scopes_literal(two, 0, out, 2), -1);
	/* A scope that is not one, quotes and commas and all: refused. */
	assert_int_equal(key_scopes_literal(bad, 2, out, sizeof(out)), -1);
	/*
	 * {"*"} is 5 bytes and its NUL: 7 are asked for.  The check keeps a
	 * byte for a comma the first scope does not have; conservative, so
	 * harmless, and expected as it is.
	 */
	assert_int_equal(key_scopes_literal(star, 1, out, 6), -1);
	assert_int_equal(key_scopes_literal(star, 1, out, 7), 0);
	assert_string_equal(out, "{\"*\"}");
	/* The second scope fits exactly: 30 bytes and the NUL. */
	assert_int_equal(key_scopes_literal(two, 2, out, 31), -1);
	assert_int_equal(key_scopes_literal(two, 2, out, 32), 0);
	assert_int_equal(strlen(out), 31);
}

/* Key ids as {a,b}: in order, and only when they fit and cannot split. */
static void
test_ids_literal(void **state)
{
	const char *const two[] = { "0f0e", "a1b2c3" };
	const char *const bad[][1] = { { "a,b" }, { "a\"" }, { "a}" },
	    { "a{" }, { "a\\" }, { "a b" }, { "" } };
	char	 out[64];
	size_t	 i;

	(void)state;
	assert_int_equal(key_ids_literal(two, 2, out, sizeof(out)), 0);
	assert_string_equal(out, "{0f0e,a1b2c3}");
	assert_int_equal(key_ids_literal(two, 1, out, sizeof(out)), 0);
	assert_string_equal(out, "{0f0e}");
	assert_int_equal(key_ids_literal(two, 0, out, 3), 0);
	assert_string_equal(out, "{}");
	assert_int_equal(key_ids_literal(two, 0, out, 2), -1);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(key_ids_literal(bad[i], 1, out, sizeof(out)),
		    -1);
	/* {0f0e,a1b2c3} is 13 bytes and its NUL: they fit exactly. */
	assert_int_equal(key_ids_literal(two, 2, out, 13), -1);
	assert_int_equal(key_ids_literal(two, 2, out, 14), 0);
	assert_string_equal(out, "{0f0e,a1b2c3}");
	/*
	 * {0f0e} is 6 and its NUL.  As for scopes, the check of a first id
	 * keeps a byte for a comma it does not have: 8 are asked for.
	 */
	assert_int_equal(key_ids_literal(two, 1, out, 7), -1);
	assert_int_equal(key_ids_literal(two, 1, out, 8), 0);
}

static void
test_window_in_words(void **state)
{
	static const struct {
		int		 secs;
		const char	*want;
	} cases[] = {
		{ 1, "1 second" }, { 59, "59 seconds" },
		{ 60, "1 minute" }, { 90, "90 seconds" },
		{ 3600, "1 hour" }, { 3660, "61 minutes" },
		{ 7200, "2 hours" }, { 86400, "1 day" },
		{ 172800, "2 days" }, { 90000, "25 hours" },
		{ 0, "0 seconds" }, { -60, "-60 seconds" },
	};
	char	 out[32];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		key_window_text(cases[i].secs, out, sizeof(out));
		assert_string_equal(out, cases[i].want);
	}
	/* Cut to the room given, and terminated. */
	key_window_text(172800, out, 4);
	assert_string_equal(out, "2 d");
}

static void
test_a_created_key_is_wiped(void **state)
{
	struct key_created k;

	(void)state;
	memset(&k, 'k', sizeof(k));
	key_created_wipe(&k);
	for (size_t i = 0; i < sizeof(k.key); i++)
		assert_int_equal(k.key[i], 0);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_scopes_literal),
    cmocka_unit_test(test_ids_literal),
    cmocka_unit_test(test_window_in_words),
    cmocka_unit_test(test_a_created_key_is_wiped))
