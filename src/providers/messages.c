/*
 * The Messages API as keygate's client-facing format: requests into the
 * OpenAI chat shape, OpenAI replies and chunks back into Messages shapes
 * (the provider notes' translation table, read right to left).
 */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "providers/messages.h"
#include "providers/providers.h"

/* A text part {"type":"text","text":t} (new). */
static struct json_object *
text_part(const char *t)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "type", json_str("text"));
	json_object_object_add(p, "text", json_str(t));
	return p;
}

/* Appends the text of blocks (a string or text blocks) to out. */
static int
blocks_text(struct json_object *blocks, struct buf *out)
{
	const char	*t;
	size_t		 i;

	if (blocks == NULL)
		return 0;
	if (json_object_is_type(blocks, json_type_string))
		return buf_puts(out, json_object_get_string(blocks));
	if (!json_object_is_type(blocks, json_type_array))
		return -1;
	for (i = 0; i < json_object_array_length(blocks); i++) {
		struct json_object *b = json_object_array_get_idx(blocks, i);
		const char *type = json_get_str(b, "type");

		if (type == NULL)
			return -1;
		if (strcmp(type, "text") != 0)
			continue;	/* images in a result: not for others */
		if ((t = json_get_str(b, "text")) == NULL ||
		    (out->len > 0 && buf_puts(out, "\n") == -1) ||
		    buf_puts(out, t) == -1)
			return -1;
	}
	return 0;
}

/* An image block as an OpenAI image_url part (new), or NULL. */
static struct json_object *
image_part(struct json_object *b)
{
	struct json_object *src, *p, *iu;
	const char	*type, *mt, *data, *url;
	struct buf	 u = { 0 };

	if (!json_get(b, "source", &src) ||
	    (type = json_get_str(src, "type")) == NULL)
		return NULL;
	if (strcmp(type, "base64") == 0 &&
	    (mt = json_get_str(src, "media_type")) != NULL &&
	    (data = json_get_str(src, "data")) != NULL) {
		if (buf_printf(&u, "data:%s;base64,%s", mt, data) == -1) {
			buf_free(&u);
			return NULL;
		}
	} else if (strcmp(type, "url") == 0 &&
	    (url = json_get_str(src, "url")) != NULL) {
		if (buf_puts(&u, url) == -1) {
			buf_free(&u);
			return NULL;
		}
	} else
		return NULL;
	iu = json_object_new_object();
	json_object_object_add(iu, "url", json_str(u.data));
	p = json_object_new_object();
	json_object_object_add(p, "type", json_str("image_url"));
	json_object_object_add(p, "image_url", iu);
	buf_free(&u);
	return p;
}

/* A tool_result block as an OpenAI tool message, or NULL. */
static struct json_object *
tool_message(struct json_object *b)
{
	struct json_object *t, *v = NULL;
	struct buf	 res = { 0 };

	(void)json_get(b, "content", &v);
	if (json_get_str(b, "tool_use_id") == NULL ||
	    blocks_text(v, &res) == -1) {
		buf_free(&res);
		return NULL;
	}
	t = json_object_new_object();
	json_object_object_add(t, "role", json_str("tool"));
	json_object_object_add(t, "tool_call_id",
	    json_str(json_get_str(b, "tool_use_id")));
	json_object_object_add(t, "content",
	    json_str(res.data != NULL ? res.data : ""));
	buf_free(&res);
	return t;
}

/* A tool_use block as an OpenAI tool call, or NULL. */
static struct json_object *
tool_call(struct json_object *b)
{
	if (json_get_str(b, "id") == NULL || json_get_str(b, "name") == NULL)
		return NULL;
	return chat_tool_call(json_get_str(b, "id"), json_get_str(b, "name"),
	    json_object_object_get(b, "input"));
}

/*
 * A turn's gathered content as its OpenAI message: a user's parts (when
 * there are any), an assistant's text and tool calls (taken).
 */
static void
end_turn(struct json_object *msgs, const char *role,
    struct json_object *parts, const struct buf *text,
    struct json_object *calls)
{
	struct json_object *t;

