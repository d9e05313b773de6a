/*
 * POST /v1/embeddings: the gateway for embeddings (api/chat.c runs the
 * call).
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>

#include "api/api.h"
#include "api/validate.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/request.h"

/* input is a string, or a non-empty array of strings or token arrays. */
static void
check_input(struct checks *ck, struct json_object *body)
{
	struct json_object *in;

	if (!json_object_object_get_ex(body, "input", &in) ||
	    !(json_object_is_type(in, json_type_string) ||
	    (json_object_is_type(in, json_type_array) &&
	    json_object_array_length(in) > 0)))
		check_fail(ck, "input", "required: a string or a non-empty "
		    "array");
}

/*
 * POST /v1/embeddings: model and input are required; then the same
 * gateway, priced on the input alone.
 */
void
api_embeddings(struct request *req)
{
	static const char *const absent[][2] = {
		{ "input", "required: a string or an array" }, { NULL, NULL },
	};
	struct json_object *body;
	const char	*model;

	if (api_gateway_checked(req, absent, check_input, &body, &model) == 0)
		api_gateway(req, API_FORMAT_EMBEDDINGS, body, NULL, model);
}
