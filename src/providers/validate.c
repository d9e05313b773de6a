#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/upstream.h"
#include "providers/providers.h"
#include "server/config.h"

/* Where each provider answers "is this key good?", under its base URL. */
static const struct {
	const char	*path;
	const char	*auth;		/* header carrying the key, up to it */
	const char	*extra;		/* another header, or NULL */
} checks[PROVIDER__MAX] = {
	/* PROVIDER_OPENAI */
	{ "/models", "Authorization: Bearer ", NULL },
	/* PROVIDER_ANTHROPIC */
	{ "/v1/models", "x-api-key: ", "anthropic-version: 2023-06-01" },
	/* PROVIDER_GOOGLE */
	{ "/v1beta/models", "x-goog-api-key: ", NULL },
	/* PROVIDER_OPENROUTER */
	{ "/key", "Authorization: Bearer ", NULL },
};

const char *
provider_base_url(const struct config *cfg, enum provider p)
{
	switch (p) {
	case PROVIDER_OPENAI:
		return cfg->openai_base_url;
	case PROVIDER_ANTHROPIC:
		return cfg->anthropic_base_url;
	case PROVIDER_GOOGLE:
		return cfg->google_base_url;
	case PROVIDER_OPENROUTER:
	case PROVIDER__MAX:
		break;
	}
	return cfg->openrouter_base_url;
}

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
provider_validate_key(const struct config *cfg, enum provider p,
    const char *key, char *reason, size_t reasonsz)
{
	struct upstream_call call;
	struct buf	 url = { 0 }, auth = { 0 }, body = { 0 };
	const char	*base = provider_base_url(cfg, p);
	size_t		 bl = strlen(base);
	long		 status;
	enum validate_result rc = VALIDATE_UNREACHABLE;

	memset(&call, 0, sizeof(call));
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (buf_printf(&url, "%.*s%s", (int)bl, base, checks[p].path) == -1 ||
	    buf_printf(&auth, "%s%s", checks[p].auth, key) == -1) {
		snprintf(reason, reasonsz, "out of memory");
		goto out;
	}
	call.method = "GET";
	call.url = url.data;
	call.headers[0] = auth.data;
	call.headers[1] = checks[p].extra;
	call.connect_timeout = cfg->upstream_connect_timeout;
	call.total_timeout = cfg->upstream_connect_timeout +
	    cfg->upstream_idle_timeout;
	if (call.total_timeout > cfg->upstream_total_timeout)
		call.total_timeout = cfg->upstream_total_timeout;
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
