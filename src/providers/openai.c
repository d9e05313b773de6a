/*
 * OpenAI, OpenRouter and the operator's own upstreams all speak the OpenAI
 * chat format, so a request goes out as the client sent it, with the model
 * id resolved, usage asked for on streams, and the output tokens held for
 * the call as its limit when the client set none.  Replies and stream
 * chunks are already in the client's shape.
 */
#include "autoconfig.h"

#include <string.h>

#include "lib/json.h"
#include "providers/provider.h"

/* The request as sent: a copy of the client's with the model replaced. */
static struct json_object *
copy_request(struct provider_call *c, const char *limit)
{
	struct json_object *copy = NULL, *opts, *v;

	if (json_object_deep_copy(c->request, &copy, NULL) != 0)
		return NULL;
	json_object_object_add(copy, "model", json_str(c->model));
	if (c->op == PROVIDER_EMBED)
		return copy;
	if (c->stream) {
		/* The final usage is what a stream is billed on. */
		if (!json_get(copy, "stream_options", &opts) ||
		    !json_object_is_type(opts, json_type_object)) {
			opts = json_object_new_object();
			json_object_object_add(copy, "stream_options", opts);
		}
		json_object_object_add(opts, "include_usage",
		    json_object_new_boolean(1));
	}
	/* What was held is all the call may produce. */
	if (c->max_tokens > 0 && !json_get(copy, "max_tokens", &v) &&
	    !json_get(copy, "max_completion_tokens", &v))
		json_object_object_add(copy, limit,
		    json_object_new_int64(c->max_tokens));
	return copy;
}

static enum provider_result
prepare_as(struct provider_call *c, const char *limit)
{
	struct json_object *o = copy_request(c, limit);

	if (o == NULL)
		return PROVIDER_FAILED;
	return provider_put(c, c->op == PROVIDER_EMBED ? "/embeddings" :
	    "/chat/completions", o);
}

/* OpenAI's reasoning models take only max_completion_tokens. */
static enum provider_result
prepare_openai(struct provider_call *c, char *err, size_t errsz)
{
	(void)err;
	(void)errsz;
	return prepare_as(c, "max_completion_tokens");
}

/* OpenRouter, and servers that speak OpenAI's format, know max_tokens. */
static enum provider_result
prepare_compatible(struct provider_call *c, char *err, size_t errsz)
{
	(void)err;
	(void)errsz;
	return prepare_as(c, "max_tokens");
}

/* A reply is already a chat.completion (or embeddings list). */
static struct json_object *
reply(struct provider_call *c, struct json_object *o, char *err,
    size_t errsz)
{
	(void)err;
	(void)errsz;
	provider_take_usage(c, o);
	return json_object_get(o);
}

static const char *const openai_models[] = {
	"gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", NULL,
};
/* An OpenAI key is sk-, unless it is another provider's sk-. */
static const char *const openai_not[] = { "sk-ant-", "sk-or-", NULL };

const struct provider_module provider_openai = {
	.name = "openai",
	.key_format = "sk-proj-... or sk-...",
	.key_prefix = "sk-",
	.key_not = openai_not,
	.inline_header = "X-OpenAI-Key",
	.inline_param = "HTTP_X_OPENAI_KEY",
	.models = openai_models,
	.embeddings = true,
	.auth = "Authorization: Bearer ",
	.check_path = "/models",
	.prepare = prepare_openai,
	.reply = reply,
};

const struct provider_module provider_openrouter = {
	.name = "openrouter",
	.key_format = "sk-or-...",
	.key_prefix = "sk-or-",
	.inline_header = "X-OpenRouter-Key",
	.inline_param = "HTTP_X_OPENROUTER_KEY",
	.vendor_ids = true,
	.embeddings = true,
	.auth = "Authorization: Bearer ",
	.check_path = "/key",
	.prepare = prepare_compatible,
	.reply = reply,
};

/* The operator's upstreams: OpenAI's format, named by the operator. */
const struct provider_module provider_upstream = {
	.name = "upstream",
	.embeddings = true,
	.auth = "Authorization: Bearer ",
	.prepare = prepare_compatible,
	.reply = reply,
};
