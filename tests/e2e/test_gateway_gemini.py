"""The gateway calling Gemini's generateContent directly: the request is
translated from the OpenAI chat shape, the reply and the stream back to it.
The mock below speaks Gemini's wire format (as documented) on loopback."""

import json

import pytest

import keygate_stack as ks
from mock_llm import Choose, Fail, Raw, Stream

KEY = "AIzaSy" + "g" * 33
MODEL = "gemini-2.0-flash"

STREAM = [
    {"candidates": [{"content": {"role": "model",
                                 "parts": [{"text": "Let me "}]}}]},
    {"candidates": [{"content": {"role": "model",
                                 "parts": [{"text": "check."}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather",
                          "args": {"city": "Oslo"}}}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": []},
                     "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 7}},
]


def candidates(n, finish=True):
    """n candidates as Gemini numbers them: index 0 left out, as proto3
    JSON leaves out every zero."""
    out = []
    for k in range(n):
        c = {"content": {"role": "model",
                         "parts": [{"text": "Answer %d." % k}]}}
        if k:
            c["index"] = k
        if finish:
            c["finishReason"] = "STOP"
        out.append(c)
    return out


def stream_n(n):
    """A stream of n candidates: each says its answer in its own event,
    the last one first, then all finish together."""
    events = []
    for k in reversed(range(n)):
        c = candidates(n, finish=False)[k]
        events.append({"candidates": [c]})
    events.append({"candidates": [
        dict(c, content={"role": "model", "parts": []})
        for c in candidates(n)],
        "usageMetadata": {"promptTokenCount": 4,
                          "candidatesTokenCount": 3 * n}})
    return events


def generate(finish="STOP"):
    """What the mock Gemini answers {MODEL}:generateContent and
    :streamGenerateContent?alt=sse with; with
    generationConfig.candidateCount above 1, that many candidates.  A
    whole answer finishes with `finish`."""
    def answer(ex):
        body = ex.json or {}
        prefix = "/google/v1beta/models/%s:" % MODEL
        n = (body.get("generationConfig") or {}).get("candidateCount", 1)
        if ex.path == prefix + "generateContent" and n > 1:
            return Raw(200, {
                "candidates": candidates(n),
                "usageMetadata": {"promptTokenCount": 4,
                                  "candidatesTokenCount": 3 * n}})
        if ex.path == prefix + "generateContent":
            return Raw(200, {
                "candidates": [{"content": {"role": "model",
                                            "parts": [{"text": "Sunny."}]},
                                "finishReason": finish}],
                "usageMetadata": {"promptTokenCount": 6,
                                  "candidatesTokenCount": 2},
                "modelVersion": MODEL})
        if (ex.path == prefix + "streamGenerateContent" and
                ex.query == {"alt": ["sse"]}):
            # No terminator: the stream ends with the body.
            return Stream(STREAM if n == 1 else stream_n(n), pause=0.02)
        return Fail(404, message="not found")
    return Choose(answer)


@pytest.fixture(scope="module")
def gem(workdir, pg):
    with ks.direct_stack(workdir, pg, "google", KEY, generate(),
                         "gem") as both:
        yield both


def chat(s, body, key=KEY):
    return ks.inline_chat(s, "google", body, key)


def test_reply_is_translated_both_ways(gem):
    s, mock = gem
    r = chat(s, {"model": MODEL, "max_tokens": 20,
                 "messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Weather?"}]})
    assert r.status == 200, r.body
    assert r.json["choices"][0]["message"] == {"role": "assistant",
                                               "content": "Sunny."}
    assert r.json["choices"][0]["finish_reason"] == "stop"
    assert r.json["usage"] == {"prompt_tokens": 6, "completion_tokens": 2,
                               "total_tokens": 8}
    assert r.json["keygate"]["provider"] == "google"
    req = mock.seen()[-1]
    headers, body = req.headers, req.json
    # The key travels in a header, never in the URL.
    assert KEY not in req.path and "key" not in req.query
    assert KEY not in json.dumps(req.query)
    assert headers["x-goog-api-key"] == KEY
    assert ks.DEV_KEY not in json.dumps(headers) + json.dumps(body)
    assert body == {"contents": [{"role": "user",
                                  "parts": [{"text": "Weather?"}]}],
                    "systemInstruction": {"parts": [{"text": "Be brief."}]},
                    "generationConfig": {"maxOutputTokens": 20}}


def test_stream_is_translated_and_closed(gem):
    s, _ = gem
    r = chat(s, {"model": MODEL, "stream": True,
                 "stream_options": {"include_usage": True},
                 "messages": [{"role": "user", "content": "Weather?"}]})
    assert r.status == 200, r.body
    chunks, kg = ks.finished_stream(r, usage=True)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Let me check."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls == [{"index": 0, "id": "call_0", "type": "function",
                      "function": {"name": "get_weather",
                                   "arguments": '{"city":"Oslo"}'}}]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"] and c["choices"][0]["finish_reason"]]
    # STOP after a function call is tool_calls.
    assert finishes == ["tool_calls"]
    assert [c["usage"] for c in chunks if "usage" in c] == [
        {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}]
    assert kg["provider"] == "google"


