"""API keys end to end: /v1/api_keys (create, list, get, update, revoke,
rotate, dormant), /v1/auth/whoami and /v1/keys/verify, through lighttpd,
with the database checked afterwards.

Most tests share the module's stack (three workers) and make their own
tenants and keys, so that they do not see each other's rows.  Tenants are
inserted with SQL, so that these tests depend on the key routes only."""

import base64
import datetime
import json
import re
import secrets
import threading
import time
import uuid
import zlib

import pytest

import keygate_stack as ks
from keygate_stack import DEV_KEY, assert_error, assert_json_response, auth
from keygate_stack import burst, on_every_worker, rid, served_by, with_rid
from keygate_stack import audit_rows, count_rows

ROOT = "00000000-0000-0000-0000-000000000001"
INVALID_KEY_BODY = ks.INVALID_KEY_BODY
KEY_RE = re.compile(r"^kg_(live|test)_[0-9A-Za-z]{43}[0-9A-Za-z]{6}$")
PREFIX_RE = re.compile(r"^kg_(live|test)_[0-9A-Za-z]{8}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?"
                    r"(Z|[+-]\d\d:\d\d)$")
KEY_OBJECT_FIELDS = {
    "id", "object", "name", "tenant_id", "env", "key_prefix", "last4",
    "scopes", "role_id", "effective_scopes", "expires_at", "revoked_at",
    "disabled_at", "rate_limit_max", "rate_limit_window", "last_used_at",
    "created_at", "updated_at",
}
SQL_INJECTION = "' OR (SELECT pg_sleep(3)) IS NULL --"


# ---------------------------------------------------------------------------
# Keys of our format, made here

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n, width):
    digits = []
    for _ in range(width):
        n, r = divmod(n, 62)
        digits.append(B62[r])
    assert n == 0
    return "".join(reversed(digits))


def checksum(head):
    """The 6 base62 characters of CRC32 over everything before them."""
    return base62(zlib.crc32(head.encode()), 6)


def forge_key(env="live", prefix=None):
    """A well-formed key with a correct checksum that keygate never issued;
    with `prefix`, one that shares an issued key's lookup prefix."""
    head = prefix or "kg_%s_%s" % (env, "".join(
        secrets.choice(B62) for _ in range(8)))
    head += "".join(secrets.choice(B62) for _ in range(43 - 8))
    return head + checksum(head)


# ---------------------------------------------------------------------------
# Helpers

def new_tenant(stack, parent=ROOT, name="e2e"):
    """A tenant below `parent`, inserted with SQL; returns its id."""
    tid = str(uuid.uuid4())
    stack.psql("INSERT INTO tenants (id, parent_id, name, path) SELECT "
               "'%s', id, '%s', path || '%s'::uuid FROM tenants "
               "WHERE id = '%s'" % (tid, name, tid, parent))
    assert stack.pg.scalar("SELECT count(*) FROM tenants WHERE id = '%s'"
                           % tid, dbname=stack.dbname) == "1"
    return tid


def ctl_key(stack, tenant, scopes, env="live", name="e2e-ctl"):
    """A key made with keygatectl create-key; returns the secret."""
    p = stack.kg.ctl("create-key", "--name", name, "--scopes",
                     ",".join(scopes), "--tenant", tenant, "--env", env)
    assert p.returncode == 0, p.stdout + p.stderr
    key = p.stdout.strip()
    assert KEY_RE.match(key), "create-key printed %r" % p.stdout
    return key


def key_id(stack, key):
    """The id of the key whose current secret is `key`."""
    return stack.pg.scalar("SELECT id FROM api_keys WHERE key_prefix = '%s'"
                           % key[:16], dbname=stack.dbname)


def create(stack, body, key=DEV_KEY, request_id=None):
    headers = auth(key)
    if request_id:
        headers = with_rid(headers, request_id)
    return stack.post("/v1/api_keys", body, headers=headers)


def rotate(stack, kid, body=None, key=DEV_KEY, request_id=None):
    headers = auth(key)
    if request_id:
        headers = with_rid(headers, request_id)
    return stack.post("/v1/api_keys/%s/rotate" % kid, body, headers=headers)


def mint(stack, scopes, key=DEV_KEY, **fields):
    """Creates a key through the API; returns (secret, key object) once
    the object has the public shape."""
    secret, obj = ks.mint(stack, scopes, key, **fields)
    assert_key_object(obj, with_secret=True)
    return secret, obj


def assert_key_object(obj, with_secret=False):
    """The public shape of a key: exactly these members, nothing secret."""
    expected = KEY_OBJECT_FIELDS | ({"key"} if with_secret else set())
    assert set(obj) == expected, "members %r" % sorted(set(obj) ^ expected)
    assert obj["object"] == "api_key"
    uuid.UUID(obj["id"])
    uuid.UUID(obj["tenant_id"])
    assert obj["env"] in ("live", "test")
    assert PREFIX_RE.match(obj["key_prefix"]), obj["key_prefix"]
    assert obj["key_prefix"][3:7] == obj["env"]
    assert re.match(r"^[0-9A-Za-z]{4}$", obj["last4"]), obj["last4"]
    assert isinstance(obj["scopes"], list)
    assert isinstance(obj["effective_scopes"], list)
    for name in ("created_at", "updated_at"):
        assert ISO_RE.match(obj[name]), "%s = %r" % (name, obj[name])
    for name in ("expires_at", "revoked_at", "disabled_at", "last_used_at"):
        assert obj[name] is None or ISO_RE.match(obj[name]), (
            "%s = %r" % (name, obj[name]))
    if with_secret:
        key = obj["key"]
        assert KEY_RE.match(key), key
        assert key.startswith(obj["key_prefix"])
        assert key.endswith(obj["last4"])
        assert checksum(key[:-6]) == key[-6:]


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_in(seconds):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def whoami(stack, key, header="bearer"):
    headers = auth(key) if header == "bearer" else {"X-API-Key": key}
    return stack.get("/v1/auth/whoami", headers=headers)


assert_invalid_key = ks.assert_invalid_key


def key_row(stack, kid):
    """The key's whole row as a dict (bytea as hex), or None."""
    text = stack.pg.scalar("SELECT row_to_json(k)::text FROM api_keys k "
                           "WHERE id = '%s'" % kid, dbname=stack.dbname)
    return json.loads(text) if text else None


def key_state(stack, kid):
    """The key's row without last_used_at, which any use may write
    lazily: what a refused request must leave exactly as it was."""
    row = key_row(stack, kid)
    if row is not None:
        row.pop("last_used_at")
    return row


expect_200 = ks.expect_200


def texts_of(*responses):
    return [r.body.decode("utf-8", "replace") for r in responses]


# ---------------------------------------------------------------------------
# 1. Secrets: where the raw key may and may not appear

@pytest.mark.parametrize("args,why", [
    (["--scopes", "bogus"], 'unknown scope "bogus"'),
    (["--scopes", ", ,"], "--scopes is empty"),
    (["--scopes", ",".join(["models:read"] * 65)], "too many scopes"),
    (["--env", "prod"], "--env must be live or test"),
    (["--tenant", "00000000-0000-0000-0000-00000000beef"],
     "does not exist or is inactive"),
], ids=["unknown-scope", "no-scope", "too-many", "env", "no-tenant"])
def test_keygatectl_create_key_refuses_and_makes_nothing(stack, args, why):
    keys = count_rows(stack, "api_keys")
    audit = count_rows(stack, "audit_log")
    p = stack.kg.ctl("create-key", "--name", "refused", *args)
    assert p.returncode == (1 if "tenant" in args[0] else 2), p.stderr
    assert why in p.stderr and p.stdout == ""
    assert count_rows(stack, "api_keys") == keys
    assert count_rows(stack, "audit_log") == audit


