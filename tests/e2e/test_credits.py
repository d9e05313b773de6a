"""Credits: a gateway call reserves its estimate before the provider is
called and settles to its real usage after, with exactly one usage row;
concurrent calls never spend more than the balance; failures cost nothing;
the pool costs (1 + markup) times the same call with the tenant's key."""

import concurrent.futures
import math
import os
import re
import signal
import threading
import time

import pytest

import keygate_stack as ks
from credit_helpers import (BODY, IN, MODES, OUT, OPENAI_KEY, POOL_KEY,
                            _exact, _quiet, charged_call, chat, cost,
                            credit_mode, decimal, estimate, fresh, ledger,
                            micro, overspend_burst, set_balance, tenant,
                            usage_of)
from mock_llm import Complete, Fail, Hang, SSEReader


@pytest.fixture
def mock(mock):
    """conftest's mock, reset for each test and taking our keys."""
    return fresh(mock)


@pytest.fixture
def billed(make_stack, mock):
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false",
               pool_openrouter_key=POOL_KEY, pool_markup="0.25", workers=3)
    return make_stack(**cfg)


def test_top_up_is_audited_and_shown_in_account(billed):
    tid, key = tenant(billed, 2.5)
    assert micro(billed, tid) == 2500000
    r = billed.get("/v1/account", headers=ks.auth(key))
    assert r.status == 200
    assert r.json["credits_balance"] == 2.5
    assert r.json["credits_reserved"] == 0
    assert r.json["tenant_id"] == tid and r.json["active_keys"] == 1
    rows = billed.psql("SELECT details->>'amount_micro', details->>'reason' "
                       "FROM audit_log WHERE action = 'credits.add' AND "
                       "target_id = '%s'" % tid)
    assert rows == [["2500000", "test"]]
    for bad in (0, -1, "ten", 1e10, 0.0000001):
        r = billed.post("/v1/tenants/%s/credits" % tid, {"amount": bad},
                        headers=ks.auth())
        ks.assert_error(r, 422, "validation_error")
    assert micro(billed, tid) == 2500000


def test_short_balance_is_402_and_the_provider_is_never_called(billed,
                                                               mock):
    est, prompt = estimate()
    tid, key = tenant(billed, None)
    set_balance(billed, tid, est - 1)
    r = chat(billed, key)
    err = ks.assert_error(r, 402, "insufficient_credits")
    assert round(err["required_credits"] * 1e6) == est
    assert round(err["available_credits"] * 1e6) == est - 1
    # The figures in the message too, as exact decimals.
    assert err["message"] == \
        "Insufficient credits. Required: %s, Available: %s" % (
            decimal(est), decimal(est - 1)), err
    # The most output the balance pays for, at this prompt.
    assert err["max_affordable_tokens"] == \
        ((est - 1) * 10**6 - prompt * IN) // OUT
    assert mock.seen("openai") == []
    assert micro(billed, tid) == est - 1
    assert micro(billed, tid, "credits_reserved") == 0
    assert billed.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'"
                       % tid) == [["0"]]


def test_settled_to_real_usage_with_one_usage_row(billed, mock):
    tid, r, charged = charged_call(billed, mock)
    # Written as the exact decimal, not as a binary double's 17 digits.
    assert b'"credits_charged":%s,' % decimal(charged).encode() in r.body, \
        r.body
    assert micro(billed, tid) == 1000000 - charged
    assert micro(billed, tid, "credits_reserved") == 0
    rows = billed.psql("SELECT prompt_tokens, completion_tokens, "
                       "credits_charged, key_source, request_id FROM usage "
                       "WHERE tenant_id = '%s'" % tid)
    assert rows == [["40", "9", str(charged), "user",
                     r.headers["x-request-id"]]]
    # Every movement is a ledger row: the top-up, the hold, the charge.
    est, _ = estimate()
    assert ledger(billed, tid) == [["mint", 1000000, 0], ["hold", 0, est],
                                   ["charge", -charged, -est]]
    assert billed.psql("SELECT count(DISTINCT reservation_id), "
                       "min(request_id) FROM credit_ledger WHERE "
                       "tenant_id = '%s' AND kind <> 'mint'" % tid) == \
        [["1", r.headers["x-request-id"]]]


def test_ids_of_calls_one_after_another_are_in_time_order(billed, mock):
    """A call's request id and its hold's id begin with the time they were
    made (the hold's is a version 7 uuid), so that usage rows, millions in
    a year, are added at the end of their indexes: calls made one after
    another have ids in that order, each still different."""
    mock.behave("openai", Complete(usage=(40, 9)))
    tid, key = tenant(billed, 1)
    before = int(time.time() * 1000)
    rids = []
    for _ in range(4):
        r = chat(billed, key)
        assert r.status == 200, r.body
        rids.append(r.json["keygate"]["request_id"])
        assert r.headers["x-request-id"] == rids[-1]
        time.sleep(0.003)
    after = int(time.time() * 1000)
    for rid in rids:
        assert re.fullmatch(r"req_[0-9a-f]{24}", rid), rid
        assert before <= int(rid[4:16], 16) <= after, (rid, before, after)
    assert rids == sorted(rids) and len(set(rids)) == 4, rids
    rows = billed.psql("SELECT request_id, reservation_id FROM usage "
                       "WHERE tenant_id = '%s' ORDER BY id" % tid)
    assert [row[0] for row in rows] == rids
    resv = [row[1] for row in rows]
    for u in resv:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-"
                            r"[89ab][0-9a-f]{3}-[0-9a-f]{12}", u), u
        assert before <= int(u[:8] + u[9:13], 16) <= after, u
    assert resv == sorted(resv) and len(set(resv)) == 4, resv
    # The ledger's hold and charge name the same reservations.
    assert billed.psql("SELECT DISTINCT reservation_id FROM credit_ledger "
                       "WHERE tenant_id = '%s' AND kind <> 'mint' "
                       "ORDER BY 1" % tid) == [[u] for u in resv]


@pytest.mark.parametrize("mode", MODES)
def test_a_request_id_sent_again_is_charged_again(make_stack, mock, workdir,
                                                  mode):
    """A client chooses its X-Request-Id and may send the same one again
    (a retry, a fixed id for tracing), even for calls under way together:
    every call is still held, charged and written once, each usage row
    with that request id, and the ledger is exact, with holds in the
    database as with leases."""
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false", workers=3,
               **credit_mode(mode, workdir))
    s = make_stack(**cfg)
    mock.behave("openai", Complete(usage=(40, 9)))
    tid, key = tenant(s, 1)
    headers = dict(ks.auth(key), **{"X-OpenAI-Key": OPENAI_KEY,
                                    "X-Request-Id": "trace-7"})
    for _ in range(2):
        r = s.post("/v1/chat/completions", BODY, headers=headers)
        assert r.status == 200, r.body
        assert r.headers["x-request-id"] == "trace-7"
        assert r.json["keygate"]["request_id"] == "trace-7"
        assert round(r.json["keygate"]["credits_charged"] * 1e6) == \
            cost(40, 9)
    r = SSEReader(s.url + "/v1/chat/completions", dict(BODY, stream=True),
                  headers)
    assert r.status == 200, r.body
    assert r.read_all()[-1].data == "[DONE]"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(
            lambda _: s.post("/v1/chat/completions", BODY, headers=headers),
            range(6)))
    assert [t.status for t in together] == [200] * 6, \
        [t.body for t in together if t.status != 200]
    assert len(mock.seen("openai")) == 9
    assert s.psql("SELECT DISTINCT request_id FROM usage WHERE "
                  "tenant_id = '%s'" % tid) == [["trace-7"]]
    n, charged = usage_of(s, tid)
    assert n == 9
    assert charged == 9 * cost(40, 9)
    _exact(s, [tid], leased=mode != "holds")
    # The tenant's next call, with an id of its own, is charged as ever.
    r = chat(s, key)
    assert r.status == 200, r.body
    assert usage_of(s, tid) == (10, 10 * cost(40, 9))


