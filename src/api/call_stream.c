#include "autoconfig.h"

/*
 * A streamed call passed on to its client (api/call.h): the provider's
 * events, translated by its module, go out as the client's format's
 * events (OpenAI chunks, or Messages events); the chunk that says
 * finish_reason waits for the usage so that it can carry the keygate
 * block; a stream cut short ends with an error event.  What was passed
 * on is counted for the bill.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/call.h"
#include "lib/json.h"
#include "lib/sse.h"
#include "providers/providers.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/* Sends one SSE event (named, or not when event is NULL). */
static int
emit_named(struct call *c, const char *event, const char *data, size_t n)
{
	struct buf	 ev = { 0 };
	int		 rc = -1;

	if (sse_write(&ev, event, data, n) == 0)
		rc = http_stream_write(c->req, ev.data, ev.len);
	buf_free(&ev);
	return rc;
}

/* Sends one SSE event; a payload of several lines gets a data: each. */
static int
emit(struct call *c, const char *data, size_t n)
{
	return emit_named(c, NULL, data, n);
}

/* Sends a chunk object. */
static int
emit_json(struct call *c, struct json_object *o)
{
	size_t		 n;
	const char	*t = json_text(o, &n);

	return emit(c, t, n);
}

/* Sends a Messages event: its name (its "type") and its data. */
static int
emit_event(struct call *c, struct json_object *ev)
{
	const char	*type = json_get_str(ev, "type"), *t;
	size_t		 n;

	t = json_text(ev, &n);
	return emit_named(c, type != NULL ? type : "", t, n);
}

/* Sends the Messages events of an array (borrowed), in order. */
static int
emit_events(struct call *c, struct json_object *evs)
{
	size_t	 i;
	int	 rc = 0;

	for (i = 0; rc == 0 && i < json_object_array_length(evs); i++)
		rc = emit_event(c, json_object_array_get_idx(evs, i));
	return rc;
}

/*
 * Sends one chunk in the client's shape: for an OpenAI client text as it
 * came when given, else o's own; for a Messages client the events it
 * makes.
 */
static int
put_chunk(struct call *c, struct json_object *o, const char *text, size_t n)
{
	struct json_object *evs;
	long		 prompt, completion;
	int		 rc;

	if (!c->messages)
		return text != NULL ? emit(c, text, n) : emit_json(c, o);
	evs = json_object_new_array();
	call_tokens(c, &prompt, &completion);
	messages_stream_chunk(&c->ms, o, prompt, completion, evs);
	rc = emit_events(c, evs);
	json_object_put(evs);
	return rc;
}

/* The end of the stream in the client's shape: [DONE], or message_stop. */
static int
put_end(struct call *c)
{
	struct json_object *evs;
	int		 rc;

	c->done = true;
	if (!c->messages)
		return emit(c, "[DONE]", 6);
	evs = json_object_new_array();
	messages_stream_end(&c->ms, evs);
	rc = emit_events(c, evs);
	json_object_put(evs);
	return rc;
}

/* Sends o with the keygate block added to it (o is changed). */
static int
emit_with_keygate(struct call *c, struct json_object *o)
{
	json_object_object_add(o, "keygate", call_keygate_block(c));
	c->kg_sent = true;
	return put_chunk(c, o, NULL, 0);
}

/*
 * A stream's pieces are read, translated and passed on in the worker's
 * provider loop (lib/upstream.h), which never waits and never holds the
 * worker's lock: parsing, translating and passing on a chunk touch the
 * call's own state only.  What needs the worker (the settlement: the
 * database connection, the holds) waits for the call's own thread: from
 * the first event that settles on, the sink's calls are kept, in order,
 * and made there once the provider's reply has ended (which follows that
 * event at once: the usage, the end or an error closes a stream).
 */
enum later_kind { LATER_CHUNK, LATER_END, LATER_FAIL, LATER_NATIVE };

/*
 * Events kept at most: a stream ends right after what settles it; one
 * that goes on is cut there (what was kept is still made).
 */
