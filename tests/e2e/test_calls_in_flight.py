"""Calls in flight: a provider call waits in its worker's event loop, not on
the worker, so a host holds thousands of them at once, each billed once,
with PostgreSQL connections bounded by the workers; /health and whoami
still answer meanwhile.  Slow uploads, slow readers and a key's cap on
calls in flight each end in a clear answer that costs nothing it should
not, and a client that stops reading holds up no other stream; SIGTERM and SIGHUP under a backlog that never empties lose nothing."""

import asyncio
import json
import os
import re
import signal
import socket
import struct
import threading
import time

import pytest

import keygate_stack as ks
from credit_helpers import MODES, credit_mode
from mock_llm import BulkOpenAI, Choose, Complete

OPENAI_KEY = "sk-proj-" + "f" * 40
CALLS = int(os.environ.get("KEYGATE_E2E_CALLS", "2000"))
# The stream each of them gets: 12 pieces a second apart, about 14 s, so
# that the first still streams when the last arrives on a slow (sanitizer)
# build.
CONTENT = "".join("piece%02d " % i for i in range(12))


@pytest.fixture
def openai(fresh_mock):
    """The module's mock provider, reset, taking OPENAI_KEY."""
    fresh_mock.accept("openai", OPENAI_KEY)
    return fresh_mock


def gateway(make_stack, mock, **config):
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false",
               rate_limiting="false", listen_backlog="4096")
    cfg.update(config)
    return make_stack(**cfg)


def new_key(s, tid):
    r = s.post("/v1/api_keys", {"tenant_id": tid, "scopes": [
        "chat:write", "account:read"]}, headers=ks.auth())
    assert r.status == 201, r.body
    return r.json["key"]


def tenant(s, credits):
    """A tenant with `credits` and a key for it: (tenant id, key)."""
    r = s.post("/v1/tenants", {"name": "calls"}, headers=ks.auth())
    assert r.status == 201, r.body
    tid = r.json["id"]
    r = s.post("/v1/tenants/%s/credits" % tid,
               {"amount": credits, "reason": "test"}, headers=ks.auth())
    assert r.status == 200, r.body
    return tid, new_key(s, tid)


def chat_body(stream=True, max_tokens=50):
    body = {"model": "gpt-4o-mini", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def raw_request(key, body, path="/v1/chat/completions"):
    data = json.dumps(body).encode()
    return (b"POST " + path.encode() + b" HTTP/1.0\r\nHost: x\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"X-OpenAI-Key: " + OPENAI_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: " +
            str(len(data)).encode() + b"\r\n\r\n" + data)


def stream_content(raw):
    """(status, content, done, usage) of a raw HTTP/1.0 streamed answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.\d (\d+)", head)
    status = int(m.group(1)) if m else None
    content, done, usage = "", False, None
    for line in body.decode("utf-8", "replace").split("\n"):
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk.get("choices", []):
            content += (c.get("delta") or {}).get("content") or ""
    return status, content, done, usage


def summary(results):
    """How the answers went, by status (or exception), for a failure."""
    seen = {}
    for raw in results:
        if raw is None or isinstance(raw, Exception):
            what = repr(raw)[:80]
        else:
            what = raw[:200].split(b"\r\n")[0].decode("latin-1") + " " + \
                raw.partition(b"\r\n\r\n")[2][:120].decode("latin-1")
        seen[what] = seen.get(what, 0) + 1
    return "\n".join("%5d  %s" % (n, w) for w, n in sorted(
        seen.items(), key=lambda x: -x[1])[:8])


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def sanitized(pid):
    """True when keygated runs with AddressSanitizer (its memory per
    thread is the sanitizer's, not keygated's)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def pg_connections(s):
    return int(s.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                      "datname = current_database() AND "
                      "pid <> pg_backend_pid()")[0][0])


def timed_get(s, path, key=ks.DEV_KEY):
    t = time.monotonic()
    r = s.get(path, headers=ks.auth(key), timeout=5)
    return r, time.monotonic() - t


