/*
 * Google Gemini generateContent: requests, replies and streams translated
 * to and from the OpenAI chat shape (see the provider notes' table).
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/crypto.h"
#include "lib/json.h"
#include "providers/gemini.h"
#include "providers/providers.h"

#define MAX_CALLS 64

static struct json_object *
text_part(const char *t)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "text", json_str(t));
	return p;
}

/* OpenAI content (string or parts) as Gemini parts; NULL when malformed. */
static struct json_object *
parts_of(struct json_object *content)
{
	struct json_object *parts = json_object_new_array(), *iu, *p, *d;
	const char	*type, *url, *comma, *semi;
	size_t		 i;

	if (content == NULL)
		return parts;
	if (json_object_is_type(content, json_type_string)) {
		json_object_array_add(parts,
		    text_part(json_object_get_string(content)));
		return parts;
	}
	if (!json_object_is_type(content, json_type_array))
		goto bad;
	for (i = 0; i < json_object_array_length(content); i++) {
		struct json_object *part = json_object_array_get_idx(content, i);

		type = json_get_str(part, "type");
		if (type != NULL && strcmp(type, "text") == 0 &&
		    json_get_str(part, "text") != NULL) {
			json_object_array_add(parts,
			    text_part(json_get_str(part, "text")));
			continue;
		}
		/* Images inline only: Gemini is not to fetch URLs for us. */
		if (type == NULL || strcmp(type, "image_url") != 0 ||
		    !json_get(part, "image_url", &iu) ||
		    (url = json_get_str(iu, "url")) == NULL ||
		    strncmp(url, "data:", 5) != 0 ||
		    (comma = strchr(url, ',')) == NULL ||
		    (semi = strchr(url, ';')) == NULL || semi > comma)
			goto bad;
		p = json_object_new_object();
		d = json_object_new_object();
		json_object_object_add(d, "mimeType",
		    json_object_new_string_len(url + 5, (int)(semi - url - 5)));
		json_object_object_add(d, "data", json_str(comma + 1));
		json_object_object_add(p, "inlineData", d);
		json_object_array_add(parts, p);
	}
	return parts;
bad:
	json_object_put(parts);
	return NULL;
}

/* The function name of tool call id in the earlier assistant turns. */
static const char *
call_name(struct json_object *msgs, size_t upto, const char *id)
{
	struct json_object *calls, *fn;
	size_t	 i, j;

	for (i = 0; i < upto; i++) {
		struct json_object *m = json_object_array_get_idx(msgs, i);

		if (!json_get(m, "tool_calls", &calls) ||
		    !json_object_is_type(calls, json_type_array))
			continue;
		for (j = 0; j < json_object_array_length(calls); j++) {
			struct json_object *tc =
			    json_object_array_get_idx(calls, j);
			const char *tid = json_get_str(tc, "id");

			if (tid != NULL && strcmp(tid, id) == 0 &&
			    json_get(tc, "function", &fn))
				return json_get_str(fn, "name");
		}
	}
	return NULL;
}

/*
 * A response_format as generationConfig: JSON out, and for json_schema
 * the schema as responseJsonSchema (full JSON Schema, unlike
 * responseSchema's OpenAPI subset).  0, or -1 with err set.
 */
static int
answer_format(struct json_object *req, struct json_object *gc, char *err,
    size_t errsz)
{
	struct json_object *schema;
	int		 f = chat_response_format(req, &schema, err, errsz);

	if (f == -1)
		return -1;
	if (f == CHAT_FORMAT_TEXT)
		return 0;
	if (schema != NULL)
		json_object_object_add(gc, "responseJsonSchema",
		    json_object_get(schema));
	json_object_object_add(gc, "responseMimeType",
	    json_str("application/json"));
	return 0;
}

