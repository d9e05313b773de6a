#include "autoconfig.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

/*
 * Connects to PostgreSQL and checks the schema.  An unreachable server is
 * not fatal (requests get 503 until it is back); a reachable one that is
 * not migrated is, because no request could succeed.
 */
static int
api_start(struct worker *w)
{
	int	 version = 0;

	w->db = db_new(w->cfg->database_url,
	    w->cfg->database_connect_timeout, "keygated");
	if (w->db == NULL) {
		log_error("db_new: preparing the database handle: out of "
		    "memory");
		return -1;
	}
	if (db_schema_version(w->db, &version) == -1) {
		log_warn("PostgreSQL: connecting at start: %s; answering 503 "
		    "until it is reachable", db_errmsg(w->db));
		return 0;
	}
	if (version < DB_SCHEMA_VERSION) {
		log_error("database is not migrated (schema version %d, this "
		    "keygated needs %d): run keygatectl migrate", version,
		    DB_SCHEMA_VERSION);
		return -1;
	}
	if (db_prepare_all(w->db) == -1) {
		log_error("PostgreSQL: preparing statements: %s",
		    db_errmsg(w->db));
		return db_status(w->db) == DB_UNAVAILABLE ? 0 : -1;
	}
	return 0;
}

static void
api_stop(struct worker *w)
{
	db_free(w->db);
	w->db = NULL;
}

static bool
method_has_body(const char *m)
{
	return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
	    strcmp(m, "PATCH") == 0;
}

/*
 * Reads and parses a JSON body.  Returns 0 (req->json set, or NULL for an
 * empty body), or -1 after answering the error.
 */
static int
read_json(struct worker *w, struct request *req)
{
	enum json_parse_error why;
	const char	*ct;
	char		 err[160];
	int		 rc;

	rc = request_read_body(req, (size_t)w->cfg->max_body_bytes);
	if (rc == 1) {
		http_error(req, ERR_REQUEST_TOO_LARGE, "Request body is larger "
		    "than %ld bytes.", w->cfg->max_body_bytes);
		return -1;
	}
	if (rc == -1) {
		http_error(req, ERR_BAD_REQUEST, "The request body could not "
		    "be read.");
		return -1;
	}
	if (req->body.len == 0)
		return 0;
	ct = request_param(req, "CONTENT_TYPE");
	if (ct != NULL && *ct != '\0' &&
	    strncasecmp(ct, "application/json", 16) != 0) {
		http_error(req, ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Type must "
		    "be application/json.");
		return -1;
	}
	req->json = json_parse(req->body.data, req->body.len, &why, err,
	    sizeof(err));
	if (req->json == NULL) {
		http_error(req, why == JSON_PARSE_UTF8 ? ERR_INVALID_UTF8 :
		    ERR_INVALID_JSON, "%s", err);
		return -1;
	}
	return 0;
}

static void
api_handle(struct worker *w, struct request *req)
{
	const struct route *route;
	char		 allow[64];

	switch (router_match(api_routes, api_nroutes, req->method, req->path,
	    &route, req->param, sizeof(req->param), allow, sizeof(allow))) {
	case ROUTE_NOT_FOUND:
		http_error(req, ERR_NOT_FOUND, "No route for %s %s.",
		    req->method, req->path);
		return;
	case ROUTE_METHOD_NOT_ALLOWED:
		if (http_header(req, "Allow", "%s", allow) == -1)
			break;
		http_error(req, ERR_METHOD_NOT_ALLOWED, "%s is not allowed "
		    "on %s; use %s.", req->method, req->path, allow);
		return;
	case ROUTE_FOUND:
	case ROUTE_RESULT__MAX:
		break;
	}
	if (route == NULL) {
		http_error(req, ERR_INTERNAL, "out of memory");
		return;
	}
	if (method_has_body(req->method) && read_json(w, req) == -1)
		return;
	route->handler(req);
}

const struct worker_app api_app = {
	"api",
	api_start,
	api_handle,
	api_stop,
};
