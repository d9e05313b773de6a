/*
 * Anthropic Messages: requests, replies and streams translated to and from
 * the OpenAI chat shape (see the translation table of the provider notes).
 */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/json.h"
#include "providers/anthropic.h"
#include "providers/providers.h"

/* Appends the text of an OpenAI content (string or parts) to out. */
static int
content_text(struct json_object *content, struct buf *out)
{
	size_t	 i;

	if (content == NULL)
		return 0;
	if (json_object_is_type(content, json_type_string))
		return (out->len > 0 && buf_puts(out, "\n") == -1) ? -1 :
		    buf_puts(out, json_object_get_string(content));
	if (!json_object_is_type(content, json_type_array))
		return -1;
	for (i = 0; i < json_object_array_length(content); i++) {
		struct json_object *part = json_object_array_get_idx(content, i);
		const char *t = json_get_str(part, "text");

		if (t == NULL)
			return -1;
		if ((out->len > 0 && buf_puts(out, "\n") == -1) ||
		    buf_puts(out, t) == -1)
			return -1;
	}
	return 0;
}

/* An OpenAI image_url part as an Anthropic image block, or NULL. */
static struct json_object *
image_block(struct json_object *part)
{
	struct json_object *iu, *blk, *src;
	const char	*url, *comma, *semi;

	if (!json_get(part, "image_url", &iu) || (url = json_get_str(iu, "url")) == NULL)
		return NULL;
	src = json_object_new_object();
	if (strncmp(url, "data:", 5) == 0) {
		/* data:<mime>;base64,<data> */
		comma = strchr(url, ',');
		semi = strchr(url, ';');
		if (comma == NULL || semi == NULL || semi > comma ||
		    strncmp(semi, ";base64,", 8) != 0) {
			json_object_put(src);
			return NULL;
		}
		json_object_object_add(src, "type", json_str("base64"));
		json_object_object_add(src, "media_type",
		    json_object_new_string_len(url + 5, (int)(semi - url - 5)));
		json_object_object_add(src, "data", json_str(comma + 1));
	} else {
		json_object_object_add(src, "type", json_str("url"));
		json_object_object_add(src, "url", json_str(url));
	}
	blk = json_object_new_object();
	json_object_object_add(blk, "type", json_str("image"));
	json_object_object_add(blk, "source", src);
	return blk;
}

/* An OpenAI user content as Anthropic blocks; NULL when malformed. */
static struct json_object *
user_blocks(struct json_object *content)
{
	struct json_object *blocks = json_object_new_array(), *b;
	const char	*type;
	size_t		 i;

	if (content != NULL && json_object_is_type(content, json_type_string)) {
		b = json_object_new_object();
		json_object_object_add(b, "type", json_str("text"));
		json_object_object_add(b, "text",
		    json_str(json_object_get_string(content)));
		json_object_array_add(blocks, b);
		return blocks;
	}
	if (content == NULL || !json_object_is_type(content, json_type_array))
		goto bad;
	for (i = 0; i < json_object_array_length(content); i++) {
		struct json_object *part = json_object_array_get_idx(content, i);

		type = json_get_str(part, "type");
		if (type != NULL && strcmp(type, "text") == 0 &&
		    json_get_str(part, "text") != NULL) {
			b = json_object_new_object();
			json_object_object_add(b, "type", json_str("text"));
			json_object_object_add(b, "text",
			    json_str(json_get_str(part, "text")));
		} else if (type != NULL && strcmp(type, "image_url") == 0 &&
		    (b = image_block(part)) != NULL)
			;
		else
			goto bad;
		json_object_array_add(blocks, b);
	}
	return blocks;
bad:
	json_object_put(blocks);
	return NULL;
}