#define LATER_MAX	64

struct later {
	enum later_kind	 kind;
	struct json_object *o;		/* the chunk, error or event (a ref) */
	struct json_object *chunks;	/* LATER_NATIVE's (a ref) */
	enum provider_step step;
	char		*raw;		/* the event as it came, or NULL */
	size_t		 len;
};

/* Keeps a sink call for the call's thread; 0, or -1 (out of memory). */
static int
defer(struct call *c, enum later_kind kind, struct json_object *o,
    const struct sse_event *raw, enum provider_step step,
    struct json_object *chunks)
{
	struct later	*l;

	if (c->nlater >= LATER_MAX)
		return -1;
	if (c->nlater % 8 == 0) {
		l = realloc(c->later, (c->nlater + 8) * sizeof(*l));
		if (l == NULL)
			return -1;
		c->later = l;
	}
	l = &c->later[c->nlater];
	memset(l, 0, sizeof(*l));
	if (raw != NULL) {
		if ((l->raw = malloc(raw->len + 1)) == NULL)
			return -1;
		memcpy(l->raw, raw->data, raw->len);
		l->raw[raw->len] = '\0';
		l->len = raw->len;
	}
	l->kind = kind;
	l->o = o != NULL ? json_object_get(o) : NULL;
	l->chunks = chunks != NULL ? json_object_get(chunks) : NULL;
	l->step = step;
	c->nlater++;
	c->deferring = true;
	return 0;
}

/* Settles on what the stream told, once: the translators keep usage. */
static void
settle_stream(struct call *c, const char *status)
{
	call_settle(c, c->pc.have_usage ? status : "partial");
}

/* A chunk of the stream's id, model and created (new); choice 0. */
static struct json_object *
shaped_chunk(struct call *c, struct json_object *delta, const char *finish)
{
	struct json_object *v;
	const char	*id = NULL, *model = NULL;
	long		 created = 0;

	if (c->shape != NULL) {
		id = json_get_str(c->shape, "id");
		model = json_get_str(c->shape, "model");
		if (json_get(c->shape, "created", &v))
			created = (long)json_object_get_int64(v);
	}
	return chat_chunk(id != NULL ? id : c->req->request_id,
	    model != NULL ? model : c->model, created, delta, finish);
}

/*
 * Sends the held finish chunk with the keygate block, after settling; a
 * stream that never said finish_reason gets one.  Then the usage chunk
 * (usage, or one made from what is known, when NULL) if the client asked
 * for it, with the block too.  Once each.
 */
static int
close_stream(struct call *c, struct json_object *usage)
{
	struct json_object *o;
	long		 prompt, completion;
	int		 rc = 0;

	settle_stream(c, "ok");
	if (!c->kg_sent) {
		o = c->held != NULL ? c->held :
		    shaped_chunk(c, json_object_new_object(), "stop");
		c->held = NULL;
		rc = emit_with_keygate(c, o);
		json_object_put(o);
	}
	if (rc == 0 && c->want_usage && !c->usage_sent) {
		if (usage != NULL)
			o = json_object_get(usage);
		else {
			call_tokens(c, &prompt, &completion);
			o = shaped_chunk(c, NULL, NULL);
			json_object_object_add(o, "usage", chat_usage(prompt,
			    completion));
		}
		c->usage_sent = true;
		rc = emit_with_keygate(c, o);
		json_object_put(o);
	}
	return rc;
}

/* The end of a stream that went well: the closing chunks, then [DONE]. */
static int
emit_done(struct call *c)
{
	int	 rc = close_stream(c, NULL);

	return rc == 0 ? put_end(c) : -1;
}

/* True when a choice of chunk o carries a finish_reason. */
static bool
has_finish(struct json_object *o)
{
	struct json_object *choices, *v;
	size_t	 i;

	if (!json_get(o, "choices", &choices) ||
	    !json_object_is_type(choices, json_type_array))
		return false;
	for (i = 0; i < json_object_array_length(choices); i++)
		if (json_get(json_object_array_get_idx(choices, i),
		    "finish_reason", &v))
			return true;
	return false;
}

