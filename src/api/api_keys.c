/*
 * /v1/api_keys: create, list, get, update, revoke, rotate, dormant.  Each
 * handler parses, authorizes, calls the domain and renders; every mutation
 * and its audit row share one transaction.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/keys.h"
#include "core/scope.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

#define MAX_SCOPES	AUTH_MAX_SCOPES
#define MAX_GRACE	(30 * 86400)	/* s a rotated secret may live on */

/* What POST and PATCH may carry. */
struct key_fields {
	const char	*name;
	bool		 has_name;
	const char	*scopes[MAX_SCOPES];
	size_t		 nscopes;
	bool		 has_scopes;
	const char	*role_id;
	const char	*tenant_id;
	const char	*env;
	char		 expires[40];	/* ISO 8601, "" = never */
	time_t		 expires_t;	/* the same, 0 = never */
	bool		 has_expires;
	long		 rl_max;
	bool		 has_rl_max;
	int		 rl_window;	/* s */
	bool		 has_rl_window;
};

/* t as "2030-01-02T03:04:05Z" in out. */
static void
iso_utc(time_t t, char *out, size_t outsz)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The tenant_id member of a rendered key (borrowed). */
static const char *
obj_tenant(struct json_object *o)
{
	struct json_object *t;

	return json_object_object_get_ex(o, "tenant_id", &t) ?
	    json_object_get_string(t) : NULL;
}

/* scopes: known ones, MAX_SCOPES at most. */
static void
read_scopes(struct checks *c, struct json_object *body, struct key_fields *f)
{
	struct json_object *arr, *v;
	const char	*s;
	bool		 present;
	size_t		 i;

	arr = check_string_array(c, body, "scopes", MAX_SCOPES, &present);
	if (arr != NULL) {
		f->has_scopes = true;
		for (i = 0; i < json_object_array_length(arr); i++) {
			s = json_object_get_string(
			    json_object_array_get_idx(arr, i));
			if (!scope_valid(s)) {
				check_fail(c, "scopes", "unknown scope "
				    "\"%.64s\"", s);
				break;
			}
			f->scopes[f->nscopes++] = s;
		}
	} else if (present && json_object_object_get_ex(body, "scopes", &v) &&
	    v == NULL)
		check_fail(c, "scopes", "must be an array of strings");
}

/* expires_at: a timestamp in the future, or null for none. */
static void
read_expiry(struct checks *c, struct json_object *body, struct key_fields *f)
{
	const char	*s;
	bool		 present;
	time_t		 t;

	s = check_string(c, body, "expires_at", 40, &present);
	if (!present)
		return;
	f->has_expires = true;
	if (s == NULL)
		return;
	if (iso8601_parse(s, &t) == -1)
		check_fail(c, "expires_at", "must be an ISO 8601 timestamp "
		    "such as 2030-01-01T00:00:00Z");
	else if (t <= time(NULL))
		check_fail(c, "expires_at", "must be in the future");
	else {
		f->expires_t = t;
		iso_utc(t, f->expires, sizeof(f->expires));
	}
}

/*
 * Reads the fields common to create and update; 0, or -1 after answering.
 */
static int
read_fields(struct request *req, struct json_object *body, bool create,
    struct key_fields *f)
{
	static const char *const create_fields[] = { "name", "scopes",
	    "role_id", "tenant_id", "env", "expires_at", "rate_limit_max",
	    "rate_limit_window", NULL };
	static const char *const update_fields[] = { "name", "scopes",
	    "expires_at", "rate_limit_max", "rate_limit_window", NULL };
	struct checks	 c = { NULL };
	struct json_object *v;
	const char	*s;
	bool		 present;
	long		 l;

	memset(f, 0, sizeof(*f));
	if (body == NULL)
		return 0;
	check_known_fields(&c, body, create ? create_fields : update_fields);

	f->name = check_string(&c, body, "name", 200, &present);
	f->has_name = present && f->name != NULL;
	if (present && f->name == NULL && c.details == NULL)
		check_fail(&c, "name", "must be a string");

