"""GET /v1/models and GET /v1/models/{id}: the concrete models a tenant can
reach now, in OpenAI's shape, with where a call would go, whose key pays
and the price in a `keygate` member; decided by the same rule as a call."""

import secrets
import time

import pytest

import keygate_stack as ks

OPENAI_KEY = "sk-proj-" + "m" * 40
OR_KEY = "sk-or-v1-" + "m" * 40
MODEL_FIELDS = {"id", "object", "created", "owned_by", "keygate"}
KEYGATE_FIELDS = {"provider", "key_source", "pool_markup_applied", "pricing"}


@pytest.fixture
def pooled(make_stack, mock):
    mock.reset()
    cfg = dict(mock.config())
    cfg.update(workers=1, validate_llm_keys="false",
               pool_openrouter_key=OR_KEY, pool_markup="0.25")
    return make_stack(**cfg)


def tenant(s):
    r = s.post("/v1/tenants", {"name": "models"}, headers=ks.auth())
    tid = r.json["id"]
    r = s.post("/v1/api_keys", {"tenant_id": tid, "scopes": [
        "models:read", "llm_keys:write", "chat:write"]}, headers=ks.auth())
    return ks.auth(r.json["key"])


def models(s, headers):
    r = s.get("/v1/models", headers=headers)
    assert r.status == 200, r.body
    assert r.json["object"] == "list"
    return {m["id"]: m for m in r.json["data"]}


def assert_model(m):
    """One model as OpenAI's SDKs read it, keygate's facts apart."""
    assert set(m) == MODEL_FIELDS, m
    assert m["object"] == "model"
    assert "*" not in m["id"], m
    assert isinstance(m["created"], int) and m["created"] > 1600000000, m
    assert isinstance(m["owned_by"], str) and m["owned_by"], m
    assert set(m["keygate"]) == KEYGATE_FIELDS, m
    assert set(m["keygate"]["pricing"]) == {"input_per_mtok",
                                            "output_per_mtok"}, m


def test_nothing_without_a_key_or_pool(make_stack):
    s = make_stack(workers=1, validate_llm_keys="false")
    assert models(s, tenant(s)) == {}


def test_the_list_holds_concrete_models_in_openais_shape(pooled):
    every = models(pooled, tenant(pooled))
    for m in every.values():
        assert_model(m)
    # The native ids of the OpenRouter table, none of the price patterns.
    for model, owner in (("gpt-4o-mini", "openai"),
                         ("claude-3-5-haiku-latest", "anthropic"),
                         ("gemini-2.0-flash", "google")):
        assert every[model]["owned_by"] == owner, every[model]
    assert not [i for i in every if "*" in i]
    # A created time from the database, not a placeholder.
    assert abs(every["gpt-4o-mini"]["created"] - time.time()) < 86400


def test_stored_keys_sent_keys_and_the_pool_decide_where_models_go(pooled):
    h = tenant(pooled)
    every = models(pooled, h)
    # Only the pool: every model goes through OpenRouter, marked up.
    kg = every["claude-3-5-haiku-latest"]["keygate"]
    assert kg["provider"] == "openrouter" and kg["key_source"] == "pool"
    assert kg["pool_markup_applied"] == 0.25
    assert every["gpt-4o-mini"]["keygate"]["pricing"] == {
        "input_per_mtok": 0.15, "output_per_mtok": 0.6}
    # The tenant's own OpenAI key takes OpenAI's models, at no markup.
    assert pooled.post("/v1/account/llm-keys", {"openai_key": OPENAI_KEY},
                       headers=h).status == 200
    mine = models(pooled, h)
    kg = mine["gpt-4o-mini"]["keygate"]
    assert kg["provider"] == "openai" and kg["key_source"] == "user"
    assert kg["pool_markup_applied"] is None
    assert mine["claude-3-5-haiku-latest"]["keygate"]["key_source"] == "pool"
    # A key sent along counts too.
    sent = models(pooled, dict(h, **{"X-Anthropic-Key": "sk-ant-" + "z" * 30}))
    kg = sent["claude-3-5-haiku-latest"]["keygate"]
    assert kg["provider"] == "anthropic" and kg["key_source"] == "user"


def test_an_inline_openrouter_key_reaches_every_mapped_model(make_stack):
    s = make_stack(workers=1, validate_llm_keys="false")
    h = tenant(s)
    sent = models(s, dict(h, **{"X-OpenRouter-Key": OR_KEY}))
    mapped = s.psql("SELECT model FROM openrouter_models")
    assert mapped and sorted(sent) == sorted(m for [m] in mapped)
    for m in sent.values():
        assert m["keygate"]["provider"] == "openrouter", m
        assert m["keygate"]["key_source"] == "user", m


def test_the_list_and_a_call_agree(pooled, mock):
    """Where the list says a model goes is where a call for it goes."""
    h = tenant(pooled)
    assert pooled.post("/v1/account/llm-keys", {"openai_key": OPENAI_KEY},
                       headers=h).status == 200
    mock.accept("openai", OPENAI_KEY)
    mock.accept("openrouter", OR_KEY)
    every = models(pooled, h)
    for model in ("gpt-4o-mini", "claude-3-5-haiku-latest",
                  "gemini-2.0-flash", "o4-mini"):
        mock.reset()
        mock.accept("openai", OPENAI_KEY)
        mock.accept("openrouter", OR_KEY)
        r = pooled.post("/v1/chat/completions", {"model": model, "messages": [
            {"role": "user", "content": "hi"}]}, headers=h)
        assert r.status == 200, r.body
        listed = every[model]["keygate"]
        assert r.json["keygate"]["provider"] == listed["provider"], model
        assert r.json["keygate"]["key_source"] == listed["key_source"]
        assert [e.provider for e in mock.seen()] == [listed["provider"]]


