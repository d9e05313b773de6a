/*
 * /v1/roles: named scope bundles, global or per tenant, and
 * PUT/DELETE /v1/api_keys/{id}/role.  No role can carry a scope its creator
 * lacks, and a key only takes a role whose scopes its assigner holds.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/keys.h"
#include "core/roles.h"
#include "core/scope.h"
#include "core/tenants.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

#define MAX_SCOPES AUTH_MAX_SCOPES

struct role_fields {
	const char	*name;
	const char	*description;
	const char	*tenant_id;
	bool		 global;
	const char	*scopes[MAX_SCOPES];
	size_t		 nscopes;
	bool		 has_scopes;
	char		 scopes_lit[2048];
};

static void
not_found(struct request *req)
{
	http_error(req, ERR_NOT_FOUND, "No role with id %s.", req->param);
}

static int
read_fields(struct request *req, struct json_object *body, bool create,
    struct role_fields *f)
{
	static const char *const create_fields[] = { "name", "description",
	    "scopes", "tenant_id", NULL };
	static const char *const update_fields[] = { "name", "description",
	    "scopes", NULL };
	struct checks	 c = { NULL };
	struct json_object *arr, *v;
	bool		 present;
	size_t		 i;

	memset(f, 0, sizeof(*f));
	if (body != NULL)
		check_known_fields(&c, body, create ? create_fields :
		    update_fields);
	f->name = check_string(&c, body, "name", 100, &present);
	if ((create || present) && (f->name == NULL || *f->name == '\0') &&
	    c.details == NULL)
		check_fail(&c, "name", "required: 1 to 100 bytes");
	f->description = check_string(&c, body, "description", 500, &present);
	arr = check_string_array(&c, body, "scopes", MAX_SCOPES, &present);
	if (arr != NULL) {
		f->has_scopes = true;
		for (i = 0; i < json_object_array_length(arr); i++) {
			const char *s = json_object_get_string(
			    json_object_array_get_idx(arr, i));

			if (!scope_valid(s)) {
				check_fail(&c, "scopes", "unknown scope "
				    "\"%.64s\"", s);
				break;
			}
			f->scopes[f->nscopes++] = s;
		}
	} else if (create && c.details == NULL)
		check_fail(&c, "scopes", "required: an array of scopes");
	if (create && body != NULL &&
	    json_object_object_get_ex(body, "tenant_id", &v)) {
		if (v == NULL)
			f->global = true;
		else if (!json_object_is_type(v, json_type_string) ||
		    !uuid_valid(json_object_get_string(v)))
			check_fail(&c, "tenant_id", "must be a UUID or null");
		else
			f->tenant_id = json_object_get_string(v);
	}
	if (check_done(req, &c) == -1)
		return -1;
	if (f->has_scopes && key_scopes_literal(f->scopes, f->nscopes,
	    f->scopes_lit, sizeof(f->scopes_lit)) == -1) {
		http_error(req, ERR_BAD_REQUEST, "Too many scopes.");
		return -1;
	}
	return 0;
}

#define CANNOT_GRANT "grant"

/* The "scopes" of a rendered key or role are all among the caller's. */
static bool
scopes_within_caller(struct request *req, struct json_object *obj,
    const char *verb)
{
	struct json_object *own;
	const char	*list[MAX_SCOPES];
	size_t		 i, n = 0;

	if (!json_object_object_get_ex(obj, "scopes", &own))
		return true;
	for (i = 0; i < json_object_array_length(own) && n < MAX_SCOPES; i++)
		list[n++] = json_object_get_string(
		    json_object_array_get_idx(own, i));
	return api_within_caller(req, list, n, verb);
}

/* The API's view of a role row. */
struct json_object *
api_role_json(const struct db_res *r, int row)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", api_text_or_null(r, row, RC_ID));
	json_object_object_add(o, "object", json_object_new_string("role"));
	json_object_object_add(o, "name",
	    json_object_new_string(db_value(r, row, RC_NAME)));
	json_object_object_add(o, "description",
	    json_object_new_string(db_value(r, row, RC_DESCRIPTION)));
	json_object_object_add(o, "tenant_id",
	    api_text_or_null(r, row, RC_TENANT));
	json_object_object_add(o, "scopes",
	    api_csv_array(db_value(r, row, RC_SCOPES)));
	json_object_object_add(o, "builtin", json_object_new_boolean(
	    strcmp(db_value(r, row, RC_BUILTIN), "t") == 0));
	json_object_object_add(o, "created_at",
	    api_text_or_null(r, row, RC_CREATED));
	json_object_object_add(o, "updated_at",
	    api_text_or_null(r, row, RC_UPDATED));
	return o;
}

