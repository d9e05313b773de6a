/*
 * GET /metrics: what every worker of this keygated counted, in the
 * Prometheus text format.  Each metric is one row of the table below: its
 * name, type, help text and the labels it is counted by; the counters sit
 * in shared memory in the table's order, so that adding a metric is one
 * enum value, one row and the call that counts it.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/metrics.h"
#include "core/keycache.h"
#include "core/vault.h"
#include "lib/buf.h"
#include "lib/db.h"
#include "server/config.h"
#include "server/http.h"
#include "server/request.h"
#include "server/router.h"
#include "server/worker.h"

/* Route rows counted; the last two are the authorizer's and no route's. */
#define METRICS_ROUTES	64
#define METRICS_MAGIC	0x6b676d31u

/* What a metric is counted by: each a label and its values. */
enum dim {
	DIM_NONE,
	DIM_ROUTE,	/* method and route pattern */
	DIM_STATUS,	/* the HTTP status answered */
	DIM_PROVIDER,	/* a built-in provider, or "upstream" */
	DIM_OUTCOME,	/* how a provider call ended */
	DIM_REFUSAL,	/* 401, 402, 403, 429 */
	DIM_DECISION,	/* allow, deny */
	DIM_EXIT,	/* crash, recycle */
	DIM__MAX
};

enum mtype {
	MT_COUNTER,
	MT_GAUGE,
	MT_HISTOGRAM,
	MT__MAX
};

static const char *const mtype_names[MT__MAX] = {
	"counter",	/* MT_COUNTER */
	"gauge",	/* MT_GAUGE */
	"histogram",	/* MT_HISTOGRAM */
};

enum metric {
	M_REQUESTS,
	M_REQUEST_SECONDS,
	M_REFUSALS,
	M_PROVIDER_CALLS,
	M_PROVIDER_SECONDS,
	M_CALLS_IN_FLIGHT,
	M_STREAMS_IN_FLIGHT,
	M_CACHE_HITS,
	M_CACHE_MISSES,
	M_AUTHZ,
	M_DB_RECONNECTS,
	M_WORKER_RESTARTS,
	M_CREDIT_HOLDS,
	M__MAX
};

static const struct metric_desc {
	const char	*name;
	enum mtype	 type;
	enum dim	 dim[2];
	const char	*help;
} metric_descs[M__MAX] = {
	{ "keygate_requests_total", MT_COUNTER, { DIM_ROUTE, DIM_STATUS },
	  "Requests answered, by route and status." },	/* M_REQUESTS */
	{ "keygate_request_duration_seconds", MT_HISTOGRAM,
	  { DIM_ROUTE, DIM_NONE },
	  "Time from accepting a request to its last byte, by route." },
	  /* M_REQUEST_SECONDS */
	{ "keygate_refusals_total", MT_COUNTER, { DIM_REFUSAL, DIM_NONE },
	  "Requests refused for a missing or invalid credential (401), "
	  "credits (402), a scope (403) or a rate limit (429)." },
	  /* M_REFUSALS */
	{ "keygate_provider_calls_total", MT_COUNTER,
	  { DIM_PROVIDER, DIM_OUTCOME },
	  "Calls to LLM providers, by provider and outcome." },
	  /* M_PROVIDER_CALLS */
	{ "keygate_provider_call_duration_seconds", MT_HISTOGRAM,
	  { DIM_PROVIDER, DIM_NONE },
	  "Time a provider call took, streams to their end, by provider." },
	  /* M_PROVIDER_SECONDS */
	{ "keygate_provider_calls_in_flight", MT_GAUGE, { DIM_NONE, DIM_NONE },
	  "Provider calls under way." },		/* M_CALLS_IN_FLIGHT */
	{ "keygate_streams_in_flight", MT_GAUGE, { DIM_NONE, DIM_NONE },
	  "Streamed completions under way." },	/* M_STREAMS_IN_FLIGHT */
	{ "keygate_key_cache_hits_total", MT_COUNTER, { DIM_NONE, DIM_NONE },
	  "API keys found in a worker's cache." },	/* M_CACHE_HITS */
	{ "keygate_key_cache_misses_total", MT_COUNTER, { DIM_NONE, DIM_NONE },
	  "API keys looked up in PostgreSQL." },	/* M_CACHE_MISSES */
	{ "keygate_authorizer_decisions_total", MT_COUNTER,
	  { DIM_DECISION, DIM_NONE },
	  "FastCGI authorizer and /v1/auth/check decisions." }, /* M_AUTHZ */
	{ "keygate_database_reconnects_total", MT_COUNTER,
	  { DIM_NONE, DIM_NONE },
	  "PostgreSQL connections made again after one was lost." },
	  /* M_DB_RECONNECTS */
	{ "keygate_worker_restarts_total", MT_COUNTER, { DIM_EXIT, DIM_NONE },
	  "Workers replaced: after a crash, or recycled after "
	  "max_requests." },				/* M_WORKER_RESTARTS */
	{ "keygate_credit_holds_outstanding", MT_GAUGE, { DIM_NONE, DIM_NONE },
	  "Credit reservations held for calls under way." },
	  /* M_CREDIT_HOLDS */
};