def test_created_key_authenticates_with_bearer_and_x_api_key(stack):
    tenant = new_tenant(stack)
    request_id = rid("create")
    resp = create(stack, {"name": "both headers", "scopes": ["api_keys:read"],
                          "tenant_id": tenant}, request_id=request_id)
    assert resp.status == 201, resp.body
    assert_json_response(resp)
    assert resp.headers["x-request-id"] == request_id
    obj = resp.json
    assert_key_object(obj, with_secret=True)
    assert obj["name"] == "both headers"
    assert obj["tenant_id"] == tenant
    assert obj["env"] == "live" and obj["key"].startswith("kg_live_")
    assert obj["scopes"] == ["api_keys:read"]
    assert obj["effective_scopes"] == ["api_keys:read"]
    assert obj["role_id"] is None
    for name in ("expires_at", "revoked_at", "disabled_at", "last_used_at",
                 "rate_limit_max", "rate_limit_window"):
        assert obj[name] is None, name
    key = obj["key"]
    for header in ("bearer", "x-api-key"):
        who = whoami(stack, key, header)
        assert who.status == 200, (header, who.body)
        assert_json_response(who)
        assert who.json["key_id"] == obj["id"]
        assert who.json["tenant_id"] == tenant
    listed = stack.get("/v1/api_keys", headers={"X-API-Key": key})
    assert listed.status == 200, listed.body
    assert [k["id"] for k in listed.json["data"]] == [obj["id"]]
    row = key_row(stack, obj["id"])
    assert row["key_prefix"] == key[:16] and row["last4"] == key[-4:]
    assert row["tenant_id"] == tenant and row["scopes"] == ["api_keys:read"]


def secret_forms(stack, key):
    """Every form in which the key or its stored hash could leak."""
    digest = stack.pg.scalar("SELECT encode(key_hash, 'hex') FROM api_keys "
                             "WHERE key_prefix = '%s'" % key[:16],
                             dbname=stack.dbname)
    assert digest and len(digest) == 64
    raw = bytes.fromhex(digest)
    return [key, key[16:-4], digest, digest.upper(),
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def test_key_and_hash_appear_only_in_the_create_response(stack):
    tenant = new_tenant(stack)
    reader, _ = mint(stack, ["api_keys:read", "api_keys:write",
                             "keys:verify", "chat:write"], tenant_id=tenant)
    resp = create(stack, {"name": "leak check", "scopes": ["chat:write"],
                          "tenant_id": tenant})
    assert resp.status == 201, resp.body
    key, kid = resp.json["key"], resp.json["id"]
    forms = secret_forms(stack, key)
    rest = {k: v for k, v in resp.json.items() if k != "key"}
    seen = [json.dumps(rest)]
    hdr = auth(reader)
    got = stack.get("/v1/api_keys/" + kid, headers=hdr)
    assert got.status == 200, got.body
    assert_key_object(got.json)
    listed = stack.get("/v1/api_keys?include_revoked=true", headers=hdr)
    assert listed.status == 200, listed.body
    assert kid in [k["id"] for k in listed.json["data"]]
    for obj in listed.json["data"]:
        assert_key_object(obj)
    verified = stack.post("/v1/keys/verify", {"key": key}, headers=hdr)
    assert verified.status == 200 and verified.json["valid"] is True
    patched = stack.request("PATCH", "/v1/api_keys/" + kid,
                            {"name": "renamed"}, headers=hdr)
    assert patched.status == 200, patched.body
    assert_key_object(patched.json)
    deleted = stack.request("DELETE", "/v1/api_keys/" + kid, headers=hdr)
    assert deleted.status == 200, deleted.body
    assert_key_object(deleted.json)
    seen += texts_of(got, listed, verified, patched, deleted,
                     whoami(stack, reader))
    for text in seen:
        for form in forms:
            assert form not in text, "%r leaked into %s" % (form, text[:300])
        for name in ('"key"', '"key_hash"', '"hash"', '"secret"'):
            assert name not in text, "%s member in %s" % (name, text[:300])


def test_database_dump_holds_no_raw_key(stack):
    tenant = new_tenant(stack)
    keys = [mint(stack, ["chat:write"], tenant_id=tenant, env=env)[0]
            for env in ("live", "test", "live")]
    old = keys[0]
    rotated = stack.post("/v1/api_keys/%s/rotate" % key_id(stack, old),
                         {"grace_seconds": 600}, headers=auth())
    assert rotated.status == 200, rotated.body
    keys.append(rotated.json["key"])
    keys.append(ctl_key(stack, tenant, ["models:read"]))
    for key in keys:    # every one of them works right now
        assert whoami(stack, key).status == 200
    dump = stack.pg.dump(stack.dbname)
    assert "CREATE TABLE public.api_keys" in dump
    assert keys[1][:16] in dump     # the prefix is stored, by design
    for key in keys:
        for form in (key, key[16:], key[16:-6], key[8:-6]):
            assert form not in dump, "raw key material %r in pg_dump" % form


def test_log_holds_no_raw_key(stack):
    tenant = new_tenant(stack)
    verifier_key, _ = mint(stack, ["keys:verify"], tenant_id=tenant)
    keys = []
    for env in ("live", "test"):
        key, obj = mint(stack, ["chat:write"], tenant_id=tenant, env=env)
        assert whoami(stack, key, "x-api-key").status == 200
        assert stack.post("/v1/keys/verify", {"key": key},
                          headers=auth(verifier_key)).json["valid"] is True
        resp = rotate(stack, obj["id"], {"grace_seconds": 60})
        assert resp.status == 200, resp.body
        assert resp.json["key"].startswith("kg_%s_" % env), "env changed"
        keys += [key, resp.json["key"]]
    keys.append(verifier_key)
    marker = rid("log")
    stack.get("/health", headers={"X-Request-Id": marker})
    served_by(stack, [marker])      # the log has caught up
    text = stack.kg.log_text()
    for key in keys:
        for form in (key, key[16:], key[16:-6]):
            assert form not in text, "raw key material in the log"


# ---------------------------------------------------------------------------
# 2. One identical 401 for every bad credential

@pytest.fixture(scope="module")
def expired_key(stack):
    """A key created to expire three seconds later, once it has."""
    key, obj = mint(stack, ["chat:write"], expires_at=iso_in(3))
    assert whoami(stack, key).status == 200, "not valid before it expires"
    deadline = parse_ts(obj["expires_at"]).timestamp() + 1.2
    time.sleep(max(0.0, deadline - time.time()))
    return key


def revoked_key(stack):
    key, obj = mint(stack, ["chat:write"])
    resp = stack.request("DELETE", "/v1/api_keys/" + obj["id"],
                         headers=auth())
    assert resp.status == 200, resp.body
    return key


def mistyped_key(stack):
    key, _ = mint(stack, ["chat:write"])
    i = 20
    typo = key[:i] + ("A" if key[i] != "A" else "B") + key[i + 1:]
    assert checksum(typo[:-6]) != typo[-6:]
    return typo


def disabled_key(stack):
    key, obj = mint(stack, ["chat:write"])
    stack.psql("UPDATE api_keys SET disabled_at = now() WHERE id = '%s'"
               % obj["id"])
    return key


def inactive_tenant_key(stack):
    tenant = new_tenant(stack)
    key, _ = mint(stack, ["chat:write"], tenant_id=tenant)
    assert whoami(stack, key).status == 200
    # Through the API, which tells every worker before it answers; a
    # change made with SQL reaches them by NOTIFY (test_keycache.py).
    r = stack.request("DELETE", "/v1/tenants/%s" % tenant, headers=auth())
    assert r.status == 200, r.body
    assert stack.psql("SELECT active FROM tenants WHERE id = '%s'"
                      % tenant) == [["f"]]
    return key


def wrong_secret_key(stack):
    """The prefix of a live key, a different secret, a valid checksum."""
    key, _ = mint(stack, ["chat:write"])
    forged = forge_key(prefix=key[:16])
    assert forged != key and KEY_RE.match(forged)
    return forged


# kind: function(stack, request) -> the credential
BAD_CREDENTIALS = {
    "revoked": lambda stack, request: revoked_key(stack),
    "disabled": lambda stack, request: disabled_key(stack),
    "inactive-tenant": lambda stack, request: inactive_tenant_key(stack),
    "expired": lambda stack, request: request.getfixturevalue("expired_key"),
    "unknown": lambda stack, request: forge_key(),
    "unknown-test-env": lambda stack, request: forge_key("test"),
    "mistyped": lambda stack, request: mistyped_key(stack),
    "wrong-secret": lambda stack, request: wrong_secret_key(stack),
    "truncated": lambda stack, request: mint(stack, ["chat:write"])[0][:-1],
    "sql-injection": lambda stack, request: SQL_INJECTION,
    "not-a-key": lambda stack, request: "hello",
}


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
def test_every_bad_credential_gets_the_same_401(stack, request, kind,
                                                header):
    credential = BAD_CREDENTIALS[kind](stack, request)
    started = time.monotonic()
    resp = whoami(stack, credential, header)
    elapsed = time.monotonic() - started
    assert_invalid_key(resp)
    # pg_sleep(3) in the injection: a credential that reached SQL shows.
    assert elapsed < 1.0, "took %.2fs" % elapsed
    # The same for a route that needs a scope, and for a write.
    hdr = auth(credential) if header == "bearer" else {
        "X-API-Key": credential}
    assert_invalid_key(stack.get("/v1/api_keys", headers=hdr))
    assert_invalid_key(stack.post("/v1/api_keys", {"scopes": ["*"]},
                                  headers=hdr))
    reference = whoami(stack, forge_key(), header)
    ignore = {"date", "x-request-id"}
    assert ({k: v for k, v in resp.headers.items() if k not in ignore} ==
            {k: v for k, v in reference.headers.items() if k not in ignore})


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""},
                                     {"Authorization": ""}],
                         ids=["none", "empty-x-api-key",
                              "empty-authorization"])
