/*
 * libFuzzer harness for the translation of what clients send: a body
 * (any JSON) as an OpenAI chat request to Anthropic's and Gemini's
 * formats, and as an Anthropic Messages request to OpenAI's.  Every body
 * gets a request or a reason, never a memory error.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "lib/json.h"
#include "providers/anthropic.h"
#include "providers/gemini.h"
#include "providers/messages.h"

static void
check(int rc, struct json_object *out, const char *err)
{
	if (rc == 0) {
		if (out == NULL)
			abort();
		(void)json_object_to_json_string(out);
		json_object_put(out);
	} else if (err[0] == '\0')
		abort();	/* a refusal always says why */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *req, *out;
	enum json_parse_error why;
	char		 err[256], name[ANT_TOOL_NAME];
	int		 rc;

	req = json_parse((const char *)data, size, &why, err, sizeof(err));
	if (req == NULL || !json_object_is_type(req, json_type_object)) {
		json_object_put(req);
		return 0;
	}
	out = NULL;
	err[0] = '\0';
	rc = anthropic_request(req, "claude-3-5-haiku-latest", 4096, &out, err,
	    sizeof(err));
	check(rc, out, err);
	anthropic_answer_tool(req, name);
	if (memchr(name, '\0', sizeof(name)) == NULL)
		abort();
	out = NULL;
	err[0] = '\0';
	rc = gemini_request(req, &out, err, sizeof(err));
	check(rc, out, err);
	if (rc == 0 && (gemini_choices(req) < 1 || gemini_choices(req) > 8))
		abort();
	out = NULL;
	err[0] = '\0';
	rc = messages_to_chat(req, &out, err, sizeof(err));
	check(rc, out, err);
	json_object_put(req);
	return 0;
}
