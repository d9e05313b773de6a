#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "core/gateway.h"
#include "core/keycache.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "server/config.h"

const char *const gateway_inline_param[PROVIDER__MAX] = {
	"HTTP_X_OPENAI_KEY",		/* PROVIDER_OPENAI */
	"HTTP_X_ANTHROPIC_KEY",		/* PROVIDER_ANTHROPIC */
	"HTTP_X_GOOGLE_KEY",		/* PROVIDER_GOOGLE */
	"HTTP_X_OPENROUTER_KEY",	/* PROVIDER_OPENROUTER */
};

enum provider
gateway_route(const char *m)
{
	static const struct {
		const char	*prefix;
		enum provider	 provider;
	} rules[] = {
		{ "gpt-", PROVIDER_OPENAI },
		{ "o1", PROVIDER_OPENAI },
		{ "o3", PROVIDER_OPENAI },
		{ "o4", PROVIDER_OPENAI },
		{ "chatgpt-", PROVIDER_OPENAI },
		{ "text-embedding-", PROVIDER_OPENAI },
		{ "claude-", PROVIDER_ANTHROPIC },
		{ "gemini-", PROVIDER_GOOGLE },
	};
	size_t	 i;

	/* vendor/model is an OpenRouter id, whatever the vendor. */
	if (strchr(m, '/') != NULL)
		return m[0] != '/' && m[strlen(m) - 1] != '/' ?
		    PROVIDER_OPENROUTER : PROVIDER__MAX;
	for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
		if (strncmp(m, rules[i].prefix, strlen(rules[i].prefix)) == 0)
			return rules[i].provider;
	return PROVIDER__MAX;
}

const struct config_upstream *
gateway_upstream(const struct config *cfg, const char *m, size_t *strip)
{
	const struct config_upstream *best = NULL, *u;
	size_t		 i, j, len, best_len = 0, ml = strlen(m);

	*strip = 0;
	for (i = 0; i < cfg->upstreams.n; i++) {
		u = &cfg->upstreams.v[i];
		for (j = 0; j < u->nmodels; j++) {
			len = strlen(u->models[j]);
			if (u->models[j][len - 1] != '*') {
				/* An exact name: nothing beats it. */
				if (strcmp(u->models[j], m) == 0) {
					*strip = 0;
					return u;
				}
				continue;
			}
			len--;
			if (ml > len && strncmp(u->models[j], m, len) == 0 &&
			    (best == NULL || len > best_len)) {
				best = u;
				best_len = len;
			}
		}
	}
	if (best != NULL && best->strip)
		*strip = best_len;
	return best;
}

const char *
gateway_provider_name(const struct gateway_key *k)
{
	if (k->upstream != NULL)
		return k->upstream->name;
	return k->provider < PROVIDER__MAX ? provider_names[k->provider] :
	    "none";
}

/* The OpenRouter id of a native model: "openai/gpt-4o" and so on. */
static void
openrouter_model(enum provider routed, const char *model, char *out,
    size_t outsz)
{
	static const char *const vendor[PROVIDER__MAX] = {
		"openai",	/* PROVIDER_OPENAI */
		"anthropic",	/* PROVIDER_ANTHROPIC */
		"google",	/* PROVIDER_GOOGLE */
		NULL,		/* PROVIDER_OPENROUTER */
	};

	if (routed == PROVIDER_OPENROUTER || vendor[routed] == NULL)
		snprintf(out, outsz, "%s", model);
	else
		snprintf(out, outsz, "%s/%s", vendor[routed], model);
}

/* Opens a sealed value into out: 1, or -1 with *why set. */
static int
open_sealed(const struct vault *v, const char *key_id, const char *tenant,
    enum provider p, const char *ciphertext, struct buf *out,
    enum resolve_result *why)
{
	if (vault_open(v, key_id, tenant, provider_names[p], ciphertext,
	    out) == 0)
		return 1;
	*why = RESOLVE_VAULT;
	return -1;
}

