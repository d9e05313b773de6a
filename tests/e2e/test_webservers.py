"""keygate behind each web server it ships a configuration for: lighttpd,
Apache httpd 2.4 (mod_proxy_fcgi) and nginx, each started from its file in
fcgi/ with only the socket path and the port changed (and, for nginx, the
log directory), on a free loopback port; Apache and nginx run as `nobody`
when the tests run as root.

Every test runs once behind each server (the `web_server` fixture): the
credential headers reach keygated, and keygated's headers (request id,
rate limit, Retry-After, Allow) the client; a streamed completion arrives
chunk by chunk; a body over max_body_bytes is keygate's 413; a client that
leaves mid-stream ends the upstream call, and among many calls waiting,
those whose clients left end and no other; HEAD answers like GET without a
body; and a key sent in the query string never reaches the access log."""

import json
import secrets
import struct
import time
import uuid

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, assert_json_response, auth
from mock_llm import Complete, Hang, SSEReader

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello."}]

# Every test starts with the mock reset.
pytestmark = pytest.mark.usefixtures("fresh_mock")


@pytest.fixture(scope="module")
def served(workdir, pg, web_server, mock):
    """keygated behind `web_server`, its providers on the mock; the
    upstream timeouts are long enough for every paced stream here."""
    s = ks.Stack(workdir.subdir("kg"), pg,
                 dbname="web_%s_%s" % (web_server, secrets.token_hex(4)),
                 web=web_server, workers=3, validate_llm_keys="false",
                 upstream_idle_timeout=20, upstream_total_timeout=60,
                 **mock.config())
    yield s
    s.close()


def openai_key(mock):
    """An inline OpenAI key header the mock accepts."""
    key = "sk-proj-" + secrets.token_hex(20)
    mock.accept("openai", key)
    return {"X-OpenAI-Key": key}


def stream(served, mock, behaviour, timeout=30):
    mock.behave("openai", behaviour)
    headers = dict(auth(), **openai_key(mock))
    return SSEReader(served.url + CHAT, {"model": "gpt-4o-mini",
                                         "messages": MESSAGES,
                                         "stream": True},
                     headers, timeout=timeout)


def create_key(served, **headers):
    return served.post("/v1/api_keys", {"name": "e2e-web",
                                        "scopes": ["chat:write"]},
                       headers=headers)


# ---------------------------------------------------------------------------
# Credentials

def test_bearer_and_x_api_key_reach_keygate(served):
    p = served.kg.ctl("create-key", "--name", "e2e-web", "--scopes",
                      "models:read")
    assert p.returncode == 0, p.stdout + p.stderr
    key = p.stdout.strip()
    for headers in ({"Authorization": "Bearer " + key}, {"X-API-Key": key}):
        resp = served.get("/v1/auth/whoami", headers=headers)
        assert resp.status == 200, resp.body[:300]
        assert_json_response(resp)
        assert resp.json["scopes"] == ["models:read"]
        assert key.startswith(resp.json["key_prefix"])
    assert_error(served.get("/v1/auth/whoami"), 401, "missing_api_key")
    wrong = key[:-4] + "0000" if not key.endswith("0000") else key[:-4] + "1111"
    for headers in ({"Authorization": "Bearer " + wrong}, {"X-API-Key": wrong}):
        assert_error(served.get("/v1/auth/whoami", headers=headers), 401,
                     "invalid_api_key")


def test_a_write_with_a_bearer_key_changes_the_database(served):
    before = served.psql("SELECT count(*) FROM api_keys")[0][0]
    resp = create_key(served, **auth())
    assert resp.status == 201, resp.body[:300]
    assert served.psql("SELECT count(*) FROM api_keys WHERE id = '%s'"
                       % resp.json["id"]) == [["1"]]
    assert int(served.psql("SELECT count(*) FROM api_keys")[0][0]) == \
        int(before) + 1


def test_keygates_headers_and_errors_reach_the_client(served):
    """X-Request-Id, the X-RateLimit-* headers, a 429 with Retry-After and
    a 405 with Allow come through the web server as keygated wrote them."""
    r = served.post("/v1/api_keys", {"name": "e2e-web-limited",
                                     "scopes": ["models:read"],
                                     "rate_limit_max": 2,
                                     "rate_limit_window": "1 hour"},
                    headers=auth())
    assert r.status == 201, r.body[:300]
    # Three requests in one window, wherever windows start.
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 1)
    rid = "e2e-web-" + secrets.token_hex(8)
    got = [served.get("/v1/auth/whoami", headers={
        "X-API-Key": r.json["key"], "X-Request-Id": rid}) for _ in range(3)]
    assert [g.status for g in got] == [200, 200, 429], [g.body for g in got]
    assert [g.headers.get("x-ratelimit-remaining") for g in got] == \
        ["1", "0", "0"]
    for g in got:
        assert g.headers.get("x-request-id") == rid
        assert g.headers.get("x-ratelimit-limit") == "2"
        assert int(g.headers["x-ratelimit-reset"]) > time.time() - 1
    assert_error(got[2], 429, "rate_limit_exceeded")
    assert 1 <= int(got[2].headers["retry-after"]) <= 3600
    resp = served.post("/health", {})
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers.get("allow") == "GET, HEAD"