/* An assistant message: its text, then its tool calls.  0, or -1. */
static int
model_turn(struct json_object *m, struct json_object *contents, char *err,
    size_t errsz)
{
	struct json_object *parts, *calls, *tc, *fn, *args, *p, *f;
	enum json_parse_error why;
	const char	*s;
	char		 e[64];
	size_t		 j;

	if ((parts = parts_of(json_object_object_get(m, "content"))) == NULL)
		return -1;
	if (json_get(m, "tool_calls", &calls) &&
	    json_object_is_type(calls, json_type_array))
		for (j = 0; j < json_object_array_length(calls); j++) {
			tc = json_object_array_get_idx(calls, j);
			if (!json_get(tc, "function", &fn) ||
			    json_get_str(fn, "name") == NULL) {
				json_object_put(parts);
				return -1;
			}
			s = json_get_str(fn, "arguments");
			args = json_parse(s != NULL && *s ? s : "{}",
			    s != NULL && *s ? strlen(s) : 2, &why, e, sizeof(e));
			if (args == NULL) {
				snprintf(err, errsz, "tool call arguments are "
				    "not JSON");
				json_object_put(parts);
				return -1;
			}
			f = json_object_new_object();
			json_object_object_add(f, "name",
			    json_str(json_get_str(fn, "name")));
			json_object_object_add(f, "args", args);
			p = json_object_new_object();
			json_object_object_add(p, "functionCall", f);
			json_object_array_add(parts, p);
		}
	chat_add_turn(contents, "model", "parts", parts);
	return 0;
}

/*
 * A tool message (message i of msgs): a functionResponse, named after the
 * call it answers.  0, or -1.
 */
static int
tool_turn(struct json_object *msgs, size_t i, struct json_object *contents,
    char *err, size_t errsz)
{
	struct json_object *m = json_object_array_get_idx(msgs, i), *content,
			   *p, *fr, *resp, *parts;
	struct buf	 text = { 0 };
	const char	*s, *name;

	if ((s = json_get_str(m, "tool_call_id")) == NULL ||
	    (name = call_name(msgs, i, s)) == NULL) {
		snprintf(err, errsz, "a tool result answers no earlier tool "
		    "call");
		return -1;
	}
	content = json_object_object_get(m, "content");
	if (content != NULL && json_object_is_type(content, json_type_string) &&
	    buf_puts(&text, json_object_get_string(content)) == -1) {
		buf_free(&text);
		return -1;
	}
	resp = json_object_new_object();
	json_object_object_add(resp, "output",
	    json_str(text.data != NULL ? text.data : ""));
	buf_free(&text);
	fr = json_object_new_object();
	json_object_object_add(fr, "name", json_str(name));
	json_object_object_add(fr, "response", resp);
	p = json_object_new_object();
	json_object_object_add(p, "functionResponse", fr);
	parts = json_object_new_array();
	json_object_array_add(parts, p);
	chat_add_turn(contents, "user", "parts", parts);
	return 0;
}

/*
 * The messages as Gemini's contents (turns of alternating roles) and its
 * system instruction's parts (sys).  0, or -1.
 */
static int
turns(struct json_object *msgs, struct json_object *contents,
    struct json_object *sys, char *err, size_t errsz)
{
	struct json_object *m, *parts;
	const char	*role;
	size_t		 i, j;

	for (i = 0; i < json_object_array_length(msgs); i++) {
		m = json_object_array_get_idx(msgs, i);
		if ((role = json_get_str(m, "role")) == NULL)
			return -1;
		if (strcmp(role, "system") == 0 ||
		    strcmp(role, "developer") == 0) {
			if ((parts = parts_of(json_object_object_get(m,
			    "content"))) == NULL)
				return -1;
			for (j = 0; j < json_object_array_length(parts); j++)
				json_object_array_add(sys, json_object_get(
				    json_object_array_get_idx(parts, j)));
			json_object_put(parts);
		} else if (strcmp(role, "user") == 0) {
			if ((parts = parts_of(json_object_object_get(m,
			    "content"))) == NULL)
				return -1;
			chat_add_turn(contents, "user", "parts", parts);
		} else if (strcmp(role, "assistant") == 0) {
			if (model_turn(m, contents, err, errsz) == -1)
				return -1;
		} else if (strcmp(role, "tool") == 0) {
			if (tool_turn(msgs, i, contents, err, errsz) == -1)
				return -1;
		} else
			return -1;
	}
	return 0;
}

