"""The operator's own OpenAI-compatible upstreams (the `upstreams` and
`upstream_keys` settings): chosen by model name or prefix before the
built-in rules, called with the operator's key or with none, passed through
streamed or not, charged by the price table, listed by GET /v1/models, and
refused at start when the setting is malformed.

Two mock servers stand in for the operator's machines, each on its own port
and serving OpenAI's format below /local/v1 (mock_llm's "local"): `gpu`
needs a bearer key and strips the `local/` prefix, `open` needs no key.  A
third mock plays the built-in providers, so that a test sees when a call
went there instead."""

import json
import os
import re
import secrets

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, assert_json_response, auth
from mock_llm import Complete, Fail, Hang, MockLLM, Redirect

ROOT = "00000000-0000-0000-0000-000000000001"
CHAT = "/v1/chat/completions"
GPU_KEY = "gpu-bearer-" + secrets.token_hex(20)
OPENAI_KEY = "sk-proj-" + secrets.token_hex(20)
OPENROUTER_KEY = "sk-or-v1-" + secrets.token_hex(20)
POOL_KEY = "sk-or-v1-pool" + secrets.token_hex(20)
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}]
UPSTREAM_TIMEOUT = 2
# micro-credits per million tokens, for "local/*" on the billed stack
LOCAL_IN, LOCAL_OUT = 200000, 400000


# ---------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def gpu():
    with MockLLM() as m:
        yield m


@pytest.fixture(scope="module")
def plain():
    with MockLLM() as m:
        yield m


@pytest.fixture(scope="module")
def builtin():
    with MockLLM() as m:
        yield m


def upstreams(gpu, plain):
    return ("gpu url=%s/ models=local/*,gpu-exact strip=true; "
            "open url=%s models=llama3.1:8b,gpt-oss*"
            % (gpu.base_url("local"), plain.base_url("local")))


def _stack(workdir, pg, gpu, plain, builtin, **config):
    cfg = dict(builtin.config())
    cfg.update(validate_llm_keys="false", upstreams='"%s"'
               % upstreams(gpu, plain),
               upstream_keys="gpu:" + GPU_KEY,
               upstream_connect_timeout=UPSTREAM_TIMEOUT,
               upstream_idle_timeout=UPSTREAM_TIMEOUT,
               upstream_total_timeout=UPSTREAM_TIMEOUT)
    cfg.update(config)
    return ks.Stack(workdir.subdir("kg"), pg, workers=2,
                    dbname="up_%d_%s" % (os.getpid(), secrets.token_hex(4)),
                    **cfg)


@pytest.fixture(scope="module")
def gw(workdir, pg, gpu, plain, builtin):
    s = _stack(workdir, pg, gpu, plain, builtin,
               pool_openrouter_key=POOL_KEY)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def fresh_mocks(gpu, plain, builtin):
    for m in (gpu, plain, builtin):
        m.reset()
    gpu.accept("local", GPU_KEY)
    plain.accept("local", None)
    builtin.accept("openai", OPENAI_KEY)
    builtin.accept("openrouter", OPENROUTER_KEY, POOL_KEY)


class Tenant(ks.Tenant):
    """A new tenant below the root, with a chat key."""

    name = "e2e-up"
    scopes = ("chat:write", "models:read", "llm_keys:write")

def body(model, **fields):
    b = {"model": model, "messages": MESSAGES}
    b.update(fields)
    return b


def only(mock):
    """The one chat request `mock` received, at the upstream's chat path."""
    ex = mock.seen()
    assert len(ex) == 1, "expected one request, saw %r" % ex
    assert ex[0].method == "POST" and ex[0].path == "/local/v1/chat/" \
        "completions", ex[0]
    return ex[0]


def assert_upstream_block(obj, request_id, name):
    """The keygate member of a reply from an operator upstream: the
    operator's capacity ("pool"), without markup."""
    kg = obj.get("keygate")
    assert isinstance(kg, dict), obj
    assert kg["key_source"] == "pool", kg
    assert "pool_markup_applied" in kg and kg["pool_markup_applied"] is None
    assert kg["provider"] == name, kg
    assert kg["request_id"] == request_id, kg
    assert isinstance(kg["credits_charged"], (int, float)), kg
    return kg