def test_concurrent_requests_never_overspend(billed, mock):
    tid, funds, results = overspend_burst(billed, mock)
    ok = [r for r in results if r.status == 200]
    short = [r for r in results if r.status == 402]
    assert len(ok) + len(short) == 40
    assert 1 <= len(ok) <= 5
    assert len(mock.seen("openai")) == len(ok)
    balance = micro(billed, tid)
    assert balance >= 0
    assert micro(billed, tid, "credits_reserved") == 0
    calls, charged = usage_of(billed, tid)
    assert calls == len(ok)
    assert balance == funds - charged


@pytest.mark.parametrize("mode", MODES)
def test_two_instances_on_one_database_never_overspend(make_stack, mock,
                                                       make_keygated,
                                                       workdir, mode):
    """40 calls of a tenant funded for 5, sent to two keygated instances
    (each behind its own lighttpd) on the same database at once: at most
    5 reach the provider, the balance never goes below zero, and the
    ledger is exact; also with each host holding a lease of its own
    (and a journal of its own)."""
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false", workers=3,
               **credit_mode(mode, workdir))
    billed = make_stack(**cfg)
    # One deployment: the same secrets on both hosts.
    for k in ("hmac_secret", "jwt_secret", "master_keys"):
        cfg[k] = billed.kg.config[k]
    cfg.update(credit_mode(mode, workdir))
    other = make_keygated(billed.dbname, start=True, **cfg)
    web = ks.Lighttpd(workdir.subdir("web"), other.socket_path)
    try:
        est, _ = estimate()
        tid, key = tenant(billed, None)
        set_balance(billed, tid, 5 * est)
        mock.behave("openai", Complete(usage=(100, 100), pause=0.05))
        headers = dict(ks.auth(key), **{"X-OpenAI-Key": OPENAI_KEY})
        urls = [billed.url, web.url]
        with concurrent.futures.ThreadPoolExecutor(40) as ex:
            results = list(ex.map(lambda i: ks.request(
                "POST", urls[i % 2] + "/v1/chat/completions", BODY,
                headers), range(40)))
        ok = [i for i, r in enumerate(results) if r.status == 200]
        assert sorted(r.status for r in results) == \
            [200] * len(ok) + [402] * (40 - len(ok))
        assert 1 <= len(ok) <= 5, ok
        assert len(mock.seen("openai")) == len(ok)
        assert micro(billed, tid) >= 0
        # Leases go back to the balance once idle.
        ks.wait_until(lambda: micro(billed, tid, "credits_reserved") == 0,
                      20, what="nothing held")
        used = billed.psql("SELECT count(*), coalesce(sum(credits_charged), "
                           "0) FROM usage WHERE tenant_id = '%s'" % tid)[0]
        assert int(used[0]) == len(ok)
        assert micro(billed, tid) == 5 * est - int(used[1])
        _exact(billed, [tid])
    finally:
        web.close()


@pytest.mark.parametrize("failure", [Fail(500), Fail(400)])
def test_failed_call_costs_nothing(billed, mock, failure):
    mock.behave("openai", failure)
    try:
        tid, key = tenant(billed, 1)
        r = chat(billed, key)
        assert r.status >= 400
        assert micro(billed, tid) == 1000000
        assert micro(billed, tid, "credits_reserved") == 0
        assert billed.psql("SELECT count(*) FROM usage WHERE tenant_id = "
                           "'%s'" % tid) == [["0"]]
        est, _ = estimate()
        assert ledger(billed, tid) == [["mint", 1000000, 0],
                                       ["hold", 0, est],
                                       ["release", 0, -est]]
    finally:
        mock.behave("openai", Complete())


def test_pool_costs_one_plus_markup_times_byok(billed, mock):
    mock.behave("openai", Complete(usage=(400, 300)))
    mock.behave("openrouter", Complete(usage=(400, 300)))
    tid, key = tenant(billed, 5)
    byok = chat(billed, key)
    pool = chat(billed, key, inline=False)
    assert byok.status == 200 and pool.status == 200, pool.body
    assert pool.json["keygate"]["key_source"] == "pool"
    assert pool.json["keygate"]["pool_markup_applied"] == 0.25
    b = round(byok.json["keygate"]["credits_charged"] * 1e6)
    p = round(pool.json["keygate"]["credits_charged"] * 1e6)
    assert b == cost(400, 300) and p == cost(400, 300, 0.25)
    assert p == math.ceil(b * 1.25)
    assert micro(billed, tid) == 5000000 - b - p


def test_stream_is_charged_once_on_its_usage(billed, mock):
    mock.behave("openai", Complete(usage=(50, 20), pieces=3))
    tid, key = tenant(billed, 1)
    body = dict(BODY, stream=True)
    r = chat(billed, key, body)
    assert r.status == 200
    events = [l[6:] for l in r.body.decode().split("\n")
              if l.startswith("data: ")]
    final = ks.json.loads(events[-2])
    assert round(final["keygate"]["credits_charged"] * 1e6) == cost(50, 20)
    assert micro(billed, tid) == 1000000 - cost(50, 20)
    assert billed.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'"
                       % tid) == [["1"]]


def test_usage_rows_agree_with_the_account_and_top_ups(billed, mock):
    mock.behave("openai", Complete(usage=(10, 10)))
    tid, key = tenant(billed, 3)
    billed.post("/v1/tenants/%s/credits" % tid, {"amount": 2},
                headers=ks.auth())
    for _ in range(3):
        assert chat(billed, key).status == 200
    added = billed.psql("SELECT sum((details->>'amount_micro')::bigint) "
                        "FROM audit_log WHERE action = 'credits.add' AND "
                        "target_id = '%s'" % tid)[0][0]
    spent = billed.psql("SELECT sum(credits_charged) FROM usage WHERE "
                        "tenant_id = '%s'" % tid)[0][0]
    account = billed.get("/v1/account", headers=ks.auth(key)).json
    assert round(account["credits_balance"] * 1e6) == \
        int(added) - int(spent)