/* An assistant turn: its text and its tool calls as tool_use blocks. */
static struct json_object *
assistant_blocks(struct json_object *msg, char *err, size_t errsz)
{
	struct json_object *blocks = json_object_new_array(), *b, *calls, *fn,
			   *input, *content;
	struct buf	 text = { 0 };
	enum json_parse_error why;
	const char	*args;
	char		 e[64];
	size_t		 i;

	if (json_get(msg, "content", &content) && content_text(content, &text) == -1)
		goto bad;
	if (text.len > 0) {
		b = json_object_new_object();
		json_object_object_add(b, "type", json_str("text"));
		json_object_object_add(b, "text", json_str(text.data));
		json_object_array_add(blocks, b);
	}
	if (json_get(msg, "tool_calls", &calls) &&
	    json_object_is_type(calls, json_type_array))
		for (i = 0; i < json_object_array_length(calls); i++) {
			struct json_object *tc =
			    json_object_array_get_idx(calls, i);

			if (!json_get(tc, "function", &fn) ||
			    json_get_str(tc, "id") == NULL ||
			    json_get_str(fn, "name") == NULL)
				goto bad;
			args = json_get_str(fn, "arguments");
			input = json_parse(args != NULL && *args ? args : "{}",
			    args != NULL && *args ? strlen(args) : 2, &why, e,
			    sizeof(e));
			if (input == NULL) {
				snprintf(err, errsz, "tool call %s has "
				    "arguments that are not JSON",
				    json_get_str(tc, "id"));
				goto bad;
			}
			b = json_object_new_object();
			json_object_object_add(b, "type", json_str("tool_use"));
			json_object_object_add(b, "id", json_str(json_get_str(tc, "id")));
			json_object_object_add(b, "name",
			    json_str(json_get_str(fn, "name")));
			json_object_object_add(b, "input", input);
			json_object_array_add(blocks, b);
		}
	buf_free(&text);
	if (json_object_array_length(blocks) == 0) {
		json_object_put(blocks);
		return NULL;
	}
	return blocks;
bad:
	buf_free(&text);
	json_object_put(blocks);
	return NULL;
}

/* What Anthropic takes as a tool name: [A-Za-z0-9_-]{1,64}. */
static bool
tool_name_ok(const char *s)
{
	size_t	 n = s != NULL ? strlen(s) : 0;

	return n > 0 && n < ANT_TOOL_NAME && s[strspn(s, "abcdefghijklmnopqrstuv"
	    "wxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")] == '\0';
}

void
anthropic_answer_tool(struct json_object *req, char name[ANT_TOOL_NAME])
{
	struct json_object *rf, *js;
	const char	*type, *n = NULL;

	name[0] = '\0';
	if (!json_get(req, "response_format", &rf) ||
	    (type = json_get_str(rf, "type")) == NULL)
		return;
	if (strcmp(type, "json_schema") == 0 && json_get(rf, "json_schema", &js))
		n = json_get_str(js, "name");
	else if (strcmp(type, "json_object") != 0)
		return;
	snprintf(name, ANT_TOOL_NAME, "%s", tool_name_ok(n) ? n : "json_answer");
}

/*
 * Adds the answer tool of a response_format to o (its tools and
 * tool_choice, and for json_object an instruction in system).  The model
 * must call it unless the client has tools of its own, which it may call
 * instead.  0, or -1 with err set.
 */
static int
answer_format(struct json_object *req, struct json_object *o,
    struct buf *system, char *err, size_t errsz)
{
	struct json_object *schema, *tools, *tool, *tc, *v;
	char		 name[ANT_TOOL_NAME];
	int		 f = chat_response_format(req, &schema, err, errsz);

