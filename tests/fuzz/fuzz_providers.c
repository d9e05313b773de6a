/*
 * libFuzzer harness for the translation of what providers answer
 * (src/providers/anthropic.c, gemini.c): the input is split at newlines
 * into JSON documents, read as a whole reply and as the events of one
 * stream, by each provider's translation.  Whatever a provider sends, the
 * translation gives an answer or a refusal, never a memory error.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "lib/json.h"
#include "providers/anthropic.h"
#include "providers/gemini.h"

static void
put(struct json_object *o)
{
	if (o != NULL) {
		(void)json_object_to_json_string(o);
		json_object_put(o);
	}
}

static void
one(struct json_object *doc, struct anthropic_stream *as,
    struct gemini_state *gs, int *ant_over)
{
	struct json_object *out = NULL, *chunks;
	char		 err[128];

	put(anthropic_response(doc, ""));
	put(anthropic_response(doc, "answer"));
	put(gemini_response(doc, "gemini-2.0-flash", err, sizeof(err)));
	if (!*ant_over) {
		switch (anthropic_stream_event(as, doc, &out)) {
		case ANT_DONE:
		case ANT_ERROR:
			*ant_over = 1;
			break;
		default:
			break;
		}
		put(out);
	}
	if ((chunks = json_object_new_array()) != NULL) {
		(void)gemini_stream_event(gs, doc, chunks, err, sizeof(err));
		put(chunks);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct anthropic_stream as;
	struct gemini_state gs;
	struct json_object *doc;
	enum json_parse_error why;
	const char	*p = (const char *)data, *end = p + size, *nl;
	char		 err[128];
	int		 ant_over = 0;

	memset(&as, 0, sizeof(as));
	gemini_state_init(&gs, "gemini-2.0-flash", size > 0 ? data[0] % 4 + 1 :
	    1);
	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		doc = json_parse(p, (size_t)(nl - p), &why, err, sizeof(err));
		if (doc != NULL) {
			one(doc, &as, &gs, &ant_over);
			json_object_put(doc);
		}
		p = nl + 1;
	}
	put(gemini_usage_chunk(&gs));
	return 0;
}
