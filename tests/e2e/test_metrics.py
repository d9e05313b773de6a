"""GET /metrics: Prometheus text, the sum over every worker of one
keygated, open on loopback and to keys with metrics:read elsewhere."""

import os
import secrets
import signal

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, auth
from mock_llm import Complete, SSEReader

ROOT = "00000000-0000-0000-0000-000000000001"
WHOAMI = (("method", "GET"), ("route", "/v1/auth/whoami"))


@pytest.fixture(scope="module")
def stack(workdir, pg, mock):
    s = ks.Stack(workdir.subdir("kg"), pg, dbname="metrics_%s" %
                 secrets.token_hex(4), workers=3, validate_llm_keys="false",
                 authorize=["/reports/ reports:read"], **mock.config())
    yield s
    s.close()


def scrape(stack):
    """(samples, types) of one GET /metrics through the web server."""
    resp = stack.get("/metrics")
    assert resp.status == 200, resp.body[:300]
    assert resp.headers["content-type"].startswith(
        "text/plain; version=0.0.4"), resp.headers
    assert "no-store" in resp.headers["cache-control"]
    return ks.parse_metrics(resp.body.decode())


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def request_count(samples, route_labels, status):
    return samples.get(("keygate_requests_total", tuple(sorted(
        route_labels + (("status", status),)))), 0.0)


def test_every_metric_is_described_and_typed(stack):
    samples, types = scrape(stack)
    want = {
        "keygate_requests_total": "counter",
        "keygate_request_duration_seconds": "histogram",
        "keygate_refusals_total": "counter",
        "keygate_provider_calls_total": "counter",
        "keygate_provider_call_duration_seconds": "histogram",
        "keygate_provider_calls_in_flight": "gauge",
        "keygate_streams_in_flight": "gauge",
        "keygate_key_cache_hits_total": "counter",
        "keygate_key_cache_misses_total": "counter",
        "keygate_authorizer_decisions_total": "counter",
        "keygate_database_reconnects_total": "counter",
        "keygate_worker_restarts_total": "counter",
        "keygate_credit_holds_outstanding": "gauge",
    }
    assert types == want
    for name, _ in samples:
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if types.get(name[:-len(suffix)]) == "histogram" and \
                    name.endswith(suffix):
                family = name[:-len(suffix)]
        assert family in types, name
    for status in ("401", "402", "403", "429"):
        assert ("keygate_refusals_total", (("status", status),)) in samples


def test_counters_move_with_the_requests_made(stack):
    _, reader = ks.new_api_key(stack, ["models:read"])
    before, _ = scrape(stack)
    for _ in range(7):
        assert stack.get("/v1/auth/whoami", headers=auth(reader)).status \
            == 200
    for _ in range(2):
        assert_error(stack.get("/v1/auth/whoami"), 401, "missing_api_key")
    for _ in range(3):
        assert_error(stack.get("/v1/account", headers=auth(reader)), 403,
                     "insufficient_permissions")
    assert_error(stack.get("/no/such/route"), 404, "not_found")
    after, _ = scrape(stack)
    assert request_count(after, WHOAMI, "200") - \
        request_count(before, WHOAMI, "200") == 7
    assert request_count(after, WHOAMI, "401") - \
        request_count(before, WHOAMI, "401") == 2
    account = (("method", "GET"), ("route", "/v1/account"))
    assert request_count(after, account, "403") - \
        request_count(before, account, "403") == 3
    none = (("method", ""), ("route", "none"))
    assert request_count(after, none, "404") - \
        request_count(before, none, "404") == 1
    assert delta(before, after, "keygate_refusals_total", status="401") == 2
    assert delta(before, after, "keygate_refusals_total", status="403") == 3
    # The scrape before this one counts once it is answered.
    metrics = (("method", "GET"), ("route", "/metrics"))
    assert request_count(after, metrics, "200") - \
        request_count(before, metrics, "200") == 1
    # Ten verified keys: each either found in a worker's cache or read.
    looked_up = (delta(before, after, "keygate_key_cache_hits_total") +
                 delta(before, after, "keygate_key_cache_misses_total"))
    assert looked_up == 10
    # Three workers at most read it; the rest found it cached.
    assert delta(before, after, "keygate_key_cache_hits_total") >= 1