	if (f == -1)
		return -1;
	if (f == CHAT_FORMAT_TEXT)
		return 0;
	anthropic_answer_tool(req, name);
	tool = json_object_new_object();
	json_object_object_add(tool, "name", json_str(name));
	json_object_object_add(tool, "description", json_str("Give your "
	    "answer as the input of this tool, following its schema."));
	if (schema != NULL)
		json_object_object_add(tool, "input_schema",
		    json_object_get(schema));
	else {
		/* json_object: any object will do. */
		schema = json_object_new_object();
		json_object_object_add(schema, "type", json_str("object"));
		json_object_object_add(schema, "additionalProperties",
		    json_object_new_boolean(1));
		json_object_object_add(tool, "input_schema", schema);
		if ((system->len > 0 && buf_puts(system, "\n") == -1) ||
		    buf_puts(system, "Respond with a JSON object.") == -1) {
			json_object_put(tool);
			snprintf(err, errsz, "out of memory");
			return -1;
		}
	}
	if (!json_get(o, "tools", &tools)) {
		tools = json_object_new_array();
		json_object_object_add(o, "tools", tools);
		tc = json_object_new_object();
		json_object_object_add(tc, "type", json_str("tool"));
		json_object_object_add(tc, "name", json_str(name));
		json_object_object_add(o, "tool_choice", tc);
	} else if (!json_get(o, "tool_choice", &v)) {
		tc = json_object_new_object();
		json_object_object_add(tc, "type", json_str("any"));
		json_object_object_add(o, "tool_choice", tc);
	}
	json_object_array_add(tools, tool);
	return 0;
}

/* A tool message: a tool_result block in a user turn.  0, or -1. */
static int
tool_result(struct json_object *m, struct json_object *msgs)
{
	struct json_object *b, *blocks;
	struct buf	 res = { 0 };
	const char	*s;

	if ((s = json_get_str(m, "tool_call_id")) == NULL ||
	    content_text(json_object_object_get(m, "content"), &res) == -1) {
		buf_free(&res);
		return -1;
	}
	b = json_object_new_object();
	json_object_object_add(b, "type", json_str("tool_result"));
	json_object_object_add(b, "tool_use_id", json_str(s));
	json_object_object_add(b, "content",
	    json_str(res.data != NULL ? res.data : ""));
	buf_free(&res);
	blocks = json_object_new_array();
	json_object_array_add(blocks, b);
	chat_add_turn(msgs, "user", "content", blocks);
	return 0;
}

/*
 * The messages as Anthropic's (turns of alternating roles), the system
 * and developer ones gathered in system.  0, or -1.
 */
static int
turns(struct json_object *v, struct json_object *msgs, struct buf *system,
    char *err, size_t errsz)
{
	struct json_object *m, *content, *blocks;
	const char	*role;
	size_t		 i;

	for (i = 0; i < json_object_array_length(v); i++) {
		m = json_object_array_get_idx(v, i);
		if ((role = json_get_str(m, "role")) == NULL)
			return -1;
		content = json_object_object_get(m, "content");
		if (strcmp(role, "system") == 0 ||
		    strcmp(role, "developer") == 0) {
			if (content_text(content, system) == -1)
				return -1;
		} else if (strcmp(role, "user") == 0) {
			if ((blocks = user_blocks(content)) == NULL)
				return -1;
			chat_add_turn(msgs, "user", "content", blocks);
		} else if (strcmp(role, "assistant") == 0) {
			if ((blocks = assistant_blocks(m, err, errsz)) == NULL)
				return -1;
			chat_add_turn(msgs, "assistant", "content", blocks);
		} else if (strcmp(role, "tool") == 0) {
			if (tool_result(m, msgs) == -1)
				return -1;
		} else
			return -1;
	}
	return 0;
}

