/*
 * libFuzzer harness for src/api/validate.c, the checks every request body
 * and query string goes through: any bytes as a JSON body checked field
 * by field, and as a query string, a timestamp and a UUID.  Every check
 * answers (a value, or an error recorded with the field it names), never
 * a memory error.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "api/validate.h"
#include "server/http.h"

/* check_done() answers through it; the harness never calls check_done(). */
void
http_error_details(struct request *req, enum http_err e,
    struct json_object *details, const char *fmt, ...)
{
	(void)req;
	(void)e;
	(void)details;
	(void)fmt;
	abort();
}

static const char *const fields[] = {
	"name", "scopes", "expires_at", "rate_limit_max", "stream", "model",
	NULL,
};

/* Every error names a field and says something. */
static void
errors_are_whole(const struct checks *c)
{
	size_t	 i;

	for (i = 0; c->details != NULL &&
	    i < json_object_array_length(c->details); i++) {
		struct json_object *d = json_object_array_get_idx(c->details,
		    i), *f, *m;

		if (!json_object_object_get_ex(d, "field", &f) ||
		    !json_object_object_get_ex(d, "message", &m) ||
		    json_object_get_string_len(m) == 0)
			abort();
	}
}

static void
body(const char *text, size_t n)
{
	struct json_object *o, *a;
	struct checks	 c = { NULL };
	const char	*s;
	bool		 present, on;
	long		 v;
	size_t		 i;

	if ((o = json_tokener_parse(text)) == NULL || n == 0)
		return;
	if (json_object_is_type(o, json_type_object)) {
		check_known_fields(&c, o, fields);
		if ((s = check_string(&c, o, "name", 64, &present)) != NULL &&
		    strlen(s) > 64)
			abort();
		if ((a = check_string_array(&c, o, "scopes", 8,
		    &present)) != NULL)
			for (i = 0; i < json_object_array_length(a); i++)
				if (!json_object_is_type(
				    json_object_array_get_idx(a, i),
				    json_type_string))
					abort();
		if (check_int(&c, o, "rate_limit_max", 1, 1000, &v,
		    &present) && (v < 1 || v > 1000))
			abort();
		(void)check_bool(&c, o, "stream", &on);
		if ((s = check_string(&c, o, "expires_at", 0, &present)) !=
		    NULL) {
			time_t t;

			(void)iso8601_parse(s, &t);
		}
		errors_are_whole(&c);
	}
	check_free(&c);
	json_object_put(o);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*text, out[64];
	time_t	 t;

	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	body(text, size);
	if (query_get(text, "limit", out, sizeof(out)) == 1 &&
	    strlen(out) >= sizeof(out))
		abort();
	(void)query_only(text, "cursor");
	if (iso8601_parse(text, &t) == 0 && t < 0)
		abort();
	if (uuid_valid(text) && strlen(text) != 36)
		abort();
	free(text);
	return 0;
}
