"""What a client sees when a provider says no, or when the client itself
goes wrong, against the mock OpenAI and OpenRouter (mock_llm.MockLLM):

- a provider's 4xx keeps its status, its message, and its own error type
  and code where it gives them (the generic ones where it does not);
- a provider's 429 passes its wait on as Retry-After, in whole seconds
  (retry-after-ms first, as OpenAI's clients read it);
- an inline provider key that does not look like its provider's is a 400
  naming the provider, and no provider is called;
- a client that leaves during a non-streamed call ends the upstream call
  at once, and it is settled exactly once, for the prompt the provider
  had."""

import json
import os
import secrets
import time

import pytest

import keygate_stack as ks
from keygate_stack import assert_error
from mock_llm import Complete, Fail, Hang, SSEReader

ROOT = "00000000-0000-0000-0000-000000000001"
CHAT = "/v1/chat/completions"
OPENAI_KEY = "sk-proj-" + secrets.token_hex(20)
OPENROUTER_KEY = "sk-or-v1-" + secrets.token_hex(20)
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def gw(workdir, pg, mock):
    """Credits on, and upstream timeouts far above what a test waits, so
    that an upstream call that ends early was ended by keygate."""
    cfg = dict(mock.config())
    cfg.update(validate_llm_keys="false", credits_enforce="true",
               upstream_idle_timeout=30, upstream_total_timeout=60)
    s = ks.Stack(workdir.subdir("kg"), pg, workers=2,
                 dbname="err_%d_%s" % (os.getpid(), secrets.token_hex(4)),
                 **cfg)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def fresh(mock):
    mock.reset()
    mock.accept("openai", OPENAI_KEY)
    mock.accept("openrouter", OPENROUTER_KEY)


class Tenant(ks.Tenant):
    """A tenant with 10 credits and a chat key; its calls send the OpenAI
    key unless told otherwise."""

    name = "e2e-err"
    credits = 10000000

    def headers(self, extra=None, request_id=None):
        return super().headers({"X-OpenAI-Key": OPENAI_KEY} if extra is None
                               else extra, request_id)

    def money(self):
        """(balance, reserved, usage rows), in micro-credits."""
        row = self.stack.psql("SELECT credits_balance, credits_reserved, "
                              "(SELECT count(*) FROM usage WHERE tenant_id "
                              "= t.id) FROM tenants t WHERE id = '%s'"
                              % self.id)[0]
        return tuple(int(v) for v in row)


def body(model="gpt-4o-mini", **fields):
    b = {"model": model, "messages": MESSAGES, "max_tokens": 50}
    b.update(fields)
    return b


def openai_error(message, type_, code, param=None):
    return {"error": {"message": message, "type": type_, "param": param,
                      "code": code}}


# ---------------------------------------------------------------------------
# (a) A provider's own error type and code

@pytest.mark.parametrize("status,reply,type_,code", [
    (404, openai_error("The model `gpt-9` does not exist.",
                       "invalid_request_error", "model_not_found"),
     "invalid_request_error", "model_not_found"),
    (400, openai_error("This model's maximum context length is 8192.",
                       "invalid_request_error", "context_length_exceeded",
                       "messages"),
     "invalid_request_error", "context_length_exceeded"),
    # No code of its own: the type stays, the code is the generic one.
    (400, openai_error("Invalid value for 'temperature'.",
                       "invalid_request_error", None),
     "invalid_request_error", "upstream_error"),
    (429, openai_error("You exceeded your current quota.",
                       "insufficient_quota", "insufficient_quota"),
     "insufficient_quota", "insufficient_quota"),
    # Neither is a plain word: neither goes to the client.
    (403, openai_error("Not for you.", "perm denied <b>", "x\ny"),
     "permission_error", "upstream_error"),
], ids=["model-not-found", "context-length", "no-code", "quota",
        "not-words"])
def test_openai_4xx_keeps_its_type_and_code(gw, mock, status, reply, type_,
                                            code):
    t = Tenant(gw)
    before = t.money()
    mock.behave("openai", Fail(status, body=reply))
    resp = t.chat(body())
    err = assert_error(resp, status, code)
    assert err["type"] == type_, err
    assert err["message"] == "openai: " + reply["error"]["message"], err
    assert OPENAI_KEY not in resp.body.decode()
    assert t.money() == before, "a refused call cost something"


def test_openrouter_4xx_takes_a_type_from_its_status(gw, mock):
    """OpenRouter's code is the HTTP status, a number: no code of its own,
    and the type a client of this format expects for a 402."""
    t = Tenant(gw)
    mock.behave("openrouter", Fail(402, message="Insufficient credits."))
    resp = t.chat(body("meta-llama/llama-3.1-8b-instruct"),
                  {"X-OpenRouter-Key": OPENROUTER_KEY})
    err = assert_error(resp, 402, "upstream_error")
    assert err["type"] == "billing_error"
    assert err["message"] == "openrouter: Insufficient credits."