def test_no_credential_is_401_missing_api_key(stack, headers):
    resp = stack.get("/v1/api_keys", headers=headers)
    err = assert_error(resp, 401, "missing_api_key")
    assert err["type"] == "authentication_error"


# ---------------------------------------------------------------------------
# 3. Changes reach every worker at once

def test_revocation_reaches_every_worker_at_once(stack):
    key, obj = mint(stack, ["api_keys:read"])
    on_every_worker(stack, "GET", "/v1/auth/whoami", auth(key),
                    expect_200)
    resp = stack.request("DELETE", "/v1/api_keys/" + obj["id"],
                         headers=auth())
    assert resp.status == 200, resp.body
    on_every_worker(stack, "GET", "/v1/auth/whoami", auth(key),
                    assert_invalid_key)


def test_rotation_reaches_every_worker_at_once(stack):
    key, obj = mint(stack, ["api_keys:read"])
    on_every_worker(stack, "GET", "/v1/auth/whoami", auth(key),
                    expect_200)
    resp = stack.post("/v1/api_keys/%s/rotate" % obj["id"],
                      {"grace_seconds": 0}, headers=auth())
    assert resp.status == 200, resp.body
    new = resp.json["key"]
    on_every_worker(stack, "GET", "/v1/auth/whoami", auth(key),
                    assert_invalid_key)

    def new_works(r):
        assert r.status == 200, r.body
        assert r.json["key_id"] == obj["id"]
        assert r.json["key_prefix"] == new[:16]
    on_every_worker(stack, "GET", "/v1/auth/whoami", auth(new), new_works)


def test_scope_change_reaches_every_worker_at_once(stack):
    key, obj = mint(stack, ["api_keys:read"])
    on_every_worker(stack, "GET", "/v1/api_keys?limit=1", auth(key),
                    expect_200)
    resp = stack.request("PATCH", "/v1/api_keys/" + obj["id"],
                         {"scopes": ["chat:write"]}, headers=auth())
    assert resp.status == 200, resp.body
    assert resp.json["scopes"] == ["chat:write"]
    ks.assert_scopes_everywhere(stack, key, ["chat:write"])
    # And a scope granted back works everywhere at once, too.
    resp = stack.request("PATCH", "/v1/api_keys/" + obj["id"],
                         {"scopes": ["chat:write", "api_keys:read"]},
                         headers=auth())
    assert resp.status == 200, resp.body
    on_every_worker(stack, "GET", "/v1/api_keys?limit=1", auth(key),
                    expect_200)


# ---------------------------------------------------------------------------
# 4. Rotation

def test_rotation_keeps_the_id_and_the_old_secret_for_the_grace(stack):
    old, obj = mint(stack, ["api_keys:read"], name="rotating")
    before = key_state(stack, obj["id"])
    resp = rotate(stack, obj["id"], {"grace_seconds": 3})
    rotated_at = time.time()
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    new_obj = resp.json
    assert_key_object(new_obj, with_secret=True)
    new = new_obj["key"]
    assert new_obj["id"] == obj["id"]
    assert new != old and new[:16] != old[:16]
    assert new_obj["key_prefix"] == new[:16] and new_obj["last4"] == new[-4:]
    for same in ("name", "tenant_id", "env", "scopes", "created_at"):
        assert new_obj[same] == obj[same], same
    row = key_row(stack, obj["id"])
    assert row["key_prefix"] == new[:16]
    assert row["key_hash"] != before["key_hash"]
    # Inside the grace period both secrets work, as the same key.
    for key in (old, new):
        who = whoami(stack, key)
        assert who.status == 200, who.body
        assert who.json["key_id"] == obj["id"]
    assert time.time() - rotated_at < 2.5, "too slow to test the grace"
    time.sleep(max(0.0, rotated_at + 3.5 - time.time()))
    assert_invalid_key(whoami(stack, old))
    assert whoami(stack, new).status == 200


@pytest.mark.parametrize("body", [{"grace_seconds": 0}, None, {}],
                         ids=["grace-0", "no-body", "empty-body"])
def test_rotation_without_grace_kills_the_old_secret_at_once(stack, body):
    old, obj = mint(stack, ["api_keys:read"])
    resp = rotate(stack, obj["id"], body)
    assert resp.status == 200, resp.body
    new = resp.json["key"]
    assert resp.json["id"] == obj["id"]
    assert_invalid_key(whoami(stack, old))
    who = whoami(stack, new)
    assert who.status == 200 and who.json["key_id"] == obj["id"]


@pytest.mark.parametrize("grace", [-1, 2592001, "3", 1.5, None],
                         ids=["negative", "over-30-days", "string", "float",
                              "unknown-field"])
def test_rotation_grace_out_of_range_is_422_and_rotates_nothing(stack, grace):
    old, obj = mint(stack, ["api_keys:read"])
    before = key_state(stack, obj["id"])
    resp = rotate(stack, obj["id"], {"grace_seconds": grace}
                  if grace is not None else {"grace": 5})
    err = assert_error(resp, 422, "validation_error")
    assert len(resp.json["error"]["details"]) == 1, err
    assert key_state(stack, obj["id"]) == before
    assert whoami(stack, old).status == 200


# ---------------------------------------------------------------------------
# 5. Scopes and escalation

def test_missing_scope_is_403_naming_the_scope(stack):
    key, _ = mint(stack, ["chat:write"])
    resp = stack.get("/v1/api_keys", headers=auth(key))
    err = assert_error(resp, 403, "insufficient_permissions")
    assert "api_keys:read" in err["message"]
    resp = create(stack, {"scopes": ["chat:write"]}, key)
    err = assert_error(resp, 403, "insufficient_permissions")
    assert "api_keys:write" in err["message"]


@pytest.fixture
def key_manager(stack):
    """A key with api_keys:read and api_keys:write only, in its own tenant;
    (secret, tenant id)."""
    tenant = new_tenant(stack)
    key, _ = mint(stack, ["api_keys:read", "api_keys:write"],
                  tenant_id=tenant)
    return key, tenant


@pytest.mark.parametrize("scopes", [
    ["*"], ["chat:write"], ["api_keys:*"], ["api_keys:read", "keys:verify"],
    ["tenants:admin"],
])
def test_key_cannot_grant_a_scope_it_lacks(stack, key_manager, scopes):
    key, tenant = key_manager
    before = count_rows(stack, "api_keys", "tenant_id = '%s'" % tenant)
    resp = create(stack, {"name": "escalate", "scopes": scopes}, key)
    err = assert_error(resp, 403, "insufficient_permissions")
    lacking = [s for s in scopes if s not in ("api_keys:read",
                                              "api_keys:write")]
    assert any(s in err["message"] for s in lacking), err["message"]
    assert count_rows(stack, "api_keys", "tenant_id = '%s'" % tenant) == before


def test_key_cannot_take_a_role_above_its_scopes(stack, key_manager):
    key, tenant = key_manager
    admin_role = stack.pg.scalar("SELECT id FROM roles WHERE name = 'admin' "
                                 "AND tenant_id IS NULL", dbname=stack.dbname)
    before = count_rows(stack, "api_keys", "tenant_id = '%s'" % tenant)
    resp = create(stack, {"name": "role", "role_id": admin_role}, key)
    assert_error(resp, 403, "insufficient_permissions")
    assert count_rows(stack, "api_keys", "tenant_id = '%s'" % tenant) == before


@pytest.mark.parametrize("scopes", [
    ["api_keys:read"], ["api_keys:read", "api_keys:write"], []])
def test_key_can_create_a_subset_of_its_scopes(stack, key_manager, scopes):
    key, tenant = key_manager
    secret, obj = mint(stack, scopes, key=key)
    assert obj["tenant_id"] == tenant, "not created in the caller's tenant"
    assert obj["scopes"] == scopes
    who = whoami(stack, secret)
    assert who.status == 200 and who.json["scopes"] == scopes


