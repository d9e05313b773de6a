#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/upstream.h"
#include "providers/providers.h"

void
provider_error_word(const char *s, char *out, size_t outsz)
{
	size_t	 n;

	if (s == NULL || (n = strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")) == 0 ||
	    s[n] != '\0' || n >= outsz)
		return;
	memcpy(out, s, n + 1);
}

void
provider_error_parse(const struct buf *body, long status,
    struct provider_error *pe)
{
	struct json_object *o, *err;
	enum json_parse_error why;
	const char	*code;
	char		 e[32];

	snprintf(pe->message, sizeof(pe->message), "HTTP %ld", status);
	pe->type[0] = pe->code[0] = '\0';
	if (body->len == 0 || (o = json_parse(body->data, body->len, &why, e,
	    sizeof(e))) == NULL)
		return;
	if (json_get(o, "error", &err) &&
	    json_object_is_type(err, json_type_object)) {
		if (json_get_str(err, "message") != NULL)
			snprintf(pe->message, sizeof(pe->message), "%s",
			    json_get_str(err, "message"));
		provider_error_word(json_get_str(err, "type"), pe->type,
		    sizeof(pe->type));
		/* OpenRouter's and Gemini's numeric code is the status. */
		if ((code = json_get_str(err, "code")) == NULL)
			code = json_get_str(err, "status");
		provider_error_word(code, pe->code, sizeof(pe->code));
	}
	json_object_put(o);
}

void
provider_error_message(const struct buf *body, long status, char *out,
    size_t outsz)
{
	struct provider_error pe;

	provider_error_parse(body, status, &pe);
	snprintf(out, outsz, "%s", pe.message);
}

enum validate_result
provider_validate_key(enum provider p, const char *base, const char *key,
    long connect_timeout, long timeout, char *reason, size_t reasonsz)
{
	const struct provider_module *d = providers[p];
	struct upstream_call call;
	struct buf	 url = { 0 }, auth = { 0 }, body = { 0 };
	size_t		 bl = strlen(base);
	long		 status;
	enum validate_result rc = VALIDATE_UNREACHABLE;

	memset(&call, 0, sizeof(call));
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (buf_printf(&url, "%.*s%s", (int)bl, base, d->check_path) == -1 ||
	    buf_printf(&auth, "%s%s", d->auth, key) == -1) {
		snprintf(reason, reasonsz, "out of memory");
		goto out;
	}
	call.method = "GET";
	call.url = url.data;
	call.headers[0] = auth.data;
	call.headers[1] = d->check_header;
	call.connect_timeout = connect_timeout;
	call.total_timeout = timeout;
	call.max_response = 1 << 20;
	if (upstream_perform(&call, &status, &body, reason, reasonsz) !=
	    UPSTREAM_OK)
		goto out;
	if (status >= 200 && status < 300)
		rc = VALIDATE_OK;
	else if (status >= 400 && status < 500 && status != 408 &&
	    status != 429) {
		provider_error_message(&body, status, reason, reasonsz);
		rc = VALIDATE_REJECTED;
	} else
		snprintf(reason, reasonsz, "the provider answered HTTP %ld",
		    status);
out:
	buf_free(&url);
	buf_free_secret(&auth);
	buf_free(&body);
	return rc;
}
