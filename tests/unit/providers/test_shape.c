/* Unit tests for src/providers/shape.c: the OpenAI shapes translations
 * produce. */
#include "../unit.h"

#include <limits.h>

#include "providers/providers.h"

static void
test_chunks(void **state)
{
	struct json_object *o;

	(void)state;
	o = chat_chunk("c1", "m", 7, unit_json("{\"content\":\"hi\"}"),
	    NULL);
	assert_json(o, "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	    "\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,"
	    "\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}");
	json_object_put(o);
	o = chat_chunk_at("c1", "m", 7, 2, json_object_new_object(), "stop");
	assert_json(o, "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	    "\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":2,"
	    "\"delta\":{},\"finish_reason\":\"stop\"}]}");
	json_object_put(o);
	/* No delta: the usage chunk's empty choices. */
	o = chat_chunk("c1", "m", 7, NULL, NULL);
	assert_json(o, "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
	    "\"created\":7,\"model\":\"m\",\"choices\":[]}");
	json_object_put(o);
	o = chat_usage(3, 4);
	assert_json(o, "{\"prompt_tokens\":3,\"completion_tokens\":4,"
	    "\"total_tokens\":7}");
	json_object_put(o);
}

/* A provider's counts are bounded, and their sum cannot overflow. */
static void
test_usage_counts(void **state)
{
	struct json_object *u, *o;

	(void)state;
	u = unit_json("{\"a\":12,\"neg\":-5,\"huge\":"
	    "222222222222222222222222222,\"max\":9223372036854775807,"
	    "\"text\":\"7\",\"f\":3.9}");
	assert_non_null(u);
	assert_int_equal(usage_count(u, "a"), 12);
	assert_int_equal(usage_count(u, "neg"), 0);
	assert_int_equal(usage_count(u, "huge"), USAGE_COUNT_MAX);
	assert_int_equal(usage_count(u, "max"), USAGE_COUNT_MAX);
	assert_int_equal(usage_count(u, "absent"), 0);
	assert_int_equal(usage_count(u, "f"), 3);
	assert_int_equal(usage_count(NULL, "a"), 0);
	json_object_put(u);
	o = chat_usage(LONG_MAX, 2);
	assert_json(o, "{\"prompt_tokens\":9223372036854775807,"
	    "\"completion_tokens\":2,\"total_tokens\":9223372036854775807}");
	json_object_put(o);
	o = chat_usage(LONG_MIN, -2);
	assert_int_equal(json_object_get_int64(json_object_object_get(o,
	    "total_tokens")), INT64_MIN);
	json_object_put(o);
}

static void
test_response_format(void **state)
{
	struct json_object *req, *schema;
	char		 err[128];
	static const struct {
		const char	*body;
		int		 want;
	} cases[] = {
		{ "{}", CHAT_FORMAT_TEXT },
		{ "{\"response_format\":{\"type\":\"text\"}}", CHAT_FORMAT_TEXT },
		{ "{\"response_format\":{\"type\":\"json_object\"}}",
		    CHAT_FORMAT_JSON },
		{ "{\"response_format\":{\"type\":\"json_schema\","
		    "\"json_schema\":{\"schema\":{\"type\":\"object\"}}}}",
		    CHAT_FORMAT_SCHEMA },
		{ "{\"response_format\":{\"type\":\"json_schema\"}}", -1 },
		{ "{\"response_format\":{\"type\":\"json_schema\","
		    "\"json_schema\":{\"schema\":[]}}}", -1 },
		{ "{\"response_format\":{\"type\":\"xml\"}}", -1 },
		{ "{\"response_format\":\"json\"}", -1 },
		{ "{\"response_format\":{}}", -1 },
	};
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		req = unit_json(cases[i].body);
		assert_non_null(req);
		err[0] = '\0';
		assert_int_equal(chat_response_format(req, &schema, err,
		    sizeof(err)), cases[i].want);
		if (cases[i].want == CHAT_FORMAT_SCHEMA)
			assert_json(schema, "{\"type\":\"object\"}");
		else
			assert_null(schema);
		if (cases[i].want == -1)
			assert_true(strstr(err, "response_format") != NULL);
		json_object_put(req);
	}
}

static void
test_stop_and_turns(void **state)
{
	struct json_object *s, *turns;

	(void)state;
	s = json_object_new_string("END");
	turns = chat_stop_list(s);
	assert_json(turns, "[\"END\"]");
	json_object_put(turns);
	json_object_put(s);
	s = unit_json("[\"a\",\"b\"]");
	turns = chat_stop_list(s);
	assert_json(turns, "[\"a\",\"b\"]");
	json_object_put(turns);
	json_object_put(s);

	/* Roles alternate: a second turn of one role joins the first. */
	turns = json_object_new_array();
	chat_add_turn(turns, "user", "content",
	    unit_json("[{\"text\":\"1\"}]"));
	chat_add_turn(turns, "user", "content",
	    unit_json("[{\"text\":\"2\"}]"));
	chat_add_turn(turns, "assistant", "content",
	    unit_json("[{\"text\":\"3\"}]"));
	chat_add_turn(turns, "user", "parts",
	    unit_json("[{\"text\":\"4\"}]"));
	assert_json(turns, "[{\"role\":\"user\",\"content\":[{\"text\":\"1\"},"
	    "{\"text\":\"2\"}]},{\"role\":\"assistant\",\"content\":[{\"text\":"
	    "\"3\"}]},{\"role\":\"user\",\"parts\":[{\"text\":\"4\"}]}]");
	json_object_put(turns);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_chunks),
    cmocka_unit_test(test_usage_counts),
    cmocka_unit_test(test_response_format),
    cmocka_unit_test(test_stop_and_turns))
