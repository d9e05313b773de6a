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

/* max_tokens is required in a Messages request; then the turns. */
static void
check_messages(struct checks *ck, struct json_object *body)
{
	long		 max;
	bool		 present;

	if (!check_int(ck, body, "max_tokens", 1, 1 << 24, &max, &present) &&
	    !present)
		check_fail(ck, "max_tokens", "required: a whole number of at "
		    "least 1");
	api_gateway_turns(ck, body);
}

/*
 * POST /v1/messages: a Messages request, checked as Anthropic checks it
 * (model, max_tokens and a non-empty messages array are required), then
 * the same gateway.
 */
void
api_messages(struct request *req)
{
	static const char *const absent[][2] = {
		{ "max_tokens", "required: a whole number of at least 1" },
		{ "messages", "required: a non-empty array" }, { NULL, NULL },
	};
	struct json_object *body, *chat = NULL;
	const char	*model;
	char		 err[160];

	if (api_gateway_checked(req, absent, check_messages, &body,
	    &model) == -1)
		return;
	if (messages_to_chat(body, &chat, err, sizeof(err)) == -1) {
		http_error(req, ERR_BAD_REQUEST, "This request is not a "
		    "Messages request: %s.", err);
		return;
	}
	api_gateway(req, API_FORMAT_MESSAGES, chat, body, model);
	json_object_put(chat);
}
