#include "autoconfig.h"

/*
 * From the router to a route's handler: the body's size, the caller's
 * credential, the failed-authentication and rate limits, the scope, the
 * JSON body; and the count of provider calls in flight per key.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/app.h"
#include "api/metrics.h"
#include "core/apikey.h"
#include "core/auth.h"
#include "core/authfail.h"
#include "core/calls.h"
#include "core/jwt.h"
#include "core/ratelimit.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/router.h"
#include "server/worker.h"

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
	if (rl_take(app(w)->db, app(w)->limits, subject, max, window, &rl) !=
	    RL_OK) {
		if (db_status(app(w)->db) == DB_UNAVAILABLE)
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
	    auth_jwt(app(w)->db, api_auth_settings(w), cred, p) :
	    auth_key(app(w)->db, api_auth_settings(w), app(w)->keys, cred, p)) {
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

void
api_handle(struct worker *w, struct request *req)
{
	size_t	 row = METRICS_ROUTE_NONE;

	api_db_news(w);
	if (req->authorizer) {
		row = METRICS_ROUTE_AUTHORIZER;
		api_authorizer(req);
	} else
		dispatch(w, req, &row);
	metrics_request(w, row, req->status, clock_mono() - req->started);
	metrics_sync(w);
	api_db_news(w);
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

	switch (calls_begin(api_shared_calls(req->w->shared), call_owner(req),
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
	calls_end(api_shared_calls(req->w->shared), call_owner(req), getpid());
	req->call_counted = false;
}
