/*
 * Unit tests for src/providers/openai.c: OpenAI, OpenRouter and the
 * operator's upstreams get the client's request with the model resolved,
 * usage asked for on streams and the limit held; replies go back as they
 * came, their usage read.
 */
#include "../unit.h"

#include "lib/json.h"
#include "providers/provider.h"
#include "providers/providers.h"

/* A call as the gateway fills it, for the client's request req. */
static struct provider_call
call(enum provider_op op, const char *base, const char *model,
    struct json_object *req, long max_tokens)
{
	struct provider_call c = { 0 };

	c.op = op;
	c.stream = true;
	c.base = base;
	c.model = model;
	c.request = req;
	c.max_tokens = max_tokens;
	return c;
}

/* What p's prepare() sends for c (new), to url when not NULL. */
static struct json_object *
sent_by(const struct provider_module *p, struct provider_call *c,
    const char *url)
{
	char	 err[64];

	assert_int_equal(p->prepare(c, err, sizeof(err)), PROVIDER_OK);
	if (url != NULL)
		assert_string_equal(c->url.data, url);
	return unit_json(c->body.data);
}

static void
test_openai_request_carries_the_limit_held(void **state)
{
	struct json_object *req, *sent;
	struct provider_call c;

	(void)state;
	req = unit_json("{\"model\":\"m\",\"stream\":true,\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"hi\"}]}");
	c = call(PROVIDER_CHAT, "https://api.openai.com/v1", "gpt-4o-mini",
	    req, 300);
	sent = sent_by(&provider_openai, &c,
	    "https://api.openai.com/v1/chat/completions");
	assert_json(sent, "{\"model\":\"gpt-4o-mini\",\"stream\":true,"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
	    "\"stream_options\":{\"include_usage\":true},"
	    "\"max_completion_tokens\":300}");
	json_object_put(sent);
	/* OpenRouter and the upstreams know max_tokens. */
	sent = sent_by(&provider_openrouter, &c, NULL);
	assert_int_equal(json_object_get_int64(json_object_object_get(sent,
	    "max_tokens")), 300);
	json_object_put(sent);
	/* A request's own limit wins; none held, none added. */
	json_object_object_add(req, "max_tokens", json_object_new_int64(5));
	sent = sent_by(&provider_openai, &c, NULL);
	assert_null(strstr(c.body.data, "max_completion_tokens"));
	json_object_put(sent);
	json_object_object_del(req, "max_tokens");
	c.max_tokens = 0;
	sent = sent_by(&provider_openai, &c, NULL);
	assert_null(strstr(c.body.data, "max_"));
	json_object_put(sent);
	provider_call_free(&c);
	json_object_put(req);
}

/*
 * A stream asks for usage in its own stream_options, keeping the client's
 * other options; the client's request itself is left as it was.
 */
static void
test_a_stream_asks_for_usage(void **state)
{
	struct json_object *req, *sent;
	struct provider_call c;
	const char	*text = "{\"model\":\"alias\",\"stream\":true,"
	    "\"stream_options\":{\"x\":1,\"include_usage\":false},"
	    "\"max_completion_tokens\":9,\"messages\":[]}";

	(void)state;
	req = unit_json(text);
	c = call(PROVIDER_CHAT, "http://up.test", "llama3", req, 300);
	sent = sent_by(&provider_upstream, &c,
	    "http://up.test/chat/completions");
	/* The client's own max_completion_tokens: no max_tokens added. */
	assert_json(sent, "{\"model\":\"llama3\",\"stream\":true,"
	    "\"stream_options\":{\"x\":1,\"include_usage\":true},"
	    "\"max_completion_tokens\":9,\"messages\":[]}");
	json_object_put(sent);
	assert_json(req, text);
	/* Options that are not an object are replaced. */
	json_object_object_add(req, "stream_options", json_str("yes"));
	sent = sent_by(&provider_openai, &c, NULL);
	assert_json(json_object_object_get(sent, "stream_options"),
	    "{\"include_usage\":true}");
	json_object_put(sent);
	/* Not a stream: the options go as the client sent them. */
	c.stream = false;
	sent = sent_by(&provider_openai, &c, NULL);
	assert_string_equal(json_get_str(sent, "stream_options"), "yes");
	json_object_put(sent);
	provider_call_free(&c);
	json_object_put(req);
}

/* Embeddings: the model resolved and nothing else added. */
static void
test_embeddings(void **state)
{
	struct json_object *req, *sent;
	struct provider_call c;

	(void)state;
	req = unit_json("{\"model\":\"small\",\"input\":[\"a\",\"b\"]}");
	c = call(PROVIDER_EMBED, "https://openrouter.ai/api/v1//",
	    "openai/text-embedding-3-small", req, 300);
	sent = sent_by(&provider_openrouter, &c,
	    "https://openrouter.ai/api/v1/embeddings");
	assert_json(sent, "{\"model\":\"openai/text-embedding-3-small\","
	    "\"input\":[\"a\",\"b\"]}");
	json_object_put(sent);
	provider_call_free(&c);
	json_object_put(req);
}

/* A reply is passed on as it came; its usage is read, when it has one. */
static void
test_a_reply_as_it_came(void **state)
{
	struct provider_call c = { 0 };
	struct json_object *in, *out;
	char		 err[64];

	(void)state;
	in = unit_json("{\"id\":\"x\",\"choices\":[],\"usage\":{"
	    "\"prompt_tokens\":12,\"completion_tokens\":-3}}");
	out = provider_openai.reply(&c, in, err, sizeof(err));
	assert_ptr_equal(out, in);
	json_object_put(out);
	assert_true(c.have_usage);
	assert_int_equal(c.prompt_tokens, 12);
	assert_int_equal(c.completion_tokens, 0);	/* never negative */
	json_object_put(in);
	c = (struct provider_call){ 0 };
	in = unit_json("{\"object\":\"list\",\"data\":[]}");
	out = provider_upstream.reply(&c, in, err, sizeof(err));
	assert_ptr_equal(out, in);
	assert_false(c.have_usage);
	json_object_put(out);
	json_object_put(in);
}

/* The models OpenAI serves by name, and its keys apart from others'. */
static void
test_names_and_keys(void **state)
{
	(void)state;
	assert_int_equal(provider_route("gpt-4o-mini"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("o1-preview"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("o4-mini"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("chatgpt-4o-latest"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("text-embedding-3-large"),
	    PROVIDER_OPENAI);
	assert_int_equal(provider_route("gpt4"), PROVIDER__MAX);
	assert_int_equal(provider_route("o2-mini"), PROVIDER__MAX);
	assert_true(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-proj-0123456789abcdef"));
	assert_true(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-0123456789abcdefghij"));
	assert_false(provider_key_format_ok(PROVIDER_OPENAI,
	    "sk-ant-0123456789abcdef"));
	assert_false(provider_key_format_ok(PROVIDER_OPENROUTER,
	    "sk-proj-0123456789abcdef"));
	assert_string_equal(provider_openai.inline_param, "HTTP_X_OPENAI_KEY");
	assert_true(provider_upstream.embeddings);
	assert_null(provider_upstream.key_prefix);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_openai_request_carries_the_limit_held),
    cmocka_unit_test(test_a_stream_asks_for_usage),
    cmocka_unit_test(test_embeddings),
    cmocka_unit_test(test_a_reply_as_it_came),
    cmocka_unit_test(test_names_and_keys))
