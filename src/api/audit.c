/*
 * GET /v1/audit_logs: the audit rows of the caller's subtree, newest first,
 * filtered by action, actor_key_id, target_id, since and until.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/audit.h"
#include "core/auth.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

static struct json_object *
row_json(const struct db_res *r, int row)
{
	struct json_object *o = json_object_new_object(), *d;
	enum json_parse_error why;
	const char	*details = db_value(r, row, AL_DETAILS);
	char		 err[64];

	json_object_object_add(o, "id", json_object_new_string(
	    db_value(r, row, AL_ID)));
	json_object_object_add(o, "object",
	    json_object_new_string("audit_log"));
	json_object_object_add(o, "created_at",
	    api_text_or_null(r, row, AL_CREATED));
	json_object_object_add(o, "tenant_id",
	    api_text_or_null(r, row, AL_TENANT));
	json_object_object_add(o, "actor_key_id",
	    api_text_or_null(r, row, AL_ACTOR_KEY));
	json_object_object_add(o, "actor", api_text_or_null(r, row, AL_ACTOR));
	json_object_object_add(o, "action",
	    api_text_or_null(r, row, AL_ACTION));
	json_object_object_add(o, "target_type",
	    api_text_or_null(r, row, AL_TARGET_TYPE));
	json_object_object_add(o, "target_id",
	    api_text_or_null(r, row, AL_TARGET));
	json_object_object_add(o, "request_id",
	    api_text_or_null(r, row, AL_REQUEST));
	json_object_object_add(o, "client_addr",
	    api_text_or_null(r, row, AL_CLIENT));
	d = json_parse(details, strlen(details), &why, err, sizeof(err));
	json_object_object_add(o, "details", d);
	return o;
}

/*
 * Reads an optional query filter into out; false after answering 400.
 * kind: 0 text, 1 UUID, 2 timestamp.
 */
static bool
filter(struct request *req, const char *name, int kind, char *out,
    size_t outsz, const char **param)
{
	time_t	 t;
	int	 rc;

	*param = NULL;
	rc = query_get(req->query, name, out, outsz);
	if (rc == 0)
		return true;
	/* A target is any text, and a UUID in any case is the same id. */
	if (rc == 1)
		router_canonical_id(out);
	if (rc == -1 || (kind == 1 && !uuid_valid(out)) ||
	    (kind == 2 && iso8601_parse(out, &t) == -1)) {
		http_error(req, ERR_BAD_REQUEST, "%s is malformed%s.", name,
		    kind == 1 ? ": expected a UUID" : kind == 2 ?
		    ": expected an ISO 8601 timestamp" : "");
		return false;
	}
	*param = out;
	return true;
}

void
api_audit_list(struct request *req)
{
	struct json_object *data;
	struct audit_filter f;
	struct db_res	*res;
	char		 action[64], actor[64], target[128], since[64],
			 until[64], cursor[32], next[40];
	int		 limit;

	if (!api_page_params_serial(req, &limit, cursor, sizeof(cursor)))
		return;
	if (!filter(req, "action", 0, action, sizeof(action), &f.action) ||
	    !filter(req, "actor_key_id", 1, actor, sizeof(actor),
	    &f.actor_key_id) ||
	    !filter(req, "target_id", 0, target, sizeof(target),
	    &f.target_id) ||
	    !filter(req, "since", 2, since, sizeof(since), &f.since) ||
	    !filter(req, "until", 2, until, sizeof(until), &f.until))
		return;
	f.cursor = cursor[0] ? cursor : NULL;
	if ((res = audit_list(app(req->w)->db, req->principal->tenant_id, &f,
	    limit + 1)) == NULL) {
		api_db_failed(req);
		return;
	}
	data = api_page_rows(res, limit, AL_ID, row_json, next, sizeof(next));
	db_res_free(res);
	api_page_respond(req, data, next[0] ? next : NULL);
}
