/*
 * JSON fixtures for the translation tests: parse a fixture, compare a
 * result with the document it should equal.  Included after cmocka.h.
 */
#ifndef KEYGATE_TESTS_UNIT_JSON_FIXTURE_H
#define KEYGATE_TESTS_UNIT_JSON_FIXTURE_H

#include <string.h>

#include "lib/json.h"

/* The fixture s as JSON (new); the test fails when it is not. */
static inline struct json_object *
parse(const char *s)
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
	struct json_object *w = parse(want);

	if (!json_object_equal(got, w))
		fail_msg("got  %s\nwant %s", json_text(got, NULL),
		    json_text(w, NULL));
	json_object_put(w);
}

#endif
