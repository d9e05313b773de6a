#include "autoconfig.h"

#include <malloc.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "api/api.h"
#include "api/metrics.h"
#include "core/apikey.h"
#include "core/audit.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/authfail.h"
#include "core/jwt.h"
#include "core/keycache.h"
#include "core/keys.h"
#include "core/ratelimit.h"
#include "core/vault.h"
#include "core/calls.h"
#include "core/lease.h"
#include "api/leases.h"
#include "lib/buf.h"
#include "lib/db.h"
#include "lib/json.h"
#include "lib/upstream.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

/* Keys whose last_used_at is written in one batch after a response. */
#define TOUCH_MAX	64
#define TOUCH_INTERVAL	1.0	/* s between batches */
#define DORMANT_INTERVAL 600.0	/* s between sweeps for dormant keys */
#define HOLDS_INTERVAL	2.0	/* s between sweeps for orphaned holds */
/*
 * Provider handles idle this long are let go, with their connections and
 * descriptors: lib/upstream.c uses no connection idle for 4 s again, so
 * a handle kept longer would only hold a connection to be closed.
 */
#define KEPT_CALLS	0	/* handles kept whatever their age */
#define KEPT_IDLE	5.0	/* s */

/* A worker's API state, kept across requests. */
struct api_state {
	struct af_shared *failures;		/* shared; NULL = this worker */
	char		 touch[TOUCH_MAX][40];	/* key ids to mark used */
	int		 ntouch;
	double		 last_touch;		/* monotonic s */
	double		 last_sweep;		/* monotonic s, 0 = never */
	double		 last_holds;		/* monotonic s, 0 = never */
	unsigned long	 connects;		/* of w->db, last seen */
	unsigned	 db_back;		/* db_news.back, last seen */
};

/*
 * What the workers of one keygated share: the changes to keys they made
 * themselves (so that the others drop what they cached before the change
 * is answered), then the rate-limit counters, then the metrics.
 */
static size_t
aligned(size_t n)
{
	size_t	 a = alignof(max_align_t);

	return (n + a - 1) / a * a;
}

static size_t
limits_offset(void)
{
	return aligned(keycache_shared_size());
}

static size_t
metrics_offset(void)
{
	return limits_offset() + aligned(rl_shared_size());
}

/* Then the failed authentications. */
static size_t
failures_offset(void)
{
	return metrics_offset() + aligned(metrics_shared_size());
}

/* Then the calls in flight per key. */
static size_t
calls_offset(void)
{
	return failures_offset() + aligned(af_shared_size());
}

/* Then the credits leased to this host. */
static size_t
leases_offset(void)
{
	return calls_offset() + aligned(calls_shared_size());
}

/* Last, what the workers tell each other of the database. */
struct db_news {
	atomic_uint	 back;		/* bumped by a worker that reconnected */
};

static size_t
news_offset(void)
{
	return leases_offset() + aligned(lease_shared_size());
}

static size_t
api_shared_size(void)
{
	return news_offset() + sizeof(struct db_news);
}

static struct db_news *
db_news(void *shared)
{
	return shared != NULL ?
	    (struct db_news *)((char *)shared + news_offset()) : NULL;
}

/*
 * A worker that finds the database back tells the others, who try again
 * at once instead of when their own wait between attempts ends: once
 * one worker answers again, they all do.
 */
static void
db_news_exchange(struct worker *w)
{
	struct api_state *st = w->app_data;
	struct db_news	*news = db_news(w->shared);
	unsigned long	 n;
	unsigned	 back;

	if (news == NULL || w->db == NULL)
		return;
	if ((n = db_connects(w->db)) != st->connects) {
		st->connects = n;
		st->db_back = atomic_fetch_add(&news->back, 1) + 1;
		return;
	}
	if ((back = atomic_load(&news->back)) != st->db_back) {
		st->db_back = back;
		db_retry_now(w->db);
	}
}