/* True for the usage chunk: empty choices and a usage object. */
static bool
is_usage_chunk(struct json_object *o)
{
	struct json_object *choices, *u;

	return json_get(o, "choices", &choices) &&
	    json_object_is_type(choices, json_type_array) &&
	    json_object_array_length(choices) == 0 &&
	    json_get(o, "usage", &u) &&
	    json_object_is_type(u, json_type_object);
}

/*
 * The bytes of content a chunk carries: text, and the arguments of tool
 * calls.  What a stream cut short is billed on.
 */
static size_t
content_bytes(struct json_object *o)
{
	struct json_object *choices, *d, *v, *calls, *fn;
	const char	*t;
	size_t		 i, j, n = 0;

	if (!json_get(o, "choices", &choices) ||
	    !json_object_is_type(choices, json_type_array))
		return 0;
	for (i = 0; i < json_object_array_length(choices); i++) {
		if (!json_get(json_object_array_get_idx(choices, i), "delta",
		    &d))
			continue;
		if ((t = json_get_str(d, "content")) != NULL)
			n += strlen(t);
		if (!json_get(d, "tool_calls", &calls) ||
		    !json_object_is_type(calls, json_type_array))
			continue;
		for (j = 0; j < json_object_array_length(calls); j++)
			if (json_get(json_object_array_get_idx(calls, j),
			    "function", &fn) && json_get(fn, "arguments", &v) &&
			    json_object_is_type(v, json_type_string))
				n += (size_t)json_object_get_string_len(v);
	}
	return n;
}

/*
 * Passes one chunk (borrowed) to the client: text as it came when given,
 * else o's own.  A finish chunk is held for the keygate block, the usage
 * chunk settles the call and closes the stream's chunks, and any other
 * chunk lets an earlier finish (another choice's) go first, as it is.
 */
static int
send_chunk(struct call *c, struct json_object *o, const char *text, size_t n)
{
	struct json_object *prev = c->held;
	int		 rc = 0;

	if (json_get_str(o, "id") != NULL) {
		if (c->shape != NULL)
			json_object_put(c->shape);
		c->shape = json_object_get(o);
	}
	credits_bill_progress(&c->bill, content_bytes(o));
	if (is_usage_chunk(o))
		return close_stream(c, o);
	c->held = NULL;
	if (prev != NULL) {
		rc = put_chunk(c, prev, NULL, 0);
		json_object_put(prev);
	}
	if (rc == -1)
		return -1;
	if (has_finish(o) && !c->kg_sent) {
		c->held = json_object_get(o);
		return 0;
	}
	return put_chunk(c, o, text, n);
}

/*
 * Ends the stream with an error event (o, an {"error":{...}} object,
 * changed) carrying the keygate block, then [DONE]: a finish chunk held
 * goes first, as it is.
 */
static int
fail_stream(struct call *c, struct json_object *o)
{
	struct json_object *prev = c->held;
	int		 rc = 0;

	c->held = NULL;
	if (prev != NULL) {
		rc = put_chunk(c, prev, NULL, 0);
		json_object_put(prev);
	}
	settle_stream(c, "partial");
	if (rc == 0 && c->messages) {
		/* Anthropic's error event: {"type":"error","error":{...}}. */
		struct json_object *ev = json_object_new_object(), *e, *v = NULL;

		json_object_object_add(ev, "type", json_str("error"));
		e = json_object_new_object();
		json_object_object_add(e, "type", json_str(json_get(o, "error",
		    &v) && json_get_str(v, "type") != NULL ?
		    json_get_str(v, "type") : "api_error"));
		json_object_object_add(e, "message", json_str(v != NULL &&
		    json_get_str(v, "message") != NULL ?
		    json_get_str(v, "message") : "the provider failed"));
		json_object_object_add(ev, "error", e);
		json_object_object_add(ev, "keygate", call_keygate_block(c));
		c->kg_sent = true;
		rc = emit_event(c, ev);
		json_object_put(ev);
		c->done = true;
		return rc;
	}
	if (rc == 0) {
		json_object_object_add(o, "keygate", call_keygate_block(c));
		c->kg_sent = true;
		rc = emit_json(c, o);
	}
	c->done = true;
	return rc == 0 ? emit(c, "[DONE]", 6) : -1;
}

