#include "autoconfig.h"

/*
 * The API as the worker's app: what it starts (the vault, the key cache,
 * the provider connections, the database handle and its LISTEN), what it
 * stops, and the table server/worker.c calls.  Requests go through
 * middleware.c, deferred work through maintenance.c, the shared memory's
 * layout is shared.c's.
 */
#include <stdlib.h>

#include "api/api.h"
#include "api/app.h"
#include "api/leases.h"
#include "core/apikey.h"
#include "core/audit.h"
#include "core/credits.h"
#include "core/keycache.h"
#include "core/keys.h"
#include "core/vault.h"
#include "lib/db.h"
#include "lib/upstream.h"
#include "server/config.h"
#include "server/log.h"
#include "server/worker.h"

/*
 * PostgreSQL announced a change to keys, roles, tenants or the vault;
 * what says what it touched.  A change this worker committed reaches the
 * other workers through shared memory before the client hears of it.
 */
static void
cache_changed(void *arg, const char *what, bool own)
{
	struct worker	*w = arg;

	if (what[0] == '*' || what[0] == '$')
		credits_prices_forget();
	if (what[0] != '$')
		keycache_forget(app(w)->keys, what, own);
}

/*
 * The worker's database handle: its timeouts, the audit key its sessions
 * are given, the channel it listens on.  Connecting waits for the first
 * statement.  0, or -1 (logged).
 */
static int
open_database(struct worker *w)
{
	app(w)->db = db_new(w->cfg->database_url,
	    w->cfg->database_connect_timeout, "keygated");
	if (app(w)->db == NULL) {
		log_error("db_new: preparing the database handle: out of "
		    "memory");
		return -1;
	}
	db_set_timeouts(app(w)->db, w->cfg->database_statement_timeout * 1000,
	    w->cfg->database_lock_timeout * 1000);
	if (audit_attach(app(w)->db, w->cfg->hmac_secret) == -1) {
		log_error("audit_attach: keying the audit chain: failed");
		return -1;
	}
	if (db_listen(app(w)->db, "keygate_cache", cache_changed, w) == -1) {
		log_error("db_listen: keygate_cache: refused");
		return -1;
	}
	return 0;
}

/* What core/auth.c needs of the configuration. */
static void
auth_settings_of(const struct config *cfg, struct auth_settings *as)
{
	as->dev_key = cfg->mode != MODE_PRODUCTION;
	as->key_brand = cfg->key_brand;
	as->hmac_secret = cfg->hmac_secret;
	as->jwt_secret = cfg->jwt_secret;
	as->jwt_leeway = cfg->jwt_leeway;
}

const struct gateway_settings *
api_gateway_settings(const struct worker *w)
{
	return &((const struct api_state *)w->app_data)->gateway;
}

const struct auth_settings *
api_auth_settings(const struct worker *w)
{
	return &((const struct api_state *)w->app_data)->auth;
}

/*
 * Connects to PostgreSQL and checks the schema.  An unreachable server is
 * not fatal (requests get 503 until it is back); a reachable one that is
 * not migrated is, because no request could succeed.
 */
static int
start(struct worker *w)
{
	struct api_state *st;
	int	 version = 0;

	if ((w->app_data = calloc(1, sizeof(struct api_state))) == NULL) {
		log_error("calloc: starting the API: out of memory");
		return -1;
	}
	if (w->cfg->master_keys[0] != '\0') {
		char err[160];

		if ((app(w)->vault = vault_new(w->cfg->master_keys, err,
		    sizeof(err))) == NULL) {
			log_error("vault: %s", err);
			return -1;
		}
	} else if (w->slot == 0)
		log_warn("master_keys is empty: the vault is unavailable");
	st = w->app_data;
	auth_settings_of(w->cfg, &st->auth);
	st->gateway.upstreams = &w->cfg->upstreams;
	st->gateway.pool_key = w->cfg->pool_openrouter_key;
	app(w)->limits = api_shared_limits(w->shared);
	app(w)->metrics = api_shared_metrics(w->shared);
	st->failures = api_shared_failures(w->shared);
	if ((app(w)->keys = keycache_new(w->shared)) == NULL) {
		log_error("calloc: the key cache: out of memory");
		return -1;
	}
	if (upstream_global_init() == -1) {
		log_error("curl_global_init: starting the worker: failed");
		return -1;
	}
	if ((app(w)->upstream = upstream_new()) == NULL) {
		log_error("calloc: the upstream connections: out of memory");
		return -1;
	}
	if (open_database(w) == -1)
		return -1;
	credits_prices_cache();
	if (db_schema_version(app(w)->db, &version) == -1) {
		log_warn("PostgreSQL: connecting at start: %s; answering 503 "
		    "until it is reachable", db_errmsg(app(w)->db));
		return 0;
	}
	if (version < DB_SCHEMA_VERSION) {
		log_error("database is not migrated (schema version %d, this "
		    "keygated needs %d): run keygatectl migrate", version,
		    DB_SCHEMA_VERSION);
		return -1;
	}
	switch (key_dev_active(app(w)->db)) {
	case 1:
		if (w->cfg->mode == MODE_PRODUCTION) {
			log_error("the development key %s is present: "
			    "refusing to run in mode = production; revoke it "
			    "first", APIKEY_DEV_PREFIX);
			return -1;
		}
		if (w->slot == 0)
			log_warn("the development key is active: anyone who "
			    "reads the documentation can use this instance");
		break;
	case -1:
		log_warn("PostgreSQL: checking for the development key: %s",
		    db_errmsg(app(w)->db));
		break;
	}
	if (db_prepare_all(app(w)->db) == -1) {
		log_error("PostgreSQL: preparing statements: %s",
		    db_errmsg(app(w)->db));
		return db_status(app(w)->db) == DB_UNAVAILABLE ? 0 : -1;
	}
	return 0;
}

/* The worker of slot 0 also starts the host's ledger writer. */
static int
api_start(struct worker *w)
{
	if (start(w) == -1)
		return -1;
	return leases_start(w);
}

static void
api_stop(struct worker *w)
{
	leases_stop(w);
	/* Flush what is pending, if the worker got as far as a database. */
	if (w->app_data != NULL && app(w)->db != NULL) {
		struct api_state *st = w->app_data;

		st->last_touch = 0;
		(void)api_after(w);
	}
	db_free(app(w)->db);
	app(w)->db = NULL;
	vault_free(app(w)->vault);
	app(w)->vault = NULL;
	keycache_free(app(w)->keys);
	app(w)->keys = NULL;
	upstream_free(app(w)->upstream);
	app(w)->upstream = NULL;
	free(w->app_data);
	w->app_data = NULL;
}

/* A transaction in the worker's connection is this request's alone. */
static bool
api_pinned(struct worker *w)
{
	return app(w)->db != NULL && db_in_transaction(app(w)->db);
}

const struct worker_app api_app = {
	.name = "api",
	.start = api_start,
	.handle = api_handle,
	.after = api_after,
	.stop = api_stop,
	.pinned = api_pinned,
	.shared_size = api_shared_size,
	.shared_init = api_shared_init,
	.worker_exited = api_worker_exited,
};
