/*
 * The gateway, for POST /v1/chat/completions here and for
 * api/messages.c and api/embeddings.c: route the model, pick the key by
 * priority, hold credits, call the provider, and answer in the client's
 * shape (OpenAI's, or Anthropic's Messages) with a "keygate" block,
 * streamed or not.  A Messages request goes to Anthropic as it came; to
 * any other provider it is an OpenAI request, whose reply and chunks are
 * turned back into Messages shapes.  Embeddings go to OpenAI and
 * OpenRouter as sent, to Gemini translated.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/leases.h"
#include "api/metrics.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/gateway.h"
#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "lib/json.h"
#include "lib/sse.h"
#include "lib/upstream.h"
#include "providers/messages.h"
#include "providers/provider.h"
#include "providers/providers.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

/* Provider replies kept in memory at most (non-streaming). */
#define MAX_REPLY	(8 << 20)
/* s a hold outlives the longest call: its deadline's margin. */
#define HOLD_MARGIN	60
/* Bytes of one SSE event we hold while waiting for its end. */
#define MAX_EVENT	(1 << 20)

/* Body fields that would send the call elsewhere or add headers. */
static const char *const forbidden[] = {
	"api_base", "base_url", "api_key", "headers", "extra_headers",
	"api_version", "organization", NULL,
};

struct chat {
	struct request	*req;
	struct gateway_key key;
	bool		 stream;
	bool		 want_usage;	/* the client asked for the usage chunk */
	bool		 started;	/* stream headers sent */
	bool		 done;		/* [DONE] sent */
	long		 status;
	struct provider_stream ps;	/* the provider's stream */
	struct buf	 errbody;	/* a non-200 streamed reply */
	const struct provider_module *prov;
	struct provider_call pc;	/* the request out, the usage told */
	/* Credits: what is held, and what the call used. */
	struct hold	 hold;		/* the credits held for the call */
	struct credit_price price;
	double		 markup;
	long		 max_out;	/* output tokens held */
	size_t		 delivered;	/* bytes of content sent on */
	long long	 charged;	/* micro-credits */
	const char	*model;		/* the client's model name */
	/*
	 * The keygate block rides on the chunk that carries finish_reason,
	 * and credits_charged is known only once usage arrives: that chunk
	 * waits here until then (or until the stream ends).
	 */
	struct json_object *held;	/* a finish chunk, NULL = none */
	struct json_object *shape;	/* the last chunk (id, model, created) */
	bool		 kg_sent;	/* the keygate block went out */
	bool		 usage_sent;	/* the usage chunk went out */
	/* A Messages client (POST /v1/messages). */
	bool		 messages;	/* answers in Messages shapes */
	bool		 native;	/* to Anthropic, passed through */
	struct messages_stream ms;	/* chunks into Messages events */
	bool		 embed;		/* POST /v1/embeddings */
	struct json_object *body;	/* the request, borrowed */
};

/*
 * Turns the reservation into the real cost and writes the usage row; what
 * the provider did not report is estimated (prompt from the body, output
 * from the bytes passed on).  Once.
 */
static void
settle(struct chat *c, const char *status)
{
	struct credits_usage u;
	long		 prompt, completion;

	if (!hold_taken(&c->hold))
		return;
	prompt = c->pc.have_usage ? c->pc.prompt_tokens : c->pc.prompt_estimate;
	completion = c->pc.have_usage ? c->pc.completion_tokens :
	    (long)(c->delivered + 3) / 4;
	/*
	 * A stream cut short: the provider's count stops at what it last
	 * told, while the text sent on says what was produced (about four
	 * bytes a token).
	 */
	if (strcmp(status, "partial") == 0 &&
	    completion < (long)(c->delivered + 3) / 4)
		completion = (long)(c->delivered + 3) / 4;
	memset(&u, 0, sizeof(u));
	u.tenant = c->req->principal->tenant_id;
	u.key_id = c->req->principal->key_id[0] ? c->req->principal->key_id :
	    NULL;
	u.request_id = c->req->request_id;
	u.provider = gateway_provider_name(&c->key);
	u.model = c->model;
	u.pool = c->key.pool;
	u.markup = c->markup;
	u.prompt_tokens = prompt;
	u.completion_tokens = completion;
	u.status = status;
	hold_finish(c->req->w, &c->hold, credits_cost(&c->price, prompt,
	    completion, c->markup), &u, &c->charged);
}