	read_scopes(&c, body, f);
	if (create) {
		f->role_id = check_string(&c, body, "role_id", 36, &present);
		if (f->role_id != NULL && !uuid_valid(f->role_id))
			check_fail(&c, "role_id", "must be a UUID");
		f->tenant_id = check_string(&c, body, "tenant_id", 36,
		    &present);
		if (f->tenant_id != NULL && !uuid_valid(f->tenant_id))
			check_fail(&c, "tenant_id", "must be a UUID");
		f->env = check_string(&c, body, "env", 8, &present);
		if (f->env != NULL && strcmp(f->env, "live") != 0 &&
		    strcmp(f->env, "test") != 0)
			check_fail(&c, "env", "must be \"live\" or \"test\"");
	}
	read_expiry(&c, body, f);
	if (check_int(&c, body, "rate_limit_max", 1, 100000, &l, &present)) {
		f->rl_max = l;
		f->has_rl_max = true;
	} else if (present && json_object_object_get_ex(body,
	    "rate_limit_max", &v) && v == NULL)
		f->has_rl_max = true;	/* null: back to the default */

	s = check_string(&c, body, "rate_limit_window", 32, &present);
	if (s != NULL) {
		int w = config_parse_window(s);

		if (w < 1 || w > 86400 * 31)
			check_fail(&c, "rate_limit_window", "must be like "
			    "\"30 seconds\", \"1 minute\", \"1 hour\" or "
			    "\"1 day\"");
		f->rl_window = w;
		f->has_rl_window = true;
	} else if (present && json_object_object_get_ex(body,
	    "rate_limit_window", &v) && v == NULL)
		f->has_rl_window = true;
	return check_done(req, &c);
}

/* No escalation: every scope a caller grants must be within its own. */
static bool
within_caller(struct request *req, const char *const *scopes, size_t n)
{
	return api_within_caller(req, scopes, n, "grant");
}

/* True when max per win allows more than cmax per cwin, at once or over time. */
static bool
limit_above(long max, int win, long cmax, int cwin)
{
	return max > cmax || (long long)max * cwin > (long long)cmax * win;
}

/*
 * No escalation beyond scopes either: a key the caller makes or changes
 * expires no later than the caller, allows no more requests than it, and
 * is live only when the caller is.  cur is the key being changed (NULL
 * on create); only what the body changes is checked then.  On create,
 * what the body leaves out is taken from the caller where the default
 * would go beyond it.  false after answering 403.
 *
 * A JWT has no key's expiry to pass on (whoever signs tokens holds
 * jwt_secret and could sign any exp): its keys may outlive it.  Its
 * limit is the configured default, like that of a key without one.
 */
static bool
within_bounds(struct request *req, struct key_fields *f,
    struct json_object *cur)
{
	const struct principal *p = req->principal;
	const struct config *cfg = req->w->cfg;
	struct json_object *v;
	long	 cmax = p->rate_limit_max > 0 ? p->rate_limit_max :
	    cfg->rate_limit_max;
	int	 cwin = p->rate_limit_window > 0 ? p->rate_limit_window :
	    cfg->rate_limit_window;
	long	 max = cfg->rate_limit_max;
	int	 win = cfg->rate_limit_window;
	char	 until[40];