static struct calls_shared *
calls_table(void *shared)
{
	return shared != NULL ?
	    (struct calls_shared *)((char *)shared + calls_offset()) : NULL;
}

static struct lease_shared *
lease_table(void *shared)
{
	return shared != NULL ?
	    (struct lease_shared *)((char *)shared + leases_offset()) : NULL;
}

struct lease_shared *
api_leases(struct worker *w)
{
	return lease_table(w->shared);
}

static int
api_shared_init(void *p)
{
	if (keycache_shared_init(p) == -1 ||
	    rl_shared_init((struct rl_shared *)((char *)p +
	    limits_offset())) == -1 ||
	    af_shared_init((struct af_shared *)((char *)p +
	    failures_offset())) == -1 ||
	    calls_shared_init(calls_table(p)) == -1 ||
	    lease_shared_init(lease_table(p)) == -1)
		return -1;
	return metrics_shared_init((struct metrics *)((char *)p +
	    metrics_offset()));
}

static void
api_worker_exited(void *p, pid_t pid, bool crashed)
{
	calls_forget(calls_table(p), pid);
	lease_forget(lease_table(p), pid);
	metrics_worker_exit((struct metrics *)((char *)p + metrics_offset()),
	    crashed);
}

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
		keycache_forget(w->keys, what, own);
}

/*
 * The worker's database handle: its timeouts, the audit key its sessions
 * are given, the channel it listens on.  Connecting waits for the first
 * statement.  0, or -1 (logged).
 */
static int
open_database(struct worker *w)
{
	w->db = db_new(w->cfg->database_url,
	    w->cfg->database_connect_timeout, "keygated");
	if (w->db == NULL) {
		log_error("db_new: preparing the database handle: out of "
		    "memory");
		return -1;
	}
	db_set_timeouts(w->db, w->cfg->database_statement_timeout * 1000,
	    w->cfg->database_lock_timeout * 1000);
	if (audit_attach(w->db, w->cfg->hmac_secret) == -1) {
		log_error("audit_attach: keying the audit chain: failed");
		return -1;
	}
	if (db_listen(w->db, "keygate_cache", cache_changed, w) == -1) {
		log_error("db_listen: keygate_cache: refused");
		return -1;
	}
	return 0;
}

/*
 * Connects to PostgreSQL and checks the schema.  An unreachable server is
 * not fatal (requests get 503 until it is back); a reachable one that is
 * not migrated is, because no request could succeed.
 */
