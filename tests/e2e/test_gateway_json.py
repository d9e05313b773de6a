"""response_format through the gateway: OpenAI passes it on, Anthropic
gets a tool the model must call whose input schema is the answer's, Gemini
gets responseMimeType and responseJsonSchema; whichever the provider, the
client reads its JSON answer as the message content (what the OpenAI SDKs'
.parse() reads), streamed or not.  The mock providers are mock_llm's."""

import json
import pytest

import keygate_stack as ks
from mock_llm import SSEReader

KEYS = {"openai": "sk-proj-" + "j" * 40,
        "anthropic": "sk-ant-api03-" + "j" * 40,
        "google": "AIzaSy" + "j" * 33}
HEADERS = ks.INLINE_KEY_HEADERS
MODELS = ks.PROVIDER_MODELS
SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string"},
                         "date": {"type": "string"},
                         "participants": {"type": "array",
                                          "items": {"type": "string"}}},
          "required": ["name", "date", "participants"],
          "additionalProperties": False}
# As the OpenAI SDKs send a Pydantic / Zod model to .parse().
FORMAT = {"type": "json_schema",
          "json_schema": {"name": "CalendarEvent", "strict": True,
                          "schema": SCHEMA}}
ANSWER = {"name": "science fair", "date": "Friday",
          "participants": ["Alice", "Bob"]}
MESSAGES = [{"role": "system", "content": "Extract the event."},
            {"role": "user",
             "content": "Alice and Bob are going to a science fair on "
                        "Friday."}]


@pytest.fixture
def gw(llm_stack):
    return llm_stack


@pytest.fixture
def mock(llm):
    return llm


@pytest.fixture(autouse=True)
def fresh(mock):
    mock.serve(KEYS, answer=ANSWER)


def headers(provider):
    return dict(ks.auth(), **{HEADERS[provider]: KEYS[provider]})


def chat(gw, provider, **fields):
    body = dict({"model": MODELS[provider], "messages": MESSAGES}, **fields)
    return gw.post("/v1/chat/completions", body, headers=headers(provider))


def stream(gw, provider, **fields):
    body = dict({"model": MODELS[provider], "messages": MESSAGES,
                 "stream": True}, **fields)
    r = SSEReader(gw.url + "/v1/chat/completions", body, headers(provider))
    assert r.status == 200, r.body
    events = r.read_all()
    assert events[-1].data == "[DONE]", events[-3:]
    chunks, kg = ks.stream_chunks([e.json for e in events[:-1]])
    assert kg["provider"] == provider
    return chunks


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_a_schema_answer_is_the_message_content(gw, mock, provider):
    r = chat(gw, provider, response_format=FORMAT)
    assert r.status == 200, r.body
    choice = r.json["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert "tool_calls" not in choice["message"], choice
    assert json.loads(choice["message"]["content"]) == ANSWER
    assert r.json["keygate"]["provider"] == provider


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_a_schema_answer_streams_as_content(gw, mock, provider):
    chunks = stream(gw, provider, response_format=FORMAT)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not any("tool_calls" in d for d in deltas), deltas
    text = "".join(d.get("content") or "" for d in deltas)
    assert json.loads(text) == ANSWER
    finishes = [c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]


def test_anthropic_is_made_to_call_the_schema_tool(gw, mock):
    assert chat(gw, "anthropic", response_format=FORMAT).status == 200
    sent = mock.only("anthropic").json
    assert sent["tools"] == [{
        "name": "CalendarEvent",
        "description": "Give your answer as the input of this tool, "
                       "following its schema.",
        "input_schema": SCHEMA}]
    assert sent["tool_choice"] == {"type": "tool", "name": "CalendarEvent"}
    assert "response_format" not in sent


def test_anthropic_json_object_gets_an_instruction_and_any_object(gw, mock):
    r = chat(gw, "anthropic", response_format={"type": "json_object"})
    assert r.status == 200, r.body
    assert json.loads(r.json["choices"][0]["message"]["content"]) == ANSWER
    sent = mock.only("anthropic").json
    assert sent["system"] == "Extract the event.\nRespond with a JSON " \
        "object."
    assert sent["tools"][0]["name"] == "json_answer"
    assert sent["tools"][0]["input_schema"] == {
        "type": "object", "additionalProperties": True}
    assert sent["tool_choice"] == {"type": "tool", "name": "json_answer"}


def test_anthropic_with_tools_of_its_own_may_call_them(gw, mock):
    tool = {"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object"}}}
    r = chat(gw, "anthropic", response_format=FORMAT, tools=[tool])
    assert r.status == 200, r.body
    sent = mock.only("anthropic").json
    assert [t["name"] for t in sent["tools"]] == ["lookup", "CalendarEvent"]
    assert sent["tool_choice"] == {"type": "any"}


def test_google_gets_json_out_and_the_schema(gw, mock):
    assert chat(gw, "google", response_format=FORMAT).status == 200
    gc = mock.only("google").json["generationConfig"]
    # The output tokens held for the call are its limit.
    assert gc == {"responseMimeType": "application/json",
                  "responseJsonSchema": SCHEMA, "maxOutputTokens": 4096}
    assert chat(gw, "google",
                response_format={"type": "json_object"}).status == 200
    gc = mock.seen("google")[-1].json["generationConfig"]
    assert gc == {"responseMimeType": "application/json",
                  "maxOutputTokens": 4096}


def test_openai_gets_response_format_as_sent(gw, mock):
    assert chat(gw, "openai", response_format=FORMAT).status == 200
    assert mock.only("openai").json["response_format"] == FORMAT


@pytest.mark.parametrize("provider", ["anthropic", "google"])
@pytest.mark.parametrize("fmt,message", [
    ({"type": "yaml"}, "response_format.type must be text, json_object or "
                       "json_schema"),
    ("json", "response_format.type must be text, json_object or "
             "json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "x"}},
     "response_format.json_schema.schema must be an object"),
], ids=["yaml", "string", "no-schema"])
def test_a_format_that_cannot_be_sent_is_400(gw, mock, provider, fmt,
                                             message):
    r = chat(gw, provider, response_format=fmt)
    err = ks.assert_error(r, 400, "bad_request")
    assert message in err["message"], err
    assert mock.seen() == []