	if (p->until != 0 && (f->has_expires || cur == NULL)) {
		iso_utc(p->until, until, sizeof(until));
		if (cur == NULL && !f->has_expires) {
			f->has_expires = true;
			f->expires_t = p->until;
			memcpy(f->expires, until, sizeof(until));
		} else if (f->expires_t == 0 || f->expires_t > p->until) {
			http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "This key "
			    "expires at %s; a key it makes or changes cannot "
			    "expire later, nor never.", until);
			return false;
		}
	}
	if (cur == NULL && strcmp(p->env, "test") == 0) {
		if (f->env == NULL)
			f->env = "test";
		else if (strcmp(f->env, "test") != 0) {
			http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "A test "
			    "key cannot make live keys.");
			return false;
		}
	}
	if (cur != NULL && !f->has_rl_max && !f->has_rl_window)
		return true;
	if (cur != NULL && json_object_object_get_ex(cur, "rate_limit_max",
	    &v) && v != NULL)
		max = (long)json_object_get_int64(v);
	if (cur != NULL && json_object_object_get_ex(cur, "rate_limit_window",
	    &v) && v != NULL)
		win = config_parse_window(json_object_get_string(v));
	if (f->has_rl_max)
		max = f->rl_max > 0 ? f->rl_max : cfg->rate_limit_max;
	if (f->has_rl_window)
		win = f->rl_window > 0 ? f->rl_window : cfg->rate_limit_window;
	if (cur == NULL && limit_above(max, win, cmax, cwin)) {
		if (!f->has_rl_max) {
			f->has_rl_max = true;
			max = f->rl_max = cmax;
		}
		if (!f->has_rl_window) {
			f->has_rl_window = true;
			win = f->rl_window = cwin;
		}
	}
	if (limit_above(max, win, cmax, cwin)) {
		http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "This key allows "
		    "%ld requests per %d seconds; a key it makes or changes "
		    "cannot allow more.", cmax, cwin);
		return false;
	}
	return true;
}

/* The role's scopes must also be within the caller's; false = answered. */
static bool
role_usable(struct request *req, const char *role, const char *tenant)
{
	struct checks	 c = { NULL };

	switch (api_role_grantable(req, role, tenant)) {
	case 1:
		return true;
	case 0:
		check_fail(&c, "role_id", "no such role for this tenant");
		return check_done(req, &c) == 0;	/* -1: answered */
	default:
		return false;
	}
}

/* The API's view of a key row: metadata only, never a secret or hash. */
struct json_object *
api_key_json(const struct db_res *r, int row)
{
	struct json_object *o = json_object_new_object();
	const char	*w;
	char		 win[32];

	json_object_object_add(o, "id", api_text_or_null(r, row, KC_ID));
	json_object_object_add(o, "object", json_object_new_string("api_key"));
	json_object_object_add(o, "name", json_object_new_string(
	    db_value(r, row, KC_NAME)));
	json_object_object_add(o, "tenant_id",
	    api_text_or_null(r, row, KC_TENANT));
	json_object_object_add(o, "env", api_text_or_null(r, row, KC_ENV));
	json_object_object_add(o, "key_prefix",
	    api_text_or_null(r, row, KC_PREFIX));
	json_object_object_add(o, "last4", api_text_or_null(r, row, KC_LAST4));
	json_object_object_add(o, "scopes",
	    api_csv_array(db_value(r, row, KC_SCOPES)));
	json_object_object_add(o, "role_id", api_text_or_null(r, row, KC_ROLE));
	json_object_object_add(o, "effective_scopes",
	    api_csv_array(db_value(r, row, KC_EFFECTIVE)));
	json_object_object_add(o, "expires_at",
	    api_text_or_null(r, row, KC_EXPIRES));
	json_object_object_add(o, "revoked_at",
	    api_text_or_null(r, row, KC_REVOKED));
	json_object_object_add(o, "disabled_at",
	    api_text_or_null(r, row, KC_DISABLED));
	w = db_value(r, row, KC_RL_MAX);
	json_object_object_add(o, "rate_limit_max", *w != '\0' ?
	    json_object_new_int64(atol(w)) : NULL);
	w = db_value(r, row, KC_RL_WINDOW);
	if (*w != '\0') {
		key_window_text(atoi(w), win, sizeof(win));
		json_object_object_add(o, "rate_limit_window",
		    json_object_new_string(win));
	} else
		json_object_object_add(o, "rate_limit_window", NULL);
	json_object_object_add(o, "last_used_at",
	    api_text_or_null(r, row, KC_LAST_USED));
	json_object_object_add(o, "created_at",
	    api_text_or_null(r, row, KC_CREATED));
	json_object_object_add(o, "updated_at",
	    api_text_or_null(r, row, KC_UPDATED));
	return o;
}

