"""The LLM gateway end to end: POST /v1/chat/completions through lighttpd to
a mock OpenAI and OpenRouter (mock_llm.MockLLM) that speak the real wire
formats.

Covered: the request checks (scope, required fields, fields that would
redirect the call, model routing), the order in which a provider key is
chosen (the inline header for the model's provider, an inline OpenRouter
key, the tenant's vault key for the provider, the tenant's OpenRouter key,
the operator's pool key), the OpenRouter ids native models are sent as, the
`keygate` object on
every reply, what reaches the provider and what never does (keygate keys,
other provider keys, the client's credential headers), Server-Sent Events
passed through chunk by chunk, upstream failures mapped to keygate's error
shape, and a client that goes away mid-stream.

The stacks share the module's mock: `gw` without a pool key and with
upstream idle and total timeouts of 2 seconds; `pooled` with a pool key, an
idle timeout of 2 seconds and a total timeout of 20 (so that a slow stream
or a client that leaves is told apart from the total timeout); `odd` with
another pool markup and an unreachable OpenAI.  Every test makes its own
tenant, so that vault keys never leak between tests."""

import json
import os
import re
import secrets
import threading
import time

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, assert_json_response, auth
from mock_llm import Complete, Drop, Fail, Hang, Raw, Redirect

ROOT = "00000000-0000-0000-0000-000000000001"
CHAT = "/v1/chat/completions"
POOL_KEY = "sk-or-v1-pool" + secrets.token_hex(24)
POOL_MARKUP = 0.25
UPSTREAM_TIMEOUT = 2            # upstream_total_timeout and _idle_timeout
TOTAL_TIMEOUT = 20              # upstream_total_timeout on `pooled`
ODD_MARKUP = 0.4
KEY_HEADERS = ("x-openai-key", "x-anthropic-key", "x-google-key",
               "x-openrouter-key")
OPENAI_MODELS = ("gpt-4o-mini", "gpt-4.1", "o1", "o1-mini", "o3-mini",
                 "o4-mini", "chatgpt-4o-latest")
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}]

# Every secret a test made, so that the last test can look for all of them
# in the logs.
_secrets = {POOL_KEY}

# Every test starts with the mock reset.
pytestmark = pytest.mark.usefixtures("fresh_mock")


# ---------------------------------------------------------------------------
# Fixtures

def _stack(workdir, pg, mock, **config):
    cfg = dict(mock.config())
    cfg.update(validate_llm_keys="false",
               upstream_connect_timeout=UPSTREAM_TIMEOUT,
               upstream_idle_timeout=UPSTREAM_TIMEOUT,
               upstream_total_timeout=UPSTREAM_TIMEOUT)
    cfg.setdefault("workers", 3)
    cfg.update(config)
    return ks.Stack(workdir.subdir("kg"), pg,
                    dbname="gw_%d_%s" % (os.getpid(), secrets.token_hex(4)),
                    **cfg)


@pytest.fixture(scope="module")
def gw(workdir, pg, mock):
    s = _stack(workdir, pg, mock)
    yield s
    s.close()


@pytest.fixture(scope="module")
def pooled(workdir, pg, mock):
    s = _stack(workdir, pg, mock, pool_openrouter_key=POOL_KEY,
               upstream_total_timeout=TOTAL_TIMEOUT)
    yield s
    s.close()


@pytest.fixture(scope="module")
def odd(workdir, pg, mock):
    """A pool with another markup, and an OpenAI nobody listens for."""
    s = _stack(workdir, pg, mock, pool_openrouter_key=POOL_KEY,
               pool_markup=ODD_MARKUP,
               openai_base_url="http://127.0.0.1:%d/v1" % ks.free_tcp_port())
    yield s
    s.close()


# ---------------------------------------------------------------------------
# Helpers

def rid():
    return "e2e-gw-%s" % secrets.token_hex(8)


def provider_key(provider):
    """A well-formed provider key nobody else uses."""
    key = {"openai": "sk-proj-", "anthropic": "sk-ant-api03-",
           "google": "AIzaSy", "openrouter": "sk-or-v1-"}[provider]
    key += secrets.token_hex(20)
    _secrets.add(key)
    return key


class Tenant(ks.Tenant):
    """A tenant whose key may call the gateway and keep its vault; every
    key made is looked for in the logs at the end."""

    name = "e2e-gw"
    scopes = ("chat:write", "llm_keys:write", "llm_keys:read")

    def __init__(self, stack, scopes=None):
        super().__init__(stack, scopes)
        _secrets.add(self.key)

    def store(self, **keys):
        """Puts provider keys (openai_key=…, openrouter_key=…) in the
        vault."""
        resp = self.stack.post("/v1/account/llm-keys", keys,
                               headers=auth(self.key))
        assert resp.status == 200, resp.body[:500]
        return resp

    def stored(self, mock, provider):
        """A new key of `provider`, put in the vault and accepted by the
        mock."""
        key = provider_key(provider)
        self.store(**{"%s_key" % provider: key})
        mock.accept(provider, key)
        return key


def chat_body(model="gpt-4o-mini", **fields):
    body = {"model": model, "messages": MESSAGES}
    body.update(fields)
    return body


def with_key(mock, provider, key=None):
    """An inline key header for `provider` that the mock accepts."""
    key = key or provider_key(provider)
    mock.accept(provider, key)
    name = {"openai": "X-OpenAI-Key", "anthropic": "X-Anthropic-Key",
            "google": "X-Google-Key", "openrouter": "X-OpenRouter-Key"}
    return {name[provider]: key}, key