def sse_chunks(events):
    assert events and events[-1].data == "[DONE]", events[-3:]
    return [json.loads(e.data) for e in events[:-1]]


# ---------------------------------------------------------------------------
# Routing and keys

def test_a_prefix_routes_to_the_upstream_with_its_key_and_is_stripped(
        gw, gpu, plain, builtin):
    t = Tenant(gw)
    request_id = "e2e-up-" + secrets.token_hex(8)
    resp = t.chat(body("local/llama3-70b", temperature=0.3, max_tokens=20),
                  request_id=request_id)
    assert resp.status == 200, resp.body[:500]
    assert_json_response(resp)
    up = only(gpu)
    assert up.header_values("authorization") == ["Bearer " + GPU_KEY]
    # The prefix is the gateway's business, not the server's.
    assert up.json["model"] == "llama3-70b"
    assert up.json["messages"] == MESSAGES
    assert up.json["temperature"] == 0.3 and up.json["max_tokens"] == 20
    for field in ("id", "object", "created", "model", "choices", "usage"):
        assert resp.json[field] == up.reply[field], field
    assert_upstream_block(resp.json, request_id, "gpu")
    assert plain.seen() == [] and builtin.seen() == []
    assert GPU_KEY not in resp.body.decode()
    assert t.key not in up.text()


def test_an_exact_name_with_strip_is_sent_as_is(gw, gpu):
    t = Tenant(gw)
    resp = t.chat(body("gpu-exact"))
    assert resp.status == 200, resp.body[:500]
    assert only(gpu).json["model"] == "gpu-exact"


def test_an_upstream_without_a_key_gets_no_authorization(gw, gpu, plain,
                                                        builtin):
    t = Tenant(gw)
    request_id = "e2e-up-" + secrets.token_hex(8)
    resp = t.chat(body("llama3.1:8b"), request_id=request_id)
    assert resp.status == 200, resp.body[:500]
    up = only(plain)
    assert up.header_values("authorization") == []
    assert up.json["model"] == "llama3.1:8b"
    assert_upstream_block(resp.json, request_id, "open")
    assert gpu.seen() == [] and builtin.seen() == []


def test_an_upstream_name_wins_over_the_builtin_rules(gw, plain, builtin):
    """gpt-oss-20b would go to OpenAI by the gpt-* rule; the upstream that
    claims gpt-oss* takes it, and the tenant's keys sent along reach
    nobody."""
    t = Tenant(gw)
    t.stack.post("/v1/account/llm-keys", {"openai_key": OPENAI_KEY},
                 headers=auth(t.key))
    extra = {"X-OpenAI-Key": OPENAI_KEY, "X-OpenRouter-Key": OPENROUTER_KEY}
    resp = t.chat(body("gpt-oss-20b"), extra)
    assert resp.status == 200, resp.body[:500]
    up = only(plain)
    assert up.json["model"] == "gpt-oss-20b"
    for secret in (OPENAI_KEY, OPENROUTER_KEY, t.key):
        assert secret not in up.text()
    for name in ("authorization", "x-openai-key", "x-openrouter-key",
                 "x-api-key"):
        assert name not in up.headers, name
    assert builtin.seen() == []
    # A name no upstream claims still follows the built-in rules.
    resp = t.chat(body("gpt-4o-mini"), extra)
    assert resp.status == 200, resp.body[:500]
    assert resp.json["keygate"]["provider"] == "openai"
    assert resp.json["keygate"]["key_source"] == "user"
    assert len(builtin.seen("openai")) == 1


