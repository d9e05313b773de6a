"""POST /v1/messages: the Anthropic Messages API in front of the same
gateway.  The keygate key comes in x-api-key (as the Anthropic SDK sends
it), the request goes to Anthropic as it came, or to any other provider
translated to the OpenAI shape with the reply and stream turned back into
Messages shapes; credits are held and settled with one usage row, and the
keygate block comes as X-Keygate-* headers and as a `keygate` member.  The
providers are mock_llm's."""

import json
import secrets

import pytest

import keygate_stack as ks
from mock_llm import Complete, SSEReader

KEYS = {"openai": "sk-proj-" + "m" * 40,
        "anthropic": "sk-ant-api03-" + "m" * 40,
        "google": "AIzaSy" + "m" * 33}
HEADERS = ks.INLINE_KEY_HEADERS
MODELS = ks.PROVIDER_MODELS
BODY = {"max_tokens": 256, "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello."}]}


@pytest.fixture
def gw(llm_stack):
    return llm_stack


@pytest.fixture(autouse=True)
def mock(llm):
    return llm.serve(KEYS, content="Hello there.", pieces=3, usage=(21, 5))


def headers(provider, key=ks.DEV_KEY, version="2023-06-01"):
    h = {"x-api-key": key, HEADERS[provider]: KEYS[provider],
         "X-Request-Id": "e2e-msg-" + secrets.token_hex(8)}
    if version:
        h["anthropic-version"] = version
    return h


def send(gw, provider, **fields):
    body = dict(BODY, model=MODELS[provider], **fields)
    return gw.post("/v1/messages", body, headers=headers(provider))


def stream(gw, provider, **fields):
    body = dict(BODY, model=MODELS[provider], stream=True, **fields)
    r = SSEReader(gw.url + "/v1/messages", body, headers(provider))
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("text/event-stream")
    return r, r.read_all()


def usage_rows(gw, request_id):
    return gw.psql("SELECT provider, prompt_tokens, completion_tokens, "
                   "credits_charged, status FROM usage WHERE request_id = "
                   "'%s'" % request_id)


def assert_keygate(gw, r, kg, provider):
    """The member and the headers say the same, and the one usage row."""
    assert kg["provider"] == provider and kg["key_source"] == "user", kg
    assert kg["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-keygate-provider"] == provider
    assert r.headers["x-keygate-key-source"] == "user"
    rows = usage_rows(gw, kg["request_id"])
    assert len(rows) == 1, rows
    assert round(kg["credits_charged"] * 1e6) == int(rows[0][3])
    return rows[0]


def event_types(events):
    return [e.event for e in events]


def test_to_anthropic_the_request_goes_as_it_came(gw, mock):
    r = send(gw, "anthropic", metadata={"user_id": "u1"}, top_k=5)
    assert r.status == 200, r.body
    up = mock.only("anthropic")
    # The keygate key stays here; the provider key goes in its place.
    assert up.headers["x-api-key"] == KEYS["anthropic"]
    assert up.headers["anthropic-version"] == "2023-06-01"
    assert ks.DEV_KEY not in up.text()
    assert up.json == dict(BODY, model=MODELS["anthropic"],
                           metadata={"user_id": "u1"}, top_k=5)
    reply = dict(r.json)
    kg = reply.pop("keygate")
    assert reply == mock.only("anthropic").reply
    row = assert_keygate(gw, r, kg, "anthropic")
    assert row[:3] == ["anthropic", "21", "5"]
    assert r.headers["x-keygate-credits-charged"] == \
        ("%.6f" % kg["credits_charged"]).rstrip("0").rstrip(".")