async def _streams(url, key, n, started, results):
    host, port = url.split("//")[1].split(":")
    req = raw_request(key, chat_body())

    async def one(i):
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(req)
            await writer.drain()
            first = await reader.read(65536)
            started.append(i)
            rest = await reader.read()
            writer.close()
            results[i] = first + rest
        except Exception as exc:        # kept, and reported below
            results[i] = exc

    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)   # 2,000 connections in a second
    await asyncio.gather(*tasks)


@pytest.fixture
def bulk():
    # Every call in flight at once, however long they take to arrive.
    m = BulkOpenAI(CONTENT, pieces=12, pause=1.0, usage=(9, 8),
                   together=CALLS)
    yield m
    m.close()


def test_thousands_of_streams_in_flight_at_once(make_stack, bulk):
    workers = 4
    s = gateway(make_stack, bulk, workers=workers,
                max_concurrent_calls=str(CALLS + 100),
                upstream_total_timeout="120")
    tid, key = tenant(s, 1000)
    pids = {s.kg.pid} | s.kg.wait_workers()
    # A first call on every worker, so that what is measured is the calls.
    ks.burst(s, "GET", "/v1/auth/whoami", ks.auth(key), n=16)
    base = rss_kib(pids)
    balance0 = int(s.psql("SELECT credits_balance FROM tenants WHERE "
                          "id = '%s'" % tid)[0][0])

    results, started = [None] * CALLS, []
    client = threading.Thread(target=lambda: asyncio.run(
        _streams(s.url, key, CALLS, started, results)), daemon=True)
    client.start()
    try:
        st = bulk.wait_for(CALLS, timeout=60)
    except AssertionError:
        client.join(60)
        raise AssertionError("not all calls reached the provider: %s\n%s"
                             % (summary(results), s.kg.log_tail()))
    # Every call is in flight now: the provider holds each for 8 s.
    arrived = st["arrivals"]
    peak = rss_kib(pids)
    conns = pg_connections(s)
    health, t_health = timed_get(s, "/health")
    whoami, t_whoami = timed_get(s, "/v1/auth/whoami", key)
    inflight = int(s.psql("SELECT count(*) FROM credit_reservations")[0][0])
    client.join(90)
    assert not client.is_alive(), "the streams did not end within 90 s"

    print("\n%d streams: RSS %d KiB -> %d KiB (%.1f KiB per call); "
          "PostgreSQL connections %d; /health %.0f ms, whoami %.0f ms; "
          "holds in flight %d; all at the provider within %.1f s"
          % (CALLS, base, peak, (peak - base) / CALLS, conns,
             t_health * 1000, t_whoami * 1000, inflight,
             max(arrived) - min(arrived)))
    assert health.status == 200 and whoami.status == 200
    assert whoami.json["tenant_id"] == tid
    assert inflight >= CALLS * 0.9, "the calls were not in flight together"
    assert conns <= workers + 2, conns
    # Under 64 KiB per open call (a thread's stack pages, the FastCGI
    # request's buffers, a curl handle: about 61 KiB); a sanitizer's
    # shadow and stacks are far more.
    limit = 1024 if sanitized(s.kg.pid) else 64
    assert (peak - base) / CALLS < limit, (base, peak)
    st = bulk.stats()
    assert st["completed"] == CALLS and st["cut"] == 0, st

    bad = []
    for i, raw in enumerate(results):
        if isinstance(raw, Exception) or raw is None:
            bad.append((i, raw))
            continue
        status, content, done, usage = stream_content(raw)
        if status != 200 or content != CONTENT or not done or \
                usage != {"prompt_tokens": 9, "completion_tokens": 8,
                          "total_tokens": 17}:
            bad.append((i, raw[:300]))
    assert not bad, "%d of %d streams went wrong, first: %r" % (
        len(bad), CALLS, bad[:3])
    # Each billed once: one usage row each, the holds all settled, and the
    # balance down by exactly what the rows charged.
    rows = s.psql("SELECT count(*), count(DISTINCT request_id), "
                  "coalesce(sum(credits_charged), 0), min(status), "
                  "max(status) FROM usage WHERE tenant_id = '%s'" % tid)[0]
    assert rows[0] == rows[1] == str(CALLS), rows
    assert rows[3] == rows[4] == "ok", rows
    assert s.psql("SELECT count(*) FROM credit_reservations") == [["0"]]
    balance = int(s.psql("SELECT credits_balance FROM tenants WHERE "
                         "id = '%s'" % tid)[0][0])
    assert balance0 - balance == int(rows[2])
    out = s.kg.ctl("ledger-verify")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_key_over_its_cap_of_calls_in_flight_gets_429(make_stack, openai):
    mock = openai
    s = gateway(make_stack, mock, workers=2, max_concurrent_calls="3")
    mock.behave("openai", Complete(wait=3.0))
    tid, key = tenant(s, 100)
    other = new_key(s, tid)
    out = [None] * 5

    def call(i):
        out[i] = s.post("/v1/chat/completions", chat_body(stream=False),
                        headers=dict(ks.auth(key),
                                     **{"X-OpenAI-Key": OPENAI_KEY}),
                        timeout=20)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for i, t in enumerate(threads):
        t.start()
        if i == 2:
            mock.wait_for(3)
    # Meanwhile another key of the same tenant is not held back.
    r = s.post("/v1/chat/completions", chat_body(stream=False),
               headers=dict(ks.auth(other), **{"X-OpenAI-Key": OPENAI_KEY}),
               timeout=20)
    for t in threads:
        t.join(30)
    assert r.status == 200, r.body
    statuses = sorted(x.status for x in out)
    assert statuses == [200, 200, 200, 429, 429], [x.body for x in out]
    for x in out:
        if x.status == 429:
            err = ks.assert_error(x, 429, "too_many_concurrent_calls")
            assert "3 calls in flight" in err["message"], err
            assert x.headers.get("retry-after") == "1"
    # The refused calls reached no provider and cost nothing.
    assert len(mock.seen("openai")) == 4
    assert s.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'"
                  % tid) == [["4"]]
    assert s.psql("SELECT count(*) FROM credit_reservations") == [["0"]]
    # Once they have ended, the key may call again.
    r = s.post("/v1/chat/completions", chat_body(stream=False),
               headers=dict(ks.auth(key), **{"X-OpenAI-Key": OPENAI_KEY}),
               timeout=20)
    assert r.status == 200, r.body


