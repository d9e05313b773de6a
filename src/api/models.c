/*
 * GET /v1/models: the models this tenant can reach now.  Every price row
 * names a model or a family ("claude-*"); a row is listed when some key
 * would serve it by the gateway's priority, with where it would go, whose
 * key would pay, and its price.
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

void
api_models(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *data, *o, *m, *price;
	struct db_res	*res;
	const char	*p[1] = { req->principal->tenant_id }, *v;
	bool		 own[PROVIDER__MAX] = { false };
	char		 family[256];
	int		 r, i;
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
		m = json_object_new_object();
		json_object_object_add(m, "id", json_str(db_value(res, r, 0)));
		json_object_object_add(m, "object", json_str("model"));
		json_object_object_add(m, "owned_by",
		    json_str(provider_names[routed]));
		json_object_object_add(m, "provider",
		    json_str(provider_names[served]));
		json_object_object_add(m, "key_source",
		    json_str(pool ? "pool" : "user"));
		json_object_object_add(m, "pool_markup_applied", pool ?
		    json_object_new_double(w->cfg->pool_markup) : NULL);
		price = json_object_new_object();
		json_object_object_add(price, "input_per_mtok",
		    json_object_new_double((double)atoll(db_value(res, r, 1)) /
		    CREDITS_MICRO));
		json_object_object_add(price, "output_per_mtok",
		    json_object_new_double((double)atoll(db_value(res, r, 2)) /
		    CREDITS_MICRO));
		json_object_object_add(m, "pricing", price);
		json_object_array_add(data, m);
	}
	db_res_free(res);
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("list"));
	json_object_object_add(o, "data", data);
	http_respond_json(req, 200, o);
}
