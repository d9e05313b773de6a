"""keygate driven by the official client SDKs, pointed at it by base URL
only: openai-node (`openai`) for /v1/chat/completions, /v1/models and
/v1/embeddings, and Anthropic's (`@anthropic-ai/sdk`) for /v1/messages,
for a model of each provider (OpenAI, Anthropic, Gemini, OpenRouter) behind
loopback mocks that speak each provider's own wire format.

The SDKs are the registry's packages pinned in tests/sdk/package.json and
package-lock.json; tests/dev.sh installs them with `npm ci` into
tests/sdk/node_modules.  Small Node scripts there (openai_client.mjs,
anthropic_client.mjs) make the calls with the SDKs' documented usage and
print what a program would see as JSON; the tests assert on it, and on what
the mock providers received.

The reference documents' client code (JavaScript in tests/sdk/snippets.mjs,
curl commands here) runs too, changed only in base URL, brand names and
keys; NOT_RUN lists the snippets that cannot work, and why.

The Python SDK is not used: it cannot be installed on a fresh Debian 12
machine (there is no python3-openai package in bookworm, and the tests do
not reach PyPI), so the reference documents' Python snippets are listed
below as not run, with that reason.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
import types
import urllib.parse

import pytest

import keygate_stack as ks
from mock_llm import ALL_BASES, Choose, Complete, Fail, MockLLM
from mock_llm import tool_result

SDK_DIR = os.path.join(ks.SRCDIR, "tests", "sdk")
NODE_MODULES = os.path.join(SDK_DIR, "node_modules")
NODE_TIMEOUT = 240          # s, one node run of several calls

PROVIDER_KEYS = {
    "openai": "sk-proj-" + "o" * 40,
    "anthropic": "sk-ant-api03-" + "a" * 40,
    "google": "AIza" + "g" * 35,
    "openrouter": "sk-or-v1-" + "r" * 64,
}
POOL_KEY = "sk-or-v1-" + "p" * 64

# A chat model of each provider, and the gateway's name for the provider.
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("google", "gemini-2.0-flash"),
    ("openrouter", "openai/gpt-4o-mini"),
]
# Anthropic has no embeddings API.
EMBEDDING_MODELS = [
    ("openai", "text-embedding-3-small"),
    ("google", "gemini-embedding-001"),
    ("openrouter", "openai/text-embedding-3-small"),
]

# What @anthropic-ai/sdk (as package-lock.json pins it) sends.
ANTHROPIC_SDK_VERSION = "2026-10-21"

REPORT = {"city": "Oslo", "temperature_celsius": 21}
UPSTREAM_400 = "temperature is out of range for this model"


def greeting(provider, n=1, i=0):
    return ("Hello from %s." % provider if n == 1 else
            "Hello from %s, choice %d." % (provider, i))


def weather_answer(result):
    return "It is %s in %s." % (result["forecast"], result["city"])


def vector(text):
    """An embedding exact in float32, so base64 round trips compare."""
    return [float(len(text)), 0.5, -0.25, 0.125]


def asks(body, word):
    """True if a request carries `word` anywhere (a prompt, a schema)."""
    return word in json.dumps(body)


# ---------------------------------------------------------------------------
# The providers, each in its own wire format

_armed = set()
_armed_lock = threading.Lock()


def arm_429(provider):
    """Makes `provider` answer the next "Fail with 429" with its 429."""
    with _armed_lock:
        _armed.add(provider)


def disarm_429(provider):
    """True once after arm_429(provider)."""
    with _armed_lock:
        armed = provider in _armed
        _armed.discard(provider)
        return armed


def answer(ex):
    """What every provider (OpenAI, OpenRouter, Anthropic, Gemini and an
    operator's OpenAI-compatible server, all on the one mock) answers,
    from what the request asks, each in its own wire format: a prompt
    containing "Fail with 400" gets the provider's own 400; one containing
    "Fail with 429" gets its 429 (Retry-After: 1) once after arm_429();
    embeddings are vector(text); the weather report as JSON when the
    request carries its schema (in whatever form the provider takes it),
    the tool's result in words when one is sent back, a tool call when
    tools are offered, n choices when n are asked for, and a greeting
    otherwise."""
    body = ex.json if isinstance(ex.json, dict) else {}
    provider = ex.provider
    if asks(body, "Fail with 400"):
        return Fail(400, message=UPSTREAM_400)
    if asks(body, "Fail with 429") and disarm_429(provider):
        return Fail(429, message="Rate limit reached for requests.",
                    headers={"Retry-After": "1"})
    if ex.route == "embeddings":
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return Complete(vectors=vector, usage=(2 * count, 0))
    usage = (9, 4)
    result = tool_result(ex)
    if asks(body, "temperature_celsius"):
        return Complete(content=json.dumps(REPORT), answer=REPORT,
                        usage=usage)
    if result is not None:
        return Complete(content=weather_answer(result), usage=usage)
    if body.get("tools"):
        return Complete(tool_call=("get_weather", {"city": "Oslo"}),
                        usage=usage)
    n = body.get("n") or (body.get("generationConfig") or {}).get(
        "candidateCount") or 1
    return Complete(content=[greeting(provider, n, i) for i in range(n)],
                    usage=usage)


def providers():
    """The mock, every provider accepting its key of PROVIDER_KEYS (and
    OpenRouter the pool's, the operator's server none at all) and
    answering with answer()."""
    mock = MockLLM()
    for provider, key in PROVIDER_KEYS.items():
        mock.accept(provider, key)
    mock.accept("openrouter", POOL_KEY)
    mock.accept("local", None)
    for provider in ALL_BASES:
        mock.behave(provider, Choose(answer))
    return mock


# ---------------------------------------------------------------------------
# The stack, the keys, and node

def run_node(script, *args, env=None):
    """Runs node tests/sdk/SCRIPT ARGS; returns the CompletedProcess."""
    if shutil.which("node") is None:
        raise ks.StackError("node is not installed (tests/dev.sh installs "
                            "Debian's nodejs when there is none)")
    if not os.path.isdir(NODE_MODULES):
        raise ks.StackError("%s is missing: run tests/dev.sh (npm ci in "
                            "tests/sdk) first" % NODE_MODULES)
    return subprocess.run(
        ["node", os.path.join(SDK_DIR, script)] + list(args),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=SDK_DIR, timeout=NODE_TIMEOUT,
        env=ks.clean_env(dict(env or {}, NO_COLOR="1")), text=True)


def node(script, plan):
    """Runs tests/sdk/SCRIPT with `plan` and returns the JSON it printed."""
    proc = run_node(script, json.dumps(plan))
    assert proc.returncode == 0, "node %s exited %d:\n%s%s" % (
        script, proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def create_key(s, admin, **fields):
    r = s.post("/v1/api_keys", dict({"name": "sdk"}, **fields),
               headers=ks.auth(admin))
    assert r.status == 201, r.body
    return r.json["key"]


@pytest.fixture(scope="module")
def gw(workdir, pg):
    mock = providers()
    cfg = mock.config()
    cfg.update(workers=3, validate_llm_keys="false", credits_enforce="true",
               pool_openrouter_key=POOL_KEY, pool_markup="0.25",
               upstreams='"vllm url=%s/local/v1 models=vllm-primary"'
               % mock.url)
    try:
        s = ks.Stack(workdir.subdir("kg"), pg,
                     dbname="sdk_%d" % time.time_ns(), **cfg)
    except BaseException:
        mock.close()
        raise
    try:
        # An admin key of its own, so the dev key may be revoked later.
        admin = create_key(s, ks.DEV_KEY, scopes=["*"], name="admin")
        r = s.post("/v1/tenants/%s/credits" % ks.ROOT_TENANT,
                   {"amount": 1000, "reason": "sdk tests"},
                   headers=ks.auth(admin))
        assert r.status == 200, r.body
        r = s.post("/v1/account/llm-keys", {
            "%s_key" % p: k for p, k in PROVIDER_KEYS.items()},
            headers=ks.auth(admin))
        assert r.status == 200, r.body
        # A tenant with provider keys of its own but almost no credits.
        r = s.post("/v1/tenants", {"name": "poor"}, headers=ks.auth(admin))
        assert r.status == 201, r.body
        poor_tenant = r.json["id"]
        poor = create_key(s, admin, tenant_id=poor_tenant,
                          scopes=["chat:write", "llm_keys:write"])
        r = s.post("/v1/account/llm-keys", {
            "%s_key" % p: k for p, k in PROVIDER_KEYS.items()},
            headers=ks.auth(poor))
        assert r.status == 200, r.body
        r = s.post("/v1/tenants/%s/credits" % poor_tenant,
                   {"amount": 0.01, "reason": "sdk tests"},
                   headers=ks.auth(admin))
        assert r.status == 200, r.body
        g = types.SimpleNamespace(
            s=s, mock=mock, admin=admin, poor=poor,
            base_url=s.url + "/v1",
            user=create_key(s, admin, scopes=["*"], name="sdk user"),
            models_only=create_key(s, admin, scopes=["models:read"]),
            limited={p: create_key(s, admin, scopes=["chat:write"],
                                   rate_limit_max=1,
                                   rate_limit_window="3 seconds")
                     for p, _ in MODELS})
        yield g
    finally:
        s.close()
        mock.close()


def openai_run(g, model, steps, **extra):
    """Runs openai_client.mjs for `model`, as g.user unless extra says
    another key."""
    plan = dict({"base_url": g.base_url, "key": g.user, "model": model,
                 "steps": steps}, **extra)
    return node("openai_client.mjs", plan)


def ok(result):
    """A step's result, which must not be an error."""
    assert "error" not in result, "the SDK call threw: %r" % (
        result.get("error"),)
    return result


def assert_keygate(block, provider):
    assert isinstance(block, dict), "no keygate member: %r" % (block,)
    assert block["provider"] == provider, block
    assert block["key_source"] == "user", block
    assert block["pool_markup_applied"] is None, block
    assert block["credits_charged"] > 0, block
    assert re.fullmatch(r"req_[0-9a-f]+", block["request_id"]), block


# ---------------------------------------------------------------------------
# openai-node: chat completions

@pytest.fixture(scope="module")
def chat_runs(gw):
    """One node run per model: create, both streams, tools, n, parse."""
    runs = {}
    for provider, model in MODELS:
        runs[provider] = openai_run(gw, model, [
            "create", "stream", "stream_usage", "stream_helper", "tools",
            "run_tools", "n", "parse"])
    return runs


@pytest.mark.parametrize("provider,model", MODELS)
def test_create_returns_the_completion_with_keygate_block(gw, chat_runs,
                                                          provider, model):
    c = ok(chat_runs[provider]["create"])
    assert c["object"] == "chat.completion"
    assert c["content"] == greeting(provider)
    assert c["finish_reason"] == "stop"
    assert c["usage"]["prompt_tokens"] == 9
    assert c["usage"]["completion_tokens"] == 4
    assert_keygate(c["keygate"], provider)


@pytest.mark.parametrize("provider,model", MODELS)
def test_plain_stream_loop_reads_every_chunk(gw, chat_runs, provider, model):
    """`for await (const chunk of stream) chunk.choices[0].delta.content`:
    every chunk has the OpenAI shape and a choice; keygate's block rides
    on the chunk with finish_reason."""
    r = ok(chat_runs[provider]["stream"])
    assert r["text"] == greeting(provider)
    chunks, kg = ks.stream_chunks(r["chunks"])
    assert len({c["id"] for c in chunks}) == 1, chunks
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop", chunks
    assert_keygate(kg, provider)


@pytest.mark.parametrize("provider,model", MODELS)
def test_stream_with_include_usage_ends_with_the_usage_chunk(
        gw, chat_runs, provider, model):
    r = ok(chat_runs[provider]["stream_usage"])
    assert r["text"] == greeting(provider)
    chunks, kg = ks.stream_chunks(r["chunks"], usage=True)
    assert chunks[-1]["usage"]["prompt_tokens"] == 9, chunks[-1]
    assert chunks[-1]["usage"]["completion_tokens"] == 4, chunks[-1]
    assert_keygate(kg, provider)


@pytest.mark.parametrize("provider,model", MODELS)
def test_stream_helper_assembles_the_completion(gw, chat_runs, provider,
                                                model):
    r = ok(chat_runs[provider]["stream_helper"])
    assert r["text"] == greeting(provider)
    assert r["content"] == greeting(provider)
    assert r["finish_reason"] == "stop"


@pytest.mark.parametrize("provider,model", MODELS)
def test_tool_call_round_trip(gw, chat_runs, provider, model):
    r = ok(chat_runs[provider]["tools"])
    assert r["first_finish_reason"] == "tool_calls"
    assert r["call"]["type"] == "function"
    assert r["call"]["name"] == "get_weather"
    assert r["call"]["args"] == {"city": "Oslo"}
    assert r["call"]["id"]
    assert r["answer"] == "It is light rain in Oslo."
    assert r["second_finish_reason"] == "stop"


@pytest.mark.parametrize("provider,model", MODELS)
def test_streamed_tool_loop_of_the_sdk(gw, chat_runs, provider, model):
    """runTools() with stream: true assembles the call from the streamed
    deltas, runs the function and sends its result back."""
    r = ok(chat_runs[provider]["run_tools"])
    assert r["calls"] == [[{"name": "get_weather",
                            "arguments": {"city": "Oslo"}}]], r
    assert r["content"] == "It is light rain in Oslo."


@pytest.mark.parametrize("provider,model", [m for m in MODELS
                                            if m[0] != "anthropic"])
def test_n_choices(gw, chat_runs, provider, model):
    r = ok(chat_runs[provider]["n"])
    assert r["indexes"] == [0, 1, 2]
    assert r["contents"] == [greeting(provider, 3, i) for i in range(3)]


def test_n_choices_for_anthropic_is_a_bad_request(gw, chat_runs):
    """Anthropic answers one choice: the SDK raises BadRequestError."""
    err = chat_runs["anthropic"]["n"]["error"]
    assert err["instance_of"] == "BadRequestError", err
    assert err["status"] == 400
    assert "n must be 1" in err["error"]["message"], err


@pytest.mark.parametrize("provider,model", MODELS)
def test_parse_with_a_json_schema(gw, chat_runs, provider, model):
    """client.chat.completions.parse() with a plain JSON schema (no zod)
    gets the object back, whichever provider answers."""
    r = ok(chat_runs[provider]["parse"])
    assert r["parsed"] == REPORT


# ---------------------------------------------------------------------------
# openai-node: models and embeddings

@pytest.fixture(scope="module")
def model_runs(gw):
    return {provider: openai_run(gw, model, ["models"])
            for provider, model in MODELS}


@pytest.mark.parametrize("provider,model", MODELS)
def test_models_list_and_retrieve(gw, model_runs, provider, model):
    r = ok(model_runs[provider]["models"])
    ids = [m["id"] for m in r["listed"]]
    # The list names the models keygate knows; an OpenRouter id
    # (vendor/model) is not listed, but retrieved by name.
    if "/" not in model:
        assert model in ids, ids
    else:
        assert model not in ids, ids
    for m in r["listed"]:
        assert "*" not in m["id"], "a pattern listed as a model: %r" % m
        assert m["object"] == "model", m
        assert isinstance(m["created"], int), m
        assert isinstance(m["owned_by"], str) and m["owned_by"], m
    one = r["retrieved"]
    assert one["id"] == model and one["object"] == "model", one
    assert isinstance(one["created"], int), one


@pytest.mark.parametrize("provider,model", EMBEDDING_MODELS)
def test_embeddings(gw, provider, model):
    mark = gw.mock.mark()
    r = ok(openai_run(gw, model, ["embeddings"])["embeddings"])
    assert r["object"] == "list"
    assert r["vectors"] == [{"index": 0, "embedding": vector("hello")},
                            {"index": 1, "embedding": vector("world")}]
    assert r["float"] == [vector("hello")]
    # Gemini counts no tokens for embeddings; the others do.
    assert isinstance(r["usage"]["prompt_tokens"], int), r["usage"]
    if provider != "google":
        assert r["usage"]["prompt_tokens"] == 4, r["usage"]
    assert gw.mock.seen(provider, since=mark), \
        "no call reached %s" % provider


@pytest.mark.parametrize("provider,model", MODELS)
def test_inline_openrouter_key_serves_any_model(gw, provider, model):
    """A tenant with no stored key, an X-OpenRouter-Key in the client's
    defaultHeaders: every model goes to OpenRouter, under its OpenRouter
    id, on that key, without the pool's markup."""
    _, key = tenant_key(gw, "inline openrouter " + provider)
    mark = gw.mock.mark()
    r = ok(openai_run(gw, model, ["inline_key"], key=key, headers={
        "X-OpenRouter-Key": PROVIDER_KEYS["openrouter"]})["inline_key"])
    assert r["content"] == greeting("openrouter")
    assert_keygate(r["keygate"], "openrouter")
    sent = gw.mock.seen("openrouter", since=mark)
    expected = model if "/" in model else gw.s.pg.scalar(
        "SELECT openrouter_id FROM openrouter_models WHERE model = '%s'"
        % model, dbname=gw.s.dbname)
    assert [r.json["model"] for r in sent] == [expected]
    assert [r.headers["authorization"] for r in sent] == [
        "Bearer " + PROVIDER_KEYS["openrouter"]]


# ---------------------------------------------------------------------------
# openai-node: every error class

@pytest.fixture(scope="module")
def error_runs(gw):
    runs = {}
    for provider, model in MODELS:
        arm_429(provider)
        runs[provider] = openai_run(
            gw, model, ["unauthorized", "forbidden", "no_credits",
                        "unprocessable", "forbidden_field", "upstream_429",
                        "upstream_400", "rate_limited",
                        "rate_limited_no_retry"],
            bad_key="kg_live_" + "x" * 49, models_only_key=gw.models_only,
            poor_key=gw.poor, limited_key=gw.limited[provider])
    return runs


def error_of(run, step, cls, status):
    err = run[step].get("error")
    assert err is not None, "%s did not fail: %r" % (step, run[step])
    assert err["is_api_error"], err
    assert err["status"] == status, err
    if cls is not None:
        assert err["instance_of"] == cls, err
    return err


@pytest.mark.parametrize("provider,model", MODELS)
def test_401_is_authentication_error(gw, error_runs, provider, model):
    err = error_of(error_runs[provider], "unauthorized",
                   "AuthenticationError", 401)
    assert err["code"] == "invalid_api_key"


@pytest.mark.parametrize("provider,model", MODELS)
def test_403_is_permission_denied_error(gw, error_runs, provider, model):
    err = error_of(error_runs[provider], "forbidden",
                   "PermissionDeniedError", 403)
    assert err["code"] == "insufficient_permissions"
    assert "chat:write" in err["error"]["message"]


@pytest.mark.parametrize("provider,model", MODELS)
def test_402_is_an_api_error_with_the_figures(gw, error_runs, provider,
                                              model):
    """No SDK class of its own: APIError with status 402; the message
    carries the required and available credits."""
    err = error_of(error_runs[provider], "no_credits", None, 402)
    assert err["class"] == "APIError", err
    assert err["code"] == "insufficient_credits"
    body = err["error"]
    assert body["available_credits"] == 0.01
    assert body["required_credits"] > 0.01
    m = re.fullmatch(r"Insufficient credits\. Required: ([0-9.]+), "
                     r"Available: ([0-9.]+)", body["message"])
    assert m, body["message"]
    assert float(m.group(1)) == pytest.approx(body["required_credits"])
    assert float(m.group(2)) == pytest.approx(0.01)


@pytest.mark.parametrize("provider,model", MODELS)
def test_422_is_unprocessable_entity_error(gw, error_runs, provider, model):
    err = error_of(error_runs[provider], "unprocessable",
                   "UnprocessableEntityError", 422)
    assert [d["field"] for d in err["error"]["details"]] == ["messages"]


@pytest.mark.parametrize("provider,model", MODELS)
def test_400_is_bad_request_error(gw, error_runs, provider, model):
    err = error_of(error_runs[provider], "forbidden_field",
                   "BadRequestError", 400)
    assert "api_base" in err["error"]["message"]
    err = error_of(error_runs[provider], "upstream_400", "BadRequestError",
                   400)
    assert UPSTREAM_400 in err["error"]["message"], err


@pytest.mark.parametrize("provider,model", MODELS)
def test_provider_429_is_retried_by_the_sdk(gw, error_runs, provider, model):
    r = ok(error_runs[provider]["upstream_429"])
    assert r["statuses"] == [429, 200]
    assert r["content"] == greeting(provider)


@pytest.mark.parametrize("provider,model", MODELS)
def test_rate_limit_429_is_retried_by_the_sdk(gw, error_runs, provider,
                                              model):
    """keygate's own limit: 429 with Retry-After, which the SDK waits for
    before it tries again; without retries it raises RateLimitError."""
    r = ok(error_runs[provider]["rate_limited"])
    assert r["statuses"][0] == 200, r
    assert 429 in r["statuses"], r
    assert r["statuses"][-1] == 200, r
    assert r["content"] == greeting(provider)
    err = error_of(error_runs[provider], "rate_limited_no_retry",
                   "RateLimitError", 429)
    assert err["code"] == "rate_limit_exceeded"
    assert int(err["retry_after"]) >= 1


# ---------------------------------------------------------------------------
# The Anthropic SDK against POST /v1/messages

@pytest.fixture(scope="module")
def message_runs(gw):
    runs = {"mark": gw.mock.mark()}
    for provider, model in MODELS:
        runs[provider] = node("anthropic_client.mjs", {
            "base_url": gw.s.url, "key": gw.user, "model": model,
            "bad_key": "kg_live_" + "x" * 49,
            "steps": ["create", "stream", "stream_helper", "unauthorized"]})
    return runs


@pytest.mark.parametrize("provider,model", MODELS)
def test_messages_create(gw, message_runs, provider, model):
    m = ok(message_runs[provider]["create"])
    assert m["type"] == "message" and m["role"] == "assistant", m
    assert m["content"] == [{"type": "text", "text": greeting(provider)}], m
    assert m["stop_reason"] == "end_turn", m
    assert m["usage"]["input_tokens"] == 9, m
    assert m["usage"]["output_tokens"] == 4, m
    assert_keygate(m["keygate"], provider)
    assert m["headers"] == {"provider": provider, "key_source": "user"}, m


@pytest.mark.parametrize("provider,model", MODELS)
def test_messages_stream(gw, message_runs, provider, model):
    r = ok(message_runs[provider]["stream"])
    assert r["text"] == greeting(provider)
    types_ = r["types"]
    assert types_[0] == "message_start" and types_[-1] == "message_stop", \
        types_
    assert "message_delta" in types_, types_
    r = ok(message_runs[provider]["stream_helper"])
    assert r["text"] == greeting(provider)
    assert r["content"] == [{"type": "text", "text": greeting(provider)}]
    assert r["stop_reason"] == "end_turn"


@pytest.mark.parametrize("provider,model", MODELS)
def test_messages_unauthorized(gw, message_runs, provider, model):
    err = message_runs[provider]["unauthorized"]["error"]
    assert err["class"] == "AuthenticationError", err
    assert err["status"] == 401


def test_messages_reach_anthropic_with_its_key_and_version(gw, message_runs):
    sent = [r for r in gw.mock.seen("anthropic",
                                    since=message_runs["mark"])
            if r.path == "/anthropic/v1/messages"]
    assert sent, "no message reached anthropic"
    for r in sent:
        assert r.headers["x-api-key"] == PROVIDER_KEYS["anthropic"]
        # The SDK's own version, passed on as it sent it.
        assert r.headers["anthropic-version"] == ANTHROPIC_SDK_VERSION
        assert r.json["model"] == "claude-3-5-haiku-latest", r.json
        assert r.json["max_tokens"] == 256, r.json


def test_no_keygate_key_reaches_a_provider(gw, chat_runs, error_runs,
                                          message_runs):
    for r in gw.mock.seen():
        text = r.text()
        for key in (gw.user, gw.admin, gw.poor, gw.models_only):
            assert key not in text, "a keygate key reached %s" % r.path


# ---------------------------------------------------------------------------
# The reference documents' client code
#
# The JavaScript snippets are in tests/sdk/snippets.mjs (its header says
# what was changed in them); the curl commands are below, each as the
# document has it with the base URL, brand and key changed.  These cannot
# work against keygate, and are not run:
NOT_RUN = [
    ("api-keys-console", "Python: OpenAI(api_key=..., base_url=...)",
     "the Python openai package cannot be installed on Debian 12 (no "
     "python3-openai in bookworm, no PyPI for the tests); the same client "
     "in JavaScript runs (console_sdk)"),
    ("byok-key-resolution", "Python: OpenAI(base_url=..., api_key=...)",
     "the Python openai package, as above; byok_sdk runs the JavaScript "
     "one"),
    ("api-keys-prefix-hash", "Python: Client(api_key=..., endpoint=...)",
     "another product's own SDK"),
    ("api-keys-scopes-tenants", "createApiKey, rotateApiKey, "
     "revokeApiKey, listDormantKeys, createRole, assignRoleToKey, "
     "resolveKeyScopes, removeRoleFromKey",
     "another product's own JavaScript SDK"),
    ("api-keys-scopes-tenants", "curl .../v1/api-keys (create, rate "
     "limits, rotate, revoke, dormant)",
     "another product's route: keygate's is /v1/api_keys, which the "
     "api-keys-prefix-hash commands exercise"),
    ("api-keys-scopes-tenants", "curl .../v1/maintenance/"
     "rotate-encryption-key with old_key/new_key",
     "another product's route: keygate re-encrypts with POST "
     "/v1/maintenance/reencrypt under its configured master_keys"),
    ("byok-key-resolution", "curl .../v1/chat/completions -d '{...}'",
     "the body is elided ('{...}')"),
    ("byok-key-resolution", "curl with X-OpenAI-Key, model "
     "...-base-gpt-4o, \"messages\": [...]",
     "another product's model and elided messages; the same request is "
     "the inline_headers snippet"),
    ("llm-key-vault", "curl --request POST .../v1/account/llm-keys "
     "with \"<string>\" values",
     "no credentials and placeholder keys; store_keys runs the request"),
    ("llm-key-vault", "Scenario A / Scenario B",
     "\"messages: [...]\" is not JavaScript; they are the zero_config "
     "and byok_flow requests, which run"),
    ("llm-key-vault", "2. Never Log or Expose Keys; 3. Use HTTPS Always",
     "no request (sendToAnalytics is the reader's) or an elided one "
     "(fetch(url, ...))"),
    ("api-keys-console", "Environment Variables (export / $env: / set)",
     "they only set a variable; every snippet here reads the key from "
     "KEYGATE_API_KEY that way"),
    ("api-keys-scopes-tenants", "export ..._ENCRYPTION_KEY=$(node -e ...)",
     "another product's setting; keygate's vault keys are master_keys in "
     "keygate.conf"),
    ("api-keys-prefix-hash", "..._SEED_DEV_KEY=true before migrating",
     "a setting, not a client: ks.Stack migrates with "
     "KEYGATE_SEED_DEV_KEY=true, and the curl commands use that key"),
]


def snippet(g, name, key):
    """Runs one snippet of tests/sdk/snippets.mjs with `key` as the
    keygate key; returns the lines it printed, having checked that it
    exited 0 and wrote no warning or error."""
    env = {"KEYGATE_URL": g.s.url, "KEYGATE_API_KEY": key,
           "OPENAI_BASE_URL": g.mock.base_url("openai")}
    env.update({"%s_KEY" % p.upper(): k for p, k in PROVIDER_KEYS.items()})
    proc = run_node("snippets.mjs", name, env=env)
    assert proc.returncode == 0 and proc.stderr == "", (
        "snippet %s exited %d:\n%s%s" % (name, proc.returncode, proc.stdout,
                                         proc.stderr))
    return proc.stdout.splitlines()


def curl(g, command, key):
    """Runs a documented curl command (the base URL as $KEYGATE_URL, the
    key as $KEYGATE_API_KEY) with -s and the status appended; returns
    (status, parsed JSON body)."""
    proc = subprocess.run(
        ["bash", "-c", command + " -s -w '\\n%{http_code}'"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=60, text=True,
        env=ks.clean_env({"KEYGATE_URL": g.s.url, "KEYGATE_API_KEY": key}))
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition("\n")
    return int(status), json.loads(body) if body else None


def tenant_key(g, name, credits=10):
    """A key with every scope in a new tenant with `credits` and no
    provider keys."""
    r = g.s.post("/v1/tenants", {"name": name}, headers=ks.auth(g.admin))
    assert r.status == 201, r.body
    tid = r.json["id"]
    r = g.s.post("/v1/tenants/%s/credits" % tid,
                 {"amount": credits, "reason": "sdk tests"},
                 headers=ks.auth(g.admin))
    assert r.status == 200, r.body
    return tid, create_key(g.s, g.admin, tenant_id=tid, scopes=["*"])


def stored(g, tid):
    return sorted(r[0] for r in g.s.psql(
        "SELECT provider FROM llm_keys WHERE tenant_id = '%s'" % tid))


def test_snippet_console_sdk_reaches_the_operators_server(gw):
    """api-keys-console's client and its curl body: "vllm-primary" is
    the operator's own OpenAI-compatible server (an `upstreams` entry)."""
    mark = gw.mock.mark()
    assert snippet(gw, "console_sdk", gw.user) == [greeting("local")]
    sent = gw.mock.seen("local", since=mark)
    assert [r.json["model"] for r in sent] == ["vllm-primary"]


def test_curl_console_chat(gw):
    status, body = curl(gw, """curl $KEYGATE_URL/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $KEYGATE_API_KEY" \\
  -d '{
    "model": "vllm-primary",
    "messages": [{"role": "user", "content": "Hello!"}]
  }'""", gw.user)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == greeting("local")


def test_snippet_byok_sdk(gw):
    assert snippet(gw, "byok_sdk", gw.user) == [greeting("openai")]


def test_snippets_store_read_and_delete_llm_keys(gw):
    tid, key = tenant_key(gw, "vault snippets")
    out = snippet(gw, "store_keys", key)
    assert len(out) == 1 and out[0] not in ("", "undefined"), out
    assert stored(gw, tid) == ["anthropic", "google", "openai", "openrouter"]
    out = snippet(gw, "key_status", key)
    assert out[:2] == ["OpenAI key configured: true",
                       "Anthropic key configured: true"], out
    assert out[2].startswith("OpenAI last validated: "), out
    assert snippet(gw, "delete_one", key) == ["true"]
    assert stored(gw, tid) == ["anthropic", "google", "openrouter"]
    out = snippet(gw, "key_status", key)
    assert out[:2] == ["OpenAI key configured: false",
                       "Anthropic key configured: true"], out
    assert out[2] == "OpenAI last validated: null", out
    assert snippet(gw, "delete_all", key) == ["true"]
    assert stored(gw, tid) == []


def test_snippet_zero_config_flow_uses_the_pool(gw):
    mark = gw.mock.mark()
    _, key = tenant_key(gw, "zero config")
    assert snippet(gw, "zero_config", key) == ["pool", "0.25"]
    sent = gw.mock.seen("openrouter", since=mark)
    assert [r.headers["authorization"] for r in sent] == [
        "Bearer " + POOL_KEY]


def test_snippet_byok_flow_uses_the_stored_key(gw):
    """Its first step warns unless /health says "vault":"connected"."""
    mark = gw.mock.mark()
    tid, key = tenant_key(gw, "byok flow")
    assert snippet(gw, "byok_flow", key) == [
        "Pool available: true", "Has OpenAI key: true",
        "Has Anthropic key: true", "user", "null"]
    assert stored(gw, tid) == ["anthropic", "openai"]
    sent = gw.mock.seen("openai", since=mark)
    assert [r.headers["authorization"] for r in sent] == [
        "Bearer " + PROVIDER_KEYS["openai"]]


def test_snippet_key_rotation(gw):
    tid, key = tenant_key(gw, "rotation")
    assert snippet(gw, "key_rotation", key) == [
        "OpenAI key rotated successfully"]
    assert stored(gw, tid) == ["openai"]


def test_snippet_onboarding(gw):
    tid, key = tenant_key(gw, "onboarding")
    assert snippet(gw, "onboarding", key) == [
        "Keys stored securely. Pool markup removed for stored providers."]
    assert stored(gw, tid) == ["openai"]


def test_snippet_validate_and_store(gw):
    mark = gw.mock.mark()
    tid, key = tenant_key(gw, "validate first")
    assert snippet(gw, "validate_and_store", key) == ["true"]
    assert stored(gw, tid) == ["anthropic", "openai"]
    sent = [r for r in gw.mock.seen("openai", since=mark)
            if r.method == "GET"]
    assert [r.path for r in sent] == ["/openai/v1/models"]


def test_snippet_key_expiry_check(gw):
    _, key = tenant_key(gw, "expiry")
    snippet(gw, "store_keys", key)
    assert snippet(gw, "key_expiry", key) == []


def test_snippet_inline_headers_beat_the_pool(gw):
    """A tenant with no stored key: the inline X-OpenAI-Key is used."""
    mark = gw.mock.mark()
    _, key = tenant_key(gw, "inline")
    assert snippet(gw, "inline_headers", key) == ["user", "openai"]
    assert not gw.mock.seen("openrouter", since=mark)


def test_curl_tenants_with_x_api_key(gw):
    status, body = curl(gw, """curl $KEYGATE_URL/v1/tenants \\
-H "X-API-Key: $KEYGATE_API_KEY\"""", gw.admin)
    assert status == 200, body
    assert isinstance(body["data"], list) and body["data"], body


def test_curl_tenants_with_a_jwt(gw):
    """A token without scopes reads."""
    token = ks.jwt_token(gw.s.kg.config["jwt_secret"], {
        "sub": "reporting", "tenant_id": ks.ROOT_TENANT,
        "exp": int(time.time()) + 300})
    status, body = curl(gw, """curl $KEYGATE_URL/v1/tenants \\
-H "Authorization: Bearer $KEYGATE_API_KEY\"""", token)
    assert status == 200, body
    assert isinstance(body["data"], list) and body["data"], body


def listed_ids(g, page, key, query=""):
    """The ids of a key listing's first `page` and of the pages after it
    (the documented command reads the first only)."""
    ids = [k["id"] for k in page["data"]]
    while page.get("next_cursor"):
        r = g.s.get("/v1/api_keys?%scursor=%s" % (
            query, urllib.parse.quote(page["next_cursor"])),
            headers=ks.auth(key))
        assert r.status == 200, r.body
        page = r.json
        ids += [k["id"] for k in page["data"]]
    return ids


def test_curl_prefix_hash_key_lifecycle_and_dev_key_rotation(gw):
    """api-keys-prefix-hash, in its order: mint a real key with the
    development key, list, revoke one, then revoke the development key
    with the new key.  (Last in this module: the development key is gone
    afterwards.)"""
    status, made = curl(gw, """curl -X POST $KEYGATE_URL/v1/api_keys \\
  -H "Authorization: Bearer $KEYGATE_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"name": "production deploy 2026-05"}'""", ks.DEV_KEY)
    assert status == 201, made
    assert made["name"] == "production deploy 2026-05"
    new_key = made["key"]
    status, listed = curl(gw, """curl $KEYGATE_URL/v1/api_keys \\
  -H "Authorization: Bearer $KEYGATE_API_KEY\"""", ks.DEV_KEY)
    assert status == 200, listed
    assert not any("key" in k for k in listed["data"]), listed
    assert made["id"] in listed_ids(gw, listed, ks.DEV_KEY)
    doomed = create_key(gw.s, new_key, name="doomed")
    doomed_id = gw.s.get("/v1/auth/whoami", headers=ks.auth(doomed)
                         ).json["key_id"]
    status, gone = curl(gw, """curl -X DELETE $KEYGATE_URL/v1/api_keys/%s \\
  -H "Authorization: Bearer $KEYGATE_API_KEY\"""" % doomed_id, new_key)
    assert status == 200 and gone["revoked_at"], gone
    assert gw.s.get("/v1/auth/whoami", headers=ks.auth(doomed)).status == 401
    status, listed = curl(gw, """curl "$KEYGATE_URL/v1/api_keys?include_revoked=true" \\
  -H "Authorization: Bearer $KEYGATE_API_KEY\"""", new_key)
    assert status == 200, listed
    assert doomed_id in listed_ids(gw, listed, new_key,
                                   "include_revoked=true&")
    status, dev = curl(gw, """curl -X DELETE $KEYGATE_URL/v1/api_keys/00000000-0000-0000-0000-000000000010 \\
  -H "Authorization: Bearer $KEYGATE_API_KEY\"""", new_key)
    assert status == 200 and dev["revoked_at"], dev
    assert gw.s.get("/v1/auth/whoami", headers=ks.auth()).status == 401