/* The sampling settings.  0, or -1. */
static int
sampling(struct json_object *req, struct json_object *o, long default_max,
    char *err, size_t errsz)
{
	struct json_object *v;
	double		 t;

	/* max_tokens is required: the client's, else a default. */
	if ((json_get(req, "max_completion_tokens", &v) ||
	    json_get(req, "max_tokens", &v)) && json_object_is_type(v, json_type_int))
		json_object_object_add(o, "max_tokens",
		    json_object_new_int64(json_object_get_int64(v)));
	else
		json_object_object_add(o, "max_tokens",
		    json_object_new_int64(default_max));
	/* OpenAI's temperature runs to 2, Anthropic's to 1. */
	if (json_get(req, "temperature", &v)) {
		t = json_object_get_double(v);
		json_object_object_add(o, "temperature", t >= 0 && t <= 1.0 ?
		    json_object_get(v) :
		    json_object_new_double(t > 1.0 ? 1.0 : 0.0));
	}
	if (json_get(req, "top_p", &v))
		json_object_object_add(o, "top_p", json_object_get(v));
	if (json_get(req, "stop", &v))
		json_object_object_add(o, "stop_sequences", chat_stop_list(v));
	if (json_get(req, "n", &v) && json_object_get_int(v) > 1) {
		snprintf(err, errsz, "anthropic answers one choice: n must be 1");
		return -1;
	}
	return 0;
}

/* tools, each with an input_schema.  0, or -1. */
static int
tools_of(struct json_object *req, struct json_object *o)
{
	struct json_object *tools, *at, *fn, *a;
	size_t		 i;

	if (!json_get(req, "tools", &tools) ||
	    !json_object_is_type(tools, json_type_array))
		return 0;
	at = json_object_new_array();
	json_object_object_add(o, "tools", at);
	for (i = 0; i < json_object_array_length(tools); i++) {
		if (!json_get(json_object_array_get_idx(tools, i), "function",
		    &fn) || (a = chat_tool_decl(fn, "parameters",
		    "input_schema", true)) == NULL)
			return -1;
		json_object_array_add(at, a);
	}
	return 0;
}

/* tool_choice, and parallel_tool_calls with it.  0, or -1. */
static int
tool_choice(struct json_object *req, struct json_object *o)
{
	struct json_object *v, *tc, *fn, *b;
	const char	*c;

	if (!json_get(req, "tool_choice", &v))
		return 0;
	tc = json_object_new_object();
	c = json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : NULL;
	if (c != NULL && strcmp(c, "required") == 0)
		json_object_object_add(tc, "type", json_str("any"));
	else if (c != NULL && (strcmp(c, "auto") == 0 ||
	    strcmp(c, "none") == 0))
		json_object_object_add(tc, "type", json_str(c));
	else if (json_get(v, "function", &fn) &&
	    json_get_str(fn, "name") != NULL) {
		json_object_object_add(tc, "type", json_str("tool"));
		json_object_object_add(tc, "name",
		    json_str(json_get_str(fn, "name")));
	} else {
		json_object_put(tc);
		return -1;
	}
	if (json_get(req, "parallel_tool_calls", &b) &&
	    !json_object_get_boolean(b))
		json_object_object_add(tc, "disable_parallel_tool_use",
		    json_object_new_boolean(1));
	json_object_object_add(o, "tool_choice", tc);
	return 0;
}

int
anthropic_request(struct json_object *req, const char *model,
    long default_max, struct json_object **out, char *err, size_t errsz)
{
	struct json_object *o = json_object_new_object(), *msgs, *v;
	struct buf	 system = { 0 };

	*out = NULL;
	snprintf(err, errsz, "the request cannot be expressed for anthropic");
	json_object_object_add(o, "model", json_str(model));
	msgs = json_object_new_array();
	json_object_object_add(o, "messages", msgs);
	if (!json_get(req, "messages", &v) ||
	    !json_object_is_type(v, json_type_array) ||
	    turns(v, msgs, &system, err, errsz) == -1 ||
	    sampling(req, o, default_max, err, errsz) == -1 ||
	    tools_of(req, o) == -1 || tool_choice(req, o) == -1 ||
	    answer_format(req, o, &system, err, errsz) == -1)
		goto bad;
	if (system.len > 0)
		json_object_object_add(o, "system", json_str(system.data));
	if (json_get(req, "stream", &v) && json_object_get_boolean(v))
		json_object_object_add(o, "stream", json_object_new_boolean(1));
	buf_free(&system);
	*out = o;
	return 0;
bad:
	buf_free(&system);
	json_object_put(o);
	return -1;
}

