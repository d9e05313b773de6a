"""Rate limits per key, exact across every worker of every keygated that
shares the database: N workers or N hosts never admit N times the limit."""

import concurrent.futures
import time

import pytest

import keygate_stack as ks


@pytest.fixture
def two_hosts(make_stack, workdir):
    a = make_stack(workers=3)
    b = ks.Host(workdir, a)
    yield a, b
    b.close()


def hammer(hosts, key, n):
    def one(i):
        return hosts[i % len(hosts)].get("/v1/auth/whoami",
                                         headers=ks.auth(key))
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        return list(ex.map(one, range(n)))


def wait_for_window_start(window):
    """Sleeps to just after a window boundary so a burst fits in one."""
    left = window - (time.time() % window)
    if left < 4:
        time.sleep(left + 0.2)


def test_exact_limit_across_workers_and_hosts(two_hosts):
    a, b = two_hosts
    key = ks.limited_key(a, 25, "20 seconds")
    wait_for_window_start(20)
    results = hammer([a, b], key, 80)
    ok = [r for r in results if r.status == 200]
    limited = [r for r in results if r.status == 429]
    assert len(ok) == 25, [r.status for r in results]
    assert len(limited) == 55
    for r in limited:
        ks.assert_error(r, 429, "rate_limit_exceeded")
        assert 1 <= int(r.headers["retry-after"]) <= 20
        assert r.headers["x-ratelimit-remaining"] == "0"
    for r in results:
        assert r.headers["x-ratelimit-limit"] == "25"
        reset = int(r.headers["x-ratelimit-reset"])
        assert time.time() - 1 <= reset <= time.time() + 21
    remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in ok)
    assert remaining == list(range(25))
    # Both hosts answered, and admitted some: the counter is shared, not
    # one per host (each host alone would have admitted 25).
    for host in (a, b):
        admitted = [l for l in host.kg.log_lines()
                    if l.get("path") == "/v1/auth/whoami" and
                    l.get("status") == 200]
        refused = [l for l in host.kg.log_lines()
                   if l.get("path") == "/v1/auth/whoami" and
                   l.get("status") == 429]
        assert admitted and refused
    # Another key is not affected.
    other = ks.limited_key(a, 25, "20 seconds")
    assert b.get("/v1/auth/whoami", headers=ks.auth(other)).status == 200


def test_next_window_admits_again(make_stack):
    s = make_stack(workers=2)
    key = ks.limited_key(s, 3, "5 seconds")
    wait_for_window_start(5)
    statuses = [s.get("/v1/auth/whoami", headers=ks.auth(key)).status
                for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    reset = int(s.get("/v1/auth/whoami",
                      headers=ks.auth(key)).headers["x-ratelimit-reset"])
    time.sleep(max(0, reset - time.time()) + 0.3)
    r = s.get("/v1/auth/whoami", headers=ks.auth(key))
    assert r.status == 200
    assert r.headers["x-ratelimit-remaining"] == "2"


def test_default_limit_comes_from_config(make_stack):
    s = make_stack(workers=1, rate_limit_max=4, rate_limit_window="1 minute")
    r = s.post("/v1/api_keys", {"scopes": ["models:read"]},
               headers=ks.auth())
    assert r.status == 201
    key = r.json["key"]
    statuses = [s.get("/v1/auth/whoami", headers=ks.auth(key)).status
                for _ in range(6)]
    assert statuses.count(200) == 4 and statuses[-1] == 429
    w = s.get("/v1/auth/whoami", headers=ks.auth(key))
    assert w.headers["x-ratelimit-limit"] == "4"


def test_refused_requests_are_not_counted_and_change_nothing(make_stack):
    s = make_stack(workers=1)
    key = ks.limited_key(s, 2, "1 minute")
    wait_for_window_start(60)
    for _ in range(2):
        assert s.get("/v1/auth/whoami", headers=ks.auth(key)).status == 200
    before = s.psql("SELECT count(*) FROM api_keys")
    r = s.post("/v1/api_keys", {"scopes": ["models:read"]},
               headers=ks.auth(key))
    ks.assert_error(r, 429, "rate_limit_exceeded")
    assert s.psql("SELECT count(*) FROM api_keys") == before
    count = s.psql("SELECT count FROM rate_counters WHERE subject = "
                   "(SELECT id::text FROM api_keys WHERE key_prefix = '%s')"
                   % key[:16])
    assert count == [["2"]]


def test_verify_counts_against_the_verified_key(make_stack):
    s = make_stack(workers=2)
    key = ks.limited_key(s, 2, "1 minute")
    wait_for_window_start(60)
    answers = [s.post("/v1/keys/verify", {"key": key}, headers=ks.auth())
               for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.json["valid"] for a in answers] == [True, True, False]
    assert answers[2].json["code"] == "rate_limit_exceeded"
    assert [a.json["ratelimit"]["remaining"] for a in answers] == [1, 0, 0]
    assert answers[0].json["ratelimit"]["limit"] == 2
    # The verified key itself is now over its limit too.
    ks.assert_error(s.get("/v1/auth/whoami", headers=ks.auth(key)), 429,
                    "rate_limit_exceeded")


def test_rate_limiting_off_counts_nothing(make_stack):
    s = make_stack(workers=2, rate_limiting="false")
    key = ks.limited_key(s, 2, "1 minute")
    for _ in range(6):
        r = s.get("/v1/auth/whoami", headers=ks.auth(key))
        assert r.status == 200, r.body
        assert not any(h.startswith("x-ratelimit-") for h in r.headers)
    v = s.post("/v1/keys/verify", {"key": key}, headers=ks.auth())
    assert v.status == 200 and v.json["valid"] is True
    assert v.json["ratelimit"] == {"limit": 2, "window": "1 minute"}
    assert s.psql("SELECT count(*) FROM rate_counters") == [["0"]]