def test_histograms_are_consistent(stack):
    for _ in range(5):
        assert stack.get("/v1/auth/whoami", headers=auth()).status == 200
    samples, types = scrape(stack)
    seen = 0
    for family, kind in types.items():
        if kind != "histogram":
            continue
        sets = {labels for name, labels in samples
                if name == family + "_count"}
        for labels in sets:
            seen += 1
            buckets = sorted(
                ((float(dict(l)["le"]), v) for (n, l), v in samples.items()
                 if n == family + "_bucket" and
                 tuple(x for x in l if x[0] != "le") == labels),
                key=lambda b: b[0])
            assert buckets[-1][0] == float("inf"), (family, labels)
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (family, labels, counts)
            assert counts[-1] == samples[(family + "_count", labels)]
            assert samples[(family + "_sum", labels)] >= 0
    assert seen > 0
    # A route's histogram counts every request the route answered.
    total = sum(v for (n, l), v in samples.items()
                if n == "keygate_requests_total" and
                tuple(x for x in l if x[0] != "status") == WHOAMI)
    assert samples[("keygate_request_duration_seconds_count", WHOAMI)] == \
        total


def test_values_are_summed_over_all_workers(stack):
    before, _ = scrape(stack)
    # Bursts until every worker has answered some of them.
    sent = ks.on_every_worker(stack, "GET", "/v1/auth/whoami", auth(),
                              lambda r: r.status == 200 or pytest.fail(
                                  r.body[:300]))
    # Several scrapes land on several workers and all say the same.
    for _ in range(6):
        after, _ = scrape(stack)
        assert request_count(after, WHOAMI, "200") - \
            request_count(before, WHOAMI, "200") == sent


def test_authorizer_decisions_are_counted(stack):
    _, reader = ks.new_api_key(stack, ["reports:read"])
    before, _ = scrape(stack)
    for key, uri in ((reader, "/reports/a"), (reader, "/reports/b"),
                     (reader, "/elsewhere"), (None, "/reports/a")):
        headers = dict(auth(key) if key else {},
                       **{"X-Original-URI": uri})
        stack.get("/v1/auth/check", headers=headers)
    after, _ = scrape(stack)
    assert delta(before, after, "keygate_authorizer_decisions_total",
                 decision="allow") == 2
    assert delta(before, after, "keygate_authorizer_decisions_total",
                 decision="deny") == 2


def test_provider_calls_are_counted(stack, mock):
    key = "sk-proj-" + secrets.token_hex(20)
    mock.accept("openai", key)
    before, _ = scrape(stack)
    body = {"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hi"}]}
    resp = stack.post("/v1/chat/completions", body,
                      headers=dict(auth(), **{"X-OpenAI-Key": key}))
    assert resp.status == 200, resp.body[:300]
    resp = stack.post("/v1/chat/completions", dict(body, stream=True),
                      headers=dict(auth(), **{"X-OpenAI-Key": key}))
    assert resp.status == 200, resp.body[:300]
    bad = "sk-proj-" + secrets.token_hex(20)
    resp = stack.post("/v1/chat/completions", body,
                      headers=dict(auth(), **{"X-OpenAI-Key": bad}))
    assert resp.status == 401, resp.body[:300]
    after, _ = scrape(stack)
    assert delta(before, after, "keygate_provider_calls_total",
                 provider="openai", outcome="ok") == 2
    assert delta(before, after, "keygate_provider_calls_total",
                 provider="openai", outcome="rejected") == 1
    assert delta(before, after,
                 "keygate_provider_call_duration_seconds_count",
                 provider="openai") == 3
    # Nothing is under way once the answers are in.
    assert value(after, "keygate_provider_calls_in_flight") == 0
    assert value(after, "keygate_streams_in_flight") == 0
    assert value(after, "keygate_credit_holds_outstanding") == 0


def events_end(events):
    """Reads the rest of a stream; true when it ended with [DONE]."""
    return any(e.data == "[DONE]" for e in events)