const char *
anthropic_finish(const char *stop_reason)
{
	if (stop_reason == NULL)
		return NULL;
	if (strcmp(stop_reason, "max_tokens") == 0 ||
	    strcmp(stop_reason, "model_context_window_exceeded") == 0)
		return "length";
	if (strcmp(stop_reason, "tool_use") == 0)
		return "tool_calls";
	if (strcmp(stop_reason, "refusal") == 0)
		return "content_filter";
	return "stop";
}

static const char *
or_empty(const char *v)
{
	return v != NULL ? v : "";
}

/* What an answer's content blocks say, gathered. */
struct reply {
	struct buf	 text;		/* its text blocks */
	struct buf	 json;		/* the answer tool's input */
	struct json_object *calls;	/* its other tool calls, or NULL */
	int		 ntools;
	bool		 answered;	/* the answer tool was called */
};

/* The content blocks read into rp; 0, or -1 out of memory. */
static int
read_blocks(struct json_object *content, const char *answer,
    struct reply *rp)
{
	struct json_object *b, *input;
	const char	*type, *name;
	size_t		 i;

	for (i = 0; i < json_object_array_length(content); i++) {
		b = json_object_array_get_idx(content, i);
		type = json_get_str(b, "type");
		name = json_get_str(b, "name");
		input = json_object_object_get(b, "input");
		if (type != NULL && strcmp(type, "text") == 0 &&
		    json_get_str(b, "text") != NULL) {
			if (buf_puts(&rp->text, json_get_str(b, "text")) == -1)
				return -1;
		} else if (type != NULL && strcmp(type, "tool_use") == 0 &&
		    answer != NULL && *answer != '\0' && name != NULL &&
		    strcmp(name, answer) == 0) {
			/* The JSON answer: the content, alone. */
			if (buf_puts(&rp->json, input != NULL ?
			    json_text(input, NULL) : "{}") == -1)
				return -1;
			rp->answered = true;
		} else if (type != NULL && strcmp(type, "tool_use") == 0) {
			if (rp->calls == NULL)
				rp->calls = json_object_new_array();
			json_object_array_add(rp->calls, chat_tool_call(
			    or_empty(json_get_str(b, "id")), or_empty(name),
			    input));
			rp->ntools++;
		}
	}
	return 0;
}

