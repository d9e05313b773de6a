"""The gateway calling Anthropic's Messages API directly: the request is
translated from the OpenAI chat shape, the reply and the stream back to it.
The mock below speaks Anthropic's wire format (as documented) on loopback."""

import json

import pytest

import keygate_stack as ks
from mock_llm import Choose, Fail, Raw, Stream

KEY = "sk-ant-api03-" + "k" * 40
ROOT = "00000000-0000-0000-0000-000000000001"

STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "model": "claude-3-5-haiku-latest", "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta",
                                       "text": "Looking"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": " up"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "tool_use",
                                               "id": "toolu_1",
                                               "name": "get_weather",
                                               "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta",
                                       "partial_json": "{\"city\":"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta",
                                       "partial_json": " \"Oslo\"}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta",
                       "delta": {"stop_reason": "tool_use",
                                 "stop_sequence": None},
                       "usage": {"output_tokens": 40}}),
    ("message_stop", {"type": "message_stop"}),
]


def messages(events=STREAM):
    """What the mock Anthropic answers POST /v1/messages with: `events`
    for a stream, else a message of its own."""
    def answer(ex):
        body = ex.json or {}
        if body.get("stream"):
            return Stream(events, pause=0.02)
        return Raw(200, {
            "id": "msg_2", "type": "message", "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": "It rains."}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 4,
                      "cache_read_input_tokens": 3}})
    return Choose(answer)


@pytest.fixture(scope="module")
def ant(workdir, pg):
    with ks.direct_stack(workdir, pg, "anthropic", KEY, messages(),
                         "ant") as both:
        yield both


def chat(s, body, key=KEY):
    return ks.inline_chat(s, "anthropic", body, key)


def test_reply_is_translated_both_ways(ant):
    s, mock = ant
    mock.clear()
    r = chat(s, {"model": "claude-3-5-haiku-latest", "temperature": 1.5,
                 "stop": ["END"],
                 "messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Weather?"}]})
    assert r.status == 200, r.body
    assert r.json["object"] == "chat.completion"
    assert r.json["choices"][0]["message"] == {"role": "assistant",
                                               "content": "It rains."}
    assert r.json["choices"][0]["finish_reason"] == "stop"
    assert r.json["usage"] == {"prompt_tokens": 15, "completion_tokens": 4,
                               "total_tokens": 19}
    assert r.json["keygate"]["provider"] == "anthropic"
    assert r.json["keygate"]["key_source"] == "user"
    assert r.json["keygate"]["pool_markup_applied"] is None
    headers, body = mock.seen()[-1].headers, mock.seen()[-1].json
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert ks.DEV_KEY not in json.dumps(headers) + json.dumps(body)
    assert body == {"model": "claude-3-5-haiku-latest",
                    "system": "Be brief.",
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": "Weather?"}]}],
                    "max_tokens": 4096, "temperature": 1.0,
                    "stop_sequences": ["END"]}


