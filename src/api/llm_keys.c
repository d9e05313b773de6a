/*
 * /v1/account/llm-keys: the tenant's provider keys in the vault, and
 * /v1/maintenance/reencrypt.  A provider key is in clear only between the
 * request body and the seal, and is wiped with the body.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/tenants.h"
#include "core/vault.h"
#include "lib/buf.h"
#include "lib/db.h"
#include "lib/json.h"
#include "providers/providers.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

static const char *const body_fields[PROVIDER__MAX + 1] = {
	"openai_key", "anthropic_key", "google_key", "openrouter_key", NULL,
};

static void
vault_unavailable(struct request *req)
{
	api_db_unavailable(req, true);
}

/* A failed database call inside the vault routes. */
static void
vault_db_failed(struct request *req)
{
	if (db_status(app(req->w)->db) == DB_UNAVAILABLE)
		vault_unavailable(req);
	else
		api_db_failed(req);
}

static void
success(struct request *req, const char *message)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "success", json_object_new_boolean(1));
	json_object_object_add(o, "message", json_object_new_string(message));
	http_respond_json(req, 200, o);
}

/*
 * Each key given (keys[provider], or NULL) tried with its provider.  False
 * after answering for the first that is refused or cannot be tried.
 */
static bool
all_valid(struct request *req, const char *const keys[PROVIDER__MAX])
{
	const struct config *cfg = req->w->cfg;
	char		 reason[256];
	long		 connect, timeout;
	int		 i;

	connect = cfg->upstream_connect_timeout;
	timeout = connect + cfg->upstream_idle_timeout;
	if (timeout > cfg->upstream_total_timeout)
		timeout = cfg->upstream_total_timeout;
	for (i = 0; i < PROVIDER__MAX; i++) {
		if (keys[i] == NULL)
			continue;
		switch (provider_validate_key((enum provider)i,
		    cfg->base_url[i], keys[i], connect, timeout, reason,
		    sizeof(reason))) {
		case VALIDATE_OK:
			break;
		case VALIDATE_REJECTED:
			http_error(req, ERR_INVALID_UPSTREAM_KEY, "Invalid API "
			    "key: Key validation failed: %s: %s",
			    providers[i]->name, reason);
			return false;
		case VALIDATE_UNREACHABLE:
		case VALIDATE_RESULT__MAX:
			http_error(req, ERR_UPSTREAM, "Key validation failed: "
			    "%s: %s", providers[i]->name, reason);
			return false;
		}
	}
	return true;
}

/*
 * Each sealed key given (keys[provider]) written in the open transaction;
 * the providers stored, or NULL when the database failed.
 */
static struct json_object *
store_sealed(struct request *req, const char *const keys[PROVIDER__MAX],
    const struct buf sealed[PROVIDER__MAX])
{
	struct worker	*w = req->w;
	struct json_object *list = json_object_new_array();
	int		 i;

	for (i = 0; i < PROVIDER__MAX; i++) {
		if (keys[i] == NULL)
			continue;
		json_object_array_add(list,
		    json_object_new_string(providers[i]->name));
		if (vault_store(app(w)->db, app(w)->vault,
		    req->principal->tenant_id, providers[i]->name, sealed[i].data,
		    w->cfg->validate_llm_keys) == -1) {
			json_object_put(list);
			return NULL;
		}
	}
	return list;
}

void
api_llm_keys_store(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *body, *details, *list;
	struct checks	 c = { NULL };
	struct buf	 sealed[PROVIDER__MAX];
	const char	*keys[PROVIDER__MAX];
	bool		 present;
	int		 i, n = 0;

	if (app(w)->vault == NULL) {
		vault_unavailable(req);
		return;
	}
	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, body_fields);
	for (i = 0; i < PROVIDER__MAX; i++) {
		keys[i] = check_string(&c, body, body_fields[i], 0, &present);
		n += keys[i] != NULL;
	}
	if (n == 0 && c.details == NULL)
		check_fail(&c, "openai_key", "give at least one of openai_key, "
		    "anthropic_key, google_key, openrouter_key");
	if (check_done(req, &c) == -1)
		return;
	for (i = 0; i < PROVIDER__MAX; i++)
		if (keys[i] != NULL &&
		    !provider_key_format_ok((enum provider)i, keys[i])) {
			http_error(req, ERR_INVALID_PROVIDER_KEY, "Invalid %s "
			    "key format: expected %s.", providers[i]->name,
			    providers[i]->key_format);
			return;
		}
	/* Every key is tried before anything is stored: all or none. */
	if (w->cfg->validate_llm_keys && !all_valid(req, keys))
		return;
	memset(sealed, 0, sizeof(sealed));
	for (i = 0; i < PROVIDER__MAX; i++)
		if (keys[i] != NULL && vault_seal(app(w)->vault,
		    req->principal->tenant_id, providers[i]->name, keys[i],
		    &sealed[i]) == -1) {
			http_error(req, ERR_INTERNAL, "The key could not be "
			    "sealed.");
			goto out;
		}
	if (db_begin(app(w)->db) == -1) {
		vault_db_failed(req);
		goto out;
	}
	if ((list = store_sealed(req, keys, sealed)) == NULL)
		goto dbfail;
	details = json_object_new_object();
	json_object_object_add(details, "providers", list);
	json_object_object_add(details, "validated",
	    json_object_new_boolean(w->cfg->validate_llm_keys));
	if (api_audit(req, req->principal->tenant_id, "llm_key.store",
	    "tenant", req->principal->tenant_id, details) == -1 ||
	    db_commit(app(w)->db) == -1)
		goto dbfail;
	success(req, w->cfg->validate_llm_keys ?
	    "LLM API keys stored and validated successfully" :
	    "LLM API keys stored");
	goto out;
