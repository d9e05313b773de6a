/*
 * Unit tests for src/api/metrics.c: what each event counts, in which
 * label set, and the Prometheus text the counters come to, on a plain
 * block of memory as the workers' shared one.
 */
#include "../unit.h"

/*
 * The module itself, not only its header: its text is rendered here
 * without a request to answer.
 */
#include "api/metrics.c"

/* The counters the workers share, fresh. */
UNIT_SHARED(shared, struct metrics, metrics_shared_size, metrics_shared_init)

static struct config	 cfg;
static struct app	 the_app;

/* A worker that counts into fresh counters, with a key cache. */
static struct worker
counting_worker(void)
{
	struct worker	 w;

	memset(&w, 0, sizeof(w));
	memset(&the_app, 0, sizeof(the_app));
	cfg.metrics = true;
	w.cfg = &cfg;
	w.app_data = &the_app;
	the_app.metrics = shared();
	the_app.keys = keycache_new(NULL);
	assert_non_null(the_app.keys);
	return w;
}

static void
worker_done(struct worker *w)
{
	keycache_free(app(w)->keys);
	free(app(w)->metrics);
}

/* Every metric's text (new). */
static char *
text(const struct metrics *mx)
{
	struct buf	 b = { 0 };
	int		 m;

	for (m = 0; m < M__MAX; m++)
		assert_int_equal(render(&b, mx, (enum metric)m), 0);
	return b.data;
}

/* Fails unless line (and its newline) is one of the text's lines. */
static void
assert_line(const char *text, const char *line)
{
	const char	*p;
	size_t		 n = strlen(line);

	for (p = text; (p = strstr(p, line)) != NULL; p += n)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	fail_msg("no line \"%s\" in:\n%s", line, text);
}

/* As assert_line() for the line of metric name, labels first. */
static void
assert_labelled(const char *text, const char *name, const char *labels,
    const char *rest)
{
	char	 line[512];

	snprintf(line, sizeof(line), "%s{%s%s", name, labels, rest);
	assert_line(text, line);
}

/* Nothing counted: the types, and the unlabelled zeroes only. */
static void
test_nothing_counted(void **state)
{
	struct worker	 w = counting_worker();
	char		*t = text(app(&w)->metrics);

	(void)state;
	assert_line(t, "# TYPE keygate_requests_total counter");
	assert_line(t, "# TYPE keygate_request_duration_seconds histogram");
	assert_line(t, "# TYPE keygate_provider_calls_in_flight gauge");
	assert_line(t, "keygate_provider_calls_in_flight 0");
	assert_line(t, "keygate_refusals_total{status=\"429\"} 0");
	assert_line(t, "keygate_provider_calls_total{provider=\"upstream\","
	    "outcome=\"abandoned\"} 0");
	assert_line(t, "keygate_worker_restarts_total{reason=\"recycle\"} 0");
	/* Rows by route or status, and histograms: only those that moved. */
	assert_null(strstr(t, "keygate_requests_total{"));
	assert_null(strstr(t, "_bucket{"));
	free(t);
	worker_done(&w);
}

static void
test_a_request(void **state)
{
	struct worker	 w = counting_worker();
	char		*t, labels[160];

	(void)state;
	snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\"",
	    http_method_names[api_routes[1].method], api_routes[1].pattern);
	assert_string_equal(labels, "method=\"GET\",route=\"/metrics\"");
	/* 5 ms exactly is in the 5 ms bucket. */
	metrics_request(&w, 1, 200, 0.005);
	metrics_request(&w, 1, 200, 0.0001);
	metrics_request(&w, 1, 429, 200);
	metrics_request(&w, 1, 418, 0);
	t = text(app(&w)->metrics);
	assert_labelled(t, "keygate_requests_total", labels,
	    ",status=\"200\"} 2");
	assert_labelled(t, "keygate_requests_total", labels,
	    ",status=\"other\"} 1");
	assert_labelled(t, "keygate_request_duration_seconds_bucket",
	    labels, ",le=\"0.001\"} 2");
	assert_labelled(t, "keygate_request_duration_seconds_bucket",
	    labels, ",le=\"0.005\"} 3");
	assert_labelled(t, "keygate_request_duration_seconds_bucket",
	    labels, ",le=\"120\"} 3");
	assert_labelled(t, "keygate_request_duration_seconds_bucket",
	    labels, ",le=\"+Inf\"} 4");
	assert_labelled(t, "keygate_request_duration_seconds_sum",
	    labels, "} 200.005100");
	assert_labelled(t, "keygate_request_duration_seconds_count",
	    labels, "} 4");
	/* 429 is a refusal too; 418 and 200 are not. */
	assert_line(t, "keygate_refusals_total{status=\"429\"} 1");
	assert_line(t, "keygate_refusals_total{status=\"401\"} 0");
	free(t);
	worker_done(&w);
}

/* No route, or the authorizer's: rows of their own. */
static void
test_rows_without_a_route(void **state)
{
	struct worker	 w = counting_worker();
	char		*t;

	(void)state;
	metrics_request(&w, METRICS_ROUTE_NONE, 404, 0.1);
	metrics_request(&w, METRICS_ROUTE_AUTHORIZER, 403, 0.1);
	metrics_request(&w, api_nroutes, 404, 0.1);
	t = text(app(&w)->metrics);
	assert_line(t, "keygate_requests_total{method=\"\",route=\"none\","
	    "status=\"404\"} 2");
	assert_line(t, "keygate_requests_total{method=\"\","
	    "route=\"authorizer\",status=\"403\"} 1");
	assert_line(t, "keygate_refusals_total{status=\"403\"} 1");
	free(t);
	worker_done(&w);
}