	if (strcmp(role, "user") == 0) {
		if (json_object_array_length(parts) > 0) {
			t = json_object_new_object();
			json_object_object_add(t, "role", json_str("user"));
			json_object_object_add(t, "content",
			    json_object_get(parts));
			json_object_array_add(msgs, t);
		}
		return;
	}
	t = json_object_new_object();
	json_object_object_add(t, "role", json_str("assistant"));
	json_object_object_add(t, "content", text->len > 0 || calls == NULL ?
	    json_str(text->data != NULL ? text->data : "") : NULL);
	if (calls != NULL)
		json_object_object_add(t, "tool_calls", calls);
	json_object_array_add(msgs, t);
}

/*
 * One Messages turn as OpenAI turns appended to msgs: a user turn's
 * tool_result blocks become tool turns (first, as OpenAI wants them right
 * after the call), its text and images one user turn; an assistant turn's
 * text its content, its tool_use blocks tool_calls.
 */
static int
add_turn(struct json_object *msgs, struct json_object *m, char *err,
    size_t errsz)
{
	struct json_object *content, *parts, *calls = NULL, *t, *part;
	const char	*role = json_get_str(m, "role"), *type;
	struct buf	 text = { 0 };
	size_t		 i;
	int		 rc = -1;

	if (role == NULL || (strcmp(role, "user") != 0 &&
	    strcmp(role, "assistant") != 0)) {
		snprintf(err, errsz, "messages: role must be user or assistant");
		return -1;
	}
	if (!json_get(m, "content", &content)) {
		snprintf(err, errsz, "messages: content is required");
		return -1;
	}
	if (json_object_is_type(content, json_type_string)) {
		t = json_object_new_object();
		json_object_object_add(t, "role", json_str(role));
		json_object_object_add(t, "content", json_object_get(content));
		json_object_array_add(msgs, t);
		return 0;
	}
	if (!json_object_is_type(content, json_type_array)) {
		snprintf(err, errsz, "messages: content must be a string or "
		    "an array of blocks");
		return -1;
	}
	parts = json_object_new_array();
	for (i = 0; i < json_object_array_length(content); i++) {
		struct json_object *b = json_object_array_get_idx(content, i);

		snprintf(err, errsz, "messages: a content block cannot be "
		    "sent to this provider");
		if ((type = json_get_str(b, "type")) == NULL)
			goto out;
		if (strcmp(type, "text") == 0) {
			if (json_get_str(b, "text") == NULL)
				goto out;
			if (strcmp(role, "user") == 0)
				json_object_array_add(parts,
				    text_part(json_get_str(b, "text")));
			else if (buf_puts(&text, json_get_str(b, "text")) == -1)
				goto out;
		} else if (strcmp(type, "image") == 0 &&
		    strcmp(role, "user") == 0) {
			if ((part = image_part(b)) == NULL)
				goto out;
			json_object_array_add(parts, part);
		} else if (strcmp(type, "tool_result") == 0 &&
		    strcmp(role, "user") == 0) {
			if ((t = tool_message(b)) == NULL)
				goto out;
			json_object_array_add(msgs, t);
		} else if (strcmp(type, "tool_use") == 0 &&
		    strcmp(role, "assistant") == 0) {
			if ((t = tool_call(b)) == NULL)
				goto out;
			if (calls == NULL)
				calls = json_object_new_array();
			json_object_array_add(calls, t);
		} else if (strcmp(type, "thinking") == 0 ||
		    strcmp(type, "redacted_thinking") == 0)
			;	/* Anthropic's own: nothing others could read */
		else
			goto out;
	}
	end_turn(msgs, role, parts, &text, calls);
	calls = NULL;
	rc = 0;
out:
	json_object_put(parts);
	if (calls != NULL)
		json_object_put(calls);
	buf_free(&text);
	return rc;
}