/* Lets the hold go: the call produced nothing. */
static void
release(struct chat *c)
{
	hold_drop(c->req->w, &c->hold);
}

static struct json_object *
keygate_block(const struct chat *c)
{
	const struct worker *w = c->req->w;
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "key_source",
	    json_object_new_string(c->key.pool ? "pool" : "user"));
	/* An operator upstream is the operator's too, but never marked up. */
	json_object_object_add(o, "pool_markup_applied",
	    c->key.pool && c->key.upstream == NULL ?
	    json_object_new_double(w->cfg->pool_markup) : NULL);
	json_object_object_add(o, "provider",
	    json_object_new_string(gateway_provider_name(&c->key)));
	json_object_object_add(o, "credits_charged",
	    credits_json(c->charged));
	json_object_object_add(o, "request_id",
	    json_object_new_string(c->req->request_id));
	return o;
}

/*
 * The keygate block as X-Keygate-* headers, for clients that cannot read
 * a member of their own; credits_charged only when known (not on a stream,
 * whose headers go first).
 */
static void
keygate_headers(struct chat *c, bool charged)
{
	struct request	*req = c->req;
	char		 n[24];
	int		 rc;

	rc = http_header(req, "X-Keygate-Key-Source", "%s",
	    c->key.pool ? "pool" : "user");
	if (rc == 0)
		rc = http_header(req, "X-Keygate-Provider", "%s",
		    gateway_provider_name(&c->key));
	if (rc == 0 && c->key.pool && c->key.upstream == NULL)
		rc = http_header(req, "X-Keygate-Pool-Markup-Applied", "%g",
		    req->w->cfg->pool_markup);
	if (rc == 0 && charged) {
		credits_format(c->charged, n, sizeof(n));
		rc = http_header(req, "X-Keygate-Credits-Charged", "%s", n);
	}
	if (rc == -1)
		log_error("http_header: adding the X-Keygate headers: out of "
		    "memory");
}

int
api_gateway_forbidden(struct request *req, struct json_object *body)
{
	size_t	 i;

	for (i = 0; forbidden[i] != NULL; i++)
		if (json_object_object_get_ex(body, forbidden[i], NULL)) {
			http_error(req, ERR_FORBIDDEN_FIELD, "The field %s is "
			    "not accepted: keygate chooses where requests go.",
			    forbidden[i]);
			return -1;
		}
	return 0;
}

const char *
api_gateway_model(struct checks *ck, struct json_object *body)
{
	struct json_object *v;
	const char	*model;
	bool		 present;

	if (!json_object_object_get_ex(body, "model", &v) || v == NULL) {
		check_fail(ck, "model", "required: a model name");
		return NULL;
	}
	if ((model = check_string(ck, body, "model", 256, &present)) != NULL &&
	    *model == '\0') {
		check_fail(ck, "model", "must not be empty");
		return NULL;
	}
	return model;
}

void
api_gateway_turns(struct checks *ck, struct json_object *body)
{
	struct json_object *msgs;

	struct json_object *stream;

	if (!json_object_object_get_ex(body, "messages", &msgs) ||
	    !json_object_is_type(msgs, json_type_array) ||
	    json_object_array_length(msgs) == 0)
		check_fail(ck, "messages", "required: a non-empty array");
	/*
	 * A provider takes 1 or "yes" for a stream; keygate would then wait
	 * for one JSON reply that never comes, so only a boolean will do.
	 */
	if (json_object_object_get_ex(body, "stream", &stream) &&
	    stream != NULL && !json_object_is_type(stream, json_type_boolean))
		check_fail(ck, "stream", "must be true or false");
}

int
api_gateway_inline_keys(struct request *req)
{
	const char	*v;
	int		 i;

	for (i = 0; i < PROVIDER__MAX; i++) {
		v = request_param(req, providers[i]->inline_param);
		if (v == NULL || *v == '\0' ||
		    provider_key_format_ok((enum provider)i, v))
			continue;
		http_error(req, ERR_INVALID_PROVIDER_KEY, "Invalid %s key "
		    "format in %s: expected %s.", providers[i]->name,
		    providers[i]->inline_header, providers[i]->key_format);
		return -1;
	}
	return 0;
}

