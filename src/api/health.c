#include "autoconfig.h"

#include "api/api.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

/*
 * GET /health: 200 when a query reaches the schema, 503 (with Retry-After)
 * when PostgreSQL cannot be reached.  The vault is usable when the database
 * is and a master key is configured.
 */
void
api_health(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *o;
	struct db_res	*res;
	bool		 up;

	res = db_query(app(w)->db, STMT_SCHEMA_VERSION, 0, NULL);
	up = res != NULL;
	db_res_free(res);

	o = json_object_new_object();
	json_object_object_add(o, "status",
	    json_object_new_string(up ? "ok" : "unavailable"));
	json_object_object_add(o, "database",
	    json_object_new_string(up ? "connected" : "unavailable"));
	json_object_object_add(o, "vault", json_object_new_string(
	    up && app(w)->vault != NULL ? "connected" : "unavailable"));
	json_object_object_add(o, "version",
	    json_object_new_string(PACKAGE_VERSION));
	if (!up && http_header(req, "Retry-After", "2") == -1) {
		json_object_put(o);
		http_error(req, ERR_INTERNAL, "out of memory");
		return;
	}
	http_respond_json(req, up ? 200 : 503, o);
}