def assert_keygate(obj, request_id, source, provider, markup=POOL_MARKUP):
    """The `keygate` member every reply carries."""
    kg = obj.get("keygate")
    assert isinstance(kg, dict), "no keygate object in %r" % obj
    assert kg.get("key_source") == source, kg
    assert kg.get("provider") == provider, kg
    if source == "pool":
        assert kg.get("pool_markup_applied") == markup, kg
    else:
        assert "pool_markup_applied" in kg and \
            kg["pool_markup_applied"] is None, kg
    charged = kg.get("credits_charged")
    assert isinstance(charged, (int, float)) and not isinstance(
        charged, bool) and charged >= 0, kg
    assert kg.get("request_id") == request_id, kg
    return kg


def assert_reply(resp, request_id, source, provider, upstream,
                 markup=POOL_MARKUP):
    """A successful non-streamed reply: the provider's completion plus the
    keygate object."""
    assert resp.status == 200, resp.body[:500]
    assert_json_response(resp)
    assert resp.headers.get("x-request-id") == request_id
    for field in ("id", "object", "created", "model", "choices", "usage"):
        assert resp.json.get(field) == upstream.reply[field], (
            "%s: %r, the provider said %r" % (field, resp.json.get(field),
                                              upstream.reply[field]))
    return assert_keygate(resp.json, request_id, source, provider, markup)


def assert_not_in(secret_list, *texts, where="the reply"):
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for s in secret_list:
            assert s not in text, "%s contains the secret %s…" % (
                where, s[:12])


def response_text(resp):
    head = "".join("%s: %s\n" % kv for kv in resp.headers.items())
    body = resp.body if isinstance(resp.body, bytes) else b""
    return head + body.decode("utf-8", "replace")


def assert_nothing_sent(mock):
    assert mock.seen() == [], "the provider was called: %r" % mock.seen()


def wait_closed(exchange, timeout):
    """Waits until the mock saw the connection of `exchange` end."""
    exchange.done.wait(timeout)
    return exchange.closed_at


# ---------------------------------------------------------------------------
# The request

def test_scope_chat_write_is_required(gw, mock):
    t = Tenant(gw, scopes=("llm_keys:write", "models:read"))
    headers, _ = with_key(mock, "openai")
    resp = t.chat(chat_body(), headers)
    err = assert_error(resp, 403, "insufficient_permissions")
    assert "chat:write" in err["message"]
    assert_nothing_sent(mock)


def test_without_a_key_401(gw, mock):
    headers, _ = with_key(mock, "openai")
    resp = gw.post(CHAT, chat_body(), headers=headers)
    assert_error(resp, 401, "missing_api_key")
    assert_nothing_sent(mock)


@pytest.mark.parametrize("body", [
    {},
    {"messages": MESSAGES},
    {"model": None, "messages": MESSAGES},
    {"model": 42, "messages": MESSAGES},
    {"model": ["gpt-4o"], "messages": MESSAGES},
    {"model": "gpt-4o-mini"},
    {"model": "gpt-4o-mini", "messages": []},
    {"model": "gpt-4o-mini", "messages": None},
    {"model": "gpt-4o-mini", "messages": "Say hello."},
    {"model": "gpt-4o-mini", "messages": {"role": "user", "content": "x"}},
], ids=["empty", "no-model", "model-null", "model-number", "model-array",
        "no-messages", "messages-empty", "messages-null", "messages-string",
        "messages-object"])
def test_model_and_messages_are_required(gw, mock, body):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    err = assert_error(t.chat(body, headers), 422, "validation_error")
    assert isinstance(err.get("details"), list) and err["details"], err
    assert_nothing_sent(mock)


def test_body_must_be_a_json_object(gw, mock):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    for body in (b"{not json", b"[1, 2]", b'"gpt-4o"'):
        resp = t.chat(body, dict(headers, **{
            "Content-Type": "application/json"}))
        assert resp.status in (400, 422), resp.body[:300]
        assert_error(resp, resp.status)
    assert_nothing_sent(mock)


@pytest.mark.parametrize("field,value", [
    ("api_base", "http://127.0.0.1:1/v1"),
    ("base_url", "http://127.0.0.1:1/v1"),
    ("api_key", "sk-proj-someoneelses0000000000000000"),
    ("headers", {"Authorization": "Bearer sk-elsewhere000000000000"}),
    ("extra_headers", {"X-Forward-To": "elsewhere"}),
    ("api_version", "2024-10-21"),
    ("organization", "org-e2e000000000000"),
])
def test_fields_that_redirect_the_call_are_refused(gw, mock, field, value):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    resp = t.chat(chat_body(**{field: value}), headers)
    err = assert_error(resp, 400, "forbidden_field")
    assert field in err["message"], err
    assert_nothing_sent(mock)


@pytest.mark.parametrize("model", [
    "llama-3.1-70b", "mistral-large-latest", "text-davinci-003", "o2-mini",
    "gpt4", "claude", "gemini", "/gpt-4o", "openai/",
])
def test_unknown_models_are_unsupported(gw, mock, model):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    headers.update(with_key(mock, "openrouter")[0])
    assert_error(t.chat(chat_body(model), headers), 400, "unsupported_model")
    assert_nothing_sent(mock)


# ---------------------------------------------------------------------------
# Routing and the reply

def assert_routed(gw, mock, model, provider):
    """A call for `model` with the user's key reaches `provider` alone,
    the model unchanged, and its reply comes back."""
    t = Tenant(gw)
    headers, key = with_key(mock, provider)
    request_id = rid()
    resp = t.chat(chat_body(model), headers, request_id)
    up = mock.only(provider)
    assert up.bearer == key
    assert up.json["model"] == model
    assert_reply(resp, request_id, "user", provider, up)


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_models_go_to_openai(gw, mock, model):
    assert_routed(gw, mock, model, "openai")


