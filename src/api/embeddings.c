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

/*
 * POST /v1/embeddings: model and input (a string, or a non-empty array of
 * strings or token arrays) are required; then the same gateway, priced on
 * the input alone.
 */
void
api_embeddings(struct request *req)
{
	struct json_object *body, *in;
	struct checks	 ck = { NULL };
	const char	*model = NULL;

	if (!api_body_object(req, &body))
		return;
	if (body == NULL) {
		check_fail(&ck, "model", "required: a model name");
		check_fail(&ck, "input", "required: a string or an array");
	} else {
		if (api_gateway_forbidden(req, body) == -1)
			return;
		model = api_gateway_model(&ck, body);
		if (!json_object_object_get_ex(body, "input", &in) ||
		    !(json_object_is_type(in, json_type_string) ||
		    (json_object_is_type(in, json_type_array) &&
		    json_object_array_length(in) > 0)))
			check_fail(&ck, "input", "required: a string or a "
			    "non-empty array");
	}
	/* With no body the checks have failed, and answered. */
	if (check_done(req, &ck) == -1 || api_gateway_inline_keys(req) == -1)
		return;
	api_gateway(req, API_FORMAT_EMBEDDINGS, body, NULL, model);
}
