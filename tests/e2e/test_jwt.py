"""JWT bearer tokens: HS256 with jwt_secret, exp required, nbf honoured,
every other alg refused, claims sub / tenant_id / scopes; no scopes means
read-only."""

import json
import time

import pytest

import keygate_stack as ks
from keygate_stack import b64url as b64, jwt_token as token

ROOT = "00000000-0000-0000-0000-000000000001"
INVALID = (b'{"error":{"message":"Invalid API key.",'
           b'"type":"authentication_error","code":"invalid_api_key"}}')


b64 = ks.b64url
token = ks.jwt_token


@pytest.fixture(scope="module")
def jwt_stack(workdir, pg):
    s = ks.Stack(workdir.subdir("kg"), pg, dbname="jwt_%d" % time.time_ns(),
                 workers=2)
    yield s
    s.close()


def claims(**kw):
    c = {"sub": "billing-service", "tenant_id": ROOT,
         "exp": int(time.time()) + 300}
    c.update(kw)
    return c


def bearer(t):
    return {"Authorization": "Bearer " + t}


def secret_of(s):
    return s.kg.config["jwt_secret"]


def test_good_token_is_accepted_with_its_scopes(jwt_stack):
    t = token(secret_of(jwt_stack), claims(scopes=["api_keys:read"]))
    r = jwt_stack.get("/v1/auth/whoami", headers=bearer(t))
    assert r.status == 200, r.body
    assert r.json["tenant_id"] == ROOT
    assert r.json["scopes"] == ["api_keys:read"]
    assert r.json["key_prefix"] == "jwt:billing-service"
    assert jwt_stack.get("/v1/api_keys", headers=bearer(t)).status == 200
    r = jwt_stack.post("/v1/api_keys", {"scopes": ["models:read"]},
                       headers=bearer(t))
    ks.assert_error(r, 403, "insufficient_permissions")
    assert "api_keys:write" in r.json["error"]["message"]


@pytest.mark.parametrize("case", [
    "expired", "no_exp", "alg_none", "alg_hs512", "wrong_secret",
    "tampered", "not_yet_valid", "unknown_tenant", "garbage"])
def test_bad_tokens_get_the_same_401(jwt_stack, case):
    sec = secret_of(jwt_stack)
    now = int(time.time())
    if case == "expired":
        t = token(sec, claims(exp=now - 3600))
    elif case == "no_exp":
        c = claims()
        del c["exp"]
        t = token(sec, c)
    elif case == "alg_none":
        t = token(sec, claims(scopes=["*"]), header={"alg": "none"},
                  sign=False)
    elif case == "alg_hs512":
        t = token(sec, claims(), header={"alg": "HS512"})
    elif case == "wrong_secret":
        t = token("not-the-secret-" + sec, claims(scopes=["*"]))
    elif case == "tampered":
        good = token(sec, claims(scopes=["models:read"]))
        h, _, sig = good.split(".")
        t = "%s.%s.%s" % (h, b64(json.dumps(claims(scopes=["*"])).encode()),
                          sig)
    elif case == "not_yet_valid":
        t = token(sec, claims(nbf=now + 3600))
    elif case == "unknown_tenant":
        t = token(sec, claims(tenant_id="11111111-2222-3333-4444-555555555555"))
    else:
        t = "a.b.c"
    r = jwt_stack.get("/v1/auth/whoami", headers=bearer(t))
    assert r.status == 401
    assert r.body == INVALID


def test_nbf_within_leeway_is_accepted(jwt_stack):
    t = token(secret_of(jwt_stack), claims(nbf=int(time.time()) + 10))
    assert jwt_stack.get("/v1/auth/whoami", headers=bearer(t)).status == 200


def test_scopeless_token_reads_but_cannot_write(jwt_stack):
    t = token(secret_of(jwt_stack), claims())
    r = jwt_stack.get("/v1/auth/whoami", headers=bearer(t))
    assert r.status == 200
    assert "api_keys:read" in r.json["scopes"]
    assert not any(s.endswith(":write") or s == "*"
                   for s in r.json["scopes"])
    assert jwt_stack.get("/v1/api_keys", headers=bearer(t)).status == 200
    before = jwt_stack.psql("SELECT count(*) FROM api_keys")
    r = jwt_stack.post("/v1/api_keys", {"scopes": ["models:read"]},
                       headers=bearer(t))
    ks.assert_error(r, 403, "insufficient_permissions")
    assert jwt_stack.psql("SELECT count(*) FROM api_keys") == before


def test_token_mutation_is_audited_with_its_subject(jwt_stack):
    t = token(secret_of(jwt_stack), claims(scopes=["api_keys:write"]))
    r = jwt_stack.post("/v1/api_keys", {"name": "by-jwt",
                                        "scopes": ["api_keys:write"]},
                       headers=bearer(t))
    assert r.status == 201, r.body
    rows = jwt_stack.psql(
        "SELECT actor, actor_key_id, request_id FROM audit_log "
        "WHERE target_id = '%s'" % r.json["id"])
    assert rows == [["jwt:billing-service", "", r.headers["x-request-id"]]]


DEVELOPMENT_JWT_SECRET = "keygate-development-jwt-secret-not-for-production"


@pytest.mark.parametrize("mode", ["development", "production"])
def test_without_jwt_secret_no_token_is_accepted(make_stack, mode):
    """No fallback secret anyone could look up: without jwt_secret, JWT
    authentication is off, whatever the mode."""
    s = make_stack(jwt_secret=None, mode=mode, seed_dev_key=False)
    key = s.kg.ctl("create-key", "--name", "jwt-off", "--scopes", "*")
    assert key.returncode == 0, key.stderr
    assert s.get("/v1/auth/whoami",
                 headers=bearer(key.stdout.strip())).status == 200
    for secret in (DEVELOPMENT_JWT_SECRET, ""):
        t = token(secret, claims(scopes=["*"]))
        r = s.get("/v1/auth/whoami", headers=bearer(t))
        ks.assert_error(r, 401, "invalid_api_key")
        assert r.body == INVALID
    assert "JWT authentication is off" in s.kg.log_text()
