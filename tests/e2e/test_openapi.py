"""The OpenAPI document (src/api/openapi.json.in, built into openapi.json
and into keygated): it is a valid OpenAPI 3.1 document, it describes every
route of src/api/routes.c with its method, GET /openapi.json serves it, and
what keygate really answers, route by route, validates against it.

The structure is checked against the OpenAPI 3.1 meta-schema
(tests/e2e/openapi-3.1-schema.json, the OpenAPI Initiative's
https://spec.openapis.org/oas/3.1/schema/2022-10-07, Apache-2.0) and every
schema in the document against JSON Schema draft 2020-12, with
python3-jsonschema."""

import copy
import json
import os
import re

import jsonschema
import pytest

import keygate_stack as ks
from mock_llm import Complete, Fail, MockLLM

META_SCHEMA = os.path.join(ks.HERE, "openapi-3.1-schema.json")
ROUTES_C = os.path.join(ks.SRCDIR, "src", "api", "routes.c")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options",
           "trace")

# Routes whose handler asks for a key itself (routes.c gives them no
# scope): /metrics is open on loopback, /v1/auth/check decides by the
# configured rules.
SELF_AUTHENTICATED = {
    ("GET", "/metrics"),
    ("GET", "/v1/auth/check"),
}

OPENAI_KEY = "sk-proj-" + "o" * 40


def document():
    return ks.openapi_document()


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def routes_c():
    """(METHOD, path) of every row of the route table in routes.c, with a
    {name+} segment (one that takes the rest of the path) written {name}
    as OpenAPI writes it."""
    with open(ROUTES_C, encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("api_routes[] = {"):]
    table = table[:table.index("};")]
    rows = re.findall(r'\{\s*METHOD_([A-Z]+),\s*"([^"]+)"', table)
    assert len(rows) >= 30, "the route table was not found in routes.c"
    return {(m, re.sub(r"\{(\w+)\+\}", r"{\1}", p)) for m, p in rows}


# ---------------------------------------------------------------------------
# The document itself


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    with open(META_SCHEMA, encoding="utf-8") as f:
        meta = json.load(f)
    validator = jsonschema.Draft202012Validator(meta)
    errors = ["/".join(map(str, e.absolute_path)) + ": " + e.message[:200]
              for e in validator.iter_errors(doc)]
    assert errors == []
    assert doc["openapi"].startswith("3.1.")
    # The meta-schema reaches into operations: a response without its
    # description is refused.
    broken = copy.deepcopy(doc)
    del broken["paths"]["/v1/account"]["get"]["responses"]["200"][
        "description"]
    assert list(validator.iter_errors(broken)) != []


def test_the_version_is_the_package_version():
    with open(os.path.join(ks.BUILDDIR, "config.status"),
              encoding="utf-8") as f:
        version = re.search(r'PACKAGE_VERSION[\'"]?\]?="?([^"\s]+)"',
                            f.read())
    assert version, "PACKAGE_VERSION not found in config.status"
    assert document()["info"]["version"] == version.group(1)


