#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/audit.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/gateway.h"
#include "core/roles.h"
#include "core/tenants.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

void
api_db_unavailable(struct request *req, bool vault)
{
	struct db *db = app(req->w)->db;

	if (db_timed_out(db))
		log_warn("PostgreSQL: %s %s: %s (SQLSTATE %s); answering 503",
		    req->method, req->path, db_errmsg(db), db_sqlstate(db));
	if (!vault) {
		http_unavailable(req);
		return;
	}
	if (http_header(req, "Retry-After", "5") == -1)
		log_error("http_header: adding Retry-After: out of memory");
	http_error(req, ERR_VAULT_UNAVAILABLE,
	    "Vault connection unavailable - cannot store keys");
}

void
api_db_failed(struct request *req)
{
	struct db *db = app(req->w)->db;

	if (db_status(db) == DB_UNAVAILABLE) {
		api_db_unavailable(req, false);
		return;
	}
	log_error("PostgreSQL: %s %s: %s (SQLSTATE %s)", req->method,
	    req->path, db_errmsg(db), db_sqlstate(db));
	http_error(req, ERR_INTERNAL, "An internal error occurred "
	    "(request %s).", req->request_id);
}

bool
api_begin(struct request *req)
{
	if (db_begin(app(req->w)->db) == 0)
		return true;
	api_db_failed(req);
	return false;
}

void
api_abort(struct request *req)
{
	db_rollback(app(req->w)->db);
	api_db_failed(req);
}

void
api_commit_respond(struct request *req, int status, struct json_object *obj)
{
	if (db_commit(app(req->w)->db) == -1) {
		json_object_put(obj);
		api_abort(req);
		return;
	}
	http_respond_json(req, status, obj);
}

int
api_role_scopes(struct request *req, const char *role, const char *tenant,
    struct principal *scopes)
{
	switch (role_scopes(app(req->w)->db, role, tenant,
	    req->principal->tenant_id, scopes)) {
	case ROLE_FOUND:
		return 1;
	case ROLE_NOT_FOUND:
		return 0;
	case ROLE_TOO_MANY_SCOPES:
		http_error(req, ERR_INTERNAL, "The role has too many scopes.");
		return -1;
	case ROLE_DB:
	case ROLE_LOOKUP__MAX:
		break;
	}
	api_db_failed(req);
	return -1;
}

struct json_object *
api_text_or_null(const struct db_res *r, int row, int col)
{
	const char *v = db_value(r, row, col);

	return *v == '\0' ? NULL : json_object_new_string(v);
}

struct json_object *
api_csv_array(const char *csv)
{
	struct json_object *a = json_object_new_array();
	const char	*p = csv, *comma;

	while (*p != '\0') {
		comma = strchr(p, ',');
		if (comma == NULL)
			comma = p + strlen(p);
		json_object_array_add(a,
		    json_object_new_string_len(p, (int)(comma - p)));
		p = *comma == ',' ? comma + 1 : comma;
	}
	return a;
}

bool
api_within_caller(struct request *req, const char *const *scopes, size_t n,
    const char *verb)
{
	const char	*beyond;

	if ((beyond = role_scope_beyond(req->principal, scopes, n)) == NULL)
		return true;
	http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "This key cannot %s "
	    "scope %s: it is not among its own.", verb, beyond);
	return false;
}

int
api_role_grantable(struct request *req, const char *role, const char *tenant)
{
	struct principal probe;
	int	 rc;

	if ((rc = api_role_scopes(req, role, tenant, &probe)) != 1)
		return rc;
	return api_within_caller(req, probe.scopes, probe.nscopes, "grant") ?
	    1 : -1;
}

enum tenant_result
api_tenant_check(struct request *req, const char *tenant,
    enum tenant_result (*check)(struct db *, const char *, const char *))
{
	enum tenant_result rc;

