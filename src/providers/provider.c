/*
 * The table of providers, and what every operation shares: a name read
 * back, a key's format, a model name's route, a request put together.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json.h"
#include "providers/provider.h"
#include "providers/providers.h"

const struct provider_module *const providers[PROVIDER__MAX] = {
	&provider_openai,	/* PROVIDER_OPENAI */
	&provider_anthropic,	/* PROVIDER_ANTHROPIC */
	&provider_google,	/* PROVIDER_GOOGLE */
	&provider_openrouter,	/* PROVIDER_OPENROUTER */
};

enum provider
provider_parse(const char *s)
{
	int	 p;

	for (p = 0; p < PROVIDER__MAX; p++)
		if (strcmp(s, providers[p]->name) == 0)
			return (enum provider)p;
	return PROVIDER__MAX;
}

static bool
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool
provider_key_format_ok(enum provider p, const char *key)
{
	const struct provider_module *d;
	size_t	 n = strlen(key), i;

	if (p >= PROVIDER__MAX || n < 20 || n > 512)
		return false;
	for (i = 0; i < n; i++)
		if (!isgraph((unsigned char)key[i]))
			return false;
	d = providers[p];
	if (!starts(key, d->key_prefix))
		return false;
	for (i = 0; d->key_not != NULL && d->key_not[i] != NULL; i++)
		if (starts(key, d->key_not[i]))
			return false;
	return true;
}

enum provider
provider_aggregator(void)
{
	int	 p;

	for (p = 0; p < PROVIDER__MAX; p++)
		if (providers[p]->vendor_ids)
			return (enum provider)p;
	return PROVIDER__MAX;
}

enum provider
provider_route(const char *m)
{
	size_t	 i, n = strlen(m);
	int	 p;

	if (strchr(m, '/') != NULL) {
		/* vendor/model: both parts there. */
		if (m[0] == '/' || m[n - 1] == '/')
			return PROVIDER__MAX;
		for (p = 0; p < PROVIDER__MAX; p++)
			if (providers[p]->vendor_ids)
				return (enum provider)p;
		return PROVIDER__MAX;
	}
	for (p = 0; p < PROVIDER__MAX; p++)
		for (i = 0; providers[p]->models != NULL &&
		    providers[p]->models[i] != NULL; i++)
			if (starts(m, providers[p]->models[i]))
				return (enum provider)p;
	return PROVIDER__MAX;
}

enum provider_result
provider_put(struct provider_call *c, const char *path, struct json_object *o)
{
	const char	*text;
	size_t		 bl = strlen(c->base), n;
	int		 rc;

	while (bl > 0 && c->base[bl - 1] == '/')
		bl--;
	buf_reset(&c->url);
	buf_reset(&c->body);
	text = json_text(o, &n);
	rc = buf_printf(&c->url, "%.*s%s", (int)bl, c->base, path) == 0 &&
	    buf_append(&c->body, text, n) == 0;
	json_object_put(o);
	return rc ? PROVIDER_OK : PROVIDER_FAILED;
}

enum provider_step
provider_stream_error(struct json_object *out, const char *message,
    const char *code)
{
	struct json_object *o = json_object_new_object(), *e;

	e = json_object_new_object();
	json_object_object_add(e, "message", json_str(message));
	json_object_object_add(e, "type", json_str("upstream_error"));
	json_object_object_add(e, "code", json_str(code));
	json_object_object_add(o, "error", e);
	json_object_array_add(out, o);
	return PROVIDER_ERROR;
}

void
provider_take_usage(struct provider_call *c, struct json_object *o)
{
	struct json_object *u, *v;

	if (!json_get(o, "usage", &u))
		return;
	if (json_get(u, "prompt_tokens", &v))
		c->prompt_tokens = usage_count(u, "prompt_tokens");
	if (json_get(u, "completion_tokens", &v))
		c->completion_tokens = usage_count(u, "completion_tokens");
	c->have_usage = true;
}

void
provider_call_free(struct provider_call *c)
{
	buf_free(&c->url);
	buf_free(&c->body);
	free(c->state);
	c->state = NULL;
}
