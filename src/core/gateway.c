#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "core/gateway.h"
#include "core/keycache.h"
#include "core/upstreams.h"
#include "lib/clock.h"
#include "lib/db.h"

const char *const gateway_source_names[SOURCE__MAX] = {
	"upstream",		/* SOURCE_UPSTREAM */
	"inline",		/* SOURCE_INLINE */
	"inline_openrouter",	/* SOURCE_INLINE_OPENROUTER */
	"vault",		/* SOURCE_VAULT */
	"vault_openrouter",	/* SOURCE_VAULT_OPENROUTER */
	"pool",			/* SOURCE_POOL */
};

const struct config_upstream *
gateway_upstream(const struct config_upstreams *ups, const char *m,
    size_t *strip)
{
	const struct config_upstream *best = NULL, *u;
	size_t		 i, j, len, best_len = 0, ml = strlen(m);

	*strip = 0;
	for (i = 0; i < ups->n; i++) {
		u = &ups->v[i];
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
	return k->provider < PROVIDER__MAX ? providers[k->provider]->name :
	    "none";
}

const struct provider_module *
gateway_provider(const struct gateway_key *k)
{
	if (k->upstream != NULL)
		return &provider_upstream;
	return k->provider < PROVIDER__MAX ? providers[k->provider] : NULL;
}

/*
 * The OpenRouter id of a native model name, from the openrouter_models
 * table, into out: 1 found, 0 none, -1 database failure.
 */
static int
openrouter_id(struct db *db, const char *model, char *out, size_t outsz)
{
	const char	*p[1] = { model };
	struct db_res	*res;
	int		 rc;

	if ((res = db_query(db, STMT_OPENROUTER_MODEL_GET, 1, p)) == NULL)
		return -1;
	rc = db_rows(res) == 1 ? 1 : 0;
	if (rc == 1)
		snprintf(out, outsz, "%s", db_value(res, 0, 0));
	db_res_free(res);
	return rc;
}

/* Opens a sealed value into out: 1, or -1 with *why set. */
static int
open_sealed(const struct vault *v, const char *key_id, const char *tenant,
    enum provider p, const char *ciphertext, struct buf *out,
    enum resolve_result *why)
{
	if (vault_open(v, key_id, tenant, providers[p]->name, ciphertext,
	    out) == 0)
		return 1;
	*why = RESOLVE_VAULT;
	return -1;
}

/*
 * The tenant's stored key for provider: 1 found, 0 none, -1 failure.  The
 * sealed value (or its absence) comes from the worker's cache when it
 * holds it, as long as the connection that hears of changes is up.  With
 * out NULL it is only looked for, not opened.
 */
static int
vault_key(struct db *db, const struct vault *v, struct keycache *kc,
    const char *tenant, enum provider p, struct buf *out,
    enum resolve_result *why)
{
	const char	*params[2] = { tenant, providers[p]->name };
	const struct keycache_sealed *e;
	struct db_res	*res;
	double		 now = clock_mono();
	unsigned long	 gen = 0;
	int		 rc = 0;

	if (v == NULL)
		return 0;
	if (kc != NULL && db_poll(db) == 0 &&
	    (e = keycache_sealed_get(kc, tenant, (int)p, now)) != NULL) {
		if (!e->found || out == NULL)
			return e->found ? 1 : 0;
		return open_sealed(v, e->key_id, tenant, p, e->ciphertext, out,
		    why);
	}
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
		rc = out == NULL ? 1 : open_sealed(v, db_value(res, 0, 1),
		    tenant, p, db_value(res, 0, 0), out, why);
	} else if (kc != NULL)
		keycache_sealed_put(kc, tenant, (int)p, NULL, NULL, now, gen);
	db_res_free(res);
	return rc;
}

/* Fills in the OpenRouter call: its id for the model, RESOLVE_OK or why not. */
static enum resolve_result
via_openrouter(struct db *db, const char *model, struct gateway_key *out)
{
	out->provider = provider_aggregator();
	/* vendor/model is an OpenRouter id already. */
	if (out->native == out->provider) {
		snprintf(out->model, sizeof(out->model), "%s", model);
		return RESOLVE_OK;
	}
	switch (openrouter_id(db, model, out->model, sizeof(out->model))) {
	case 1:
		return RESOLVE_OK;
	case 0:
		return RESOLVE_UNMAPPED;
	default:
		return RESOLVE_DB;
	}
}