static struct json_object *
role_now(struct request *req, const char *id, bool *mine)
{
	struct db_res	*res;
	struct json_object *o = NULL;

	if ((res = role_get(app(req->w)->db, id, req->principal->tenant_id)) ==
	    NULL)
		return NULL;
	if (db_rows(res) == 1) {
		o = api_role_json(res, 0);
		if (mine != NULL)
			*mine = strcmp(db_value(res, 0, RC_MINE), "t") == 0;
	}
	db_res_free(res);
	return o;
}

void
api_roles_create(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *body, *details;
	struct role_fields f;
	char		 id[40];

	if (!api_body_object(req, &body) ||
	    read_fields(req, body, true, &f) == -1)
		return;
	if (f.global) {
		/* Global roles reach every tenant: only the root may add. */
		if (!role_may_add_global(req->principal->tenant_id)) {
			http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "Only a "
			    "key of the root tenant can create global roles.");
			return;
		}
	} else {
		if (f.tenant_id == NULL)
			f.tenant_id = req->principal->tenant_id;
		if (!api_tenant_target(req, f.tenant_id))
			return;
	}
	if (!api_within_caller(req, f.scopes, f.nscopes, CANNOT_GRANT))
		return;
	if (!api_begin(req))
		return;
	switch (role_create(app(w)->db, f.global ? NULL : f.tenant_id, f.name,
	    f.description, f.scopes_lit, id, sizeof(id))) {
	case ROLE_WRITTEN:
		break;
	case ROLE_NAME_TAKEN:
		db_rollback(app(w)->db);
		http_error(req, ERR_CONFLICT, "A role named \"%s\" already "
		    "exists there.", f.name);
		return;
	case ROLE_WRITE_NOT_FOUND:
	case ROLE_WRITE_DB:
	case ROLE_WRITE__MAX:
		goto dbfail;
	}
	details = json_object_new_object();
	json_object_object_add(details, "name", json_object_new_string(f.name));
	json_object_object_add(details, "scopes",
	    json_object_new_string(f.scopes_lit));
	api_change_done(req, f.global ? NULL : f.tenant_id, "role.create",
	    "role", id, details, role_get, api_role_json, 201);
	return;
dbfail:
	api_abort(req);
}

void
api_roles_list(struct request *req)
{
	api_list_page(req, role_list, role_get, RC_ID, api_role_json);
}

void
api_roles_get(struct request *req)
{
	api_get_object(req, "role", role_get, api_role_json);
}

/*
 * A role the caller can see but not change (built in, global, or an
 * ancestor's) answers 403; one it cannot see, 404.  false = answered.
 */
static bool
changeable(struct request *req)
{
	struct json_object *o;
	bool	 mine = false, ok;

	if (!api_path_id(req, "role"))
		return false;
	if ((o = role_now(req, req->param, &mine)) == NULL) {
		api_missing(req, "role");
		return false;
	}
	if (!mine) {
		json_object_put(o);
		http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "Role %s is "
		    "built in or belongs to a tenant above this key's; it "
		    "cannot be changed here.", req->param);
		return false;
	}
	/* Changing a role changes every key holding it: hold it all first. */
	ok = scopes_within_caller(req, o, "change a role granting");
	json_object_put(o);
	return ok;
}

void
api_roles_update(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *body, *details;
	struct role_fields f;

	if (!changeable(req) || !api_body_object(req, &body) ||
	    read_fields(req, body, false, &f) == -1)
		return;
	if (!api_within_caller(req, f.scopes, f.nscopes, CANNOT_GRANT))
		return;
	if (!api_begin(req))
		return;
	switch (role_update(app(w)->db, req->param, req->principal->tenant_id,
	    f.name, f.description, f.has_scopes ? f.scopes_lit : NULL)) {
	case ROLE_WRITTEN:
		break;
	case ROLE_NAME_TAKEN:
		db_rollback(app(w)->db);
		http_error(req, ERR_CONFLICT, "A role with that name already "
		    "exists there.");
		return;
	case ROLE_WRITE_NOT_FOUND:
		db_rollback(app(w)->db);
		not_found(req);
		return;
	case ROLE_WRITE_DB:
	case ROLE_WRITE__MAX:
		goto dbfail;
	}
	details = json_object_new_object();
	if (f.has_scopes)
		json_object_object_add(details, "scopes",
		    json_object_new_string(f.scopes_lit));
	if (f.name != NULL)
		json_object_object_add(details, "name",
		    json_object_new_string(f.name));
	api_change_done(req, req->principal->tenant_id, "role.update", "role",
	    req->param, details, role_get, api_role_json, 200);
	return;
dbfail:
	api_abort(req);
}