@pytest.mark.parametrize("model", ["local/", "local", "llama3.1", "gpu"])
def test_names_no_upstream_claims_are_unsupported(gw, gpu, plain, builtin,
                                                  model):
    t = Tenant(gw)
    assert_error(t.chat(body(model)), 400, "unsupported_model")
    assert gpu.seen() == [] and plain.seen() == [] and builtin.seen() == []


@pytest.mark.parametrize("field,value", [
    ("api_base", "http://127.0.0.1:1/v1"),
    ("base_url", "http://127.0.0.1:1/v1"),
    ("headers", {"Authorization": "Bearer elsewhere"}),
])
def test_fields_that_redirect_the_call_are_refused(gw, gpu, field, value):
    t = Tenant(gw)
    err = assert_error(t.chat(body("local/x", **{field: value})), 400,
                       "forbidden_field")
    assert field in err["message"]
    assert gpu.seen() == []


# ---------------------------------------------------------------------------
# Streams

@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_passes_through_with_keygate_on_the_finish(gw, gpu,
                                                        include_usage):
    t = Tenant(gw)
    gpu.behave("local", Complete(pieces=3, pause=0.05))
    request_id = "e2e-up-" + secrets.token_hex(8)
    fields = {"stream_options": {"include_usage": True}} if include_usage \
        else {}
    s = t.stream(body("local/llama3", **fields), request_id=request_id)
    assert s.status == 200, s.body
    assert s.headers["content-type"].startswith("text/event-stream")
    events = s.read_all()
    chunks = sse_chunks(events)
    up = only(gpu)
    assert up.json["stream"] is True and up.json["model"] == "llama3"
    # Usage is always asked for: the call is billed on it.
    assert up.json["stream_options"] == {"include_usage": True}
    assert up.header_values("authorization") == ["Bearer " + GPU_KEY]
    sent = up.chunks()
    if not include_usage:
        sent = [c for c in sent if c["choices"]]
    chunks, kg = ks.stream_chunks(chunks, include_usage)
    assert chunks == sent
    assert_upstream_block({"keygate": kg}, request_id, "gpu")
    assert GPU_KEY not in "".join(e.data for e in events) + json.dumps(
        s.headers)


def test_a_stream_to_an_upstream_without_a_key(gw, plain):
    t = Tenant(gw)
    request_id = "e2e-up-" + secrets.token_hex(8)
    s = t.stream(body("llama3.1:8b"), request_id=request_id)
    assert s.status == 200, s.body
    chunks, kg = ks.stream_chunks(sse_chunks(s.read_all()))
    up = only(plain)
    assert up.header_values("authorization") == []
    assert "".join(c["choices"][0]["delta"].get("content", "")
                   for c in chunks) == Complete().content
    assert_upstream_block({"keygate": kg}, request_id, "open")


# ---------------------------------------------------------------------------
# Failures: the same rules as for the providers

def test_an_upstream_5xx_is_502_naming_the_upstream(gw, gpu):
    t = Tenant(gw)
    gpu.behave("local", Fail(503))
    err = assert_error(t.chat(body("local/x")), 502, "upstream_error")
    assert err["message"].startswith("gpu failed"), err


def test_an_upstream_4xx_passes_its_message(gw, gpu):
    t = Tenant(gw)
    gpu.behave("local", Fail(404, message="The model `x` does not exist."))
    err = assert_error(t.chat(body("local/x")), 404)
    assert "The model `x` does not exist." in err["message"], err
    assert err["message"].startswith("gpu: "), err


def test_a_rejected_upstream_key_is_not_echoed(gw, gpu):
    t = Tenant(gw)
    gpu.reset()         # accepts no key now
    resp = t.chat(body("local/x"))
    err = assert_error(resp, 401, "invalid_provider_key")
    # Nothing of what the upstream said about the operator's key.
    assert err["message"] == "gpu: the operator's key was refused (401)", err
    assert GPU_KEY not in resp.body.decode()


def test_an_upstream_redirect_is_not_followed(gw, gpu):
    t = Tenant(gw)
    gpu.behave("local", Redirect(gpu.url + "/elsewhere/v1/chat/completions"))
    assert_error(t.chat(body("local/x")), 502, "upstream_error")
    assert [e.path for e in gpu.seen()] == ["/local/v1/chat/completions"]