# ---------------------------------------------------------------------------
# Streams

def test_a_stream_arrives_chunk_by_chunk(served, mock):
    """Nine events, 0.5 s apart: the first reaches the client while the
    mock still has seconds of writing ahead of it."""
    s = stream(served, mock, Complete(pause=0.5, pieces=4))
    assert s.status == 200, s.body
    assert s.headers.get("content-type", "").startswith("text/event-stream")
    events = s.read_all()
    up = mock.only("openai")
    assert events[-1].data == "[DONE]"
    got, kg = ks.stream_chunks([json.loads(e.data) for e in events[:-1]])
    assert kg["provider"] == "openai"
    assert got == [c for c in up.chunks() if c["choices"]]
    first, last_sent = events[0].at, up.sent_at[-1]
    assert first < last_sent - 1.0, (
        "the first chunk arrived at +%.2fs, the mock's last write was at "
        "+%.2fs: the stream was buffered" % (first - s.sent_at,
                                            last_sent - s.sent_at))


def test_a_client_gone_mid_stream_ends_the_upstream_call(served, mock):
    s = stream(served, mock, Complete(pause=0.3, pieces=100))
    assert s.status == 200, s.body
    it = s.events()
    next(it)
    next(it)
    s.abort()
    up = mock.wait_for(1)[0]
    assert up.done.wait(20), "the upstream call went on after the client " \
        "left"
    assert up.closed_at is not None and not up.completed
    assert "[DONE]" not in up.events
    # The workers are free again.
    mock.behave("openai", Complete())
    for _ in range(4):
        resp = served.post(CHAT, {"model": "gpt-4o-mini",
                                  "messages": MESSAGES},
                           headers=dict(auth(), **openai_key(mock)))
        assert resp.status == 200, resp.body[:300]


@pytest.mark.parametrize("leaving", ["reset", "close"])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_client_gone_before_the_first_byte_ends_the_upstream_call(
        served, mock, streamed, leaving):
    """The provider has answered nothing yet when the client leaves, by
    resetting its connection or closing it (a FIN): keygated ends the
    provider call within about a second, holds nothing, and logs the
    request as closed by the client (499).  lighttpd and
    Apache do not watch the client then (nor close their FastCGI
    connection), so keygated asks the kernel about the client's
    connection (keygated(8))."""
    import socket
    import urllib.parse
    mock.behave("openai", Hang(30.0))
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES,
                       "stream": streamed}).encode()
    u = urllib.parse.urlsplit(served.url)
    c = socket.create_connection((u.hostname, u.port), timeout=10)
    rid = "e2e-web-" + secrets.token_hex(8)
    head = "".join("%s: %s\r\n" % kv for kv in dict(
        auth(), **openai_key(mock), **{"X-Request-Id": rid}).items())
    c.sendall(("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: "
               "application/json\r\nContent-Length: %d\r\n\r\n"
               % (CHAT, head, len(body))).encode() + body)
    up = mock.wait_for(1)[0]
    left = time.monotonic()
    if leaving == "reset":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
    c.close()
    assert up.done.wait(10), "the upstream call went on after the client " \
        "left"
    took = time.monotonic() - left
    print("\nprovider call ended %.2f s after the client left" % took)
    assert up.closed_at is not None and not up.completed
    assert up.closed_at - left < 3, took
    # Nothing held, and keygated's log says the client closed the request.
    held = served.psql("SELECT count(*) FROM credit_reservations")
    assert held == [["0"]], held
    lines = ks.wait_until(lambda: served.kg.request_log(rid), 10,
                          interval=0.2, what="the access log line")
    assert [l["status"] for l in lines] == [499], lines