def test_a_streamed_call_refused_up_front_keeps_type_and_code(gw, mock):
    t = Tenant(gw)
    mock.behave("openai", Fail(404, body=openai_error(
        "No such model.", "invalid_request_error", "model_not_found")))
    s = SSEReader(gw.url + CHAT, body(stream=True), t.headers())
    err = assert_error(ks.Response(s.status, s.headers, s.body, s.json),
                       404, "model_not_found")
    assert err["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------
# (b) Retry-After from a provider's 429

@pytest.mark.parametrize("headers,want", [
    ({"retry-after-ms": "1500"}, "2"),
    ({"retry-after-ms": "200", "Retry-After": "7"}, "1"),
    ({"retry-after-ms": "3000.5"}, "4"),
    ({"Retry-After": "7"}, "7"),
    ({"Retry-After": "0.2"}, "1"),
    ({"Retry-After": "Wed, 21 Oct 2065 07:28:00 GMT"},
     "Wed, 21 Oct 2065 07:28:00 GMT"),
    ({"Retry-After": "soon"}, None),
    ({"retry-after-ms": "-5"}, None),
    ({}, None),
], ids=["ms", "ms-first", "ms-fraction", "seconds", "seconds-fraction",
        "date", "garbage", "negative", "none"])
def test_a_provider_429_passes_its_wait_on(gw, mock, headers, want):
    t = Tenant(gw)
    mock.behave("openai", Fail(429, headers=headers,
                               message="Rate limit reached."))
    resp = t.chat(body())
    err = assert_error(resp, 429, "rate_limit_exceeded")
    assert err["message"] == "openai: Rate limit reached.", err
    assert resp.headers.get("retry-after") == want, resp.headers


@pytest.mark.parametrize("status", [503, 529])
def test_an_overloaded_provider_passes_its_wait_on(gw, mock, status):
    """5xx is 502 upstream_error, with the provider's Retry-After kept."""
    t = Tenant(gw)
    mock.behave("openai", Fail(status, headers={"Retry-After": "11"},
                               message="Overloaded."))
    resp = t.chat(body())
    assert_error(resp, 502, "upstream_error")
    assert resp.headers.get("retry-after") == "11", resp.headers
    mock.behave("openai", Fail(status, message="Overloaded."))
    resp = t.chat(body())
    assert_error(resp, 502, "upstream_error")
    assert "retry-after" not in resp.headers, resp.headers


def test_a_streamed_429_passes_its_wait_on(gw, mock):
    t = Tenant(gw)
    mock.behave("openai", Fail(429, headers={"retry-after-ms": "2500"}))
    s = SSEReader(gw.url + CHAT, body(stream=True), t.headers())
    assert_error(ks.Response(s.status, s.headers, s.body, s.json), 429)
    assert s.headers.get("retry-after") == "3", s.headers


# ---------------------------------------------------------------------------
# (c) Inline keys must look like their provider's

@pytest.mark.parametrize("header,value,provider,form", [
    ("X-OpenAI-Key", "not-a-key-at-all-but-long-enough", "openai",
     "sk-proj-... or sk-..."),
    ("X-OpenAI-Key", "sk-ant-api03-" + "a" * 30, "openai",
     "sk-proj-... or sk-..."),
    ("X-OpenAI-Key", "sk-short", "openai", "sk-proj-... or sk-..."),
    ("X-Anthropic-Key", "sk-proj-" + "a" * 30, "anthropic", "sk-ant-..."),
    ("X-Google-Key", "AIza has blanks in it here", "google", "AIza..."),
    ("X-OpenRouter-Key", "sk-proj-" + "a" * 30, "openrouter", "sk-or-..."),
], ids=["openai-garbage", "openai-gets-anthropic", "openai-short",
        "anthropic-gets-openai", "google-blanks", "openrouter-gets-openai"])
def test_a_malformed_inline_key_is_400_before_any_call(gw, mock, header,
                                                       value, provider,
                                                       form):
    t = Tenant(gw)
    before = t.money()
    extra = {"X-OpenAI-Key": OPENAI_KEY}
    extra[header] = value
    resp = t.chat(body(), extra)
    err = assert_error(resp, 400, "invalid_provider_key")
    assert err["message"] == "Invalid %s key format in %s: expected %s." % (
        provider, header, form), err
    assert value not in resp.body.decode()
    assert mock.seen() == []
    assert t.money() == before


def test_well_formed_inline_keys_go_through(gw, mock):
    t = Tenant(gw)
    resp = t.chat(body(), {
        "X-OpenAI-Key": OPENAI_KEY,
        "X-Anthropic-Key": "sk-ant-api03-" + secrets.token_hex(20),
        "X-Google-Key": "AIzaSy" + secrets.token_hex(17),
        "X-OpenRouter-Key": OPENROUTER_KEY})
    assert resp.status == 200, resp.body[:300]
    assert len(mock.seen("openai")) == 1


# ---------------------------------------------------------------------------
# (e) A client that leaves during a non-streamed call
#
# Whether a web server notices a client leaving while it waits for the
# answer is its own business (nginx does, and closes the FastCGI
# connection; lighttpd only notices some of the time).  What keygated must
# do is tested where it is decided: the tests below speak FastCGI to
# keygated's socket the way a web server does, and give up on the request
# the two ways one can: closing the connection, or FCGI_ABORT_REQUEST.

def fcgi_chat(stack, key, request_id, payload):
    """Sends POST /v1/chat/completions to keygated over FastCGI, as a web
    server would, and returns the connection."""
    data = json.dumps(payload).encode()
    return ks.fcgi_send(stack.kg.socket_path, "POST", CHAT, {
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": "Bearer " + key,
        "HTTP_X_OPENAI_KEY": OPENAI_KEY,
        "HTTP_X_REQUEST_ID": request_id}, data)


def test_fastcgi_client_works(gw, mock):
    """The helper above is a working web server: the same request
    answered."""
    t = Tenant(gw)
    s = fcgi_chat(gw, t.key, "e2e-err-" + secrets.token_hex(8), body())
    try:
        head, _, payload = ks.fcgi_answer(s).partition(b"\r\n\r\n")
    finally:
        s.close()
    assert head.startswith(b"Status: 200"), head
    assert json.loads(payload)["keygate"]["provider"] == "openai"


@pytest.mark.parametrize("how,stream", [("close", False), ("abort", False),
                                        ("close", True)],
                         ids=["close", "abort", "stream"])
def test_a_client_leaving_a_whole_call_ends_it_and_pays_the_prompt(gw, mock,
                                                                   how,
                                                                   stream):
    """The provider had the request when the client left (a whole call,
    or a stream before its first event): the call ends at once, and the
    tenant pays what the provider certainly processed, the prompt, with
    one usage row marked partial."""
    t = Tenant(gw)
    before = t.money()
    mock.behave("openai", Hang(30))
    request_id = "e2e-err-" + secrets.token_hex(8)
    s = fcgi_chat(gw, t.key, request_id, body(stream=stream))
    up = mock.wait_for(1)[0]
    # The reservation is held while the provider thinks.
    ks.wait_until(lambda: t.money()[1] > 0, 5, what="the reservation")
    gone = time.monotonic()
    if how == "close":
        s.close()
    else:
        s.sendall(ks.fcgi_record(ks.FCGI_ABORT_REQUEST))
    try:
        assert up.done.wait(5), \
            "the upstream call went on after the client left"
        assert up.closed_at - gone < 2.0, "the upstream call ended %.2fs " \
            "after the client left" % (up.closed_at - gone)
    finally:
        s.close()
    # Settled once: the prompt charged, nothing held, one usage row.
    ks.wait_until(lambda: t.money()[1:] == (0, before[2] + 1), 5,
                  what="the reservation to be settled")
    rows = gw.psql("SELECT prompt_tokens, completion_tokens, status, "
                   "credits_charged FROM usage WHERE request_id = '%s'"
                   % request_id)
    assert len(rows) == 1, rows
    prompt, completion, status, charged = rows[0]
    assert (int(prompt) > 0, completion, status) == (True, "0", "partial")
    assert 0 < int(charged) and t.money()[0] == before[0] - int(charged)
    assert gw.psql("SELECT count(*) FROM credit_reservations WHERE "
                   "tenant_id = '%s'" % t.id) == [["0"]]
    # The access log says the client closed the request.
    lines = ks.wait_until(lambda: gw.kg.request_log(request_id), 5,
                          what="the access log line")
    assert [l["status"] for l in lines] == [499], lines
    # The worker is free again, and what it serves next is paid once.
    mock.behave("openai", Complete())
    for _ in range(3):
        assert t.chat(body()).status == 200
    assert gw.psql("SELECT count(*) FROM usage WHERE request_id = '%s'"
                   % request_id) == [["1"]]
    assert t.money()[2] == before[2] + 4


def test_a_client_that_waits_is_not_taken_for_gone(gw, mock):
    """While the client stays, a slow provider is waited for (within the
    timeouts): the answer comes, is paid for once, and is logged 200."""
    t = Tenant(gw)
    before = t.money()
    mock.behave("openai", Complete(wait=2.5))
    start = time.monotonic()
    r = t.chat(body())
    assert r.status == 200, r.body[:300]
    assert time.monotonic() - start >= 2.4
    assert mock.seen("openai")[0].completed
    balance, reserved, rows = t.money()
    assert rows == before[2] + 1 and reserved == 0
    assert balance == before[0] - round(r.json["keygate"]["credits_charged"]
                                        * 1e6)