def test_to_anthropic_a_stream_passes_through(gw, mock):
    r, events = stream(gw, "anthropic")
    up = mock.only("anthropic")
    got = [e.json for e in events]
    assert event_types(events) == [d["type"] for d in got]
    assert [{k: v for k, v in d.items() if k != "keygate"}
            for d in got] == [json.loads(e) for e in up.events]
    carriers = [d["type"] for d in got if "keygate" in d]
    assert carriers == ["message_delta"], carriers
    kg = [d for d in got if "keygate" in d][0]["keygate"]
    row = assert_keygate(gw, r, kg, "anthropic")
    assert row[1:3] == ["21", "5"] and row[4] == "ok"
    assert events[-1].event == "message_stop"
    assert not any(e.data == "[DONE]" for e in events)


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_to_another_provider_the_reply_is_a_message(gw, mock, provider):
    r = send(gw, provider, stop_sequences=["END"], temperature=0.5)
    assert r.status == 200, r.body
    up = mock.only(provider)
    if provider == "openai":
        assert up.json["messages"] == [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}]
        assert up.json["max_tokens"] == 256
        assert up.json["stop"] == ["END"]
        assert up.bearer == KEYS["openai"]
    else:
        assert up.json["systemInstruction"] == {
            "parts": [{"text": "You are terse."}]}
        assert up.json["generationConfig"]["maxOutputTokens"] == 256
    reply = dict(r.json)
    kg = reply.pop("keygate")
    assert reply["type"] == "message" and reply["role"] == "assistant"
    assert reply["content"] == [{"type": "text", "text": "Hello there."}]
    assert reply["stop_reason"] == "end_turn"
    assert reply["stop_sequence"] is None
    assert reply["usage"] == {"input_tokens": 21, "output_tokens": 5}
    assert isinstance(reply["id"], str) and reply["id"]
    assert_keygate(gw, r, kg, provider)


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_to_another_provider_the_stream_is_messages_events(gw, mock,
                                                           provider):
    r, events = stream(gw, provider)
    got = [e.json for e in events]
    assert event_types(events) == [d["type"] for d in got]
    types = [d["type"] for d in got]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta",
                          "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    start = got[0]["message"]
    assert start["role"] == "assistant" and start["content"] == []
    assert got[1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for d in got
                   if d["type"] == "content_block_delta")
    assert text == "Hello there."
    delta = got[-2]
    assert delta["delta"] == {"stop_reason": "end_turn",
                              "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 21, "output_tokens": 5}
    row = assert_keygate(gw, r, delta["keygate"], provider)
    assert row[1:3] == ["21", "5"]
    assert not any("keygate" in d for d in got[:-2])


def test_tools_are_translated_for_another_provider(gw, mock):
    r = send(gw, "openai",
             tools=[{"name": "get_weather", "description": "Weather",
                     "input_schema": {"type": "object", "properties": {
                         "city": {"type": "string"}}}}],
             tool_choice={"type": "any", "disable_parallel_tool_use": True},
             messages=[
                 {"role": "user", "content": "Weather in Oslo?"},
                 {"role": "assistant", "content": [
                     {"type": "text", "text": "Checking."},
                     {"type": "tool_use", "id": "toolu_1",
                      "name": "get_weather", "input": {"city": "Oslo"}}]},
                 {"role": "user", "content": [
                     {"type": "tool_result", "tool_use_id": "toolu_1",
                      "content": "rain"},
                     {"type": "text", "text": "Thanks."}]}])
    assert r.status == 200, r.body
    sent = mock.only("openai").json
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}}}}]
    assert sent["tool_choice"] == "required"
    assert sent["parallel_tool_calls"] is False
    assert sent["messages"][1:] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "rain"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks."}]}]


def test_the_version_header_reaches_anthropic(gw, mock):
    r = gw.post("/v1/messages", dict(BODY, model=MODELS["anthropic"]),
                headers=headers("anthropic", version=None))
    assert r.status == 200, r.body
    assert mock.only("anthropic").headers["anthropic-version"] == \
        "2023-06-01"


@pytest.mark.parametrize("body,field", [
    ({"model": "claude-3-5-haiku-latest",
      "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "claude-3-5-haiku-latest", "max_tokens": 0,
      "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "claude-3-5-haiku-latest", "max_tokens": 5,
      "messages": []}, "messages"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     "model"),
    ({"model": None, "max_tokens": 5,
      "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "", "max_tokens": 5,
      "messages": [{"role": "user", "content": "x"}]}, "model"),
], ids=["no-max-tokens", "zero-max-tokens", "no-messages", "no-model",
        "null-model", "empty-model"])
