"""The gateway calling Gemini's generateContent directly: the request is
translated from the OpenAI chat shape, the reply and the stream back to it.
The mock below speaks Gemini's wire format (as documented) on loopback."""

import http.server
import json
import threading
import time
import urllib.parse

import pytest

import keygate_stack as ks

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


class GeminiMock:
    """POST /google/v1beta/models/{m}:generateContent and
    :streamGenerateContent?alt=sse, as Gemini answers them; with
    generationConfig.candidateCount above 1, that many candidates."""

    def __init__(self):
        self.requests = []
        self.finish = "STOP"
        mock = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"null")
                mock.requests.append((self.path, dict(self.headers), body))
                url = urllib.parse.urlsplit(self.path)
                if self.headers.get("x-goog-api-key") != KEY:
                    return self.reply(400, {"error": {
                        "code": 400, "status": "INVALID_ARGUMENT",
                        "message": "API key not valid. Please pass a valid "
                                   "API key."}})
                prefix = "/google/v1beta/models/%s:" % MODEL
                n = (body.get("generationConfig") or {}).get(
                    "candidateCount", 1)
                if url.path == prefix + "generateContent" and n > 1:
                    return self.reply(200, {
                        "candidates": candidates(n),
                        "usageMetadata": {"promptTokenCount": 4,
                                          "candidatesTokenCount": 3 * n}})
                if url.path == prefix + "generateContent":
                    return self.reply(200, {
                        "candidates": [{"content": {"role": "model",
                                                    "parts": [{"text":
                                                               "Sunny."}]},
                                        "finishReason": mock.finish}],
                        "usageMetadata": {"promptTokenCount": 6,
                                          "candidatesTokenCount": 2},
                        "modelVersion": MODEL})
                if (url.path == prefix + "streamGenerateContent" and
                        url.query == "alt=sse"):
                    return self.stream(STREAM if n == 1 else stream_n(n))
                self.reply(404, {"error": {"code": 404,
                                           "message": "not found",
                                           "status": "NOT_FOUND"}})

            def reply(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self, events):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for data in events:
                    ev = ("data: %s\r\n\r\n" % json.dumps(data)).encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    self.wfile.flush()
                    time.sleep(0.02)
                # No terminator: the stream ends with the body.
                self.wfile.write(b"0\r\n\r\n")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gem(workdir, pg):
    mock = GeminiMock()
    s = ks.Stack(workdir.subdir("kg"), pg, dbname="gem_%d" % time.time_ns(),
                 workers=2, google_base_url=mock.url + "/google",
                 validate_llm_keys="false")
    yield s, mock
    s.close()
    mock.close()


def chat(s, body, key=KEY):
    headers = dict(ks.auth())
    headers["X-Google-Key"] = key
    return s.post("/v1/chat/completions", body, headers=headers)


def sse(resp):
    return [line[6:] for block in resp.body.decode().split("\n\n")
            for line in block.split("\n") if line.startswith("data: ")]


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
    path, headers, body = mock.requests[-1]
    # The key travels in a header, never in the URL.
    assert KEY not in path and "key=" not in path
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
    events = sse(r)
    assert events[-1] == "[DONE]"
    chunks, kg = ks.stream_chunks([json.loads(e) for e in events[:-1]],
                                  usage=True)
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
    mock.finish = "MALFORMED_FUNCTION_CALL"
    try:
        r = chat(s, {"model": MODEL,
                     "messages": [{"role": "user", "content": "x"}]})
        ks.assert_error(r, 502, "upstream_error")
        assert "MALFORMED_FUNCTION_CALL" in r.json["error"]["message"]
    finally:
        mock.finish = "STOP"


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
    assert mock.requests[-1][2]["generationConfig"] == {"candidateCount": 3}
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
    events = sse(r)
    assert events[-1] == "[DONE]"
    chunks, kg = ks.stream_chunks([json.loads(e) for e in events[:-1]])
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
    before = len(mock.requests)
    r = chat(s, {"model": MODEL, "n": n,
                 "messages": [{"role": "user", "content": "x"}]})
    err = ks.assert_error(r, 400, "bad_request")
    assert "n must be a whole number from 1 to 8" in err["message"], err
    assert len(mock.requests) == before