def test_stream_is_translated_with_tool_calls(ant):
    s, mock = ant
    r = chat(s, {"model": "claude-3-5-haiku-latest", "stream": True,
                 "stream_options": {"include_usage": True},
                 "messages": [{"role": "user", "content": "Weather?"}]})
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks, kg = ks.finished_stream(r, usage=True)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    text = "".join(d.get("content", "") for d in deltas)
    assert text == "Looking up"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "toolu_1", "type": "function",
                        "function": {"name": "get_weather",
                                     "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == \
        '{"city": "Oslo"}'
    finishes = [c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    usage = [c["usage"] for c in chunks if "usage" in c]
    assert usage == [{"prompt_tokens": 25, "completion_tokens": 40,
                      "total_tokens": 65}]
    assert kg["provider"] == "anthropic"
    assert kg["request_id"] == r.headers["x-request-id"]
    assert all(c["id"] == "msg_1" for c in chunks)


def test_usage_chunk_only_when_asked(ant):
    s, _ = ant
    r = chat(s, {"model": "claude-3-5-haiku-latest", "stream": True,
                 "messages": [{"role": "user", "content": "Weather?"}]})
    chunks, kg = ks.stream_chunks([json.loads(e) for e in ks.sse_data(r)[:-1]])
    assert not any("usage" in c for c in chunks)
    assert kg["provider"] == "anthropic" and kg["credits_charged"] >= 0


def test_provider_error_is_passed_on(ant):
    s, mock = ant
    r = chat(s, {"model": "claude-3-5-haiku-latest",
                 "messages": [{"role": "user", "content": "x"}]},
             key="sk-ant-api03-" + "w" * 40)
    ks.assert_error(r, 401)
    assert "invalid x-api-key" in r.json["error"]["message"]
    mock.behave("anthropic", Fail(529, message="Overloaded"))
    try:
        r = chat(s, {"model": "claude-3-5-haiku-latest",
                     "messages": [{"role": "user", "content": "x"}]})
        ks.assert_error(r, 502, "upstream_error")
    finally:
        mock.behave("anthropic", messages())


def test_an_error_mid_stream_keeps_its_type(ant):
    """Anthropic ends a stream it cannot finish with an error event: the
    client gets an error event in OpenAI's shape, its type kept, then
    [DONE]."""
    s, mock = ant
    mock.behave("anthropic", messages(STREAM[:5] + [("error", {
        "type": "error", "error": {"type": "overloaded_error",
                                   "message": "Overloaded"}})]))
    try:
        r = chat(s, {"model": "claude-3-5-haiku-latest", "stream": True,
                     "messages": [{"role": "user", "content": "x"}]})
    finally:
        mock.behave("anthropic", messages())
    assert r.status == 200, r.body
    events = ks.sse_data(r)
    assert events[-1] == "[DONE]", events
    # The error, with the keygate member, last before [DONE].
    last = json.loads(events[-2])
    assert last["error"] == {"message": "Overloaded",
                             "type": "overloaded_error",
                             "code": "upstream_error"}, last
    assert last["keygate"]["provider"] == "anthropic"
    assert any("Looking" in e for e in events[:-2]), events
    assert all(json.loads(e)["choices"] for e in events[:-2]), events


def test_untranslatable_request_is_400_and_not_sent(ant):
    s, mock = ant
    before = len(mock.seen())
    r = chat(s, {"model": "claude-3-5-haiku-latest", "n": 2,
                 "messages": [{"role": "user", "content": "x"}]})
    ks.assert_error(r, 400, "bad_request")
    assert "n must be 1" in r.json["error"]["message"]
    assert len(mock.seen()) == before


def test_provider_error_keeps_its_type(ant):
    """Anthropic names its error type and no code: the type is passed on,
    the code is the generic one."""
    s, mock = ant
    mock.behave("anthropic", Fail(400, message="max_tokens: must be at most "
                                               "8192"))
    try:
        r = chat(s, {"model": "claude-3-5-haiku-latest",
                     "messages": [{"role": "user", "content": "x"}]})
    finally:
        mock.behave("anthropic", messages())
    err = ks.assert_error(r, 400, "upstream_error")
    assert err["type"] == "invalid_request_error"
    assert err["message"] == "anthropic: max_tokens: must be at most 8192"
    r = chat(s, {"model": "claude-3-5-haiku-latest",
                 "messages": [{"role": "user", "content": "x"}]},
             key="sk-ant-api03-" + "w" * 40)
    err = ks.assert_error(r, 401, "invalid_provider_key")
    assert err["type"] == "authentication_error"


def test_several_choices_are_refused(ant):
    s, mock = ant
    before = len(mock.seen())
    r = chat(s, {"model": "claude-3-5-haiku-latest", "n": 2,
                 "messages": [{"role": "user", "content": "x"}]})
    err = ks.assert_error(r, 400, "bad_request")
    assert "n must be 1" in err["message"], err
    assert len(mock.seen()) == before
