/*
 * Unit tests for src/core/gateway.c's routing: which operator upstream or
 * built-in provider a model name goes to, and in which order the rules
 * apply.
 */
#include "../unit.h"

#include <unistd.h>

#include "core/gateway.h"
#include "server/config.h"

/* A config whose upstreams setting is text; NULL when it does not load. */
static struct config *
with_upstreams(const char *text)
{
	char	 path[] = "/tmp/kg-test-gateway-XXXXXX", err[256];
	int	 fd = mkstemp(path);
	FILE	*f;
	struct config *c;

	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fprintf(f, "upstreams = \"%s\"\n", text);
	fclose(f);
	c = config_load(path, err, sizeof(err));
	unlink(path);
	if (c == NULL)
		fail_msg("%s", err);
	return c;
}

/* The name of the upstream serving model, or "-"; *strip as it says. */
static const char *
routed(const struct config *c, const char *model, size_t *strip)
{
	const struct config_upstream *u = gateway_upstream(&c->upstreams, model,
	    strip);

	return u != NULL ? u->name : "-";
}

static void
test_builtin_rules(void **state)
{
	(void)state;
	assert_int_equal(provider_route("gpt-4o-mini"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("o3-mini"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("chatgpt-4o-latest"), PROVIDER_OPENAI);
	assert_int_equal(provider_route("text-embedding-3-small"),
	    PROVIDER_OPENAI);
	assert_int_equal(provider_route("gemini-embedding-001"), PROVIDER_GOOGLE);
	assert_int_equal(provider_route("claude-3-5-haiku"), PROVIDER_ANTHROPIC);
	assert_int_equal(provider_route("gemini-2.0-flash"), PROVIDER_GOOGLE);
	assert_int_equal(provider_route("meta-llama/llama-3.1-8b"),
	    PROVIDER_OPENROUTER);
	assert_int_equal(provider_route("llama3"), PROVIDER__MAX);
	assert_int_equal(provider_route("local/"), PROVIDER__MAX);
	assert_int_equal(provider_route("/gpt-4o"), PROVIDER__MAX);
}

static void
test_no_upstreams_route_nothing(void **state)
{
	struct config	*c = with_upstreams("");
	size_t		 strip = 99;

	(void)state;
	assert_string_equal(routed(c, "gpt-4o", &strip), "-");
	assert_int_equal(strip, 0);
	config_free(c);
}

static void
test_exact_then_longest_prefix(void **state)
{
	struct config	*c = with_upstreams(
	    "wide url=http://a/v1 models=llama*,local/* strip=true; "
	    "narrow url=http://b/v1 models=llama3,local/big/* strip=true; "
	    "plain url=http://c/v1 models=gpt-oss*");
	size_t		 strip;

	(void)state;
	/* An exact name beats any prefix, wherever it is written. */
	assert_string_equal(routed(c, "llama3", &strip), "narrow");
	assert_int_equal(strip, 0);
	assert_string_equal(routed(c, "llama3.1", &strip), "wide");
	assert_int_equal(strip, strlen("llama"));
	/* The longer prefix wins, and strips what it matched. */
	assert_string_equal(routed(c, "local/big/70b", &strip), "narrow");
	assert_int_equal(strip, strlen("local/big/"));
	assert_string_equal(routed(c, "local/small", &strip), "wide");
	assert_int_equal(strip, strlen("local/"));
	/* A prefix needs something after it. */
	assert_string_equal(routed(c, "local/", &strip), "-");
	assert_string_equal(routed(c, "llama", &strip), "-");
	/* Without strip the name goes as it came. */
	assert_string_equal(routed(c, "gpt-oss-20b", &strip), "plain");
	assert_int_equal(strip, 0);
	/* What no upstream claims is left to the built-in rules. */
	assert_string_equal(routed(c, "gpt-4o", &strip), "-");
	assert_string_equal(routed(c, "meta-llama/x", &strip), "-");
	config_free(c);
}

static void
test_a_bare_star_takes_everything(void **state)
{
	struct config	*c = with_upstreams("all url=http://a/v1 models=*; "
	    "one url=http://b/v1 models=claude-3-opus");
	size_t		 strip;

	(void)state;
	assert_string_equal(routed(c, "gpt-4o", &strip), "all");
	assert_string_equal(routed(c, "vendor/model", &strip), "all");
	assert_string_equal(routed(c, "claude-3-opus", &strip), "one");
	config_free(c);
}

/* No database, vault or cache is needed where no stored key is asked for. */
static enum resolve_result
resolve(const struct config *c, const char *model,
    const char *const sent[PROVIDER__MAX], bool open, struct gateway_key *k)
{
	struct gateway_settings set = { &c->upstreams,
	    c->pool_openrouter_key };

	return gateway_resolve(NULL, NULL, NULL, &set, "t", model, sent, open,
	    k);
}

static void
test_resolve_upstream(void **state)
{
	struct config	*c = with_upstreams("gpu url=http://a/v1 models=x*; "
	    "open url=http://b/v1 models=y");
	const char	*sent[PROVIDER__MAX] = { "sk-proj-inline" };
	struct gateway_key k;

	(void)state;
	c->upstreams.v[0].key = strdup("gpu-secret");
	/* An upstream's name wins over any key sent along. */
	assert_int_equal(resolve(c, "x1", sent, true, &k), RESOLVE_OK);
	assert_ptr_equal(k.upstream, &c->upstreams.v[0]);
	assert_int_equal(k.source, SOURCE_UPSTREAM);
	assert_true(k.pool);
	assert_string_equal(k.model, "x1");
	assert_string_equal(k.secret.data, "gpu-secret");
	assert_string_equal(gateway_provider_name(&k), "gpu");
	gateway_key_free(&k);
	/* Not opened: the same answer without the secret. */
	assert_int_equal(resolve(c, "x1", sent, false, &k), RESOLVE_OK);
	assert_int_equal(k.secret.len, 0);
	gateway_key_free(&k);
	assert_int_equal(resolve(c, "y", NULL, true, &k), RESOLVE_OK);
	assert_int_equal(k.secret.len, 0);
	assert_string_equal(gateway_provider_name(&k), "open");
	gateway_key_free(&k);
	config_free(c);
}

static void
test_resolve_inline_key_first(void **state)
{
	struct config	*c = with_upstreams("gpu url=http://a/v1 models=x*");
	const char	*sent[PROVIDER__MAX] = { NULL };
	struct gateway_key k;

	(void)state;
	sent[PROVIDER_ANTHROPIC] = "sk-ant-inline";
	sent[PROVIDER_OPENROUTER] = "sk-or-inline";
	/* The model's own provider's key beats an OpenRouter key. */
	assert_int_equal(resolve(c, "claude-3-5-haiku-latest", sent, true,
	    &k), RESOLVE_OK);
	assert_int_equal(k.provider, PROVIDER_ANTHROPIC);
	assert_int_equal(k.source, SOURCE_INLINE);
	assert_false(k.pool);
	assert_string_equal(k.model, "claude-3-5-haiku-latest");
	assert_string_equal(k.secret.data, "sk-ant-inline");
	gateway_key_free(&k);
	/* A vendor/model id goes to OpenRouter unchanged. */
	assert_int_equal(resolve(c, "meta-llama/llama-3.1-8b-instruct", sent,
	    true, &k), RESOLVE_OK);
	assert_int_equal(k.provider, PROVIDER_OPENROUTER);
	assert_int_equal(k.source, SOURCE_INLINE);
	assert_string_equal(k.model, "meta-llama/llama-3.1-8b-instruct");
	assert_string_equal(k.secret.data, "sk-or-inline");
	gateway_key_free(&k);
	/* An empty header is no key. */
	sent[PROVIDER_OPENROUTER] = "";
	assert_int_equal(resolve(c, "openai/gpt-4o", sent, true, &k),
	    RESOLVE_NONE);
	gateway_key_free(&k);
	config_free(c);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_builtin_rules),
    cmocka_unit_test(test_no_upstreams_route_nothing),
    cmocka_unit_test(test_exact_then_longest_prefix),
    cmocka_unit_test(test_a_bare_star_takes_everything),
    cmocka_unit_test(test_resolve_upstream),
    cmocka_unit_test(test_resolve_inline_key_first))
