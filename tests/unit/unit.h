/*
 * What the unit tests share: cmocka with the headers it needs before it,
 * the main() that runs a file's tests, the group setup that starts
 * libgcrypt, JSON fixtures parsed and compared by value, and a zeroed
 * block for the tables the workers share.  Every test file includes it
 * first, as "../unit.h".
 */
#ifndef KEYGATE_TESTS_UNIT_UNIT_H
#define KEYGATE_TESTS_UNIT_UNIT_H

#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/crypto.h"
#include "lib/json.h"

/*
 * main() for a test program: runs the cmocka_unit_test()s given, after
 * setup (a group setup, or NULL), and exits non-zero when one fails.
 */
#define UNIT_MAIN(setup, ...)						\
int									\
main(void)								\
{									\
	const struct CMUnitTest unit_tests[] = { __VA_ARGS__ };		\
									\
	return cmocka_run_group_tests(unit_tests, setup, NULL);		\
}

/* A group setup for the tests that seal, hash or draw random bytes. */
static inline int
unit_crypto_setup(void **state)
{
	char	 err[128];

	(void)state;
	return crypto_init(err, sizeof(err));
}

/* The fixture s as JSON (new); the test fails when it is not. */
static inline struct json_object *
unit_json(const char *s)
{
	enum json_parse_error why;
	char	 err[128];
	struct json_object *o = json_parse(s, strlen(s), &why, err, sizeof(err));

	if (o == NULL)
		fail_msg("fixture is not JSON: %s: %s", err, s);
	return o;
}

/* Fails unless got equals the document want, by value. */
static inline void
assert_json(struct json_object *got, const char *want)
{
	struct json_object *w = unit_json(want);

	if (!json_object_equal(got, w))
		fail_msg("got  %s\nwant %s", json_text(got, NULL),
		    json_text(w, NULL));
	json_object_put(w);
}

/*
 * Defines static type *fn(void): a zeroed block of size() bytes made
 * ready by init(), which must succeed; free() gives it back.  Plain
 * memory serves one process as the master's shared mapping serves many.
 */
#define UNIT_SHARED(fn, type, size, init)				\
static type *								\
fn(void)								\
{									\
	type	*p = calloc(1, size());					\
									\
	assert_non_null(p);						\
	assert_int_equal(init(p), 0);					\
	return p;							\
}

#endif
