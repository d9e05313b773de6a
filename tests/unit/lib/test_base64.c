/* Unit tests for src/lib/base64.c: RFC 4648 vectors, both alphabets. */
#include "../unit.h"

#include "lib/base64.h"

static long
decode(const char *in, int url, char *out, size_t outsz)
{
	long	 n = base64_decode(in, strlen(in), url != 0, (uint8_t *)out,
	    outsz - 1);

	if (n >= 0)
		out[n] = '\0';
	return n;
}

static void
test_rfc4648_vectors(void **state)
{
	/* RFC 4648 section 10, padded and (for base64url) not. */
	static const char *const vec[][3] = {
		{ "", "", "" },
		{ "f", "Zg==", "Zg" },
		{ "fo", "Zm8=", "Zm8" },
		{ "foo", "Zm9v", "Zm9v" },
		{ "foob", "Zm9vYg==", "Zm9vYg" },
		{ "fooba", "Zm9vYmE=", "Zm9vYmE" },
		{ "foobar", "Zm9vYmFy", "Zm9vYmFy" },
	};
	char	 out[16], enc[16];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		assert_int_equal(decode(vec[i][1], 0, out, sizeof(out)),
		    strlen(vec[i][0]));
		assert_string_equal(out, vec[i][0]);
		assert_int_equal(decode(vec[i][2], 1, out, sizeof(out)),
		    strlen(vec[i][0]));
		assert_string_equal(out, vec[i][0]);
		assert_int_equal(base64url_encode((const uint8_t *)vec[i][0],
		    strlen(vec[i][0]), enc), strlen(vec[i][2]));
		assert_string_equal(enc, vec[i][2]);
		assert_int_equal(base64_encode((const uint8_t *)vec[i][0],
		    strlen(vec[i][0]), enc), strlen(vec[i][1]));
		assert_string_equal(enc, vec[i][1]);
	}
}

static void
test_alphabets(void **state)
{
	char	 out[8];

	(void)state;
	/* 0xfb 0xff: "+/8=" in standard, "-_8" in base64url. */
	assert_int_equal(decode("+/8=", 0, out, sizeof(out)), 2);
	assert_memory_equal(out, "\xfb\xff", 2);
	assert_int_equal(decode("-_8", 1, out, sizeof(out)), 2);
	assert_memory_equal(out, "\xfb\xff", 2);
	assert_int_equal(decode("-_8=", 0, out, sizeof(out)), -1);
	assert_int_equal(decode("+/8", 1, out, sizeof(out)), -1);
}

static void
test_refusals(void **state)
{
	char	 out[8];

	(void)state;
	assert_int_equal(decode("Zg=", 0, out, sizeof(out)), -1);	/* length */
	assert_int_equal(decode("Zg", 0, out, sizeof(out)), -1);	/* no pad */
	assert_int_equal(decode("Z===", 0, out, sizeof(out)), -1);	/* early = */
	assert_int_equal(decode("Zg=a", 0, out, sizeof(out)), -1);	/* after = */
	assert_int_equal(decode("Zh==", 0, out, sizeof(out)), -1);	/* bits */
	assert_int_equal(decode("Zh", 1, out, sizeof(out)), -1);
	assert_int_equal(decode("Zm9vY", 1, out, sizeof(out)), -1);	/* 4n+1 */
	assert_int_equal(decode("Zm 9", 0, out, sizeof(out)), -1);
	assert_int_equal(decode("Zg==", 1, out, sizeof(out)), -1);
	/* Out of room: "foobar" into 5 bytes. */
	assert_int_equal(base64_decode("Zm9vYmFy", 8, false,
	    (uint8_t *)out, 5), -1);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_rfc4648_vectors),
    cmocka_unit_test(test_alphabets),
    cmocka_unit_test(test_refusals))