/* Key id as the caller sees it now, or NULL (see api_missing()). */
static struct json_object *
key_now(struct request *req, const char *id)
{
	return api_fetch(req, key_get, id, api_key_json);
}

/*
 * In the open transaction, after a change to the key the path names: the
 * key as it is now, its audit row (action, details taken) written in the
 * name of the key's tenant.  NULL when either failed.
 */
static struct json_object *
key_audited(struct request *req, const char *action,
    struct json_object *details)
{
	struct json_object *obj;

	if ((obj = key_now(req, req->param)) == NULL) {
		json_object_put(details);
		return NULL;
	}
	if (api_audit(req, obj_tenant(obj), action, "api_key", req->param,
	    details) == -1) {
		json_object_put(obj);
		return NULL;
	}
	return obj;
}

/*
 * As key_audited(), then commits and answers the key with 200.  A failure
 * anywhere answers as api_abort().
 */
static void
key_changed(struct request *req, const char *action,
    struct json_object *details)
{
	struct json_object *obj;

	if ((obj = key_audited(req, action, details)) == NULL) {
		api_abort(req);
		return;
	}
	api_commit_respond(req, 200, obj);
}

/* Answers the key the path names as it is: nothing changed, no audit. */
static void
key_as_is(struct request *req)
{
	struct json_object *obj;

	if ((obj = key_now(req, req->param)) == NULL)
		api_db_failed(req);
	else
		http_respond_json(req, 200, obj);
}

/*
 * Commits the open transaction and answers obj (taken), a key, with
 * status and with its new secret, shown this once; the secret in out is
 * wiped here.  A failed commit answers as api_abort().
 */
static void
key_shown(struct request *req, int status, struct json_object *obj,
    struct key_created *out)
{
	json_object_object_add(obj, "key", json_object_new_string(out->key));
	key_created_wipe(out);
	api_commit_respond(req, status, obj);
}

/*
 * The key named in the path exists for the caller and is no more powerful
 * than it, nor would be after the change f (NULL = none).  false after
 * answering 404, 403 or the database failure.
 */
static bool
target_ok(struct request *req, struct key_fields *f)
{
	struct json_object *o;
	bool	 ok;

	if ((o = key_now(req, req->param)) == NULL) {
		api_missing(req, "API key");
		return false;
	}
	ok = api_key_within_caller(req, o) &&
	    (f == NULL || within_bounds(req, f, o));
	json_object_put(o);
	return ok;
}

/*
 * Neither scopes nor a role: the key may do what its creator may, no
 * more.  The creator's effective scopes become the key's own.
 */
static void
inherit_scopes(const struct request *req, struct key_fields *f)
{
	size_t	 i;

	if (f->has_scopes || f->role_id != NULL)
		return;
	for (i = 0; i < req->principal->nscopes; i++)
		f->scopes[i] = req->principal->scopes[i];
	f->nscopes = req->principal->nscopes;
}

/* The key_spec of fields f for tenant; its numbers are written in rl. */
static void
spec_of(const struct request *req, const struct key_fields *f,
    const char *tenant, struct key_spec *spec, char rl[2][24])
{
	memset(spec, 0, sizeof(*spec));
	spec->tenant_id = tenant;
	spec->name = f->name != NULL ? f->name : "";
	spec->env = f->env != NULL ? f->env : "live";
	spec->scopes = f->scopes;
	spec->nscopes = f->nscopes;
	spec->role_id = f->role_id;
	spec->expires_at = f->expires[0] != '\0' ? f->expires : NULL;
	spec->created_by = req->principal->key_id[0] ?
	    req->principal->key_id : NULL;
	if (f->has_rl_max && f->rl_max > 0) {
		snprintf(rl[0], sizeof(rl[0]), "%ld", f->rl_max);
		spec->rate_limit_max = rl[0];
	}
	if (f->has_rl_window && f->rl_window > 0) {
		snprintf(rl[1], sizeof(rl[1]), "%d", f->rl_window);
		spec->rate_limit_window = rl[1];
	}
}