def send_partial(socket_path, uri, params, part):
    """A POST over FastCGI whose body stops after `part`: the web server
    passes on an upload as it trickles in."""
    allp = {"REQUEST_METHOD": "POST", "REQUEST_URI": uri,
            "SCRIPT_NAME": uri, "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1"}
    allp.update(params)
    pairs = b"".join(ks.fcgi_pair(k.encode(), v.encode())
                     for k, v in allp.items())
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(10)
    c.connect(socket_path)
    c.sendall(ks.fcgi_record(ks.FCGI_BEGIN_REQUEST,
                             struct.pack(">HB5x", 1, 0)) +
              ks.fcgi_record(ks.FCGI_PARAMS, pairs) +
              ks.fcgi_record(ks.FCGI_PARAMS) +
              ks.fcgi_record(ks.FCGI_STDIN, part))
    return c


def test_a_slow_upload_gets_408_and_holds_no_worker(make_stack, openai):
    mock = openai
    s = gateway(make_stack, mock, workers=1, body_timeout="2")
    body = json.dumps({"name": "never-created"}).encode()
    conn = send_partial(s.kg.socket_path, "/v1/tenants",
                        {"HTTP_AUTHORIZATION": "Bearer " + ks.DEV_KEY,
                         "CONTENT_TYPE": "application/json",
                         "CONTENT_LENGTH": str(len(body))}, body[:5])
    try:
        # The one worker answers others while the body trickles in.
        t0 = time.monotonic()
        r = s.get("/health", timeout=5)
        assert r.status == 200 and time.monotonic() - t0 < 1.5
        conn.settimeout(10)
        head, _, payload = ks.fcgi_answer(conn).partition(b"\r\n\r\n")
    finally:
        conn.close()
    r = ks.fcgi_response(head, payload)
    assert r.status == 408, r.body
    err = r.json["error"]
    assert err["code"] == "request_timeout", err
    assert "2 s" in err["message"]
    assert s.psql("SELECT count(*) FROM tenants WHERE name = "
                  "'never-created'") == [["0"]]