@pytest.mark.parametrize("model", [
    "meta-llama/llama-3.1-8b-instruct", "mistralai/mistral-7b-instruct",
    "openai/gpt-4o", "anthropic/claude-3.5-sonnet",
])
def test_vendor_models_go_to_openrouter_unchanged(gw, mock, model):
    assert_routed(gw, mock, model, "openrouter")


def test_the_request_reaches_the_provider_intact(gw, mock):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    body = chat_body("gpt-4o-mini", temperature=0.2, top_p=0.9,
                     max_tokens=50, stop=["\n\n"], seed=7, user="end-user-1",
                     response_format={"type": "json_object"},
                     tools=[{"type": "function", "function": {
                         "name": "get_weather", "description": "Weather",
                         "parameters": {"type": "object", "properties": {
                             "city": {"type": "string"}}}}}],
                     tool_choice="auto")
    resp = t.chat(body, headers)
    assert resp.status == 200, resp.body[:500]
    up = mock.only("openai")
    for field, value in body.items():
        assert up.json.get(field) == value, "%s: sent %r, provider got %r" % (
            field, value, up.json.get(field))
    assert up.json.get("stream") in (None, False)
    assert up.headers.get("content-type", "").startswith("application/json")


# ---------------------------------------------------------------------------
# Which provider key

def test_inline_key_beats_the_vault(gw, mock):
    t = Tenant(gw)
    vault = provider_key("openai")
    t.store(openai_key=vault, openrouter_key=provider_key("openrouter"))
    mock.accept("openai", vault)
    headers, inline = with_key(mock, "openai")
    request_id = rid()
    resp = t.chat(chat_body(), headers, request_id)
    up = mock.only("openai")
    assert up.bearer == inline
    assert_reply(resp, request_id, "user", "openai", up)


def test_the_vault_key_for_the_provider(gw, mock):
    t = Tenant(gw)
    key = t.stored(mock, "openai")
    request_id = rid()
    resp = t.chat(chat_body("o3-mini"), request_id=request_id)
    up = mock.only("openai")
    assert up.bearer == key
    assert up.json["model"] == "o3-mini"
    assert_reply(resp, request_id, "user", "openai", up)
    assert_not_in([key], response_text(resp))


def test_the_provider_key_beats_the_openrouter_key(gw, mock):
    t = Tenant(gw)
    key, ork = provider_key("openai"), provider_key("openrouter")
    t.store(openai_key=key, openrouter_key=ork)
    mock.accept("openai", key)
    mock.accept("openrouter", ork)
    resp = t.chat(chat_body())
    assert resp.status == 200, resp.body[:500]
    assert mock.only("openai").bearer == key


# Native ids and the OpenRouter ids keygate's table sends them as.
OPENROUTER_IDS = [
    ("gpt-4o-mini", "openai/gpt-4o-mini"),
    ("o4-mini", "openai/o4-mini"),
    ("claude-3-5-haiku-latest", "anthropic/claude-3.5-haiku"),
    ("gemini-1.5-flash", "google/gemini-flash-1.5"),
    ("gemini-2.0-flash", "google/gemini-2.0-flash-001"),
    ("meta-llama/llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b-instruct"),
]
# Native ids that keygate's table does not map: never guessed at.
UNMAPPED = [("gpt-e2e-unmapped", "openai"), ("claude-e2e-unmapped",
            "anthropic"), ("gemini-e2e-unmapped", "google")]


@pytest.mark.parametrize("model,routed", OPENROUTER_IDS)
@pytest.mark.parametrize("source", ["inline", "vault"])
def test_the_tenants_openrouter_key_serves_any_model(gw, mock, model, routed,
                                                     source):
    """Stored or sent along as X-OpenRouter-Key."""
    t = Tenant(gw)
    headers = {}
    if source == "inline":
        headers, ork = with_key(mock, "openrouter")
    else:
        ork = t.stored(mock, "openrouter")
    request_id = rid()
    resp = t.chat(chat_body(model), headers, request_id)
    up = mock.only("openrouter")
    assert up.bearer == ork
    assert up.json["model"] == routed
    assert up.json["messages"] == MESSAGES
    assert_reply(resp, request_id, "user", "openrouter", up)


def test_an_inline_openrouter_key_beats_the_vault_and_the_pool(pooled, mock):
    t = Tenant(pooled)
    vault, vault_or = provider_key("openai"), provider_key("openrouter")
    t.store(openai_key=vault, openrouter_key=vault_or)
    mock.accept("openai", vault)
    mock.accept("openrouter", vault_or, POOL_KEY)
    headers, inline = with_key(mock, "openrouter")
    request_id = rid()
    resp = t.chat(chat_body("gpt-4o-mini"), headers, request_id)
    up = mock.only("openrouter")
    assert up.bearer == inline
    assert up.json["model"] == "openai/gpt-4o-mini"
    assert_reply(resp, request_id, "user", "openrouter", up)