/*
 * In the key's transaction, the tenant's quota of active keys
 * (key_room()).  1 room; 0 full (answered, rolled back); -1 the database
 * failed.
 */
static int
room_for_key(struct request *req, const char *tenant)
{
	struct worker	*w = req->w;
	long		 max = w->cfg->max_active_keys_per_tenant;

	switch (key_room(app(w)->db, tenant, max)) {
	case KEY_ROOM:
		return 1;
	case KEY_ROOM_FULL:
		db_rollback(app(w)->db);
		http_error(req, ERR_KEY_LIMIT_REACHED, "Tenant %s already has "
		    "%ld active keys, the most allowed.", tenant, max);
		return 0;
	case KEY_ROOM_DB:
	case KEY_ROOM__MAX:
		break;
	}
	return -1;
}

/* The audit row of a new key: its prefix and scopes.  0, or -1. */
static int
audit_created(struct request *req, const char *tenant,
    const struct key_fields *f, const struct key_created *out)
{
	struct json_object *details;
	char		 scopes_csv[1200];
	size_t		 i;

	scopes_csv[0] = '\0';
	for (i = 0; i < f->nscopes; i++)
		snprintf(scopes_csv + strlen(scopes_csv),
		    sizeof(scopes_csv) - strlen(scopes_csv), "%s%s",
		    i ? "," : "", f->scopes[i]);
	details = json_object_new_object();
	json_object_object_add(details, "key_prefix",
	    json_object_new_string(out->prefix));
	json_object_object_add(details, "scopes",
	    json_object_new_string(scopes_csv));
	return api_audit(req, tenant, "api_key.create", "api_key", out->id,
	    details);
}

void
api_keys_create(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *body, *obj = NULL;
	struct key_fields f;
	struct key_spec	 spec;
	struct key_created out;
	const char	*tenant;
	char		 rl[2][24];

	if (!api_body_object(req, &body) ||
	    read_fields(req, body, true, &f) == -1)
		return;
	inherit_scopes(req, &f);
	tenant = f.tenant_id != NULL ? f.tenant_id :
	    req->principal->tenant_id;
	if (!api_tenant_target(req, tenant))
		return;
	if (!within_caller(req, f.scopes, f.nscopes) ||
	    !within_bounds(req, &f, NULL))
		return;
	if (f.role_id != NULL && !role_usable(req, f.role_id, tenant))
		return;

	spec_of(req, &f, tenant, &spec, rl);
	if (!api_begin(req))
		return;
	switch (room_for_key(req, tenant)) {
	case 1:
		break;
	case 0:
		return;
	default:
		goto dbfail;
	}
	switch (key_create(app(w)->db, w->cfg->key_brand, w->cfg->hmac_secret,
	    &spec, &out)) {
	case KEY_OK:
		break;
	case KEY_NO_TENANT:
		db_rollback(app(w)->db);
		http_error(req, ERR_NOT_FOUND, "No tenant with id %s.", tenant);
		return;
	case KEY_BAD_INPUT:
		db_rollback(app(w)->db);
		http_error(req, ERR_BAD_REQUEST, "The key could not be made "
		    "from these fields.");
		return;
	case KEY_DB:
	case KEY_RESULT__MAX:
		goto dbfail;
	}
	if (audit_created(req, tenant, &f, &out) == -1 ||
	    (obj = key_now(req, out.id)) == NULL) {
		key_created_wipe(&out);
		goto dbfail;
	}
	key_shown(req, 201, obj, &out);
	return;
dbfail:
	api_abort(req);
}

/*
 * Shared by list and dormant: answers the rows res (fetched with limit + 1,
 * freed here), or the database failure when it is NULL.
 */
