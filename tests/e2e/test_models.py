"""GET /v1/models: the models a tenant can reach now, by the gateway's key
priority, with their prices."""

import pytest

import keygate_stack as ks

OPENAI_KEY = "sk-proj-" + "m" * 40
OR_KEY = "sk-or-v1-" + "m" * 40


def tenant(s):
    r = s.post("/v1/tenants", {"name": "models"}, headers=ks.auth())
    tid = r.json["id"]
    r = s.post("/v1/api_keys", {"tenant_id": tid, "scopes": [
        "models:read", "llm_keys:write"]}, headers=ks.auth())
    return ks.auth(r.json["key"])


def models(s, headers):
    r = s.get("/v1/models", headers=headers)
    assert r.status == 200, r.body
    return {m["id"]: m for m in r.json["data"]}


def test_nothing_without_a_key_or_pool(make_stack):
    s = make_stack(workers=1, validate_llm_keys="false")
    assert models(s, tenant(s)) == {}


def test_stored_keys_and_the_pool_decide_where_models_go(make_stack):
    s = make_stack(workers=1, validate_llm_keys="false",
                   pool_openrouter_key=OR_KEY, pool_markup="0.25")
    h = tenant(s)
    every = models(s, h)
    # Only the pool: every family goes through OpenRouter, marked up.
    assert every["claude-*"]["provider"] == "openrouter"
    assert every["claude-*"]["key_source"] == "pool"
    assert every["claude-*"]["pool_markup_applied"] == 0.25
    assert every["gpt-4o*"]["pricing"] == {"input_per_mtok": 2.5,
                                            "output_per_mtok": 10}
    assert every["*"]["owned_by"] == "openrouter"
    # The tenant's own OpenAI key takes OpenAI's families, at no markup.
    assert s.post("/v1/account/llm-keys", {"openai_key": OPENAI_KEY},
                  headers=h).status == 200
    mine = models(s, h)
    assert mine["gpt-4o*"]["provider"] == "openai"
    assert mine["gpt-4o*"]["key_source"] == "user"
    assert mine["gpt-4o*"]["pool_markup_applied"] is None
    assert mine["claude-*"]["key_source"] == "pool"
    # A key sent along counts too.
    sent = models(s, dict(h, **{"X-Anthropic-Key": "sk-ant-" + "z" * 30}))
    assert sent["claude-*"]["provider"] == "anthropic"
    assert sent["claude-*"]["key_source"] == "user"


def test_needs_models_read(make_stack):
    s = make_stack(workers=1)
    r = s.post("/v1/api_keys", {"scopes": ["chat:write"]}, headers=ks.auth())
    ks.assert_error(s.get("/v1/models", headers=ks.auth(r.json["key"])),
                    403, "insufficient_permissions")
