/*
 * OpenAI, OpenRouter and the operator's own upstreams all speak the OpenAI
 * chat format, so a request goes out as the client sent it, with the model
 * id resolved and usage asked for on streams.
 */
#include "autoconfig.h"

#include <string.h>

#include "lib/json.h"
#include "providers/providers.h"

/* The call to base + path, with the model replaced (see below). */
static int
prepare(const char *base, const char *path, const char *model,
    const char *key, struct json_object *request, struct buf *url,
    struct buf *auth, struct buf *body)
{
	struct json_object *copy = NULL, *stream, *opts;
	const char	*text;
	size_t		 bl = strlen(base), len;
	int		 rc = -1;

	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (json_object_deep_copy(request, &copy, NULL) != 0)
		return -1;
	json_object_object_add(copy, "model", json_object_new_string(model));
	if (json_object_object_get_ex(copy, "stream", &stream) &&
	    json_object_get_boolean(stream)) {
		/* The final usage is what a stream is billed on. */
		if (!json_object_object_get_ex(copy, "stream_options", &opts) ||
		    !json_object_is_type(opts, json_type_object)) {
			opts = json_object_new_object();
			json_object_object_add(copy, "stream_options", opts);
		}
		json_object_object_add(opts, "include_usage",
		    json_object_new_boolean(1));
	}
	text = json_text(copy, &len);
	buf_reset(url);
	buf_reset(auth);
	buf_reset(body);
	if (buf_printf(url, "%.*s%s", (int)bl, base, path) == 0 &&
	    (key == NULL || *key == '\0' ||
	    buf_printf(auth, "Authorization: Bearer %s", key) == 0) &&
	    buf_append(body, text, len) == 0)
		rc = 0;
	json_object_put(copy);
	return rc;
}

int
openai_prepare(const char *base, const char *model, const char *key,
    struct json_object *request, struct buf *url, struct buf *auth,
    struct buf *body)
{
	return prepare(base, "/chat/completions", model, key, request, url,
	    auth, body);
}

int
openai_prepare_embeddings(const char *base, const char *model,
    const char *key, struct json_object *request, struct buf *url,
    struct buf *auth, struct buf *body)
{
	return prepare(base, "/embeddings", model, key, request, url, auth,
	    body);
}
