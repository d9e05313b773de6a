"""GET /health, with PostgreSQL up, down, and back."""

import email.utils
import time

import pytest

import keygate_stack as ks
from keygate_stack import assert_json_response, auth


@pytest.fixture(scope="module")
def outage(workdir):
    """A stack on its own PostgreSQL cluster, which tests may stop.  Each
    test leaves the cluster running."""
    cluster = ks.PgCluster(workdir.subdir("pg"))
    s = ks.Stack(workdir.subdir("kg"), cluster, workers=3)
    yield s
    s.close()
    cluster.close()


@pytest.fixture
def database_down(outage):
    """Stops the outage stack's PostgreSQL for one test."""
    outage.kg.wait_workers()
    outage.pg.stop()
    yield outage
    if not outage.pg.running():
        outage.pg.start()
    ks.wait_until(lambda: outage.get("/health").status == 200, 15,
                  what="/health to answer 200 again")


def assert_unavailable(resp):
    """503 in JSON with Retry-After: what a client sees during an outage."""
    assert resp.status == 503, "expected 503, got %d: %r" % (
        resp.status, resp.body[:300])
    assert_json_response(resp)
    body = resp.json
    assert isinstance(body, dict)
    if "error" in body:
        err = body["error"]
        assert isinstance(err.get("message"), str) and err["message"]
        assert isinstance(err.get("code"), str) and err["code"]
    else:
        assert body.get("database") == "unavailable", body
    retry = resp.headers.get("retry-after", "")
    if not (retry.isdigit() and int(retry) > 0):
        try:
            email.utils.parsedate_to_datetime(retry)
            is_date = True
        except (TypeError, ValueError):
            is_date = False
        assert is_date, "Retry-After is %r" % retry


def test_health_reports_ok_with_database_connected(stack):
    resp = stack.get("/health")
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json.get("status") == "ok"
    assert resp.json.get("database") == "connected"
    assert resp.json.get("vault") == "connected"
    assert isinstance(resp.json.get("version"), str) and resp.json["version"]


def test_health_is_503_while_database_is_down(database_down):
    s = database_down
    workers = s.kg.worker_pids()
    for _ in range(6):
        assert_unavailable(s.get("/health"))
        time.sleep(0.1)
    assert s.kg.alive()
    assert s.kg.worker_pids() == workers, "workers were replaced"


def test_authenticated_request_while_database_is_down_is_503(outage):
    outage.pg.stop()
    try:
        for _ in range(3):
            resp = outage.get("/v1/auth/whoami", headers=auth())
            assert resp.status != 401, "401 while the database is down"
            assert_unavailable(resp)
    finally:
        outage.pg.start()


def test_health_recovers_within_10s_after_database_starts(database_down):
    s = database_down
    workers = s.kg.worker_pids()
    assert_unavailable(s.get("/health"))
    s.pg.start()
    started = time.monotonic()
    ks.wait_until(lambda: s.get("/health").status == 200, 10, interval=0.2,
                  what="/health to answer 200 after PostgreSQL started")
    resp = s.get("/health")
    assert resp.status == 200
    assert resp.json.get("database") == "connected"
    assert time.monotonic() - started < 10
    assert s.kg.worker_pids() == workers, "workers were replaced"