def test_the_providers_own_inline_key_beats_an_inline_openrouter_key(gw,
                                                                    mock):
    t = Tenant(gw)
    headers, key = with_key(mock, "openai")
    headers.update(with_key(mock, "openrouter")[0])
    resp = t.chat(chat_body("gpt-4o-mini"), headers)
    assert resp.status == 200, resp.body[:500]
    up = mock.only("openai")
    assert up.bearer == key and up.json["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("model,provider", UNMAPPED)
@pytest.mark.parametrize("source", ["inline", "vault", "pool"])
def test_a_model_without_an_openrouter_id_is_400(pooled, mock, model,
                                                 provider, source):
    t = Tenant(pooled)
    mock.accept("openrouter", POOL_KEY)
    headers = {}
    if source == "inline":
        headers = with_key(mock, "openrouter")[0]
    elif source == "vault":
        t.stored(mock, "openrouter")
    before = pooled.psql("SELECT count(*) FROM usage")
    err = assert_error(t.chat(chat_body(model), headers), 400,
                       "model_not_available")
    assert err["type"] == "invalid_request_error", err
    assert model in err["message"] and "OpenRouter" in err["message"], err
    assert provider in err["message"], err
    assert_nothing_sent(mock)
    assert pooled.psql("SELECT count(*) FROM usage") == before


def test_a_model_without_an_openrouter_id_falls_to_the_vault_key(gw, mock):
    """An inline OpenRouter key cannot serve it; the stored key can."""
    t = Tenant(gw)
    key = t.stored(mock, "openai")
    headers, _ = with_key(mock, "openrouter")
    request_id = rid()
    resp = t.chat(chat_body("gpt-e2e-unmapped"), headers, request_id)
    up = mock.only("openai")
    assert up.bearer == key and up.json["model"] == "gpt-e2e-unmapped"
    assert_reply(resp, request_id, "user", "openai", up)


def test_a_mapping_set_with_keygatectl_is_used_at_once(pooled, mock):
    t = Tenant(pooled)
    mock.accept("openrouter", POOL_KEY)
    model = "gpt-e2e-mapped-%s" % secrets.token_hex(3)
    assert_error(t.chat(chat_body(model)), 400, "model_not_available")
    p = pooled.kg.ctl("openrouter-models", "set", model, "openai/gpt-4.1")
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        resp = t.chat(chat_body(model))
        assert resp.status == 200, resp.body[:500]
        assert mock.only("openrouter").json["model"] == "openai/gpt-4.1"
    finally:
        pooled.psql("DELETE FROM openrouter_models WHERE model = '%s'"
                    % model)


@pytest.mark.parametrize("model,provider", [
    ("gpt-4o-mini", "openai"), ("o1-mini", "openai"),
    ("claude-3-5-sonnet-latest", "anthropic"),
    ("gemini-1.5-pro", "google"),
])
def test_no_key_anywhere_401(gw, mock, model, provider):
    t = Tenant(gw)
    err = assert_error(t.chat(chat_body(model)), 401, "missing_provider_key")
    assert err["message"].startswith(
        "No %s key or OpenRouter key found." % provider), err
    assert_nothing_sent(mock)


def test_no_key_for_a_vendor_model_401(gw, mock):
    t = Tenant(gw)
    assert_error(t.chat(chat_body("meta-llama/llama-3.1-8b-instruct")), 401,
                 "missing_provider_key")
    assert_nothing_sent(mock)


@pytest.mark.parametrize("model,header", [
    ("gpt-4o-mini", "anthropic"), ("gpt-4o-mini", "google"),
    ("meta-llama/llama-3.1-8b-instruct", "openai"),
    ("meta-llama/llama-3.1-8b-instruct", "anthropic"),
])
def test_an_inline_key_for_another_provider_is_not_used(gw, mock, model,
                                                        header):
    t = Tenant(gw)
    headers, _ = with_key(mock, header)
    assert_error(t.chat(chat_body(model), headers), 401,
                 "missing_provider_key")
    assert_nothing_sent(mock)


def test_another_tenants_vault_is_not_used(gw, mock):
    owner, other = Tenant(gw), Tenant(gw)
    key, ork = provider_key("openai"), provider_key("openrouter")
    owner.store(openai_key=key, openrouter_key=ork)
    mock.accept("openai", key)
    mock.accept("openrouter", ork)
    assert_error(other.chat(chat_body()), 401, "missing_provider_key")
    assert_nothing_sent(mock)
    assert owner.chat(chat_body()).status == 200
    assert mock.only("openai").bearer == key


def test_a_deleted_vault_key_is_no_longer_used(gw, mock):
    t = Tenant(gw)
    key = t.stored(mock, "openai")
    assert t.chat(chat_body()).status == 200
    resp = gw.request("DELETE", "/v1/account/llm-keys?provider=openai",
                      headers=auth(t.key))
    assert resp.status == 200, resp.body[:300]
    mock.reset()
    # Every worker must see the deletion, whichever one answers.
    for _ in range(6):
        assert_error(t.chat(chat_body()), 401, "missing_provider_key")
    assert_nothing_sent(mock)


@pytest.mark.parametrize("model,routed", [
    ("gpt-4o-mini", "openai/gpt-4o-mini"),
    ("claude-3-5-sonnet-latest", "anthropic/claude-3.5-sonnet"),
    ("gemini-1.5-pro", "google/gemini-pro-1.5"),
    ("meta-llama/llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b-instruct"),
])
def test_the_pool_key_with_markup(pooled, mock, model, routed):
    t = Tenant(pooled)
    mock.accept("openrouter", POOL_KEY)
    request_id = rid()
    resp = t.chat(chat_body(model), request_id=request_id)
    up = mock.only("openrouter")
    assert up.bearer == POOL_KEY
    assert up.json["model"] == routed
    assert_reply(resp, request_id, "pool", "openrouter", up)
    assert_not_in([POOL_KEY, t.key], response_text(resp))
    assert_not_in([t.key], up.text(), where="the upstream request")


def test_the_pool_markup_is_configured(odd, mock):
    t = Tenant(odd)
    mock.accept("openrouter", POOL_KEY)
    request_id = rid()
    resp = t.chat(chat_body("gpt-4o-mini"), request_id=request_id)
    up = mock.only("openrouter")
    assert up.bearer == POOL_KEY
    assert_reply(resp, request_id, "pool", "openrouter", up, ODD_MARKUP)


def test_a_request_id_is_made_when_none_is_sent(gw, mock):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    resp = gw.post(CHAT, chat_body(), headers=dict(headers, **auth(t.key)))
    request_id = resp.headers.get("x-request-id")
    assert request_id
    assert_reply(resp, request_id, "user", "openai", mock.only("openai"))


@pytest.mark.parametrize("source", ["inline", "vault", "vault-openrouter"])
def test_the_tenants_keys_beat_the_pool(pooled, mock, source):
    t = Tenant(pooled)
    mock.accept("openrouter", POOL_KEY)
    headers = {}
    if source == "inline":
        headers, key = with_key(mock, "openai")
        provider = "openai"
    elif source == "vault":
        key = provider_key("openai")
        t.store(openai_key=key)
        mock.accept("openai", key)
        provider = "openai"
    else:
        key = provider_key("openrouter")
        t.store(openrouter_key=key)
        mock.accept("openrouter", key)
        provider = "openrouter"
    request_id = rid()
    resp = t.chat(chat_body(), headers, request_id)
    up = mock.only(provider)
    assert up.bearer == key
    assert_reply(resp, request_id, "user", provider, up)


# ---------------------------------------------------------------------------
# What reaches the provider, and what never comes back

@pytest.mark.parametrize("how", ["bearer", "x-api-key"])
def test_client_credentials_never_reach_the_provider(gw, mock, how):
    t = Tenant(gw)
    keys = {p: provider_key(p) for p in ("openai", "anthropic", "google",
                                         "openrouter")}
    mock.accept("openai", keys["openai"])
    headers = {"X-OpenAI-Key": keys["openai"],
               "X-Anthropic-Key": keys["anthropic"],
               "X-Google-Key": keys["google"],
               "X-OpenRouter-Key": keys["openrouter"]}
    if how == "x-api-key":
        headers["X-API-Key"] = t.key
    request_id = rid()
    h = dict(headers, **{"X-Request-Id": request_id})
    if how == "bearer":
        h.update(auth(t.key))
    resp = gw.post(CHAT, chat_body(), headers=h)
    up = mock.only("openai")
    assert up.header_values("authorization") == ["Bearer " + keys["openai"]]
    for name in KEY_HEADERS + ("x-api-key",):
        assert name not in up.headers, "%s was forwarded" % name
    others = [keys["anthropic"], keys["google"], keys["openrouter"], t.key]
    assert_not_in(others, up.text(), where="the upstream request")
    assert_reply(resp, request_id, "user", "openai", up)
    assert_not_in(list(keys.values()), response_text(resp))


def test_client_credentials_never_reach_openrouter(gw, mock):
    t = Tenant(gw)
    headers, ork = with_key(mock, "openrouter")
    oai = provider_key("openai")
    headers["X-OpenAI-Key"] = oai
    resp = t.chat(chat_body("mistralai/mistral-7b-instruct"), headers)
    assert resp.status == 200, resp.body[:500]
    up = mock.only("openrouter")
    assert up.header_values("authorization") == ["Bearer " + ork]
    for name in KEY_HEADERS + ("x-api-key",):
        assert name not in up.headers, "%s was forwarded" % name
    assert_not_in([oai, t.key], up.text(), where="the upstream request")
    assert_not_in([oai, ork], response_text(resp))


def test_a_rejected_provider_key_is_not_echoed(gw, mock):
    t = Tenant(gw)
    key = provider_key("openai")            # not accepted by the mock
    resp = t.chat(chat_body(), {"X-OpenAI-Key": key})
    # Not invalid_api_key: the client's own keygate key was fine.
    err = assert_error(resp, 401, "invalid_provider_key")
    assert err["message"].startswith("openai: Incorrect API key provided"), \
        err
    assert_not_in([key], response_text(resp))


def test_calls_to_a_provider_reuse_one_connection(workdir, pg, mock):
    """A worker keeps its connection to a provider for the next call,
    instead of a TCP (and, to a real provider, TLS) handshake each; and
    nothing of one call, its key least of all, is sent with the next."""
    s = _stack(workdir, pg, mock, workers=1)
    try:
        first, second = Tenant(s), Tenant(s)
        h1, k1 = with_key(mock, "openai")
        h2, k2 = with_key(mock, "openai")
        for t, h in ((first, h1), (second, h2), (first, h1)):
            resp = t.chat(chat_body(), h)
            assert resp.status == 200, resp.body
        seen = mock.seen("openai")
        assert len(seen) == 3
        assert len({e.peer for e in seen}) == 1, [e.peer for e in seen]
        assert [e.bearer for e in seen] == [k1, k2, k1]
    finally:
        s.close()


def test_concurrent_calls_reuse_their_connections(workdir, pg, mock):
    """Calls in flight together each have a connection of their own, and
    the next calls as many at once use those again: no new connection
    while enough are kept (a worker spreads its calls over several
    connection pools, each keeping its own)."""
    s = _stack(workdir, pg, mock, workers=1)
    try:
        t = Tenant(s)
        h, _ = with_key(mock, "openai")
        mock.behave("openai", Complete(wait=1.0))
        n = 40

        def wave():
            out, since = [None] * n, mock.mark()

            def call(i):
                out[i] = t.chat(chat_body(), h, timeout=30)
            threads = [threading.Thread(target=call, args=(i,))
                       for i in range(n)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert [r.status for r in out] == [200] * n, \
                [r.body[:200] for r in out if r.status != 200]
            seen = mock.seen("openai", since=since)
            assert len(seen) == n
            return {e.peer for e in seen}

        first = wave()
        # Every call of a wave was in flight with the others.
        assert len(first) == n, len(first)
        second = wave()
        assert second <= first, sorted(second - first)
        third = wave()
        assert third <= first, sorted(third - first)
    finally:
        s.close()


def _connections_to(port):
    """Established TCP connections to 127.0.0.1:port on this host."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            rem, state = fields[2], fields[3]
            if state == "01" and rem == "0100007F:%04X" % port:
                n += 1
    return n


def test_kept_provider_connections_close_when_no_call_comes(workdir, pg,
                                                            mock):
    """The connection kept after a call is closed once no call has come
    for 5 s: a burst leaves no descriptors open to providers."""
    s = _stack(workdir, pg, mock, workers=1)
    try:
        t = Tenant(s)
        h, _ = with_key(mock, "openai")
        resp = t.chat(chat_body(), h)
        assert resp.status == 200, resp.body
        # keygated's end of the kept connection.
        assert _connections_to(mock.port) >= 1
        ks.wait_until(lambda: _connections_to(mock.port) == 0, 15,
                      what="the kept provider connection to close")
        # And the next call makes a new one, as well as it went before.
        resp = t.chat(chat_body(), h)
        assert resp.status == 200, resp.body
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Upstream failures

@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_provider_4xx_passes_through(gw, mock, status):
    t = Tenant(gw)
    headers, key = with_key(mock, "openai")
    mock.behave("openai", Fail(status, message="Provider says no (%d)."
                               % status))
    resp = t.chat(chat_body(), headers)
    err = assert_error(resp, status)
    assert "Provider says no (%d)." % status in err["message"], err
    assert_not_in([key], response_text(resp))
    mock.only("openai")


def test_openrouter_4xx_passes_through(gw, mock):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openrouter")
    mock.behave("openrouter", Fail(402, message="Insufficient credits."))
    err = assert_error(t.chat(chat_body("meta-llama/llama-3.1-8b-instruct"),
                              headers), 402)
    assert "Insufficient credits." in err["message"], err


@pytest.mark.parametrize("provider,model", [
    ("openai", "gpt-4o-mini"),
    ("openrouter", "meta-llama/llama-3.1-8b-instruct")])
def test_provider_429_keeps_retry_after(gw, mock, provider, model):
    t = Tenant(gw)
    headers, _ = with_key(mock, provider)
    mock.behave(provider, Fail(429, headers={"Retry-After": "7"},
                               message="Rate limit reached; slow down."))
    resp = t.chat(chat_body(model), headers)
    err = assert_error(resp, 429)
    assert "Rate limit reached; slow down." in err["message"], err
    assert resp.headers.get("retry-after") == "7", resp.headers


@pytest.mark.parametrize("status", [500, 502, 503])
def test_provider_5xx_is_502(gw, mock, status):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    mock.behave("openai", Fail(status))
    assert_error(t.chat(chat_body(), headers), 502, "upstream_error")
    mock.only("openai")


def test_a_hanging_provider_is_504_in_time(gw, mock):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    mock.behave("openai", Hang())
    start = time.monotonic()
    resp = t.chat(chat_body(), headers)
    elapsed = time.monotonic() - start
    assert_error(resp, 504, "upstream_timeout")
    assert elapsed < UPSTREAM_TIMEOUT + 1.5, "took %.1fs" % elapsed
    up = mock.only("openai")
    assert wait_closed(up, 2), "keygate kept the upstream connection open"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(gw, mock, status):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    target = mock.url + "/openai/v1/elsewhere/chat/completions"
    mock.behave("openai", Redirect(target, status))
    resp = t.chat(chat_body(), headers)
    assert_error(resp, 502)
    time.sleep(0.2)
    assert [e.path for e in mock.seen()] == [mock.chat_path("openai")], (
        "the redirect was followed: %r" % mock.seen())


@pytest.mark.parametrize("reply", [
    Raw(200, "<html><body>Bad gateway</body></html>", "text/html"),
    Raw(200, '{"id": "chatcmpl-1", "object": "chat.comp', "application/json"),
    Raw(200, "", "application/json"),
    Raw(200, '["not", "an", "object"]', "application/json"),
    Drop(),
], ids=["html", "truncated-json", "empty", "json-array", "dropped"])
def test_a_malformed_reply_is_502(gw, mock, reply):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    mock.behave("openai", reply)
    assert_error(t.chat(chat_body(), headers), 502)


def test_an_unreachable_provider_is_502(odd, mock):
    t = Tenant(odd)
    headers, _ = with_key(mock, "openai")
    assert_error(t.chat(chat_body(), headers), 502, "upstream_error")


# ---------------------------------------------------------------------------
# Streaming

def data_events(events):
    """The JSON payloads of a finished stream, checking its end: the keygate
    chunk, then [DONE], then nothing."""
    assert events, "the stream was empty"
    assert events[-1].data == "[DONE]", "the stream did not end with " \
        "[DONE]: %r" % events[-3:]
    assert not any(e.data == "[DONE]" for e in events[:-1])
    chunks = []
    for e in events[:-1]:
        try:
            chunks.append(json.loads(e.data))
        except ValueError:
            raise AssertionError("an event is not JSON: %r" % e.data[:300])
    return chunks


def split_keygate(chunks, request_id, source, provider, usage=False):
    """(the chunks with the keygate member taken off, that member), which
    rides on the finish_reason chunk (and on the usage chunk when `usage`
    was asked for): see keygate_stack.stream_chunks()."""
    chunks, kg = ks.stream_chunks(chunks, usage)
    assert_keygate({"keygate": kg}, request_id, source, provider)
    return chunks, kg


def test_stream_openai_passes_chunks_through_as_they_come(gw, mock):
    t = Tenant(gw)
    headers, key = with_key(mock, "openai")
    # Six events, 0.3 s apart: 1.5 s, inside upstream_total_timeout.
    mock.behave("openai", Complete(pause=0.3, pieces=2))
    request_id = rid()
    s = t.stream(chat_body(stream_options={"include_usage": True}), headers,
                 request_id)
    assert s.status == 200, s.body
    assert s.headers.get("content-type", "").startswith("text/event-stream")
    assert s.headers.get("x-request-id") == request_id
    events = s.read_all()
    up = mock.only("openai")
    assert up.json.get("stream") is True
    assert up.bearer == key
    chunks, _ = split_keygate(data_events(events), request_id, "user",
                              "openai", usage=True)
    assert chunks == up.chunks(), "the provider's chunks were changed"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"], chunks[-1]
    # Incremental delivery: the first chunk arrives long before the mock
    # even writes its last one.
    first, last_sent = events[0].at, up.sent_at[-1]
    assert first < last_sent - 1.0, (
        "first chunk at +%.2fs, the mock's last write at +%.2fs: buffered"
        % (first - s.sent_at, last_sent - s.sent_at))
    spread = [e.at for e in events[:len(up.sent_at) - 1]]
    assert spread[-1] - spread[0] > 0.8, "chunks arrived together"
    assert_not_in([key, t.key], json.dumps(s.headers),
                  *[e.data for e in events])


@pytest.mark.parametrize("options", [None, {"include_usage": False}, {}])
def test_stream_without_include_usage_drops_the_usage_chunk(gw, mock,
                                                            options):
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    request_id = rid()
    body = chat_body() if options is None else chat_body(
        stream_options=options)
    s = t.stream(body, headers, request_id)
    assert s.status == 200, s.body
    events = s.read_all()
    up = mock.only("openai")
    chunks, _ = split_keygate(data_events(events), request_id, "user",
                              "openai")
    expected = [c for c in up.chunks() if c["choices"]]
    assert chunks == expected
    assert not any(c.get("usage") for c in chunks), "usage was forwarded"


@pytest.mark.parametrize("framing", [
    {"newline": "\r\n"},
    {"newline": "\r"},
    {"split": True},
    {"split": True, "newline": "\r\n", "comments": True},
    {"multiline": True},
], ids=["crlf", "cr", "split", "split-crlf-comments", "multiline-data"])
def test_stream_framing_from_the_provider(gw, mock, framing):
    """Line ends may be CRLF, LF or CR, an event may arrive in pieces, and
    its data may span several `data:` lines, joined with a newline
    (providers.md section 0); the chunks come out the same."""
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    mock.behave("openai", Complete(**framing))
    request_id = rid()
    s = t.stream(chat_body(stream_options={"include_usage": True}), headers,
                 request_id)
    assert s.status == 200, s.body
    chunks, _ = split_keygate(data_events(s.read_all()), request_id, "user",
                              "openai", usage=True)
    assert chunks == mock.only("openai").chunks()


def test_stream_openrouter_comments_and_usage(gw, mock):
    """OpenRouter sends keep-alive comments and always a usage chunk; the
    client gets neither a broken stream nor a usage chunk it did not ask
    for."""
    t = Tenant(gw)
    ork = t.stored(mock, "openrouter")
    mock.behave("openrouter", Complete(comments=True, pause=0.05))
    request_id = rid()
    s = t.stream(chat_body("mistralai/mistral-7b-instruct"),
                 request_id=request_id)
    assert s.status == 200, s.body
    chunks, _ = split_keygate(data_events(s.read_all()), request_id, "user",
                              "openrouter")
    up = mock.only("openrouter")
    assert up.bearer == ork
    assert chunks == [c for c in up.chunks() if c["choices"]]


def test_stream_via_the_tenants_openrouter_key_with_usage(gw, mock):
    t = Tenant(gw)
    ork = t.stored(mock, "openrouter")
    request_id = rid()
    s = t.stream(chat_body("gpt-4o-mini",
                           stream_options={"include_usage": True}),
                 request_id=request_id)
    assert s.status == 200, s.body
    chunks, _ = split_keygate(data_events(s.read_all()), request_id, "user",
                              "openrouter", usage=True)
    up = mock.only("openrouter")
    assert up.json["model"] == "openai/gpt-4o-mini"
    assert chunks == up.chunks()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]


def test_stream_on_the_pool(pooled, mock):
    t = Tenant(pooled)
    mock.accept("openrouter", POOL_KEY)
    request_id = rid()
    s = t.stream(chat_body("claude-3-5-haiku-latest"), request_id=request_id)
    assert s.status == 200, s.body
    events = s.read_all()
    split_keygate(data_events(events), request_id, "pool", "openrouter")
    assert mock.only("openrouter").bearer == POOL_KEY
    assert_not_in([POOL_KEY], json.dumps(s.headers),
                  *[e.data for e in events])


@pytest.mark.parametrize("reply,status,code", [
    (Fail(429, headers={"Retry-After": "3"}), 429, None),
    (Fail(401), 401, None),
    (Fail(500), 502, "upstream_error"),
    (Hang(), 504, "upstream_timeout"),
], ids=["429", "401", "500", "hang"])
def test_stream_fails_before_the_first_chunk(gw, mock, reply, status, code):
    """Nothing was streamed yet, so the client gets an ordinary error."""
    t = Tenant(gw)
    headers, _ = with_key(mock, "openai")
    mock.behave("openai", reply)
    start = time.monotonic()
    s = t.stream(chat_body(), headers)
    elapsed = time.monotonic() - start
    resp = ks.Response(s.status, s.headers, s.body, s.json)
    err = assert_error(resp, status, code)
    if status == 429:
        assert resp.headers.get("retry-after") == "3"
    if status < 500:
        assert reply.message in err["message"], err
    assert elapsed < UPSTREAM_TIMEOUT + 1.5, "took %.1fs" % elapsed


def stream_from(stack, mock, behaviour, request_id=None):
    """A new tenant of `stack` streaming a chat from the mock OpenAI, which
    answers with `behaviour`: (the tenant, its key header, the stream,
    whose status was 200)."""
    t = Tenant(stack)
    headers, _ = with_key(mock, "openai")
    mock.behave("openai", behaviour)
    s = t.stream(chat_body(), headers, request_id)
    assert s.status == 200, s.body
    return t, headers, s


def test_stream_slower_than_the_idle_timeout_in_total(pooled, mock):
    """Gaps shorter than upstream_idle_timeout never end a stream, however
    long it takes in all (3 s here, the idle timeout being 2 s)."""
    request_id = rid()
    _, _, s = stream_from(pooled, mock, Complete(pause=0.6, pieces=2),
                          request_id)
    chunks, _ = split_keygate(data_events(s.read_all()), request_id, "user",
                              "openai")
    up = mock.only("openai")
    assert up.events[-1] == "[DONE]", "the provider was cut off"
    assert chunks == [c for c in up.chunks() if c["choices"]]


def test_stream_the_provider_ends_late_ends_at_its_done(gw, mock):
    """A provider that keeps its answer open after [DONE] (10 s here): the
    client's stream, keygate block included, ends within a second or so
    all the same, and keygate closes the provider's connection."""
    request_id = rid()
    _, _, s = stream_from(gw, mock, Complete(pieces=3, linger=10),
                          request_id)
    events = s.read_all()
    chunks, _ = split_keygate(data_events(events), request_id, "user",
                              "openai")
    up = mock.only("openai")
    assert chunks == [c for c in up.chunks() if c["choices"]]
    assert events[-1].data == "[DONE]"
    assert s.ended_at - s.sent_at < 5, "the stream waited for the provider"
    assert wait_closed(up, 5), "keygate kept the finished upstream open"
    assert up.events[-1] == "[DONE]" and not up.completed


def test_stream_that_stalls_ends_after_the_idle_timeout(pooled, mock):
    _, _, s = stream_from(pooled, mock, Complete(hang_after=2))
    events = s.read_all()
    up = mock.only("openai")
    got = [e.json for e in events if e.data != "[DONE]"]
    assert got[:2] == up.chunks()[:2]
    stalled = s.ended_at - events[1].at
    assert UPSTREAM_TIMEOUT - 0.5 < stalled < UPSTREAM_TIMEOUT + 2, (
        "the stream ended %.1fs after the provider stalled" % stalled)
    assert wait_closed(up, 2), "keygate kept the stalled upstream open"


def test_stream_cut_by_the_provider_ends(gw, mock):
    _, _, s = stream_from(gw, mock, Complete(stop_after=2, pieces=6))
    events = s.read_all()
    up = mock.only("openai")
    got = [e.json for e in events if e.data != "[DONE]"]
    assert got[:2] == up.chunks()
    assert s.ended_at - s.sent_at < 5, "the stream did not end"


def test_client_gone_mid_stream_ends_the_upstream_call(pooled, mock):
    t, headers, s = stream_from(pooled, mock, Complete(pause=0.2,
                                                       pieces=60))
    it = s.events()
    next(it)
    next(it)
    gone = time.monotonic()
    s.abort()
    up = mock.only("openai")
    closed = wait_closed(up, 5)
    assert closed, "the upstream call went on after the client left"
    assert closed - gone < 1.5, "the upstream call ended %.2fs after the " \
        "client left" % (closed - gone)
    assert "[DONE]" not in up.events
    # The worker is free again.
    mock.behave("openai", Complete())
    for _ in range(4):
        assert t.chat(chat_body(), headers, timeout=5).status == 200


# ---------------------------------------------------------------------------
# Anthropic called directly: see test_gateway_anthropic.py.  Gemini: not yet.


# ---------------------------------------------------------------------------
# Logs

def test_no_provider_or_keygate_key_in_the_logs(gw, pooled, odd, mock):
    """Runs last: every key any test used (and one more request on each
    stack, so that there is something to look at) looked for in everything
    the stacks logged."""
    for stack in (gw, pooled, odd):
        t = Tenant(stack)
        headers, _ = with_key(mock, "openai")
        t.chat(chat_body(), headers)
        ks.wait_until(lambda: re.search(r'"path":\s*"/v1/chat/completions"',
                                        stack.kg.log_text()),
                      5, what="a chat request in the log")
        text = stack.kg.log_text()
        for secret in sorted(_secrets):
            assert secret not in text, (
                "keygated logged the secret %s…" % secret[:12])