static int
start(struct worker *w)
{
	int	 version = 0;

	if ((w->app_data = calloc(1, sizeof(struct api_state))) == NULL) {
		log_error("calloc: starting the API: out of memory");
		return -1;
	}
	if (w->cfg->master_keys[0] != '\0') {
		char err[160];

		if ((w->vault = vault_new(w->cfg->master_keys, err,
		    sizeof(err))) == NULL) {
			log_error("vault: %s", err);
			return -1;
		}
	} else if (w->slot == 0)
		log_warn("master_keys is empty: the vault is unavailable");
	if (w->shared != NULL) {
		w->limits = (struct rl_shared *)((char *)w->shared +
		    limits_offset());
		w->metrics = (struct metrics *)((char *)w->shared +
		    metrics_offset());
		((struct api_state *)w->app_data)->failures =
		    (struct af_shared *)((char *)w->shared + failures_offset());
	}
	if ((w->keys = keycache_new(w->shared)) == NULL) {
		log_error("calloc: the key cache: out of memory");
		return -1;
	}
	if (upstream_global_init() == -1) {
		log_error("curl_global_init: starting the worker: failed");
		return -1;
	}
	if ((w->upstream = upstream_new()) == NULL) {
		log_error("calloc: the upstream connections: out of memory");
		return -1;
	}
	if (open_database(w) == -1)
		return -1;
	credits_prices_cache();
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
	switch (key_dev_active(w->db)) {
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
		    db_errmsg(w->db));
		break;
	}
	if (db_prepare_all(w->db) == -1) {
		log_error("PostgreSQL: preparing statements: %s",
		    db_errmsg(w->db));
		return db_status(w->db) == DB_UNAVAILABLE ? 0 : -1;
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

/*
 * Every DORMANT_INTERVAL per worker: with dormant_disable_days set,
 * disables keys unused that long, each with its audit row.  Workers racing on the
 * same key are serialized by its row lock: each key is disabled once.
 */
static void
sweep_dormant(struct worker *w, struct api_state *st, double now)
{
	struct db_res	*res;
	const char	*p[1];
	char		 days[16];

	if (st->last_sweep > 0 && now - st->last_sweep < DORMANT_INTERVAL)
		return;
	st->last_sweep = now;
	/* Old rate-limit windows go on the same schedule. */
	if (w->slot == 0)
		rl_prune(w->db);
	if (w->cfg->dormant_disable_days <= 0)
		return;
	snprintf(days, sizeof(days), "%d", w->cfg->dormant_disable_days);
	p[0] = days;
	if ((res = db_query(w->db, STMT_KEY_DISABLE_DORMANT, 1, p)) == NULL) {
		log_warn("PostgreSQL: disabling dormant keys: %s",
		    db_errmsg(w->db));
		return;
	}
	if (db_rows(res) > 0)
		log_info("disabled %d keys unused for %d days", db_rows(res),
		    w->cfg->dormant_disable_days);
	db_res_free(res);
}

/*
 * Worker 0 of each keygated releases, every HOLDS_INTERVAL, the credit
 * holds of this host's processes that are gone (a worker killed during a
 * call) and any past its deadline.  Returns the ms until the next sweep,
 * or -1 for a worker that does not sweep.
 */
static int
sweep_holds(struct worker *w, struct api_state *st, double now)
{
	int	 n;

	if (w->slot != 0 || !w->cfg->credits_enforce)
		return -1;
	if (st->last_holds > 0 && now - st->last_holds < HOLDS_INTERVAL)
		return (int)((HOLDS_INTERVAL - (now - st->last_holds)) * 1000) +
		    1;
	st->last_holds = now;
	if ((n = credits_release_stale(w->db)) == -1)
		log_warn("PostgreSQL: releasing orphaned credit holds: %s",
		    db_errmsg(w->db));
	else if (n > 0)
		log_info("released %d credit holds whose call ended with its "
		    "process or outlived its deadline", n);
	return (int)(HOLDS_INTERVAL * 1000);
}

/* The sooner of two waits in ms, -1 being none. */
static int
sooner(int a, int b)
{
	return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

/*
 * Writes last_used_at for the keys seen since the last batch: at most once
 * a second per worker, and the statement itself skips keys written less
 * than a minute ago, so a busy key costs one row write a minute.
 */
static int
api_after(struct worker *w)
{
	struct api_state *st = w->app_data;
	struct buf	 ids = { 0 };
	const char	*p[1];
	double		 now = clock_mono();
	int		 i, holds, left;

	sweep_dormant(w, st, now);
	holds = sweep_holds(w, st, now);
	/*
	 * Provider connections a burst of calls left, and any no call has
	 * used for a while, go: their descriptors and memory.
	 */
	if (upstream_trim(w->upstream, KEPT_CALLS, KEPT_IDLE, &left) > 0)
		(void)malloc_trim(0);	/* and the heap they used */
	if (left > 0)
		holds = sooner(holds, (int)(KEPT_IDLE * 1000));
	if (st->ntouch == 0)
		return holds;
	if (now - st->last_touch < TOUCH_INTERVAL && st->ntouch < TOUCH_MAX)
		return sooner(holds, (int)((TOUCH_INTERVAL -
		    (now - st->last_touch)) * 1000) + 1);
	if (buf_puts(&ids, "{") == 0) {
		for (i = 0; i < st->ntouch; i++)
			if (buf_printf(&ids, "%s%s", i ? "," : "",
			    st->touch[i]) == -1)
				break;
		if (i == st->ntouch && buf_puts(&ids, "}") == 0) {
			p[0] = ids.data;
			if (db_exec(w->db, STMT_KEY_TOUCH, 1, p) == -1)
				log_warn("PostgreSQL: recording last use of "
				    "%d keys: %s", st->ntouch,
				    db_errmsg(w->db));
		}
	}
	buf_free(&ids);
	st->ntouch = 0;
	st->last_touch = now;
	return holds;
}

static void
remember_use(struct api_state *st, const char *key_id)
{
	int	 i;

	for (i = 0; i < st->ntouch; i++)
		if (strcmp(st->touch[i], key_id) == 0)
			return;
	if (st->ntouch < TOUCH_MAX && strlen(key_id) < sizeof(st->touch[0]))
		memcpy(st->touch[st->ntouch++], key_id, strlen(key_id) + 1);
}

void
api_key_used(struct request *req, const struct principal *p)
{
	if (p->touch && p->key_id[0] != '\0')
		remember_use(req->w->app_data, p->key_id);
}

static void
api_stop(struct worker *w)
{
	leases_stop(w);
	/* Flush what is pending, if the worker got as far as a database. */
	if (w->app_data != NULL && w->db != NULL) {
		struct api_state *st = w->app_data;

		st->last_touch = 0;
		(void)api_after(w);
	}
	db_free(w->db);
	w->db = NULL;
	vault_free(w->vault);
	w->vault = NULL;
	keycache_free(w->keys);
	w->keys = NULL;
	upstream_free(w->upstream);
	w->upstream = NULL;
	free(w->app_data);
	w->app_data = NULL;
}

/*
 * Counts the request against the caller's limit and adds the
 * X-RateLimit-* headers every authenticated answer carries.  true, or
 * false with the refusal (429, 503, 500) in v.
 */
static bool
limit(struct worker *w, struct request *req, const struct principal *p,
    struct api_verdict *v)
{
	struct rl_state	 rl;
	const char	*subject = p->key_id[0] != '\0' ? p->key_id :
	    p->key_prefix;
	long		 max = p->rate_limit_max > 0 ? p->rate_limit_max :
	    w->cfg->rate_limit_max;
	int		 window = p->rate_limit_window > 0 ?
	    p->rate_limit_window : w->cfg->rate_limit_window;

	if (!w->cfg->rate_limiting)
		return true;
	if (rl_take(w->db, w->limits, subject, max, window, &rl) != RL_OK) {
		if (db_status(w->db) == DB_UNAVAILABLE)
			v->err = ERR_DATABASE_UNAVAILABLE;
		else
			api_verdict_set(v, ERR_INTERNAL, "The rate limit could "
			    "not be checked.");
		return false;
	}
	if (http_header(req, "X-RateLimit-Limit", "%ld", rl.limit) == -1 ||
	    http_header(req, "X-RateLimit-Remaining", "%ld",
	    rl.remaining) == -1 ||
	    http_header(req, "X-RateLimit-Reset", "%ld", rl.reset) == -1) {
		api_verdict_set(v, ERR_INTERNAL, "out of memory");
		return false;
	}
	if (!rl.allowed) {
		if (http_header(req, "Retry-After", "%d", rl.retry_after) == -1)
			log_error("http_header: adding Retry-After: out of "
			    "memory");
		api_verdict_set(v, ERR_RATE_LIMITED, "Rate limit of %ld "
		    "requests per %d seconds exceeded; retry in %d seconds.",
		    rl.limit, window, rl.retry_after);
		return false;
	}
	return true;
}

/*
 * Who failed to authenticate: the client's address, and the lookup
 * prefix of a credential shaped like a key ("" when it is not).
 */
static void
failure_subjects(const struct config *cfg, struct request *req,
    const char *cred, char addr[80], char prefix[80])
{
	struct apikey_parts parts;

	snprintf(addr, 80, "a:%.64s", req->remote_addr);
	prefix[0] = '\0';
	if (!jwt_looks_like(cred) &&
	    apikey_parse(cred, cfg->key_brand, &parts) == 0)
		snprintf(prefix, 80, "p:%s", parts.prefix);
}

/*
 * A client address or key prefix that failed auth_failures_max times in
 * the window is refused before any database work: false, with 429 in v.
 */
static bool
failures_allow(struct worker *w, struct request *req, const char *addr,
    const char *prefix, struct api_verdict *v)
{
	struct api_state *st = w->app_data;
	time_t		 now = time(NULL);
	int		 wait;

	wait = af_refused(st->failures, addr, w->cfg->auth_failures_max,
	    w->cfg->auth_failures_window, now);
	if (wait == 0 && prefix[0] != '\0')
		wait = af_refused(st->failures, prefix,
		    w->cfg->auth_failures_max, w->cfg->auth_failures_window,
		    now);
	if (wait == 0)
		return true;
	if (http_header(req, "Retry-After", "%d", wait) == -1)
		log_error("http_header: adding Retry-After: out of memory");
	api_verdict_set(v, ERR_RATE_LIMITED, "Too many failed "
	    "authentications; retry in %d seconds.", wait);
	return false;
}

void
api_verdict_set(struct api_verdict *v, enum http_err err, const char *fmt,
    ...)
{
	va_list	 ap;

	v->err = err;
	va_start(ap, fmt);
	vsnprintf(v->message, sizeof(v->message), fmt, ap);
	va_end(ap);
}

bool
api_admit(struct request *req, const char *scope, struct api_verdict *v)
{
	struct worker	*w = req->w;
	struct api_state *st = w->app_data;
	struct principal *p;
	const char	*cred;
	char		 addr[80], prefix[80];

	v->err = ERR__MAX;
	v->message[0] = '\0';
	cred = auth_credential(request_param(req, "HTTP_AUTHORIZATION"),
	    request_param(req, "HTTP_X_API_KEY"));
	if (cred == NULL) {
		api_verdict_set(v, ERR_MISSING_API_KEY, "No API key: send "
		    "Authorization: Bearer <key> or X-API-Key: <key>.");
		return false;
	}
	failure_subjects(w->cfg, req, cred, addr, prefix);
	if (!failures_allow(w, req, addr, prefix, v))
		return false;
	/* The caller is the request's own: other requests run meanwhile. */
	if ((p = req->principal) == NULL &&
	    (p = calloc(1, sizeof(*p))) == NULL) {
		api_verdict_set(v, ERR_INTERNAL, "Out of memory.");
		return false;
	}
	req->principal = NULL;
	switch (jwt_looks_like(cred) ?
	    auth_jwt(w->db, w->cfg, cred, p) :
	    auth_key(w->db, w->cfg, w->keys, cred, p)) {
	case AUTH_OK:
		req->principal = p;
		break;
	case AUTH_UNAVAILABLE:
		free(p);
		v->err = ERR_DATABASE_UNAVAILABLE;
		return false;
	case AUTH_MISSING:
	case AUTH_INVALID:
	case AUTH_RESULT__MAX:
		free(p);
		af_count(st->failures, addr, w->cfg->auth_failures_window,
		    time(NULL));
		if (prefix[0] != '\0')
			af_count(st->failures, prefix,
			    w->cfg->auth_failures_window, time(NULL));
		api_verdict_set(v, ERR_INVALID_API_KEY, "Invalid API key.");
		return false;
	}
	req->key_id = p->key_id[0] != '\0' ? p->key_id : p->key_prefix;
	api_key_used(req, p);
	if (!limit(w, req, p, v))
		return false;
	if (scope != NULL && *scope != '\0' && !auth_allows(p, scope)) {
		api_verdict_set(v, ERR_INSUFFICIENT_PERMISSIONS, "This key "
		    "lacks the scope %s, which %s %s needs.", scope,
		    req->method, req->path);
		return false;
	}
	return true;
}

void
api_refuse(struct request *req, const struct api_verdict *v,
    unsigned route_flags)
{
	switch (v->err) {
	case ERR_DATABASE_UNAVAILABLE:
		/* The vault's routes say so in the vault's own words. */
		api_db_unavailable(req, (route_flags & ROUTE_VAULT) != 0);
		break;
	default:
		http_error(req, v->err < ERR__MAX ? v->err : ERR_INTERNAL, "%s",
		    v->message);
		break;
	}
}

/* A declared body over max_body_bytes is refused before anything else. */
static bool
declared_too_large(struct worker *w, struct request *req)
{
	const char	*cl = request_param(req, "CONTENT_LENGTH");
	char		*end;
	unsigned long long n;

	if (cl == NULL || *cl == '\0')
		return false;
	n = strtoull(cl, &end, 10);
	return *end != '\0' || n > (unsigned long long)w->cfg->max_body_bytes;
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
	if (rc == 2) {
		http_error(req, ERR_REQUEST_TIMEOUT, "The request body did not "
		    "arrive within %d s.", w->cfg->body_timeout);
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
	if (json_values_portable(req->body.data, req->body.len, req->json, err,
	    sizeof(err)) == -1) {
		http_error(req, ERR_INVALID_JSON, "%s", err);
		return -1;
	}
	return 0;
}

/* Answers req; *row becomes its row in api_routes when one matched. */
static void
dispatch(struct worker *w, struct request *req, size_t *row)
{
	const struct route *route;
	struct api_verdict v;
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
	*row = (size_t)(route - api_routes);
	if (declared_too_large(w, req)) {
		http_error(req, ERR_REQUEST_TOO_LARGE, "Request body is larger "
		    "than %ld bytes.", w->cfg->max_body_bytes);
		return;
	}
	if (route->scope != NULL && !api_admit(req, route->scope, &v)) {
		api_refuse(req, &v, route->flags);
		return;
	}
	if (method_has_body(req->method) && read_json(w, req) == -1)
		return;
	route->handler(req);
}

static void
api_handle(struct worker *w, struct request *req)
{
	size_t	 row = METRICS_ROUTE_NONE;

	db_news_exchange(w);
	if (req->authorizer) {
		row = METRICS_ROUTE_AUTHORIZER;
		api_authorizer(req);
	} else
		dispatch(w, req, &row);
	metrics_request(w, row, req->status, clock_mono() - req->started);
	metrics_sync(w);
	db_news_exchange(w);
}

/* The caller's name in the table of calls in flight. */
static const char *
call_owner(const struct request *req)
{
	const struct principal *p = req->principal;

	return p->key_id[0] != '\0' ? p->key_id : p->key_prefix;
}

bool
api_call_begin(struct request *req)
{
	const struct config *cfg = req->w->cfg;

	switch (calls_begin(calls_table(req->w->shared), call_owner(req),
	    getpid(), cfg->max_concurrent_calls)) {
	case CALLS_OK:
		req->call_counted = true;
		return true;
	case CALLS_UNCOUNTED:
		return true;
	case CALLS_LIMIT:
		break;
	}
	if (http_header(req, "Retry-After", "1") == -1) {
		http_error(req, ERR_INTERNAL, "out of memory");
		return false;
	}
	http_error(req, ERR_TOO_MANY_CALLS, "This key has %d calls in flight "
	    "already, the most max_concurrent_calls allows; retry when one "
	    "has ended.", cfg->max_concurrent_calls);
	return false;
}

void
api_call_end(struct request *req)
{
	if (!req->call_counted)
		return;
	calls_end(calls_table(req->w->shared), call_owner(req), getpid());
	req->call_counted = false;
}

/* A transaction in the worker's connection is this request's alone. */
static bool
api_pinned(struct worker *w)
{
	return w->db != NULL && db_in_transaction(w->db);
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
