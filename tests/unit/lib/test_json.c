/* Unit tests for src/lib/json.c and src/lib/buf.c. */
#include "../unit.h"

#include <pthread.h>
#include <stdio.h>

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

/*
 * Tokeners are used again: a parse that failed anywhere (in a string, a
 * number, a literal, an object, too deep) leaves nothing for the next.
 */
static void
test_parse_after_failures(void **state)
{
	static const char *const bad[] = { "{\"a\":", "{\"a\":\"abc",
	    "[1,2", "{\"a\":tru", "{\"a\":-", "\"\\u12", "{\"a\" 1}",
	    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" };
	enum json_parse_error why;
	char	 err[160];
	struct json_object *o, *v;
	size_t	 i;
	int	 round;

	(void)state;
	for (round = 0; round < 40; round++)
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_null(parse(bad[i], strlen(bad[i]), &why, err));
			o = parse("{\"b\":[2,\"x\"]}", 13, &why, err);
			assert_non_null(o);
			assert_int_equal(why, JSON_PARSE_OK);
			assert_int_equal(json_object_object_length(o), 1);
			assert_true(json_object_object_get_ex(o, "b", &v));
			assert_int_equal(json_object_array_length(v), 2);
			assert_int_equal(json_object_get_int(
			    json_object_array_get_idx(v, 0)), 2);
			json_object_put(o);
			o = parse("7", 1, &why, err);
			assert_non_null(o);
			assert_int_equal(json_object_get_int(o), 7);
			json_object_put(o);
		}
}

/* Threads parse at once, each its own text, and each gets its own back. */
static void *
parse_many(void *arg)
{
	long	 id = (long)arg, i;
	char	 text[96], err[160];
	enum json_parse_error why;
	struct json_object *o, *v;
	int	 n;

	for (i = 0; i < 2000; i++) {
		n = snprintf(text, sizeof(text), "{\"t\":%ld,\"i\":%ld,"
		    "\"s\":\"%ld-%ld\"}", id, i, id, i);
		if (i % 7 == 0 && json_parse(text, (size_t)n - 1, &why, err,
		    sizeof(err)) != NULL)
			return (void *)1;	/* cut short: must fail */
		if ((o = json_parse(text, (size_t)n, &why, err,
		    sizeof(err))) == NULL)
			return (void *)1;
		if (!json_object_object_get_ex(o, "t", &v) ||
		    json_object_get_int64(v) != id ||
		    !json_object_object_get_ex(o, "i", &v) ||
		    json_object_get_int64(v) != i) {
			json_object_put(o);
			return (void *)1;
		}
		json_object_put(o);
	}
	return NULL;
}

static void
test_parse_threads(void **state)
{
	pthread_t	 t[8];
	void		*rc;
	long		 i;

	(void)state;
	for (i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&t[i], NULL, parse_many,
		    (void *)i), 0);
	for (i = 0; i < 8; i++) {
		assert_int_equal(pthread_join(t[i], &rc), 0);
		assert_null(rc);
	}
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
    cmocka_unit_test(test_parse_after_failures),
    cmocka_unit_test(test_parse_threads),
    cmocka_unit_test(test_values_portable),
    cmocka_unit_test(test_wipe),
    cmocka_unit_test(test_utf8))