static void
respond_page(struct request *req, struct db_res *res, int limit)
{
	struct json_object *data;
	char	 next[40];

	if (res == NULL) {
		api_db_failed(req);
		return;
	}
	data = api_page_rows(res, limit, KC_ID, api_key_json, next,
	    sizeof(next));
	db_res_free(res);
	api_page_respond(req, data, next[0] ? next : NULL);
}

void
api_keys_list(struct request *req)
{
	char		 cursor[64], tenant[64], incl[8];
	int		 limit, rc;

	if (!api_page_params(req, &limit, cursor, sizeof(cursor)) ||
	    !api_cursor_known(req, key_get, cursor))
		return;
	rc = query_get(req->query, "tenant_id", tenant, sizeof(tenant));
	if (rc == -1 || (rc == 1 && !uuid_valid(tenant))) {
		http_error(req, ERR_BAD_REQUEST, "tenant_id must be a UUID.");
		return;
	}
	if (rc == 1 && !api_tenant_target(req, tenant))
		return;
	if (query_get(req->query, "include_revoked", incl, sizeof(incl)) != 1)
		strcpy(incl, "false");
	if (strcmp(incl, "true") != 0 && strcmp(incl, "false") != 0) {
		http_error(req, ERR_BAD_REQUEST, "include_revoked must be true "
		    "or false.");
		return;
	}
	respond_page(req, key_list(app(req->w)->db, req->principal->tenant_id,
	    rc == 1 ? tenant : NULL, strcmp(incl, "true") == 0,
	    cursor[0] ? cursor : NULL, limit + 1), limit);
}

void
api_keys_dormant(struct request *req)
{
	char		 cursor[64], days[16], *end;
	int		 limit, rc;
	long		 d = 90;

	if (!api_page_params(req, &limit, cursor, sizeof(cursor)) ||
	    !api_cursor_known(req, key_get, cursor))
		return;
	rc = query_get(req->query, "days", days, sizeof(days));
	if (rc == 1) {
		d = strtol(days, &end, 10);
		if (*days == '\0' || *end != '\0' || d < 1 || d > 36500)
			rc = -1;
	}
	if (rc == -1) {
		http_error(req, ERR_BAD_REQUEST, "days must be a whole number "
		    "from 1 to 36500.");
		return;
	}
	respond_page(req, key_dormant(app(req->w)->db,
	    req->principal->tenant_id, d, cursor[0] ? cursor : NULL, limit + 1),
	    limit);
}

void
api_keys_get(struct request *req)
{
	api_get_object(req, "API key", key_get, api_key_json);
}

/* {"field": true, ...} for each member of body: what an update changed. */
static struct json_object *
fields_named(struct json_object *body)
{
	struct json_object *names = json_object_new_object();

	if (body != NULL) {
		json_object_object_foreach(body, name, val) {
			(void)val;
			json_object_object_add(names, name,
			    json_object_new_boolean(1));
		}
	}
	return names;
}

void
api_keys_update(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *body;
	struct key_fields f;
	struct key_change ch;
	char		 scopes[2048], rlmax[24], rlwin[24];
	int		 rc;

	if (!api_path_id(req, "API key"))
		return;
	if (!api_body_object(req, &body) ||
	    read_fields(req, body, false, &f) == -1 || !target_ok(req, &f))
		return;
	if (!f.has_name && !f.has_scopes && !f.has_expires && !f.has_rl_max &&
	    !f.has_rl_window) {
		/* Nothing to change: no write, no audit row. */
		key_as_is(req);
		return;
	}
	if (f.has_scopes && (!within_caller(req, f.scopes, f.nscopes) ||
	    key_scopes_literal(f.scopes, f.nscopes, scopes,
	    sizeof(scopes)) == -1))
		return;
	snprintf(rlmax, sizeof(rlmax), "%ld", f.rl_max);
	snprintf(rlwin, sizeof(rlwin), "%d", f.rl_window);
	memset(&ch, 0, sizeof(ch));
	ch.has_name = f.has_name;
	ch.name = f.name;
	ch.scopes = f.has_scopes ? scopes : NULL;
	ch.has_expires = f.has_expires;
	ch.expires_at = f.expires[0] != '\0' ? f.expires : NULL;
	ch.has_rl_max = f.has_rl_max;
	ch.rl_max = f.rl_max > 0 ? rlmax : NULL;
	ch.has_rl_window = f.has_rl_window;
	ch.rl_window = f.rl_window > 0 ? rlwin : NULL;
	if (!api_begin(req))
		return;
	if ((rc = key_update(app(w)->db, req->param, req->principal->tenant_id,
	    &ch)) == -1) {
		api_abort(req);
		return;
	}
	if (rc == 0) {
		/* target_ok() saw it: it is revoked. */
		db_rollback(app(w)->db);
		http_error(req, ERR_CONFLICT, "Key %s is revoked and cannot "
		    "be changed.", req->param);
		return;
	}
	key_changed(req, "api_key.update", fields_named(body));
}

