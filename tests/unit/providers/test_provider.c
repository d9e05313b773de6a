/*
 * Unit tests for src/providers/provider.c and stream.c: the descriptors'
 * data, and a provider added in a few lines (a fake one, "echo", whose
 * stream events are {"say":text} and {"bye":n}) driven through the same
 * stream path the gateway uses.
 */
#include "../unit.h"

#include "lib/json.h"
#include "providers/provider.h"
#include "providers/providers.h"

/* The fake provider: these few lines are all a provider needs. */

static enum provider_result
echo_prepare(struct provider_call *c, char *err, size_t errsz)
{
	struct json_object *o = json_object_new_object();

	(void)err;
	(void)errsz;
	json_object_object_add(o, "model", json_str(c->model));
	json_object_object_add(o, "limit",
	    json_object_new_int64(c->max_tokens));
	return provider_put(c, "/echo", o);
}

static enum provider_step
echo_event(struct provider_call *c, struct json_object *ev,
    struct json_object *out)
{
	struct json_object *v;
	const char	*say = json_get_str(ev, "say");

	if (say != NULL) {
		v = json_object_new_object();
		json_object_object_add(v, "content", json_str(say));
		json_object_array_add(out, chat_chunk("echo-1", c->model, 1, v,
		    NULL));
		(*(int *)c->state)++;
		return PROVIDER_MORE;
	}
	if (json_get(ev, "bye", &v)) {
		c->prompt_tokens = 1;
		c->completion_tokens = (long)json_object_get_int64(v);
		c->have_usage = true;
		return PROVIDER_END;
	}
	return provider_stream_error(out, "echo did not understand",
	    "upstream_error");
}

static const struct provider_module echo = {
	.name = "echo",
	.auth = "Authorization: Bearer ",
	.state_size = sizeof(int),
	.prepare = echo_prepare,
	.event = echo_event,
};

/* A sink that writes what it hears as text: "chunk:<content>", "end"... */
struct heard {
	struct buf	 log;
	int		 stop_at;	/* -1 from the sink at that call */
	int		 calls;
};

static int
note(struct heard *h, const char *what, const char *detail)
{
	assert_int_equal(buf_printf(&h->log, "%s%s%s;", what,
	    detail != NULL ? ":" : "", detail != NULL ? detail : ""), 0);
	return ++h->calls == h->stop_at ? -1 : 0;
}

static int
heard_chunk(void *arg, struct json_object *o, const struct sse_event *raw)
{
	struct json_object *choices, *delta;
	const char	*text = NULL;

	if (o == NULL)
		return note(arg, "raw", raw->data);
	if (json_get(o, "choices", &choices) &&
	    json_object_array_length(choices) > 0 &&
	    json_get(json_object_array_get_idx(choices, 0), "delta", &delta))
		text = json_get_str(delta, "content");
	return note(arg, raw != NULL ? "as-it-came" : "chunk", text);
}

static int
heard_end(void *arg)
{
	return note(arg, "end", NULL);
}

static int
heard_fail(void *arg, struct json_object *err)
{
	struct json_object *e;

	assert_true(json_get(err, "error", &e));
	return note(arg, "fail", json_get_str(e, "message"));
}

static const struct provider_sink sink = {
	.chunk = heard_chunk,
	.end = heard_end,
	.fail = heard_fail,
};

/*
 * Streams body (in pieces of piece bytes) from p into a fresh sink; what
 * it heard, then "finish=<rc>" for the body's end (whole).
 */
static char *
run(const struct provider_module *p, struct provider_call *c,
    const char *body, size_t piece, int stop_at)
{
	struct provider_stream s;
	struct heard	 h = { { 0 }, stop_at, 0 };
	size_t		 off = 0, n, len = strlen(body);
	int		 rc = 0;
	char		*out;

	provider_stream_init(&s, p, c, &sink, &h, 1 << 16);
	while (off < len && rc == 0) {
		n = len - off < piece ? len - off : piece;
		rc = provider_stream_feed(&s, body + off, n);
		off += n;
	}
	if (rc == 0)
		rc = provider_stream_finish(&s, true);
	assert_int_equal(buf_printf(&h.log, "finish=%d", rc), 0);
	provider_stream_free(&s);
	out = strdup(h.log.data);
	buf_free(&h.log);
	return out;
}

static void
test_a_fake_provider_prepares_and_streams(void **state)
{
	struct provider_call c = { 0 };
	char		 err[64], *got;
	const char	*body = "data: {\"say\":\"Hel\"}\n\n"
	    "data: {\"say\":\"lo\"}\r\n\r\n"
	    ": a comment\n\n"
	    "data: {\"bye\":2}\n\n"
	    "data: {\"say\":\"after the end\"}\n\n";
	size_t		 piece;

	(void)state;
	c.op = PROVIDER_CHAT;
	c.base = "http://echo.test/v1/";
	c.model = "echo-small";
	c.max_tokens = 7;
	c.state = calloc(1, echo.state_size);
	assert_int_equal(echo.prepare(&c, err, sizeof(err)), PROVIDER_OK);
	assert_string_equal(c.url.data, "http://echo.test/v1/echo");
	assert_string_equal(c.body.data,
	    "{\"model\":\"echo-small\",\"limit\":7}");
	/* The same, however the bytes are cut. */
	for (piece = 1; piece <= strlen(body); piece += 7) {
		*(int *)c.state = 0;
		c.have_usage = false;
		got = run(&echo, &c, body, piece, 0);
		assert_string_equal(got, "chunk:Hel;chunk:lo;end;finish=0");
		free(got);
		assert_int_equal(*(int *)c.state, 2);
		assert_true(c.have_usage);
		assert_int_equal(c.completion_tokens, 2);
	}
	provider_call_free(&c);
	assert_null(c.state);
}