struct json_object *
anthropic_response(struct json_object *r, const char *answer)
{
	struct json_object *o, *content, *msg, *choice, *choices, *u = NULL;
	struct reply	 rp = { { 0 }, { 0 }, NULL, 0, false };
	struct buf	*text;
	const char	*finish;

	if (json_get_str(r, "id") == NULL || !json_get(r, "content", &content) ||
	    !json_object_is_type(content, json_type_array))
		return NULL;
	if (read_blocks(content, answer, &rp) == -1) {
		buf_free(&rp.text);
		buf_free(&rp.json);
		if (rp.calls != NULL)
			json_object_put(rp.calls);
		return NULL;
	}
	o = json_object_new_object();
	json_object_object_add(o, "id", json_str(json_get_str(r, "id")));
	json_object_object_add(o, "object", json_str("chat.completion"));
	json_object_object_add(o, "created",
	    json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(o, "model",
	    json_str(or_empty(json_get_str(r, "model"))));
	text = rp.answered ? &rp.json : &rp.text;
	msg = json_object_new_object();
	json_object_object_add(msg, "role", json_str("assistant"));
	json_object_object_add(msg, "content",
	    text->len > 0 || rp.ntools == 0 ?
	    json_str(text->data ? text->data : "") : NULL);
	if (rp.calls != NULL)
		json_object_object_add(msg, "tool_calls", rp.calls);
	choice = json_object_new_object();
	json_object_object_add(choice, "index", json_object_new_int(0));
	json_object_object_add(choice, "message", msg);
	finish = anthropic_finish(json_get_str(r, "stop_reason"));
	/* The answer tool's call is the answer: a plain stop. */
	if (finish == NULL || (rp.answered && rp.ntools == 0))
		finish = "stop";
	json_object_object_add(choice, "finish_reason", json_str(finish));
	choices = json_object_new_array();
	json_object_array_add(choices, choice);
	json_object_object_add(o, "choices", choices);
	(void)json_get(r, "usage", &u);
	json_object_object_add(o, "usage", chat_usage(
	    usage_count(u, "input_tokens") +
	    usage_count(u, "cache_creation_input_tokens") +
	    usage_count(u, "cache_read_input_tokens"),
	    usage_count(u, "output_tokens")));
	buf_free(&rp.text);
	buf_free(&rp.json);
	return o;
}

/* A chunk with the stream's id, model and created, and one choice. */
static struct json_object *
chunk(const struct anthropic_stream *s, struct json_object *delta, const char *finish)
{
	return chat_chunk(s->id, s->model, s->created, delta, finish);
}

/* A chunk whose delta holds one tool call's piece; id and name or NULL. */
static struct json_object *
tool_call_chunk(struct anthropic_stream *s, int index, const char *id,
    const char *name, const char *args)
{
	struct json_object *tc = json_object_new_object(), *fn, *tcs, *delta;

	json_object_object_add(tc, "index", json_object_new_int(index));
	if (id != NULL) {
		json_object_object_add(tc, "id", json_str(id));
		json_object_object_add(tc, "type", json_str("function"));
	}
	fn = json_object_new_object();
	if (name != NULL)
		json_object_object_add(fn, "name", json_str(name));
	json_object_object_add(fn, "arguments", json_str(args));
	json_object_object_add(tc, "function", fn);
	tcs = json_object_new_array();
	json_object_array_add(tcs, tc);
	delta = json_object_new_object();
	json_object_object_add(delta, "tool_calls", tcs);
	return chunk(s, delta, NULL);
}

static enum anthropic_step
message_start(struct anthropic_stream *s, struct json_object *ev,
    struct json_object **out)
{
	struct json_object *m, *u, *delta;

	if (json_get(ev, "message", &m)) {
		snprintf(s->id, sizeof(s->id), "%s",
		    or_empty(json_get_str(m, "id")));
		snprintf(s->model, sizeof(s->model), "%s",
		    or_empty(json_get_str(m, "model")));
		if (json_get(m, "usage", &u)) {
			s->input_tokens = usage_count(u, "input_tokens") +
			    usage_count(u, "cache_creation_input_tokens") +
			    usage_count(u, "cache_read_input_tokens");
			s->output_tokens = usage_count(u, "output_tokens");
		}
	}
	s->created = (long)time(NULL);
	delta = json_object_new_object();
	json_object_object_add(delta, "role", json_str("assistant"));
	json_object_object_add(delta, "content", json_str(""));
	*out = chunk(s, delta, NULL);
	return ANT_EMIT;
}

/* A tool_use block begins: a tool call, unless it carries the answer. */
static enum anthropic_step
block_start(struct anthropic_stream *s, struct json_object *ev,
    struct json_object **out)
{
	struct json_object *v, *cb;
	const char	*dt;
	int		 idx;

	idx = json_get(ev, "index", &v) ? json_object_get_int(v) : -1;
	if (!json_get(ev, "content_block", &cb) ||
	    (dt = json_get_str(cb, "type")) == NULL ||
	    strcmp(dt, "tool_use") != 0 || idx < 0 || idx >= ANT_MAX_BLOCKS)
		return ANT_SKIP;
	if (s->answer[0] != '\0' && json_get_str(cb, "name") != NULL &&
	    strcmp(json_get_str(cb, "name"), s->answer) == 0) {
		s->block_tool[idx] = -1;	/* content follows */
		return ANT_SKIP;
	}
	/* Our own tool counter: not Anthropic's block index. */
	s->block_tool[idx] = s->ntools + 1;
	*out = tool_call_chunk(s, s->ntools++, or_empty(json_get_str(cb, "id")),
	    or_empty(json_get_str(cb, "name")), "");
	return ANT_EMIT;
}

static enum anthropic_step
block_delta(struct anthropic_stream *s, struct json_object *ev,
    struct json_object **out)
{
	struct json_object *v, *d, *delta;
	const char	*dt;
	int		 idx;

	idx = json_get(ev, "index", &v) ? json_object_get_int(v) : -1;
	if (!json_get(ev, "delta", &d) || (dt = json_get_str(d, "type")) == NULL)
		return ANT_SKIP;
	if (strcmp(dt, "input_json_delta") == 0 && idx >= 0 &&
	    idx < ANT_MAX_BLOCKS && s->block_tool[idx] == -1) {
		delta = json_object_new_object();
		json_object_object_add(delta, "content",
		    json_str(or_empty(json_get_str(d, "partial_json"))));
		*out = chunk(s, delta, NULL);
		return ANT_EMIT;
	}
	/* A JSON answer is the content alone. */
	if (strcmp(dt, "text_delta") == 0 && json_get_str(d, "text") &&
	    s->answer[0] == '\0') {
		delta = json_object_new_object();
		json_object_object_add(delta, "content",
		    json_str(json_get_str(d, "text")));
		*out = chunk(s, delta, NULL);
		return ANT_EMIT;
	}
	if (strcmp(dt, "input_json_delta") == 0 && idx >= 0 &&
	    idx < ANT_MAX_BLOCKS && s->block_tool[idx] > 0) {
		*out = tool_call_chunk(s, s->block_tool[idx] - 1, NULL, NULL,
		    or_empty(json_get_str(d, "partial_json")));
		return ANT_EMIT;
	}
	return ANT_SKIP;
}

static enum anthropic_step
message_delta(struct anthropic_stream *s, struct json_object *ev,
    struct json_object **out)
{
	struct json_object *u, *v, *d;

	if (json_get(ev, "usage", &u) && json_get(u, "output_tokens", &v))
		s->output_tokens = usage_count(u, "output_tokens");
	if (json_get(ev, "delta", &d) && json_get_str(d, "stop_reason") != NULL) {
		snprintf(s->finish, sizeof(s->finish), "%s",
		    s->answer[0] != '\0' && s->ntools == 0 ? "stop" :
		    anthropic_finish(json_get_str(d, "stop_reason")));
		*out = chunk(s, json_object_new_object(), s->finish);
		return ANT_EMIT;
	}
	return ANT_SKIP;
}

static enum anthropic_step
stream_error(struct json_object *ev, struct json_object **out)
{
	struct json_object *e = json_object_new_object(), *err;
	char		 etype[64] = "upstream_error";

	if (!json_get(ev, "error", &err))
		err = NULL;
	json_object_object_add(e, "message", json_str(err != NULL &&
	    json_get_str(err, "message") ? json_get_str(err, "message") :
	    "anthropic reported an error"));
	/* Its own type (overloaded_error, ...), as a 4xx keeps it. */
	if (err != NULL)
		provider_error_word(json_get_str(err, "type"), etype,
		    sizeof(etype));
	json_object_object_add(e, "type", json_str(etype));
	json_object_object_add(e, "code", json_str("upstream_error"));
	*out = json_object_new_object();
	json_object_object_add(*out, "error", e);
	return ANT_ERROR;
}

enum anthropic_step
anthropic_stream_event(struct anthropic_stream *s, struct json_object *ev,
    struct json_object **out)
{
	const char	*type = json_get_str(ev, "type");

	*out = NULL;
	if (type == NULL)
		return ANT_SKIP;
	if (strcmp(type, "message_start") == 0)
		return message_start(s, ev, out);
	if (strcmp(type, "content_block_start") == 0)
		return block_start(s, ev, out);
	if (strcmp(type, "content_block_delta") == 0)
		return block_delta(s, ev, out);
	if (strcmp(type, "message_delta") == 0)
		return message_delta(s, ev, out);
	if (strcmp(type, "message_stop") == 0) {
		*out = chunk(s, NULL, NULL);
		json_object_object_add(*out, "usage",
		    chat_usage(s->input_tokens, s->output_tokens));
		return ANT_DONE;
	}
	if (strcmp(type, "error") == 0)
		return stream_error(ev, out);
	return ANT_SKIP;	/* ping, content_block_stop, unknown */
}

/* The provider (providers/provider.h): state is the stream's. */

static enum provider_result
prepare(struct provider_call *c, char *err, size_t errsz)
{
	struct anthropic_stream *s = c->state;
	struct json_object *o = NULL;

	if (c->op == PROVIDER_NATIVE) {
		/* A Messages request goes as it came, for the model resolved. */
		if (json_object_deep_copy(c->request, &o, NULL) != 0)
			return PROVIDER_FAILED;
		json_object_object_add(o, "model", json_str(c->model));
	} else if (c->op != PROVIDER_CHAT) {
		snprintf(err, errsz, "anthropic has no embeddings");
		return PROVIDER_REFUSED;
	} else if (anthropic_request(c->request, c->model, c->max_tokens > 0 ?
	    c->max_tokens : c->default_max_tokens, &o, err, errsz) == -1)
		return PROVIDER_REFUSED;
	else
		anthropic_answer_tool(c->request, s->answer);
	c->headers[0] = "anthropic-version: 2023-06-01";
	return provider_put(c, "/v1/messages", o);
}

static struct json_object *
reply(struct provider_call *c, struct json_object *o, char *err,
    size_t errsz)
{
	const struct anthropic_stream *s = c->state;
	struct json_object *t;

	/* A native reply is read for its usage only. */
	t = anthropic_response(o, c->op == PROVIDER_NATIVE ? "" : s->answer);
	if (t == NULL) {
		snprintf(err, errsz, "anthropic sent a reply that is not a "
		    "message");
		return NULL;
	}
	provider_take_usage(c, t);
	if (c->op != PROVIDER_NATIVE)
		return t;
	json_object_put(t);
	return json_object_get(o);
}

static enum provider_step
event(struct provider_call *c, struct json_object *ev,
    struct json_object *out)
{
	struct anthropic_stream *s = c->state;
	struct json_object *o = NULL;
	const char	*type = json_get_str(ev, "type");
	enum provider_step r = PROVIDER_MORE;

	switch (anthropic_stream_event(s, ev, &o)) {
	case ANT_SKIP:
	case ANT_EMIT:
	case ANT_STEP__MAX:
		break;
	case ANT_DONE:
		r = PROVIDER_END;
		break;
	case ANT_ERROR:
		r = PROVIDER_ERROR;
		break;
	}
	if (o != NULL)
		json_object_array_add(out, o);
	/* message_start tells the input, message_delta the final output. */
	if (s->id[0] != '\0') {
		c->prompt_tokens = s->input_tokens;
		c->completion_tokens = s->output_tokens;
		c->have_usage = true;
	}
	if (type != NULL && strcmp(type, "message_delta") == 0)
		c->usage_final = true;
	return r;
}

static const char *const anthropic_models[] = { "claude-", NULL };

const struct provider_module provider_anthropic = {
	.name = "anthropic",
	.key_format = "sk-ant-...",
	.key_prefix = "sk-ant-",
	.inline_header = "X-Anthropic-Key",
	.inline_param = "HTTP_X_ANTHROPIC_KEY",
	.models = anthropic_models,
	.native_messages = true,
	.auth = "x-api-key: ",
	.check_path = "/v1/models",
	.check_header = "anthropic-version: 2023-06-01",
	.pass_header = {
		{ "anthropic-version", "HTTP_ANTHROPIC_VERSION" },
		{ "anthropic-beta", "HTTP_ANTHROPIC_BETA" },
	},
	.state_size = sizeof(struct anthropic_stream),
	.prepare = prepare,
	.reply = reply,
	.event = event,
};