/*
 * The tenant's stored key for provider: 1 found, 0 none, -1 failure.  The
 * sealed value (or its absence) comes from the worker's cache when it
 * holds it, as long as the connection that hears of changes is up.
 */
static int
vault_key(struct db *db, const struct vault *v, struct keycache *kc,
    const char *tenant, enum provider p, struct buf *out,
    enum resolve_result *why)
{
	const char	*params[2] = { tenant, provider_names[p] };
	const struct keycache_sealed *e;
	struct db_res	*res;
	double		 now = clock_mono();
	unsigned long	 gen = 0;
	int		 rc = 0;

	if (v == NULL)
		return 0;
	if (kc != NULL && db_poll(db) == 0 &&
	    (e = keycache_sealed_get(kc, tenant, (int)p, now)) != NULL)
		return e->found ? open_sealed(v, e->key_id, tenant, p,
		    e->ciphertext, out, why) : 0;
	if (kc != NULL)
		gen = keycache_token(kc);
	if ((res = db_query(db, STMT_LLM_KEY_GET, 2, params)) == NULL) {
		*why = RESOLVE_DB;
		return -1;
	}
	if (db_rows(res) == 1) {
		if (kc != NULL)
			keycache_sealed_put(kc, tenant, (int)p,
			    db_value(res, 0, 1), db_value(res, 0, 0), now, gen);
		rc = open_sealed(v, db_value(res, 0, 1), tenant, p,
		    db_value(res, 0, 0), out, why);
	} else if (kc != NULL)
		keycache_sealed_put(kc, tenant, (int)p, NULL, NULL, now, gen);
	db_res_free(res);
	return rc;
}

enum resolve_result
gateway_resolve(struct db *db, const struct vault *v, struct keycache *kc,
    const struct config *cfg, const char *tenant, enum provider routed,
    const char *model, const char *inline_key, struct gateway_key *out)
{
	enum resolve_result why = RESOLVE_NONE;
	int		 rc;

	memset(out, 0, sizeof(*out));
	out->provider = routed;
	snprintf(out->model, sizeof(out->model), "%s", model);

	/* 1. The key sent with the request, for the routed provider. */
	if (inline_key != NULL && *inline_key != '\0')
		return buf_puts(&out->secret, inline_key) == 0 ? RESOLVE_OK :
		    RESOLVE_DB;
	/* 2. The tenant's own key for that provider. */
	if ((rc = vault_key(db, v, kc, tenant, routed, &out->secret, &why)) != 0)
		return rc == 1 ? RESOLVE_OK : why;
	/* 3. The tenant's own OpenRouter key, for any model. */
	out->provider = PROVIDER_OPENROUTER;
	openrouter_model(routed, model, out->model, sizeof(out->model));
	if (routed != PROVIDER_OPENROUTER &&
	    (rc = vault_key(db, v, kc, tenant, PROVIDER_OPENROUTER, &out->secret,
	    &why)) != 0)
		return rc == 1 ? RESOLVE_OK : why;
	/* 4. The operator's pool, with its markup. */
	if (cfg->pool_openrouter_key[0] != '\0') {
		out->pool = true;
		return buf_puts(&out->secret, cfg->pool_openrouter_key) == 0 ?
		    RESOLVE_OK : RESOLVE_DB;
	}
	return RESOLVE_NONE;
}

enum resolve_result
gateway_resolve_upstream(const struct config_upstream *u, const char *model,
    struct gateway_key *out)
{
	memset(out, 0, sizeof(*out));
	out->provider = PROVIDER__MAX;
	out->upstream = u;
	out->pool = true;
	snprintf(out->model, sizeof(out->model), "%s", model);
	if (u->key != NULL && buf_puts(&out->secret, u->key) == -1)
		return RESOLVE_DB;
	return RESOLVE_OK;
}

void
gateway_key_free(struct gateway_key *k)
{
	buf_free_secret(&k->secret);
}
