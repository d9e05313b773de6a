/*
 * GET /v1/models: the models this tenant can reach now.  Every price row
 * names a model or a family ("claude-*"); a row is listed when some key
 * would serve it by the gateway's priority, with where it would go, whose
 * key would pay, and its price.  The operator's own upstreams serve every
 * tenant: each model name or prefix they claim is listed too, priced by
 * the price table like any call.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/gateway.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/* One entry of the list; markup < 0 is null (none applied). */
static void
add_model(struct json_object *data, const char *id, const char *owner,
    const char *provider, bool pool, double markup, long long in_micro,
    long long out_micro)
{
	struct json_object *m = json_object_new_object(), *price;

	json_object_object_add(m, "id", json_str(id));
	json_object_object_add(m, "object", json_str("model"));
	json_object_object_add(m, "owned_by", json_str(owner));
	json_object_object_add(m, "provider", json_str(provider));
	json_object_object_add(m, "key_source", json_str(pool ? "pool" : "user"));
	json_object_object_add(m, "pool_markup_applied", markup >= 0 ?
	    json_object_new_double(markup) : NULL);
	price = json_object_new_object();
	json_object_object_add(price, "input_per_mtok",
	    json_object_new_double((double)in_micro / CREDITS_MICRO));
	json_object_object_add(price, "output_per_mtok",
	    json_object_new_double((double)out_micro / CREDITS_MICRO));
	json_object_object_add(m, "pricing", price);
	json_object_array_add(data, m);
}

static bool
listed(struct json_object *data, const char *id)
{
	size_t	 i;

	for (i = 0; i < json_object_array_length(data); i++)
		if (strcmp(json_get_str(json_object_array_get_idx(data, i),
		    "id"), id) == 0)
			return true;
	return false;
}

/*
 * The names and prefixes the operator's upstreams claim that no price row
 * listed already, at the price a call to them would pay.  0, or -1 after
 * a database failure.
 */
static int
add_upstreams(struct worker *w, struct json_object *data)
{
	const struct config_upstream *u;
	struct credit_price price;
	char		 family[256];
	size_t		 i, j;

	for (i = 0; i < w->cfg->upstreams.n; i++) {
		u = &w->cfg->upstreams.v[i];
		for (j = 0; j < u->nmodels; j++) {
			if (listed(data, u->models[j]))
				continue;
			snprintf(family, sizeof(family), "%.*s",
			    (int)strcspn(u->models[j], "*"), u->models[j]);
			if (credits_price(w->db, family, &price) == -1)
				return -1;
			add_model(data, u->models[j], u->name, u->name, true, -1,
			    price.in_per_mtok, price.out_per_mtok);
		}
	}
	return 0;
}

void
api_models(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *data, *o;
	struct db_res	*res;
	const struct config_upstream *up;
	const char	*p[1] = { req->principal->tenant_id }, *v;
	bool		 own[PROVIDER__MAX] = { false };
	char		 family[256];
	int		 r, i;
	size_t		 strip;
	enum provider	 routed, served;
	bool		 pool;

	/* Which providers the tenant has a key for: stored or sent along. */
	if (w->vault != NULL) {
		if ((res = db_query(w->db, STMT_LLM_KEY_STATUS, 1, p)) == NULL) {
			api_db_failed(req);
			return;
		}
		for (r = 0; r < db_rows(res); r++) {
			enum provider pv = provider_parse(db_value(res, r, 0));

			if (pv != PROVIDER__MAX)
				own[pv] = true;
		}
		db_res_free(res);
	}
	for (i = 0; i < PROVIDER__MAX; i++)
		if ((v = request_param(req, gateway_inline_param[i])) != NULL &&
		    *v != '\0')
			own[i] = true;

	if ((res = db_query(w->db, STMT_PRICE_LIST, 0, NULL)) == NULL) {
		api_db_failed(req);
		return;
	}
	data = json_object_new_array();
	for (r = 0; r < db_rows(res); r++) {
		/* "gpt-4o*" routes as "gpt-4o"; "*" is any vendor/model. */
		snprintf(family, sizeof(family), "%.*s",
		    (int)strcspn(db_value(res, r, 0), "*"), db_value(res, r, 0));
		/* An operator upstream's names win, as in a call. */
		if ((up = gateway_upstream(w->cfg, family, &strip)) != NULL) {
			add_model(data, db_value(res, r, 0), up->name, up->name,
			    true, -1, atoll(db_value(res, r, 1)),
			    atoll(db_value(res, r, 2)));
			continue;
		}
		routed = family[0] != '\0' ? gateway_route(family) :
		    PROVIDER_OPENROUTER;
		if (routed == PROVIDER__MAX)
			continue;
		/* The same priority the gateway applies to a call. */
		pool = false;
		if (own[routed])
			served = routed;
		else if (own[PROVIDER_OPENROUTER])
			served = PROVIDER_OPENROUTER;
		else if (w->cfg->pool_openrouter_key[0] != '\0') {
			served = PROVIDER_OPENROUTER;
			pool = true;
		} else
			continue;
		add_model(data, db_value(res, r, 0), provider_names[routed],
		    provider_names[served], pool, pool ? w->cfg->pool_markup : -1,
		    atoll(db_value(res, r, 1)), atoll(db_value(res, r, 2)));
	}
	db_res_free(res);
	if (add_upstreams(w, data) == -1) {
		json_object_put(data);
		api_db_failed(req);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("list"));
	json_object_object_add(o, "data", data);
	http_respond_json(req, 200, o);
}