def test_malformed_function_call_is_an_error(gem):
    s, mock = gem
    mock.behave("google", generate("MALFORMED_FUNCTION_CALL"))
    try:
        r = chat(s, {"model": MODEL,
                     "messages": [{"role": "user", "content": "x"}]})
        ks.assert_error(r, 502, "upstream_error")
        assert "MALFORMED_FUNCTION_CALL" in r.json["error"]["message"]
    finally:
        mock.behave("google", generate())


def test_rejected_key_is_passed_on(gem):
    s, _ = gem
    r = chat(s, {"model": MODEL,
                 "messages": [{"role": "user", "content": "x"}]},
             key="AIzaSy" + "w" * 33)
    ks.assert_error(r, 400)
    assert "API key not valid" in r.json["error"]["message"]


def test_provider_error_keeps_its_status_as_code(gem):
    """Gemini names no error type, but its status ("INVALID_ARGUMENT")
    is the code; the type is the one its HTTP status calls for."""
    s, _ = gem
    r = chat(s, {"model": MODEL,
                 "messages": [{"role": "user", "content": "x"}]},
             key="AIzaSy" + "w" * 33)
    err = ks.assert_error(r, 400, "INVALID_ARGUMENT")
    assert err["type"] == "invalid_request_error"
    assert err["message"] == ("google: API key not valid. Please pass a "
                              "valid API key.")


def test_several_choices_come_back_as_choices(gem):
    s, mock = gem
    r = chat(s, {"model": MODEL, "n": 3,
                 "messages": [{"role": "user", "content": "Weather?"}]})
    assert r.status == 200, r.body
    assert mock.seen()[-1].json["generationConfig"] == {"candidateCount": 3}
    assert r.json["choices"] == [
        {"index": k, "message": {"role": "assistant",
                                 "content": "Answer %d." % k},
         "finish_reason": "stop"} for k in range(3)]
    assert r.json["usage"] == {"prompt_tokens": 4, "completion_tokens": 9,
                               "total_tokens": 13}


def test_several_choices_stream_by_index(gem):
    s, _ = gem
    r = chat(s, {"model": MODEL, "n": 2, "stream": True,
                 "messages": [{"role": "user", "content": "Weather?"}]})
    assert r.status == 200, r.body
    chunks, kg = ks.finished_stream(r)
    text, finish, roles = {}, {}, {}
    for c in chunks:
        for ch in c["choices"]:
            k = ch["index"]
            roles.setdefault(k, ch["delta"].get("role"))
            text[k] = text.get(k, "") + ch["delta"].get("content", "")
            if ch["finish_reason"]:
                assert k not in finish, "choice %d finished twice" % k
                finish[k] = ch["finish_reason"]
    assert text == {0: "Answer 0.", 1: "Answer 1."}
    assert finish == {0: "stop", 1: "stop"}
    # Each choice opens with its role before any of its content.
    assert roles == {0: "assistant", 1: "assistant"}
    assert kg["provider"] == "google"


@pytest.mark.parametrize("n", [0, 9, "2", 1.5])
def test_n_out_of_range_is_400_and_not_sent(gem, n):
    s, mock = gem
    before = len(mock.seen())
    r = chat(s, {"model": MODEL, "n": n,
                 "messages": [{"role": "user", "content": "x"}]})
    err = ks.assert_error(r, 400, "bad_request")
    assert "n must be a whole number from 1 to 8" in err["message"], err
    assert len(mock.seen()) == before
