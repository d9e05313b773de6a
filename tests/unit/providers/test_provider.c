/*
 * Unit tests for src/providers/provider.c: the table of providers, a
 * key's format, a model name's route, and what every operation shares.
 */
#include "../unit.h"

#include "lib/json.h"
#include "providers/provider.h"
#include "providers/providers.h"

static void
test_the_table_names_routes_and_checks_keys(void **state)
{
	int	 p;

	(void)state;
	for (p = 0; p < PROVIDER__MAX; p++) {
		assert_int_equal(provider_parse(providers[p]->name), p);
		assert_non_null(providers[p]->prepare);
		assert_non_null(providers[p]->reply);
		assert_non_null(providers[p]->check_path);
		assert_non_null(strstr(providers[p]->inline_param,
		    "HTTP_X_"));
	}
	assert_int_equal(provider_parse("upstream"), PROVIDER__MAX);
	assert_int_equal(provider_route("claude-3-5-haiku"),
	    PROVIDER_ANTHROPIC);
	assert_int_equal(provider_route("mistral/large"), PROVIDER_OPENROUTER);
	assert_int_equal(provider_route("llama3"), PROVIDER__MAX);
	assert_true(provider_key_format_ok(PROVIDER_OPENROUTER,
	    "sk-or-v1-0123456789abcdef"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-or-v1-0123456789abcdef"));
	assert_false(provider_key_format_ok(PROVIDER__MAX,
	    "sk-or-v1-0123456789abcdef"));
}

/* 20 to 512 printable characters, no blanks; a route needs both parts. */
static void
test_key_lengths_and_odd_names(void **state)
{
	char	 key[600];

	(void)state;
	memset(key, 'a', sizeof(key));
	memcpy(key, "sk-", 3);
	key[19] = '\0';
	assert_false(provider_key_format_ok(PROVIDER_OPENAI, key));
	key[19] = 'a';
	key[20] = '\0';
	assert_true(provider_key_format_ok(PROVIDER_OPENAI, key));
	key[20] = 'a';
	key[512] = '\0';
	assert_true(provider_key_format_ok(PROVIDER_OPENAI, key));
	key[512] = 'a';
	key[513] = '\0';
	assert_false(provider_key_format_ok(PROVIDER_OPENAI, key));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-0123456789 abcdefgh"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-0123456789\tabcdefgh"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-0123456789\xc3\xa9" "abcdefgh"));
	assert_int_equal(provider_route("/gpt-4o"), PROVIDER__MAX);
	assert_int_equal(provider_route("vendor/"), PROVIDER__MAX);
	assert_int_equal(provider_route("/"), PROVIDER__MAX);
	assert_int_equal(provider_route(""), PROVIDER__MAX);
	assert_int_equal(provider_parse(""), PROVIDER__MAX);
	assert_int_equal(provider_parse("OpenAI"), PROVIDER__MAX);
}

/* The URL is the base without its trailing slashes, then the path. */
static void
test_a_request_put_together(void **state)
{
	struct provider_call c = { 0 };

	(void)state;
	c.base = "http://up.test/v1///";
	assert_int_equal(provider_put(&c, "/x", unit_json("{\"a\":[1]}")),
	    PROVIDER_OK);
	assert_string_equal(c.url.data, "http://up.test/v1/x");
	assert_string_equal(c.body.data, "{\"a\":[1]}");
	/* Again: the last request only. */
	c.base = "";
	assert_int_equal(provider_put(&c, "/y", json_object_new_object()),
	    PROVIDER_OK);
	assert_string_equal(c.url.data, "/y");
	assert_string_equal(c.body.data, "{}");
	/* The state goes with the rest; the call can be used again. */
	c.state = calloc(1, 8);
	provider_call_free(&c);
	assert_null(c.state);
	assert_null(c.url.data);
	assert_null(c.body.data);
	provider_call_free(&c);
}

static void
test_a_stream_error_and_usage(void **state)
{
	struct provider_call c = { 0 };
	struct json_object *out = json_object_new_array(), *o;

	(void)state;
	assert_int_equal(provider_stream_error(out, "bad \"event\"", "e1"),
	    PROVIDER_ERROR);
	assert_json(out, "[{\"error\":{\"message\":\"bad \\\"event\\\"\","
	    "\"type\":\"upstream_error\",\"code\":\"e1\"}}]");
	json_object_put(out);
	/* No usage: nothing read. */
	o = unit_json("{\"usage\":null}");
	provider_take_usage(&c, o);
	assert_false(c.have_usage);
	json_object_put(o);
	/* A count left out keeps what an earlier chunk said. */
	c.prompt_tokens = 7;
	o = unit_json("{\"usage\":{\"completion_tokens\":99999999999999}}");
	provider_take_usage(&c, o);
	assert_true(c.have_usage);
	assert_int_equal(c.prompt_tokens, 7);
	assert_int_equal(c.completion_tokens, USAGE_COUNT_MAX);
	json_object_put(o);
	o = unit_json("{\"usage\":{}}");
	c = (struct provider_call){ 0 };
	provider_take_usage(&c, o);
	assert_true(c.have_usage);
	assert_int_equal(c.prompt_tokens + c.completion_tokens, 0);
	json_object_put(o);
}

/* The gateway's way to any model is the provider that takes vendor ids. */
static void
test_the_aggregator_is_the_one_with_vendor_ids(void **state)
{
	enum provider	 p = provider_aggregator();
	int		 i, n = 0;

	(void)state;
	assert_true(p < PROVIDER__MAX);
	assert_string_equal(providers[p]->name, "openrouter");
	for (i = 0; i < PROVIDER__MAX; i++)
		n += providers[i]->vendor_ids;
	assert_int_equal(n, 1);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_the_table_names_routes_and_checks_keys),
    cmocka_unit_test(test_the_aggregator_is_the_one_with_vendor_ids),
    cmocka_unit_test(test_key_lengths_and_odd_names),
    cmocka_unit_test(test_a_request_put_together),
    cmocka_unit_test(test_a_stream_error_and_usage))
