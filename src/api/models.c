/*
 * GET /v1/models and GET /v1/models/{id}: the concrete models this tenant
 * can reach now, in OpenAI's shape (id, object, created, owned_by), with
 * keygate's own facts in a "keygate" member: where a call would go, whose
 * key would pay, the markup and the price.
 *
 * The ids are the native names of the OpenRouter table, the exact names of
 * the price table (a pattern such as "claude-*" names no model), and the
 * exact names the operator's upstreams claim; each is listed when
 * gateway_resolve(), which every gateway call asks too, finds a key for it
 * with the keys the tenant has stored and the keys sent along.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/gateway.h"
#include "core/models.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/* Who makes the model: an upstream's name, else its vendor. */
static void
owner_of(const struct gateway_key *k, char *out, size_t outsz)
{
	if (k->upstream != NULL)
		snprintf(out, outsz, "%s", k->upstream->name);
	else if (k->native < PROVIDER__MAX && k->native != PROVIDER_OPENROUTER)
		snprintf(out, outsz, "%s", providers[k->native]->name);
	else	/* an OpenRouter id: "vendor/model" */
		snprintf(out, outsz, "%.*s", (int)strcspn(k->model, "/"),
		    k->model);
}

/*
 * The entry for model id, into *out; NULL there when no key reaches it.
 * 0, or -1 after a database failure.
 */
static int
entry(struct request *req, const char *const sent[PROVIDER__MAX],
    const char *id, long long created, struct json_object **out)
{
	struct worker	*w = req->w;
	struct gateway_key k;
	struct credit_price price;
	struct json_object *m, *kg, *cost;
	enum resolve_result r;
	char		 owner[256];

	*out = NULL;
	/* Nothing is opened: k holds no secret, and needs no freeing. */
	r = gateway_resolve(app(w)->db, app(w)->vault, app(w)->keys,
	    api_gateway_settings(w), req->principal->tenant_id, id, sent, false,
	    &k);
	if (r == RESOLVE_DB)
		return -1;
	if (r != RESOLVE_OK)
		return 0;
	if (credits_price(app(w)->db, id, &price) == -1)
		return -1;
	owner_of(&k, owner, sizeof(owner));
	m = json_object_new_object();
	json_object_object_add(m, "id", json_str(id));
	json_object_object_add(m, "object", json_str("model"));
	json_object_object_add(m, "created", json_object_new_int64(created));
	json_object_object_add(m, "owned_by", json_str(owner));
	kg = json_object_new_object();
	json_object_object_add(kg, "provider",
	    json_str(gateway_provider_name(&k)));
	json_object_object_add(kg, "key_source",
	    json_str(k.pool ? "pool" : "user"));
	/* An operator upstream is the operator's too, but never marked up. */
	json_object_object_add(kg, "pool_markup_applied",
	    k.pool && k.upstream == NULL ?
	    json_object_new_double(w->cfg->pool_markup) : NULL);
	cost = json_object_new_object();
	json_object_object_add(cost, "input_per_mtok",
	    credits_json(price.in_per_mtok));
	json_object_object_add(cost, "output_per_mtok",
	    credits_json(price.out_per_mtok));
	json_object_object_add(kg, "pricing", cost);
	json_object_object_add(m, "keygate", kg);
	*out = m;
	return 0;
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

/* Adds id's entry to data unless it is there or unreachable; 0 or -1. */
static int
add(struct request *req, const char *const sent[PROVIDER__MAX],
    struct json_object *data, const char *id, long long created)
{
	struct json_object *m;

	if (listed(data, id))
		return 0;
	if (entry(req, sent, id, created, &m) == -1)
		return -1;
	if (m != NULL)
		json_object_array_add(data, m);
	return 0;
}

/*
 * Every model the tenant reaches, or only the one named only (NULL = all),
 * into data.  0, or -1 after answering the database failure.
 */
static int
collect(struct request *req, const char *only, struct json_object *data)
{
	const struct config *cfg = req->w->cfg;
	const struct config_upstream *u;
	const char	*sent[PROVIDER__MAX], *id;
	struct db_res	*res;
	size_t		 i, j;
	int		 r, rc = 0;

	for (i = 0; i < PROVIDER__MAX; i++)
		sent[i] = request_param(req, providers[i]->inline_param);
	if ((res = models_known(app(req->w)->db)) == NULL) {
		api_db_failed(req);
		return -1;
	}
	for (r = 0; rc == 0 && r < db_rows(res); r++) {
		id = db_value(res, r, MC_ID);
		if (only == NULL || strcmp(only, id) == 0)
			rc = add(req, sent, data, id,
			    atoll(db_value(res, r, MC_CREATED)));
	}
	db_res_free(res);
	/* An upstream's exact names; a prefix ("local/...") names none. */
	for (i = 0; rc == 0 && i < cfg->upstreams.n; i++) {
		u = &cfg->upstreams.v[i];
		for (j = 0; rc == 0 && j < u->nmodels; j++)
			if (strchr(u->models[j], '*') == NULL &&
			    (only == NULL || strcmp(only, u->models[j]) == 0))
				rc = add(req, sent, data, u->models[j],
				    (long long)cfg->read_at);
	}
	/*
	 * An OpenRouter id (vendor/model) is passed on as it is: the list
	 * cannot name OpenRouter's whole catalogue, but one asked for by
	 * name is there when a key reaches it.
	 */
	if (rc == 0 && only != NULL && strchr(only, '/') != NULL &&
	    json_object_array_length(data) == 0)
		rc = add(req, sent, data, only, (long long)cfg->read_at);
	if (rc == -1)
		api_db_failed(req);
	return rc;
}

void
api_models(struct request *req)
{
	struct json_object *data = json_object_new_array(), *o;

	if (collect(req, NULL, data) == -1) {
		json_object_put(data);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("list"));
	json_object_object_add(o, "data", data);
	http_respond_json(req, 200, o);
}

/* Decodes %XX in place (a client may send "openai%2Fgpt-4o"); 0 or -1. */
static int
percent_decode(char *s)
{
	char	*in = s, *out = s, hex[3] = { 0 };

	while (*in != '\0') {
		if (*in != '%') {
			*out++ = *in++;
			continue;
		}
		if (strspn(in + 1, "0123456789abcdefABCDEF") < 2)
			return -1;
		memcpy(hex, in + 1, 2);
		if ((*out = (char)strtol(hex, NULL, 16)) == '\0')
			return -1;
		out++;
		in += 3;
	}
	*out = '\0';
	return 0;
}

void
api_models_get(struct request *req)
{
	struct json_object *data;
	char		 id[sizeof(req->param)];

	snprintf(id, sizeof(id), "%s", req->param);
	if (percent_decode(id) == -1) {
		http_error(req, ERR_MODEL_NOT_FOUND, "No model %.128s.",
		    req->param);
		return;
	}
	data = json_object_new_array();
	if (collect(req, id, data) == -1) {
		json_object_put(data);
		return;
	}
	if (json_object_array_length(data) == 0)
		http_error(req, ERR_MODEL_NOT_FOUND, "The model \"%.128s\" does "
		    "not exist or cannot be reached with this tenant's keys.",
		    id);
	else
		http_respond_json(req, 200,
		    json_object_get(json_object_array_get_idx(data, 0)));
	json_object_put(data);
}
