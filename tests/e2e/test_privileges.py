"""Privileges inside one's own subtree, end to end:

- a tenant id is a UUID whatever its case: no key deactivates or purges
  its own tenant by writing the id in capitals;
- a key makes and changes keys only within its own bounds: no later
  expiry, no higher rate limit, no live key from a test key;
- a role is changed only by a key holding all of its current scopes, and
  only a role the caller can see is attached;
- global maintenance belongs to the root tenant;
- a descendant's audit listing does not show its ancestors' key ids and
  addresses;
- on the operator's pool key, a provider's refusal reaches the tenant as
  its status only (the message stays in keygate's log).

Tenants are inserted with SQL; keys are made with keygatectl or, for
expiry and limits, with the development key through the API."""

import datetime
import json
import secrets
import uuid

import pytest

import keygate_stack as ks
from keygate_stack import DEV_KEY, assert_error, auth
from mock_llm import Fail

ROOT = "00000000-0000-0000-0000-000000000001"


# ---------------------------------------------------------------------------
# Helpers

def new_tenant(stack, parent=ROOT):
    tid = str(uuid.uuid4())
    stack.psql("INSERT INTO tenants (id, parent_id, name, path) SELECT "
               "'%s', id, 'e2e-priv', path || '%s'::uuid FROM tenants "
               "WHERE id = '%s'" % (tid, tid, parent))
    return tid


