"""POST /v1/embeddings: OpenAI and OpenRouter take the request as sent,
Gemini gets batchEmbedContents and its vectors come back in OpenAI's
shape (numbers, or base64 float32 as the OpenAI SDKs ask by default);
priced on the input, held and settled with one usage row like a chat
call, scope embeddings:write.  The providers are mock_llm's."""

import base64
import math
import secrets
import struct

import pytest

import keygate_stack as ks

KEYS = {"openai": "sk-proj-" + "e" * 40,
        "openrouter": "sk-or-v1-" + "e" * 40,
        "google": "AIzaSy" + "e" * 33}
HEADERS = ks.INLINE_KEY_HEADERS
MODELS = {"openai": "text-embedding-3-small",
          "openrouter": "openai/text-embedding-3-small",
          "google": "gemini-embedding-001"}
# micro-credits per million input tokens (sql/0006-embedding-prices.sql)
PRICES = {"text-embedding-3-small": 20000, "gemini-embedding-001": 150000,
          "openai/text-embedding-3-small": 1000000}
INPUT = ["The food was delicious.", "The waiter was friendly."]


@pytest.fixture
def gw(llm_stack):
    return llm_stack


@pytest.fixture(autouse=True)
def mock(llm):
    return llm.serve(KEYS, usage=(4000, 0), dims=4)


def embed(gw, provider, key=ks.DEV_KEY, **fields):
    body = dict({"model": MODELS[provider], "input": INPUT}, **fields)
    h = dict(ks.auth(key), **{HEADERS[provider]: KEYS[provider],
                              "X-Request-Id": "e2e-emb-" +
                              secrets.token_hex(8)})
    return gw.post("/v1/embeddings", body, headers=h)


def usage_row(gw, request_id):
    rows = gw.psql("SELECT provider, model, prompt_tokens, "
                   "completion_tokens, credits_charged FROM usage WHERE "
                   "request_id = '%s'" % request_id)
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("provider", ["openai", "openrouter"])
def test_openai_format_providers_take_it_as_sent(gw, mock, provider):
    r = embed(gw, provider, encoding_format="float", dimensions=4)
    assert r.status == 200, r.body
    up = mock.only(provider)
    assert up.path == mock.embeddings_path(provider)
    assert up.bearer == KEYS[provider]
    assert up.json == {"model": MODELS[provider], "input": INPUT,
                       "encoding_format": "float", "dimensions": 4}
    reply = dict(r.json)
    kg = reply.pop("keygate")
    assert reply == up.reply
    assert kg["provider"] == provider and kg["key_source"] == "user"
    assert kg["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-keygate-provider"] == provider
    charged = math.ceil(4000 * PRICES[MODELS[provider]] / 1e6)
    assert round(kg["credits_charged"] * 1e6) == charged
    assert usage_row(gw, kg["request_id"]) == [
        provider, MODELS[provider], "4000", "0", str(charged)]


def test_gemini_gets_batch_embed_contents(gw, mock):
    r = embed(gw, "google", encoding_format="float", dimensions=4)
    assert r.status == 200, r.body
    up = mock.only("google")
    assert up.path == "/google/v1beta/models/gemini-embedding-001:" \
        "batchEmbedContents"
    assert up.headers["x-goog-api-key"] == KEYS["google"]
    assert up.json == {"requests": [
        {"model": "models/gemini-embedding-001",
         "content": {"parts": [{"text": text}]},
         "outputDimensionality": 4} for text in INPUT]}
    values = [e["values"] for e in up.reply["embeddings"]]
    assert r.json["object"] == "list"
    assert r.json["model"] == "gemini-embedding-001"
    assert r.json["data"] == [{"object": "embedding", "index": i,
                               "embedding": v}
                              for i, v in enumerate(values)]
    # Gemini says no token count: the input is priced on its size.
    kg = r.json["keygate"]
    row = usage_row(gw, kg["request_id"])
    assert int(row[2]) == r.json["usage"]["prompt_tokens"] > 0
    assert r.json["usage"]["total_tokens"] == int(row[2])
    assert round(kg["credits_charged"] * 1e6) == int(row[4]) == math.ceil(
        int(row[2]) * PRICES["gemini-embedding-001"] / 1e6)