/* Messages tools and tool_choice as OpenAI's, into o. */
static int
add_tools(struct json_object *req, struct json_object *o, char *err,
    size_t errsz)
{
	struct json_object *tools, *out, *v, *tc, *fn;
	const char	*type;
	size_t		 i;

	if (json_get(req, "tools", &tools)) {
		if (!json_object_is_type(tools, json_type_array))
			goto bad;
		out = json_object_new_array();
		json_object_object_add(o, "tools", out);
		for (i = 0; i < json_object_array_length(tools); i++) {
			struct json_object *f;

			if ((f = chat_tool_decl(json_object_array_get_idx(tools,
			    i), "input_schema", "parameters", false)) == NULL)
				goto bad;
			fn = json_object_new_object();
			json_object_object_add(fn, "type", json_str("function"));
			json_object_object_add(fn, "function", f);
			json_object_array_add(out, fn);
		}
	}
	if (!json_get(req, "tool_choice", &tc))
		return 0;
	if ((type = json_get_str(tc, "type")) == NULL)
		goto bad;
	if (strcmp(type, "auto") == 0 || strcmp(type, "none") == 0)
		json_object_object_add(o, "tool_choice", json_str(type));
	else if (strcmp(type, "any") == 0)
		json_object_object_add(o, "tool_choice", json_str("required"));
	else if (strcmp(type, "tool") == 0 && json_get_str(tc, "name") != NULL) {
		struct json_object *c = json_object_new_object(), *f;

		f = json_object_new_object();
		json_object_object_add(f, "name",
		    json_str(json_get_str(tc, "name")));
		json_object_object_add(c, "type", json_str("function"));
		json_object_object_add(c, "function", f);
		json_object_object_add(o, "tool_choice", c);
	} else
		goto bad;
	if (json_get(tc, "disable_parallel_tool_use", &v) &&
	    json_object_get_boolean(v))
		json_object_object_add(o, "parallel_tool_calls",
		    json_object_new_boolean(0));
	return 0;
bad:
	snprintf(err, errsz, "tools and tool_choice must be in the Messages "
	    "API's shape");
	return -1;
}

int
messages_to_chat(struct json_object *req, struct json_object **out,
    char *err, size_t errsz)
{
	struct json_object *o = json_object_new_object(), *msgs, *in, *v, *t;
	struct buf	 sys = { 0 };
	size_t		 i;

	*out = NULL;
	msgs = json_object_new_array();
	if (json_get(req, "model", &v))
		json_object_object_add(o, "model", json_object_get(v));
	if (json_get(req, "system", &v)) {
		if (blocks_text(v, &sys) == -1) {
			snprintf(err, errsz, "system must be a string or text "
			    "blocks");
			goto bad;
		}
		t = json_object_new_object();
		json_object_object_add(t, "role", json_str("system"));
		json_object_object_add(t, "content",
		    json_str(sys.data != NULL ? sys.data : ""));
		json_object_array_add(msgs, t);
	}
	if (!json_get(req, "messages", &in) ||
	    !json_object_is_type(in, json_type_array)) {
		snprintf(err, errsz, "messages must be an array");
		goto bad;
	}
	for (i = 0; i < json_object_array_length(in); i++)
		if (add_turn(msgs, json_object_array_get_idx(in, i), err,
		    errsz) == -1)
			goto bad;
	json_object_object_add(o, "messages", msgs);
	msgs = NULL;
	if (json_get(req, "max_tokens", &v))
		json_object_object_add(o, "max_tokens", json_object_get(v));
	if (json_get(req, "temperature", &v))
		json_object_object_add(o, "temperature", json_object_get(v));
	if (json_get(req, "top_p", &v))
		json_object_object_add(o, "top_p", json_object_get(v));
	if (json_get(req, "stop_sequences", &v))
		json_object_object_add(o, "stop", json_object_get(v));
	if (json_get(req, "stream", &v))
		json_object_object_add(o, "stream", json_object_get(v));
	if (add_tools(req, o, err, errsz) == -1)
		goto bad;
	buf_free(&sys);
	*out = o;
	return 0;
bad:
	buf_free(&sys);
	if (msgs != NULL)
		json_object_put(msgs);
	json_object_put(o);
	return -1;
}

const char *
messages_stop_reason(const char *finish)
{
	if (finish == NULL || strcmp(finish, "stop") == 0)
		return "end_turn";
	if (strcmp(finish, "length") == 0)
		return "max_tokens";
	if (strcmp(finish, "tool_calls") == 0 ||
	    strcmp(finish, "function_call") == 0)
		return "tool_use";
	if (strcmp(finish, "content_filter") == 0)
		return "refusal";
	return "end_turn";
}

/* {"input_tokens","output_tokens"} (new). */
static struct json_object *
usage_of(long in, long out)
{
	struct json_object *u = json_object_new_object();

	json_object_object_add(u, "input_tokens", json_object_new_int64(in));
	json_object_object_add(u, "output_tokens", json_object_new_int64(out));
	return u;
}