def _unread_stream(s, key):
    """A stream asked for straight over FastCGI, with max_tokens 1000000,
    whose answer is never read: the open connection."""
    body = json.dumps(chat_body(max_tokens=1000000)).encode()
    return ks.fcgi_send(s.kg.socket_path, "POST", "/v1/chat/completions",
                        {"HTTP_AUTHORIZATION": "Bearer " + key,
                         "HTTP_X_OPENAI_KEY": OPENAI_KEY,
                         "CONTENT_TYPE": "application/json",
                         "CONTENT_LENGTH": str(len(body))}, body)


def test_a_client_that_stops_reading_is_let_go(make_stack, openai):
    """A stream to a client that reads nothing ends once a write has
    waited client_timeout: the provider call is ended, what was produced
    is charged once, and the worker served others all along."""
    mock = openai
    s = gateway(make_stack, mock, workers=1, client_timeout="2")
    mock.behave("openai", Complete(content="z" * 4000000, pieces=4000))
    tid, key = tenant(s, 1000)
    conn = _unread_stream(s, key)
    try:
        mock.wait_for(1)
        for _ in range(3):
            r = s.get("/health", timeout=5)
            assert r.status == 200
        ks.wait_until(lambda: s.psql(
            "SELECT count(*) FROM usage WHERE tenant_id = '%s'" % tid) ==
            [["1"]], 20, what="the usage row of the stalled stream")
    finally:
        conn.close()
    row = s.psql("SELECT status, credits_charged FROM usage WHERE "
                 "tenant_id = '%s'" % tid)[0]
    assert row[0] == "partial", row
    assert int(row[1]) > 0
    assert s.psql("SELECT count(*) FROM credit_reservations") == [["0"]]
    # The provider's connection was closed before its 4 MB were out.
    ex = mock.seen("openai")[0]
    ks.wait_until(lambda: ex.finished_at is not None, 10,
                  what="the provider call to end")
    assert not ex.completed


def _stream_via_web(s, key, timeout=20):
    """One stream through the web server, read to its end: the raw answer."""
    with socket.create_connection(("127.0.0.1", s.web.port),
                                  timeout=timeout) as c:
        c.sendall(raw_request(key, chat_body()))
        raw = b""
        while True:
            got = c.recv(65536)
            if not got:
                return raw
            raw += got


def test_a_client_that_stops_reading_holds_up_no_other_stream(make_stack,
                                                              openai):
    """A worker's streams are written by one loop that never waits: while
    one client reads nothing (its answer stuck, the provider's transfer
    paused), other streams of the same worker go on to their end, in full
    and billed; the stuck one is let go when its client leaves."""
    mock = openai
    s = gateway(make_stack, mock, workers=1, client_timeout="60")
    big = Complete(content="z" * 4000000, pieces=4000)
    small = Complete(content=CONTENT, pieces=12, pause=0.05)
    mock.behave("openai", Choose(lambda ex: big if (ex.json or {}).get(
        "max_tokens") == 1000000 else small))
    stuck_tid, stuck_key = tenant(s, 1000)
    tid, key = tenant(s, 1000)
    conn = _unread_stream(s, stuck_key)
    try:
        mock.wait_for(1)
        stuck = mock.seen("openai")[0]
        time.sleep(1.0)
        # 4 MB cannot be in the sockets' buffers: the stream is stuck.
        assert not stuck.completed
        for _ in range(3):
            status, content, done, usage = stream_content(
                _stream_via_web(s, key))
            assert (status, content, done) == (200, CONTENT, True)
            assert usage is not None
        assert s.psql("SELECT status, count(*) FROM usage WHERE "
                      "tenant_id = '%s' GROUP BY status" % tid) == \
            [["ok", "3"]]
        # All of that while the stuck stream was still open.
        assert not stuck.completed
        assert s.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'"
                      % stuck_tid) == [["0"]]
    finally:
        conn.close()
    ks.wait_until(lambda: s.psql(
        "SELECT count(*) FROM usage WHERE tenant_id = '%s'" % stuck_tid) ==
        [["1"]], 20, what="the usage row of the stuck stream")
    row = s.psql("SELECT status, credits_charged FROM usage WHERE "
                 "tenant_id = '%s'" % stuck_tid)[0]
    assert row[0] == "partial", row
    assert int(row[1]) > 0
    assert s.psql("SELECT count(*) FROM credit_reservations") == [["0"]]
    ks.wait_until(lambda: stuck.finished_at is not None, 10,
                  what="the provider call to end")
    assert not stuck.completed


