/*
 * Golden fixtures for src/providers/messages.c: Messages requests in,
 * OpenAI requests out; OpenAI replies and chunks in, Messages replies and
 * stream events out.
 */
#include "../unit.h"

#include "lib/json.h"
#include "providers/messages.h"

static void
test_request(void **state)
{
	struct json_object *in, *out;
	char	 err[160];

	(void)state;
	in = unit_json("{\"model\":\"m\",\"max_tokens\":9,\"stream\":true,"
	    "\"system\":[{\"type\":\"text\",\"text\":\"A\"},{\"type\":\"text\","
	    "\"text\":\"B\"}],\"top_k\":3,\"messages\":[{\"role\":\"user\","
	    "\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\","
	    "\"media_type\":\"image/png\",\"data\":\"AAAA\"}},{\"type\":"
	    "\"text\",\"text\":\"What?\"}]},{\"role\":\"assistant\",\"content\":"
	    "[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"s\"},"
	    "{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
	    "\"tool_use_id\":\"t1\",\"content\":[{\"type\":\"text\",\"text\":"
	    "\"ok\"}]}]}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"f\"},"
	    "\"tools\":[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}]}");
	assert_int_equal(messages_to_chat(in, &out, err, sizeof(err)), 0);
	assert_json(out, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\","
	    "\"content\":\"A\\nB\"},{\"role\":\"user\",\"content\":[{\"type\":"
	    "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
	    "AAAA\"}},{\"type\":\"text\",\"text\":\"What?\"}]},{\"role\":"
	    "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t1\","
	    "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
	    "\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"t1\",\"content\":"
	    "\"ok\"}],\"max_tokens\":9,\"stream\":true,\"tools\":[{\"type\":"
	    "\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
	    "\"object\"}}}],\"tool_choice\":{\"type\":\"function\",\"function\":"
	    "{\"name\":\"f\"}}}");
	json_object_put(in);
	json_object_put(out);

	in = unit_json(
	    "{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}");
	assert_int_equal(messages_to_chat(in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "messages: role must be user or assistant");
	json_object_put(in);
	in = unit_json(
	    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
	    "\"document\"}]}]}");
	assert_int_equal(messages_to_chat(in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "messages: a content block cannot be sent to "
	    "this provider");
	json_object_put(in);
	in = unit_json(
	    "{\"messages\":[],\"tool_choice\":{\"type\":\"maybe\"}}");
	assert_int_equal(messages_to_chat(in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "tools and tool_choice must be in the "
	    "Messages API's shape");
	json_object_put(in);
}

static void
test_reply(void **state)
{
	struct json_object *in, *out;

	(void)state;
	in = unit_json("{\"id\":\"chatcmpl-1\",\"model\":\"m\",\"choices\":[{"
	    "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
	    "\"Let me see.\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
	    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
	    "\"{\\\"a\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}],"
	    "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}");
	out = messages_from_chat(in);
	assert_json(out, "{\"id\":\"chatcmpl-1\",\"type\":\"message\","
	    "\"role\":\"assistant\",\"model\":\"m\",\"content\":[{\"type\":"
	    "\"text\",\"text\":\"Let me see.\"},{\"type\":\"tool_use\",\"id\":"
	    "\"call_1\",\"name\":\"f\",\"input\":{\"a\":1}}],\"stop_reason\":"
	    "\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":7,"
	    "\"output_tokens\":3}}");
	json_object_put(in);
	json_object_put(out);
	assert_string_equal(messages_stop_reason("length"), "max_tokens");
	assert_string_equal(messages_stop_reason("content_filter"), "refusal");
	assert_string_equal(messages_stop_reason("stop"), "end_turn");
}

/* Text, then two tool calls, then the finish: the events in order. */
static void
test_stream(void **state)
{
	static const char *const chunks[] = {
		"{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,"
		"\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
		"\"finish_reason\":null}]}",
		"{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,"
		"\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}",
		"{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,"
		"\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"type\":"
		"\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},"
		"\"finish_reason\":null}]}",
		"{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,"
		"\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
		"{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}",
		"{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,"
		"\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"type\":"
		"\"function\",\"function\":{\"name\":\"g\",\"arguments\":"
		"\"{\\\"x\\\":2}\"}}]},\"finish_reason\":null}]}",
		"{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,"
		"\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"keygate\":"
		"{\"provider\":\"openai\"}}",
	};
	struct messages_stream s;
	struct json_object *out = json_object_new_array(), *c;
	size_t	 i;

	(void)state;
	messages_stream_init(&s, 11);
	for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		c = unit_json(chunks[i]);
		messages_stream_chunk(&s, c, 12, 4, out);
		json_object_put(c);
	}
	messages_stream_end(&s, out);
	assert_json(out, "["
	    "{\"type\":\"message_start\",\"message\":{\"id\":\"c1\",\"type\":"
	    "\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\","
	    "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
	    "{\"input_tokens\":11,\"output_tokens\":0}}},"
	    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
	    "{\"type\":\"text\",\"text\":\"\"}},"
	    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
	    "\"text_delta\",\"text\":\"Hi\"}},"
	    "{\"type\":\"content_block_stop\",\"index\":0},"
	    "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
	    "{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}}},"
	    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
	    "\"input_json_delta\",\"partial_json\":\"{}\"}},"
	    "{\"type\":\"content_block_stop\",\"index\":1},"
	    "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":"
	    "{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"g\",\"input\":{}}},"
	    "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
	    "\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":2}\"}},"
	    "{\"type\":\"content_block_stop\",\"index\":2},"
	    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
	    "\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":"
	    "12,\"output_tokens\":4},\"keygate\":{\"provider\":\"openai\"}},"
	    "{\"type\":\"message_stop\"}]");
	json_object_put(out);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_request),
    cmocka_unit_test(test_reply),
    cmocka_unit_test(test_stream))
