/*
 * libFuzzer harness for src/lib/json.c's parser, which every provider
 * answer and stream event goes through: any bytes give an object or a
 * reason, never a memory error; what parses prints and parses again.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "lib/json.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *o, *again;
	enum json_parse_error why;
	const char	*text;
	char		 err[128];

	o = json_parse((const char *)data, size, &why, err, sizeof(err));
	if (o == NULL) {
		if (err[0] == '\0')
			abort();	/* a refusal always says why */
		return 0;
	}
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	again = json_parse(text, strlen(text), &why, err, sizeof(err));
	if (again == NULL)
		abort();
	json_object_put(again);
	json_object_put(o);
	return 0;
}