def test_a_hanging_upstream_is_504(gw, gpu):
    t = Tenant(gw)
    gpu.behave("local", Hang())
    assert_error(t.chat(body("local/x")), 504, "upstream_timeout")


# ---------------------------------------------------------------------------
# Credits and the model list

def test_charged_by_the_price_table_without_markup(make_stack, gpu, plain,
                                                   builtin):
    s = make_stack(**dict(builtin.config(), validate_llm_keys="false",
                          credits_enforce="true",
                          pool_openrouter_key=POOL_KEY, pool_markup="0.5",
                          upstreams='"%s"' % upstreams(gpu, plain),
                          upstream_keys="gpu:" + GPU_KEY, workers=1))
    p = s.kg.ctl("prices", "set", "local/*", "0.2", "0.4")
    assert p.returncode == 0, p.stderr
    t = Tenant(s)
    r = s.post("/v1/tenants/%s/credits" % t.id, {"amount": 5,
                                                  "reason": "test"},
               headers=auth())
    assert r.status == 200, r.body
    gpu.behave("local", Complete(usage=(1000, 500)))
    request_id = "e2e-up-" + secrets.token_hex(8)
    resp = t.chat(body("local/llama3"), request_id=request_id)
    assert resp.status == 200, resp.body[:500]
    want = -(-(1000 * LOCAL_IN + 500 * LOCAL_OUT) // 10**6)
    kg = assert_upstream_block(resp.json, request_id, "gpu")
    assert round(kg["credits_charged"] * 1e6) == want
    rows = s.psql("SELECT provider, model, key_source, prompt_tokens, "
                  "completion_tokens, credits_charged, markup::float8 "
                  "FROM usage WHERE request_id = '%s'" % request_id)
    assert rows == [["gpu", "local/llama3", "pool", "1000", "500",
                     str(want), "0"]]
    assert int(s.psql("SELECT credits_balance FROM tenants WHERE id = "
                      "'%s'" % t.id)[0][0]) == 5 * 10**6 - want
    assert s.psql("SELECT count(*) FROM credit_reservations WHERE "
                  "tenant_id = '%s'" % t.id) == [["0"]]
    # The models list shows the upstreams' exact names at the prices a call
    # pays: with no price of their own, the catch-all "*" row's.
    listed = {m["id"]: m for m in s.get(
        "/v1/models", headers=auth(t.key)).json["data"]}
    for name in ("llama3.1:8b", "gpu-exact"):
        assert listed[name]["keygate"]["pricing"] == {
            "input_per_mtok": 1, "output_per_mtok": 3}, listed[name]


def test_the_models_list_shows_every_upstream_name(gw):
    t = Tenant(gw)
    r = gw.get("/v1/models", headers=auth(t.key))
    assert r.status == 200, r.body
    listed = {m["id"]: m for m in r.json["data"]}
    want = {"gpu-exact": "gpu", "llama3.1:8b": "open"}
    for model, name in want.items():
        m = listed.get(model)
        assert m is not None, "%s is not listed: %r" % (model, sorted(listed))
        assert m["object"] == "model" and m["owned_by"] == name, m
        kg = m["keygate"]
        assert kg["provider"] == name, m
        assert kg["key_source"] == "pool" and \
            kg["pool_markup_applied"] is None, m
        assert set(kg["pricing"]) == {"input_per_mtok", "output_per_mtok"}
    # A prefix names no model: "local/*" and "gpt-oss*" are not listed.
    assert not [i for i in listed if "*" in i], sorted(listed)
    # Each listed once, and the built-in models still there (the pool).
    ids = [m["id"] for m in r.json["data"]]
    assert len(ids) == len(set(ids))
    assert listed["claude-3-5-haiku-latest"]["keygate"]["provider"] == \
        "openrouter"
    assert GPU_KEY not in r.body.decode()


def test_a_price_row_an_upstream_claims_is_listed_as_its(gw):
    gw.kg.ctl("prices", "set", "gpt-oss-120b", "0.1", "0.3")
    try:
        t = Tenant(gw)
        listed = {m["id"]: m for m in gw.get(
            "/v1/models", headers=auth(t.key)).json["data"]}
        kg = listed["gpt-oss-120b"]["keygate"]
        assert kg["provider"] == "open" and kg["key_source"] == "pool", kg
        assert kg["pricing"] == {"input_per_mtok": 0.1,
                                 "output_per_mtok": 0.3}
        assert listed["gpt-oss-120b"]["owned_by"] == "open"
    finally:
        gw.psql("DELETE FROM prices WHERE pattern = 'gpt-oss-120b'")


# ---------------------------------------------------------------------------
# The setting itself

@pytest.mark.parametrize("config,message", [
    ({"upstreams": '"gpu url=ftp://10.0.0.5/v1 models=local/*"'},
     'upstreams: gpu: url: expected http://HOST[:PORT][/PATH] or '
     'https://..., without user, query or fragment'),
    ({"upstreams": '"a url=http://x/v1 models=m; a url=http://y/v1 '
                   'models=n"'},
     "upstreams: a: named twice"),
    ({"upstreams": '"a url=http://x/v1 models=m*; b url=http://y/v1 '
                   'models=m*"'},
     'upstreams: b: the model pattern "m*" is already a\'s'),
    ({"upstreams": '"openrouter url=http://x/v1 models=m"'},
     "upstreams: openrouter: the name of a built-in provider"),
    ({"upstreams": '"a url=http://x/v1 models=m"',
      "upstream_keys": "b:" + GPU_KEY},
     'upstream_keys: no upstream named "b" in upstreams'),
], ids=["scheme", "twice", "pattern-twice", "builtin-name", "unknown-key"])
def test_a_bad_setting_is_refused_at_start(make_keygated, fresh_database,
                                           config, message):
    kg = make_keygated(fresh_database, migrate=True)
    kg.rewrite_config(**config)
    kg.start(wait=False)
    assert kg.wait(15) == 2
    line = [n for n, text in enumerate(kg.config_text().splitlines(), 1)
            if text.startswith(("upstream_keys" if "upstream_keys:" in
                                message else "upstreams") + " =")][0]
    text = kg.log_text()
    assert "%s:%d: %s" % (kg.config_path, line, message) in text, text
    assert GPU_KEY not in text
    # --check-config says the same.
    p = ks.subprocess.run([ks.KEYGATED, "--check-config", "--config",
                           kg.config_path], env=ks.clean_env(),
                          stdout=ks.subprocess.PIPE,
                          stderr=ks.subprocess.PIPE, text=True, timeout=10)
    assert p.returncode == 2 and message in p.stderr, p.stderr


def test_upstream_keys_from_the_environment(make_stack, gpu, plain, builtin):
    """The key may stay out of the file, like every secret."""
    s = make_stack(**dict(builtin.config(), validate_llm_keys="false",
                          upstreams='"%s"' % upstreams(gpu, plain),
                          upstream_keys=None, workers=1))
    s.kg.env = {"KEYGATE_UPSTREAM_KEYS": "gpu:" + GPU_KEY}
    s.kg.sigterm()
    assert s.kg.wait(10) == 0
    s.kg.start()
    assert GPU_KEY not in s.kg.config_text()
    resp = Tenant(s).chat(body("local/x"))
    assert resp.status == 200, resp.body[:300]
    assert only(gpu).header_values("authorization") == ["Bearer " + GPU_KEY]


def test_the_upstream_key_is_never_logged(gw):
    t = Tenant(gw)
    t.chat(body("local/x"))
    ks.wait_until(lambda: re.search(r'"path":\s*"/v1/chat/completions"',
                                    gw.kg.log_text()), 5,
                  what="a chat request in the log")
    assert GPU_KEY not in gw.kg.log_text()
