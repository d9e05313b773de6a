/* Unit tests for src/lib/json.c and src/lib/buf.c. */
#include "../unit.h"

#include "lib/buf.h"
#include "lib/json.h"

static struct json_object *
parse(const char *s, size_t n, enum json_parse_error *why, char *err)
{
	return json_parse(s, n, why, err, 160);
}

static void
test_parse_ok(void **state)
{
	enum json_parse_error why;
	char	 err[160];
	struct json_object *o, *v;

	(void)state;
	o = parse("{\"a\":[1,2],\"b\":\"\xc3\xa9\"}", 20, &why, err);
	assert_non_null(o);
	assert_int_equal(why, JSON_PARSE_OK);
	assert_true(json_object_object_get_ex(o, "b", &v));
	assert_string_equal(json_object_get_string(v), "\xc3\xa9");
	json_object_put(o);
	/* A number or literal that ends the text is whole (found by fuzzing:
	 * the tokener waited for more). */
	o = parse("true", 4, &why, err);
	assert_non_null(o);
	assert_true(json_object_get_boolean(o));
	json_object_put(o);
	o = parse("42", 2, &why, err);
	assert_non_null(o);
	assert_int_equal(json_object_get_int(o), 42);
	json_object_put(o);
}

static void
test_parse_errors(void **state)
{
	enum json_parse_error why;
	char	 err[160], deep[200];
	size_t	 i;

	(void)state;
	assert_null(parse("{\"a\":", 5, &why, err));
	assert_int_equal(why, JSON_PARSE_SYNTAX);
	assert_non_null(strstr(err, "not valid JSON"));
	assert_null(parse("{} x", 4, &why, err));
	assert_int_equal(why, JSON_PARSE_SYNTAX);
	assert_null(parse("{'a':1}", 7, &why, err));
	assert_int_equal(why, JSON_PARSE_SYNTAX);
	assert_null(parse("{\"a\":NaN}", 9, &why, err));
	assert_null(parse("{\"a\":Infinity}", 14, &why, err));
	assert_null(parse("{\"a\":1,}", 8, &why, err));
	assert_null(parse("null", 4, &why, err));
	assert_string_equal(err, "request body is null, not a JSON object");
	assert_null(parse("42x", 3, &why, err));
	assert_null(parse("tru", 3, &why, err));
	{
		struct json_object *o = parse("{\"a\":1e5,\"b\":[true,"
		    "false,null],\"c\":\"it's NaN\"}", 46, &why, err);
		assert_non_null(o);
		json_object_put(o);
	}
	assert_null(parse("{\"a\":\"\xff\"}", 9, &why, err));
	assert_int_equal(why, JSON_PARSE_UTF8);
	assert_string_equal(err, "request body is not valid UTF-8");
	for (i = 0; i < 100; i++)
		deep[i] = '[';
	for (i = 100; i < 200; i++)
		deep[i] = ']';
	assert_null(parse(deep, 200, &why, err));
	assert_int_equal(why, JSON_PARSE_DEPTH);
}

/* Valid JSON that would not survive the way on is refused, and said why. */
static void
test_values_portable(void **state)
{
	static const struct {
		const char	*text;
		int		 rc;
		const char	*why;
	} cases[] = {
		{ "{\"a\":1e308,\"b\":[1,2.5,\"x\"]}", 0, NULL },
		{ "{\"a\":1e309}", -1, "range of a double" },
		{ "[[{\"t\":-1e999}]]", -1, "range of a double" },
		{ "{\"a\":\"x\\u0000y\"}", -1, "NUL" },
		{ "{\"a\\u0000b\":1}", -1, "NUL" },
		{ "{\"a\":\"x\\\\u0000y\"}", 0, NULL },
		{ "{\"a\":\"\\u00001\"}", -1, "NUL" },
		{ "{\"a\":\"\\u0001\"}", 0, NULL },
	};
	enum json_parse_error why;
	char	 err[160];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *o = parse(cases[i].text,
		    strlen(cases[i].text), &why, err);

		assert_non_null(o);
		err[0] = '\0';
		assert_int_equal(json_values_portable(cases[i].text,
		    strlen(cases[i].text), o, err, sizeof(err)), cases[i].rc);
		if (cases[i].why != NULL)
			assert_non_null(strstr(err, cases[i].why));
		json_object_put(o);
	}
}

/* Every string of a parsed body, short (inline) or long, becomes zeros. */
static void
test_wipe(void **state)
{
	static const char text[] = "{\"key\":\"kg_live_0123456789abcdef0123"
	    "456789abcdef0123456789\",\"n\":[\"sk\",{\"x\":\"sk-proj-"
	    "secret\"}],\"i\":7}";
	static const char zeros[64];
	enum json_parse_error why;
	char	 err[160];
	struct json_object *o, *v, *arr;
	const char *key, *inner, *shortstr;

	(void)state;
	o = parse(text, sizeof(text) - 1, &why, err);
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "key", &v));
	key = json_object_get_string(v);
	assert_true(json_object_object_get_ex(o, "n", &arr));
	shortstr = json_object_get_string(json_object_array_get_idx(arr, 0));
	assert_true(json_object_object_get_ex(json_object_array_get_idx(arr,
	    1), "x", &v));
	inner = json_object_get_string(v);
	json_wipe(o);
	assert_memory_equal(key, zeros, 45);
	assert_memory_equal(shortstr, zeros, 2);
	assert_memory_equal(inner, zeros, 14);
	json_object_put(o);
	json_wipe(NULL);
}

static void
test_utf8(void **state)
{
	(void)state;
	assert_true(json_utf8_valid("plain", 5));
	assert_true(json_utf8_valid("\xe2\x82\xac", 3));
	assert_true(json_utf8_valid("\xf0\x9f\x98\x80", 4));
	assert_false(json_utf8_valid("\xc0\xaf", 2));		/* overlong */
	assert_false(json_utf8_valid("\xed\xa0\x80", 3));	/* surrogate */
	assert_false(json_utf8_valid("\xe2\x82", 2));		/* truncated */
	assert_false(json_utf8_valid("\xf5\x80\x80\x80", 4));	/* > U+10FFFF */
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_parse_ok),
    cmocka_unit_test(test_parse_errors),
    cmocka_unit_test(test_values_portable),
    cmocka_unit_test(test_wipe),
    cmocka_unit_test(test_utf8))