def test_gemini_answers_base64_as_the_sdks_ask(gw, mock):
    r = embed(gw, "google", encoding_format="base64", input="one text")
    assert r.status == 200, r.body
    values = mock.only("google").reply["embeddings"][0]["values"]
    got = base64.b64decode(r.json["data"][0]["embedding"])
    floats = struct.unpack("<%df" % len(values), got)
    assert floats == pytest.approx(values, rel=1e-6)
    assert mock.only("google").json["requests"][0]["content"] == {
        "parts": [{"text": "one text"}]}


def test_gemini_takes_no_token_arrays(gw, mock):
    r = embed(gw, "google", input=[[1, 2, 3]])
    err = ks.assert_error(r, 400, "bad_request")
    assert "input must be a string or a non-empty array of strings" in \
        err["message"], err
    assert mock.seen() == []


@pytest.mark.parametrize("body,field", [
    ({"model": "text-embedding-3-small"}, "input"),
    ({"model": "text-embedding-3-small", "input": []}, "input"),
    ({"model": "text-embedding-3-small", "input": 5}, "input"),
    ({"input": "x"}, "model"),
    ({"model": None, "input": "x"}, "model"),
    ({"model": 7, "input": "x"}, "model"),
], ids=["no-input", "empty-input", "number-input", "no-model", "null-model",
        "number-model"])
def test_a_bad_request_is_422_and_not_sent(gw, mock, body, field):
    r = gw.post("/v1/embeddings", body, headers=dict(
        ks.auth(), **{"X-OpenAI-Key": KEYS["openai"]}))
    err = ks.assert_error(r, 422, "validation_error")
    assert [d["field"] for d in err["details"]] == [field], err
    assert mock.seen() == []


def test_anthropic_has_no_embeddings(gw, mock):
    r = gw.post("/v1/embeddings", {"model": "claude-3-5-haiku-latest",
                                   "input": "x"}, headers=ks.auth())
    err = ks.assert_error(r, 400, "unsupported_model")
    assert "for embeddings" in err["message"], err
    assert mock.seen() == []


def test_the_scope_is_embeddings_write(gw, mock):
    made = {}
    for name, scopes in (("chat", ["chat:write"]),
                         ("embed", ["embeddings:write"]),
                         ("all", ["embeddings:*"])):
        r = gw.post("/v1/api_keys", {"name": name, "scopes": scopes},
                    headers=ks.auth())
        assert r.status == 201, r.body
        made[name] = r.json["key"]
    err = ks.assert_error(embed(gw, "openai", key=made["chat"]), 403,
                          "insufficient_permissions")
    assert "embeddings:write" in err["message"], err
    assert mock.seen() == []
    assert embed(gw, "openai", key=made["embed"]).status == 200
    assert embed(gw, "openai", key=made["all"]).status == 200
    r = gw.post("/v1/api_keys", {"name": "x", "scopes": ["embeddings:read"]},
                headers=ks.auth())
    ks.assert_error(r, 422, "validation_error")


def test_short_credits_are_402_and_not_sent(gw, mock):
    tenant = gw.post("/v1/tenants", {"name": "poor"}, headers=ks.auth())
    assert tenant.status == 201, tenant.body
    key = gw.post("/v1/api_keys", {"tenant_id": tenant.json["id"],
                                   "scopes": ["embeddings:write"]},
                  headers=ks.auth())
    assert key.status == 201, key.body
    r = embed(gw, "openai", key=key.json["key"])
    err = ks.assert_error(r, 402, "insufficient_credits")
    assert err["available_credits"] == 0 and err["required_credits"] > 0
    assert err["message"].startswith("Insufficient credits. Required: ")
    assert mock.seen() == []
