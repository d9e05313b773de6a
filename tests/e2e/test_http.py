"""What any HTTP client sees of keygate, whatever the route: error shape,
status codes for bad requests, request ids, caching headers, the access
log."""

import json
import os
import re
import secrets
import uuid

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, assert_json_response, auth

SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
WRITE_ROUTE = "/v1/api_keys"


def row_counts(stack):
    """Row counts of the tables a rejected request must not touch."""
    tables = [r[0] for r in stack.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND "
        "(tablename LIKE '%key%' OR tablename LIKE '%audit%' OR "
        "tablename LIKE '%tenant%' OR tablename LIKE '%role%') AND "
        "tablename NOT LIKE '%rate%' ORDER BY 1")]
    if not tables:
        return {}
    sql = " UNION ALL ".join(
        "SELECT '%s', count(*) FROM %s" % (t, t) for t in tables)
    return dict((r[0], int(r[1])) for r in stack.psql(sql))


def test_unknown_path_is_404_not_found(stack):
    resp = stack.get("/no/such/route")
    assert_error(resp, 404, "not_found")


def test_wrong_method_is_405_with_allow_header(stack):
    resp = stack.post("/health", {})
    assert_error(resp, 405, "method_not_allowed")
    allow = [m.strip() for m in resp.headers.get("allow", "").split(",")]
    assert "GET" in allow, "Allow is %r" % resp.headers.get("allow")
    assert "HEAD" in allow, "Allow is %r" % resp.headers.get("allow")
    assert "POST" not in allow


def get_routes():
    """The path of every GET row in src/api/routes.c."""
    with open(os.path.join(ks.SRCDIR, "src", "api", "routes.c")) as f:
        routes = re.findall(r'\{\s*METHOD_GET,\s*"([^"]+)"', f.read())
    assert "/health" in routes, "no GET row found in src/api/routes.c"
    return routes


@pytest.mark.parametrize("pattern", get_routes())
def test_head_on_every_get_route_answers_like_get(stack, pattern):
    path = pattern.replace("{id}", str(uuid.uuid4()))
    got = stack.get(path, headers=auth())
    head = stack.request("HEAD", path, headers=auth())
    assert head.status == got.status, (head.status, got.status)
    assert head.status != 405
    assert head.body == b""
    assert head.headers.get("content-type") == got.headers.get("content-type")
    assert head.headers.get("x-request-id")


@pytest.mark.parametrize("path,headers,status", [
    ("/health", {}, 200),
    ("/v1/auth/whoami", {"HTTP_AUTHORIZATION": "Bearer " + ks.DEV_KEY}, 200),
    ("/v1/auth/whoami", {}, 401),
])
def test_keygated_writes_no_body_for_head(stack, path, headers, status):
    """Straight to keygated's socket, with no web server to drop a body:
    the header block of GET, Content-Length included, and nothing after
    it."""
    sock = stack.kg.socket_path
    get_head, get_body = ks.fcgi_request(sock, "GET", path, headers)
    head_head, head_body = ks.fcgi_request(sock, "HEAD", path, headers)
    assert head_head.startswith(b"Status: %d" % status), head_head
    assert get_head.split(b"\r\n")[0] == head_head.split(b"\r\n")[0]
    assert head_body == b"", head_body[:200]
    assert b"Content-Length: %d\r\n" % len(get_body) in head_head + b"\r\n"


def test_body_over_max_body_bytes_is_413(stack):
    before = row_counts(stack)
    body = b'{"name":"' + b"a" * (2 * 1024 * 1024) + b'"}'
    resp = stack.post(WRITE_ROUTE, body, timeout=30, headers=dict(
        auth(), **{"Content-Type": "application/json"}))
    assert_error(resp, 413, "request_too_large")
    assert row_counts(stack) == before


def test_malformed_json_is_400(stack):
    before = row_counts(stack)
    resp = stack.post(WRITE_ROUTE, b'{"name": "x", "scopes": [', headers=dict(
        auth(), **{"Content-Type": "application/json"}))
    assert_error(resp, 400)
    assert row_counts(stack) == before