/* The sampling settings, as generationConfig when there are any.  0, -1. */
static int
generation_config(struct json_object *req, struct json_object *o, char *err,
    size_t errsz)
{
	struct json_object *gc = json_object_new_object(), *v;

	if ((json_get(req, "max_completion_tokens", &v) ||
	    json_get(req, "max_tokens", &v)))
		json_object_object_add(gc, "maxOutputTokens",
		    json_object_get(v));
	if (json_get(req, "temperature", &v))
		json_object_object_add(gc, "temperature", json_object_get(v));
	if (json_get(req, "top_p", &v))
		json_object_object_add(gc, "topP", json_object_get(v));
	if (json_get(req, "n", &v)) {
		if (!json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) < 1 ||
		    json_object_get_int64(v) > GEMINI_MAX_CHOICES) {
			snprintf(err, errsz, "n must be a whole number from 1 "
			    "to %d", GEMINI_MAX_CHOICES);
			json_object_put(gc);
			return -1;
		}
		json_object_object_add(gc, "candidateCount", json_object_get(v));
	}
	if (json_get(req, "stop", &v))
		json_object_object_add(gc, "stopSequences", chat_stop_list(v));
	if (answer_format(req, gc, err, errsz) == -1) {
		json_object_put(gc);
		return -1;
	}
	if (json_object_object_length(gc) > 0)
		json_object_object_add(o, "generationConfig", gc);
	else
		json_object_put(gc);
	return 0;
}

/* tools as functionDeclarations.  0, or -1. */
static int
tool_declarations(struct json_object *req, struct json_object *o)
{
	struct json_object *v, *decls, *t, *tl, *fn, *d;
	size_t		 i;

	if (!json_get(req, "tools", &v) ||
	    !json_object_is_type(v, json_type_array))
		return 0;
	decls = json_object_new_array();
	for (i = 0; i < json_object_array_length(v); i++) {
		if (!json_get(json_object_array_get_idx(v, i), "function",
		    &fn) || (d = chat_tool_decl(fn, "parameters", "parameters",
		    false)) == NULL) {
			json_object_put(decls);
			return -1;
		}
		json_object_array_add(decls, d);
	}
	t = json_object_new_object();
	json_object_object_add(t, "functionDeclarations", decls);
	tl = json_object_new_array();
	json_object_array_add(tl, t);
	json_object_object_add(o, "tools", tl);
	return 0;
}

/* tool_choice as toolConfig.  0, or -1. */
static int
tool_config(struct json_object *req, struct json_object *o)
{
	struct json_object *v, *tc, *fcc, *fn, *names;
	const char	*c;

	if (!json_get(req, "tool_choice", &v))
		return 0;
	tc = json_object_new_object();
	fcc = json_object_new_object();
	c = json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : NULL;
	json_object_object_add(tc, "functionCallingConfig", fcc);
	if (c != NULL && strcmp(c, "auto") == 0)
		json_object_object_add(fcc, "mode", json_str("AUTO"));
	else if (c != NULL && strcmp(c, "none") == 0)
		json_object_object_add(fcc, "mode", json_str("NONE"));
	else if (c != NULL && strcmp(c, "required") == 0)
		json_object_object_add(fcc, "mode", json_str("ANY"));
	else if (json_get(v, "function", &fn) && json_get_str(fn, "name")) {
		names = json_object_new_array();
		json_object_array_add(names, json_str(json_get_str(fn, "name")));
		json_object_object_add(fcc, "mode", json_str("ANY"));
		json_object_object_add(fcc, "allowedFunctionNames", names);
	} else {
		json_object_put(tc);
		return -1;
	}
	json_object_object_add(o, "toolConfig", tc);
	return 0;
}

int
gemini_request(struct json_object *req, struct json_object **out, char *err,
    size_t errsz)
{
	struct json_object *o = json_object_new_object(), *contents, *msgs,
			   *si;
	struct json_object *sys = json_object_new_array();

	*out = NULL;
	snprintf(err, errsz, "the request cannot be expressed for google");
	contents = json_object_new_array();
	json_object_object_add(o, "contents", contents);
	if (!json_get(req, "messages", &msgs) ||
	    !json_object_is_type(msgs, json_type_array) ||
	    turns(msgs, contents, sys, err, errsz) == -1)
		goto bad;
	if (json_object_array_length(sys) > 0) {
		si = json_object_new_object();
		json_object_object_add(si, "parts", json_object_get(sys));
		json_object_object_add(o, "systemInstruction", si);
	}
	if (generation_config(req, o, err, errsz) == -1 ||
	    tool_declarations(req, o) == -1 || tool_config(req, o) == -1)
		goto bad;
	json_object_put(sys);
	*out = o;
	return 0;
bad:
	json_object_put(sys);
	json_object_put(o);
	return -1;
}

