/*
 * The OpenAI chat shapes that the Anthropic and Gemini translations both
 * produce, written once.
 */
#include "autoconfig.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lib/json.h"
#include "providers/providers.h"

struct json_object *
chat_chunk(const char *id, const char *model, long created,
    struct json_object *delta, const char *finish)
{
	return chat_chunk_at(id, model, created, 0, delta, finish);
}

struct json_object *
chat_chunk_at(const char *id, const char *model, long created, int index,
    struct json_object *delta, const char *finish)
{
	struct json_object *o = json_object_new_object(), *choices, *c;

	json_object_object_add(o, "id", json_str(id));
	json_object_object_add(o, "object", json_str("chat.completion.chunk"));
	json_object_object_add(o, "created", json_object_new_int64(created));
	json_object_object_add(o, "model", json_str(model));
	choices = json_object_new_array();
	if (delta != NULL) {
		c = json_object_new_object();
		json_object_object_add(c, "index", json_object_new_int(index));
		json_object_object_add(c, "delta", delta);
		json_object_object_add(c, "finish_reason",
		    finish != NULL ? json_str(finish) : NULL);
		json_object_array_add(choices, c);
	}
	json_object_object_add(o, "choices", choices);
	return o;
}

struct json_object *
chat_tool_decl(struct json_object *fn, const char *from, const char *to,
    bool empty_schema)
{
	struct json_object *d, *schema;
	const char	*name = json_get_str(fn, "name");

	if (name == NULL)
		return NULL;
	d = json_object_new_object();
	json_object_object_add(d, "name", json_str(name));
	if (json_get_str(fn, "description") != NULL)
		json_object_object_add(d, "description",
		    json_str(json_get_str(fn, "description")));
	if (json_get(fn, from, &schema))
		json_object_object_add(d, to, json_object_get(schema));
	else if (empty_schema) {
		schema = json_object_new_object();
		json_object_object_add(schema, "type", json_str("object"));
		json_object_object_add(d, to, schema);
	}
	return d;
}

struct json_object *
chat_tool_call(const char *id, const char *name, struct json_object *input)
{
	struct json_object *tc = json_object_new_object(), *fn;

	json_object_object_add(tc, "id", json_str(id));
	json_object_object_add(tc, "type", json_str("function"));
	fn = json_object_new_object();
	json_object_object_add(fn, "name", json_str(name));
	json_object_object_add(fn, "arguments", json_str(input != NULL ?
	    json_text(input, NULL) : "{}"));
	json_object_object_add(tc, "function", fn);
	return tc;
}

long
usage_count(struct json_object *u, const char *key)
{
	struct json_object *v;
	int64_t		 n;

	if (u == NULL || !json_get(u, key, &v))
		return 0;
	n = json_object_get_int64(v);
	return n < 0 ? 0 : n > USAGE_COUNT_MAX ? USAGE_COUNT_MAX : (long)n;
}

struct json_object *
chat_usage(long prompt, long completion)
{
	struct json_object *u = json_object_new_object();
	long		 sum;

	/* A provider's figures are its own: they may be absurd. */
	if (__builtin_add_overflow(prompt, completion, &sum))
		sum = prompt > 0 ? LONG_MAX : LONG_MIN;

	json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
	json_object_object_add(u, "completion_tokens",
	    json_object_new_int64(completion));
	json_object_object_add(u, "total_tokens",
	    json_object_new_int64(sum));
	return u;
}

int
chat_response_format(struct json_object *req, struct json_object **schema,
    char *err, size_t errsz)
{
	struct json_object *rf, *js;
	const char	*type;

	*schema = NULL;
	if (!json_get(req, "response_format", &rf))
		return CHAT_FORMAT_TEXT;
	if (!json_object_is_type(rf, json_type_object) ||
	    (type = json_get_str(rf, "type")) == NULL ||
	    (strcmp(type, "text") != 0 && strcmp(type, "json_object") != 0 &&
	    strcmp(type, "json_schema") != 0)) {
		snprintf(err, errsz, "response_format.type must be text, "
		    "json_object or json_schema");
		return -1;
	}
	if (strcmp(type, "text") == 0)
		return CHAT_FORMAT_TEXT;
	if (strcmp(type, "json_object") == 0)
		return CHAT_FORMAT_JSON;
	if (!json_get(rf, "json_schema", &js) ||
	    !json_get(js, "schema", schema) ||
	    !json_object_is_type(*schema, json_type_object)) {
		*schema = NULL;
		snprintf(err, errsz, "response_format.json_schema.schema must "
		    "be an object");
		return -1;
	}
	return CHAT_FORMAT_SCHEMA;
}

struct json_object *
chat_stop_list(struct json_object *stop)
{
	struct json_object *ss = json_object_new_array();
	size_t	 i;

	if (json_object_is_type(stop, json_type_string))
		json_object_array_add(ss, json_str(json_object_get_string(stop)));
	else if (json_object_is_type(stop, json_type_array))
		for (i = 0; i < json_object_array_length(stop); i++)
			json_object_array_add(ss, json_object_get(
			    json_object_array_get_idx(stop, i)));
	return ss;
}

void
chat_add_turn(struct json_object *turns, const char *role, const char *member,
    struct json_object *items)
{
	size_t	 n = json_object_array_length(turns), i;
	struct json_object *last = n > 0 ?
	    json_object_array_get_idx(turns, n - 1) : NULL, *have, *t;
	const char *lr = last != NULL ? json_get_str(last, "role") : NULL;

	if (lr != NULL && strcmp(lr, role) == 0 &&
	    json_get(last, member, &have)) {
		for (i = 0; i < json_object_array_length(items); i++)
			json_object_array_add(have, json_object_get(
			    json_object_array_get_idx(items, i)));
		json_object_put(items);
		return;
	}
	t = json_object_new_object();
	json_object_object_add(t, "role", json_str(role));
	json_object_object_add(t, member, items);
	json_object_array_add(turns, t);
}