def test_exact_price_rows_are_listed_and_patterns_are_not(pooled):
    exact = "gpt-e2e-%s" % secrets.token_hex(3)
    for name in (exact, exact + "-family*"):
        p = pooled.kg.ctl("prices", "set", name, "0.5", "1.5")
        assert p.returncode == 0, p.stderr
    h = tenant(pooled)
    # Only the pool, and no OpenRouter id: not reachable, not listed.
    assert exact not in models(pooled, h)
    assert pooled.post("/v1/account/llm-keys", {"openai_key": OPENAI_KEY},
                       headers=h).status == 200
    mine = models(pooled, h)
    assert_model(mine[exact])
    assert mine[exact]["owned_by"] == "openai"
    assert mine[exact]["keygate"]["pricing"] == {"input_per_mtok": 0.5,
                                                 "output_per_mtok": 1.5}
    assert exact + "-family*" not in mine


def test_one_model_is_retrieved_by_its_id(pooled):
    h = tenant(pooled)
    every = models(pooled, h)
    r = pooled.get("/v1/models/claude-3-5-haiku-latest", headers=h)
    assert r.status == 200, r.body
    assert r.json == every["claude-3-5-haiku-latest"]


@pytest.mark.parametrize("path", ["/v1/models/openai/gpt-e2e-vendor",
                                  "/v1/models/openai%2Fgpt-e2e-vendor"])
def test_a_vendor_model_id_is_retrieved_with_its_slash(pooled, path):
    p = pooled.kg.ctl("prices", "set", "openai/gpt-e2e-vendor", "1", "2")
    assert p.returncode == 0, p.stderr
    h = tenant(pooled)
    r = pooled.get(path, headers=h)
    assert r.status == 200, r.body
    assert_model(r.json)
    assert r.json["id"] == "openai/gpt-e2e-vendor"
    assert r.json["owned_by"] == "openai"
    assert r.json["keygate"]["provider"] == "openrouter"
    assert r.json == models(pooled, h)["openai/gpt-e2e-vendor"]


@pytest.mark.parametrize("model", ["no-such-model", "gpt-4o*", "*",
                                   "gpt-e2e-unmapped", "%zz"])
def test_an_unknown_or_unreachable_model_is_404(pooled, model):
    r = pooled.get("/v1/models/" + model, headers=tenant(pooled))
    err = ks.assert_error(r, 404, "model_not_found")
    assert err["type"] == "not_found_error", err


def test_a_model_no_key_reaches_is_404(make_stack):
    s = make_stack(workers=1, validate_llm_keys="false")
    r = s.get("/v1/models/gpt-4o-mini", headers=tenant(s))
    ks.assert_error(r, 404, "model_not_found")


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/gpt-4o-mini"])
def test_needs_models_read(make_stack, path):
    s = make_stack(workers=1)
    r = s.post("/v1/api_keys", {"scopes": ["chat:write"]}, headers=ks.auth())
    ks.assert_error(s.get(path, headers=ks.auth(r.json["key"])),
                    403, "insufficient_permissions")


def test_openrouter_ids_are_kept_with_keygatectl(make_stack, tmp_path):
    s = make_stack(workers=1)
    kg = s.kg

    def rows():
        return dict(s.psql("SELECT model, openrouter_id FROM "
                           "openrouter_models"))

    p = kg.ctl("openrouter-models", "list")
    assert p.returncode == 0, p.stderr
    assert any(line.split() == ["gpt-4o-mini", "openai/gpt-4o-mini"]
               for line in p.stdout.splitlines()), p.stdout
    seeded = rows()
    assert seeded["claude-3-5-haiku-latest"] == "anthropic/claude-3.5-haiku"
    assert seeded["gemini-2.0-flash"] == "google/gemini-2.0-flash-001"

    p = kg.ctl("openrouter-models", "set", "gpt-e2e-one", "openai/gpt-4.1")
    assert p.returncode == 0, p.stderr
    assert rows()["gpt-e2e-one"] == "openai/gpt-4.1"
    before = rows()
    for model, orid in (("gpt-e2e-two", "gpt-4.1"), ("openai/x", "openai/y"),
                        ("gpt-e2e-two", "openai/"), ("gpt-*", "openai/z"),
                        ("gpt-e2e-two", "a/b/c")):
        p = kg.ctl("openrouter-models", "set", model, orid)
        assert p.returncode == 2, (model, orid, p.stdout, p.stderr)
        assert "expected MODEL OPENROUTER_ID" in p.stderr, p.stderr
    assert rows() == before

    bad = tmp_path / "bad.txt"
    bad.write_text("# ids\ngpt-e2e-three openai/gpt-4o\nonly-one-field\n")
    p = kg.ctl("openrouter-models", "import", str(bad))
    assert p.returncode == 2
    assert "bad.txt:3" in p.stderr and "nothing was changed" in p.stderr
    assert rows() == before

    good = tmp_path / "good.txt"
    good.write_text("gpt-e2e-three openai/gpt-4o  # a comment\n\n"
                    "gpt-4o-mini openai/gpt-4o-mini-2024-07-18\n")
    p = kg.ctl("openrouter-models", "import", str(good))
    assert p.returncode == 0, p.stderr
    assert "imported 2 model ids" in p.stdout
    after = rows()
    assert after["gpt-e2e-three"] == "openai/gpt-4o"
    assert after["gpt-4o-mini"] == "openai/gpt-4o-mini-2024-07-18"

    assert kg.ctl("openrouter-models").returncode == 2
    p = kg.ctl("openrouter-models", "--help")
    assert p.returncode == 0 and "OPENROUTER_ID" in p.stdout