def test_a_stream_under_way_is_in_flight_with_its_hold(make_stack, mock):
    s = make_stack(workers=2, credits_enforce="true",
                   validate_llm_keys="false", **mock.config())
    tenant = s.post("/v1/tenants", {"name": "metered"}, headers=auth())
    assert tenant.status == 201, tenant.body[:300]
    tid = tenant.json["id"]
    resp = s.post("/v1/tenants/%s/credits" % tid,
                  {"amount": 100, "reason": "test"}, headers=auth())
    assert resp.status == 200, resp.body[:300]
    _, key = ks.new_api_key(s, ["chat:write"], tenant_id=tid)
    provider_key = "sk-proj-" + secrets.token_hex(20)
    mock.accept("openai", provider_key)
    # A paced stream: a second between chunks.
    mock.behave("openai", Complete(pieces=3, pause=1.0))
    reader = SSEReader(s.url + "/v1/chat/completions", {
        "model": "gpt-4o-mini", "stream": True, "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}]},
        dict(auth(key), **{"X-OpenAI-Key": provider_key}), timeout=30)
    try:
        assert reader.status == 200 and reader.is_stream
        events = reader.events()
        next(events)
        during, _ = scrape(s)
        assert value(during, "keygate_provider_calls_in_flight") == 1
        assert value(during, "keygate_streams_in_flight") == 1
        assert value(during, "keygate_credit_holds_outstanding") == 1
        assert events_end(events)
    finally:
        reader.close()
    # The stream ended: settled, and nothing under way.
    ks.wait_until(lambda: value(scrape(s)[0],
                                "keygate_provider_calls_in_flight") == 0,
                  30, what="the call to be counted as ended")
    after, _ = scrape(s)
    assert value(after, "keygate_streams_in_flight") == 0
    assert value(after, "keygate_credit_holds_outstanding") == 0
    assert value(after, "keygate_provider_calls_total", provider="openai",
                 outcome="ok") == 1


def test_worker_restarts_are_counted(make_stack):
    s = make_stack(workers=2, max_requests=5)
    # Recycled after five requests each: the master replaces them.
    for _ in range(12):
        assert s.get("/v1/auth/whoami", headers=auth()).status == 200
    ks.wait_until(lambda: value(scrape(s)[0], "keygate_worker_restarts_total",
                                reason="recycle") >= 1,
                  30, what="a recycled worker to be counted")
    s.kg.wait_workers(timeout=30)
    victim = sorted(s.kg.worker_pids())[0]
    before = value(scrape(s)[0], "keygate_worker_restarts_total",
                   reason="crash")
    os.kill(victim, signal.SIGKILL)
    ks.wait_until(lambda: value(scrape(s)[0], "keygate_worker_restarts_total",
                                reason="crash") == before + 1,
                  30, what="the killed worker to be counted")


def test_database_reconnects_are_counted(own_pg, make_stack):
    s = make_stack(own_pg, workers=1)
    assert s.get("/v1/auth/whoami", headers=auth()).status == 200
    before = value(scrape(s)[0], "keygate_database_reconnects_total")
    own_pg.restart()

    def served():
        # 503 while the worker finds PostgreSQL gone, then 200 again.
        return s.get("/v1/auth/whoami", headers=auth()).status == 200
    ks.wait_until(served, 30, interval=0.2, what="keygated to reconnect")
    assert value(scrape(s)[0], "keygate_database_reconnects_total") == \
        before + 1


# ---------------------------------------------------------------------------
# Who may read them

def metrics_from(stack, remote_addr, key=None):
    """GET /metrics as the web server would pass it for a client at
    remote_addr, straight over keygated's FastCGI socket."""
    params = {"REMOTE_ADDR": remote_addr}
    if key:
        params["HTTP_AUTHORIZATION"] = "Bearer " + key
    return ks.fcgi_response(*ks.fcgi_request(stack.kg.socket_path, "GET",
                                             "/metrics", params))


def test_loopback_reads_them_without_a_key(stack):
    for addr in ("127.0.0.1", "::1"):
        resp = metrics_from(stack, addr)
        assert resp.status == 200, resp.body[:300]
        assert b"# TYPE keygate_requests_total counter" in resp.body


def test_elsewhere_needs_metrics_read(stack):
    _, reader = ks.new_api_key(stack, ["models:read"])
    _, watcher = ks.new_api_key(stack, ["metrics:read"])
    assert_error(metrics_from(stack, "192.0.2.7"), 401, "missing_api_key")
    err = assert_error(metrics_from(stack, "192.0.2.7", reader), 403,
                       "insufficient_permissions")
    assert "metrics:read" in err["message"]
    resp = metrics_from(stack, "192.0.2.7", watcher)
    assert resp.status == 200, resp.body[:300]
    assert b"keygate_requests_total" in resp.body
    assert resp.headers["x-ratelimit-limit"]


def test_nothing_is_counted_with_metrics_off(make_stack):
    s = make_stack(workers=2, metrics="false")
    for _ in range(3):
        assert s.get("/v1/auth/whoami", headers=auth()).status == 200
    samples, _ = scrape(s)
    assert request_count(samples, WHOAMI, "200") == 0
    assert value(samples, "keygate_key_cache_misses_total") == 0