/* Statuses counted one by one; any other is the last row, "other". */
static const int statuses[] = {
	200, 201, 204, 400, 401, 402, 403, 404, 405, 409, 413, 415, 422, 429,
	499, 500, 501, 502, 503, 504,
};
#define NSTATUS	(sizeof(statuses) / sizeof(statuses[0]))

static const int refusals[] = { 401, 402, 403, 429 };
#define NREFUSAL (sizeof(refusals) / sizeof(refusals[0]))

static const char *const outcome_names[OUTCOME__MAX] = {
	"ok",		/* OUTCOME_OK */
	"rejected",	/* OUTCOME_REJECTED */
	"error",	/* OUTCOME_ERROR */
	"timeout",	/* OUTCOME_TIMEOUT */
	"abandoned",	/* OUTCOME_ABANDONED */
};

/* Upper bounds (s) of the histogram buckets; one more counts the rest. */
static const double bounds[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
	10, 30, 60, 120,
};
#define NBOUNDS	(sizeof(bounds) / sizeof(bounds[0]))
/*
 * A histogram's cells per label set: each bucket on its own (not
 * cumulative, so that a reader's copy can never show a bucket above the
 * next one or a count other than the sum), the overflow, then the sum in
 * microseconds.
 */
#define HIST_CELLS	(NBOUNDS + 2)

/* The shared memory: where each metric starts, then the cells. */
struct metrics {
	uint32_t	 magic;
	size_t		 off[M__MAX];	/* index of its first cell */
	int64_t		 cell[];	/* atomic; gauges may go down */
};

static size_t
dim_size(enum dim d)
{
	switch (d) {
	case DIM_NONE:		return 1;
	case DIM_ROUTE:		return METRICS_ROUTES;
	case DIM_STATUS:	return NSTATUS + 1;
	case DIM_PROVIDER:	return PROVIDER__MAX + 1;
	case DIM_OUTCOME:	return OUTCOME__MAX;
	case DIM_REFUSAL:	return NREFUSAL;
	case DIM_DECISION:	return 2;
	case DIM_EXIT:		return 2;
	case DIM__MAX:		break;
	}
	return 1;
}

static size_t
cells_of(enum metric m)
{
	const struct metric_desc *d = &metric_descs[m];

	return dim_size(d->dim[0]) * dim_size(d->dim[1]) *
	    (d->type == MT_HISTOGRAM ? HIST_CELLS : 1);
}

size_t
metrics_shared_size(void)
{
	size_t	 n = 0;
	int	 m;

	for (m = 0; m < M__MAX; m++)
		n += cells_of((enum metric)m);
	return sizeof(struct metrics) + n * sizeof(int64_t);
}

int
metrics_shared_init(struct metrics *mx)
{
	size_t	 n = 0;
	int	 m;

	if (api_nroutes + 2 > METRICS_ROUTES)
		return -1;
	for (m = 0; m < M__MAX; m++) {
		mx->off[m] = n;
		n += cells_of((enum metric)m);
	}
	mx->magic = METRICS_MAGIC;
	return 0;
}

static void
add(struct metrics *mx, enum metric m, size_t i, int64_t v)
{
	__atomic_fetch_add(&mx->cell[mx->off[m] + i], v, __ATOMIC_RELAXED);
}

/* Counts one observation of seconds in histogram m, label set i. */
static void
observe(struct metrics *mx, enum metric m, size_t i, double seconds)
{
	size_t	 b;

	for (b = 0; b < NBOUNDS && seconds > bounds[b]; b++)
		;
	add(mx, m, i * HIST_CELLS + b, 1);
	add(mx, m, i * HIST_CELLS + NBOUNDS + 1,
	    seconds > 0 ? (int64_t)(seconds * 1e6 + 0.5) : 0);
}

static bool
counting(const struct worker *w)
{
	return app(w)->metrics != NULL && w->cfg->metrics;
}