/* Sends a mid-stream error event, then closes the stream properly. */
static int
emit_error(struct call *c, const char *message, const char *code)
{
	struct json_object *o = json_object_new_object(), *e;
	int		 rc;

	e = json_object_new_object();
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_object_add(e, "type",
	    json_object_new_string("upstream_error"));
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(o, "error", e);
	rc = fail_stream(c, o);
	json_object_put(o);
	return rc;
}

/*
 * One event of a Messages stream from a provider that speaks it, for a
 * Messages client: passed on as it came, what it carried counted; the
 * event with the final usage settles the call and carries the keygate
 * block, as does an error.
 */
static int
pass_native(void *arg, struct json_object *ev, enum provider_step step,
    struct json_object *chunks)
{
	struct call	*c = arg;
	size_t		 i;
	int	 rc;

	for (i = 0; i < json_object_array_length(chunks); i++)
		credits_bill_progress(&c->bill, content_bytes(
		    json_object_array_get_idx(chunks, i)));
	if ((step == PROVIDER_ERROR || c->pc.usage_final) && !c->kg_sent) {
		settle_stream(c, step == PROVIDER_ERROR ? "partial" : "ok");
		json_object_object_add(ev, "keygate", call_keygate_block(c));
		c->kg_sent = true;
	}
	rc = emit_event(c, ev);
	if (step != PROVIDER_MORE)
		c->done = true;
	return rc;
}

/* A chunk of the provider's stream (see struct provider_sink). */
static int
on_chunk(void *arg, struct json_object *o, const struct sse_event *raw)
{
	struct call	*c = arg;

	if (c->in_loop && (c->deferring || (o != NULL && is_usage_chunk(o))))
		return defer(c, LATER_CHUNK, o, raw, PROVIDER_MORE, NULL);
	if (o == NULL)
		return emit(c, raw->data, raw->len);	/* not ours to judge */
	return send_chunk(c, o, raw != NULL ? raw->data : NULL,
	    raw != NULL ? raw->len : 0);
}

static int
on_end(void *arg)
{
	struct call	*c = arg;

	if (c->in_loop)
		return defer(c, LATER_END, NULL, NULL, PROVIDER_END, NULL);
	return emit_done(c);
}

static int
on_fail(void *arg, struct json_object *err)
{
	struct call	*c = arg;

	if (c->in_loop)
		return defer(c, LATER_FAIL, err, NULL, PROVIDER_ERROR, NULL);
	return fail_stream(c, err);
}

static int
on_native(void *arg, struct json_object *ev, enum provider_step step,
    struct json_object *chunks)
{
	struct call	*c = arg;

	if (c->in_loop && (c->deferring || ((step == PROVIDER_ERROR ||
	    c->pc.usage_final) && !c->kg_sent)))
		return defer(c, LATER_NATIVE, ev, NULL, step, chunks);
	return pass_native(c, ev, step, chunks);
}

static const struct provider_sink sink = {
	.chunk = on_chunk,
	.end = on_end,
	.fail = on_fail,
	.native = on_native,
};

/*
 * Makes the sink calls kept while the stream ran in the loop, in order,
 * until one fails; frees them all.  With the worker's lock.
 */