def _load_streams(s, key, stop, results):
    """Streams of 2 s, 8 at a time, until stop is set."""
    def loop():
        while not stop.is_set():
            try:
                with socket.create_connection(
                        ("127.0.0.1", s.web.port), timeout=20) as c:
                    c.sendall(raw_request(key, chat_body()))
                    raw = b""
                    while True:
                        got = c.recv(65536)
                        if not got:
                            break
                        raw += got
                results.append(stream_content(raw))
            except OSError as exc:
                results.append(exc)
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.parametrize("mode", MODES)
def test_reloads_and_stop_under_a_backlog_that_never_empties(make_stack,
                                                             openai, workdir,
                                                             mode):
    """Also with credits leased per host (and answers that wait only for
    the host's journal): the ledger writer hands over to the worker
    replacing it, and at SIGTERM stays until every call's usage row is
    written, then gives the leases back."""
    mock = openai
    s = gateway(make_stack, mock, workers=2, shutdown_timeout="20",
                **credit_mode(mode, workdir))
    mock.behave("openai", Complete(content=CONTENT, pieces=8, pause=0.25,
                                   usage=(9, 8)))
    tid, key = tenant(s, 1000)
    before = s.kg.wait_workers()
    load = ks.Load(s.url + "/v1/auth/whoami", threads=12, duration=120,
                   headers=ks.auth(key), timeout=20).start()
    stop, streamed = threading.Event(), []
    streamers = _load_streams(s, key, stop, streamed)
    try:
        load.wait_for(200, 30)
        for _ in range(3):
            s.kg.sighup()
            time.sleep(1.5)
        ks.wait_until(lambda: not (s.kg.worker_pids() & before) and
                      len(s.kg.worker_pids()) == 2, 40,
                      what="every worker replaced")
        time.sleep(1)
    finally:
        stop.set()
        samples = load.stop()
    for t in streamers:
        t.join(30)
    failed = [x for x in samples if x.status != 200]
    assert not failed, ks.describe(failed)
    bad = [r for r in streamed if isinstance(r, Exception) or
           r[:3] != (200, CONTENT, True)]
    assert streamed and not bad, bad[:3]

    # SIGTERM with streams in flight and clients still knocking: the
    # streams taken finish whole, then keygated exits, nothing held.
    stop.clear()
    streamed.clear()
    streamers = _load_streams(s, key, stop, streamed)
    load = ks.Load(s.url + "/v1/auth/whoami", threads=12, duration=60,
                   headers=ks.auth(key), timeout=20).start()
    mock.wait_for(len(mock.seen()) + 8, 20)
    s.kg.sigterm()
    status = s.kg.wait(25)
    stop.set()
    load.stop()
    for t in streamers:
        t.join(30)
    assert status == 0, s.kg.log_tail()
    taken = [r for r in streamed if not isinstance(r, Exception) and
             r[0] == 200]
    assert taken, streamed[:3]
    assert all(r[1:3] == (CONTENT, True) for r in taken), taken[:3]
    assert "killing" not in s.kg.log_text()
    assert s.psql("SELECT count(*) FROM credit_reservations") == [["0"]]
    rows = s.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s' AND "
                  "status <> 'ok'" % tid)
    assert rows == [["0"]], rows
    # Every stream answered whole was charged once, and the ledger adds up.
    rows = s.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'" % tid)
    assert int(rows[0][0]) >= len(taken)
    out = s.kg.ctl("ledger-verify")
    assert out.returncode == 0, (out.stdout, out.stderr)