	if (!uuid_valid(tenant))
		return TENANT_NOT_FOUND;
	rc = check(app(req->w)->db, tenant, req->principal->tenant_id);
	if (rc == TENANT_DB || rc == TENANT_RESULT__MAX) {
		api_db_failed(req);
		return TENANT_DB;
	}
	return rc;
}

bool
api_tenant_reachable(struct request *req, const char *tenant, bool *answered)
{
	enum tenant_result rc = api_tenant_check(req, tenant, tenant_within);

	*answered = rc == TENANT_DB;
	return rc == TENANT_OK;
}

void
api_change_done(struct request *req, const char *tenant, const char *action,
    const char *target_type, const char *id, struct json_object *details,
    struct db_res *(*get)(struct db *, const char *, const char *),
    struct json_object *(*render)(const struct db_res *, int), int status)
{
	struct json_object *obj;

	if (api_audit(req, tenant, action, target_type, id, details) == -1 ||
	    (obj = api_fetch(req, get, id, render)) == NULL) {
		api_abort(req);
		return;
	}
	api_commit_respond(req, status, obj);
}

bool
api_tenant_target(struct request *req, const char *tenant)
{
	bool	 answered;

	if (api_tenant_reachable(req, tenant, &answered))
		return true;
	if (!answered)
		http_error(req, ERR_NOT_FOUND, "No tenant with id %s.", tenant);
	return false;
}

int
api_audit(struct request *req, const char *tenant, const char *action,
    const char *target_type, const char *target_id,
    struct json_object *details)
{
	struct audit_entry e;
	int	 rc;

	memset(&e, 0, sizeof(e));
	e.tenant_id = tenant;
	e.actor_key_id = req->principal->key_id[0] != '\0' ?
	    req->principal->key_id : NULL;
	e.actor = req->principal->key_prefix;
	e.action = action;
	e.target_type = target_type;
	e.target_id = target_id;
	e.request_id = req->request_id;
	e.client_addr = req->remote_addr;
	e.details = details != NULL ? json_text(details, NULL) : NULL;
	rc = audit_write(app(req->w)->db, &e);
	if (details != NULL)
		json_object_put(details);
	return rc;
}

bool
api_body_object(struct request *req, struct json_object **out)
{
	*out = req->json;
	if (req->json == NULL)
		return true;
	if (!json_object_is_type(req->json, json_type_object)) {
		http_error(req, ERR_BAD_REQUEST, "The request body must be a "
		    "JSON object.");
		return false;
	}
	return true;
}

/* limit: 1 to 100, default 20; false after answering 400. */
static bool
limit_param(struct request *req, int *limit)
{
	char	 v[64], *end;
	long	 l;
	int	 rc;

	*limit = 20;
	if ((rc = query_get(req->query, "limit", v, sizeof(v))) == 1) {
		l = strtol(v, &end, 10);
		if (*v == '\0' || *end != '\0' || l < 1 || l > 100) {
			http_error(req, ERR_BAD_REQUEST, "limit must be a "
			    "whole number from 1 to 100.");
			return false;
		}
		*limit = (int)l;
	} else if (rc == -1) {
		http_error(req, ERR_BAD_REQUEST, "limit is malformed.");
		return false;
	}
	return true;
}

bool
api_page_params_serial(struct request *req, int *limit, char *cursor,
    size_t cursorsz)
{
	char	*end;
	int	 rc;

	cursor[0] = '\0';
	if (!limit_param(req, limit))
		return false;
	rc = query_get(req->query, "cursor", cursor, cursorsz);
	if (rc == -1 || (rc == 1 && (*cursor == '\0' ||
	    strtol(cursor, &end, 10) < 1 || *end != '\0'))) {
		http_error(req, ERR_BAD_REQUEST, "cursor is not one this API "
		    "returned.");
		return false;
	}
	return true;
}

bool
api_page_params(struct request *req, int *limit, char *cursor,
    size_t cursorsz)
{
	int	 rc;

	cursor[0] = '\0';
	if (!limit_param(req, limit))
		return false;
	rc = query_get(req->query, "cursor", cursor, cursorsz);
	if (rc == -1 || (rc == 1 && !uuid_valid(cursor))) {
		http_error(req, ERR_BAD_REQUEST, "cursor is not one this API "
		    "returned.");
		return false;
	}
	return true;
}