static void
run_later(struct call *c)
{
	struct later	*l;
	size_t		 i;
	int		 rc = 0;

	for (i = 0; i < c->nlater; i++) {
		l = &c->later[i];
		if (rc == 0) {
			switch (l->kind) {
			case LATER_CHUNK:
				if (l->o == NULL)
					rc = emit(c, l->raw, l->len);
				else
					rc = send_chunk(c, l->o, l->raw,
					    l->len);
				break;
			case LATER_END:
				rc = emit_done(c);
				break;
			case LATER_FAIL:
				rc = fail_stream(c, l->o);
				break;
			case LATER_NATIVE:
				rc = pass_native(c, l->o, l->step, l->chunks);
				break;
			}
		}
		if (l->o != NULL)
			json_object_put(l->o);
		if (l->chunks != NULL)
			json_object_put(l->chunks);
		free(l->raw);
	}
	free(c->later);
	c->later = NULL;
	c->nlater = 0;
	c->deferring = false;
}

/* The stream's parser, feeding this file's sink. */
void
call_stream_init(struct call *c)
{
	messages_stream_init(&c->ms, c->pc.prompt_estimate);
	provider_stream_init(&c->ps, c->prov, &c->pc, &sink, c, MAX_EVENT);
}

/* A piece of the provider's reply, in the loop. */
static int
piece(struct call *c, long status, const char *p, size_t n)
{
	c->status = status;
	if (status != 200) {
		if (c->errbody.len + n > 65536)
			return 0;
		return buf_append(&c->errbody, p, n) == 0 ? 0 : -1;
	}
	if (!c->started) {
		call_keygate_headers(c, false);
		if (http_stream_begin(c->req, 200, "text/event-stream") == -1)
			return -1;
		c->started = true;
	}
	if (provider_stream_feed(&c->ps, p, n) != 0)
		return -1;
	return c->req->client_gone ? -1 : 0;
}

static int
on_stream_data(void *arg, long status, const char *p, size_t n)
{
	struct call	*c = arg;
	int		 rc = piece(c, status, p, n);

	if (rc != 0)
		return rc;
	/* The end was told: what comes after is not read. */
	if (c->ps.over)
		rc |= UPSTREAM_FINISHED;
	if (request_backlog(c->req))
		rc |= UPSTREAM_BACKLOG;
	return rc;
}

/* The loop asks: what the client could not take yet, sent now? */
static int
on_drain(void *arg)
{
	struct call	*c = arg;

	return request_drain(c->req);
}

void
call_respond_stream(struct call *c, struct upstream_call *call)
{
	enum upstream_result r;
	char		 err[160], msg[256];
	long		 status;

	if (request_loop_begin(c->req) == -1) {
		c->req->client_gone = true;
		return;
	}
	call->drain = on_drain;
	call->out_fd = request_fd(c->req);
	c->in_loop = true;
	r = upstream_stream(call, on_stream_data, c, &status, err, sizeof(err));
	c->in_loop = false;
	request_loop_end(c->req);
	run_later(c);
	/* Left before the first event: the prompt, as for a whole call. */
	if (!c->started && r == UPSTREAM_ABORTED && c->req->client_gone &&
	    call->sent)
		call_settle(c, "partial");
	if (!c->started) {
		if (r == UPSTREAM_OK && status != 200)
			call_provider_error(c, status, &c->errbody, call);
		else if (r == UPSTREAM_OK)
			http_error(c->req, ERR_UPSTREAM, "%s ended the stream "
			    "before sending anything.",
			    gateway_provider_name(&c->key));
		else if (r != UPSTREAM_ABORTED || c->req->client_gone)
			call_transport_error(c, r, err);
		else
			http_error(c->req, ERR_UPSTREAM, "The stream could not "
			    "be started.");
		return;
	}
	if (c->done || c->req->client_gone)
		return;
	/* A format without a terminator: the end of the body may be the end. */
	if (provider_stream_finish(&c->ps, r == UPSTREAM_OK) != 1)
		return;
	/* Cut short: say so in the stream, then close it properly. */
	snprintf(msg, sizeof(msg), "%s %s", gateway_provider_name(&c->key),
	    r == UPSTREAM_TIMEOUT ? "stopped answering" :
	    "ended the stream early");
	(void)emit_error(c, msg, r == UPSTREAM_TIMEOUT ? "upstream_timeout" :
	    "upstream_error");
}