def cli_key(stack, tenant, scopes, env="live"):
    p = stack.kg.ctl("create-key", "--name", "e2e-priv", "--scopes",
                     ",".join(scopes), "--tenant", tenant, "--env", env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip()


def api_key(stack, key=DEV_KEY, **body):
    body.setdefault("name", "e2e-priv")
    resp = stack.post("/v1/api_keys", body, headers=auth(key))
    assert resp.status == 201, resp.body[:400]
    return resp.json


def row(stack, sql):
    text = stack.pg.scalar("SELECT row_to_json(x)::text FROM (%s) x" % sql,
                           dbname=stack.dbname)
    return json.loads(text) if text else None


def key_row(stack, kid):
    r = row(stack, "SELECT * FROM api_keys WHERE id = '%s'" % kid)
    r.pop("last_used_at")
    return r


def keys_of(stack, tenant):
    return int(stack.pg.scalar("SELECT count(*) FROM api_keys WHERE "
                               "tenant_id = '%s'" % tenant,
                               dbname=stack.dbname))


def iso_in(seconds):
    t = (datetime.datetime.now(datetime.timezone.utc) +
         datetime.timedelta(seconds=seconds))
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def patch(stack, path, body, key):
    return stack.request("PATCH", path, body, headers=auth(key))


def delete(stack, path, key):
    return stack.request("DELETE", path, headers=auth(key))


# ---------------------------------------------------------------------------
# Tenant ids as UUIDs

def test_own_tenant_in_capitals_is_still_the_own_tenant(stack):
    tenant = new_tenant(stack)
    below = new_tenant(stack, tenant)
    key = cli_key(stack, tenant, ["*"])
    before = stack.psql("SELECT id, active FROM tenants WHERE %s = "
                        "ANY(path) ORDER BY id" % ("'%s'" % tenant))
    for resp in (delete(stack, "/v1/tenants/" + tenant.upper(), key),
                 stack.post("/v1/tenants/%s/purge" % tenant.upper(),
                            headers=auth(key))):
        assert_error(resp, 409)
    after = stack.psql("SELECT id, active FROM tenants WHERE %s = "
                       "ANY(path) ORDER BY id" % ("'%s'" % tenant))
    assert after == before and len(after) == 2
    # The same id in capitals reaches a tenant below as it should.
    resp = stack.get("/v1/tenants/" + below.upper(), headers=auth(key))
    assert resp.status == 200, resp.body
    assert resp.json["id"] == below


def test_the_root_in_capitals_is_not_removed(stack):
    resp = delete(stack, "/v1/tenants/" + ROOT.upper(), DEV_KEY)
    assert_error(resp, 409)
    assert stack.pg.scalar("SELECT active FROM tenants WHERE id = '%s'"
                           % ROOT, dbname=stack.dbname) == "t"


def test_an_audit_target_in_capitals_is_the_same_id(stack):
    tenant = new_tenant(stack)
    made = api_key(stack, DEV_KEY, tenant_id=tenant, scopes=["audit:read"])
    resp = stack.get("/v1/audit_logs?target_id=" + made["id"].upper(),
                     headers=auth(DEV_KEY))
    assert resp.status == 200, resp.body
    assert [r["action"] for r in resp.json["data"]] == ["api_key.create"]


# ---------------------------------------------------------------------------
# Keys within the caller's bounds

@pytest.fixture
def bounded(stack):
    """A key of a new tenant that expires in an hour and allows 50
    requests a minute: (secret, key object)."""
    tenant = new_tenant(stack)
    obj = api_key(stack, tenant_id=tenant,
                  scopes=["api_keys:write", "api_keys:read"],
                  expires_at=iso_in(3600), rate_limit_max=50,
                  rate_limit_window="1 minute")
    return obj["key"], obj


@pytest.mark.parametrize("fields", [
    {"expires_at": None},
    {"expires_at": "later"},
    {"rate_limit_max": 100000},
    {"rate_limit_max": 50, "rate_limit_window": "1 second"},
])
def test_a_key_cannot_make_a_key_beyond_its_bounds(stack, bounded, fields):
    key, obj = bounded
    body = dict(fields, name="twin", scopes=["api_keys:read"])
    if body.get("expires_at") == "later":
        body["expires_at"] = iso_in(7200)
    err = assert_error(stack.post("/v1/api_keys", body, headers=auth(key)),
                       403, "insufficient_permissions")
    assert ("expire" in err["message"] if "expires_at" in fields
            else "50 requests per 60 seconds" in err["message"]), err
    assert keys_of(stack, obj["tenant_id"]) == 1


def test_what_a_key_leaves_out_comes_from_it(stack, bounded):
    key, obj = bounded
    made = api_key(stack, key, scopes=["api_keys:read"])
    assert made["expires_at"] is not None
    assert (datetime.datetime.fromisoformat(
        made["expires_at"].replace("Z", "+00:00")) <=
        datetime.datetime.fromisoformat(
        obj["expires_at"].replace("Z", "+00:00")))
    assert made["rate_limit_max"] == 50
    assert made["rate_limit_window"] == obj["rate_limit_window"]
    lower = api_key(stack, key, scopes=["api_keys:read"], rate_limit_max=10,
                    expires_at=iso_in(600))
    assert lower["rate_limit_max"] == 10


@pytest.mark.parametrize("fields", [
    {"expires_at": None}, {"rate_limit_max": 100000},
    {"rate_limit_max": None}])
def test_a_key_cannot_lift_its_own_bounds(stack, bounded, fields):
    key, obj = bounded
    before = key_row(stack, obj["id"])
    assert_error(patch(stack, "/v1/api_keys/" + obj["id"], fields, key),
                 403, "insufficient_permissions")
    assert key_row(stack, obj["id"]) == before


def test_a_key_may_lower_its_own_bounds(stack, bounded):
    key, obj = bounded
    resp = patch(stack, "/v1/api_keys/" + obj["id"],
                 {"rate_limit_max": 20, "expires_at": iso_in(1800)}, key)
    assert resp.status == 200, resp.body
    assert resp.json["rate_limit_max"] == 20


def test_a_test_key_makes_test_keys_only(stack):
    tenant = new_tenant(stack)
    key = cli_key(stack, tenant, ["api_keys:write"], env="test")
    err = assert_error(stack.post("/v1/api_keys", {
        "scopes": ["api_keys:write"], "env": "live"}, headers=auth(key)),
        403, "insufficient_permissions")
    assert "test key" in err["message"]
    assert keys_of(stack, tenant) == 1
    made = api_key(stack, key, scopes=["api_keys:write"])
    assert made["env"] == "test"
    assert made["key"].startswith("kg_test_")


# ---------------------------------------------------------------------------
# Roles

def test_a_role_is_changed_only_by_a_key_holding_it(stack):
    tenant = new_tenant(stack)
    admin = cli_key(stack, tenant, ["*"])
    resp = stack.post("/v1/roles", {"name": "everything", "scopes": ["*"]},
                      headers=auth(admin))
    assert resp.status == 201, resp.body
    role = resp.json["id"]
    holder = api_key(stack, admin, role_id=role)
    roles_only = cli_key(stack, tenant, ["roles:write", "roles:read"])
    before = row(stack, "SELECT * FROM roles WHERE id = '%s'" % role)
    err = assert_error(patch(stack, "/v1/roles/" + role,
                             {"scopes": ["roles:read"]}, roles_only),
                       403, "insufficient_permissions")
    assert "scope *" in err["message"], err
    assert_error(delete(stack, "/v1/roles/" + role, roles_only), 403,
                 "insufficient_permissions")
    assert row(stack, "SELECT * FROM roles WHERE id = '%s'" % role) == before
    resp = stack.get("/v1/auth/whoami", headers=auth(holder["key"]))
    assert resp.status == 200 and "*" in json.dumps(resp.json), resp.body
    # Its holder of every scope may.
    resp = patch(stack, "/v1/roles/" + role, {"name": "renamed"}, admin)
    assert resp.status == 200, resp.body


def test_an_ancestors_role_it_cannot_see_is_not_attached(stack):
    parent = new_tenant(stack)
    child = new_tenant(stack, parent)
    parent_admin = cli_key(stack, parent, ["*"])
    resp = stack.post("/v1/roles", {"name": "parent-role",
                                    "scopes": ["models:read"]},
                      headers=auth(parent_admin))
    assert resp.status == 201, resp.body
    role = resp.json["id"]
    child_admin = cli_key(stack, child, ["*"])
    assert_error(stack.get("/v1/roles/" + role, headers=auth(child_admin)),
                 404)
    target = api_key(stack, child_admin, scopes=["models:read"])
    resp = stack.request("PUT", "/v1/api_keys/%s/role" % target["id"],
                         {"role_id": role}, headers=auth(child_admin))
    assert_error(resp, 404)
    resp = stack.post("/v1/api_keys", {"role_id": role},
                      headers=auth(child_admin))
    assert_error(resp, 422)
    assert stack.pg.scalar("SELECT count(*) FROM api_keys WHERE role_id = "
                           "'%s'" % role, dbname=stack.dbname) == "0"


# ---------------------------------------------------------------------------
# Maintenance

def test_maintenance_is_the_roots_alone(stack):
    tenant = new_tenant(stack)
    key = cli_key(stack, tenant, ["*"])
    rows = stack.psql("SELECT tenant_id, provider, ciphertext FROM llm_keys "
                      "ORDER BY 1, 2")
    assert_error(stack.post("/v1/maintenance/reencrypt", headers=auth(key)),
                 403, "insufficient_permissions")
    assert stack.psql("SELECT tenant_id, provider, ciphertext FROM llm_keys "
                      "ORDER BY 1, 2") == rows
    assert stack.pg.scalar("SELECT count(*) FROM audit_log WHERE action = "
                           "'vault.reencrypt'", dbname=stack.dbname) == "0"
    resp = stack.post("/v1/maintenance/reencrypt", headers=auth(DEV_KEY))
    assert resp.status == 200, resp.body


# ---------------------------------------------------------------------------
# The audit listing

def test_ancestors_actors_are_redacted_below(stack):
    tenant = new_tenant(stack)
    made = api_key(stack, DEV_KEY, tenant_id=tenant,
                   scopes=["audit:read", "api_keys:write"])
    own = api_key(stack, made["key"], scopes=["audit:read"])

    def listing(key):
        resp = stack.get("/v1/audit_logs?action=api_key.create",
                         headers=auth(key))
        assert resp.status == 200, resp.body
        return {r["target_id"]: r for r in resp.json["data"]}

    below = listing(made["key"])
    by_root = below[made["id"]]
    assert by_root["actor_key_id"] is None
    assert by_root["client_addr"] is None
    assert by_root["actor"] is None
    mine = below[own["id"]]
    assert mine["actor_key_id"] == made["id"]
    assert mine["client_addr"]
    seen_by_root = listing(DEV_KEY)[made["id"]]
    assert seen_by_root["actor_key_id"] == stack.pg.scalar(
        "SELECT id FROM api_keys WHERE key_prefix = 'kg_dev_local_default'",
        dbname=stack.dbname)
    assert seen_by_root["client_addr"]


# ---------------------------------------------------------------------------
# Pool calls

@pytest.mark.parametrize("status", [400, 402, 429])
def test_pool_errors_are_generic_to_tenants(pooled_stack, llm, status):
    pooled, mock = pooled_stack, llm
    mock.reset()
    mock.accept("openrouter", ks.POOL_KEY)
    words = "Operator account %s: balance 12.34 USD" % secrets.token_hex(4)
    mock.behave("openrouter", Fail(status, message=words))
    key = cli_key(pooled, new_tenant(pooled), ["chat:write"])
    resp = pooled.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "max_tokens": 20,
        "messages": [{"role": "user", "content": "Hi"}]},
        headers=auth(key))
    err = assert_error(resp, status)
    assert words not in resp.body.decode()
    assert "Operator account" not in resp.body.decode()
    assert "openrouter" in err["message"], err
    ks.wait_until(lambda: words in pooled.kg.log_text(), 10,
                  what="the message in keygate's log")