void
api_page_respond(struct request *req, struct json_object *data,
    const char *next)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "object", json_object_new_string("list"));
	json_object_object_add(o, "data", data);
	json_object_object_add(o, "next_cursor",
	    next != NULL ? json_object_new_string(next) : NULL);
	http_respond_json(req, 200, o);
}

bool
api_key_within_caller(struct request *req, struct json_object *key)
{
	struct json_object *scopes;
	size_t	 i, n;

	if (!json_object_object_get_ex(key, "effective_scopes", &scopes))
		return true;
	n = json_object_array_length(scopes);
	for (i = 0; i < n; i++) {
		const char *s = json_object_get_string(
		    json_object_array_get_idx(scopes, i));

		if (!auth_allows(req->principal, s)) {
			http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "This key "
			    "cannot change a key that holds scope %s, which it "
			    "lacks.", s);
			return false;
		}
	}
	return true;
}

bool
api_cursor_known(struct request *req,
    struct db_res *(*get)(struct db *, const char *, const char *),
    const char *cursor)
{
	struct db_res	*res;
	bool		 ok;

	if (*cursor == '\0')
		return true;
	if ((res = get(app(req->w)->db, cursor,
	    req->principal->tenant_id)) == NULL) {
		api_db_failed(req);
		return false;
	}
	ok = db_rows(res) == 1;
	db_res_free(res);
	if (!ok)
		http_error(req, ERR_BAD_REQUEST, "cursor is not one this API "
		    "returned.");
	return ok;
}

void
api_list_page(struct request *req,
    struct db_res *(*list)(struct db *, const char *, const char *, int),
    struct db_res *(*get)(struct db *, const char *, const char *),
    int id_col, struct json_object *(*render)(const struct db_res *, int))
{
	struct json_object *data;
	struct db_res	*res;
	char		 cursor[64], next[40];
	int		 limit;

	if (!api_page_params(req, &limit, cursor, sizeof(cursor)) ||
	    !api_cursor_known(req, get, cursor))
		return;
	/* One row more than is shown tells whether a next page exists. */
	if ((res = list(app(req->w)->db, req->principal->tenant_id,
	    cursor[0] ? cursor : NULL, limit + 1)) == NULL) {
		api_db_failed(req);
		return;
	}
	data = api_page_rows(res, limit, id_col, render, next, sizeof(next));
	db_res_free(res);
	api_page_respond(req, data, next[0] ? next : NULL);
}

struct json_object *
api_page_rows(const struct db_res *res, int limit, int id_col,
    struct json_object *(*render)(const struct db_res *, int), char *next,
    size_t nextsz)
{
	struct json_object *data = json_object_new_array();
	int	 i, n = db_rows(res);

	for (i = 0; i < n && i < limit; i++)
		json_object_array_add(data, render(res, i));
	if (n > limit)
		snprintf(next, nextsz, "%s", db_value(res, limit - 1, id_col));
	else if (nextsz > 0)
		next[0] = '\0';
	return data;
}

struct json_object *
api_fetch(struct request *req,
    struct db_res *(*get)(struct db *, const char *, const char *),
    const char *id, struct json_object *(*render)(const struct db_res *, int))
{
	struct db_res	*res;
	struct json_object *o;

	if ((res = get(app(req->w)->db, id, req->principal->tenant_id)) ==
	    NULL)
		return NULL;
	o = db_rows(res) == 1 ? render(res, 0) : NULL;
	db_res_free(res);
	return o;
}

bool
api_path_id(struct request *req, const char *what)
{
	if (uuid_valid(req->param))
		return true;
	http_error(req, ERR_NOT_FOUND, "No %s with id %s.", what, req->param);
	return false;
}