def test_key_without_scopes_or_role_gets_the_callers_scopes(stack,
                                                            key_manager):
    key, tenant = key_manager
    resp = create(stack, {"name": "production deploy 2026-05"}, key)
    assert resp.status == 201, resp.body[:500]
    assert_key_object(resp.json, with_secret=True)
    assert resp.json["scopes"] == ["api_keys:read", "api_keys:write"]
    assert resp.json["role_id"] is None
    assert resp.json["tenant_id"] == tenant
    who = whoami(stack, resp.json["key"])
    assert who.status == 200, who.body
    assert who.json["scopes"] == ["api_keys:read", "api_keys:write"]
    assert key_row(stack, resp.json["id"])["scopes"] == \
        ["api_keys:read", "api_keys:write"]


def test_key_without_scopes_gets_the_scopes_of_the_callers_role(stack):
    tenant = new_tenant(stack)
    writer = stack.pg.scalar("SELECT id FROM roles WHERE name = 'writer' "
                             "AND tenant_id IS NULL", dbname=stack.dbname)
    caller, caller_obj = mint(stack, [], tenant_id=tenant, role_id=writer)
    effective = caller_obj["effective_scopes"]
    assert "chat:write" in effective and "*" not in effective
    resp = create(stack, {"tenant_id": tenant, "name": "from a role"}, caller)
    assert resp.status == 201, resp.body[:500]
    assert resp.json["scopes"] == effective
    assert resp.json["role_id"] is None
    who = whoami(stack, resp.json["key"])
    assert who.status == 200 and who.json["scopes"] == effective


def test_key_without_scopes_made_by_the_dev_key_has_star(stack):
    resp = create(stack, {"name": "bootstrap"})
    assert resp.status == 201, resp.body[:500]
    assert resp.json["scopes"] == ["*"]
    assert resp.json["tenant_id"] == ROOT


def test_key_with_empty_body_gets_the_callers_scopes(stack, key_manager):
    key, tenant = key_manager
    resp = stack.request("POST", "/v1/api_keys", None, headers=auth(key))
    assert resp.status == 201, resp.body[:500]
    assert resp.json["scopes"] == ["api_keys:read", "api_keys:write"]
    assert resp.json["tenant_id"] == tenant


def test_key_cannot_widen_scopes_with_patch(stack, key_manager):
    key, tenant = key_manager
    _, obj = mint(stack, ["api_keys:read"], key=key)
    before = key_state(stack, obj["id"])
    for scopes in (["*"], ["api_keys:read", "chat:write"]):
        resp = stack.request("PATCH", "/v1/api_keys/" + obj["id"],
                             {"scopes": scopes}, headers=auth(key))
        assert_error(resp, 403, "insufficient_permissions")
    own = key_id(stack, key)
    resp = stack.request("PATCH", "/v1/api_keys/" + own, {"scopes": ["*"]},
                         headers=auth(key))
    assert_error(resp, 403, "insufficient_permissions")
    assert key_state(stack, obj["id"]) == before
    assert whoami(stack, key).json["scopes"] == ["api_keys:read",
                                                  "api_keys:write"]


def test_key_cannot_widen_a_key_by_removing_its_role(stack):
    """Without its role, a key falls back to its own scopes: taking the
    reader role off a key whose own scopes are * makes it an admin key.
    The caller holds every scope the key has now, but not *."""
    tenant = new_tenant(stack)
    reader = stack.pg.scalar("SELECT id FROM roles WHERE name = 'reader' AND "
                             "tenant_id IS NULL", dbname=stack.dbname)
    target, obj = mint(stack, ["*"], tenant_id=tenant, role_id=reader)
    assert "*" not in obj["effective_scopes"]
    key, _ = mint(stack, obj["effective_scopes"] + ["api_keys:write"],
                  tenant_id=tenant)
    before = key_state(stack, obj["id"])
    resp = stack.request("DELETE", "/v1/api_keys/%s/role" % obj["id"],
                         headers=auth(key))
    assert_error(resp, 403, "insufficient_permissions")
    assert key_state(stack, obj["id"]) == before
    assert "*" not in whoami(stack, target).json["scopes"]


@pytest.mark.parametrize("action", ["rotate", "patch", "delete"])
def test_key_cannot_change_a_more_powerful_key(stack, key_manager, action):
    """SPEC 3: a key can only change keys whose scopes are a subset of its
    own.  Rotating an admin key would hand its new secret to the caller."""
    key, tenant = key_manager
    admin, obj = mint(stack, ["*"], tenant_id=tenant, name="tenant admin")
    before = key_state(stack, obj["id"])
    path = "/v1/api_keys/" + obj["id"]
    if action == "rotate":
        resp = stack.post(path + "/rotate", {"grace_seconds": 0},
                          headers=auth(key))
    elif action == "patch":
        resp = stack.request("PATCH", path, {"expires_at": iso_in(60)},
                             headers=auth(key))
    else:
        resp = stack.request("DELETE", path, headers=auth(key))
    assert_error(resp, 403, "insufficient_permissions")
    assert resp.json is None or "key" not in resp.json
    assert key_state(stack, obj["id"]) == before
    assert whoami(stack, admin).status == 200


# ---------------------------------------------------------------------------
# 6. Bad input, limits, other tenants

def test_create_reports_each_bad_field_once(stack):
    before = count_rows(stack, "api_keys")
    audit_before = count_rows(stack, "audit_log")
    body = {
        "name": 5,
        "scopes": ["api_keys:nope"],
        "env": "prod",
        "expires_at": "2001-01-01T00:00:00Z",
        "rate_limit_max": 0,
        "rate_limit_window": "1 fortnight",
        "tenant_id": "not-a-uuid",
        "role_id": "admin",
        "key_hash": "00" * 32,
    }
    resp = create(stack, body)
    err = assert_error(resp, 422, "validation_error")
    details = err.get("details")
    assert isinstance(details, list), err
    fields = [d.get("field") for d in details]
    assert sorted(fields) == sorted(body), details
    for d in details:
        assert set(d) == {"field", "message"}, d
        assert isinstance(d["message"], str) and d["message"], d
    assert count_rows(stack, "api_keys") == before
    assert count_rows(stack, "audit_log") == audit_before


@pytest.mark.parametrize("extra", [
    {"key_hash": "00" * 32},
    {"key_prefix": "kg_live_AAAAAAAA"},
    {"id": "11111111-1111-1111-1111-111111111111"},
    {"revoked_at": None, "created_by": None},
    {"last_used_at": "2030-01-01T00:00:00Z", "disabled_at": None},
])
def test_create_refuses_unknown_fields(stack, extra):
    name = "mass-assign-%s" % secrets.token_hex(4)
    before = count_rows(stack, "api_keys")
    resp = create(stack, dict(extra, name=name, scopes=["chat:write"]))
    err = assert_error(resp, 422, "validation_error")
    assert sorted(d["field"] for d in err["details"]) == sorted(extra)
    assert count_rows(stack, "api_keys") == before
    assert count_rows(stack, "api_keys", "name = '%s'" % name) == 0