/*
 * The error type a client of the OpenAI format expects for a status, when
 * the provider named none (Gemini, OpenRouter).
 */
static const char *
type_of_status(long status)
{
	switch (status) {
	case 400:
	case 404:
	case 413:
	case 422:
		return "invalid_request_error";
	case 401:
		return "authentication_error";
	case 402:
		return "billing_error";
	case 403:
		return "permission_error";
	case 429:
		return "rate_limit_error";
	default:
		return "upstream_error";
	}
}

/* The Retry-After a provider's 429 asked for, passed on in seconds. */
static void
pass_retry_after(struct request *req, const struct upstream_call *call)
{
	long	 secs = upstream_retry_seconds(call);
	size_t	 n = strlen(call->retry_after);
	int	 rc = 0;

	if (secs >= 0)
		rc = http_header(req, "Retry-After", "%ld", secs);
	/* An HTTP-date means the same to our client: as it came. */
	else if (n > 3 && strcmp(call->retry_after + n - 3, "GMT") == 0)
		rc = http_header(req, "Retry-After", "%s", call->retry_after);
	if (rc == -1)
		log_error("http_header: adding Retry-After: out of memory");
}

/*
 * Answers a provider's non-2xx reply in our shape.  A 4xx keeps its status,
 * message, and the provider's own error type and code where it gave them
 * (the generic ones otherwise); 3xx and 5xx are 502.  A 401 is the
 * provider refusing the provider key: its code says so, so that a client
 * does not take it for its own keygate key being refused.
 */
static void
provider_error(struct chat *c, long status, const struct buf *body,
    const struct upstream_call *call)
{
	struct request	*req = c->req;
	struct provider_error pe;

	provider_error_parse(body, status, &pe);
	/*
	 * On the operator's pool key the provider speaks of the operator's
	 * account (its credit, its limits): the tenant hears the status
	 * only, keygate's log the message, unless it is a refusal of the
	 * key, which may quote part of it.  The operator's own upstreams
	 * speak of the request only.
	 */
	if (c->key.pool) {
		if (status == 401 || status == 403)
			snprintf(pe.message, sizeof(pe.message), "the "
			    "operator's key was refused (%ld)", status);
		else if (c->key.upstream == NULL) {
			log_warn("%s: a pool call answered %ld: %s",
			    gateway_provider_name(&c->key), status, pe.message);
			snprintf(pe.message, sizeof(pe.message), "the request "
			    "failed (%ld)", status);
			pe.type[0] = pe.code[0] = '\0';
		}
	}
	if (status >= 400 && status < 500) {
		if (status == 429)
			pass_retry_after(req, call);
		http_error_as(req, (int)status, pe.type[0] != '\0' ? pe.type :
		    type_of_status(status), status == 401 ?
		    "invalid_provider_key" : pe.code[0] != '\0' ? pe.code :
		    status == 429 ? "rate_limit_exceeded" : "upstream_error",
		    "%s: %s", gateway_provider_name(&c->key), pe.message);
	} else if (status >= 300 && status < 400)
		http_error(req, ERR_UPSTREAM, "%s answered with a redirect, "
		    "which is not followed.", gateway_provider_name(&c->key));
	else {
		/* An overloaded provider (503, Anthropic's 529) may say when. */
		pass_retry_after(req, call);
		http_error(req, ERR_UPSTREAM, "%s failed: %s",
		    gateway_provider_name(&c->key), pe.message);
	}
}

/*
 * Asked by the upstream call: has the client gone?  Then the call ends at
 * once, whether it streams or not.
 */
static int
client_left(void *arg)
{
	struct chat	*c = arg;

	if (!c->req->client_gone && request_abandoned(c->req))
		c->req->client_gone = true;
	return c->req->client_gone;
}

