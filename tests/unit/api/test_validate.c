/* Unit tests for src/api/validate.c: request body and query checks. */
#include "../unit.h"

#include <time.h>

#include "api/validate.h"

/* The fields named in the recorded errors, comma-separated. */
static const char *
failed(struct checks *c)
{
	static char	 out[256];
	size_t		 i;

	out[0] = '\0';
	for (i = 0; c->details != NULL &&
	    i < json_object_array_length(c->details); i++) {
		struct json_object *d = json_object_array_get_idx(c->details,
		    i), *f;

		assert_true(json_object_object_get_ex(d, "field", &f));
		if (i > 0)
			strncat(out, ",", sizeof(out) - strlen(out) - 1);
		strncat(out, json_object_get_string(f), sizeof(out) -
		    strlen(out) - 1);
	}
	return out;
}

static void
test_strings(void **state)
{
	struct json_object *b = unit_json(
	    "{\"name\":\"ab\",\"n\":3,\"long\":\"abcd\","
	    "\"nul\":\"a\\u0000b\",\"none\":null}");
	struct checks	 c = { NULL };
	bool		 present;

	(void)state;
	assert_string_equal(check_string(&c, b, "name", 2, &present), "ab");
	assert_true(present);
	assert_null(check_string(&c, b, "missing", 0, &present));
	assert_false(present);
	/* JSON null: present, no value, no error. */
	assert_null(check_string(&c, b, "none", 0, &present));
	assert_true(present);
	assert_string_equal(failed(&c), "");
	assert_null(check_string(&c, b, "n", 0, &present));
	assert_null(check_string(&c, b, "long", 3, &present));
	assert_null(check_string(&c, b, "nul", 0, &present));
	assert_string_equal(failed(&c), "n,long,nul");
	check_free(&c);
	assert_null(c.details);
	json_object_put(b);
}

static void
test_numbers_and_booleans(void **state)
{
	struct json_object *b = unit_json(
	    "{\"a\":5,\"b\":-1,\"c\":1.5,\"d\":true,"
	    "\"e\":\"true\",\"f\":9223372036854775807}");
	struct checks	 c = { NULL };
	bool		 present, on = false;
	long		 n = 0;

	(void)state;
	assert_true(check_int(&c, b, "a", 0, 10, &n, &present));
	assert_int_equal(n, 5);
	assert_false(check_int(&c, b, "b", 0, 10, &n, &present));
	assert_true(present);
	assert_false(check_int(&c, b, "c", 0, 10, &n, &present));
	assert_false(check_int(&c, b, "f", 0, 1000000, &n, &present));
	assert_false(check_int(&c, b, "zz", 0, 10, &n, &present));
	assert_false(present);
	assert_true(check_bool(&c, b, "d", &on));
	assert_true(on);
	assert_false(check_bool(&c, b, "e", &on));
	assert_string_equal(failed(&c), "b,c,f,e");
	check_free(&c);
	json_object_put(b);
}

static void
test_arrays_and_known_fields(void **state)
{
	struct json_object *b = unit_json(
	    "{\"s\":[\"x\",\"y\"],\"m\":[\"x\",1],"
	    "\"t\":\"x\",\"big\":[\"a\",\"b\",\"c\"]}");
	static const char *const allowed[] = { "s", "m", "t", NULL };
	struct checks	 c = { NULL };
	bool		 present;

	(void)state;
	assert_non_null(check_string_array(&c, b, "s", 2, &present));
	assert_null(check_string_array(&c, b, "m", 5, &present));
	assert_null(check_string_array(&c, b, "t", 5, &present));
	assert_null(check_string_array(&c, b, "big", 2, &present));
	assert_string_equal(failed(&c), "m,t,big");
	check_free(&c);
	check_known_fields(&c, b, allowed);
	assert_string_equal(failed(&c), "big");
	check_free(&c);
	json_object_put(b);
}

static void
test_uuid(void **state)
{
	(void)state;
	assert_true(uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
	assert_true(uuid_valid("123E4567-E89B-12D3-A456-426614174000"));
	assert_false(uuid_valid("123e4567-e89b-12d3-a456-42661417400"));
	assert_false(uuid_valid("123e4567-e89b-12d3-a456-4266141740000"));
	assert_false(uuid_valid("123e4567e89b-12d3-a456-4266141740000"));
	assert_false(uuid_valid("123e4567-e89b-12d3-a456-42661417400g"));
	assert_false(uuid_valid(""));
}

static void
test_timestamps(void **state)
{
	time_t	 t;

	(void)state;
	assert_int_equal(iso8601_parse("2026-01-02T03:04:05Z", &t), 0);
	assert_int_equal(t, 1767323045);
	assert_int_equal(iso8601_parse("2026-01-02T03:04:05.123Z", &t), 0);
	assert_int_equal(t, 1767323045);
	assert_int_equal(iso8601_parse("2026-01-02T05:04:05+02:00", &t), 0);
	assert_int_equal(t, 1767323045);
	assert_int_equal(iso8601_parse("2026-01-02 03:04:05z", &t), 0);
	assert_int_equal(iso8601_parse("2026-02-31T00:00:00Z", &t), -1);
	assert_int_equal(iso8601_parse("2026-13-01T00:00:00Z", &t), -1);
	assert_int_equal(iso8601_parse("2026-01-02T03:04:05", &t), -1);
	assert_int_equal(iso8601_parse("2026-01-02T03:04:05.Z", &t), -1);
	assert_int_equal(iso8601_parse("1969-12-31T23:59:59Z", &t), -1);
	assert_int_equal(iso8601_parse("2026-01-02T03:04:05Zjunk", &t), -1);
	assert_int_equal(iso8601_parse("", &t), -1);
}

static void
test_query(void **state)
{
	char	 v[8];

	(void)state;
	assert_int_equal(hex_digit_value('7'), 7);
	assert_int_equal(hex_digit_value('b'), 11);
	assert_int_equal(hex_digit_value('F'), 15);
	assert_int_equal(hex_digit_value('g'), -1);
	assert_int_equal(query_get("a=1&limit=20", "limit", v, sizeof(v)),
	    1);
	assert_string_equal(v, "20");
	assert_int_equal(query_get("limits=1", "limit", v, sizeof(v)), 0);
	assert_int_equal(query_get("x=a%20b+c", "x", v, sizeof(v)), 1);
	assert_string_equal(v, "a b c");
	assert_int_equal(query_get("x", "x", v, sizeof(v)), 1);
	assert_string_equal(v, "");
	/* Malformed escapes, a NUL, and a value too long are refused. */
	assert_int_equal(query_get("x=%2", "x", v, sizeof(v)), -1);
	assert_int_equal(query_get("x=%zz", "x", v, sizeof(v)), -1);
	assert_int_equal(query_get("x=%00", "x", v, sizeof(v)), -1);
	assert_int_equal(query_get("x=12345678", "x", v, sizeof(v)), -1);
	assert_int_equal(query_get(NULL, "x", v, sizeof(v)), 0);
	assert_true(query_only("x=1&x=2", "x"));
	assert_false(query_only("x=1&y=2", "x"));
	assert_true(query_only("", "x"));
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_strings),
    cmocka_unit_test(test_numbers_and_booleans),
    cmocka_unit_test(test_arrays_and_known_fields),
    cmocka_unit_test(test_uuid),
    cmocka_unit_test(test_timestamps),
    cmocka_unit_test(test_query))