def schemas_in(node, where="#"):
    """Every JSON Schema in the document: under components/schemas, and
    every "schema" of a parameter, header or media type."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = where + "/" + k
            if k == "schema" and isinstance(v, dict):
                yield here, v
            elif k == "schemas" and where == "#/components":
                for name, s in v.items():
                    yield here + "/" + name, s
            else:
                yield from schemas_in(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from schemas_in(v, "%s/%d" % (where, i))


def test_every_schema_is_valid_draft_2020_12():
    found = list(schemas_in(document()))
    assert len(found) > 100
    for where, schema in found:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            pytest.fail("%s: %s" % (where, e.message))


def test_every_ref_resolves():
    doc = document()
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    assert len(refs) > 300
    for ref in set(refs):
        assert ref.startswith("#/"), "a $ref outside the document: " + ref
        ks.openapi_resolve(doc, {"$ref": ref})


def test_every_operation_names_its_scope_and_errors():
    """Security requirements and the description name the same scope; the
    authenticated operations list 401, 429, 500 and 503, those with a
    scope 403; every error response says which codes it answers."""
    doc = document()
    n = 0
    for method, path, op in operations(doc):
        n += 1
        where = "%s %s" % (method, path)
        assert op.get("summary") and op.get("operationId"), where
        assert op["responses"], where
        sec = op["security"]
        if not sec:
            assert op["description"].startswith("No key."), where
            continue
        scopes = {tuple(s) for req in sec for s in req.values() if req}
        assert len(scopes) == 1, where
        scope = scopes.pop()
        if scope:
            assert op["description"].startswith("Scope: %s." % scope[0]), \
                where
            assert "403" in op["responses"], where
        else:
            assert op["description"].startswith("Any valid key."), where
        for status in ("401", "429", "500", "503"):
            assert status in op["responses"], (where, status)
        for status, r in op["responses"].items():
            r = ks.openapi_resolve(doc, r)
            assert "X-Request-Id" in r["headers"], (where, status)
            if status == "4XX":
                # The gateway passes a provider's 4xx on as it came.
                assert r["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ProviderError"}, where
                continue
            if int(status) < 400 or "content" not in r:
                continue
            schema = r["content"]["application/json"]["schema"]
            schema = schema.get("anyOf", [schema])[0]
            codes = schema["properties"]["error"]["properties"]["code"][
                "enum"]
            assert codes, (where, status)
            for code in codes:
                assert code in r["description"], (where, status, code)
    assert n >= 40


def test_every_route_of_routes_c_is_documented_with_its_method():
    doc = document()
    documented = {(m, p) for m, p, _ in operations(doc)}
    routed = routes_c()
    assert routed - documented == set(), "routes without documentation"
    assert documented - routed == set(), \
        "documented operations that nothing serves"


def test_every_scope_of_routes_c_is_the_documented_one():
    doc = document()
    with open(ROUTES_C, encoding="utf-8") as f:
        text = f.read()
    rows = re.findall(r'\{\s*METHOD_([A-Z]+),\s*"([^"]+)",\s*\w+,\s*'
                      r'(NULL|"[^"]*")', text)
    assert len(rows) >= 30
    for method, path, scope in rows:
        path = re.sub(r"\{(\w+)\+\}", r"{\1}", path)
        op = doc["paths"][path][method.lower()]
        if (method, path) in SELF_AUTHENTICATED:
            assert op["security"] != [], (method, path)
        elif scope == "NULL":
            assert op["security"] == [], (method, path)
        else:
            assert op["x-keygate-scope"] == scope.strip('"'), (method, path)


# ---------------------------------------------------------------------------
# What keygate answers


@pytest.fixture(scope="module")
def mock():
    m = MockLLM()
    m.accept("openai", OPENAI_KEY)
    yield m
    m.close()


@pytest.fixture(scope="module")
def s(workdir, pg, mock):
    cfg = dict(mock.config())
    cfg.update(validate_llm_keys="false", credits_enforce="true",
               max_active_keys_per_tenant=0)
    st = ks.Stack(workdir.subdir("kg"), pg, dbname="openapi_%d" % os.getpid(),
                  **cfg)
    yield st
    st.close()


def call(s, method, path, body=None, key=ks.DEV_KEY, headers=None):
    """One request, checked against the document; the response."""
    h = ks.auth(key) if key else {}
    h.update(headers or {})
    r = s.request(method, path, body, headers=h)
    ks.assert_documented(method, path.split("?")[0], r)
    return r


def test_openapi_json_is_served_as_built(s):
    r = call(s, "GET", "/openapi.json", key=None)
    assert r.status == 200
    ks.assert_json_response(r)
    with open(ks.OPENAPI_JSON, "rb") as f:
        assert r.body == f.read()
    assert "x-ratelimit-limit" not in r.headers
    r = call(s, "HEAD", "/openapi.json", key=None)
    assert r.status == 200 and r.body == b""
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"


def test_the_validator_finds_a_wrong_answer(s):
    """The check is not a pass-through: a real answer with a field taken
    away, a wrong status, or a header missing disagrees."""
    doc = document()
    r = call(s, "GET", "/v1/auth/whoami")
    broken = dict(r.json)
    del broken["tenant_id"]
    assert ks.openapi_problems(doc, "GET", "/v1/auth/whoami",
                               r._replace(json=broken)) != []
    assert ks.openapi_problems(doc, "GET", "/v1/auth/whoami",
                               r._replace(status=418)) != []
    headers = {k: v for k, v in r.headers.items() if k != "x-request-id"}
    assert ks.openapi_problems(doc, "GET", "/v1/auth/whoami",
                               r._replace(headers=headers)) != []
    extra = dict(r.json, surprise=1)
    assert ks.openapi_problems(doc, "GET", "/v1/auth/whoami",
                               r._replace(json=extra)) != []


def test_health_and_errors_common_to_every_route(s):
    assert call(s, "GET", "/health", key=None).status == 200
    r = call(s, "GET", "/v1/account", key=None)
    ks.assert_error(r, 401, "missing_api_key")
    r = call(s, "GET", "/v1/account", key="kg_live_" + "x" * 48)
    ks.assert_error(r, 401, "invalid_api_key")
    ks.assert_error(call(s, "GET", "/v1/nothing"), 404, "not_found")
    r = call(s, "PUT", "/v1/account", {})
    ks.assert_error(r, 405, "method_not_allowed")
    r = call(s, "POST", "/v1/tenants", "{not json")
    ks.assert_error(r, 400, "invalid_json")
    r = call(s, "POST", "/v1/tenants", b'{"name":"\xff"}',
             headers={"Content-Type": "application/json"})
    ks.assert_error(r, 400, "invalid_utf8")
    r = call(s, "POST", "/v1/tenants", "name=x",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    ks.assert_error(r, 415, "unsupported_media_type")
    r = call(s, "POST", "/v1/tenants", [1])
    ks.assert_error(r, 400, "bad_request")


def test_keys_auth_and_verify(s):
    r = call(s, "POST", "/v1/api_keys", {"name": "doc", "scopes": [
        "models:read"], "rate_limit_max": 50, "rate_limit_window": "1 hour",
        "expires_at": "2099-01-01T00:00:00Z"})
    assert r.status == 201 and r.json["key"]
    kid, secret = r.json["id"], r.json["key"]
    ks.assert_error(call(s, "POST", "/v1/api_keys", {"scopes": ["nope"]}),
                    422, "validation_error")
    ks.assert_error(call(s, "GET", "/v1/api_keys", key=secret), 403,
                    "insufficient_permissions")
    assert call(s, "GET", "/v1/api_keys?limit=1").json["next_cursor"]
    assert call(s, "GET", "/v1/api_keys?include_revoked=true").status == 200
    ks.assert_error(call(s, "GET", "/v1/api_keys?limit=0"), 400,
                    "bad_request")
    assert call(s, "GET", "/v1/api_keys/dormant?days=1").status == 200
    assert call(s, "GET", "/v1/api_keys/" + kid).status == 200
    ks.assert_error(call(s, "GET", "/v1/api_keys/not-a-uuid"), 404,
                    "not_found")
    r = call(s, "PATCH", "/v1/api_keys/" + kid, {"name": "renamed",
                                                  "rate_limit_max": None})
    assert r.status == 200 and r.json["rate_limit_max"] is None
    r = call(s, "POST", "/v1/api_keys/%s/rotate" % kid, {"grace_seconds": 5})
    assert r.status == 200 and r.json["key"] != secret
    assert call(s, "GET", "/v1/auth/whoami", key=r.json["key"]).status == 200
    r = call(s, "POST", "/v1/keys/verify", {"key": r.json["key"]})
    assert r.json["valid"] is True and "remaining" in r.json["ratelimit"]
    r = call(s, "POST", "/v1/keys/verify", {"key": "kg_live_nothing"})
    assert r.json == {"valid": False, "code": "invalid_api_key"}
    ks.assert_error(call(s, "POST", "/v1/keys/verify", {}), 422,
                    "validation_error")
    r = call(s, "POST", "/v1/roles", {"name": "doc-role",
                                      "scopes": ["models:read"]})
    assert r.status == 201
    role = r.json["id"]
    ks.assert_error(call(s, "POST", "/v1/roles", {"name": "doc-role",
                                                  "scopes": []}),
                    409, "conflict")
    r = call(s, "PUT", "/v1/api_keys/%s/role" % kid, {"role_id": role})
    assert r.status == 200 and r.json["role_id"] == role
    ks.assert_error(call(s, "DELETE", "/v1/roles/" + role), 409, "conflict")
    assert call(s, "DELETE", "/v1/api_keys/%s/role" % kid).status == 200
    r = call(s, "DELETE", "/v1/api_keys/" + kid)
    assert r.status == 200 and r.json["revoked_at"]
    ks.assert_error(call(s, "PATCH", "/v1/api_keys/" + kid, {"name": "x"}),
                    409, "conflict")
    assert call(s, "GET", "/v1/roles?limit=2").status == 200
    assert call(s, "GET", "/v1/roles/" + role).status == 200
    r = call(s, "PATCH", "/v1/roles/" + role, {"description": "d"})
    assert r.status == 200
    r = call(s, "DELETE", "/v1/roles/" + role)
    assert r.status == 200 and r.json["deleted"] is True
    ks.assert_error(call(s, "GET", "/v1/roles/" + role), 404, "not_found")


def test_rate_limit_answer(s):
    r = call(s, "POST", "/v1/api_keys", {"scopes": ["account:read"],
                                         "rate_limit_max": 1,
                                         "rate_limit_window": "1 hour"})
    key = r.json["key"]
    r = call(s, "GET", "/v1/account", key=key)
    assert r.status == 200
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]
            ) == ("1", "0")
    assert int(r.headers["x-ratelimit-reset"]) > 0
    r = call(s, "GET", "/v1/account", key=key)
    ks.assert_error(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"]


def test_tenants_credits_usage_and_audit(s):
    r = call(s, "POST", "/v1/tenants", {"name": "doc-tenant"})
    assert r.status == 201
    tid = r.json["id"]
    ks.assert_error(call(s, "POST", "/v1/tenants", {"name": ""}), 422,
                    "validation_error")
    assert call(s, "GET", "/v1/tenants?limit=1").status == 200
    assert call(s, "GET", "/v1/tenants/" + tid).status == 200
    assert call(s, "PATCH", "/v1/tenants/" + tid, {"name": "t2"}).status \
        == 200
    r = call(s, "POST", "/v1/tenants/%s/credits" % tid, {"amount": 1.5,
                                                        "reason": "doc"})
    assert r.status == 200 and r.json["credits_balance"] == 1.5
    ks.assert_error(call(s, "POST", "/v1/tenants/%s/credits" % tid,
                         {"amount": -1}), 422, "validation_error")
    assert call(s, "GET", "/v1/tenants/%s/export" % tid).status == 200
    assert call(s, "GET", "/v1/account").status == 200
    assert call(s, "GET", "/v1/account/usage?from=2020-01-01T00:00:00Z") \
        .status == 200
    ks.assert_error(call(s, "GET", "/v1/account/usage?from=yesterday"),
                    400, "bad_request")
    r = call(s, "GET", "/v1/audit_logs?limit=3&action=tenant.create")
    assert r.status == 200 and r.json["data"]
    ks.assert_error(call(s, "GET", "/v1/audit_logs?since=never"), 400,
                    "bad_request")
    r = call(s, "DELETE", "/v1/tenants/" + tid)
    assert r.status == 200 and r.json["active"] is False
    r = call(s, "POST", "/v1/tenants/%s/purge" % tid)
    assert r.status == 200 and r.json["deleted"]["tenants"] == 1
    ks.assert_error(call(s, "GET", "/v1/tenants/" + tid), 404, "not_found")


def test_vault_and_maintenance(s):
    r = call(s, "POST", "/v1/account/llm-keys", {"openai_key": OPENAI_KEY})
    assert r.status == 200 and r.json["success"] is True
    r = call(s, "POST", "/v1/account/llm-keys", {"openai_key": "nope"})
    ks.assert_error(r, 400, "invalid_provider_key")
    ks.assert_error(call(s, "POST", "/v1/account/llm-keys", {}), 422,
                    "validation_error")
    r = call(s, "GET", "/v1/account/llm-keys")
    assert r.json["has_openai_key"] is True
    ks.assert_error(call(s, "DELETE", "/v1/account/llm-keys?provider=x"),
                    400, "bad_request")
    assert call(s, "DELETE", "/v1/account/llm-keys?provider=openai") \
        .status == 200
    r = call(s, "POST", "/v1/maintenance/reencrypt")
    assert r.status == 200 and r.json["success"] is True


def test_models_and_the_gateway(s, mock):
    r = call(s, "GET", "/v1/models", headers={"X-OpenAI-Key": OPENAI_KEY})
    assert r.status == 200 and r.json["data"]
    first = r.json["data"][0]["id"]
    r = call(s, "GET", "/v1/models/" + first,
             headers={"X-OpenAI-Key": OPENAI_KEY})
    assert r.status == 200 and r.json["id"] == first
    ks.assert_error(call(s, "GET", "/v1/models/no-such-model"), 404,
                    "model_not_found")
    r = call(s, "POST", "/v1/tenants", {"name": "doc-gateway"})
    tid = r.json["id"]
    r = call(s, "POST", "/v1/api_keys", {"tenant_id": tid, "scopes": [
        "chat:write"]})
    key = r.json["key"]
    inline = {"X-OpenAI-Key": OPENAI_KEY}
    body = {"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hi"}]}
    r = call(s, "POST", "/v1/chat/completions", body, key=key,
             headers=inline)
    ks.assert_error(r, 402, "insufficient_credits")
    assert call(s, "POST", "/v1/tenants/%s/credits" % tid,
                {"amount": 100}).status == 200
    mock.behave("openai", Complete(usage=(5, 3)))
    r = call(s, "POST", "/v1/chat/completions", body, key=key,
             headers=inline)
    assert r.status == 200 and r.json["keygate"]["key_source"] == "user"
    r = call(s, "POST", "/v1/chat/completions", dict(body, stream=True),
             key=key, headers=inline)
    assert r.status == 200 and b"[DONE]" in r.body
    r = call(s, "POST", "/v1/chat/completions",
             dict(body, base_url="http://elsewhere"), key=key,
             headers=inline)
    ks.assert_error(r, 400, "forbidden_field")
    r = call(s, "POST", "/v1/chat/completions", {"model": "gpt-4o-mini"},
             key=key, headers=inline)
    ks.assert_error(r, 422, "validation_error")
    r = call(s, "POST", "/v1/chat/completions", body, key=key)
    ks.assert_error(r, 401, "missing_provider_key")
    mock.behave("openai", Fail(500))
    r = call(s, "POST", "/v1/chat/completions", body, key=key,
             headers=inline)
    ks.assert_error(r, 502, "upstream_error")
    # A provider's 4xx keeps its status and code: documented as such.
    mock.behave("openai", Fail(404))
    r = call(s, "POST", "/v1/chat/completions", body, key=key,
             headers=inline)
    assert r.status == 404
    mock.behave("openai", Complete())


def test_the_gateway_routes_and_metrics_answer_as_documented(llm_stack, llm):
    """POST /v1/messages (plain and streamed), POST /v1/embeddings,
    GET /v1/models/{id}, GET /v1/auth/check and GET /metrics, each
    checked against the document."""
    keys = {"anthropic": "sk-ant-api03-" + "m" * 40,
            "openai": "sk-proj-" + "m" * 40}
    llm.serve(keys, content="Hello there.", pieces=3, usage=(21, 5), dims=4)
    s = llm_stack
    anthropic = {"X-Anthropic-Key": keys["anthropic"],
                 "anthropic-version": "2023-06-01"}
    body = {"model": ks.PROVIDER_MODELS["anthropic"], "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hi"}]}
    r = call(s, "POST", "/v1/messages", body, headers=anthropic)
    assert r.status == 200, r.body
    assert r.json["type"] == "message"
    r = call(s, "POST", "/v1/messages", dict(body, stream=True),
             headers=anthropic)
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("text/event-stream")
    assert b"message_stop" in r.body
    ks.assert_error(call(s, "POST", "/v1/messages", {"model": "x"},
                         headers=anthropic), 422, "validation_error")
    r = call(s, "POST", "/v1/embeddings",
             {"model": ks.PROVIDER_MODELS["openai"], "input": "hello"},
             headers={"X-OpenAI-Key": keys["openai"]})
    assert r.status == 200, r.body
    assert r.json["data"][0]["embedding"]
    r = call(s, "GET", "/v1/models/" + ks.PROVIDER_MODELS["openai"],
             headers={"X-OpenAI-Key": keys["openai"]})
    assert r.status == 200 and r.json["id"] == ks.PROVIDER_MODELS["openai"]
    ks.assert_error(call(s, "GET", "/v1/models/no-such-model"), 404,
                    "model_not_found")
    # Without X-Original-URI there is nothing to decide: 403, no body.
    r = call(s, "GET", "/v1/auth/check")
    assert r.status == 403 and r.body == b""
    r = call(s, "GET", "/metrics", key=None)
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert b"# TYPE" in r.body