static void
transport_error(struct chat *c, enum upstream_result r, const char *why)
{
	if (r == UPSTREAM_ABORTED && c->req->client_gone)
		http_abandoned(c->req);
	else if (r == UPSTREAM_TIMEOUT)
		http_error(c->req, ERR_UPSTREAM_TIMEOUT, "%s did not answer in "
		    "time.", gateway_provider_name(&c->key));
	else
		http_error(c->req, ERR_UPSTREAM, "%s could not be reached: %s",
		    gateway_provider_name(&c->key), why);
}

/* Settles the call and answers reply (taken) with the keygate block. */
static void
answer_whole(struct chat *c, struct json_object *reply)
{
	settle(c, "ok");
	json_object_object_add(reply, "keygate", keygate_block(c));
	keygate_headers(c, true);
	http_respond_json(c->req, 200, reply);
}

static void
respond_whole(struct chat *c, struct upstream_call *call)
{
	struct buf	 reply = { 0 };
	struct json_object *o;
	enum json_parse_error why;
	enum upstream_result r;
	char		 err[160];
	long		 status;

	r = upstream_perform(call, &status, &reply, err, sizeof(err));
	/*
	 * The client left while the provider worked on what it was sent:
	 * the provider bills the prompt at least, and so is the tenant (what
	 * it would have answered is not known).
	 */
	if (r == UPSTREAM_ABORTED && c->req->client_gone && call->sent)
		settle(c, "partial");
	if (r != UPSTREAM_OK)
		transport_error(c, r, err);
	else if (status < 200 || status >= 300)
		provider_error(c, status, &reply, call);
	else if ((o = json_parse(reply.data ? reply.data : "", reply.len, &why,
	    err, sizeof(err))) == NULL ||
	    !json_object_is_type(o, json_type_object)) {
		if (o != NULL)
			json_object_put(o);
		http_error(c->req, ERR_UPSTREAM, "%s sent a reply that is not "
		    "a JSON object.", gateway_provider_name(&c->key));
	} else {
		struct json_object *t = c->prov->reply(&c->pc, o, err,
		    sizeof(err));

		json_object_put(o);
		if (t == NULL)
			http_error(c->req, ERR_UPSTREAM, "%s.", err);
		else {
			if (c->messages && !c->native) {
				o = messages_from_chat(t);
				json_object_put(t);
				t = o;
			}
			answer_whole(c, t);
		}
	}
	/* Any answer but the one above charged nothing. */
	release(c);
	buf_free(&reply);
}

/* Sends one SSE event; a payload of several lines gets a data: each. */
static int
emit(struct chat *c, const char *data, size_t n)
{
	struct buf	 ev = { 0 };
	const char	*line = data, *nl;
	int		 rc;

	do {
		nl = memchr(line, '\n', (size_t)(data + n - line));
		if (nl == NULL)
			nl = data + n;
		if (buf_puts(&ev, "data: ") == -1 ||
		    buf_append(&ev, line, (size_t)(nl - line)) == -1 ||
		    buf_puts(&ev, "\n") == -1) {
			buf_free(&ev);
			return -1;
		}
		line = nl + 1;
	} while (line < data + n);
	if (buf_puts(&ev, "\n") == -1) {
		buf_free(&ev);
		return -1;
	}
	rc = http_stream_write(c->req, ev.data, ev.len);
	buf_free(&ev);
	return rc;
}

/* Sends a chunk object. */
static int
emit_json(struct chat *c, struct json_object *o)
{
	size_t		 n;
	const char	*t = json_text(o, &n);

	return emit(c, t, n);
}

/* Sends a Messages event: its name (its "type") and its data. */
static int
emit_event(struct chat *c, struct json_object *ev)
{
	struct buf	 b = { 0 };
	const char	*type = json_get_str(ev, "type"), *t;
	size_t		 n;
	int		 rc = -1;

	t = json_text(ev, &n);
	if (buf_printf(&b, "event: %s\ndata: ", type != NULL ? type : "") == 0 &&
	    buf_append(&b, t, n) == 0 && buf_puts(&b, "\n\n") == 0)
		rc = http_stream_write(c->req, b.data, b.len);
	buf_free(&b);
	return rc;
}

