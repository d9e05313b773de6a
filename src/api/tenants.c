/*
 * /v1/tenants: the tenant tree below the caller.  Ids outside the caller's
 * subtree answer 404, never 403.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/tenants.h"
#include "lib/buf.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

static void
not_found(struct request *req)
{
	http_error(req, ERR_NOT_FOUND, "No tenant with id %s.", req->param);
}

/* The API's view of a tenant row. */
struct json_object *
api_tenant_json(const struct db_res *r, int row)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", api_text_or_null(r, row, TC_ID));
	json_object_object_add(o, "object", json_object_new_string("tenant"));
	json_object_object_add(o, "name",
	    json_object_new_string(db_value(r, row, TC_NAME)));
	json_object_object_add(o, "parent_id",
	    api_text_or_null(r, row, TC_PARENT));
	json_object_object_add(o, "path",
	    api_csv_array(db_value(r, row, TC_PATH)));
	json_object_object_add(o, "active", json_object_new_boolean(
	    strcmp(db_value(r, row, TC_ACTIVE), "t") == 0));
	json_object_object_add(o, "credits_balance",
	    credits_json(atoll(db_value(r, row, TC_BALANCE))));
	json_object_object_add(o, "credits_reserved",
	    credits_json(atoll(db_value(r, row, TC_RESERVED))));
	json_object_object_add(o, "created_at",
	    api_text_or_null(r, row, TC_CREATED));
	json_object_object_add(o, "updated_at",
	    api_text_or_null(r, row, TC_UPDATED));
	return o;
}

/*
 * The end of a change to tenant id in the open transaction: its audit row
 * (details taken) and the tenant as it is now, committed and answered
 * with status (api_change_done()).
 */
static void
tenant_changed(struct request *req, const char *id, const char *action,
    struct json_object *details, int status)
{
	api_change_done(req, id, action, "tenant", id, details, tenant_get,
	    api_tenant_json, status);
}

void
api_tenants_create(struct request *req)
{
	static const char *const fields[] = { "name", "parent_id", NULL };
	struct worker	*w = req->w;
	struct json_object *body, *details;
	struct checks	 c = { NULL };
	const char	*name, *parent;
	char		 id[40];
	bool		 present;

	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, fields);
	name = check_string(&c, body, "name", 200, &present);
	if (name == NULL && c.details == NULL)
		check_fail(&c, "name", "required: 1 to 200 bytes");
	else if (name != NULL && *name == '\0')
		check_fail(&c, "name", "must not be empty");
	parent = check_string(&c, body, "parent_id", 36, &present);
	if (parent != NULL && !uuid_valid(parent))
		check_fail(&c, "parent_id", "must be a UUID");
	if (check_done(req, &c) == -1)
		return;
	if (parent == NULL)
		parent = req->principal->tenant_id;
	if (!api_tenant_target(req, parent))
		return;
	if (!api_begin(req))
		return;
	if (tenant_create(app(w)->db, parent, name, id, sizeof(id)) == -1) {
		api_abort(req);
		return;
	}
	details = json_object_new_object();
	json_object_object_add(details, "name", json_object_new_string(name));
	json_object_object_add(details, "parent_id",
	    json_object_new_string(parent));
	tenant_changed(req, id, "tenant.create", details, 201);
}

void
api_tenants_list(struct request *req)
{
	api_list_page(req, tenant_list, tenant_get, TC_ID, api_tenant_json);
}

void
api_tenants_get(struct request *req)
{
	api_get_object(req, "tenant", tenant_get, api_tenant_json);
}

void
api_tenants_update(struct request *req)
{
	static const char *const fields[] = { "name", NULL };
	struct worker	*w = req->w;
	struct json_object *body, *details;
	struct checks	 c = { NULL };
	const char	*name;
	bool		 present;

	if (!api_path_id(req, "tenant"))
		return;
	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, fields);
	name = check_string(&c, body, "name", 200, &present);
	if (present && (name == NULL || *name == '\0') && c.details == NULL)
		check_fail(&c, "name", "must be 1 to 200 bytes");
	if (check_done(req, &c) == -1)
		return;
	if (!api_begin(req))
		return;
	switch (tenant_rename(app(w)->db, req->param, req->principal->tenant_id,
	    name)) {
	case TENANT_OK:
		break;
	case TENANT_NOT_FOUND:
	case TENANT_SELF:
		db_rollback(app(w)->db);
		not_found(req);
		return;
	case TENANT_DB:
	case TENANT_RESULT__MAX:
		api_abort(req);
		return;
	}
	details = json_object_new_object();
	if (name != NULL)
		json_object_object_add(details, "name",
		    json_object_new_string(name));
	tenant_changed(req, req->param, "tenant.update", details, 200);
}

/*
 * Checks that req->param names a tenant strictly below the caller's own:
 * a caller can neither deactivate nor purge the tenant it stands in.
 * false after answering.
 */
static bool
strictly_below(struct request *req)
{
	switch (api_tenant_check(req, req->param, tenant_below)) {
	case TENANT_OK:
		return true;
	case TENANT_NOT_FOUND:
		not_found(req);
		break;
	case TENANT_SELF:
		http_error(req, ERR_CONFLICT, "A key cannot remove its own "
		    "tenant.");
		break;
	case TENANT_DB:
	case TENANT_RESULT__MAX:
		break;
	}
	return false;
}