def test_usage_listing_with_totals_and_pages(billed, mock):
    mock.behave("openai", Complete(usage=(20, 5)))
    tid, key = tenant(billed, 2)
    ids = [chat(billed, key).headers["x-request-id"] for _ in range(3)]
    h = ks.auth(key)
    r = billed.get("/v1/account/usage?limit=2", headers=h)
    assert r.status == 200, r.body
    assert [u["request_id"] for u in r.json["data"]] == ids[::-1][:2]
    assert r.json["totals"]["requests"] == 3
    assert r.json["totals"]["prompt_tokens"] == 60
    assert r.json["totals"]["completion_tokens"] == 15
    assert round(r.json["totals"]["credits_charged"] * 1e6) == \
        3 * cost(20, 5)
    r2 = billed.get("/v1/account/usage?limit=2&cursor=%s"
                    % r.json["next_cursor"], headers=h)
    assert [u["request_id"] for u in r2.json["data"]] == [ids[0]]
    assert r2.json["next_cursor"] is None
    r3 = billed.get("/v1/account/usage?from=2999-01-01T00:00:00Z",
                    headers=h)
    assert r3.json["data"] == [] and r3.json["totals"]["requests"] == 0
    ks.assert_error(billed.get("/v1/account/usage?from=soon", headers=h),
                    400)


def test_prices_are_managed_with_keygatectl(billed, mock, tmp_path):
    kg = billed.kg
    p = kg.ctl("prices", "set", "gpt-4o-mini*", "1", "2")
    assert p.returncode == 0, p.stderr
    listed = kg.ctl("prices", "list").stdout
    assert "gpt-4o-mini*" in listed and "1.000000" in listed
    mock.behave("openai", Complete(usage=(1000, 1000)))
    tid, key = tenant(billed, 1)
    r = chat(billed, key)
    assert round(r.json["keygate"]["credits_charged"] * 1e6) == \
        math.ceil((1000 * 1000000 + 1000 * 2000000) / 1e6)
    bad = tmp_path / "prices.txt"
    bad.write_text("# a price list\nclaude-* 3 15\nbroken line\n")
    os_before = billed.psql("SELECT count(*) FROM prices")
    p = kg.ctl("prices", "import", str(bad))
    assert p.returncode == 2
    assert "prices.txt:3" in p.stderr and "nothing was changed" in p.stderr
    assert billed.psql("SELECT count(*) FROM prices") == os_before
    good = tmp_path / "good.txt"
    good.write_text("mistral-* 0.5 1.5\n\nllama-* 0.1 0.2  # cheap\n")
    p = kg.ctl("prices", "import", str(good))
    assert p.returncode == 0 and "imported 2 prices" in p.stdout
    assert billed.psql("SELECT input_per_mtok, output_per_mtok FROM prices "
                       "WHERE pattern = 'llama-*'") == [["100000",
                                                         "200000"]]
    kg.ctl("prices", "set", "gpt-4o-mini*", "0.15", "0.6")


@pytest.fixture
def impatient(make_stack, mock):
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false",
               upstream_total_timeout=2, upstream_idle_timeout=2, workers=2)
    return make_stack(**cfg)


@pytest.mark.parametrize("failure", ["hang", "drop"])
def test_timeout_or_disconnect_before_output_costs_nothing(impatient, mock,
                                                           failure):
    from mock_llm import Drop, Hang
    mock.behave("openai", Hang(10) if failure == "hang" else Drop())
    tid, key = tenant(impatient, 1)
    r = chat(impatient, key)
    assert r.status in (502, 504)
    assert micro(impatient, tid) == 1000000
    assert micro(impatient, tid, "credits_reserved") == 0
    assert impatient.psql("SELECT count(*) FROM usage WHERE tenant_id = "
                          "'%s'" % tid) == [["0"]]