void
metrics_request(struct worker *w, size_t route, int status, double seconds)
{
	size_t	 s, r;

	if (!counting(w))
		return;
	if (route == METRICS_ROUTE_AUTHORIZER)
		route = METRICS_ROUTES - 2;
	else if (route >= api_nroutes)
		route = METRICS_ROUTES - 1;
	for (s = 0; s < NSTATUS && statuses[s] != status; s++)
		;
	add(app(w)->metrics, M_REQUESTS, route * (NSTATUS + 1) + s, 1);
	observe(app(w)->metrics, M_REQUEST_SECONDS, route, seconds);
	for (r = 0; r < NREFUSAL; r++)
		if (refusals[r] == status)
			add(app(w)->metrics, M_REFUSALS, r, 1);
}

void
metrics_call_begin(struct worker *w, bool stream)
{
	if (!counting(w))
		return;
	add(app(w)->metrics, M_CALLS_IN_FLIGHT, 0, 1);
	if (stream)
		add(app(w)->metrics, M_STREAMS_IN_FLIGHT, 0, 1);
}

void
metrics_call_end(struct worker *w, unsigned provider, bool stream,
    enum metrics_outcome o, double seconds)
{
	if (!counting(w))
		return;
	if (provider > PROVIDER__MAX)
		provider = PROVIDER__MAX;
	add(app(w)->metrics, M_CALLS_IN_FLIGHT, 0, -1);
	if (stream)
		add(app(w)->metrics, M_STREAMS_IN_FLIGHT, 0, -1);
	add(app(w)->metrics, M_PROVIDER_CALLS, provider * OUTCOME__MAX + o, 1);
	observe(app(w)->metrics, M_PROVIDER_SECONDS, provider, seconds);
}

enum metrics_outcome
metrics_outcome_of(int status)
{
	if (status >= 200 && status < 300)
		return OUTCOME_OK;
	if (status == 499)
		return OUTCOME_ABANDONED;
	if (status == 504)
		return OUTCOME_TIMEOUT;
	if (status >= 400 && status < 500)
		return OUTCOME_REJECTED;
	return OUTCOME_ERROR;
}

void
metrics_holds(struct worker *w, int delta)
{
	if (counting(w))
		add(app(w)->metrics, M_CREDIT_HOLDS, 0, delta);
}

void
metrics_authz(struct worker *w, bool allowed)
{
	if (counting(w))
		add(app(w)->metrics, M_AUTHZ, allowed ? 0 : 1, 1);
}

void
metrics_worker_exit(struct metrics *mx, bool crashed)
{
	if (mx != NULL && mx->magic == METRICS_MAGIC)
		add(mx, M_WORKER_RESTARTS, crashed ? 0 : 1, 1);
}

void
metrics_sync(struct worker *w)
{
	struct metrics_seen *seen = &app(w)->metrics_seen;
	unsigned long	 hits = 0, misses = 0, reconnects;

	if (!counting(w))
		return;
	keycache_counts(app(w)->keys, &hits, &misses);
	reconnects = db_reconnects(app(w)->db);
	if (hits != seen->hits)
		add(app(w)->metrics, M_CACHE_HITS, 0,
		    (int64_t)(hits - seen->hits));
	if (misses != seen->misses)
		add(app(w)->metrics, M_CACHE_MISSES, 0,
		    (int64_t)(misses - seen->misses));
	if (reconnects != seen->reconnects)
		add(app(w)->metrics, M_DB_RECONNECTS, 0,
		    (int64_t)(reconnects - seen->reconnects));
	seen->hits = hits;
	seen->misses = misses;
	seen->reconnects = reconnects;
}

/* ---- rendering */

static int64_t
get(const struct metrics *mx, enum metric m, size_t i)
{
	return __atomic_load_n(&mx->cell[mx->off[m] + i], __ATOMIC_RELAXED);
}

/*
 * The label text of value i of dimension d ("route=\"...\",method=...")
 * into out; false when that value is not in use (a route row past the
 * table).
 */
static bool
label(enum dim d, size_t i, char *out, size_t outsz)
{
	const struct route *r;

	switch (d) {
	case DIM_NONE:
		out[0] = '\0';
		return true;
	case DIM_ROUTE:
		if (i >= METRICS_ROUTES - 2) {
			snprintf(out, outsz, "method=\"\",route=\"%s\"",
			    i == METRICS_ROUTES - 2 ? "authorizer" : "none");
			return true;
		}
		if (i >= api_nroutes)
			return false;
		r = &api_routes[i];
		snprintf(out, outsz, "method=\"%s\",route=\"%s\"",
		    http_method_names[r->method], r->pattern);
		return true;
	case DIM_STATUS:
		if (i < NSTATUS)
			snprintf(out, outsz, "status=\"%d\"", statuses[i]);
		else
			snprintf(out, outsz, "status=\"other\"");
		return true;
	case DIM_PROVIDER:
		snprintf(out, outsz, "provider=\"%s\"", i < PROVIDER__MAX ?
		    providers[i]->name : "upstream");
		return true;
	case DIM_OUTCOME:
		snprintf(out, outsz, "outcome=\"%s\"", outcome_names[i]);
		return true;
	case DIM_REFUSAL:
		snprintf(out, outsz, "status=\"%d\"", refusals[i]);
		return true;
	case DIM_DECISION:
		snprintf(out, outsz, "decision=\"%s\"", i == 0 ? "allow" :
		    "deny");
		return true;
	case DIM_EXIT:
		snprintf(out, outsz, "reason=\"%s\"", i == 0 ? "crash" :
		    "recycle");
		return true;
	case DIM__MAX:
		break;
	}
	return false;
}