/* DELETE deactivates the tenant and its subtree: their keys stop working. */
void
api_tenants_delete(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *details;
	int		 n;

	if (!strictly_below(req))
		return;
	if (!api_begin(req))
		return;
	if ((n = tenant_deactivate(app(w)->db, req->param)) == -1) {
		api_abort(req);
		return;
	}
	details = json_object_new_object();
	json_object_object_add(details, "tenants_deactivated",
	    json_object_new_int(n));
	tenant_changed(req, req->param, "tenant.delete", details, 200);
}

#define EXPORT_PAGE	65536	/* bytes written to the client at a time */

/* An export under way: the page being filled, and where the part is. */
struct export_page {
	struct request	*req;
	struct buf	 out;
	size_t		 rows;		/* of the current part */
};

/* Sends what the page holds; 0, or -1 when the client has gone. */
static int
export_flush(struct export_page *ep)
{
	int	 rc = 0;

	if (ep->out.len > 0)
		rc = http_stream_write(ep->req, ep->out.data, ep->out.len);
	buf_reset(&ep->out);
	return rc;
}

/* A page that cannot grow cuts the document short: said once, here. */
static int
export_nomem(struct export_page *ep)
{
	log_error("buf_puts: exporting tenant %s: out of memory; the "
	    "document was cut short", ep->req->param);
	return -1;
}

/*
 * The sink of tenant_export(): each part a member "name":[...] of the
 * document, its rows the array's objects.
 */
static int
export_part(void *arg, const char *name)
{
	struct export_page *ep = arg;

	ep->rows = 0;
	return buf_printf(&ep->out, ",\"%s\":[", name) == -1 ?
	    export_nomem(ep) : 0;
}

static int
export_row(void *arg, const char *json)
{
	struct export_page *ep = arg;

	if ((ep->rows++ > 0 && buf_puts(&ep->out, ",") == -1) ||
	    buf_puts(&ep->out, json) == -1)
		return export_nomem(ep);
	return ep->out.len >= EXPORT_PAGE ? export_flush(ep) : 0;
}

static int
export_part_end(void *arg)
{
	struct export_page *ep = arg;

	return buf_puts(&ep->out, "]") == -1 ? export_nomem(ep) : 0;
}

/*
 * The subtree's data as one JSON document, written part by part and page
 * by page as PostgreSQL sends the rows (tenant_export()), all from one
 * snapshot: memory stays at a page and a row, whatever the size of the
 * subtree.  Once the 200 has gone out a failure can only cut the document
 * short (it is then not valid JSON) and is logged.
 */
void
api_tenants_export(struct request *req)
{
	struct worker	*w = req->w;
	struct export_page ep = { req, { 0 }, 0 };
	const struct tenant_export_sink sink = { export_part, export_row,
	    export_part_end, &ep };
	char		 now[32];
	struct tm	 tm;
	time_t		 t = time(NULL);
	int		 rc;

	if (!api_tenant_target(req, req->param))
		return;
	if (db_begin_snapshot(app(w)->db) == -1) {
		api_db_failed(req);
		return;
	}
	if (http_stream_begin(req, 200, "application/json") == -1) {
		db_rollback(app(w)->db);
		return;
	}
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (buf_printf(&ep.out, "{\"tenant_id\":\"%s\",\"exported_at\":"
	    "\"%s\"", req->param, now) == -1)
		rc = export_nomem(&ep);
	else if ((rc = tenant_export(app(w)->db, req->param, &sink)) == -1 &&
	    !req->client_gone)
		log_error("PostgreSQL: exporting tenant %s: %s; the document "
		    "was cut short", req->param, db_errmsg(app(w)->db));
	if (rc == 0 && buf_puts(&ep.out, "}") == -1)
		rc = export_nomem(&ep);
	if (rc == 0)
		(void)export_flush(&ep);
	db_rollback(app(w)->db);
	buf_free(&ep.out);
}

void
api_tenants_purge(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *counts, *o;
	enum json_parse_error why;
	char		 err[64], *text;

	if (!strictly_below(req))
		return;
	if (!api_begin(req))
		return;
	if ((text = tenant_purge(app(w)->db, req->param)) == NULL)
		goto dbfail;
	counts = json_parse(text, strlen(text), &why, err, sizeof(err));
	free(text);
	if (counts == NULL)
		goto dbfail;
	if (api_audit(req, req->param, "tenant.purge", "tenant", req->param,
	    json_object_get(counts)) == -1 || db_commit(app(w)->db) == -1) {
		json_object_put(counts);
		goto dbfail;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object",
	    json_object_new_string("tenant.purge"));
	json_object_object_add(o, "tenant_id",
	    json_object_new_string(req->param));
	json_object_object_add(o, "purged", json_object_new_boolean(1));
	json_object_object_add(o, "deleted", counts);
	http_respond_json(req, 200, o);
	return;
dbfail:
	api_abort(req);
}