/* Sends the Messages events of an array (borrowed), in order. */
static int
emit_events(struct chat *c, struct json_object *evs)
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
put_chunk(struct chat *c, struct json_object *o, const char *text, size_t n)
{
	struct json_object *evs;
	int		 rc;

	if (!c->messages)
		return text != NULL ? emit(c, text, n) : emit_json(c, o);
	evs = json_object_new_array();
	messages_stream_chunk(&c->ms, o, c->pc.have_usage ?
	    c->pc.prompt_tokens : c->pc.prompt_estimate, c->pc.have_usage ?
	    c->pc.completion_tokens : (long)(c->delivered + 3) / 4, evs);
	rc = emit_events(c, evs);
	json_object_put(evs);
	return rc;
}

/* The end of the stream in the client's shape: [DONE], or message_stop. */
static int
put_end(struct chat *c)
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
emit_with_keygate(struct chat *c, struct json_object *o)
{
	json_object_object_add(o, "keygate", keygate_block(c));
	c->kg_sent = true;
	return put_chunk(c, o, NULL, 0);
}

/* Settles on what the stream told, once: the translators keep usage. */
static void
settle_stream(struct chat *c, const char *status)
{
	settle(c, c->pc.have_usage ? status : "partial");
}

/* A chunk of the stream's id, model and created (new); choice 0. */
static struct json_object *
shaped_chunk(struct chat *c, struct json_object *delta, const char *finish)
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
close_stream(struct chat *c, struct json_object *usage)
{
	struct json_object *o;
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
			o = shaped_chunk(c, NULL, NULL);
			json_object_object_add(o, "usage", chat_usage(
			    c->pc.have_usage ? c->pc.prompt_tokens :
			    c->pc.prompt_estimate, c->pc.have_usage ?
			    c->pc.completion_tokens :
			    (long)(c->delivered + 3) / 4));
		}
		c->usage_sent = true;
		rc = emit_with_keygate(c, o);
		json_object_put(o);
	}
	return rc;
}

/* The end of a stream that went well: the closing chunks, then [DONE]. */
static int
emit_done(struct chat *c)
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
send_chunk(struct chat *c, struct json_object *o, const char *text, size_t n)
{
	struct json_object *prev = c->held;
	int		 rc = 0;

	if (json_get_str(o, "id") != NULL) {
		if (c->shape != NULL)
			json_object_put(c->shape);
		c->shape = json_object_get(o);
	}
	c->delivered += content_bytes(o);
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
fail_stream(struct chat *c, struct json_object *o)
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
		json_object_object_add(ev, "keygate", keygate_block(c));
		c->kg_sent = true;
		rc = emit_event(c, ev);
		json_object_put(ev);
		c->done = true;
		return rc;
	}
	if (rc == 0) {
		json_object_object_add(o, "keygate", keygate_block(c));
		c->kg_sent = true;
		rc = emit_json(c, o);
	}
	c->done = true;
	return rc == 0 ? emit(c, "[DONE]", 6) : -1;
}

/* Sends a mid-stream error event, then closes the stream properly. */
static int
emit_error(struct chat *c, const char *message, const char *code)
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
	struct chat	*c = arg;
	size_t		 i;
	int	 rc;

	for (i = 0; i < json_object_array_length(chunks); i++)
		c->delivered += content_bytes(json_object_array_get_idx(chunks,
		    i));
	if ((step == PROVIDER_ERROR || c->pc.usage_final) && !c->kg_sent) {
		settle_stream(c, step == PROVIDER_ERROR ? "partial" : "ok");
		json_object_object_add(ev, "keygate", keygate_block(c));
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
	struct chat	*c = arg;

	if (o == NULL)
		return emit(c, raw->data, raw->len);	/* not ours to judge */
	return send_chunk(c, o, raw != NULL ? raw->data : NULL,
	    raw != NULL ? raw->len : 0);
}

static int
on_end(void *arg)
{
	return emit_done(arg);
}

static int
on_fail(void *arg, struct json_object *err)
{
	return fail_stream(arg, err);
}

static const struct provider_sink sink = {
	.chunk = on_chunk,
	.end = on_end,
	.fail = on_fail,
	.native = pass_native,
};