/*
 * One histogram's lines for label set i; nothing when it saw nothing.
 */
static int
render_histogram(struct buf *b, const struct metrics *mx, enum metric m,
    size_t i, const char *labels)
{
	const char	*name = metric_descs[m].name;
	const char	*sep = labels[0] != '\0' ? "," : "";
	int64_t		 v[HIST_CELLS], cum = 0;
	size_t		 k;

	for (k = 0; k < HIST_CELLS; k++)
		v[k] = get(mx, m, i * HIST_CELLS + k);
	for (k = 0; k <= NBOUNDS; k++)
		cum += v[k];
	if (cum == 0)
		return 0;
	cum = 0;
	for (k = 0; k < NBOUNDS; k++) {
		cum += v[k];
		if (buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %lld\n", name,
		    labels, sep, bounds[k], (long long)cum) == -1)
			return -1;
	}
	cum += v[NBOUNDS];
	return buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %lld\n"
	    "%s_sum{%s} %.6f\n%s_count{%s} %lld\n", name, labels, sep,
	    (long long)cum, name, labels, (double)v[NBOUNDS + 1] / 1e6,
	    name, labels, (long long)cum);
}

/* Every line of metric m. */
static int
render(struct buf *b, const struct metrics *mx, enum metric m)
{
	const struct metric_desc *d = &metric_descs[m];
	size_t		 n0 = dim_size(d->dim[0]), n1 = dim_size(d->dim[1]);
	size_t		 i, j;
	char		 l0[160], l1[64], labels[240];
	int64_t		 v;
	/* Rows by route or status are many: only those that moved. */
	bool		 sparse = d->dim[0] == DIM_ROUTE ||
	    d->dim[1] == DIM_STATUS;

	if (buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help,
	    d->name, mtype_names[d->type]) == -1)
		return -1;
	for (i = 0; i < n0; i++) {
		if (!label(d->dim[0], i, l0, sizeof(l0)))
			continue;
		for (j = 0; j < n1; j++) {
			if (!label(d->dim[1], j, l1, sizeof(l1)))
				continue;
			snprintf(labels, sizeof(labels), "%s%s%s", l0,
			    l0[0] != '\0' && l1[0] != '\0' ? "," : "", l1);
			if (d->type == MT_HISTOGRAM) {
				if (render_histogram(b, mx, m, i * n1 + j,
				    labels) == -1)
					return -1;
				continue;
			}
			v = get(mx, m, i * n1 + j);
			if (sparse && v == 0)
				continue;
			if (buf_printf(b, labels[0] != '\0' ? "%s{%s} %lld\n" :
			    "%s%s %lld\n", d->name, labels, (long long)v) == -1)
				return -1;
		}
	}
	return 0;
}

/* Anyone on this host may read the metrics; others need metrics:read. */
static bool
loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
	    strncmp(addr, "::ffff:127.", 11) == 0;
}

void
api_metrics(struct request *req)
{
	struct worker	*w = req->w;
	struct api_verdict v;
	struct buf	 b = { 0 };
	int		 m;

	if (!loopback(req->remote_addr) &&
	    !api_admit(req, "metrics:read", &v)) {
		api_refuse(req, &v, 0);
		return;
	}
	if (app(w)->metrics == NULL) {
		http_error(req, ERR_NOT_IMPLEMENTED, "This keygated keeps no "
		    "metrics.");
		return;
	}
	/* What this worker counted so far belongs in the answer. */
	metrics_sync(w);
	for (m = 0; m < M__MAX; m++)
		if (render(&b, app(w)->metrics, (enum metric)m) == -1) {
			buf_free(&b);
			http_error(req, ERR_INTERNAL, "out of memory");
			return;
		}
	http_respond_type(req, 200, "text/plain; version=0.0.4; "
	    "charset=utf-8", b.data != NULL ? b.data : "", b.len);
	buf_free(&b);
}
