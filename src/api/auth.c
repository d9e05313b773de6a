/*
 * GET /v1/auth/whoami and POST /v1/keys/verify: what a key is and may do.
 */
#include "autoconfig.h"

#include <string.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/keys.h"
#include "core/ratelimit.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/* The limits that apply to p: its own, or the configured defaults. */
static struct json_object *
limits_json(const struct worker *w, const struct principal *p)
{
	struct json_object *o = json_object_new_object();
	char	 win[32];

	key_window_text(p->rate_limit_window > 0 ? p->rate_limit_window :
	    w->cfg->rate_limit_window, win, sizeof(win));
	json_object_object_add(o, "limit", json_object_new_int64(
	    p->rate_limit_max > 0 ? p->rate_limit_max :
	    w->cfg->rate_limit_max));
	json_object_object_add(o, "window", json_object_new_string(win));
	return o;
}

static struct json_object *
scopes_json(const struct principal *p)
{
	struct json_object *a = json_object_new_array();
	size_t	 i;

	for (i = 0; i < p->nscopes; i++)
		json_object_array_add(a, json_object_new_string(p->scopes[i]));
	return a;
}

static struct json_object *
principal_json(const struct worker *w, const struct principal *p)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "key_id", json_object_new_string(p->key_id));
	json_object_object_add(o, "key_prefix",
	    json_object_new_string(p->key_prefix));
	json_object_object_add(o, "tenant_id",
	    json_object_new_string(p->tenant_id));
	json_object_object_add(o, "env", json_object_new_string(p->env));
	json_object_object_add(o, "role_id", p->role_id[0] ?
	    json_object_new_string(p->role_id) : NULL);
	json_object_object_add(o, "scopes", scopes_json(p));
	json_object_object_add(o, "ratelimit", limits_json(w, p));
	return o;
}

void
api_auth_whoami(struct request *req)
{
	http_respond_json(req, 200, principal_json(req->w, req->principal));
}

/*
 * Verifies a key on behalf of another service.  A key outside the caller's
 * subtree is as invalid as a wrong one: the answer never says which.
 */
void
api_keys_verify(struct request *req)
{
	static const char *const fields[] = { "key", NULL };
	struct json_object *body, *o;
	struct checks	 c = { NULL };
	struct principal target;
	struct rl_state	 rl;
	struct json_object *limits;
	const char	*key;
	long		 max;
	int		 window;
	bool		 present, answered;
	enum auth_result ar;

	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, fields);
	key = check_string(&c, body, "key", 512, &present);
	if (key == NULL && c.details == NULL)
		check_fail(&c, "key", "required");
	if (check_done(req, &c) == -1)
		return;

	ar = auth_key(app(req->w)->db, api_auth_settings(req->w),
	    app(req->w)->keys, key, &target);
	if (ar == AUTH_UNAVAILABLE) {
		api_db_unavailable(req, false);
		return;
	}
	if (ar == AUTH_OK &&
	    !api_tenant_reachable(req, target.tenant_id, &answered)) {
		if (answered)
			return;
		ar = AUTH_INVALID;
	}
	if (ar != AUTH_OK) {
		o = json_object_new_object();
		json_object_object_add(o, "valid",
		    json_object_new_boolean(0));
		json_object_object_add(o, "code",
		    json_object_new_string("invalid_api_key"));
		http_respond_json(req, 200, o);
		return;
	}
	/*
	 * A verification is a use of that key: it is recorded as one, and
	 * counts against its limit.
	 */
	api_key_used(req, &target);
	max = target.rate_limit_max > 0 ? target.rate_limit_max :
	    req->w->cfg->rate_limit_max;
	window = target.rate_limit_window > 0 ? target.rate_limit_window :
	    req->w->cfg->rate_limit_window;
	if (!req->w->cfg->rate_limiting) {
		o = principal_json(req->w, &target);
		json_object_object_add(o, "valid", json_object_new_boolean(1));
		http_respond_json(req, 200, o);
		return;
	}
	if (rl_take(app(req->w)->db, app(req->w)->limits, target.key_id, max,
	    window, &rl) != RL_OK) {
		api_db_failed(req);
		return;
	}
	o = principal_json(req->w, &target);
	json_object_object_add(o, "valid", json_object_new_boolean(rl.allowed));
	if (!rl.allowed)
		json_object_object_add(o, "code",
		    json_object_new_string("rate_limit_exceeded"));
	if (json_object_object_get_ex(o, "ratelimit", &limits)) {
		json_object_object_add(limits, "remaining",
		    json_object_new_int64(rl.remaining));
		json_object_object_add(limits, "reset",
		    json_object_new_int64(rl.reset));
	}
	http_respond_json(req, 200, o);
}