def test_a_bad_request_is_422_and_not_sent(gw, mock, body, field):
    r = gw.post("/v1/messages", body, headers=headers("anthropic"))
    err = ks.assert_error(r, 422, "validation_error")
    assert field in [d["field"] for d in err["details"]], err
    assert mock.seen() == []


def test_a_block_no_other_provider_reads_is_400(gw, mock):
    r = send(gw, "openai", messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}}]}])
    err = ks.assert_error(r, 400, "bad_request")
    assert "content block" in err["message"], err
    assert mock.seen() == []


def test_keys_and_scopes_as_for_chat(gw, mock):
    body = dict(BODY, model=MODELS["anthropic"])
    r = gw.post("/v1/messages", body, headers={
        "anthropic-version": "2023-06-01"})
    ks.assert_error(r, 401, "missing_api_key")
    r = gw.post("/v1/messages", body, headers=headers(
        "anthropic", key="kg_live_" + "x" * 49))
    ks.assert_error(r, 401, "invalid_api_key")
    made = gw.post("/v1/api_keys", {"name": "reader",
                                    "scopes": ["models:read"]},
                   headers=ks.auth())
    assert made.status == 201, made.body
    r = gw.post("/v1/messages", body,
                headers=headers("anthropic", key=made.json["key"]))
    err = ks.assert_error(r, 403, "insufficient_permissions")
    assert "chat:write" in err["message"]
    assert mock.seen() == []


def test_a_stream_cut_short_ends_with_an_error_event(gw, mock):
    """The provider goes away mid-stream: an Anthropic error event, with
    the keygate member, ends the stream; the call is billed once."""
    mock.behave("openai", Complete(content="Hello there.", pieces=6,
                                   stop_after=3))
    r, events = stream(gw, "openai")
    got = [e.json for e in events]
    assert event_types(events)[0] == "message_start"
    last = got[-1]
    assert events[-1].event == "error" and last["type"] == "error", got
    assert last["error"]["type"] == "upstream_error"
    assert "openai ended the stream early" in last["error"]["message"]
    assert not any("keygate" in d for d in got[:-1])
    rows = usage_rows(gw, last["keygate"]["request_id"])
    assert len(rows) == 1 and rows[0][4] == "partial", rows
    assert round(last["keygate"]["credits_charged"] * 1e6) == \
        int(rows[0][3])


def test_chat_completions_carry_the_headers_too(gw, mock):
    r = gw.post("/v1/chat/completions", {
        "model": MODELS["openai"],
        "messages": [{"role": "user", "content": "x"}]},
        headers=headers("openai"))
    assert r.status == 200, r.body
    kg = r.json["keygate"]
    assert r.headers["x-keygate-provider"] == kg["provider"] == "openai"
    assert r.headers["x-keygate-key-source"] == kg["key_source"] == "user"
    assert "x-keygate-pool-markup-applied" not in r.headers
    assert float(r.headers["x-keygate-credits-charged"]) == \
        kg["credits_charged"]


def test_the_key_rate_limit_holds(gw, mock):
    """The same per-key limit as every route: the second call in the
    window is 429 with Retry-After, and never reaches the provider."""
    made = gw.post("/v1/api_keys", {"name": "slow", "scopes": ["chat:write"],
                                    "rate_limit_max": 1,
                                    "rate_limit_window": "1 hour"},
                   headers=ks.auth())
    assert made.status == 201, made.body
    body = dict(BODY, model=MODELS["anthropic"])
    h = headers("anthropic", key=made.json["key"])
    first = gw.post("/v1/messages", body, headers=h)
    assert first.status == 200, first.body
    assert first.headers["x-ratelimit-limit"] == "1"
    assert first.headers["x-ratelimit-remaining"] == "0"
    second = gw.post("/v1/messages", body, headers=h)
    ks.assert_error(second, 429, "rate_limit_exceeded")
    assert int(second.headers["retry-after"]) > 0
    assert len(mock.seen("anthropic")) == 1
