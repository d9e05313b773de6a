/*
 * Unit tests for src/providers/stream.c: a provider added in a few lines
 * (a fake one, "echo", whose stream events are {"say":text} and
 * {"bye":n}) driven through the same stream path the gateway uses, and
 * OpenAI's chunks passed on as they came.
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

/* A native call's event: its step (0 more, 1 end, 2 error) is heard. */
static int
heard_native(void *arg, struct json_object *ev, enum provider_step step,
    struct json_object *chunks)
{
	char	 what[16];

	(void)ev;
	(void)chunks;
	snprintf(what, sizeof(what), "native:%d", (int)step);
	return note(arg, what, NULL);
}

static const struct provider_sink sink = {
	.chunk = heard_chunk,
	.end = heard_end,
	.fail = heard_fail,
	.native = heard_native,
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
/* A format with no end event: the body's end closes it, when whole. */
static bool
echo_body_end(struct provider_call *c, struct json_object *out)
{
	struct json_object *v;

	if (*(int *)c->state == 0)
		return false;		/* nothing said: cut short */
	v = json_object_new_object();
	json_object_object_add(v, "content", json_str("."));
	json_object_array_add(out, chat_chunk("echo-1", c->model, 1, v,
	    "stop"));
	return true;
}

static const struct provider_module echo_tail = {
	.name = "echo-tail",
	.state_size = sizeof(int),
	.prepare = echo_prepare,
	.event = echo_event,
	.body_end = echo_body_end,
};

static void
test_a_format_without_an_end_event(void **state)
{
	struct provider_call c = { 0 };
	struct provider_stream s;
	struct heard	 h = { { 0 }, 0, 0 };
	const char	*say = "data: {\"say\":\"a\"}\n\n";
	char		*got;

	(void)state;
	c.op = PROVIDER_CHAT;
	c.model = "echo-small";
	c.state = calloc(1, echo_tail.state_size);
	got = run(&echo_tail, &c, say, 5, 0);
	assert_string_equal(got, "chunk:a;chunk:.;end;finish=0");
	free(got);
	/* The sink may stop at the closing chunks: no end then. */
	got = run(&echo_tail, &c, say, 64, 2);
	assert_string_equal(got, "chunk:a;chunk:.;finish=-1");
	free(got);
	/* An end event came: the body's end adds nothing. */
	got = run(&echo_tail, &c, "data: {\"bye\":1}\n\n", 64, 0);
	assert_string_equal(got, "end;finish=0");
	free(got);
	/* The format says the body was cut short. */
	*(int *)c.state = 0;
	got = run(&echo_tail, &c, ": only a comment\n\n", 64, 0);
	assert_string_equal(got, "finish=1");
	free(got);
	/* A transfer that failed is cut short, whatever the format says. */
	provider_stream_init(&s, &echo_tail, &c, &sink, &h, 1 << 16);
	assert_int_equal(provider_stream_feed(&s, say, strlen(say)), 0);
	assert_int_equal(provider_stream_finish(&s, false), 1);
	assert_string_equal(h.log.data, "chunk:a;");
	provider_stream_free(&s);
	buf_free(&h.log);
	provider_call_free(&c);
}

/* One event that came to a chunk and then an error. */
static enum provider_step
half_event(struct provider_call *c, struct json_object *ev,
    struct json_object *out)
{
	struct json_object *v = json_object_new_object();

	(void)ev;
	json_object_object_add(v, "content", json_str("half"));
	json_object_array_add(out, chat_chunk("h-1", c->model, 1, v, NULL));
	return provider_stream_error(out, "went away", "upstream_error");
}

static const struct provider_module half = {
	.name = "half",
	.prepare = echo_prepare,
	.event = half_event,
};

/* The chunks before an error are heard, then the failure, once. */
static void
test_chunks_then_an_error(void **state)
{
	struct provider_call c = { 0 };
	char		*got;

	(void)state;
	c.op = PROVIDER_CHAT;
	c.model = "m";
	got = run(&half, &c, "data: {}\n\ndata: {}\n\n", 3, 0);
	assert_string_equal(got, "chunk:half;fail:went away;finish=0");
	free(got);
	/* A sink that stops at the chunk hears no failure. */
	got = run(&half, &c, "data: {}\n\n", 64, 1);
	assert_string_equal(got, "chunk:half;finish=-1");
	free(got);
}

/*
 * A native call's events go to the sink's native operation with their
 * step, and nothing is read after the end or an error.
 */
static void
test_a_native_call(void **state)
{
	struct provider_call c = { 0 };
	char		*got;

	(void)state;
	c.op = PROVIDER_NATIVE;
	c.model = "echo-small";
	c.state = calloc(1, echo.state_size);
	got = run(&echo, &c, "data: {\"say\":\"a\"}\n\n"
	    "data: {\"say\":\"b\"}\n\ndata: {\"bye\":2}\n\n"
	    "data: {\"say\":\"c\"}\n\n", 7, 0);
	assert_string_equal(got, "native:0;native:0;native:1;finish=0");
	free(got);
	assert_int_equal(*(int *)c.state, 2);
	assert_int_equal(c.completion_tokens, 2);
	got = run(&echo, &c, "data: {\"what\":1}\n\ndata: {\"say\":\"d\"}\n\n",
	    64, 0);
	assert_string_equal(got, "native:2;finish=0");
	free(got);
	/* Cut short: the caller says so. */
	got = run(&echo, &c, "data: {\"say\":\"e\"}\n\n", 64, 0);
	assert_string_equal(got, "native:0;finish=1");
	free(got);
	provider_call_free(&c);
}

/*
 * [DONE] ends any stream; an event that is not JSON is skipped by a
 * provider with a format of its own; one longer than max stops the feed.
 */
static void
test_done_not_json_and_too_long(void **state)
{
	struct provider_call c = { 0 };
	struct provider_stream s;
	struct heard	 h = { { 0 }, 0, 0 };
	const char	*big = "data: {\"say\":\"0123456789abcdef\"}\n\n";
	char		*got;

	(void)state;
	c.op = PROVIDER_CHAT;
	c.model = "echo-small";
	c.state = calloc(1, echo.state_size);
	got = run(&echo, &c, "data: [DONE]\n\ndata: {\"say\":\"x\"}\n\n",
	    64, 0);
	assert_string_equal(got, "end;finish=0");
	free(got);
	got = run(&echo, &c, "data: not json\n\ndata: {\"bye\":0}\n\n", 4, 0);
	assert_string_equal(got, "end;finish=0");
	free(got);
	provider_stream_init(&s, &echo, &c, &sink, &h, 16);
	assert_int_equal(provider_stream_feed(&s, big, strlen(big)), -2);
	assert_null(h.log.data);
	provider_stream_free(&s);
	provider_call_free(&c);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_a_fake_provider_prepares_and_streams),
    cmocka_unit_test(test_a_stream_cut_short_or_failing_says_so),
    cmocka_unit_test(test_openai_chunks_are_passed_on_as_they_came),
    cmocka_unit_test(test_a_format_without_an_end_event),
    cmocka_unit_test(test_chunks_then_an_error),
    cmocka_unit_test(test_a_native_call),
    cmocka_unit_test(test_done_not_json_and_too_long))