def test_clients_that_leave_among_many_waiting_end_only_their_calls(
        served, mock):
    """24 calls wait on a provider that answers nothing for 6 s, streamed
    and not, spread over the workers; 8 of their clients leave (resets
    and FINs) at once.  keygated asks about all the calls of a worker
    together: exactly those 8 provider calls end, within about a second,
    logged as 499; the 16 others stay until the provider gives up on
    them, and nothing is held afterwards."""
    import socket
    import urllib.parse
    mock.behave("openai", Hang(6.0))
    u = urllib.parse.urlsplit(served.url)
    conns, rids = [], []
    for i in range(24):
        body = json.dumps({"model": "gpt-4o-mini", "stream": i % 2 == 0,
                           "messages": [{"role": "user",
                                         "content": "client %d" % i}]})
        rid = "e2e-many-%d-%s" % (i, secrets.token_hex(6))
        head = "".join("%s: %s\r\n" % kv for kv in dict(
            auth(), **openai_key(mock), **{"X-Request-Id": rid}).items())
        c = socket.create_connection((u.hostname, u.port), timeout=20)
        c.sendall(("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: "
                   "application/json\r\nContent-Length: %d\r\n\r\n"
                   % (CHAT, head, len(body))).encode() + body.encode())
        conns.append(c)
        rids.append(rid)
    ups = {}
    for ex in mock.wait_for(24, timeout=15):
        ups[int(ex.json["messages"][0]["content"].split()[1])] = ex
    assert sorted(ups) == list(range(24))
    leaving = [i for i in range(24) if i % 3 == 0]
    left = time.monotonic()
    for i in leaving:
        if i % 2 == 0:
            conns[i].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
        conns[i].close()
    for i in leaving:
        assert ups[i].done.wait(10), "call %d went on after its client " \
            "left" % i
        assert ups[i].closed_at is not None and not ups[i].completed
        assert ups[i].closed_at - left < 3, (i, ups[i].closed_at - left)
    # The others are still waiting on the provider, none cut.
    for i in range(24):
        if i not in leaving:
            assert not ups[i].done.is_set(), "call %d was ended though " \
                "its client stayed" % i
            assert ups[i].closed_at is None, i
    for i in range(24):
        if i not in leaving:
            assert ups[i].done.wait(20), i
            assert ups[i].closed_at is None, i
            conns[i].settimeout(20)
            assert conns[i].recv(64).startswith(b"HTTP/1.1 "), i
            conns[i].close()
    statuses = {}
    for i in range(24):
        lines = ks.wait_until(lambda: served.kg.request_log(rids[i]), 10,
                              interval=0.2, what="the access log line")
        statuses[i] = [l["status"] for l in lines]
    assert [i for i in range(24) if statuses[i] == [499]] == leaving, \
        statuses
    held = served.psql("SELECT count(*) FROM credit_reservations")
    assert held == [["0"]], held


# ---------------------------------------------------------------------------
# Limits

def test_a_body_over_max_body_bytes_is_413_and_changes_nothing(served):
    before = served.psql("SELECT count(*) FROM api_keys")
    body = b'{"name":"' + b"a" * (2 * 1024 * 1024) + b'"}'
    resp = served.post("/v1/api_keys", body, timeout=60, headers=dict(
        auth(), **{"Content-Type": "application/json"}))
    assert_error(resp, 413, "request_too_large")
    assert served.psql("SELECT count(*) FROM api_keys") == before


# ---------------------------------------------------------------------------
# HEAD

@pytest.mark.parametrize("path,headers,status", [
    ("/health", {}, 200),
    ("/v1/auth/whoami", None, 200),
    ("/v1/auth/whoami", {}, 401),
    ("/v1/api_keys/" + str(uuid.UUID(int=7)), None, 404),
])
def test_head_answers_like_get_without_a_body(served, path, headers, status):
    headers = auth() if headers is None else headers
    got = served.get(path, headers=headers)
    head = served.request("HEAD", path, headers=headers)
    assert got.status == head.status == status, (got.status, head.status)
    assert head.body == b""
    assert head.headers.get("content-type") == got.headers.get("content-type")
    assert head.headers.get("cache-control") == "no-store"
    assert head.headers.get("x-request-id")
    if "content-length" in head.headers:
        assert int(head.headers["content-length"]) == len(got.body)


# ---------------------------------------------------------------------------
# The access log

def test_a_key_in_the_query_string_never_reaches_the_access_log(served):
    secret = "kg_live_" + secrets.token_hex(20)
    marker = "e2e-web-" + secrets.token_hex(8)
    resp = served.get("/v1/auth/whoami?api_key=" + secret,
                      headers={"User-Agent": marker})
    assert_error(resp, 401, "missing_api_key")
    line = ks.wait_until(lambda: [l for l in served.web.access_log_text()
                                  .splitlines() if marker in l], 30,
                         interval=0.2, what="the access-log line")
    assert "/v1/auth/whoami" in line[0] and " 401 " in line[0], line
    assert "api_key" not in line[0], line
    assert secret not in served.web.access_log_text()
    assert secret[8:] not in served.web.access_log_text()
