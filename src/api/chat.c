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
#include "api/call.h"
#include "api/metrics.h"
#include "api/validate.h"
#include "core/gateway.h"
#include "lib/json.h"
#include "providers/providers.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/* Body fields that would send the call elsewhere or add headers. */
static const char *const forbidden[] = {
	"api_base", "base_url", "api_key", "headers", "extra_headers",
	"api_version", "organization", NULL,
};

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
	struct call	 call, *c = &call;
	struct worker	*w = req->w;
	struct json_object *v, *opts;
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
		if (call_reserve(c, body) == -1)
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
	call_stream_init(c);
	if (call_prepare(c, orig) == 0)
		call_perform(c);
out:
	call_end(c);
	if (reserved)
		metrics_holds(w, -1);
	api_call_end(req);
}

int
api_gateway_checked(struct request *req, const char *const absent[][2],
    void (*check)(struct checks *, struct json_object *),
    struct json_object **body, const char **model)
{
	struct checks	 ck = { NULL };
	size_t		 i;

	*model = NULL;
	if (!api_body_object(req, body))
		return -1;
	if (*body == NULL) {
		check_fail(&ck, "model", "required: a model name");
		for (i = 0; absent[i][0] != NULL; i++)
			check_fail(&ck, absent[i][0], "%s", absent[i][1]);
	} else {
		if (api_gateway_forbidden(req, *body) == -1)
			return -1;
		*model = api_gateway_model(&ck, *body);
		check(&ck, *body);
	}
	/* With no body the checks have failed, and answered. */
	if (check_done(req, &ck) == -1 || api_gateway_inline_keys(req) == -1)
		return -1;
	return 0;
}

void
api_chat_completions(struct request *req)
{
	static const char *const absent[][2] = {
		{ "messages", "required: a non-empty array" }, { NULL, NULL },
	};
	struct json_object *body;
	const char	*model;

	if (api_gateway_checked(req, absent, api_gateway_turns, &body,
	    &model) == 0)
		api_gateway(req, API_FORMAT_CHAT, body, NULL, model);
}