@pytest.mark.parametrize("body,field", [
    ({"scopes": "api_keys:read"}, "scopes"),
    ({"scopes": ["api_keys:read", 7]}, "scopes"),
    ({"scopes": ["chat:write"], "name": "x" * 201}, "name"),
    ({"scopes": ["chat:write"], "rate_limit_max": "10"}, "rate_limit_max"),
    ({"scopes": ["chat:write"], "rate_limit_max": 100001}, "rate_limit_max"),
    ({"scopes": ["chat:write"], "rate_limit_max": 2.5}, "rate_limit_max"),
    ({"scopes": ["chat:write"], "rate_limit_window": 60}, "rate_limit_window"),
    ({"scopes": ["chat:write"], "expires_at": "tomorrow"}, "expires_at"),
    ({"scopes": ["chat:write"], "env": "dev"}, "env"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_create_refuses_a_bad_field(stack, body, field):
    before = count_rows(stack, "api_keys")
    resp = create(stack, body)
    err = assert_error(resp, 422, "validation_error")
    assert [d["field"] for d in err["details"]] == [field], err
    assert count_rows(stack, "api_keys") == before


def test_create_accepts_every_optional_field(stack):
    tenant = new_tenant(stack)
    expires = iso_in(3600)
    key, obj = mint(stack, ["chat:write", "models:read"], tenant_id=tenant,
                    env="test", name="full", expires_at=expires,
                    rate_limit_max=50, rate_limit_window="2 hours")
    assert key.startswith("kg_test_") and obj["env"] == "test"
    assert obj["tenant_id"] == tenant
    assert parse_ts(obj["expires_at"]) == parse_ts(expires)
    assert obj["rate_limit_max"] == 50
    assert obj["rate_limit_window"] == "2 hours"
    who = whoami(stack, key)
    assert who.status == 200, who.body
    assert who.json["env"] == "test"
    assert who.json["ratelimit"] == {"limit": 50, "window": "2 hours"}
    row = key_row(stack, obj["id"])
    assert row["env"] == "test" and row["rate_limit_max"] == 50
    assert row["rate_limit_window"] == 7200


def assert_patch_refused(stack, kid, body):
    """PATCH `body` onto key `kid` is a 422 naming every member of it once,
    and changes nothing."""
    before = key_state(stack, kid)
    resp = stack.request("PATCH", "/v1/api_keys/" + kid, body,
                         headers=auth())
    err = assert_error(resp, 422, "validation_error")
    assert sorted(d["field"] for d in err["details"]) == sorted(body)
    assert key_state(stack, kid) == before


def test_patch_refuses_fields_it_cannot_change(stack):
    other = new_tenant(stack)
    _, obj = mint(stack, ["chat:write"])
    assert_patch_refused(stack, obj["id"], {
        "tenant_id": other, "env": "test", "role_id": None,
        "key_hash": "00" * 32, "revoked_at": None, "key_prefix": "x"})


def test_patch_reports_each_bad_value_once(stack):
    _, obj = mint(stack, ["chat:write"])
    assert_patch_refused(stack, obj["id"], {
        "name": 3, "scopes": ["bogus"], "rate_limit_max": 0,
        "expires_at": "2001-01-01T00:00:00Z", "rate_limit_window": "soon"})


def test_expires_at_with_an_offset_is_kept_as_the_same_instant(stack):
    _, obj = mint(stack, ["chat:write"],
                  expires_at="2030-01-01T00:00:00+02:00")
    assert parse_ts(obj["expires_at"]) == parse_ts("2029-12-31T22:00:00Z")
    row = key_row(stack, obj["id"])
    assert parse_ts(row["expires_at"]) == parse_ts("2029-12-31T22:00:00Z")


def test_patch_changes_what_it_may(stack):
    key, obj = mint(stack, ["chat:write"], name="before")
    expires = iso_in(7200)
    resp = stack.request("PATCH", "/v1/api_keys/" + obj["id"], {
        "name": "after", "scopes": ["models:read"], "expires_at": expires,
        "rate_limit_max": 9, "rate_limit_window": "30 seconds"},
        headers=auth())
    assert resp.status == 200, resp.body
    assert_key_object(resp.json)
    got = resp.json
    assert got["id"] == obj["id"] and got["name"] == "after"
    assert got["scopes"] == ["models:read"]
    assert parse_ts(got["expires_at"]) == parse_ts(expires)
    assert got["rate_limit_max"] == 9
    assert got["rate_limit_window"] == "30 seconds"
    assert whoami(stack, key).json["ratelimit"] == {"limit": 9,
                                                   "window": "30 seconds"}
    # null puts expiry and limits back to none / the defaults.
    resp = stack.request("PATCH", "/v1/api_keys/" + obj["id"], {
        "expires_at": None, "rate_limit_max": None,
        "rate_limit_window": None}, headers=auth())
    assert resp.status == 200, resp.body
    assert resp.json["expires_at"] is None
    assert resp.json["rate_limit_max"] is None
    assert resp.json["rate_limit_window"] is None
    assert resp.json["name"] == "after"


def test_key_limit_reached_is_409(make_stack):
    s = make_stack(workers=2, max_active_keys_per_tenant=3)
    tenant = new_tenant(s)
    ids = [mint(s, ["chat:write"], tenant_id=tenant)[1]["id"]
           for _ in range(3)]
    audit_before = count_rows(s, "audit_log")
    request_id = rid("limit")
    resp = create(s, {"name": "fourth", "scopes": ["chat:write"],
                      "tenant_id": tenant}, request_id=request_id)
    assert_error(resp, 409, "key_limit_reached")
    assert count_rows(s, "api_keys", "tenant_id = '%s'" % tenant) == 3
    assert count_rows(s, "audit_log") == audit_before
    assert audit_rows(s, request_id) == []
    # Only active keys count: after a revocation there is room again.
    resp = s.request("DELETE", "/v1/api_keys/" + ids[0], headers=auth())
    assert resp.status == 200, resp.body
    mint(s, ["chat:write"], tenant_id=tenant)
    assert_error(create(s, {"scopes": ["chat:write"], "tenant_id": tenant}),
                 409, "key_limit_reached")


def test_key_limit_holds_under_concurrent_creates(make_stack):
    s = make_stack(workers=3, max_active_keys_per_tenant=3)
    tenant = new_tenant(s)
    results = burst(s, "POST", "/v1/api_keys", auth(),
                    {"scopes": ["chat:write"], "tenant_id": tenant}, n=12)
    statuses = sorted(r.status for _, r in results)
    assert statuses == [201] * 3 + [409] * 9, statuses
    assert count_rows(s, "api_keys", "tenant_id = '%s'" % tenant) == 3


MALFORMED_IDS = {
    "word": "not-a-uuid",
    "number": "123",
    "too-long": "6f1c1d3e-8d2b-4c1e-9a51-0c7b3f2e9d4a0",
    "too-short": "6f1c1d3e-8d2b-4c1e-9a51-0c7b3f2e9d4",
    "injection": "%27%20OR%201%3D1--",
    "unknown": "6f1c1d3e-8d2b-4c1e-9a51-0c7b3f2e9d4a",  # no such key
}


def id_request(stack, method, kid, key=DEV_KEY, request_id=None):
    headers = auth(key)
    if request_id:
        headers = with_rid(headers, request_id)
    path = "/v1/api_keys/" + kid
    if method == "GET":
        return stack.get(path, headers=headers)
    if method == "PATCH":
        return stack.request("PATCH", path, {"name": "hijacked"},
                             headers=headers)
    if method == "DELETE":
        return stack.request("DELETE", path, headers=headers)
    return stack.post(path + "/rotate", {"grace_seconds": 0},
                      headers=headers)


METHODS = ["GET", "PATCH", "DELETE", "ROTATE"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", sorted(MALFORMED_IDS))
def test_malformed_or_unknown_id_is_404(stack, method, kind):
    audit_before = count_rows(stack, "audit_log")
    resp = id_request(stack, method, MALFORMED_IDS[kind])
    assert_error(resp, 404, "not_found")
    assert count_rows(stack, "audit_log") == audit_before


@pytest.fixture
def two_tenants(stack):
    """Sibling tenants A and B: a key manager in A, and a key of B made
    with keygatectl.  (a_key, b_key, b_id)"""
    a = new_tenant(stack, name="a")
    b = new_tenant(stack, name="b")
    a_key, _ = mint(stack, ["api_keys:read", "api_keys:write",
                            "keys:verify"], tenant_id=a)
    b_key = ctl_key(stack, b, ["chat:write"])
    return a_key, b_key, key_id(stack, b_key)


@pytest.mark.parametrize("method", METHODS)
def test_other_tenants_key_is_404_and_untouched(stack, two_tenants, method):
    a_key, b_key, b_id = two_tenants
    before = key_state(stack, b_id)
    audit_before = count_rows(stack, "audit_log")
    request_id = rid("foreign")
    resp = id_request(stack, method, b_id, key=a_key, request_id=request_id)
    err = assert_error(resp, 404, "not_found")
    assert "key" not in resp.json
    # Indistinguishable from an id that does not exist at all.
    ghost = str(uuid.uuid4())
    other = id_request(stack, method, ghost, key=a_key)
    assert other.status == 404
    assert other.body.replace(ghost.encode(), b"ID") == resp.body.replace(
        b_id.encode(), b"ID")
    assert key_state(stack, b_id) == before
    assert count_rows(stack, "audit_log") == audit_before
    assert audit_rows(stack, request_id) == []
    who = whoami(stack, b_key)
    assert who.status == 200 and who.json["key_id"] == b_id, err


def test_create_in_another_tenant_is_404(stack, two_tenants):
    a_key, _, b_id = two_tenants
    b = key_row(stack, b_id)["tenant_id"]
    before = count_rows(stack, "api_keys", "tenant_id = '%s'" % b)
    resp = create(stack, {"scopes": ["api_keys:read"], "tenant_id": b},
                  a_key)
    assert_error(resp, 404, "not_found")
    assert count_rows(stack, "api_keys", "tenant_id = '%s'" % b) == before


# ---------------------------------------------------------------------------
# 7. The audit log

def audited_change(stack, action, caller, kid, request_id):
    if action == "api_key.update":
        return stack.request("PATCH", "/v1/api_keys/" + kid,
                             {"name": "audited"},
                             headers=with_rid(auth(caller), request_id))
    if action == "api_key.revoke":
        return stack.request("DELETE", "/v1/api_keys/" + kid,
                             headers=with_rid(auth(caller), request_id))
    return rotate(stack, kid, {"grace_seconds": 0}, key=caller,
                  request_id=request_id)


@pytest.mark.parametrize("action", ["api_key.create", "api_key.update",
                                    "api_key.revoke", "api_key.rotate"])
def test_each_mutation_writes_one_audit_row(stack, key_manager, action):
    caller, tenant = key_manager
    caller_id = key_id(stack, caller)
    _, target = mint(stack, ["api_keys:read"], key=caller)
    before = count_rows(stack, "audit_log")
    request_id = rid("audit")
    if action == "api_key.create":
        resp = create(stack, {"name": "audited", "scopes": ["api_keys:read"]},
                      caller, request_id=request_id)
        assert resp.status == 201, resp.body
        target = resp.json
    else:
        resp = audited_change(stack, action, caller, target["id"],
                              request_id)
        assert resp.status == 200, resp.body
    assert resp.headers["x-request-id"] == request_id
    rows = audit_rows(stack, request_id)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["action"] == action
    assert row["actor_key_id"] == caller_id
    assert row["target_type"] == "api_key"
    assert row["target_id"] == target["id"]
    assert row["tenant_id"] == tenant
    assert row["request_id"] == resp.headers["x-request-id"]
    assert row["client_addr"], row
    assert row["row_hash"] and row["prev_hash"] is not None
    assert count_rows(stack, "audit_log") == before + 1
    text = json.dumps(row)
    if resp.json.get("key"):
        assert resp.json["key"] not in text
        assert resp.json["key"][16:-4] not in text


@pytest.mark.parametrize("action", ["api_key.update", "api_key.revoke",
                                    "api_key.rotate"])
def test_audit_row_names_the_keys_tenant(stack, action):
    """The root's key changing a key of a child tenant: the row belongs
    to the key's tenant, as the create row does."""
    tenant = new_tenant(stack)
    _, obj = mint(stack, ["chat:write"], tenant_id=tenant)
    created = stack.psql("SELECT tenant_id FROM audit_log WHERE action = "
                         "'api_key.create' AND target_id = '%s'" % obj["id"])
    assert created == [[tenant]]
    request_id = rid("audit")
    resp = audited_change(stack, action, DEV_KEY, obj["id"], request_id)
    assert resp.status == 200, resp.body
    rows = audit_rows(stack, request_id)
    assert len(rows) == 1 and rows[0]["action"] == action, rows
    assert rows[0]["tenant_id"] == tenant
    assert rows[0]["actor_key_id"] == stack.pg.scalar(
        "SELECT id FROM api_keys WHERE key_prefix = 'kg_dev_local_default'",
        dbname=stack.dbname)


def foreign_key_id(s):
    """The id of a key in a new tenant outside every key manager's."""
    return key_id(s, ctl_key(s, new_tenant(s), ["chat:write"]))


# name: (set-up(stack, caller, tenant, target id) -> value used by send,
#        send(stack, caller, value, request id) -> response, status, code)
FAILING = {
    "422-create": (
        lambda s, caller, tenant, kid: None,
        lambda s, caller, v, r: create(
            s, {"scopes": ["chat:write"], "env": "prod"}, caller, r),
        422, "validation_error"),
    "403-escalation": (
        lambda s, caller, tenant, kid: None,
        lambda s, caller, v, r: create(s, {"scopes": ["*"]}, caller, r),
        403, "insufficient_permissions"),
    "403-missing-scope": (
        lambda s, caller, tenant, kid: mint(s, ["api_keys:read"],
                                            tenant_id=tenant)[0],
        lambda s, caller, weak, r: create(
            s, {"scopes": ["api_keys:read"]}, weak, r),
        403, "insufficient_permissions"),
    "422-patch": (
        lambda s, caller, tenant, kid: kid,
        lambda s, caller, kid, r: s.request(
            "PATCH", "/v1/api_keys/" + kid, {"name": "x", "scopes": ["bad"]},
            headers=with_rid(auth(caller), r)),
        422, "validation_error"),
    "403-patch-escalation": (
        lambda s, caller, tenant, kid: kid,
        lambda s, caller, kid, r: s.request(
            "PATCH", "/v1/api_keys/" + kid, {"scopes": ["chat:write"]},
            headers=with_rid(auth(caller), r)),
        403, "insufficient_permissions"),
    "404-foreign-patch": (
        lambda s, caller, tenant, kid: foreign_key_id(s),
        lambda s, caller, kid, r: id_request(s, "PATCH", kid, caller, r),
        404, "not_found"),
    "404-foreign-revoke": (
        lambda s, caller, tenant, kid: foreign_key_id(s),
        lambda s, caller, kid, r: id_request(s, "DELETE", kid, caller, r),
        404, "not_found"),
    "404-foreign-rotate": (
        lambda s, caller, tenant, kid: foreign_key_id(s),
        lambda s, caller, kid, r: id_request(s, "ROTATE", kid, caller, r),
        404, "not_found"),
    "404-malformed-revoke": (
        lambda s, caller, tenant, kid: kid + "x",
        lambda s, caller, kid, r: id_request(s, "DELETE", kid, caller, r),
        404, "not_found"),
    "422-rotate": (
        lambda s, caller, tenant, kid: kid,
        lambda s, caller, kid, r: rotate(s, kid, {"grace_seconds": -5},
                                         caller, r),
        422, "validation_error"),
}


def database_state(stack):
    """Everything a failed key request must leave as it was (but
    last_used_at, which any use may write lazily)."""
    return (count_rows(stack, "audit_log"),
            stack.psql("SELECT (row_to_json(k)::jsonb - 'last_used_at')::text "
                       "FROM api_keys k ORDER BY id"))


@pytest.mark.parametrize("name", sorted(FAILING))
def test_failed_request_writes_no_audit_row_and_changes_nothing(
        stack, key_manager, name):
    setup, send, status, code = FAILING[name]
    caller, tenant = key_manager
    _, target = mint(stack, ["api_keys:read"], key=caller)
    value = setup(stack, caller, tenant, target["id"])
    before = database_state(stack)
    request_id = rid("fail")
    resp = send(stack, caller, value, request_id)
    assert_error(resp, status, code)
    assert resp.headers["x-request-id"] == request_id
    assert audit_rows(stack, request_id) == []
    after = database_state(stack)
    assert after[0] == before[0], "an audit row was written"
    assert after[1] == before[1], "api_keys changed"


# ---------------------------------------------------------------------------
# 8. Minting at volume

def test_ten_thousand_keys_across_all_workers(make_stack):
    total, threads = 10000, 16
    s = make_stack(workers=3)
    workers = s.kg.worker_pids()
    rows_before = count_rows(s, "api_keys")
    audit_before = count_rows(s, "audit_log", "action = 'api_key.create'")
    lock = threading.Lock()
    results = []
    issued = [0]
    deadline = time.monotonic() + 60

    def run():
        mine = []
        while time.monotonic() < deadline:
            with lock:
                if issued[0] >= total:
                    break
                issued[0] += 1
            try:
                r = s.post("/v1/api_keys", {"scopes": ["chat:write"]},
                           headers=auth(), timeout=20)
                mine.append((r.status, r.json if r.status == 201 else
                             r.body[:200]))
            except Exception as exc:
                mine.append((None, "%s: %s" % (type(exc).__name__, exc)))
        with lock:
            results.extend(mine)
    started = time.monotonic()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(90)
    elapsed = time.monotonic() - started
    failed = [r for r in results if r[0] != 201]
    assert not failed, "%d failures, e.g. %r" % (len(failed), failed[:5])
    assert len(results) == total, "%d of %d in %.1fs" % (
        len(results), total, elapsed)
    objs = [r[1] for r in results]
    keys = [o["key"] for o in objs]
    assert len(set(keys)) == total, "duplicate keys"
    assert len(set(o["key_prefix"] for o in objs)) == total
    assert len(set(o["id"] for o in objs)) == total
    bad = [k for k in keys if not KEY_RE.match(k) or
           checksum(k[:-6]) != k[-6:]]
    assert not bad, bad[:5]
    assert count_rows(s, "api_keys") == rows_before + total
    assert int(s.pg.scalar("SELECT count(DISTINCT key_hash) FROM api_keys",
                           dbname=s.dbname)) == rows_before + total
    assert count_rows(s, "audit_log",
                 "action = 'api_key.create'") == audit_before + total
    served = {}
    for line in s.kg.log_lines():
        if (line.get("path") == "/v1/api_keys" and line.get("status") == 201
                and line.get("method") == "POST"):
            served[line.get("pid")] = served.get(line.get("pid"), 0) + 1
    assert sum(served.values()) == total, served
    assert workers <= set(served), "served by %r, workers %r" % (
        served, workers)


# ---------------------------------------------------------------------------
# 9. whoami and verify

def test_whoami_describes_the_caller(stack):
    tenant = new_tenant(stack)
    key, obj = mint(stack, ["models:read", "chat:write"], tenant_id=tenant,
                    env="test", rate_limit_max=7,
                    rate_limit_window="30 seconds")
    resp = whoami(stack, key)
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    w = resp.json
    assert w["key_id"] == obj["id"]
    assert w["key_prefix"] == key[:16]
    assert w["tenant_id"] == tenant
    assert w["env"] == "test"
    assert w["role_id"] is None
    assert w["scopes"] == ["models:read", "chat:write"]
    assert w["ratelimit"] == {"limit": 7, "window": "30 seconds"}
    assert key not in resp.body.decode()


def test_whoami_shows_role_scopes_and_default_limits(stack):
    reader = stack.pg.scalar("SELECT id FROM roles WHERE name = 'reader' AND "
                             "tenant_id IS NULL", dbname=stack.dbname)
    role_scopes = stack.psql("SELECT unnest(scopes) FROM roles WHERE id = "
                             "'%s'" % reader)
    key, obj = mint(stack, [], role_id=reader)
    assert obj["role_id"] == reader
    assert sorted(obj["effective_scopes"]) == sorted(r[0] for r in
                                                     role_scopes)
    w = whoami(stack, key).json
    assert w["role_id"] == reader
    assert sorted(w["scopes"]) == sorted(r[0] for r in role_scopes)
    # The stack's configured defaults.
    assert w["ratelimit"] == {"limit": 100000, "window": "1 second"}
    # A key with no scope at all may still ask who it is.
    bare, _ = mint(stack, [])
    resp = whoami(stack, bare)
    assert resp.status == 200 and resp.json["scopes"] == []


def verifier(stack, tenant=ROOT):
    return mint(stack, ["keys:verify"], tenant_id=tenant)[0]


def test_verify_answers_for_a_valid_key(stack):
    v = verifier(stack)
    key, obj = mint(stack, ["chat:write"], rate_limit_max=12,
                    rate_limit_window="1 minute")
    resp = stack.post("/v1/keys/verify", {"key": key}, headers=auth(v))
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    body = resp.json
    assert body["valid"] is True
    assert body["key_id"] == obj["id"]
    assert body["tenant_id"] == obj["tenant_id"]
    assert body["scopes"] == ["chat:write"]
    limits = dict(body["ratelimit"])
    # A verification counts as a use of that key.
    assert limits.pop("remaining") == 11
    assert limits.pop("reset") > time.time()
    assert limits == {"limit": 12, "window": "1 minute"}
    assert key not in resp.body.decode()
    assert key[16:-4] not in resp.body.decode()


INVALID_VERDICT = {"valid": False, "code": "invalid_api_key"}


def test_verify_of_a_revoked_key_is_invalid(stack):
    v = verifier(stack)
    key = revoked_key(stack)
    resp = stack.post("/v1/keys/verify", {"key": key}, headers=auth(v))
    assert resp.status == 200, resp.body
    assert resp.json == INVALID_VERDICT
    forged = stack.post("/v1/keys/verify", {"key": forge_key()},
                        headers=auth(v))
    assert forged.status == 200 and forged.body == resp.body


def test_verify_needs_keys_verify(stack):
    weak, _ = mint(stack, ["api_keys:read", "api_keys:write"])
    key, _ = mint(stack, ["chat:write"])
    resp = stack.post("/v1/keys/verify", {"key": key}, headers=auth(weak))
    err = assert_error(resp, 403, "insufficient_permissions")
    assert "keys:verify" in err["message"]
    assert "valid" not in resp.json


def test_verify_of_a_key_outside_the_subtree_is_invalid(stack, two_tenants):
    a_key, b_key, _ = two_tenants
    resp = stack.post("/v1/keys/verify", {"key": b_key}, headers=auth(a_key))
    assert resp.status == 200, resp.body
    assert resp.json == INVALID_VERDICT
    forged = stack.post("/v1/keys/verify", {"key": forge_key()},
                        headers=auth(a_key))
    assert forged.body == resp.body
    # The root's dev key is outside A's subtree, too; a key in A's own
    # child tenant is inside it.
    dev = stack.post("/v1/keys/verify", {"key": DEV_KEY}, headers=auth(a_key))
    assert dev.json == INVALID_VERDICT
    a = key_row(stack, key_id(stack, a_key))["tenant_id"]
    child_key, child = mint(stack, ["chat:write"],
                            tenant_id=new_tenant(stack, parent=a))
    ok = stack.post("/v1/keys/verify", {"key": child_key},
                    headers=auth(a_key))
    assert ok.json.get("valid") is True and ok.json["key_id"] == child["id"]


def test_verify_of_an_injection_is_invalid_at_once(stack):
    v = verifier(stack)
    started = time.monotonic()
    resp = stack.post("/v1/keys/verify", {"key": SQL_INJECTION},
                      headers=auth(v))
    assert time.monotonic() - started < 1.0
    assert resp.status == 200 and resp.json == INVALID_VERDICT


@pytest.mark.parametrize("body", [{}, {"key": 5}, {"key": None},
                                  {"key": "x", "tenant_id": ROOT}])
def test_verify_with_a_bad_body_is_422(stack, body):
    v = verifier(stack)
    resp = stack.post("/v1/keys/verify", body, headers=auth(v))
    err = assert_error(resp, 422, "validation_error")
    assert len(err["details"]) == 1


# ---------------------------------------------------------------------------
# 10. Listing

@pytest.fixture
def listed_tenant(stack):
    """A tenant with a key manager and 22 more keys; (manager, ids)."""
    tenant = new_tenant(stack)
    reader, robj = mint(stack, ["api_keys:read", "api_keys:write",
                                "chat:write"], tenant_id=tenant)
    ids = [robj["id"]] + [mint(stack, ["chat:write"], tenant_id=tenant,
                               name="k%d" % i)[1]["id"] for i in range(22)]
    return reader, ids


def walk(stack, key, query, limit):
    """Every page of a listing; returns the pages' data lists."""
    pages, cursor = [], None
    for _ in range(100):
        q = "%s&limit=%d" % (query, limit)
        if cursor:
            q += "&cursor=" + cursor
        resp = stack.get("/v1/api_keys?" + q.lstrip("&"), headers=auth(key))
        assert resp.status == 200, resp.body
        assert_json_response(resp)
        body = resp.json
        assert set(body) == {"object", "data", "next_cursor"}, body.keys()
        assert body["object"] == "list"
        assert len(body["data"]) <= limit
        for obj in body["data"]:
            assert_key_object(obj)
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(body["data"]) == limit
    pytest.fail("more than 100 pages")


def test_pagination_walks_every_key_once(stack, listed_tenant):
    reader, ids = listed_tenant
    pages = walk(stack, reader, "", 5)
    got = [o["id"] for page in pages for o in page]
    assert len(got) == len(ids) == 23
    assert sorted(got) == sorted(ids), "missing or repeated keys"
    assert len(pages) == 5
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    # The default page size is 20.
    first = stack.get("/v1/api_keys", headers=auth(reader)).json
    assert len(first["data"]) == 20 and first["next_cursor"]


def test_listing_hides_revoked_keys_unless_asked(stack, listed_tenant):
    reader, ids = listed_tenant
    gone = ids[5]
    resp = stack.request("DELETE", "/v1/api_keys/" + gone,
                         headers=auth(reader))
    assert resp.status == 200, resp.body
    assert resp.json["revoked_at"] and ISO_RE.match(resp.json["revoked_at"])
    row = key_row(stack, gone)
    assert row is not None and row["revoked_at"], "the row was not kept"
    for query in ("", "include_revoked=false"):
        got = [o["id"] for p in walk(stack, reader, query, 100) for o in p]
        assert gone not in got and len(got) == len(ids) - 1
    every = [o for p in walk(stack, reader, "include_revoked=true", 7)
             for o in p]
    assert sorted(o["id"] for o in every) == sorted(ids)
    assert [o["id"] for o in every if o["revoked_at"]] == [gone]
    direct = stack.get("/v1/api_keys/" + gone, headers=auth(reader))
    assert direct.status == 200 and direct.json["revoked_at"]


@pytest.mark.parametrize("query", [
    "limit=0", "limit=101", "limit=-1", "limit=abc", "limit=", "limit=1.5",
    "cursor=nope", "cursor=%27%20OR%201%3D1--", "include_revoked=yes",
    "tenant_id=nope",
])
def test_listing_rejects_bad_parameters(stack, query):
    resp = stack.get("/v1/api_keys?" + query, headers=auth())
    assert_error(resp, 400)


def test_listing_rejects_a_cursor_it_did_not_issue(stack, listed_tenant,
                                                   two_tenants):
    reader, _ = listed_tenant
    _, _, foreign_id = two_tenants
    for cursor in (str(uuid.uuid4()), foreign_id):
        resp = stack.get("/v1/api_keys?limit=5&cursor=" + cursor,
                         headers=auth(reader))
        assert_error(resp, 400)


def test_listing_shows_only_the_callers_subtree(stack, two_tenants):
    a_key, b_key, b_id = two_tenants
    a = key_row(stack, key_id(stack, a_key))["tenant_id"]
    b = key_row(stack, b_id)["tenant_id"]
    child = new_tenant(stack, parent=a)
    _, child_obj = mint(stack, ["chat:write"], tenant_id=child)
    got = [o for p in walk(stack, a_key, "include_revoked=true", 100)
           for o in p]
    assert {o["tenant_id"] for o in got} == {a, child}
    assert child_obj["id"] in [o["id"] for o in got]
    assert b_id not in [o["id"] for o in got]
    only_child = [o["id"] for p in walk(stack, a_key, "tenant_id=" + child,
                                        100) for o in p]
    assert only_child == [child_obj["id"]]
    for tenant in (b, ROOT):
        resp = stack.get("/v1/api_keys?tenant_id=" + tenant,
                         headers=auth(a_key))
        assert_error(resp, 404, "not_found")


@pytest.mark.parametrize("param", ["api_key", "key", "access_token"])
def test_key_in_the_query_string_is_not_accepted(stack, param):
    key, _ = mint(stack, ["api_keys:read"])
    resp = stack.get("/v1/api_keys?%s=%s" % (param, key))
    assert_error(resp, 401, "missing_api_key")


# ---------------------------------------------------------------------------
# 11. last_used_at and dormant keys

def test_last_used_at_is_recorded_after_use(stack):
    key, obj = mint(stack, ["api_keys:read"])
    assert obj["last_used_at"] is None
    # A busy moment first: other keys' first uses, on every worker.
    others = [mint(stack, ["chat:write"])[0] for _ in range(6)]
    for other in others:
        assert whoami(stack, other).status == 200
    used_at = time.time()
    assert whoami(stack, key).status == 200
    # Then quiet: nothing else is sent while the database is watched.
    ks.wait_until(lambda: key_row(stack, obj["id"])["last_used_at"], 5,
                  interval=0.2, what="last_used_at to be written")
    row = key_row(stack, obj["id"])
    written = parse_ts(row["last_used_at"]).timestamp()
    assert used_at - 5 <= written <= time.time() + 5
    got = stack.get("/v1/api_keys/" + obj["id"], headers=auth(key)).json
    assert got["last_used_at"] and ISO_RE.match(got["last_used_at"])


def test_last_used_at_is_written_at_most_once_a_minute(stack):
    key, obj = mint(stack, ["api_keys:read"])
    ks.wait_until(lambda: whoami(stack, key).status == 200 and
                  key_row(stack, obj["id"])["last_used_at"], 10,
                  interval=0.3, what="last_used_at to be written")
    first = key_row(stack, obj["id"])["last_used_at"]
    for _ in range(6):
        assert whoami(stack, key).status == 200
        time.sleep(0.25)
    for _ in range(6):
        assert whoami(stack, key).status == 200
    assert key_row(stack, obj["id"])["last_used_at"] == first


def test_dormant_lists_keys_unused_for_n_days(stack):
    tenant = new_tenant(stack)
    reader, robj = mint(stack, ["api_keys:read", "api_keys:write",
                                "chat:write"], tenant_id=tenant)
    _, old = mint(stack, ["chat:write"], tenant_id=tenant, name="old")
    _, fresh = mint(stack, ["chat:write"], tenant_id=tenant, name="fresh")
    _, never = mint(stack, ["chat:write"], tenant_id=tenant, name="never")
    _, gone = mint(stack, ["chat:write"], tenant_id=tenant, name="revoked")
    _, elsewhere = mint(stack, ["chat:write"], tenant_id=new_tenant(stack),
                        name="sibling's")
    stack.psql("UPDATE api_keys SET last_used_at = now() - interval "
               "'100 days' WHERE id IN ('%s', '%s', '%s')" % (
                   old["id"], gone["id"], elsewhere["id"]))
    stack.psql("UPDATE api_keys SET last_used_at = now() - interval "
               "'10 days' WHERE id = '%s'" % fresh["id"])
    stack.psql("UPDATE api_keys SET created_at = now() - interval "
               "'95 days' WHERE id = '%s'" % never["id"])
    resp = stack.request("DELETE", "/v1/api_keys/" + gone["id"],
                         headers=auth(reader))
    assert resp.status == 200

    def dormant(query=""):
        r = stack.get("/v1/api_keys/dormant" + query, headers=auth(reader))
        assert r.status == 200, r.body
        assert_json_response(r)
        assert r.json["object"] == "list"
        for o in r.json["data"]:
            assert_key_object(o)
        return sorted(o["id"] for o in r.json["data"])
    # Not the revoked key, nor the one in a sibling tenant.
    assert dormant() == sorted([old["id"], never["id"]])
    assert dormant("?days=90") == sorted([old["id"], never["id"]])
    assert dormant("?days=97") == [old["id"]]
    assert dormant("?days=101") == []
    assert dormant("?days=5") == sorted([old["id"], never["id"],
                                         fresh["id"]])
    assert robj["id"] not in dormant("?days=1")
    for bad in ("?days=0", "?days=abc", "?days=-5", "?limit=0"):
        r = stack.get("/v1/api_keys/dormant" + bad, headers=auth(reader))
        assert_error(r, 400)


def test_repeated_revoke_and_empty_patch_change_nothing(stack):
    _, obj = mint(stack, ["models:read"])
    kid = obj["id"]
    first = stack.request("DELETE", "/v1/api_keys/" + kid,
                          headers=auth(DEV_KEY))
    assert first.status == 200 and first.json["revoked_at"]
    before = key_row(stack, kid)
    again = stack.request("DELETE", "/v1/api_keys/" + kid,
                          headers=auth(DEV_KEY))
    assert again.status == 200
    assert again.json["revoked_at"] == first.json["revoked_at"]
    assert key_row(stack, kid) == before
    assert count_rows(stack, "audit_log", "target_id = '%s' AND action = "
                 "'api_key.revoke'" % kid) == 1
    r = stack.request("PATCH", "/v1/api_keys/" + kid, {"name": "late"},
                      headers=auth(DEV_KEY))
    assert_error(r, 409, "conflict")
    assert key_row(stack, kid) == before

    _, obj2 = mint(stack, ["models:read"])
    kid2 = obj2["id"]
    before = key_row(stack, kid2)
    r = stack.request("PATCH", "/v1/api_keys/" + kid2, {},
                      headers=auth(DEV_KEY))
    assert r.status == 200 and r.json["id"] == kid2
    assert key_row(stack, kid2) == before
    assert count_rows(stack, "audit_log", "target_id = '%s' AND action = "
                 "'api_key.update'" % kid2) == 0


def test_bearer_without_a_token_is_a_missing_key(stack):
    for value in ("Bearer ", "Bearer", "bearer   "):
        r = stack.get("/v1/auth/whoami", headers={"Authorization": value})
        assert_error(r, 401, "missing_api_key")


def test_duplicate_scopes_are_stored_once(stack):
    r = create(stack, {"scopes": ["chat:write", "models:read",
                                  "chat:write"]})
    assert r.status == 201, r.body
    assert r.json["scopes"] == ["chat:write", "models:read"]