void
api_get_object(struct request *req, const char *what,
    struct db_res *(*get)(struct db *, const char *, const char *),
    struct json_object *(*render)(const struct db_res *, int))
{
	struct json_object *o;

	if (!api_path_id(req, what))
		return;
	if ((o = api_fetch(req, get, req->param, render)) == NULL) {
		api_missing(req, what);
		return;
	}
	http_respond_json(req, 200, o);
}

void
api_missing(struct request *req, const char *what)
{
	if (db_status(app(req->w)->db) != DB_OK)
		api_db_failed(req);
	else
		http_error(req, ERR_NOT_FOUND, "No %s with id %s.", what,
		    req->param);
}

int
api_gateway_key(struct request *req, const char *model,
    struct gateway_key *out)
{
	struct worker	*w = req->w;
	const char	*sent[PROVIDER__MAX];
	enum provider	 p;
	int		 i;

	for (i = 0; i < PROVIDER__MAX; i++)
		sent[i] = request_param(req, providers[i]->inline_param);
	switch (gateway_resolve(app(w)->db, app(w)->vault, app(w)->keys,
	    api_gateway_settings(w), req->principal->tenant_id, model, sent,
	    true, out)) {
	case RESOLVE_OK:
		return 0;
	case RESOLVE_UNROUTED:
		http_error(req, ERR_UNSUPPORTED_MODEL, "No provider serves the "
		    "model \"%.128s\".", model);
		break;
	case RESOLVE_UNMAPPED:
		p = out->native;
		http_error(req, ERR_MODEL_NOT_AVAILABLE, "The model \"%.128s\" "
		    "can only be reached here through OpenRouter, which has no "
		    "id for it in this keygate's list. Send a key for %s as %s "
		    "or store one with POST /v1/account/llm-keys, or name an "
		    "OpenRouter model (vendor/model).", model,
		    p < PROVIDER__MAX ? providers[p]->name : "provider",
		    p < PROVIDER__MAX ? providers[p]->inline_header : "a header");
		break;
	case RESOLVE_NONE:
		p = out->native;
		if (p < PROVIDER__MAX && p != PROVIDER_OPENROUTER)
			http_error(req, ERR_MISSING_PROVIDER_KEY, "No %s key or "
			    "OpenRouter key found. Store one with POST "
			    "/v1/account/llm-keys, or send it as %s.",
			    providers[p]->name, providers[p]->inline_header);
		else
			http_error(req, ERR_MISSING_PROVIDER_KEY, "No "
			    "OpenRouter key found. Store one with POST "
			    "/v1/account/llm-keys, or send it as %s.",
			    providers[PROVIDER_OPENROUTER]->inline_header);
		break;
	case RESOLVE_DB:
		api_db_failed(req);
		break;
	case RESOLVE_VAULT:
	case RESOLVE_RESULT__MAX:
		http_error(req, ERR_INTERNAL, "The stored %s key cannot be "
		    "opened with the configured master keys.",
		    gateway_provider_name(out));
		break;
	}
	return -1;
}

void
api_insufficient_credits(struct request *req, long long required,
    long long available, long max_affordable_tokens)
{
	struct json_object *root, *err;
	char		 need[24], have[24], msg[96];

	credits_format(required, need, sizeof(need));
	credits_format(available, have, sizeof(have));
	snprintf(msg, sizeof(msg), "Insufficient credits. Required: %s, "
	    "Available: %s", need, have);
	err = json_object_new_object();
	json_object_object_add(err, "message", json_str(msg));
	json_object_object_add(err, "type", json_str("insufficient_credits"));
	json_object_object_add(err, "code", json_str("insufficient_credits"));
	json_object_object_add(err, "required_credits", credits_json(required));
	json_object_object_add(err, "available_credits",
	    credits_json(available));
	if (max_affordable_tokens >= 0)
		json_object_object_add(err, "max_affordable_tokens",
		    json_object_new_int64(max_affordable_tokens));
	root = json_object_new_object();
	json_object_object_add(root, "error", err);
	http_respond_json(req, 402, root);
}