int
gemini_choices(struct json_object *req)
{
	struct json_object *v;

	if (!json_get(req, "n", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) < 1 ||
	    json_object_get_int64(v) > GEMINI_MAX_CHOICES)
		return 1;
	return (int)json_object_get_int64(v);
}

void
gemini_state_init(struct gemini_state *s, const char *model, int n)
{
	uint8_t	 rnd[12];

	memset(s, 0, sizeof(s[0]));
	s->n = n >= 1 && n <= GEMINI_MAX_CHOICES ? n : 1;
	crypto_nonce(rnd, sizeof(rnd));
	memcpy(s->id, "chatcmpl-", 9);
	crypto_hex(rnd, sizeof(rnd), s->id + 9);
	snprintf(s->model, sizeof(s->model), "%s", model);
	s->created = (long)time(NULL);
}

static void
take_usage(struct gemini_state *s, struct json_object *r)
{
	struct json_object *u;

	if (!json_get(r, "usageMetadata", &u))
		return;
	s->prompt_tokens = usage_count(u, "promptTokenCount") +
	    usage_count(u, "toolUsePromptTokenCount");
	s->completion_tokens = usage_count(u, "candidatesTokenCount") +
	    usage_count(u, "thoughtsTokenCount");
}

/*
 * The OpenAI finish_reason of a Gemini finishReason, or NULL when the
 * reason is an error rather than a finish.
 */