static int
on_stream_data(void *arg, long status, const char *p, size_t n)
{
	struct chat	*c = arg;

	c->status = status;
	if (status != 200) {
		if (c->errbody.len + n > 65536)
			return 0;
		return buf_append(&c->errbody, p, n) == 0 ? 0 : -1;
	}
	if (!c->started) {
		keygate_headers(c, false);
		if (http_stream_begin(c->req, 200, "text/event-stream") == -1)
			return -1;
		c->started = true;
	}
	if (provider_stream_feed(&c->ps, p, n) != 0)
		return -1;
	return c->req->client_gone ? -1 : 0;
}

static void
respond_stream(struct chat *c, struct upstream_call *call)
{
	enum upstream_result r;
	char		 err[160], msg[256];
	long		 status;

	r = upstream_stream(call, on_stream_data, c, &status, err, sizeof(err));
	/* Left before the first event: the prompt, as for a whole call. */
	if (!c->started && r == UPSTREAM_ABORTED && c->req->client_gone &&
	    call->sent)
		settle(c, "partial");
	if (!c->started) {
		if (r == UPSTREAM_OK && status != 200)
			provider_error(c, status, &c->errbody, call);
		else if (r == UPSTREAM_OK)
			http_error(c->req, ERR_UPSTREAM, "%s ended the stream "
			    "before sending anything.",
			    gateway_provider_name(&c->key));
		else if (r != UPSTREAM_ABORTED || c->req->client_gone)
			transport_error(c, r, err);
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

/*
 * Estimates the call (the prompt from the body's size, the output from
 * max_tokens or the default) at the model's price, with the pool's markup,
 * and holds it.  0, or -1 after answering 402 or the failure.
 */
static int
reserve(struct chat *c, struct json_object *body)
{
	struct request	*req = c->req;
	const struct config *cfg = req->w->cfg;
	struct json_object *msgs, *v;
	long		 max_out = cfg->default_max_tokens;
	long long	 est, available;
	size_t		 n = 0;
	bool		 pool = c->key.pool && c->key.upstream == NULL;
	int		 rc;

	rc = pool ? credits_pool_price(req->w->db, c->key.model, c->model,
	    &c->price) : credits_price(req->w->db, c->model, &c->price);
	if (rc == -1) {
		api_db_failed(req);
		return -1;
	}
	if (pool && rc == 0) {
		http_error(req, ERR_MODEL_NOT_AVAILABLE, "The operator's pool "
		    "serves only models with a price of their own, and "
		    "\"%.128s\" has none (the operator sets one with "
		    "keygatectl prices).", c->model);
		return -1;
	}
	c->markup = pool ? cfg->pool_markup : 0;
	if (json_get(body, c->embed ? "input" : "messages", &msgs))
		(void)json_text(msgs, &n);
	/* About four bytes a token, rounded up: a safe side for a hold. */
	c->pc.prompt_estimate = (long)(n + 3) / 4;
	if (c->embed)
		max_out = 0;	/* an embedding is priced on its input */
	else if ((json_get(body, "max_completion_tokens", &v) ||
	    json_get(body, "max_tokens", &v)) &&
	    json_object_is_type(v, json_type_int) &&
	    json_object_get_int64(v) > 0)
		max_out = (long)json_object_get_int64(v);
	c->max_out = max_out;
	est = credits_cost(&c->price, c->pc.prompt_estimate, max_out,
	    c->markup);
	switch (hold_take(req->w, &c->hold, req->principal->tenant_id,
	    req->principal->key_id[0] ? req->principal->key_id : NULL,
	    req->request_id, est, cfg->upstream_total_timeout + HOLD_MARGIN,
	    &available)) {
	case 0:
		return 0;
	case 1:
		break;
	default:
		api_db_failed(req);
		return -1;
	}
	api_insufficient_credits(req, est, available,
	    credits_affordable_tokens(&c->price, c->pc.prompt_estimate, c->markup,
	    available));
	return -1;
}

/*
 * The header `name: value` of the client's request into line when it sent
 * one of printable ASCII, at most 256 bytes (Anthropic's version and
 * betas, for a native call).
 */
static void
pass_header(struct request *req, const char *param, const char *name,
    struct buf *line)
{
	const char	*v = request_param(req, param);
	size_t		 i;

	if (v == NULL || *v == '\0')
		return;
	for (i = 0; v[i] != '\0'; i++)
		if (v[i] < 0x20 || v[i] > 0x7e || i >= 256)
			return;
	if (buf_printf(line, "%s: %s", name, v) == -1)
		buf_reset(line);
}

/* The headers of the call: the provider's, the client's, the key. */
static void
call_headers(struct chat *c, struct upstream_call *call, struct buf *auth,
    struct buf passed[2])
{
	const struct provider_module *p = c->prov;
	size_t		 nh = 0, i, j, len;

	for (i = 0; i < 2 && c->pc.headers[i] != NULL; i++)
		call->headers[nh++] = c->pc.headers[i];
	for (i = 0; c->native && i < 2 && p->pass_header[i][0] != NULL; i++) {
		pass_header(c->req, p->pass_header[i][1], p->pass_header[i][0],
		    &passed[i]);
		if (passed[i].len == 0)
			continue;
		/* The client's replaces the provider's of that name. */
		len = strlen(p->pass_header[i][0]);
		for (j = 0; j < nh; j++)
			if (strncasecmp(call->headers[j], passed[i].data,
			    len + 1) == 0)
				break;
		call->headers[j] = passed[i].data;
		if (j == nh)
			nh++;
	}
	/* An upstream without a key gets no Authorization at all. */
	if (c->key.secret.len > 0 && buf_printf(auth, "%s%s", p->auth,
	    c->key.secret.data) == 0)
		call->headers[nh++] = auth->data;
	call->headers[nh++] = "Content-Type: application/json";
	call->headers[nh++] = c->stream ? "Accept: text/event-stream" :
	    "Accept: application/json";
}

/*
 * The provider's request for the call, from the client's (orig: a
 * Messages request as it came); 0, or -1 after answering.
 */
static int
prepare(struct chat *c, struct json_object *orig)
{
	struct request	*req = c->req;
	const struct config *cfg = req->w->cfg;
	char		 err[160];

	c->pc.op = c->embed ? PROVIDER_EMBED : c->native ? PROVIDER_NATIVE :
	    PROVIDER_CHAT;
	c->pc.stream = c->stream;
	c->pc.base = c->key.upstream != NULL ? c->key.upstream->url :
	    cfg->base_url[c->key.provider];
	c->pc.model = c->key.model;
	c->pc.request = c->native ? orig : c->body;
	c->pc.max_tokens = c->max_out;
	c->pc.default_max_tokens = cfg->default_max_tokens;
	if (c->prov->state_size > 0 &&
	    (c->pc.state = calloc(1, c->prov->state_size)) == NULL) {
		http_error(req, ERR_INTERNAL, "out of memory");
		return -1;
	}
	switch (c->prov->prepare(&c->pc, err, sizeof(err))) {
	case PROVIDER_OK:
		return 0;
	case PROVIDER_REFUSED:
		http_error(req, ERR_BAD_REQUEST, "This request cannot be sent "
		    "to %s: %s.", gateway_provider_name(&c->key), err);
		break;
	case PROVIDER_BAD_MODEL:
		http_error(req, ERR_UNSUPPORTED_MODEL, "\"%.128s\" is not a %s "
		    "model name.", c->key.model, gateway_provider_name(&c->key));
		break;
	case PROVIDER_FAILED:
	case PROVIDER_RESULT__MAX:
		http_error(req, ERR_INTERNAL, "The request could not be "
		    "prepared.");
		break;
	}
	return -1;
}

/* Calls the provider and answers. */
static void
call_provider(struct chat *c, struct buf *auth, struct buf passed[2])
{
	struct worker	*w = c->req->w;
	struct upstream_call call;
	double		 began;

	memset(&call, 0, sizeof(call));
	call.via = w->upstream;
	call.method = "POST";
	call.url = c->pc.url.data;
	call_headers(c, &call, auth, passed);
	call.body = c->pc.body.data;
	call.body_len = c->pc.body.len;
	call.connect_timeout = w->cfg->upstream_connect_timeout;
	call.total_timeout = w->cfg->upstream_total_timeout;
	call.idle_timeout = w->cfg->upstream_idle_timeout;
	call.max_response = MAX_REPLY;
	call.gone = client_left;
	call.gone_arg = c;
	metrics_call_begin(w, c->stream);
	began = clock_mono();
	if (c->stream)
		respond_stream(c, &call);
	else
		respond_whole(c, &call);
	metrics_call_end(w, c->key.upstream != NULL ? PROVIDER__MAX :
	    (unsigned)c->key.provider, c->stream,
	    metrics_outcome_of(c->req->status), clock_mono() - began);
}

/* True, after answering, when no provider serving model has embeddings. */
static bool
no_embeddings(struct request *req, const char *model)
{
	enum provider	 p;
	size_t		 strip;

	if (gateway_upstream(&req->w->cfg->upstreams, model, &strip) != NULL ||
	    (p = provider_route(model)) == PROVIDER__MAX ||
	    providers[p]->embeddings)
		return false;
	http_error(req, ERR_UNSUPPORTED_MODEL, "No provider serves the model "
	    "\"%.128s\" for embeddings.", model);
	return true;
}

void
api_gateway(struct request *req, enum api_format format,
    struct json_object *body, struct json_object *orig, const char *model)
{
	struct chat	 chat, *c = &chat;
	struct worker	*w = req->w;
	struct json_object *v, *opts;
	struct buf	 auth = { 0 }, passed[2] = { { 0 }, { 0 } };
	bool		 reserved = false;	/* a credit hold is counted */

	memset(c, 0, sizeof(*c));
	c->req = req;
	hold_init(&c->hold);
	c->messages = format == API_FORMAT_MESSAGES;
	c->embed = format == API_FORMAT_EMBEDDINGS;
	/* Refused before any key is looked up. */
	if (c->embed && no_embeddings(req, model))
		return;
	if (!api_call_begin(req))
		return;
	if (api_gateway_key(req, model, &c->key) == -1)
		goto out;
	c->prov = gateway_provider(&c->key);
	c->model = model;
	c->body = body;
	c->native = orig != NULL && c->prov->native_messages;
	if (w->cfg->credits_enforce) {
		if (reserve(c, body) == -1)
			goto out;
		reserved = true;
		metrics_holds(w, 1);
	}
	c->stream = !c->embed && json_get(body, "stream", &v) &&
	    json_object_is_type(v, json_type_boolean) &&
	    json_object_get_boolean(v);
	c->want_usage = !c->messages && json_get(body, "stream_options",
	    &opts) && json_get(opts, "include_usage", &v) &&
	    json_object_get_boolean(v);
	messages_stream_init(&c->ms, c->pc.prompt_estimate);
	provider_stream_init(&c->ps, c->prov, &c->pc, &sink, c, MAX_EVENT);
	if (prepare(c, orig) == 0)
		call_provider(c, &auth, passed);
out:
	/* A stream that went out is paid for; anything else is released. */
	if (c->started)
		settle(c, "partial");
	else
		release(c);
	if (reserved)
		metrics_holds(w, -1);
	api_call_end(req);
	gateway_key_free(&c->key);
	buf_free_secret(&auth);
	buf_free(&passed[0]);
	buf_free(&passed[1]);
	provider_call_free(&c->pc);
	provider_stream_free(&c->ps);
	buf_free(&c->errbody);
	if (c->held != NULL)
		json_object_put(c->held);
	if (c->shape != NULL)
		json_object_put(c->shape);
}

void
api_chat_completions(struct request *req)
{
	struct json_object *body;
	struct checks	 ck = { NULL };
	const char	*model = NULL;

	if (!api_body_object(req, &body))
		return;
	if (body == NULL) {
		check_fail(&ck, "model", "required: a model name");
		check_fail(&ck, "messages", "required: a non-empty array");
	} else {
		if (api_gateway_forbidden(req, body) == -1)
			return;
		model = api_gateway_model(&ck, body);
		api_gateway_turns(&ck, body);
	}
	/* With no body the checks have failed, and answered. */
	if (check_done(req, &ck) == -1 || api_gateway_inline_keys(req) == -1)
		return;
	api_gateway(req, API_FORMAT_CHAT, body, NULL, model);
}
