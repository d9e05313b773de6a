/*
 * Golden fixtures for src/providers/anthropic.c: OpenAI requests in,
 * Messages requests out; Messages replies and stream events in, OpenAI
 * shapes out.  The event sequence is the one Anthropic documents.
 */
#include "../unit.h"

#include "lib/buf.h"
#include "lib/json.h"
#include "providers/anthropic.h"

static void
test_request_translation(void **state)
{
	struct json_object *in, *out;
	char	 err[160];

	(void)state;
	in = unit_json(
	    "{\"model\":\"claude-x\",\"temperature\":1.7,\"top_p\":0.9,"
	    "\"stop\":\"END\",\"max_tokens\":100,\"parallel_tool_calls\":false,"
	    "\"messages\":["
	    "{\"role\":\"system\",\"content\":\"Be brief.\"},"
	    "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":"
	    "\"Use tools.\"}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},"
	    "{\"type\":\"image_url\",\"image_url\":{\"url\":"
	    "\"data:image/png;base64,AAAA\"}}]},"
	    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
	    "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}},"
	    "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_time\",\"arguments\":\"\"}}]},"
	    "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"rain\"},"
	    "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":"
	    "\"noon\"}],"
	    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_weather\",\"description\":\"Weather\",\"parameters\":"
	    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
	    "\"string\"}}}}},{\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_time\"}}],"
	    "\"tool_choice\":\"required\"}");
	assert_int_equal(anthropic_request(in, "claude-x", 4096, &out, err,
	    sizeof(err)), 0);
	assert_json(out, "{\"model\":\"claude-x\",\"messages\":["
	    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
	    "\"Hi\"},{\"type\":\"image\",\"source\":{\"type\":\"base64\","
	    "\"media_type\":\"image/png\",\"data\":\"AAAA\"}}]},"
	    "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
	    "\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":{\"city\":"
	    "\"Oslo\"}},{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":"
	    "\"get_time\",\"input\":{}}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
	    "\"tool_use_id\":\"call_1\",\"content\":\"rain\"},{\"type\":"
	    "\"tool_result\",\"tool_use_id\":\"call_2\",\"content\":"
	    "\"noon\"}]}],"
	    "\"system\":\"Be brief.\\nUse tools.\",\"max_tokens\":100,"
	    "\"temperature\":1.0,\"top_p\":0.9,\"stop_sequences\":[\"END\"],"
	    "\"tools\":[{\"name\":\"get_weather\",\"description\":\"Weather\","
	    "\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":"
	    "{\"type\":\"string\"}}}},{\"name\":\"get_time\",\"input_schema\":"
	    "{\"type\":\"object\"}}],"
	    "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":"
	    "true}}");
	json_object_put(in);
	json_object_put(out);

	/* max_tokens is required by Anthropic: a default is supplied. */
	in = unit_json(
	    "{\"model\":\"c\",\"stream\":true,\"messages\":[{\"role\":"
	    "\"user\",\"content\":\"x\"}]}");
	assert_int_equal(anthropic_request(in, "c", 4096, &out, err, sizeof(err)), 0);
	assert_json(out, "{\"model\":\"c\",\"messages\":[{\"role\":\"user\","
	    "\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}],"
	    "\"max_tokens\":4096,\"stream\":true}");
	json_object_put(in);
	json_object_put(out);
}

static void
test_request_refusals(void **state)
{
	struct json_object *in, *out;
	char	 err[160];

	(void)state;
	in = unit_json("{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":["
	    "{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":"
	    "\"{not json\"}}]}]}");
	assert_int_equal(anthropic_request(in, "m", 4096, &out, err, sizeof(err)),
	    -1);
	assert_string_equal(err, "tool call c has arguments that are not JSON");
	json_object_put(in);
	in = unit_json("{\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"x\"}]}");
	assert_int_equal(anthropic_request(in, "m", 4096, &out, err, sizeof(err)),
	    -1);
	assert_string_equal(err, "anthropic answers one choice: n must be 1");
	json_object_put(in);
	in = unit_json(
	    "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}");
	assert_int_equal(anthropic_request(in, "m", 4096, &out, err, sizeof(err)),
	    -1);
	json_object_put(in);
}

static void
test_response_translation(void **state)
{
	struct json_object *in, *out, *v;

	(void)state;
	in = unit_json("{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"
	    "\"assistant\",\"model\":\"claude-x\",\"content\":[{\"type\":"
	    "\"text\",\"text\":\"Let me check.\"},{\"type\":\"tool_use\","
	    "\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{\"city\":"
	    "\"Oslo\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
	    "\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":3,"
	    "\"cache_read_input_tokens\":2,\"output_tokens\":11}}");
	out = anthropic_response(in, "");
	assert_non_null(out);
	assert_true(json_object_object_get_ex(out, "created", &v));
	json_object_object_del(out, "created");
	assert_json(out, "{\"id\":\"msg_1\",\"object\":\"chat.completion\","
	    "\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"message\":"
	    "{\"role\":\"assistant\",\"content\":\"Let me check.\","
	    "\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\","
	    "\"function\":{\"name\":\"get_weather\",\"arguments\":"
	    "\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},\"finish_reason\":"
	    "\"tool_calls\"}],\"usage\":{\"prompt_tokens\":25,"
	    "\"completion_tokens\":11,\"total_tokens\":36}}");
	json_object_put(in);
	json_object_put(out);

	assert_string_equal(anthropic_finish("end_turn"), "stop");
	assert_string_equal(anthropic_finish("stop_sequence"), "stop");
	assert_string_equal(anthropic_finish("max_tokens"), "length");
	assert_string_equal(anthropic_finish("model_context_window_exceeded"),
	    "length");
	assert_string_equal(anthropic_finish("tool_use"), "tool_calls");
	assert_string_equal(anthropic_finish("refusal"), "content_filter");
	in = unit_json("{\"type\":\"error\"}");
	assert_null(anthropic_response(in, ""));
	json_object_put(in);
}

/* The documented event sequence, text then a tool call. */
static const char *const events[] = {
	"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":"
	"\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\","
	"\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
	"{\"input_tokens\":25,\"output_tokens\":1}}}",
	"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
	"{\"type\":\"text\",\"text\":\"\"}}",
	"{\"type\": \"ping\"}",
	"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
	"\"text_delta\",\"text\":\"Hi\"}}",
	"{\"type\":\"content_block_stop\",\"index\":0}",
	"{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
	"{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
	"\"input\":{}}}",
	"{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
	"\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}",
	"{\"type\":\"content_block_stop\",\"index\":1}",
	"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
	"\"stop_sequence\":null},\"usage\":{\"output_tokens\":40}}",
	"{\"type\":\"message_stop\"}",
};

static const char *const chunks[] = {
	"{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
	"\"finish_reason\":null}",
	NULL,
	NULL,
	"{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}",
	NULL,
	"{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_1\",\"type\":"
	"\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
	"\"\"}}]},\"finish_reason\":null}",
	"{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
	"\"{\\\"city\\\":\"}}]},\"finish_reason\":null}",
	NULL,
	"{\"delta\":{},\"finish_reason\":\"tool_calls\"}",
	"USAGE",
};

static void
test_stream_translation(void **state)
{
	struct anthropic_stream s;
	struct json_object *ev, *out, *choices, *v;
	enum anthropic_step step;
	size_t	 i;

	(void)state;
	memset(&s, 0, sizeof(s));
	for (i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		ev = unit_json(events[i]);
		step = anthropic_stream_event(&s, ev, &out);
		json_object_put(ev);
		if (chunks[i] == NULL) {
			assert_int_equal(step, ANT_SKIP);
			assert_null(out);
			continue;
		}
		assert_non_null(out);
		assert_true(json_object_object_get_ex(out, "id", &v));
		assert_string_equal(json_object_get_string(v), "msg_1");
		assert_true(json_object_object_get_ex(out, "object", &v));
		assert_string_equal(json_object_get_string(v),
		    "chat.completion.chunk");
		assert_true(json_object_object_get_ex(out, "choices",
		    &choices));
		if (strcmp(chunks[i], "USAGE") == 0) {
			assert_int_equal(step, ANT_DONE);
			assert_int_equal(json_object_array_length(choices), 0);
			assert_true(json_object_object_get_ex(out, "usage", &v));
			assert_json(v, "{\"prompt_tokens\":25,"
			    "\"completion_tokens\":40,\"total_tokens\":65}");
		} else {
			struct json_object *c;

			assert_int_equal(step, ANT_EMIT);
			assert_int_equal(json_object_array_length(choices), 1);
			c = json_object_array_get_idx(choices, 0);
			json_object_object_del(c, "index");
			assert_json(c, chunks[i]);
		}
		json_object_put(out);
	}
	/*
	 * A mid-stream error ends the stream with the provider's message and
	 * type (a word; anything else is the generic one).
	 */
	ev = unit_json("{\"type\":\"error\",\"error\":{\"type\":"
	    "\"overloaded_error\",\"message\":\"Overloaded\"}}");
	assert_int_equal(anthropic_stream_event(&s, ev, &out), ANT_ERROR);
	assert_json(out, "{\"error\":{\"message\":\"Overloaded\",\"type\":"
	    "\"overloaded_error\",\"code\":\"upstream_error\"}}");
	json_object_put(ev);
	json_object_put(out);
	ev = unit_json("{\"type\":\"error\",\"error\":{\"type\":"
	    "\"<b>odd</b>\",\"message\":\"Odd\"}}");
	assert_int_equal(anthropic_stream_event(&s, ev, &out), ANT_ERROR);
	assert_json(out, "{\"error\":{\"message\":\"Odd\",\"type\":"
	    "\"upstream_error\",\"code\":\"upstream_error\"}}");
	json_object_put(ev);
	json_object_put(out);
}

/*
 * response_format: a tool the model must call, whose input schema is the
 * answer's; its input comes back as the content, finish "stop".
 */
static void
test_json_answer(void **state)
{
	struct json_object *in, *out, *ev, *choices;
	struct anthropic_stream s;
	struct buf	 content = { 0 };
	char		 err[160], name[ANT_TOOL_NAME];
	size_t		 i;
	static const char *const answer_events[] = {
		"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\","
		"\"model\":\"m\",\"usage\":{\"input_tokens\":5}}}",
		"{\"type\":\"content_block_start\",\"index\":0,"
		"\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\","
		"\"name\":\"Event\",\"input\":{}}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
		"{\"type\":\"input_json_delta\",\"partial_json\":"
		"\"{\\\"name\\\":\"}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
		"{\"type\":\"input_json_delta\",\"partial_json\":"
		"\" \\\"fair\\\"}\"}}",
		"{\"type\":\"content_block_stop\",\"index\":0}",
		"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
		"\"tool_use\"},\"usage\":{\"output_tokens\":9}}",
	};

	(void)state;
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
	    "{\"name\":\"Event\",\"strict\":true,\"schema\":{\"type\":"
	    "\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},"
	    "\"required\":[\"name\"],\"additionalProperties\":false}}}}");
	assert_int_equal(anthropic_request(in, "m", 100, &out, err,
	    sizeof(err)), 0);
	anthropic_answer_tool(in, name);
	assert_string_equal(name, "Event");
	assert_json(out, "{\"model\":\"m\",\"messages\":[{\"role\":"
	    "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}],"
	    "\"max_tokens\":100,\"tools\":[{\"name\":\"Event\","
	    "\"description\":\"Give your answer as the input of this tool, "
	    "following its schema.\",\"input_schema\":{\"type\":\"object\","
	    "\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":"
	    "[\"name\"],\"additionalProperties\":false}}],\"tool_choice\":"
	    "{\"type\":\"tool\",\"name\":\"Event\"}}");
	json_object_put(in);
	json_object_put(out);

	/* json_object: an instruction and any object; a name of our own. */
	in = unit_json("{\"messages\":[{\"role\":\"system\",\"content\":"
	    "\"Be brief.\"},{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
	    "\"f\"}}],\"response_format\":{\"type\":\"json_object\"}}");
	assert_int_equal(anthropic_request(in, "m", 100, &out, err,
	    sizeof(err)), 0);
	assert_json(out, "{\"model\":\"m\",\"messages\":[{\"role\":"
	    "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}],"
	    "\"system\":\"Be brief.\\nRespond with a JSON object.\","
	    "\"max_tokens\":100,\"tools\":[{\"name\":\"f\",\"input_schema\":"
	    "{\"type\":\"object\"}},{\"name\":\"json_answer\",\"description\":"
	    "\"Give your answer as the input of this tool, following its "
	    "schema.\",\"input_schema\":{\"type\":\"object\","
	    "\"additionalProperties\":true}}],\"tool_choice\":{\"type\":"
	    "\"any\"}}");
	json_object_put(in);
	json_object_put(out);

	/* Formats there are not. */
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":{\"type\":\"yaml\"}}");
	assert_int_equal(anthropic_request(in, "m", 100, &out, err,
	    sizeof(err)), -1);
	assert_string_equal(err, "response_format.type must be text, "
	    "json_object or json_schema");
	json_object_put(in);
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
	    "{\"name\":\"E\"}}}");
	assert_int_equal(anthropic_request(in, "m", 100, &out, err,
	    sizeof(err)), -1);
	assert_string_equal(err, "response_format.json_schema.schema must "
	    "be an object");
	json_object_put(in);

	/* The reply: the tool's input is the content. */
	in = unit_json("{\"id\":\"msg_2\",\"model\":\"m\",\"content\":["
	    "{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"Event\","
	    "\"input\":{\"name\":\"fair\"}}],\"stop_reason\":\"tool_use\","
	    "\"usage\":{\"input_tokens\":5,\"output_tokens\":9}}");
	out = anthropic_response(in, "Event");
	assert_non_null(out);
	assert_true(json_object_object_get_ex(out, "choices", &choices));
	assert_json(json_object_array_get_idx(choices, 0), "{\"index\":0,"
	    "\"message\":{\"role\":\"assistant\",\"content\":"
	    "\"{\\\"name\\\":\\\"fair\\\"}\"},\"finish_reason\":\"stop\"}");
	json_object_put(in);
	json_object_put(out);

	/* The stream: the input's fragments are content deltas. */
	memset(&s, 0, sizeof(s));
	snprintf(s.answer, sizeof(s.answer), "Event");
	for (i = 0; i < sizeof(answer_events) / sizeof(answer_events[0]);
	    i++) {
		struct json_object *c, *d, *v;

		ev = unit_json(answer_events[i]);
		if (anthropic_stream_event(&s, ev, &out) == ANT_EMIT) {
			assert_true(json_object_object_get_ex(out, "choices",
			    &choices));
			c = json_object_array_get_idx(choices, 0);
			assert_true(json_object_object_get_ex(c, "delta", &d));
			assert_false(json_object_object_get_ex(d, "tool_calls",
			    NULL));
			if (json_object_object_get_ex(d, "content", &v))
				assert_int_equal(buf_puts(&content,
				    json_object_get_string(v)), 0);
			if (json_object_object_get_ex(c, "finish_reason", &v) &&
			    v != NULL)
				assert_string_equal(json_object_get_string(v),
				    "stop");
			json_object_put(out);
		}
		json_object_put(ev);
	}
	assert_string_equal(content.data, "{\"name\": \"fair\"}");
	assert_string_equal(s.finish, "stop");
	buf_free(&content);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_request_translation),
    cmocka_unit_test(test_request_refusals),
    cmocka_unit_test(test_response_translation),
    cmocka_unit_test(test_stream_translation),
    cmocka_unit_test(test_json_answer))