/* A tool_use block of an OpenAI tool call (new); input {} when unparsed. */
static struct json_object *
tool_block(struct json_object *tc)
{
	struct json_object *b = json_object_new_object(), *fn = NULL,
			   *input = NULL;
	enum json_parse_error why;
	const char	*args = NULL;
	char		 e[64];

	if (json_get(tc, "function", &fn))
		args = json_get_str(fn, "arguments");
	if (args != NULL && *args != '\0')
		input = json_parse(args, strlen(args), &why, e, sizeof(e));
	if (input == NULL || !json_object_is_type(input, json_type_object)) {
		if (input != NULL)
			json_object_put(input);
		input = json_object_new_object();
	}
	json_object_object_add(b, "type", json_str("tool_use"));
	json_object_object_add(b, "id", json_str(json_get_str(tc, "id") ?
	    json_get_str(tc, "id") : ""));
	json_object_object_add(b, "name", json_str(fn != NULL &&
	    json_get_str(fn, "name") ? json_get_str(fn, "name") : ""));
	json_object_object_add(b, "input", input);
	return b;
}

struct json_object *
messages_from_chat(struct json_object *c)
{
	struct json_object *o = json_object_new_object(), *content, *choices,
			   *ch = NULL, *msg = NULL, *calls, *u;
	const char	*text = NULL;
	long		 in = 0, out = 0;
	size_t		 i;

	if (json_get(c, "choices", &choices) &&
	    json_object_is_type(choices, json_type_array) &&
	    json_object_array_length(choices) > 0)
		ch = json_object_array_get_idx(choices, 0);
	if (ch != NULL)
		(void)json_get(ch, "message", &msg);
	content = json_object_new_array();
	if (msg != NULL && (text = json_get_str(msg, "content")) != NULL &&
	    *text != '\0')
		json_object_array_add(content, text_part(text));
	if (msg != NULL && json_get(msg, "tool_calls", &calls) &&
	    json_object_is_type(calls, json_type_array))
		for (i = 0; i < json_object_array_length(calls); i++)
			json_object_array_add(content,
			    tool_block(json_object_array_get_idx(calls, i)));
	if (json_get(c, "usage", &u)) {
		in = usage_count(u, "prompt_tokens");
		out = usage_count(u, "completion_tokens");
	}
	json_object_object_add(o, "id", json_str(json_get_str(c, "id") ?
	    json_get_str(c, "id") : ""));
	json_object_object_add(o, "type", json_str("message"));
	json_object_object_add(o, "role", json_str("assistant"));
	json_object_object_add(o, "model", json_str(json_get_str(c, "model") ?
	    json_get_str(c, "model") : ""));
	json_object_object_add(o, "content", content);
	json_object_object_add(o, "stop_reason", json_str(messages_stop_reason(
	    ch != NULL ? json_get_str(ch, "finish_reason") : NULL)));
	json_object_object_add(o, "stop_sequence", NULL);
	json_object_object_add(o, "usage", usage_of(in, out));
	return o;
}

void
messages_stream_init(struct messages_stream *s, long input_tokens)
{
	memset(s, 0, sizeof(s[0]));
	s->block = -1;
	s->tool = -1;
	s->input_tokens = input_tokens;
}

/* An event {"type": type, ...} (new). */
static struct json_object *
event(const char *type)
{
	struct json_object *e = json_object_new_object();

	json_object_object_add(e, "type", json_str(type));
	return e;
}

static void
close_block(struct messages_stream *s, struct json_object *out)
{
	struct json_object *e;

	if (s->block < 0)
		return;
	e = event("content_block_stop");
	json_object_object_add(e, "index", json_object_new_int(s->block));
	json_object_array_add(out, e);
	s->block = -1;
	s->tool = -1;
}

/* Opens a block (cb taken) after closing the one open. */
static void
open_block(struct messages_stream *s, struct json_object *cb, int tool,
    struct json_object *out)
{
	struct json_object *e;

	close_block(s, out);
	s->block = s->nblocks++;
	s->tool = tool;
	e = event("content_block_start");
	json_object_object_add(e, "index", json_object_new_int(s->block));
	json_object_object_add(e, "content_block", cb);
	json_object_array_add(out, e);
}

