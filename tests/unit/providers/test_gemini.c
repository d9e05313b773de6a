/*
 * Golden fixtures for src/providers/gemini.c: OpenAI requests in,
 * generateContent requests out; replies and stream events in, OpenAI
 * shapes out, with the finish-reason rules Gemini needs.
 */
#include "../unit.h"

#include "lib/crypto.h"
#include "lib/json.h"
#include "providers/gemini.h"

static void
test_request_translation(void **state)
{
	struct json_object *in, *out;
	char	 err[160];

	(void)state;
	in = unit_json("{\"model\":\"gemini-2.0-flash\",\"max_tokens\":50,"
	    "\"temperature\":0.3,\"stop\":[\"END\"],\"messages\":["
	    "{\"role\":\"system\",\"content\":\"Be brief.\"},"
	    "{\"role\":\"user\",\"content\":\"Weather in Oslo?\"},"
	    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
	    "\"call_9\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},"
	    "{\"role\":\"tool\",\"tool_call_id\":\"call_9\",\"content\":"
	    "\"rain\"}],"
	    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_weather\",\"parameters\":{\"type\":\"object\"}}}],"
	    "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
	    "\"get_weather\"}}}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), 0);
	assert_json(out, "{\"contents\":["
	    "{\"role\":\"user\",\"parts\":[{\"text\":\"Weather in Oslo?\"}]},"
	    "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":"
	    "\"get_weather\",\"args\":{\"city\":\"Oslo\"}}}]},"
	    "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":"
	    "\"get_weather\",\"response\":{\"output\":\"rain\"}}}]}],"
	    "\"systemInstruction\":{\"parts\":[{\"text\":\"Be brief.\"}]},"
	    "\"generationConfig\":{\"maxOutputTokens\":50,\"temperature\":0.3,"
	    "\"stopSequences\":[\"END\"]},"
	    "\"tools\":[{\"functionDeclarations\":[{\"name\":\"get_weather\","
	    "\"parameters\":{\"type\":\"object\"}}]}],"
	    "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\","
	    "\"allowedFunctionNames\":[\"get_weather\"]}}}");
	json_object_put(in);
	json_object_put(out);

	/* A tool result that answers no call cannot be named: refused. */
	in = unit_json(
	    "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"x\","
	    "\"content\":\"y\"}]}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "a tool result answers no earlier tool call");
	json_object_put(in);
	/* Gemini is never asked to fetch a URL for us. */
	in = unit_json(
	    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
	    "\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}}]}]}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), -1);
	json_object_put(in);
}

static void
test_response_translation(void **state)
{
	struct json_object *in, *out, *ch;
	char	 err[160];

	(void)state;
	/* STOP with a function call is tool_calls. */
	in = unit_json(
	    "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":"
	    "[{\"text\":\"thinking\",\"thought\":true},{\"text\":\"Checking.\"},"
	    "{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":"
	    "\"Oslo\"}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":"
	    "{\"promptTokenCount\":10,\"candidatesTokenCount\":5,"
	    "\"thoughtsTokenCount\":2}}");
	out = gemini_response(in, "gemini-2.0-flash", err, sizeof(err));
	assert_non_null(out);
	assert_true(json_object_object_get_ex(out, "choices", &ch));
	assert_json(json_object_array_get_idx(ch, 0), "{\"index\":0,"
	    "\"message\":{\"role\":\"assistant\",\"content\":\"Checking.\","
	    "\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\","
	    "\"function\":{\"name\":\"get_weather\",\"arguments\":"
	    "\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},\"finish_reason\":"
	    "\"tool_calls\"}");
	assert_true(json_object_object_get_ex(out, "usage", &ch));
	assert_json(ch, "{\"prompt_tokens\":10,\"completion_tokens\":7,"
	    "\"total_tokens\":17}");
	json_object_put(in);
	json_object_put(out);

	/* MALFORMED_FUNCTION_CALL is an error, not a stop. */
	in = unit_json("{\"candidates\":[{\"content\":{\"parts\":[]},"
	    "\"finishReason\":\"MALFORMED_FUNCTION_CALL\"}]}");
	assert_null(gemini_response(in, "m", err, sizeof(err)));
	assert_string_equal(err, "google ended with MALFORMED_FUNCTION_CALL");
	json_object_put(in);
	/* SAFETY is content_filter; MAX_TOKENS is length. */
	in = unit_json(
	    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},"
	    "\"finishReason\":\"MAX_TOKENS\"}]}");
	out = gemini_response(in, "m", err, sizeof(err));
	assert_true(json_object_object_get_ex(out, "choices", &ch));
	assert_string_equal(json_object_get_string(json_object_object_get(
	    json_object_array_get_idx(ch, 0), "finish_reason")), "length");
	json_object_put(in);
	json_object_put(out);
}

static void
test_stream_translation(void **state)
{
	struct gemini_state s;
	struct json_object *ev, *out;
	char	 err[160];

	(void)state;
	gemini_state_init(&s, "gemini-2.0-flash", 1);
	out = json_object_new_array();
	ev = unit_json(
	    "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":"
	    "[{\"text\":\"Hel\"}]}}]}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)),
	    0);
	json_object_put(ev);
	/* The call arrives whole; STOP comes in a later chunk without it. */
	ev = unit_json(
	    "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":"
	    "{\"name\":\"f\",\"args\":{\"a\":1}}}]}}]}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)),
	    0);
	json_object_put(ev);
	ev = unit_json("{\"candidates\":[{\"content\":{\"parts\":[]},"
	    "\"finishReason\":\"STOP\"}],\"usageMetadata\":{"
	    "\"promptTokenCount\":4,\"candidatesTokenCount\":6}}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)),
	    0);
	json_object_put(ev);
	assert_int_equal(json_object_array_length(out), 4);
	assert_json(json_object_object_get(json_object_array_get_idx(
	    json_object_object_get(json_object_array_get_idx(out, 0),
	    "choices"), 0), "delta"), "{\"role\":\"assistant\",\"content\":\"\"}");
	assert_json(json_object_object_get(json_object_array_get_idx(
	    json_object_object_get(json_object_array_get_idx(out, 1),
	    "choices"), 0), "delta"), "{\"content\":\"Hel\"}");
	assert_json(json_object_object_get(json_object_array_get_idx(
	    json_object_object_get(json_object_array_get_idx(out, 2),
	    "choices"), 0), "delta"), "{\"tool_calls\":[{\"index\":0,\"id\":"
	    "\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"f\","
	    "\"arguments\":\"{\\\"a\\\":1}\"}}]}");
	assert_string_equal(json_object_get_string(json_object_object_get(
	    json_object_array_get_idx(json_object_object_get(
	    json_object_array_get_idx(out, 3), "choices"), 0),
	    "finish_reason")), "tool_calls");
	assert_true(s.finished);
	json_object_put(out);
	out = gemini_usage_chunk(&s);
	assert_json(json_object_object_get(out, "usage"), "{\"prompt_tokens\":4,"
	    "\"completion_tokens\":6,\"total_tokens\":10}");
	json_object_put(out);
	/* A mid-stream error ends the translation. */
	out = json_object_new_array();
	ev = unit_json("{\"error\":{\"code\":503,\"message\":\"overloaded\","
	    "\"status\":\"UNAVAILABLE\"}}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)),
	    -1);
	assert_string_equal(err, "overloaded");
	json_object_put(ev);
	json_object_put(out);
}

/* n > 1: candidateCount out, every candidate back as its own choice. */
static void
test_several_choices(void **state)
{
	static const char *const bad_n[] = { "0", "9", "\"2\"", "1.5", "-1" };
	struct json_object *in, *out, *ev, *ch;
	struct gemini_state s;
	char	 err[160], text[256];
	size_t	 i;

	(void)state;
	in = unit_json(
	    "{\"model\":\"m\",\"n\":3,\"messages\":[{\"role\":\"user\","
	    "\"content\":\"Hi\"}]}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), 0);
	assert_json(json_object_object_get(out, "generationConfig"),
	    "{\"candidateCount\":3}");
	assert_int_equal(gemini_choices(in), 3);
	json_object_put(in);
	json_object_put(out);
	for (i = 0; i < sizeof(bad_n) / sizeof(bad_n[0]); i++) {
		snprintf(text, sizeof(text), "{\"model\":\"m\",\"n\":%s,"
		    "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
		    bad_n[i]);
		in = unit_json(text);
		assert_int_equal(gemini_request(in, &out, err, sizeof(err)), -1);
		assert_string_equal(err, "n must be a whole number from 1 to 8");
		assert_int_equal(gemini_choices(in), 1);
		json_object_put(in);
	}

	/* Gemini leaves index 0 out; each choice numbers its own calls. */
	in = unit_json("{\"candidates\":["
	    "{\"content\":{\"parts\":[{\"text\":\"One.\"}]},"
	    "\"finishReason\":\"STOP\"},"
	    "{\"index\":1,\"content\":{\"parts\":[{\"functionCall\":"
	    "{\"name\":\"f\",\"args\":{}}}]},\"finishReason\":\"STOP\"},"
	    "{\"index\":2,\"content\":{\"parts\":[{\"text\":\"Thr\"}]},"
	    "\"finishReason\":\"MAX_TOKENS\"}],"
	    "\"usageMetadata\":{\"promptTokenCount\":3,"
	    "\"candidatesTokenCount\":9}}");
	out = gemini_response(in, "m", err, sizeof(err));
	assert_non_null(out);
	assert_true(json_object_object_get_ex(out, "choices", &ch));
	assert_json(ch, "[{\"index\":0,\"message\":{\"role\":\"assistant\","
	    "\"content\":\"One.\"},\"finish_reason\":\"stop\"},"
	    "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":null,"
	    "\"tool_calls\":[{\"id\":\"call_1_0\",\"type\":\"function\","
	    "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
	    "\"finish_reason\":\"tool_calls\"},"
	    "{\"index\":2,\"message\":{\"role\":\"assistant\","
	    "\"content\":\"Thr\"},\"finish_reason\":\"length\"}]");
	assert_json(json_object_object_get(out, "usage"), "{\"prompt_tokens\":3,"
	    "\"completion_tokens\":9,\"total_tokens\":12}");
	json_object_put(in);
	json_object_put(out);
	/* One candidate in error fails the reply; so does a repeated index. */
	in = unit_json("{\"candidates\":[{\"content\":{\"parts\":[]},"
	    "\"finishReason\":\"STOP\"},{\"index\":1,\"finishReason\":"
	    "\"MALFORMED_FUNCTION_CALL\"}]}");
	assert_null(gemini_response(in, "m", err, sizeof(err)));
	assert_string_equal(err, "google ended with MALFORMED_FUNCTION_CALL");
	json_object_put(in);
	in = unit_json(
	    "{\"candidates\":[{\"index\":1,\"finishReason\":\"STOP\"},"
	    "{\"index\":1,\"finishReason\":\"STOP\"}]}");
	assert_null(gemini_response(in, "m", err, sizeof(err)));
	assert_string_equal(err, "google sent a candidate out of place");
	json_object_put(in);

	/* A stream: chunks per choice, finished when both are. */
	gemini_state_init(&s, "m", 2);
	out = json_object_new_array();
	ev = unit_json(
	    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}]}},"
	    "{\"index\":1,\"content\":{\"parts\":[{\"text\":\"B\"}]}}]}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)), 0);
	json_object_put(ev);
	ev = unit_json(
	    "{\"candidates\":[{\"index\":1,\"content\":{\"parts\":[]},"
	    "\"finishReason\":\"STOP\"}]}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)), 0);
	json_object_put(ev);
	assert_false(s.finished);
	ev = unit_json("{\"candidates\":[{\"content\":{\"parts\":[]},"
	    "\"finishReason\":\"STOP\"}]}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)), 0);
	json_object_put(ev);
	assert_true(s.finished);
	assert_int_equal(json_object_array_length(out), 6);
	for (i = 0; i < 6; i++) {
		static const char *const want[6] = {
		    "{\"index\":0,\"delta\":{\"role\":\"assistant\","
		    "\"content\":\"\"},\"finish_reason\":null}",
		    "{\"index\":0,\"delta\":{\"content\":\"A\"},"
		    "\"finish_reason\":null}",
		    "{\"index\":1,\"delta\":{\"role\":\"assistant\","
		    "\"content\":\"\"},\"finish_reason\":null}",
		    "{\"index\":1,\"delta\":{\"content\":\"B\"},"
		    "\"finish_reason\":null}",
		    "{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"}",
		    "{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}",
		};

		assert_json(json_object_array_get_idx(json_object_object_get(
		    json_object_array_get_idx(out, i), "choices"), 0), want[i]);
	}
	json_object_put(out);
	/* A candidate beyond n is an error, not a new choice. */
	out = json_object_new_array();
	ev = unit_json(
	    "{\"candidates\":[{\"index\":2,\"content\":{\"parts\":[]}}]}");
	assert_int_equal(gemini_stream_event(&s, ev, out, err, sizeof(err)), -1);
	assert_string_equal(err, "google sent more candidates than asked for");
	json_object_put(ev);
	json_object_put(out);
}

/* response_format: JSON out, with the schema as responseJsonSchema. */
static void
test_json_answer(void **state)
{
	struct json_object *in, *out;
	char	 err[160];

	(void)state;
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
	    "{\"name\":\"Event\",\"strict\":true,\"schema\":{\"type\":"
	    "\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},"
	    "\"required\":[\"name\"],\"additionalProperties\":false}}}}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), 0);
	assert_json(out, "{\"contents\":[{\"role\":\"user\",\"parts\":"
	    "[{\"text\":\"x\"}]}],\"generationConfig\":{"
	    "\"responseJsonSchema\":{\"type\":\"object\",\"properties\":"
	    "{\"name\":{\"type\":\"string\"}},\"required\":[\"name\"],"
	    "\"additionalProperties\":false},\"responseMimeType\":"
	    "\"application/json\"}}");
	json_object_put(in);
	json_object_put(out);
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":{\"type\":\"json_object\"}}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), 0);
	assert_json(out, "{\"contents\":[{\"role\":\"user\",\"parts\":"
	    "[{\"text\":\"x\"}]}],\"generationConfig\":{"
	    "\"responseMimeType\":\"application/json\"}}");
	json_object_put(in);
	json_object_put(out);
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":{\"type\":\"text\"}}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), 0);
	assert_json(out, "{\"contents\":[{\"role\":\"user\",\"parts\":"
	    "[{\"text\":\"x\"}]}]}");
	json_object_put(in);
	json_object_put(out);
	in = unit_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"response_format\":\"json\"}");
	assert_int_equal(gemini_request(in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "response_format.type must be text, "
	    "json_object or json_schema");
	json_object_put(in);
}

/* Embeddings: one request per input; vectors back, as numbers or base64. */
static void
test_embeddings(void **state)
{
	struct json_object *in, *out;
	char	 err[160];

	(void)state;
	in = unit_json("{\"model\":\"x\",\"input\":[\"a\",\"b\"],"
	    "\"dimensions\":2}");
	assert_int_equal(gemini_embed_request(in, "gemini-embedding-001", &out,
	    err, sizeof(err)), 0);
	assert_json(out, "{\"requests\":[{\"model\":"
	    "\"models/gemini-embedding-001\",\"content\":{\"parts\":[{"
	    "\"text\":\"a\"}]},\"outputDimensionality\":2},{\"model\":"
	    "\"models/gemini-embedding-001\",\"content\":{\"parts\":[{"
	    "\"text\":\"b\"}]},\"outputDimensionality\":2}]}");
	json_object_put(in);
	json_object_put(out);
	in = unit_json("{\"input\":[[1,2]]}");
	assert_int_equal(gemini_embed_request(in, "m", &out, err, sizeof(err)),
	    -1);
	assert_string_equal(err, "google embeds text: input must be a string "
	    "or a non-empty array of strings");
	json_object_put(in);

	/* 1.0 and -2.0 as float32: 0000803f 000000c0. */
	in = unit_json("{\"embeddings\":[{\"values\":[1.0,-2.0]}]}");
	out = gemini_embed_response(in, "m", false, 3, err, sizeof(err));
	assert_json(out, "{\"object\":\"list\",\"data\":[{\"object\":"
	    "\"embedding\",\"index\":0,\"embedding\":[1.0,-2.0]}],"
	    "\"model\":\"m\",\"usage\":{\"prompt_tokens\":3,"
	    "\"total_tokens\":3}}");
	json_object_put(out);
	out = gemini_embed_response(in, "m", true, 3, err, sizeof(err));
	assert_json(out, "{\"object\":\"list\",\"data\":[{\"object\":"
	    "\"embedding\",\"index\":0,\"embedding\":\"AACAPwAAAMA=\"}],"
	    "\"model\":\"m\",\"usage\":{\"prompt_tokens\":3,"
	    "\"total_tokens\":3}}");
	json_object_put(out);
	json_object_put(in);
	in = unit_json("{\"error\":{}}");
	assert_null(gemini_embed_response(in, "m", false, 3, err, sizeof(err)));
	assert_string_equal(err, "google sent no embeddings");
	json_object_put(in);
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_request_translation),
    cmocka_unit_test(test_response_translation),
    cmocka_unit_test(test_stream_translation),
    cmocka_unit_test(test_several_choices),
    cmocka_unit_test(test_json_answer),
    cmocka_unit_test(test_embeddings))