def test_sane_request_id_is_echoed(stack):
    rid = "e2e-echo_%s.1" % secrets.token_hex(6)
    resp = stack.get("/health", headers={"X-Request-Id": rid})
    assert resp.status == 200
    assert resp.headers.get("x-request-id") == rid


def test_request_id_is_generated_when_absent(stack):
    first = stack.get("/health").headers.get("x-request-id", "")
    second = stack.get("/health").headers.get("x-request-id", "")
    assert SANE_ID.match(first), "generated id %r" % first
    assert SANE_ID.match(second), "generated id %r" % second
    assert first != second


@pytest.mark.parametrize("bad_id", [
    "has spaces in it",
    "semi;colon",
    "x" * 129,
    "quote\"d",
])
def test_unsafe_request_id_is_replaced(stack, bad_id):
    resp = stack.get("/health", headers={"X-Request-Id": bad_id})
    assert resp.status == 200
    got = resp.headers.get("x-request-id", "")
    assert got != bad_id
    assert SANE_ID.match(got), "replacement id %r" % got


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/health", 200),
    ("GET", "/no/such/route", 404),
    ("POST", "/health", 405),
])
def test_every_response_is_json_and_not_cacheable(stack, method, path, status):
    resp = stack.request(method, path, b"{}" if method == "POST" else None)
    assert resp.status == status
    assert_json_response(resp)


def wait_for_log(kg, request_id, timeout=5):
    """The access-log lines for request_id, once at least one appeared."""
    try:
        return ks.wait_until(lambda: kg.request_log(request_id), timeout,
                             what="an access-log line for %s" % request_id)
    except ks.StackError:
        return []


def test_access_log_has_one_line_per_request(stack):
    sent = []
    for method, path, status in [("GET", "/health", 200),
                                 ("GET", "/no/such/route", 404),
                                 ("POST", "/health", 405)]:
        rid = "e2e-log-%s" % secrets.token_hex(8)
        resp = stack.request(method, path,
                             b"{}" if method == "POST" else None,
                             headers={"X-Request-Id": rid})
        assert resp.status == status
        sent.append((rid, method, path, status))
    workers = stack.kg.worker_pids()
    for rid, method, path, status in sent:
        lines = wait_for_log(stack.kg, rid)
        assert len(lines) == 1, "log lines for %s: %r" % (rid, lines)
        line = lines[0]
        assert line.get("method") == method
        assert line.get("path") == path
        assert line.get("status") == status
        assert isinstance(line.get("latency_ms"), (int, float))
        assert 0 <= line["latency_ms"] < 10000
        assert line.get("pid") in workers, (
            "pid %r is not a worker %r" % (line.get("pid"), workers))
        assert "key_id" in line
        assert line.get("ts")


def test_access_log_never_contains_credentials(stack):
    # Shaped like real keys, so a logger that trims or masks only some
    # formats would still be caught.
    bearer = "kg_live_" + secrets.token_hex(20)
    api_key = "kg_test_" + secrets.token_hex(20)
    rids = []
    for path in ("/health", "/no/such/route", "/v1/auth/whoami"):
        for headers in ({"Authorization": "Bearer " + bearer},
                        {"X-API-Key": api_key}, auth()):
            rid = "e2e-cred-%s" % secrets.token_hex(8)
            stack.get(path, headers=dict(headers, **{"X-Request-Id": rid}))
            rids.append(rid)
    lines = []
    for rid in rids:
        found = wait_for_log(stack.kg, rid)
        assert found, "no access-log line for " + rid
        lines += found
    text = stack.kg.log_text()
    for secret in (bearer, api_key, bearer[8:], api_key[8:]):
        assert secret not in text, "a credential reached the log"
    # The development key is public, and a start-up warning may name it;
    # it still has no place in a request line.
    assert ks.DEV_KEY not in json.dumps(lines)
    assert stack.kg.config["hmac_secret"] not in text
    assert stack.kg.config["jwt_secret"] not in text