static void
block_delta(struct messages_stream *s, const char *type, const char *key,
    const char *value, struct json_object *out)
{
	struct json_object *e = event("content_block_delta"), *d;

	d = json_object_new_object();
	json_object_object_add(d, "type", json_str(type));
	json_object_object_add(d, key, json_str(value));
	json_object_object_add(e, "index", json_object_new_int(s->block));
	json_object_object_add(e, "delta", d);
	json_object_array_add(out, e);
}

/* The tool call deltas of a chunk as tool_use blocks and their input. */
static void
tool_deltas(struct messages_stream *s, struct json_object *calls,
    struct json_object *out)
{
	struct json_object *v, *fn;
	const char	*args;
	size_t		 i;
	int		 idx;

	for (i = 0; i < json_object_array_length(calls); i++) {
		struct json_object *tc = json_object_array_get_idx(calls, i);

		idx = json_get(tc, "index", &v) ? json_object_get_int(v) :
		    (int)i;
		/* A new call: an id, or another index than the open one. */
		if (json_get_str(tc, "id") != NULL || s->tool != idx) {
			struct json_object *cb = tool_block(tc);

			json_object_object_del(cb, "input");
			json_object_object_add(cb, "input",
			    json_object_new_object());
			open_block(s, cb, idx, out);
		}
		if (json_get(tc, "function", &fn) &&
		    (args = json_get_str(fn, "arguments")) != NULL &&
		    *args != '\0')
			block_delta(s, "input_json_delta", "partial_json", args,
			    out);
	}
}

void
messages_stream_chunk(struct messages_stream *s, struct json_object *chunk,
    long input_tokens, long output_tokens, struct json_object *out)
{
	struct json_object *choices, *ch, *delta, *v, *e, *m, *d, *kg;
	const char	*text, *finish;

	if (!s->started) {
		m = json_object_new_object();
		json_object_object_add(m, "id", json_str(json_get_str(chunk,
		    "id") ? json_get_str(chunk, "id") : ""));
		json_object_object_add(m, "type", json_str("message"));
		json_object_object_add(m, "role", json_str("assistant"));
		json_object_object_add(m, "content", json_object_new_array());
		json_object_object_add(m, "model", json_str(json_get_str(chunk,
		    "model") ? json_get_str(chunk, "model") : ""));
		json_object_object_add(m, "stop_reason", NULL);
		json_object_object_add(m, "stop_sequence", NULL);
		json_object_object_add(m, "usage", usage_of(s->input_tokens, 0));
		e = event("message_start");
		json_object_object_add(e, "message", m);
		json_object_array_add(out, e);
		s->started = true;
	}
	if (s->stopped || !json_get(chunk, "choices", &choices) ||
	    !json_object_is_type(choices, json_type_array) ||
	    json_object_array_length(choices) == 0)
		return;
	ch = json_object_array_get_idx(choices, 0);
	if (json_get(ch, "delta", &delta)) {
		if ((text = json_get_str(delta, "content")) != NULL &&
		    *text != '\0') {
			if (s->block < 0 || s->tool != -1) {
				struct json_object *cb = text_part("");

				open_block(s, cb, -1, out);
			}
			block_delta(s, "text_delta", "text", text, out);
		}
		if (json_get(delta, "tool_calls", &v) &&
		    json_object_is_type(v, json_type_array))
			tool_deltas(s, v, out);
	}
	if ((finish = json_get_str(ch, "finish_reason")) == NULL)
		return;
	close_block(s, out);
	d = json_object_new_object();
	json_object_object_add(d, "stop_reason",
	    json_str(messages_stop_reason(finish)));
	json_object_object_add(d, "stop_sequence", NULL);
	e = event("message_delta");
	json_object_object_add(e, "delta", d);
	json_object_object_add(e, "usage", usage_of(input_tokens,
	    output_tokens));
	if (json_get(chunk, "keygate", &kg))
		json_object_object_add(e, "keygate", json_object_get(kg));
	json_object_array_add(out, e);
	s->stopped = true;
}

void
messages_stream_end(struct messages_stream *s, struct json_object *out)
{
	close_block(s, out);
	json_object_array_add(out, event("message_stop"));
}