/* The key sent along for provider p, or NULL. */
static const char *
sent(const char *const inline_keys[PROVIDER__MAX], enum provider p)
{
	if (inline_keys == NULL || p >= PROVIDER__MAX ||
	    inline_keys[p] == NULL || *inline_keys[p] == '\0')
		return NULL;
	return inline_keys[p];
}

/* Takes secret (when opening) as the call's key. */
static enum resolve_result
take(struct gateway_key *out, enum key_source source, const char *secret,
    bool open)
{
	out->source = source;
	out->pool = source == SOURCE_UPSTREAM || source == SOURCE_POOL;
	if (open && secret != NULL && buf_puts(&out->secret, secret) == -1)
		return RESOLVE_DB;
	return RESOLVE_OK;
}

enum resolve_result
gateway_resolve(struct db *db, const struct vault *v, struct keycache *kc,
    const struct gateway_settings *set, const char *tenant, const char *model,
    const char *const inline_keys[PROVIDER__MAX], bool open,
    struct gateway_key *out)
{
	const struct config_upstream *up;
	const enum provider any = provider_aggregator();	/* OpenRouter */
	enum resolve_result why = RESOLVE_NONE, mapped = RESOLVE_NONE;
	struct buf	*into = open ? &out->secret : NULL;
	const char	*k;
	char		 id[sizeof(out->model)];
	size_t		 strip;
	int		 rc;

	memset(out, 0, sizeof(*out));
	out->native = PROVIDER__MAX;
	snprintf(out->model, sizeof(out->model), "%s", model);

	/* 0. An operator upstream's names win, with its own key. */
	if ((up = gateway_upstream(set->upstreams, model, &strip)) != NULL) {
		out->provider = PROVIDER__MAX;
		out->upstream = up;
		snprintf(out->model, sizeof(out->model), "%s", model + strip);
		return take(out, SOURCE_UPSTREAM, up->key, open);
	}
	out->native = provider_route(model);
	out->provider = out->native;
	/* A name no rule routes may still have an OpenRouter id. */
	if (out->native == PROVIDER__MAX &&
	    (rc = openrouter_id(db, model, id, sizeof(id))) != 1)
		return rc == 0 ? RESOLVE_UNROUTED : RESOLVE_DB;

	/* 1. The key sent along for the model's own provider. */
	if (out->native != PROVIDER__MAX &&
	    (k = sent(inline_keys, out->native)) != NULL)
		return take(out, SOURCE_INLINE, k, open);
	/*
	 * 2. An OpenRouter key sent along serves any model OpenRouter has an
	 * id for; for one it has none, the tenant's own key may still do.
	 */
	if ((k = sent(inline_keys, any)) != NULL) {
		if ((mapped = via_openrouter(db, model, out)) == RESOLVE_OK)
			return take(out, out->native == any ?
			    SOURCE_INLINE : SOURCE_INLINE_OPENROUTER, k, open);
		if (mapped != RESOLVE_UNMAPPED)
			return mapped;
		out->provider = out->native;
	}
	/* 3. The tenant's own key for that provider. */
	if (out->native != PROVIDER__MAX &&
	    (rc = vault_key(db, v, kc, tenant, out->native, into, &why)) != 0)
		return rc == 1 ? take(out, SOURCE_VAULT, NULL, open) : why;
	/* Only OpenRouter is left, which cannot serve it either. */
	if (mapped == RESOLVE_UNMAPPED)
		return RESOLVE_UNMAPPED;
	/* 4. The tenant's own OpenRouter key, for any model. */
	if (any < PROVIDER__MAX && out->native != any) {
		out->provider = any;
		if ((rc = vault_key(db, v, kc, tenant, any,
		    into, &why)) == -1)
			return why;
		if (rc == 1) {
			if ((mapped = via_openrouter(db, model, out)) !=
			    RESOLVE_OK)
				return mapped;
			return take(out, SOURCE_VAULT_OPENROUTER, NULL, open);
		}
	}
	/* 5. The operator's pool, with its markup. */
	if (set->pool_key[0] != '\0') {
		if ((mapped = via_openrouter(db, model, out)) != RESOLVE_OK)
			return mapped;
		return take(out, SOURCE_POOL, set->pool_key, open);
	}
	return RESOLVE_NONE;
}

void
gateway_key_free(struct gateway_key *k)
{
	buf_free_secret(&k->secret);
}