static const char *
finish_of(const struct gemini_choice *s, const char *r)
{
	static const char *const filtered[] = { "SAFETY", "RECITATION",
	    "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
	    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE", NULL };
	size_t	 i;

	if (strcmp(r, "STOP") == 0)
		return s->saw_call ? "tool_calls" : "stop";
	if (strcmp(r, "MAX_TOKENS") == 0)
		return "length";
	for (i = 0; filtered[i] != NULL; i++)
		if (strcmp(r, filtered[i]) == 0)
			return "content_filter";
	return NULL;	/* MALFORMED_FUNCTION_CALL, OTHER, ... */
}

/*
 * The choice index of a candidate: its "index", which Gemini (proto3 JSON)
 * leaves out when it is 0, whatever the candidate's place in the array.
 * -1 when it is n or more.
 */
static int
candidate_index(const struct gemini_state *s, struct json_object *cand,
    size_t i)
{
	struct json_object *v;
	int64_t		 k = 0;

	(void)i;
	if (json_get(cand, "index", &v) && json_object_is_type(v, json_type_int))
		k = json_object_get_int64(v);
	return k >= 0 && k < s->n ? (int)k : -1;
}

/*
 * Walks a candidate's parts (choice k): text into *text (thoughts
 * skipped), functionCall parts into calls (a new array, or left NULL).
 */
static int
walk_parts(struct gemini_choice *s, int k, struct json_object *cand,
    struct buf *text, struct json_object **calls)
{
	struct json_object *content, *parts, *p, *fc, *v, *tc, *fn, *args;
	char	 id[40];
	size_t	 i;

	if (!json_get(cand, "content", &content) || !json_get(content, "parts", &parts))
		return 0;
	for (i = 0; i < json_object_array_length(parts); i++) {
		p = json_object_array_get_idx(parts, i);
		if (json_get(p, "thought", &v) && json_object_get_boolean(v))
			continue;
		if (json_get_str(p, "text") != NULL) {
			if (buf_puts(text, json_get_str(p, "text")) == -1)
				return -1;
		} else if (json_get(p, "functionCall", &fc)) {
			s->saw_call = true;
			if (*calls == NULL)
				*calls = json_object_new_array();
			/* Unique across choices: call_3, call_1_3, ... */
			if (json_get_str(fc, "id") != NULL)
				snprintf(id, sizeof(id), "%s", json_get_str(fc, "id"));
			else if (k == 0)
				snprintf(id, sizeof(id), "call_%d", s->ncalls);
			else
				snprintf(id, sizeof(id), "call_%d_%d", k,
				    s->ncalls);
			tc = json_object_new_object();
			json_object_object_add(tc, "index",
			    json_object_new_int(s->ncalls++));
			json_object_object_add(tc, "id", json_str(id));
			json_object_object_add(tc, "type", json_str("function"));
			fn = json_object_new_object();
			json_object_object_add(fn, "name",
			    json_str(json_get_str(fc, "name") ? json_get_str(fc, "name") : ""));
			json_object_object_add(fn, "arguments",
			    json_str(json_get(fc, "args", &args) ?
			    json_text(args, NULL) : "{}"));
			json_object_object_add(tc, "function", fn);
			json_object_array_add(*calls, tc);
		}
	}
	return 0;
}

/*
 * One candidate as a choice of a chat.completion: {index, message,
 * finish_reason}, or NULL with err set when it ended in an error.
 */
static struct json_object *
response_choice(struct gemini_choice *ch, int k, struct json_object *cand,
    char *err, size_t errsz)
{
	struct json_object *msg, *choice, *calls = NULL;
	struct buf	 text = { 0 };
	const char	*reason, *finish = "content_filter";
	size_t		 i;

	if (cand != NULL) {
		if (walk_parts(ch, k, cand, &text, &calls) == -1) {
			snprintf(err, errsz, "out of memory");
			goto bad;
		}
		reason = json_get_str(cand, "finishReason");
		if ((finish = finish_of(ch, reason != NULL ? reason : "STOP")) ==
		    NULL) {
			snprintf(err, errsz, "google ended with %s", reason);
			goto bad;
		}
	}
	msg = json_object_new_object();
	json_object_object_add(msg, "role", json_str("assistant"));
	json_object_object_add(msg, "content", text.len > 0 || calls == NULL ?
	    json_str(text.data ? text.data : "") : NULL);
	if (calls != NULL) {
		/* index belongs to stream deltas, not to a whole message. */
		for (i = 0; i < json_object_array_length(calls); i++)
			json_object_object_del(json_object_array_get_idx(calls,
			    i), "index");
		json_object_object_add(msg, "tool_calls", calls);
	}
	choice = json_object_new_object();
	json_object_object_add(choice, "index", json_object_new_int(k));
	json_object_object_add(choice, "message", msg);
	json_object_object_add(choice, "finish_reason", json_str(finish));
	buf_free(&text);
	return choice;
bad:
	buf_free(&text);
	if (calls != NULL)
		json_object_put(calls);
	return NULL;
}

struct json_object *
gemini_response(struct json_object *r, const char *model, char *err,
    size_t errsz)
{
	struct gemini_state s;
	struct json_object *cands, *o, *choice, *choices, *pf;
	size_t		 i;
	int		 k;

	gemini_state_init(&s, model, GEMINI_MAX_CHOICES);
	take_usage(&s, r);
	choices = json_object_new_array();
	if (!json_get(r, "candidates", &cands) ||
	    !json_object_is_type(cands, json_type_array) ||
	    json_object_array_length(cands) == 0) {
		/* The prompt itself was blocked. */
		if (!json_get(r, "promptFeedback", &pf) ||
		    json_get_str(pf, "blockReason") == NULL) {
			snprintf(err, errsz, "google sent no candidates");
			goto bad;
		}
		if ((choice = response_choice(&s.choice[0], 0, NULL, err,
		    errsz)) == NULL)
			goto bad;
		json_object_array_add(choices, choice);
	} else
		for (i = 0; i < json_object_array_length(cands); i++) {
			struct json_object *cand =
			    json_object_array_get_idx(cands, i);

			if ((k = candidate_index(&s, cand, i)) == -1 ||
			    s.choice[k].started) {
				snprintf(err, errsz, "google sent a candidate "
				    "out of place");
				goto bad;
			}
			s.choice[k].started = true;
			if ((choice = response_choice(&s.choice[k], k, cand,
			    err, errsz)) == NULL)
				goto bad;
			json_object_array_add(choices, choice);
		}
	o = json_object_new_object();
	json_object_object_add(o, "id", json_str(s.id));
	json_object_object_add(o, "object", json_str("chat.completion"));
	json_object_object_add(o, "created", json_object_new_int64(s.created));
	json_object_object_add(o, "model", json_str(json_get_str(r, "modelVersion") ?
	    json_get_str(r, "modelVersion") : model));
	json_object_object_add(o, "choices", choices);
	json_object_object_add(o, "usage",
	    chat_usage(s.prompt_tokens, s.completion_tokens));
	return o;
bad:
	json_object_put(choices);
	return NULL;
}

static struct json_object *
chunk(const struct gemini_state *s, int k, struct json_object *delta,
    const char *finish)
{
	return chat_chunk_at(s->id, s->model, s->created, k, delta, finish);
}

/* The role chunk that opens choice k, once. */
static void
open_choice(struct gemini_state *s, int k, struct json_object *out)
{
	struct json_object *delta;

	if (s->choice[k].started)
		return;
	delta = json_object_new_object();
	json_object_object_add(delta, "role", json_str("assistant"));
	json_object_object_add(delta, "content", json_str(""));
	json_object_array_add(out, chunk(s, k, delta, NULL));
	s->choice[k].started = true;
}

/* One candidate of a stream event as chunks of choice k. */
static int
stream_candidate(struct gemini_state *s, int k, struct json_object *cand,
    struct json_object *out, char *err, size_t errsz)
{
	struct gemini_choice *ch = &s->choice[k];
	struct json_object *calls = NULL, *delta;
	struct buf	 text = { 0 };
	const char	*reason, *finish;
	int		 i;

	open_choice(s, k, out);
	if (walk_parts(ch, k, cand, &text, &calls) == -1) {
		buf_free(&text);
		if (calls != NULL)
			json_object_put(calls);
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	if (text.len > 0) {
		delta = json_object_new_object();
		json_object_object_add(delta, "content", json_str(text.data));
		json_object_array_add(out, chunk(s, k, delta, NULL));
	}
	buf_free(&text);
	/* A call arrives whole: id, name and all its arguments at once. */
	if (calls != NULL) {
		delta = json_object_new_object();
		json_object_object_add(delta, "tool_calls", calls);
		json_object_array_add(out, chunk(s, k, delta, NULL));
	}
	if ((reason = json_get_str(cand, "finishReason")) != NULL) {
		if ((finish = finish_of(ch, reason)) == NULL) {
			snprintf(err, errsz, "google ended with %s", reason);
			return -1;
		}
		ch->finished = true;
		json_object_array_add(out,
		    chunk(s, k, json_object_new_object(), finish));
		for (s->finished = true, i = 0; i < s->n; i++)
			s->finished = s->finished && s->choice[i].finished;
	}
	return 0;
}

int
gemini_stream_event(struct gemini_state *s, struct json_object *ev,
    struct json_object *out, char *err, size_t errsz)
{
	struct json_object *cands, *e;
	size_t		 i;
	int		 k;

	if (json_get(ev, "error", &e)) {
		snprintf(err, errsz, "%s", json_get_str(e, "message") ?
		    json_get_str(e, "message") : "google reported an error");
		return -1;
	}
	take_usage(s, ev);
	/* The first choice opens with the first event, whatever it holds. */
	open_choice(s, 0, out);
	if (!json_get(ev, "candidates", &cands) ||
	    !json_object_is_type(cands, json_type_array))
		return 0;
	for (i = 0; i < json_object_array_length(cands); i++) {
		struct json_object *cand = json_object_array_get_idx(cands, i);

		if ((k = candidate_index(s, cand, i)) == -1) {
			snprintf(err, errsz, "google sent more candidates than "
			    "asked for");
			return -1;
		}
		if (stream_candidate(s, k, cand, out, err, errsz) == -1)
			return -1;
	}
	return 0;
}

struct json_object *
gemini_usage_chunk(const struct gemini_state *s)
{
	struct json_object *o = chunk(s, 0, NULL, NULL);

	json_object_object_add(o, "usage",
	    chat_usage(s->prompt_tokens, s->completion_tokens));
	return o;
}

int
gemini_embed_request(struct json_object *req, const char *model,
    struct json_object **out, char *err, size_t errsz)
{
	struct json_object *in, *one = NULL, *reqs, *r, *c, *parts, *v;
	struct buf	 name = { 0 };
	size_t		 i, n;

	*out = NULL;
	if (!json_get(req, "input", &in))
		goto bad;
	if (json_object_is_type(in, json_type_string)) {
		one = json_object_new_array();
		json_object_array_add(one, json_object_get(in));
		in = one;
	} else if (!json_object_is_type(in, json_type_array))
		goto bad;
	if ((n = json_object_array_length(in)) == 0)
		goto bad;
	if (buf_printf(&name, "models/%s", model) == -1)
		goto bad;
	reqs = json_object_new_array();
	for (i = 0; i < n; i++) {
		v = json_object_array_get_idx(in, i);
		if (!json_object_is_type(v, json_type_string)) {
			json_object_put(reqs);
			goto bad;
		}
		parts = json_object_new_array();
		json_object_array_add(parts, text_part(json_object_get_string(v)));
		c = json_object_new_object();
		json_object_object_add(c, "parts", parts);
		r = json_object_new_object();
		json_object_object_add(r, "model", json_str(name.data));
		json_object_object_add(r, "content", c);
		if (json_get(req, "dimensions", &v))
			json_object_object_add(r, "outputDimensionality",
			    json_object_get(v));
		json_object_array_add(reqs, r);
	}
	*out = json_object_new_object();
	json_object_object_add(*out, "requests", reqs);
	buf_free(&name);
	if (one != NULL)
		json_object_put(one);
	return 0;
bad:
	snprintf(err, errsz, "google embeds text: input must be a string or "
	    "a non-empty array of strings");
	buf_free(&name);
	if (one != NULL)
		json_object_put(one);
	return -1;
}

/* The numbers of values as little-endian float32, in base64 (new). */
static struct json_object *
floats_base64(struct json_object *values)
{
	size_t		 n = json_object_array_length(values), i;
	uint8_t		*raw = malloc(n * 4 + 1);
	char		*text = malloc((n * 4 + 2) / 3 * 4 + 1);
	struct json_object *o = NULL;

	if (raw != NULL && text != NULL) {
		for (i = 0; i < n; i++) {
			float	 f = (float)json_object_get_double(
			    json_object_array_get_idx(values, i));
			uint32_t u;

			memcpy(&u, &f, 4);
			raw[i * 4] = (uint8_t)u;
			raw[i * 4 + 1] = (uint8_t)(u >> 8);
			raw[i * 4 + 2] = (uint8_t)(u >> 16);
			raw[i * 4 + 3] = (uint8_t)(u >> 24);
		}
		(void)base64_encode(raw, n * 4, text);
		o = json_str(text);
	}
	free(raw);
	free(text);
	return o;
}

struct json_object *
gemini_embed_response(struct json_object *reply, const char *model,
    bool base64, long prompt_tokens, char *err, size_t errsz)
{
	struct json_object *embs, *o, *data, *d, *values, *vec, *u;
	size_t		 i;

	if (!json_get(reply, "embeddings", &embs) ||
	    !json_object_is_type(embs, json_type_array)) {
		snprintf(err, errsz, "google sent no embeddings");
		return NULL;
	}
	data = json_object_new_array();
	for (i = 0; i < json_object_array_length(embs); i++) {
		if (!json_get(json_object_array_get_idx(embs, i), "values",
		    &values) || !json_object_is_type(values, json_type_array) ||
		    (vec = base64 ? floats_base64(values) :
		    json_object_get(values)) == NULL) {
			json_object_put(data);
			snprintf(err, errsz, "google sent an embedding without "
			    "values");
			return NULL;
		}
		d = json_object_new_object();
		json_object_object_add(d, "object", json_str("embedding"));
		json_object_object_add(d, "index", json_object_new_int((int)i));
		json_object_object_add(d, "embedding", vec);
		json_object_array_add(data, d);
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("list"));
	json_object_object_add(o, "data", data);
	json_object_object_add(o, "model", json_str(model));
	u = json_object_new_object();
	json_object_object_add(u, "prompt_tokens",
	    json_object_new_int64(prompt_tokens));
	json_object_object_add(u, "total_tokens",
	    json_object_new_int64(prompt_tokens));
	json_object_object_add(o, "usage", u);
	return o;
}

/* The provider (providers/provider.h): state is the translation's. */

/* The model goes in the URL's path: a plain name only. */
static bool
model_ok(const char *m)
{
	return m[strspn(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789.-_")] == '\0';
}

/* What was held is all the call may produce. */
static void
limit_output(struct provider_call *c, struct json_object *o)
{
	struct json_object *gc, *v;

	if (c->max_tokens <= 0)
		return;
	if (!json_get(o, "generationConfig", &gc)) {
		gc = json_object_new_object();
		json_object_object_add(o, "generationConfig", gc);
	}
	if (!json_get(gc, "maxOutputTokens", &v))
		json_object_object_add(gc, "maxOutputTokens",
		    json_object_new_int64(c->max_tokens));
}

static enum provider_result
prepare(struct provider_call *c, char *err, size_t errsz)
{
	struct gemini_state *s = c->state;
	struct json_object *o;
	char		 path[400];

	if (!model_ok(c->model) || strlen(c->model) > 256)
		return PROVIDER_BAD_MODEL;
	if (c->op == PROVIDER_EMBED) {
		if (gemini_embed_request(c->request, c->model, &o, err,
		    errsz) == -1)
			return PROVIDER_REFUSED;
		snprintf(path, sizeof(path), "/v1beta/models/%s:"
		    "batchEmbedContents", c->model);
		return provider_put(c, path, o);
	}
	if (gemini_request(c->request, &o, err, errsz) == -1)
		return PROVIDER_REFUSED;
	limit_output(c, o);
	gemini_state_init(s, c->model, gemini_choices(c->request));
	snprintf(path, sizeof(path), "/v1beta/models/%s:%s", c->model,
	    c->stream ? "streamGenerateContent?alt=sse" : "generateContent");
	return provider_put(c, path, o);
}

static struct json_object *
reply(struct provider_call *c, struct json_object *o, char *err,
    size_t errsz)
{
	struct json_object *t;
	const char	*enc;

	if (c->op == PROVIDER_EMBED) {
		enc = json_get_str(c->request, "encoding_format");
		t = gemini_embed_response(o, c->model, enc != NULL &&
		    strcmp(enc, "base64") == 0, c->prompt_estimate, err, errsz);
	} else
		t = gemini_response(o, c->model, err, errsz);
	if (t != NULL)
		provider_take_usage(c, t);
	return t;
}

static enum provider_step
event(struct provider_call *c, struct json_object *ev,
    struct json_object *out)
{
	struct gemini_state *s = c->state;
	char		 err[256];

	if (gemini_stream_event(s, ev, out, err, sizeof(err)) == -1)
		return provider_stream_error(out, err, "upstream_error");
	if (s->finished) {
		c->prompt_tokens = s->prompt_tokens;
		c->completion_tokens = s->completion_tokens;
		c->have_usage = true;
	}
	return PROVIDER_MORE;
}

/* Gemini has no terminator: the end of the body is the end. */
static bool
body_end(struct provider_call *c, struct json_object *out)
{
	const struct gemini_state *s = c->state;

	if (!s->finished)
		return false;
	json_object_array_add(out, gemini_usage_chunk(s));
	return true;
}

static const char *const google_models[] = { "gemini-", NULL };

const struct provider_module provider_google = {
	.name = "google",
	.key_format = "AIza...",
	.key_prefix = "AIza",
	.inline_header = "X-Google-Key",
	.inline_param = "HTTP_X_GOOGLE_KEY",
	.models = google_models,
	.embeddings = true,
	.auth = "x-goog-api-key: ",
	.check_path = "/v1beta/models",
	.state_size = sizeof(struct gemini_state),
	.prepare = prepare,
	.reply = reply,
	.event = event,
	.body_end = body_end,
};