def test_stream_cut_after_some_chunks_is_charged_once(billed, mock):
    mock.behave("openai", Complete(content="a" * 400, pieces=8,
                                   stop_after=4))
    tid, key = tenant(billed, 1)
    r = chat(billed, key, dict(BODY, stream=True))
    assert r.status == 200
    events = [l[6:] for l in r.body.decode().split("\n")
              if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    final = ks.json.loads(events[-2])
    charged = round(final["keygate"]["credits_charged"] * 1e6)
    assert charged > 0
    rows = billed.psql("SELECT count(*), sum(credits_charged), "
                       "min(status) FROM usage WHERE tenant_id = '%s'" % tid)
    assert rows == [["1", str(charged), "partial"]]
    assert micro(billed, tid) == 1000000 - charged
    assert micro(billed, tid, "credits_reserved") == 0


def test_a_stream_that_goes_on_after_its_usage_is_charged_once(billed, mock):
    """A hostile provider sends its usage, then chunk after chunk without
    an end: the call is charged once, on that usage, and the stream is
    closed properly after a bounded number of them."""
    from mock_llm import Stream
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
             "model": "gpt-4o-mini"}
    usage = dict(chunk, choices=[], usage={"prompt_tokens": 1000,
                                           "completion_tokens": 2000,
                                           "total_tokens": 3000})
    more = [dict(chunk, choices=[{"index": 0, "delta": {"content": "x"}}])
            for _ in range(300)]
    mock.behave("openai", Stream(
        [dict(chunk, choices=[{"index": 0, "delta": {"role": "assistant",
                                                     "content": "hi"}}]),
         dict(chunk, choices=[{"index": 0, "delta": {},
                               "finish_reason": "stop"}]), usage] + more +
        ["[DONE]"]))
    tid, key = tenant(billed, 1)
    r = chat(billed, key, dict(BODY, stream=True,
                               stream_options={"include_usage": True}))
    assert r.status == 200
    events = [l[6:] for l in r.body.decode().split("\n")
              if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert len(events) < 300, len(events)
    kept = [ks.json.loads(e) for e in events[:-1]]
    told = [e for e in kept if e.get("usage")]
    assert len(told) == 1 and told[0]["usage"]["completion_tokens"] == 2000
    charged = round(told[0]["keygate"]["credits_charged"] * 1e6)
    # The usage told, at the prices per million tokens (micro-credits).
    assert charged == (1000 * IN + 2000 * OUT) // 1000000
    rows = billed.psql("SELECT count(*), sum(credits_charged), "
                       "min(status) FROM usage WHERE tenant_id = '%s'" % tid)
    assert rows == [["1", str(charged), "ok"]]
    assert micro(billed, tid) == 1000000 - charged
    assert micro(billed, tid, "credits_reserved") == 0


def test_client_leaving_mid_stream_is_charged_once(billed, mock):
    import socket
    import time
    import urllib.parse
    mock.behave("openai", Complete(content="b" * 400, pieces=10, pause=0.3))
    tid, key = tenant(billed, 1)
    body = ks.json.dumps(dict(BODY, stream=True)).encode()
    u = urllib.parse.urlsplit(billed.url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: Bearer " + key.encode() + b"\r\n"
              b"X-OpenAI-Key: " + OPENAI_KEY.encode() + b"\r\n"
              b"Content-Type: application/json\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(4096)
    s.close()
    # Exactly one usage row, for what was produced, once keygate notices.
    ks.wait_until(lambda: billed.psql(
        "SELECT count(*) FROM usage WHERE tenant_id = '%s'" % tid) ==
        [["1"]], 10, what="the usage row of the abandoned stream")
    time.sleep(0.5)
    rows = billed.psql("SELECT count(*), sum(credits_charged), min(status) "
                       "FROM usage WHERE tenant_id = '%s'" % tid)
    assert rows[0][0] == "1" and rows[0][2] == "partial"
    assert micro(billed, tid) == 1000000 - int(rows[0][1])
    assert micro(billed, tid, "credits_reserved") == 0


def test_402_message_reads_like_the_figures(billed, mock):
    """A balance of 0.01 against a hold of more: both in the message."""
    tid, key = tenant(billed, 0.01)
    body = dict(BODY, max_tokens=100000)
    est, _ = estimate(body)
    r = chat(billed, key, body)
    err = ks.assert_error(r, 402, "insufficient_credits")
    assert err["message"] == "Insufficient credits. Required: %s, " \
        "Available: 0.01" % decimal(est), err
    assert err["available_credits"] == 0.01
    assert mock.seen("openai") == []


def stream(s, key, body):
    headers = dict(ks.auth(key), **{"X-OpenAI-Key": OPENAI_KEY})
    r = SSEReader(s.url + "/v1/chat/completions", dict(body, stream=True),
                  headers)
    assert r.status == 200, r.body
    events = r.read_all()
    assert events[-1].data == "[DONE]", events[-3:]
    return [e.json for e in events[:-1]], r.headers["x-request-id"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_shows_its_charge_on_the_finish_chunk(billed, mock,
                                                       include_usage):
    """keygate asks the provider for usage either way and holds the
    finish_reason chunk back until it comes, so that chunk says what the
    call cost; the usage chunk reaches only a client that asked for it."""
    mock.behave("openai", Complete(usage=(40, 9), pieces=3))
    tid, key = tenant(billed, 1)
    body = dict(BODY)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    chunks, request_id = stream(billed, key, body)
    assert mock.only("openai").json["stream_options"] == {
        "include_usage": True}
    chunks, kg = ks.stream_chunks(chunks, include_usage)
    charged = cost(40, 9)
    assert round(kg["credits_charged"] * 1e6) == charged
    assert kg["request_id"] == request_id
    assert micro(billed, tid) == 1000000 - charged
    assert billed.psql("SELECT prompt_tokens, completion_tokens, "
                       "credits_charged FROM usage WHERE tenant_id = '%s'"
                       % tid) == [["40", "9", str(charged)]]
    if include_usage:
        assert chunks[-1]["usage"] == {"prompt_tokens": 40,
                                       "completion_tokens": 9,
                                       "total_tokens": 49}
    else:
        assert not any(c.get("usage") for c in chunks)


def test_a_stream_without_usage_upstream_gets_one_made(billed, mock):
    """A server that sends no usage: the call is billed on the estimate,
    and a client that asked for the usage chunk still gets one."""
    mock.behave("openai", Complete(usage=None, content="abcdefgh"))
    tid, key = tenant(billed, 1)
    chunks, _ = stream(billed, key, dict(
        BODY, stream_options={"include_usage": True}))
    chunks, kg = ks.stream_chunks(chunks, usage=True)
    rows = billed.psql("SELECT prompt_tokens, completion_tokens, "
                       "credits_charged, status FROM usage WHERE "
                       "tenant_id = '%s'" % tid)
    assert len(rows) == 1 and rows[0][3] == "partial", rows
    u = chunks[-1]["usage"]
    assert [str(u["prompt_tokens"]), str(u["completion_tokens"])] == \
        rows[0][:2]
    assert round(kg["credits_charged"] * 1e6) == int(rows[0][2])


def test_a_stream_cut_short_bills_once_and_says_so(billed, mock):
    """The provider goes away mid-stream: an error event carries the
    keygate member, no chunk has empty choices, one usage row."""
    mock.behave("openai", Complete(stop_after=2, pieces=6))
    tid, key = tenant(billed, 1)
    events, _ = stream(billed, key, BODY)
    assert "error" in events[-1] and "keygate" in events[-1], events[-1]
    assert all(e["choices"] for e in events[:-1]), events
    assert not any("keygate" in e for e in events[:-1])
    rows = billed.psql("SELECT credits_charged FROM usage WHERE "
                       "tenant_id = '%s'" % tid)
    assert len(rows) == 1
    assert round(events[-1]["keygate"]["credits_charged"] * 1e6) == \
        int(rows[0][0])


def test_a_stream_of_several_choices_has_keygate_on_the_last_finish(
        billed, mock):
    """Every choice keeps its finish_reason chunk; the keygate member
    rides on the last of them, once the call is settled."""
    mock.behave("openai", Complete(usage=(40, 9), pieces=2))
    tid, key = tenant(billed, 1)
    chunks, _ = stream(billed, key, dict(BODY, n=3))
    chunks, kg = ks.stream_chunks(chunks)
    finishes = [(ch["index"], ch["finish_reason"]) for c in chunks
                for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == [(0, "stop"), (1, "stop"), (2, "stop")]
    assert chunks == [c for c in mock.only("openai").chunks()
                      if c["choices"]]
    assert round(kg["credits_charged"] * 1e6) == cost(40, 9)


# ---------------------------------------------------------------------------
# Who may create money: the root tenant mints, any other tenant transfers

def admin_of(s, parent_key, name, parent=None):
    """A new tenant (below parent, or below the caller's) and a key of its
    own with every scope."""
    body = {"name": name}
    if parent:
        body["parent_id"] = parent
    r = s.post("/v1/tenants", body, headers=ks.auth(parent_key))
    assert r.status == 201, r.body
    tid = r.json["id"]
    r = s.post("/v1/api_keys", {"tenant_id": tid, "name": name + "-admin",
                                "scopes": ["*"]}, headers=ks.auth(parent_key))
    assert r.status == 201, r.body
    return tid, r.json["key"]


def balances(s, *tids):
    rows = dict(s.psql("SELECT id::text, credits_balance::text FROM tenants "
                       "WHERE id = ANY('{%s}'::uuid[])" % ",".join(tids)))
    return [int(rows[t]) for t in tids]


def test_a_tenant_other_than_the_root_cannot_mint(billed):
    child, child_key = admin_of(billed, ks.DEV_KEY, "minter")
    grand, _ = admin_of(billed, child_key, "minted", parent=child)
    before = balances(billed, child, grand)
    audits = billed.psql("SELECT count(*) FROM audit_log")[0][0]
    r = billed.post("/v1/tenants/%s/credits" % child,
                    {"amount": 1000000000, "reason": "free money"},
                    headers=ks.auth(child_key))
    err = ks.assert_error(r, 403, "insufficient_permissions")
    assert "root tenant" in err["message"], err
    # Crediting a child is a transfer, and the giver has nothing to give.
    r = billed.post("/v1/tenants/%s/credits" % grand, {"amount": 5},
                    headers=ks.auth(child_key))
    err = ks.assert_error(r, 402, "insufficient_credits")
    assert err["message"] == "Insufficient credits. Required: 5, " \
        "Available: 0", err
    assert err["required_credits"] == 5 and err["available_credits"] == 0
    assert balances(billed, child, grand) == before
    assert billed.psql("SELECT count(*) FROM audit_log")[0][0] == audits


def test_a_transfer_moves_credits_down_in_one_audited_step(billed):
    child, child_key = admin_of(billed, ks.DEV_KEY, "giver")
    grand, _ = admin_of(billed, child_key, "taker", parent=child)
    r = billed.post("/v1/tenants/%s/credits" % child, {"amount": 10},
                    headers=ks.auth())
    assert r.status == 200, r.body
    assert r.json["from_tenant_id"] is None
    r = billed.post("/v1/tenants/%s/credits" % grand,
                    {"amount": 2.5, "reason": "for the team"},
                    headers=ks.auth(child_key))
    assert r.status == 200, r.body
    assert r.json["tenant_id"] == grand
    assert r.json["from_tenant_id"] == child
    assert r.json["added"] == 2.5 and r.json["credits_balance"] == 2.5
    assert balances(billed, child, grand) == [7500000, 2500000]
    rows = billed.psql("SELECT action, tenant_id::text, "
                       "details->>'from_tenant_id', details->>'amount_micro' "
                       "FROM audit_log WHERE action LIKE 'credits.%%' AND "
                       "target_id = '%s'" % grand)
    assert rows == [["credits.transfer", grand, child, "2500000"]], rows
    # Both sides of the transfer are ledger rows, naming each other.
    assert ledger(billed, child) == [["mint", 10000000, 0],
                                     ["transfer_out", -2500000, 0]]
    assert ledger(billed, grand) == [["transfer_in", 2500000, 0]]
    assert billed.psql("SELECT counterpart::text FROM credit_ledger WHERE "
                       "tenant_id IN ('%s', '%s') AND kind LIKE 'transfer%%' "
                       "ORDER BY id" % (child, grand)) == [[grand], [child]]
    # More than the giver has left: 402, and nothing moves.
    r = billed.post("/v1/tenants/%s/credits" % grand, {"amount": 7.6},
                    headers=ks.auth(child_key))
    ks.assert_error(r, 402, "insufficient_credits")
    assert balances(billed, child, grand) == [7500000, 2500000]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("stream", [1, "yes", "true", {}])
def test_stream_must_be_a_boolean(billed, mock, route, stream):
    """A provider would stream on 1 or "yes" while keygate waits for one
    reply: refused before anything is held or sent."""
    tid, key = tenant(billed, 5)
    body = dict(BODY, stream=stream)
    if route == "/v1/messages":
        body = {"model": "gpt-4o-mini", "max_tokens": 100, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}
    r = billed.post(route, body, headers=dict(
        ks.auth(key), **{"X-OpenAI-Key": OPENAI_KEY}))
    err = ks.assert_error(r, 422, "validation_error")
    assert [d["field"] for d in err["details"]] == ["stream"], err
    assert mock.seen() == []
    assert billed.psql("SELECT credits_balance, credits_reserved FROM "
                       "tenants WHERE id = '%s'" % tid) == [["5000000", "0"]]


def test_amounts_are_written_as_exact_decimals(billed):
    """1.1 credits is 1.1 in every answer (a double would print
    1.1000000000000001), and a tenant object counts in credits too."""
    tid, key = tenant(billed, 1.1)
    r = billed.get("/v1/account", headers=ks.auth(key))
    assert b'"credits_balance":1.1,' in r.body, r.body
    r = billed.get("/v1/tenants/%s" % tid, headers=ks.auth())
    assert r.status == 200, r.body
    assert b'"credits_balance":1.1,' in r.body, r.body
    assert r.json["credits_reserved"] == 0
    r = billed.post("/v1/tenants/%s/credits" % tid, {"amount": 0.000002},
                    headers=ks.auth())
    assert b'"added":0.000002,' in r.body, r.body
    assert b'"credits_balance":1.100002' in r.body, r.body


ABSURD = pytest.mark.parametrize(
    "usage", [(-5, -7), (40, -1), (10**15, 9), (40, 2**63 - 1)],
    ids=["negative", "negative-output", "huge-prompt", "huge-output"])


@ABSURD
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_absurd_provider_usage_still_settles_with_one_row(billed, mock, usage,
                                                          stream):
    """Whatever counts the provider claims, the hold is settled, exactly
    one usage row is written, and no more than the balance is taken;
    streamed, the settlement waits for the stream's end in the worker's
    provider loop, and the keygate block says what it charged."""
    mock.behave("openai", Complete(usage=usage))
    tid, key = tenant(billed, 1)
    if stream:
        r = chat(billed, key, dict(BODY, stream=True,
                                   stream_options={"include_usage": True}))
        assert r.status == 200, r.body
        events = [l[6:] for l in r.body.decode().split("\n")
                  if l.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]
        block = [ks.json.loads(e)["keygate"] for e in events[:-1]
                 if "keygate" in ks.json.loads(e)]
        assert len(block) >= 1
        charged = round(block[-1]["credits_charged"] * 1e6)
    else:
        r = chat(billed, key)
        assert r.status == 200, r.body
        charged = round(r.json["keygate"]["credits_charged"] * 1e6)
    assert 0 <= charged <= 1000000
    assert micro(billed, tid) == 1000000 - charged
    assert micro(billed, tid, "credits_reserved") == 0
    rows = billed.psql("SELECT prompt_tokens, completion_tokens, "
                       "credits_charged FROM usage WHERE tenant_id = '%s'"
                       % tid)
    assert len(rows) == 1, rows
    prompt, completion, row_charged = (int(x) for x in rows[0])
    assert row_charged == charged
    assert 0 <= prompt <= 2**31 - 1 and 0 <= completion <= 2**31 - 1
    assert billed.psql("SELECT count(*) FROM credit_reservations WHERE "
                       "tenant_id = '%s'" % tid) == [["0"]]
    # What could not be charged is not silently gone: the row says it.
    forgiven = int(billed.psql("SELECT credits_forgiven FROM usage WHERE "
                               "tenant_id = '%s'" % tid)[0][0])
    if max(usage) > 10**9:
        assert charged == 1000000 and forgiven > 0, (charged, forgiven)
    else:
        assert forgiven == 0


@pytest.mark.parametrize("model,max_tokens", [
    ("claude-3-5-haiku-latest", 2**63 - 1), ("gpt-4o", 10**18),
    ("gpt-4o-mini", 2**62)])
def test_an_absurd_max_tokens_is_402_not_admitted(billed, mock, model,
                                                  max_tokens):
    tid, key = tenant(billed, 0.01)
    body = dict(BODY, model=model, max_tokens=max_tokens)
    r = billed.post("/v1/chat/completions", body, headers=dict(
        ks.auth(key), **{"X-OpenAI-Key": OPENAI_KEY,
                         "X-Anthropic-Key": "sk-ant-api03-" + "a" * 40}))
    err = ks.assert_error(r, 402, "insufficient_credits")
    assert err["available_credits"] == 0.01, err
    assert err["required_credits"] > 0.01, err
    assert mock.seen() == []
    assert micro(billed, tid) == 10000
    assert micro(billed, tid, "credits_reserved") == 0


# ---------------------------------------------------------------------------
# Holds that cannot leak

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_hold_of_a_killed_worker_is_released_within_seconds(billed, mock,
                                                              stream):
    """kill -9 of the worker holding a call: a surviving worker releases
    its hold within seconds, so the tenant can spend its balance again."""
    mock.behave("openai", Hang(60) if not stream else
                Complete(pause=5, pieces=12))
    tid, key = tenant(billed, 1)
    body = dict(BODY, stream=stream)
    done = []
    t = threading.Thread(target=lambda: done.append(
        _quiet(lambda: chat(billed, key, body))), daemon=True)
    t.start()
    ks.wait_until(lambda: micro(billed, tid, "credits_reserved") > 0, 30,
                  what="the call's hold")
    owner = billed.psql("SELECT owner_pid FROM credit_reservations WHERE "
                        "tenant_id = '%s'" % tid)
    assert len(owner) == 1, owner
    pid = int(owner[0][0])
    assert pid in billed.kg.worker_pids(), (pid, billed.kg.worker_pids())
    os.kill(pid, signal.SIGKILL)
    ks.wait_until(lambda: micro(billed, tid, "credits_reserved") == 0, 20,
                  what="the dead worker's hold to be released")
    assert billed.psql("SELECT count(*) FROM credit_reservations WHERE "
                       "tenant_id = '%s'" % tid) == [["0"]]
    assert micro(billed, tid) == 1000000
    out = billed.kg.ctl("ledger-verify")
    assert out.returncode == 0, (out.stdout, out.stderr)
    # The balance is the tenant's to spend again.
    mock.behave("openai", Complete(usage=(40, 9)))
    r = chat(billed, key)
    assert r.status == 200, r.body
    assert micro(billed, tid) == 1000000 - cost(40, 9)
    t.join(30)


def test_ledger_verify_names_the_tenant_whose_credits_do_not_add_up(billed):
    tid, _ = tenant(billed, 1)
    other, _ = tenant(billed, 1)
    out = billed.kg.ctl("ledger-verify")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert out.stdout == "ledger: every tenant's credits hold\n"
    third, _ = tenant(billed, 1)
    # A reserve no hold explains, a hold past its deadline (with its
    # ledger row), and a balance changed without a ledger row.
    billed.psql("UPDATE tenants SET credits_reserved = 5 WHERE id = '%s'"
                % tid)
    billed.psql("UPDATE tenants SET credits_reserved = 7 WHERE id = '%s'; "
                "WITH r AS (INSERT INTO credit_reservations (tenant_id, "
                "request_id, amount, deadline) VALUES ('%s', 'late', 7, "
                "now() - interval '1 minute') RETURNING id) "
                "INSERT INTO credit_ledger (tenant_id, kind, held, "
                "reservation_id) SELECT '%s', 'hold', 7, id FROM r"
                % (other, other, other))
    billed.psql("UPDATE tenants SET credits_balance = credits_balance + 3 "
                "WHERE id = '%s'" % third)
    out = billed.kg.ctl("ledger-verify")
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = sorted(out.stdout.splitlines())
    assert lines == sorted([
        "tenant %s: reserve 5 but holds of 0; reserve 5 but ledger holds "
        "of 0 (micro-credits)" % tid,
        "tenant %s: 1 hold(s) past their deadline (micro-credits)" % other,
        "tenant %s: balance 1000003 but ledger rows of 1000000 "
        "(micro-credits)" % third,
    ]), out.stdout
    assert "3 findings" in out.stderr
    # A running keygated lets the late hold go within seconds, and says
    # so in the ledger.
    ks.wait_until(lambda: micro(billed, other, "credits_reserved") == 0, 20,
                  what="the late hold to be released")
    assert ledger(billed, other) == [["mint", 1000000, 0], ["hold", 0, 7],
                                     ["expiry", 0, -7]]
    billed.psql("UPDATE tenants SET credits_reserved = 0 WHERE id = '%s'; "
                "UPDATE tenants SET credits_balance = credits_balance - 3 "
                "WHERE id = '%s'" % (tid, third))
    out = billed.kg.ctl("ledger-verify")
    assert out.returncode == 0, (out.stdout, out.stderr)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_postgresql_restarted_during_a_call_charges_it_once(
        make_stack, own_pg, mock, stream):
    """The worker's connection dies while the provider answers: the
    settlement is sent again once PostgreSQL is back, the answer's charge
    is the one recorded, with one usage row and no hold left."""
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false", workers=2)
    s = make_stack(cluster=own_pg, **cfg)
    tid, key = tenant(s, 1)
    mock.behave("openai", Complete(wait=0 if stream else 4, pause=1 if
                                   stream else 0, pieces=4, usage=(40, 9)))
    out = []
    t = threading.Thread(target=lambda: out.append(
        chat(s, key, dict(BODY, stream=stream))), daemon=True)
    t.start()
    ks.wait_until(lambda: mock.seen(), 20, what="the provider call")
    own_pg.restart()
    t.join(60)
    assert out, "no answer"
    r = out[0]
    assert r.status == 200, r.body
    charged = cost(40, 9)
    if stream:
        chunks = [ks.json.loads(l[6:]) for l in r.body.decode().splitlines()
                  if l.startswith("data: {")]
        _, kg = ks.stream_chunks(chunks)
    else:
        kg = r.json["keygate"]
    assert round(kg["credits_charged"] * 1e6) == charged, kg
    assert micro(s, tid) == 1000000 - charged
    assert micro(s, tid, "credits_reserved") == 0
    assert s.psql("SELECT count(*), sum(credits_charged) FROM usage WHERE "
                  "tenant_id = '%s'" % tid) == [["1", str(charged)]]
    done = s.kg.ctl("ledger-verify")
    assert done.returncode == 0, (done.stdout, done.stderr)


ANTHROPIC_KEY = "sk-ant-api03-" + "c" * 40
GOOGLE_KEY = "AIza" + "c" * 35
INLINE = {"openai": ("X-OpenAI-Key", OPENAI_KEY, "gpt-4o-mini"),
          "anthropic": ("X-Anthropic-Key", ANTHROPIC_KEY,
                        "claude-3-5-haiku-latest"),
          "google": ("X-Google-Key", GOOGLE_KEY, "gemini-2.0-flash"),
          "openrouter": ("X-OpenRouter-Key", POOL_KEY,
                         "meta-llama/llama-3.1-8b-instruct")}
# Where each provider's request says how many tokens it may produce.
LIMIT = {"openai": lambda b: b.get("max_completion_tokens"),
         "anthropic": lambda b: b.get("max_tokens"),
         "google": lambda b: b.get("generationConfig", {}).get(
             "maxOutputTokens"),
         "openrouter": lambda b: b.get("max_tokens")}


def call_on(s, key, provider, body, stream=False):
    header, secret, model = INLINE[provider]
    headers = dict(ks.auth(key), **{header: secret})
    body = dict(body, model=model)
    if not stream:
        return s.post("/v1/chat/completions", body, headers=headers)
    r = SSEReader(s.url + "/v1/chat/completions", dict(body, stream=True),
                  headers)
    assert r.status == 200, r.body
    return [e for e in r.read_all()]


@pytest.mark.parametrize("provider", sorted(INLINE))
def test_the_tokens_held_are_the_calls_limit_upstream(billed, mock,
                                                      provider):
    """A request that sets no limit is held for default_max_tokens: the
    provider is told that limit, so it cannot produce more than was held;
    a request's own limit goes as it came."""
    mock.accept(provider, INLINE[provider][1])
    tid, key = tenant(billed, 1)
    body = {"messages": BODY["messages"]}
    assert call_on(billed, key, provider, body).status == 200
    assert LIMIT[provider](mock.only(provider).json) == 4096
    mock.reset()
    mock.accept(provider, INLINE[provider][1])
    assert call_on(billed, key, provider,
                   dict(body, max_tokens=77)).status == 200
    sent = mock.only(provider).json
    assert LIMIT[provider](sent) in (None, 77)
    if provider == "openai":
        assert sent["max_tokens"] == 77


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_a_stream_cut_short_is_billed_for_the_text_it_produced(
        billed, mock, provider):
    """The provider goes away mid-stream: the usage row counts the text
    that reached the client (about four bytes a token), not the bytes of
    the events around it, and not zero when the provider had told no
    output yet."""
    mock.accept(provider, INLINE[provider][1])
    mock.behave(provider, Complete(content="a" * 400, pieces=8,
                                   stop_after=5))
    tid, key = tenant(billed, 1)
    events = call_on(billed, key, provider, BODY, stream=True)
    text = "".join(c["delta"].get("content") or "" for e in events
                   if e.data != "[DONE]" for c in e.json.get("choices", []))
    assert 0 < len(text) < 400, text
    assert "error" in events[-2].json, events[-2].data
    rows = billed.psql("SELECT completion_tokens, credits_charged, status "
                       "FROM usage WHERE tenant_id = '%s'" % tid)
    assert rows == [[str(math.ceil(len(text) / 4)), rows[0][1],
                     "partial"]], (rows, len(text))
    assert micro(billed, tid) == 1000000 - int(rows[0][1])
    assert micro(billed, tid, "credits_reserved") == 0


def test_a_pool_call_is_priced_by_its_model_never_by_the_catch_all(
        billed, mock):
    """The operator's pool serves a model only at a price of its own: a
    name only the catch-all '*' prices is refused before anything is held
    or called; once the operator prices it, calls are charged by it."""
    tid, key = tenant(billed, 1)
    body = dict(BODY, model="mistralai/mistral-7b-instruct")
    r = chat(billed, key, body, inline=False)
    assert r.status == 400, r.body
    assert r.json["error"]["code"] == "model_not_available"
    assert "mistralai/mistral-7b-instruct" in r.json["error"]["message"]
    assert mock.seen() == []
    assert micro(billed, tid) == 1000000
    assert micro(billed, tid, "credits_reserved") == 0
    billed.psql("INSERT INTO prices (pattern, input_per_mtok, "
                "output_per_mtok) VALUES ('mistralai/mistral-7b-instruct', 15000000, "
                "60000000)")
    try:
        mock.behave("openrouter", Complete(usage=(10, 5)))
        r = chat(billed, key, body, inline=False)
        assert r.status == 200, r.body
        charged = math.ceil((10 * 15000000 + 5 * 60000000) * 1.25 / 1e6)
        assert round(r.json["keygate"]["credits_charged"] * 1e6) == charged
        assert micro(billed, tid) == 1000000 - charged
        # A native name the pool maps to OpenRouter keeps its own price.
        r = chat(billed, key, dict(BODY, model="gpt-4o-mini"), inline=False)
        assert r.status == 200, r.body
        assert mock.seen("openrouter")[-1].json["model"] == \
            "openai/gpt-4o-mini"
    finally:
        billed.psql("DELETE FROM prices WHERE pattern = 'mistralai/mistral-7b-instruct'")


@pytest.mark.parametrize("mode", MODES)
def test_random_movements_keep_every_balance_the_sum_of_its_rows(
        make_stack, mock, workdir, mode):
    """A property over random sequences of top-ups, transfers up and down
    the tree, calls that succeed, fail, are cut short or report absurd
    usage, and a worker killed with a call in hand: after every step the
    ledger is exact (KEYGATE_E2E_SEED replays a sequence).  With credits
    leased per host too, where the killed call's hold is in the lease."""
    import random
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false",
               pool_openrouter_key=POOL_KEY, pool_markup="0.25", workers=3,
               **credit_mode(mode, workdir))
    leased = mode != "holds"
    billed = make_stack(**cfg)
    seed = int(os.environ.get("KEYGATE_E2E_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    parent, parent_key = admin_of(billed, ks.DEV_KEY, "prop-parent")
    child, child_key = admin_of(billed, parent_key, "prop-child",
                                parent=parent)
    tids, keys = [parent, child], {parent: parent_key, child: child_key}
    behaviours = [
        lambda: Complete(usage=(rnd.randrange(1, 500), rnd.randrange(0, 300))),
        lambda: Complete(usage=(10**18, -5)),
        lambda: Complete(content="c" * 300, pieces=6, stop_after=3),
        lambda: Fail(rnd.choice([400, 429, 500])),
    ]
    steps = []
    for i in range(30):
        what = rnd.choice(["mint", "transfer", "call", "call", "call",
                           "stream"] + (["crash"] if i == 15 else []))
        tid = rnd.choice(tids)
        steps.append((what, tid == child))
        if what == "mint":
            r = billed.post("/v1/tenants/%s/credits" % tid, {
                "amount": rnd.randrange(1, 3000000) / 1e6},
                headers=ks.auth())
            assert r.status == 200, r.body
        elif what == "transfer":
            r = billed.post("/v1/tenants/%s/credits" % child, {
                "amount": rnd.randrange(1, 500000) / 1e6},
                headers=ks.auth(parent_key))
            assert r.status in (200, 402), r.body
        elif what in ("call", "stream"):
            mock.behave("openai", rnd.choice(behaviours)())
            r = chat(billed, keys[tid], dict(BODY, stream=what == "stream"))
            assert r.status in (200, 400, 402, 429, 502), r.body
        else:
            r = billed.post("/v1/tenants/%s/credits" % tid, {"amount": 1},
                            headers=ks.auth())
            assert r.status == 200, r.body
            mock.behave("openai", Hang(60))
            seen = len(mock.seen())
            t = threading.Thread(target=lambda: _quiet(
                lambda: chat(billed, keys[tid])), daemon=True)
            t.start()
            if leased:
                # The hold is in the lease, in memory: every worker goes.
                mock.wait_for(seen + 1, 30)
                for pid in billed.kg.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                billed.kg.wait_workers(timeout=20)
            else:
                held = ks.wait_until(lambda: billed.psql(
                    "SELECT owner_pid FROM credit_reservations WHERE "
                    "tenant_id = '%s'" % tid), 30, what="the call's hold")
                os.kill(int(held[0][0]), signal.SIGKILL)
            ks.wait_until(lambda: micro(billed, tid, "credits_reserved") ==
                          0, 30, what="the dead worker's hold to go")
        try:
            _exact(billed, tids, leased)
        except AssertionError as e:
            raise AssertionError("seed %d, after %s: %s" % (seed, steps, e))
    if "hold" not in {k for t in tids for k, _, _ in ledger(billed, t)}:
        # A sequence that never afforded a call (seed 447232291): one more
        # step that does, so that a hold is always among what was checked.
        steps.append(("funded call", False))
        r = billed.post("/v1/tenants/%s/credits" % parent, {"amount": 1},
                        headers=ks.auth())
        assert r.status == 200, r.body
        mock.behave("openai", Complete(usage=(9, 4)))
        r = chat(billed, keys[parent], BODY)
        assert r.status == 200, r.body
        try:
            _exact(billed, tids, leased)
        except AssertionError as e:
            raise AssertionError("seed %d, after %s: %s" % (seed, steps, e))
    kinds = {k for t in tids for k, _, _ in ledger(billed, t)}
    assert {"mint", "hold"} <= kinds, (seed, kinds)


# ---------------------------------------------------------------------------
# Holds and settlements sent together

def _burst(s, key, n, body=BODY):
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda _: chat(s, key, body), range(n)))


def _held_burst(s, mock, key, n, answered):
    """n calls at once, their answers held by the mock until `answered`
    of them reached it, then let go together.  Returns the responses."""
    out = []
    mock.hold("openai")
    t = threading.Thread(target=lambda: out.extend(_burst(s, key, n)),
                         daemon=True)
    t.start()
    try:
        ks.wait_until(lambda: len(mock.seen("openai")) >= answered, 30,
                      what="%d provider calls" % answered)
    finally:
        mock.release("openai")
    t.join(60)
    assert len(out) == n, "no answer"
    return out


def _together(s, tid, kind):
    """How many of the tenant's ledger rows of `kind` there are, and in
    how many transactions they were written (now() is a transaction's)."""
    return tuple(int(v) for v in s.psql(
        "SELECT count(*), count(DISTINCT created_at) FROM credit_ledger "
        "WHERE tenant_id = '%s' AND kind = '%s'" % (tid, kind))[0])


def _funded_burst(s, mock, n, funded):
    """n calls at once by a new tenant funded for exactly `funded`
    estimates, the provider answering them together: `funded` are
    answered, the rest refused with 402, and only the answered reach the
    provider.  Returns the tenant, the estimate and the responses."""
    est, _ = estimate()
    tid, key = tenant(s, None)
    set_balance(s, tid, funded * est)
    mock.behave("openai", Complete(usage=(100, 100)))
    results = _held_burst(s, mock, key, n, funded)
    assert sorted(r.status for r in results) == \
        [200] * funded + [402] * (n - funded)
    assert len(mock.seen("openai")) == funded
    return tid, est, results


def _charged_each_once(s, tid, est, calls):
    """`calls` calls held and charged once each, the ledger exact."""
    holds, hold_txs = _together(s, tid, "hold")
    charges, charge_txs = _together(s, tid, "charge")
    assert holds == charges == calls
    n, charged = usage_of(s, tid)
    assert n == calls
    assert charged == calls * cost(100, 100)
    assert micro(s, tid) == calls * est - charged
    assert micro(s, tid, "credits_reserved") == 0
    _exact(s, [tid])
    return hold_txs, charge_txs


@pytest.fixture
def one_worker(make_stack, mock):
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false", workers=1)
    return make_stack(**cfg)


def test_calls_arriving_together_are_held_together_and_never_overspend(
        one_worker, mock):
    """Forty calls at once on one worker, the tenant funded for exactly
    25 estimates, the provider answering all of them at once: holds taken
    while other requests of the worker are under way go to PostgreSQL
    together, as do the settlements of calls that end together; still
    exactly 25 calls are held, each charged once, and the ledger adds
    up."""
    s = one_worker
    tid, est, results = _funded_burst(s, mock, 40, 25)
    for r in results:
        if r.status == 402:
            err = ks.assert_error(r, 402, "insufficient_credits")
            assert err["available_credits"] < est / 1e6, err
    hold_txs, charge_txs = _charged_each_once(s, tid, est, 25)
    assert hold_txs < 25 and charge_txs < 25, (hold_txs, charge_txs)


@pytest.mark.parametrize("funds,usage", [(20, (100, 150)), (10, (100, 10**6))],
                         ids=["paid", "cut-to-balance"])
def test_calls_ending_together_over_their_holds_are_charged_exactly(
        one_worker, mock, funds, usage):
    """Ten calls at once whose provider counts more tokens than was held:
    when the balance pays all of them they are charged in full, settled
    together; when it does not, each is charged what is left in turn,
    never below zero, and the rest is written as forgiven."""
    s = one_worker
    est, _ = estimate()
    tid, key = tenant(s, None)
    set_balance(s, tid, funds * est)
    mock.behave("openai", Complete(usage=usage))
    results = _held_burst(s, mock, key, 10, 10)
    assert [r.status for r in results] == [200] * 10, \
        [(r.status, r.body[:200]) for r in results if r.status != 200]
    said = sorted(round(r.json["keygate"]["credits_charged"] * 1e6)
                  for r in results)
    rows = s.psql("SELECT credits_charged, credits_forgiven FROM usage "
                  "WHERE tenant_id = '%s'" % tid)
    assert sorted(int(c) for c, _ in rows) == said
    if funds == 20:
        assert said == [cost(*usage)] * 10
        assert all(int(f) == 0 for _, f in rows), rows
        charges, txs = _together(s, tid, "charge")
        assert txs < charges == 10
        assert micro(s, tid) == funds * est - 10 * cost(*usage)
    else:
        assert sum(said) == funds * est
        assert micro(s, tid) == 0
        assert sum(int(c) + int(f) for c, f in rows) == 10 * cost(*usage)
    assert micro(s, tid, "credits_reserved") == 0
    _exact(s, [tid])


def test_workers_sending_for_one_tenant_in_turn_never_overspend(
        make_stack, mock):
    """Sixty calls at once spread over four workers, one tenant funded
    for exactly 35 estimates, the provider answering all at once: the
    workers send the tenant's holds and settlements in turn (the host's
    sending locks, keygated(8)), each with what its threads queued
    meanwhile; exactly 35 calls are held, each charged once, and the
    ledger adds up."""
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false", workers=4)
    s = make_stack(**cfg)
    tid, est, _ = _funded_burst(s, mock, 60, 35)
    _charged_each_once(s, tid, est, 35)
    # Several workers held and charged some of them.
    pids = {l["pid"] for l in s.kg.log_lines()
            if l.get("path") == "/v1/chat/completions" and
            l.get("status") == 200}
    assert len(pids) > 1, pids


def test_postgresql_restarted_while_many_calls_wait_charges_each_once(
        make_stack, own_pg, mock):
    """Twenty calls of a worker wait on the provider when PostgreSQL
    restarts: their settlements, sent together on a connection that is
    gone, are sent again once it is back, and each call is charged once."""
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", validate_llm_keys="false", workers=1)
    s = make_stack(cluster=own_pg, **cfg)
    tid, key = tenant(s, 1)
    mock.behave("openai", Complete(wait=4, usage=(40, 9)))
    out = []
    t = threading.Thread(target=lambda: out.extend(_burst(s, key, 20)),
                         daemon=True)
    t.start()
    ks.wait_until(lambda: len(mock.seen()) == 20, 20,
                  what="twenty provider calls")
    own_pg.restart()
    t.join(90)
    assert len(out) == 20, "no answer"
    assert [r.status for r in out] == [200] * 20, \
        [(r.status, r.body[:200]) for r in out if r.status != 200]
    assert all(round(r.json["keygate"]["credits_charged"] * 1e6) ==
               cost(40, 9) for r in out)
    assert s.psql("SELECT count(*), sum(credits_charged) FROM usage WHERE "
                  "tenant_id = '%s'" % tid) == [["20", str(20 * cost(40, 9))]]
    assert micro(s, tid) == 1000000 - 20 * cost(40, 9)
    assert micro(s, tid, "credits_reserved") == 0
    _exact(s, [tid])