static void
test_provider_calls(void **state)
{
	struct worker	 w = counting_worker();
	char		*t;

	(void)state;
	metrics_call_begin(&w, true);
	metrics_call_begin(&w, false);
	t = text(app(&w)->metrics);
	assert_line(t, "keygate_provider_calls_in_flight 2");
	assert_line(t, "keygate_streams_in_flight 1");
	free(t);
	metrics_call_end(&w, PROVIDER_ANTHROPIC, true, OUTCOME_TIMEOUT, 30);
	/* A provider past the table is an operator's upstream. */
	metrics_call_end(&w, 99, false, metrics_outcome_of(201), 0.2);
	t = text(app(&w)->metrics);
	assert_line(t, "keygate_provider_calls_in_flight 0");
	assert_line(t, "keygate_streams_in_flight 0");
	assert_line(t, "keygate_provider_calls_total{provider=\"anthropic\","
	    "outcome=\"timeout\"} 1");
	assert_line(t, "keygate_provider_calls_total{provider=\"upstream\","
	    "outcome=\"ok\"} 1");
	assert_line(t, "keygate_provider_call_duration_seconds_count"
	    "{provider=\"anthropic\"} 1");
	assert_line(t, "keygate_provider_call_duration_seconds_bucket"
	    "{provider=\"anthropic\",le=\"10\"} 0");
	assert_line(t, "keygate_provider_call_duration_seconds_bucket"
	    "{provider=\"anthropic\",le=\"30\"} 1");
	free(t);
	worker_done(&w);
}

static void
test_outcome_of_a_status(void **state)
{
	(void)state;
	assert_int_equal(metrics_outcome_of(200), OUTCOME_OK);
	assert_int_equal(metrics_outcome_of(299), OUTCOME_OK);
	assert_int_equal(metrics_outcome_of(499), OUTCOME_ABANDONED);
	assert_int_equal(metrics_outcome_of(504), OUTCOME_TIMEOUT);
	assert_int_equal(metrics_outcome_of(400), OUTCOME_REJECTED);
	assert_int_equal(metrics_outcome_of(429), OUTCOME_REJECTED);
	assert_int_equal(metrics_outcome_of(502), OUTCOME_ERROR);
	assert_int_equal(metrics_outcome_of(300), OUTCOME_ERROR);
	assert_int_equal(metrics_outcome_of(0), OUTCOME_ERROR);
}

/* Holds, decisions, exits and what the key cache counted. */
static void
test_the_other_counters(void **state)
{
	struct worker	 w = counting_worker();
	char		*t;

	(void)state;
	metrics_holds(&w, 1);
	metrics_holds(&w, 1);
	metrics_holds(&w, -1);
	metrics_authz(&w, true);
	metrics_authz(&w, false);
	metrics_authz(&w, false);
	metrics_worker_exit(app(&w)->metrics, true);
	/* Not counters: ignored. */
	metrics_worker_exit(NULL, true);
	app(&w)->metrics->magic = 0;
	metrics_worker_exit(app(&w)->metrics, false);
	app(&w)->metrics->magic = METRICS_MAGIC;
	assert_null(keycache_get(app(&w)->keys, "kg_live_aaaaaaaa", 1.0));
	assert_null(keycache_get(app(&w)->keys, "kg_live_bbbbbbbb", 1.0));
	metrics_sync(&w);
	metrics_sync(&w);		/* counted once */
	t = text(app(&w)->metrics);
	assert_line(t, "keygate_credit_holds_outstanding 1");
	assert_line(t, "keygate_authorizer_decisions_total"
	    "{decision=\"allow\"} 1");
	assert_line(t, "keygate_authorizer_decisions_total"
	    "{decision=\"deny\"} 2");
	assert_line(t, "keygate_worker_restarts_total{reason=\"crash\"} 1");
	assert_line(t, "keygate_worker_restarts_total{reason=\"recycle\"} 0");
	assert_line(t, "keygate_key_cache_misses_total 2");
	assert_line(t, "keygate_key_cache_hits_total 0");
	assert_line(t, "keygate_database_reconnects_total 0");
	free(t);
	worker_done(&w);
}

/* metrics = false, or no counters: nothing is counted. */
static void
test_off(void **state)
{
	struct worker	 w = counting_worker();
	struct metrics	*mx = app(&w)->metrics;
	char		*t;

	(void)state;
	cfg.metrics = false;
	metrics_request(&w, 0, 200, 1);
	metrics_call_begin(&w, true);
	metrics_holds(&w, 1);
	metrics_authz(&w, true);
	app(&w)->metrics = NULL;
	cfg.metrics = true;
	metrics_request(&w, 0, 200, 1);
	metrics_call_end(&w, 0, true, OUTCOME_OK, 1);
	metrics_sync(&w);
	app(&w)->metrics = mx;
	t = text(mx);
	assert_null(strstr(t, "keygate_requests_total{"));
	assert_line(t, "keygate_provider_calls_in_flight 0");
	assert_line(t, "keygate_credit_holds_outstanding 0");
	assert_line(t, "keygate_authorizer_decisions_total"
	    "{decision=\"allow\"} 0");
	free(t);
	worker_done(&w);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_nothing_counted),
    cmocka_unit_test(test_a_request),
    cmocka_unit_test(test_rows_without_a_route),
    cmocka_unit_test(test_provider_calls),
    cmocka_unit_test(test_outcome_of_a_status),
    cmocka_unit_test(test_the_other_counters),
    cmocka_unit_test(test_off))