void
api_roles_delete(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *obj;
	long		 assigned;

	if (!changeable(req))
		return;
	if ((obj = role_now(req, req->param, NULL)) == NULL) {
		api_missing(req, "role");
		return;
	}
	if (db_begin(app(w)->db) == -1)
		goto dbfail;
	switch (role_delete(app(w)->db, req->param, req->principal->tenant_id,
	    &assigned)) {
	case ROLE_REMOVED:
		break;
	case ROLE_IN_USE:
		db_rollback(app(w)->db);
		json_object_put(obj);
		http_error(req, ERR_CONFLICT, "Role %s is assigned to %ld keys; "
		    "remove it from them first.", req->param, assigned);
		return;
	case ROLE_REMOVAL_DB:
	case ROLE_REMOVAL__MAX:
		goto dbfail;
	}
	if (api_audit(req, req->principal->tenant_id, "role.delete", "role",
	    req->param, NULL) == -1 || db_commit(app(w)->db) == -1)
		goto dbfail;
	json_object_object_add(obj, "deleted", json_object_new_boolean(1));
	http_respond_json(req, 200, obj);
	return;
dbfail:
	json_object_put(obj);
	db_rollback(app(w)->db);
	api_db_failed(req);
}

/*
 * Whether the caller may give role, one of tenant's visible roles: it must
 * hold every scope the role grants.  False after answering.
 */
static bool
role_grantable(struct request *req, const char *role, const char *tenant)
{
	switch (api_role_grantable(req, role, tenant)) {
	case 1:
		return true;
	case 0:
		http_error(req, ERR_NOT_FOUND, "No role with id %s for this "
		    "key's tenant.", role);
		return false;
	default:
		return false;
	}
}

/* PUT and DELETE /v1/api_keys/{id}/role. */
static void
set_role(struct request *req, const char *role)
{
	struct worker	*w = req->w;
	struct json_object *obj = NULL, *details;
	struct db_res	*res;
	char		 tenant[40];
	bool		 found;

	if (!api_path_id(req, "API key"))
		return;
	/* The key's tenant decides which roles it may take. */
	if ((res = key_get(app(w)->db, req->param,
	    req->principal->tenant_id)) == NULL) {
		api_db_failed(req);
		return;
	}
	found = db_rows(res) == 1;
	if (found) {
		snprintf(tenant, sizeof(tenant), "%s",
		    db_value(res, 0, KC_TENANT));
		obj = api_key_json(res, 0);
	}
	db_res_free(res);
	if (!found) {
		http_error(req, ERR_NOT_FOUND, "No API key with id %s.",
		    req->param);
		return;
	}
	/*
	 * No key may reshape a key more powerful than itself, nor make one:
	 * without its role a key falls back to its own scopes, which must
	 * then be within the caller's too.
	 */
	if (!api_key_within_caller(req, obj) ||
	    (role == NULL && !scopes_within_caller(req, obj, CANNOT_GRANT))) {
		json_object_put(obj);
		return;
	}
	json_object_put(obj);
	obj = NULL;
	if (role != NULL && !role_grantable(req, role, tenant))
		return;
	if (!api_begin(req))
		return;
	if (key_set_role(app(w)->db, req->param, req->principal->tenant_id,
	    role) == -1)
		goto dbfail;
	details = json_object_new_object();
	json_object_object_add(details, "role_id",
	    role != NULL ? json_object_new_string(role) : NULL);
	api_change_done(req, tenant, role != NULL ? "api_key.role_assign" :
	    "api_key.role_remove", "api_key", req->param, details,
	    key_get, api_key_json, 200);
	return;
dbfail:
	api_abort(req);
}

void
api_keys_role_put(struct request *req)
{
	static const char *const fields[] = { "role_id", NULL };
	struct json_object *body;
	struct checks	 c = { NULL };
	const char	*role;
	bool		 present;

	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, fields);
	role = check_string(&c, body, "role_id", 36, &present);
	if ((role == NULL || !uuid_valid(role)) && c.details == NULL)
		check_fail(&c, "role_id", "required: a role's UUID");
	if (check_done(req, &c) == -1)
		return;
	set_role(req, role);
}

void
api_keys_role_delete(struct request *req)
{
	set_role(req, NULL);
}