void
api_keys_revoke(struct request *req)
{
	struct worker	*w = req->w;
	int		 rc;

	if (!api_path_id(req, "API key"))
		return;
	if (!target_ok(req, NULL))
		return;
	if (!api_begin(req))
		return;
	if ((rc = key_revoke(app(w)->db, req->param,
	    req->principal->tenant_id)) == -1) {
		api_abort(req);
		return;
	}
	if (rc == 0) {
		/* Revoked already: the answer is the same, nothing changes. */
		db_rollback(app(w)->db);
		key_as_is(req);
		return;
	}
	key_changed(req, "api_key.revoke", NULL);
}

void
api_keys_rotate(struct request *req)
{
	static const char *const fields[] = { "grace_seconds", NULL };
	struct worker	*w = req->w;
	struct json_object *body, *obj = NULL, *cur, *envv, *details;
	struct checks	 c = { NULL };
	struct key_created out;
	char		 env[8];
	long		 grace = 0;
	bool		 present;

	if (!api_path_id(req, "API key"))
		return;
	if (!api_body_object(req, &body))
		return;
	if (body != NULL) {
		check_known_fields(&c, body, fields);
		(void)check_int(&c, body, "grace_seconds", 0, MAX_GRACE,
		    &grace, &present);
	}
	if (check_done(req, &c) == -1)
		return;
	memset(&out, 0, sizeof(out));
	/* The new secret keeps the key's env. */
	if ((cur = key_now(req, req->param)) == NULL) {
		api_missing(req, "API key");
		return;
	}
	if (!api_key_within_caller(req, cur)) {
		json_object_put(cur);
		return;
	}
	snprintf(env, sizeof(env), "%s",
	    json_object_object_get_ex(cur, "env", &envv) ?
	    json_object_get_string(envv) : "live");
	json_object_put(cur);
	if (db_begin(app(w)->db) == -1)
		goto dbfail;
	switch (key_rotate(app(w)->db, w->cfg->key_brand, w->cfg->hmac_secret,
	    req->param, req->principal->tenant_id, env, grace, &out)) {
	case KEY_OK:
		break;
	case KEY_NO_TENANT:
		db_rollback(app(w)->db);
		http_error(req, ERR_CONFLICT, "Key %s is revoked and cannot "
		    "be rotated.", req->param);
		return;
	case KEY_BAD_INPUT:
	case KEY_DB:
	case KEY_RESULT__MAX:
		goto dbfail;
	}
	details = json_object_new_object();
	json_object_object_add(details, "key_prefix",
	    json_object_new_string(out.prefix));
	json_object_object_add(details, "grace_seconds",
	    json_object_new_int64(grace));
	if ((obj = key_audited(req, "api_key.rotate", details)) == NULL)
		goto dbfail;
	key_shown(req, 200, obj, &out);
	return;
dbfail:
	key_created_wipe(&out);
	db_rollback(app(w)->db);
	api_db_failed(req);
}