static void
test_a_stream_cut_short_or_failing_says_so(void **state)
{
	struct provider_call c = { 0 };
	char		*got;

	(void)state;
	c.op = PROVIDER_CHAT;
	c.model = "echo-small";
	c.state = calloc(1, echo.state_size);
	/* No end: cut short (1), the caller tells the client. */
	got = run(&echo, &c, "data: {\"say\":\"a\"}\n\n", 5, 0);
	assert_string_equal(got, "chunk:a;finish=1");
	free(got);
	/* An event the provider did not understand fails the stream, once. */
	got = run(&echo, &c, "data: {\"what\":1}\n\ndata: {\"say\":\"b\"}\n\n",
	    64, 0);
	assert_string_equal(got, "fail:echo did not understand;finish=0");
	free(got);
	/* A sink that says stop stops the stream. */
	got = run(&echo, &c, "data: {\"say\":\"a\"}\n\ndata: {\"say\":\"b\"}\n\n",
	    64, 1);
	assert_string_equal(got, "chunk:a;finish=-1");
	free(got);
	provider_call_free(&c);
}

static void
test_openai_chunks_are_passed_on_as_they_came(void **state)
{
	struct provider_call c = { 0 };
	char		*got;

	(void)state;
	c.op = PROVIDER_CHAT;
	got = run(&provider_openai, &c,
	    "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"
	    "data: {\"choices\":[{\"delta\":\n"
	    "data: {\"content\":\"y\"}}]}\n\n"
	    "data: not json\n\n"
	    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
	    "\"completion_tokens\":2}}\n\n"
	    "data: [DONE]\n\n"
	    "data: {\"choices\":[{\"delta\":{\"content\":\"z\"}}]}\n\n", 9, 0);
	/* Two data lines joined are no longer the event as it came. */
	assert_string_equal(got, "as-it-came:x;chunk:y;raw:not json;"
	    "as-it-came;end;finish=0");
	free(got);
	assert_true(c.have_usage);
	assert_int_equal(c.prompt_tokens, 3);
	assert_int_equal(c.completion_tokens, 2);
	got = run(&provider_openai, &c, "data: {\"error\":{\"message\":"
	    "\"overloaded\"}}\n\n", 64, 0);
	assert_string_equal(got, "fail:overloaded;finish=0");
	free(got);
	/* OpenAI's stream ends only with [DONE]: the body's end is a cut. */
	got = run(&provider_openai, &c, "data: {\"choices\":[]}\n\n", 64, 0);
	assert_string_equal(got, "as-it-came;finish=1");
	free(got);
}

static void
test_openai_request_carries_the_limit_held(void **state)
{
	struct provider_call c = { 0 };
	struct json_object *req, *sent;
	char		 err[64];
	const char	*text = "{\"model\":\"m\",\"stream\":true,"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

	(void)state;
	req = unit_json(text);
	c.op = PROVIDER_CHAT;
	c.stream = true;
	c.base = "https://api.openai.com/v1";
	c.model = "gpt-4o-mini";
	c.request = req;
	c.max_tokens = 300;
	assert_int_equal(provider_openai.prepare(&c, err, sizeof(err)),
	    PROVIDER_OK);
	assert_string_equal(c.url.data,
	    "https://api.openai.com/v1/chat/completions");
	sent = unit_json(c.body.data);
	assert_string_equal(json_get_str(sent, "model"), "gpt-4o-mini");
	assert_true(json_object_get_int64(json_object_object_get(sent,
	    "max_completion_tokens")) == 300);
	assert_true(json_object_get_boolean(json_object_object_get(
	    json_object_object_get(sent, "stream_options"), "include_usage")));
	json_object_put(sent);
	/* OpenRouter and the upstreams know max_tokens. */
	assert_int_equal(provider_openrouter.prepare(&c, err, sizeof(err)),
	    PROVIDER_OK);
	assert_non_null(strstr(c.body.data, "\"max_tokens\":300"));
	/* A request's own limit wins; none held, none added. */
	json_object_object_add(req, "max_tokens", json_object_new_int64(5));
	assert_int_equal(provider_openai.prepare(&c, err, sizeof(err)),
	    PROVIDER_OK);
	assert_null(strstr(c.body.data, "max_completion_tokens"));
	json_object_object_del(req, "max_tokens");
	c.max_tokens = 0;
	assert_int_equal(provider_openai.prepare(&c, err, sizeof(err)),
	    PROVIDER_OK);
	assert_null(strstr(c.body.data, "max_"));
	provider_call_free(&c);
	json_object_put(req);
}

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

UNIT_MAIN(NULL,
    cmocka_unit_test(test_a_fake_provider_prepares_and_streams),
    cmocka_unit_test(test_a_stream_cut_short_or_failing_says_so),
    cmocka_unit_test(test_openai_chunks_are_passed_on_as_they_came),
    cmocka_unit_test(test_openai_request_carries_the_limit_held),
    cmocka_unit_test(test_the_table_names_routes_and_checks_keys))
