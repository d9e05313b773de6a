/*
 * POST /v1/messages: Anthropic's Messages API in front of the gateway
 * (api/chat.c runs the call).
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>

#include "api/api.h"
#include "api/validate.h"
#include "lib/json.h"
#include "providers/messages.h"
#include "server/http.h"
#include "server/request.h"

/*
 * POST /v1/messages: a Messages request, checked as Anthropic checks it
 * (model, max_tokens and a non-empty messages array are required), then
 * the same gateway.
 */
void
api_messages(struct request *req)
{
	struct json_object *body, *chat = NULL;
	struct checks	 ck = { NULL };
	const char	*model = NULL;
	char		 err[160];
	long		 max;
	bool		 present;

	if (!api_body_object(req, &body))
		return;
	if (body == NULL) {
		check_fail(&ck, "model", "required: a model name");
		check_fail(&ck, "max_tokens", "required: a whole number of "
		    "at least 1");
		check_fail(&ck, "messages", "required: a non-empty array");
	} else {
		if (api_gateway_forbidden(req, body) == -1)
			return;
		model = api_gateway_model(&ck, body);
		if (!check_int(&ck, body, "max_tokens", 1, 1 << 24, &max,
		    &present) && !present)
			check_fail(&ck, "max_tokens", "required: a whole number "
			    "of at least 1");
		api_gateway_turns(&ck, body);
	}
	/* With no body the checks have failed, and answered. */
	if (check_done(req, &ck) == -1 || api_gateway_inline_keys(req) == -1)
		return;
	if (messages_to_chat(body, &chat, err, sizeof(err)) == -1) {
		http_error(req, ERR_BAD_REQUEST, "This request is not a "
		    "Messages request: %s.", err);
		return;
	}
	api_gateway(req, API_FORMAT_MESSAGES, chat, body, model);
	json_object_put(chat);
}