dbfail:
	db_rollback(app(w)->db);
	vault_db_failed(req);
out:
	for (i = 0; i < PROVIDER__MAX; i++)
		buf_free(&sealed[i]);
}

void
api_llm_keys_status(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *o;
	struct vault_status st;
	char		 name[48];
	int		 i;

	if (app(w)->vault == NULL) {
		vault_unavailable(req);
		return;
	}
	if (vault_status(app(w)->db, req->principal->tenant_id, &st) == -1) {
		vault_db_failed(req);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "pool_available", json_object_new_boolean(
	    w->cfg->pool_openrouter_key[0] != '\0'));
	for (i = 0; i < PROVIDER__MAX; i++) {
		snprintf(name, sizeof(name), "has_%s_key", providers[i]->name);
		json_object_object_add(o, name,
		    json_object_new_boolean(st.has[i]));
	}
	for (i = 0; i < PROVIDER__MAX; i++) {
		snprintf(name, sizeof(name), "%s_last_validated",
		    providers[i]->name);
		json_object_object_add(o, name, st.validated[i][0] != '\0' ?
		    json_object_new_string(st.validated[i]) : NULL);
	}
	http_respond_json(req, 200, o);
}

void
api_llm_keys_delete(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *details, *list;
	struct db_res	*res;
	char		 provider[32];
	int		 rc, r;

	if (app(w)->vault == NULL) {
		vault_unavailable(req);
		return;
	}
	/* A misspelt parameter must not turn into "delete everything". */
	if (!query_only(req->query, "provider")) {
		http_error(req, ERR_BAD_REQUEST, "The only query parameter here "
		    "is provider.");
		return;
	}
	rc = query_get(req->query, "provider", provider, sizeof(provider));
	if (rc == -1 || (rc == 1 && provider_parse(provider) ==
	    PROVIDER__MAX)) {
		http_error(req, ERR_BAD_REQUEST, "provider must be one of "
		    "openai, anthropic, google, openrouter.");
		return;
	}
	if (db_begin(app(w)->db) == -1) {
		vault_db_failed(req);
		return;
	}
	if ((res = vault_delete(app(w)->db, req->principal->tenant_id,
	    rc == 1 ? provider : NULL)) == NULL)
		goto dbfail;
	list = json_object_new_array();
	for (r = 0; r < db_rows(res); r++)
		json_object_array_add(list,
		    json_object_new_string(db_value(res, r, 0)));
	db_res_free(res);
	details = json_object_new_object();
	json_object_object_add(details, "providers", list);
	if (api_audit(req, req->principal->tenant_id, "llm_key.delete",
	    "tenant", req->principal->tenant_id, details) == -1 ||
	    db_commit(app(w)->db) == -1)
		goto dbfail;
	success(req, "LLM keys deleted");
	return;
dbfail:
	db_rollback(app(w)->db);
	vault_db_failed(req);
}

void
api_maintenance_reencrypt(struct request *req)
{
	struct worker	*w = req->w;
	struct json_object *o, *details;
	char		 err[256];
	long		 n;

	/* It touches every tenant's rows: the root tenant's keys alone. */
	if (strcmp(req->principal->tenant_id, TENANT_ROOT) != 0) {
		http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "Maintenance is "
		    "reserved to the operator.");
		return;
	}
	if (app(w)->vault == NULL) {
		vault_unavailable(req);
		return;
	}
	if (db_begin(app(w)->db) == -1) {
		vault_db_failed(req);
		return;
	}
	if ((n = vault_reencrypt_all(app(w)->db, app(w)->vault, err,
	    sizeof(err))) < 0) {
		db_rollback(app(w)->db);
		if (db_status(app(w)->db) != DB_OK)
			vault_db_failed(req);
		else {
			/* err may name any tenant: it stays in the log. */
			log_error("vault_reencrypt_all: re-encrypting the vault: "
			    "%s", err);
			http_error(req, ERR_INTERNAL, "Re-encryption failed, "
			    "nothing was changed (request %s).",
			    req->request_id);
		}
		return;
	}
	details = json_object_new_object();
	json_object_object_add(details, "reencrypted", json_object_new_int64(n));
	json_object_object_add(details, "master_key_id",
	    json_object_new_string(vault_active_id(app(w)->vault)));
	if (api_audit(req, req->principal->tenant_id, "vault.reencrypt",
	    "vault", vault_active_id(app(w)->vault), details) == -1 ||
	    db_commit(app(w)->db) == -1) {
		db_rollback(app(w)->db);
		vault_db_failed(req);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "success", json_object_new_boolean(1));
	json_object_object_add(o, "reencrypted", json_object_new_int64(n));
	json_object_object_add(o, "master_key_id",
	    json_object_new_string(vault_active_id(app(w)->vault)));
	http_respond_json(req, 200, o);
}
