#include "autoconfig.h"

#include "api/api.h"
#include "core/health.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/*
 * GET /health: 200 when a query reaches the schema, 503 (with Retry-After)
 * when PostgreSQL cannot be reached.  The vault is usable when the database
 * is and a master key is configured (health_check()).
 */
void
api_health(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *o;
	struct health	 h;

	health_check(app(w)->db, app(w)->vault != NULL, &h);
	o = json_object_new_object();
	json_object_object_add(o, "status",
	    json_object_new_string(h.database ? "ok" : "unavailable"));
	json_object_object_add(o, "database",
	    json_object_new_string(h.database ? "connected" : "unavailable"));
	json_object_object_add(o, "vault",
	    json_object_new_string(h.vault ? "connected" : "unavailable"));
	json_object_object_add(o, "version",
	    json_object_new_string(PACKAGE_VERSION));
	if (!h.database && http_header(req, "Retry-After", "2") == -1) {
		json_object_put(o);
		http_error(req, ERR_INTERNAL, "out of memory");
		return;
	}
	http_respond_json(req, h.database ? 200 : 503, o);
}
