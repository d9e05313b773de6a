"""The vault of LLM provider keys end to end: /v1/account/llm-keys (store,
status, delete), /v1/maintenance/reencrypt and `keygatectl
rotate-encryption-key` / `vault-check`, through lighttpd, with a mock of
each provider's key-validation endpoint and the database checked
afterwards.

    1. storing, reading the status and deleting; the gateway calls the
       provider with the stored key; no key in any response, log line or
       database dump
    2. a value is bound to its tenant and provider: moved or altered, it
       no longer decrypts (`vault-check`), and the gateway never sends it
    3. master-key rotation: every value moves to the active key in one
       transaction, all or nothing, while the status stays readable and
       the values keep working; malformed master keys are refused
    4. a change made through one worker is seen by every worker at once,
       in the status and in the key the gateway sends
    5. the documented errors, each storing nothing; what each provider's
       validation request looks like
    6. /health reports whether the vault is usable

Most tests share the module's `vault` stack (three workers, key
validation on, every provider pointed at the one mock,
mock_llm.MockLLM).  Each test
makes its own tenants (inserted with SQL) and keys for them, since provider
keys belong to the caller's tenant.  The rotation tests have their own
stack with 200 tenants' worth of values; tests that stop PostgreSQL have
their own cluster."""

import base64
import concurrent.futures
import datetime
import json
import os
import re
import secrets
import signal
import string
import subprocess
import threading
import time

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, assert_json_response, auth
from keygate_stack import on_every_worker, served_by
from keygate_stack import audit_rows, count_rows
from mock_llm import BASES, VALIDATE_PATHS, Complete, Drop, Fail, Hang
from mock_llm import Redirect, rejection

ROOT = "00000000-0000-0000-0000-000000000001"
PROVIDERS = ("openai", "anthropic", "google", "openrouter")
LLM_RW = ["llm_keys:read", "llm_keys:write"]
TENANT_SCOPES = LLM_RW + ["chat:write"]
CHAT = "/v1/chat/completions"
# Plenty of credits for each tenant made here, so that gateway calls are
# never refused for want of them.
CREDITS = 10 ** 15
PATH = "/v1/account/llm-keys"
REENCRYPT = "/v1/maintenance/reencrypt"

STORED_VALIDATED = {"success": True,
                    "message": "LLM API keys stored and validated "
                               "successfully"}
STORED = {"success": True, "message": "LLM API keys stored"}
DELETED = {"success": True, "message": "LLM keys deleted"}
VAULT_DOWN = "Vault connection unavailable - cannot store keys"

STATUS_FIELDS = ({"pool_available"} |
                 {"has_%s_key" % p for p in PROVIDERS} |
                 {"%s_last_validated" % p for p in PROVIDERS})
CIPHERTEXT_RE = re.compile(
    r"^v1:([0-9a-fA-F]{24}):([0-9a-fA-F]{32}):([0-9a-fA-F]+)$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?"
                    r"(Z|[+-]\d\d:\d\d)$")
PARALLEL = 24       # more concurrent requests than the stack has workers
ALNUM = string.ascii_letters + string.digits

# What a key of each provider starts with, as the providers issue them.
KEY_PREFIXES = {"openai": "sk-proj-", "anthropic": "sk-ant-api03-",
                "google": "AIza", "openrouter": "sk-or-v1-"}

# The rotation stack's size: values for this many tenants, all four
# providers each, stored through the API (see `rot`): 10,000 values.
ROTATION_TENANTS = int(os.environ.get("KEYGATE_ROTATION_TENANTS", "2500"))


# ---------------------------------------------------------------------------
# Helpers

def provider_key(provider, length=48, prefix=None):
    """A well-formed, random key of `provider` of `length` characters."""
    head = KEY_PREFIXES[provider] if prefix is None else prefix
    return head + "".join(secrets.choice(ALNUM)
                          for _ in range(length - len(head)))


def four_keys():
    return {p: provider_key(p) for p in PROVIDERS}


def body_of(keys):
    """{provider: key} as a request body."""
    return {"%s_key" % p: k for p, k in keys.items()}


def rid(tag="t"):
    return "e2e-vault-%s-%s" % (tag, secrets.token_hex(8))


def with_rid(headers, request_id):
    return dict(headers, **{"X-Request-Id": request_id})


class Tenant(ks.Tenant):
    """A tenant with an API key, made through the API, that may read and
    write its vault and call the gateway."""

    name = "e2e-vault"
    scopes = TENANT_SCOPES
    credits = CREDITS
    key_by_api = True

    def store(self, keys, request_id=None, timeout=10):
        """POSTs {provider: key}, or `keys` as it is when it is anything
        else (a body with *_key members, an empty object, ...)."""
        is_by_provider = (isinstance(keys, dict) and keys and
                          set(keys) <= set(PROVIDERS))
        body = body_of(keys) if is_by_provider else keys
        headers = self.key_headers
        if request_id:
            headers = with_rid(headers, request_id)
        return self.stack.post(PATH, body, headers=headers, timeout=timeout)

    def status(self):
        resp = self.stack.get(PATH, headers=self.key_headers)
        assert resp.status == 200, resp.body[:500]
        assert_status_object(resp.json)
        return resp.json

    def delete(self, provider=None, request_id=None):
        path = PATH + ("?provider=%s" % provider if provider else "")
        headers = self.key_headers
        if request_id:
            headers = with_rid(headers, request_id)
        return self.stack.request("DELETE", path, headers=headers)

    def rows(self):
        return vault_rows(self.stack, self.id)

    def ask(self, model="gpt-4o-mini"):
        """A gateway call to `model` with the key alone."""
        return chat(self.stack, self.key_headers, model)

    def has(self):
        """The providers the status says this tenant has a key for."""
        status = self.status()
        return {p for p in PROVIDERS if status["has_%s_key" % p]}


def assert_status_object(obj):
    """The status: exactly these members, booleans and timestamps, and
    nothing that could be a key."""
    assert isinstance(obj, dict), obj
    assert set(obj) == STATUS_FIELDS, "members %r" % sorted(
        set(obj) ^ STATUS_FIELDS)
    assert isinstance(obj["pool_available"], bool)
    for p in PROVIDERS:
        has, when = obj["has_%s_key" % p], obj["%s_last_validated" % p]
        assert isinstance(has, bool), (p, has)
        assert when is None or (isinstance(when, str) and ISO_RE.match(
            when)), "%s_last_validated = %r" % (p, when)
        if not has:
            assert when is None, "%s: validated but absent: %r" % (p, when)


def vault_rows(stack, tenant=None):
    """The stored rows as dicts: {provider: row} of `tenant`, or without
    it {(tenant, provider): row} of every tenant."""
    where = "WHERE tenant_id = '%s'" % tenant if tenant else ""
    rows = stack.psql("SELECT row_to_json(k)::text FROM llm_keys k %s"
                      % where)
    out = {}
    for (text,) in rows:
        row = json.loads(text)
        out[row["provider"] if tenant else
            (row["tenant_id"], row["provider"])] = row
    return out


def snapshot(stack):
    """{(tenant, provider): (ciphertext, master_key_id)} of every value."""
    return {(t, p): (c, k) for t, p, c, k in stack.psql(
        "SELECT tenant_id, provider, ciphertext, master_key_id "
        "FROM llm_keys")}


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_recent(text, slack=60):
    when = parse_ts(text).timestamp()
    assert abs(when - time.time()) < slack, "%r is not now" % text


def secret_forms(key):
    """The key and the parts of it that must never appear anywhere: the
    random part without the provider's prefix, both halves of it, and
    the key in hex."""
    body = key
    for prefix in KEY_PREFIXES.values():
        if key.startswith(prefix):
            body = key[len(prefix):]
    return [key, body, body[:16], body[-16:], key.encode().hex()]


def assert_no_secret(text, keys, where):
    for key in keys:
        for form in secret_forms(key):
            assert form not in text, "key material %r in %s" % (form, where)


def assert_v1(ciphertext, plaintext=None):
    """The stored form: v1:<iv>:<tag>:<ciphertext>, AES-GCM, so the
    ciphertext is exactly as long as the key."""
    m = CIPHERTEXT_RE.match(ciphertext)
    assert m, "stored value %r is not v1:<iv 24 hex>:<tag 32 hex>:<hex>" % (
        ciphertext[:80],)
    if plaintext is not None:
        assert len(m.group(3)) == 2 * len(plaintext), (
            "ciphertext of %d hex digits for a %d-character key"
            % (len(m.group(3)), len(plaintext)))
    return m.groups()


def chat(stack, headers, model="gpt-4o-mini"):
    """One small, non-streamed chat completion through the gateway."""
    return stack.post(CHAT, {"model": model, "max_tokens": 5, "messages": [
        {"role": "user", "content": "Say ok."}]}, headers=headers,
        timeout=15)


def prepare_gateway(stack):
    """A price for every model, so that the gateway can charge."""
    stack.psql("INSERT INTO prices (pattern, input_per_mtok, "
               "output_per_mtok) VALUES ('*', 1, 1) ON CONFLICT DO NOTHING")


def assert_upstream_keys(mock, allowed):
    """Every chat request the mock received presents the key `allowed`
    ({provider: key}) holds for that provider, and no other."""
    for provider in ("openai", "openrouter"):
        for req in mock.chats(provider):
            key = req.key
            assert key == allowed.get(provider), (
                "%s was called with %r, not the tenant's own %s key"
                % (provider, (key or "")[:12] + "...", provider))


def vault_check(stack, keyring=None):
    """`keygatectl vault-check` (with `keyring` as master_keys); skips the
    test when the command does not exist."""
    env = {"KEYGATE_MASTER_KEYS": keyring} if keyring else None
    p = stack.kg.ctl("vault-check", env=env)
    return p


def assert_vault_ok(stack, expected=None, keyring=None):
    """vault-check decrypts every stored value (`expected` of them)."""
    p = vault_check(stack, keyring)
    out = p.stdout + p.stderr
    assert p.returncode == 0, "vault-check failed (%d):\n%s" % (
        p.returncode, out)
    m = re.search(r"^ok (\d+)\s*$", p.stdout, re.M)
    assert m, "vault-check printed %r" % out
    if expected is not None:
        assert int(m.group(1)) == expected, out
    return int(m.group(1))


def assert_vault_reports(stack, tenant, provider):
    """vault-check fails and names the row of `tenant` and `provider`."""
    p = vault_check(stack)
    out = p.stdout + p.stderr
    assert p.returncode == 1, "vault-check exited %d:\n%s" % (
        p.returncode, out)
    named = [line for line in out.splitlines()
             if tenant in line and provider in line]
    assert named, "vault-check does not name %s/%s:\n%s" % (
        tenant, provider, out)
    return out


def master_key():
    return secrets.token_bytes(32)


def keyring_text(ring):
    """[(id, 32 bytes)] as master_keys: id:base64,...; the first active."""
    return ",".join("%s:%s" % (i, base64.b64encode(k).decode())
                    for i, k in ring)


restart = ks.restart


def retry_after_ok(resp):
    value = resp.headers.get("retry-after", "")
    return value.isdigit() and int(value) > 0


# ---------------------------------------------------------------------------
# Fixtures

@pytest.fixture(autouse=True)
def fresh_mock(mock):
    """Every test starts with a well-behaved mock that accepts no key, and
    leaves nothing held."""
    mock.reset()
    yield mock
    mock.reset()


@pytest.fixture(scope="module")
def vault(workdir, pg, mock):
    """Three workers, key validation on, every provider at the mock; a
    provider that does not answer within 2 s is given up."""
    s = ks.Stack(workdir.subdir("kg"), pg,
                 dbname="vault_%d_%d" % (os.getpid(), time.time_ns()),
                 workers=3, rate_limit_max=100000, validate_llm_keys="true",
                 upstream_connect_timeout=2, upstream_total_timeout=2,
                 **mock.config())
    prepare_gateway(s)
    yield s
    s.close()


@pytest.fixture
def tenant(vault):
    return Tenant(vault)


def accepted(mock, keys):
    """Makes the mock accept every key of {provider: key}; returns keys."""
    for p, k in keys.items():
        mock.accept(p, k)
    return keys


# ---------------------------------------------------------------------------
# 1. Store, status, delete

def test_new_tenant_has_no_provider_keys(vault, tenant):
    resp = vault.get(PATH, headers=tenant.key_headers)
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json == dict(
        {"pool_available": False},
        **{"has_%s_key" % p: False for p in PROVIDERS},
        **{"%s_last_validated" % p: None for p in PROVIDERS})
    assert tenant.rows() == {}


def test_storing_all_four_keys_validates_and_encrypts_each(vault, tenant,
                                                           mock):
    keys = accepted(mock, four_keys())
    request_id = rid("store")
    resp = tenant.store(keys, request_id)
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.headers["x-request-id"] == request_id
    assert resp.json == STORED_VALIDATED
    for p in PROVIDERS:
        assert len(mock.seen(p)) == 1, (
            "%s was asked %d times" % (p, len(mock.seen(p))))
    status = tenant.status()
    for p in PROVIDERS:
        assert status["has_%s_key" % p] is True, p
        assert status["%s_last_validated" % p], p
        assert_recent(status["%s_last_validated" % p])
    rows = tenant.rows()
    assert set(rows) == set(PROVIDERS)
    for p, row in rows.items():
        assert_v1(row["ciphertext"], keys[p])
        assert row["master_key_id"] == "1", row
        assert row["last_validated_at"], row
        assert row["tenant_id"] == tenant.id


def test_store_writes_one_audit_row_naming_the_providers(vault, tenant,
                                                         mock):
    keys = accepted(mock, {"openai": provider_key("openai"),
                           "google": provider_key("google")})
    request_id = rid("audit")
    resp = tenant.store(keys, request_id)
    assert resp.status == 200, resp.body
    rows = audit_rows(vault, request_id)
    assert [r["action"] for r in rows] == ["llm_key.store"], rows
    row = rows[0]
    assert row["tenant_id"] == tenant.id
    assert row["actor_key_id"] == vault.pg.scalar(
        "SELECT id FROM api_keys WHERE key_prefix = '%s'" % tenant.key[:16],
        dbname=vault.dbname)
    details = json.dumps(row["details"])
    for p in keys:
        assert p in details, "details %s do not name %s" % (details, p)
    assert_no_secret(json.dumps(row), keys.values(), "the audit row")


def test_omitted_keys_stay_as_they_are(vault, tenant, mock):
    first = accepted(mock, {"openai": provider_key("openai"),
                            "anthropic": provider_key("anthropic")})
    assert tenant.store(first).status == 200
    before = tenant.rows()
    mock.clear()
    google = accepted(mock, {"google": provider_key("google")})
    resp = tenant.store(google)
    assert resp.status == 200, resp.body
    assert resp.json == STORED_VALIDATED
    assert [r.path for r in mock.seen()] == [
        VALIDATE_PATHS["google"]], "validated more than the new key"
    after = tenant.rows()
    assert set(after) == {"openai", "anthropic", "google"}
    for p in first:
        assert after[p] == before[p], "%s changed" % p
    assert tenant.has() == {"openai", "anthropic", "google"}


def test_storing_again_replaces_the_value(vault, tenant, mock):
    old = accepted(mock, {"openai": provider_key("openai")})
    assert tenant.store(old).status == 200
    before = tenant.rows()["openai"]
    time.sleep(0.05)
    new = accepted(mock, {"openai": provider_key("openai")})
    resp = tenant.store(new)
    assert resp.status == 200, resp.body
    after = tenant.rows()["openai"]
    assert len(tenant.rows()) == 1
    assert after["ciphertext"] != before["ciphertext"]
    assert_v1(after["ciphertext"], new["openai"])
    assert parse_ts(after["updated_at"]) > parse_ts(before["updated_at"])
    assert parse_ts(after["last_validated_at"]) >= parse_ts(
        before["last_validated_at"])


def test_each_value_gets_its_own_random_iv(vault, mock):
    """The same key stored twice, and for two tenants: every IV and every
    ciphertext differs."""
    key = provider_key("anthropic")
    mock.accept("anthropic", key)
    a, b = Tenant(vault), Tenant(vault)
    seen = []
    for t in (a, a, b):
        assert t.store({"anthropic": key}).status == 200
        seen.append(assert_v1(t.rows()["anthropic"]["ciphertext"], key))
    assert len({iv for iv, _, _ in seen}) == 3, seen
    assert len({ct for _, _, ct in seen}) == 3, seen


def test_the_gateway_calls_the_provider_with_the_stored_key(vault, tenant,
                                                           mock):
    keys = accepted(mock, four_keys())
    assert tenant.store(keys).status == 200
    resp = tenant.ask("gpt-4o-mini")
    assert resp.status == 200, resp.body
    assert resp.json["keygate"]["key_source"] == "user", resp.json
    assert resp.json["keygate"]["provider"] == "openai", resp.json
    calls = mock.chats("openai")
    assert len(calls) == 1, calls
    assert calls[0].key == keys["openai"]
    assert_no_secret(resp.body.decode(), keys.values(), "a chat reply")


def test_delete_removes_every_key_of_the_callers_tenant_only(vault, mock):
    a, b = Tenant(vault), Tenant(vault)
    for t in (a, b):
        assert t.store(accepted(mock, four_keys())).status == 200
    b_rows = b.rows()
    request_id = rid("delete")
    resp = a.delete(request_id=request_id)
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json == DELETED
    assert a.rows() == {}
    assert a.has() == set()
    assert b.rows() == b_rows
    assert b.has() == set(PROVIDERS)
    rows = audit_rows(vault, request_id)
    assert [r["action"] for r in rows] == ["llm_key.delete"], rows
    assert rows[0]["tenant_id"] == a.id


def test_delete_of_one_provider_keeps_the_others(vault, tenant, mock):
    assert tenant.store(accepted(mock, four_keys())).status == 200
    before = tenant.rows()
    request_id = rid("delete-one")
    resp = tenant.delete("openai", request_id)
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json == DELETED
    after = tenant.rows()
    assert set(after) == {"anthropic", "google", "openrouter"}
    for p in after:
        assert after[p] == before[p]
    status = tenant.status()
    assert status["has_openai_key"] is False
    assert status["openai_last_validated"] is None
    assert [r["action"] for r in audit_rows(vault, request_id)] == [
        "llm_key.delete"]


@pytest.mark.parametrize("query", [
    "provider=mistral", "provider=OpenAI", "provider=openai%2Cgoogle",
    "provider=openai%20", "provider=", "provider"],
    ids=["unknown", "case", "list", "space", "empty", "bare"])
def test_delete_of_an_unknown_provider_is_400_and_deletes_nothing(
        vault, tenant, mock, query):
    assert tenant.store(accepted(mock, four_keys())).status == 200
    before = tenant.rows()
    request_id = rid("delete-bad")
    resp = vault.request("DELETE", PATH + "?" + query,
                         headers=with_rid(tenant.key_headers, request_id))
    assert_error(resp, 400)
    assert tenant.rows() == before, "DELETE ?%s deleted keys" % query
    assert audit_rows(vault, request_id) == []


@pytest.mark.parametrize("query", ["providers=openai", "provder=openai",
                                   "Provider=openai"])
def test_a_misspelt_delete_parameter_deletes_nothing(vault, tenant, mock,
                                                     query):
    """DELETE without ?provider= removes every key, so a misspelt
    parameter must be refused rather than read as "all of them"."""
    assert tenant.store(accepted(mock, four_keys())).status == 200
    before = tenant.rows()
    resp = vault.request("DELETE", PATH + "?" + query,
                         headers=tenant.key_headers)
    assert_error(resp, 400)
    assert tenant.rows() == before, "DELETE ?%s deleted keys" % query


def test_status_is_the_callers_tenant_only(vault, mock):
    a, b = Tenant(vault), Tenant(vault)
    assert a.store(accepted(mock, {"google": provider_key("google")})
                   ).status == 200
    assert b.has() == set()
    root = vault.get(PATH, headers=auth())     # the root tenant, a's parent
    assert root.status == 200, root.body
    assert_status_object(root.json)
    assert root.json["has_google_key"] is False
    assert a.has() == {"google"}


def test_reading_needs_llm_keys_read_and_writing_llm_keys_write(vault, mock):
    reader = Tenant(vault, ["llm_keys:read"])
    other = Tenant(vault, ["api_keys:read"])
    keys = accepted(mock, {"openai": provider_key("openai")})
    resp = reader.store(keys)
    err = assert_error(resp, 403, "insufficient_permissions")
    assert "llm_keys:write" in err["message"]
    err = assert_error(reader.delete(), 403, "insufficient_permissions")
    assert "llm_keys:write" in err["message"]
    assert reader.status()["has_openai_key"] is False
    err = assert_error(vault.get(PATH, headers=other.key_headers), 403,
                       "insufficient_permissions")
    assert "llm_keys:read" in err["message"]
    assert mock.seen() == [], "a provider was asked for a refused store"
    assert reader.rows() == {}


def test_no_key_in_any_response_log_line_or_database_dump(vault, tenant,
                                                          mock):
    keys = accepted(mock, four_keys())
    keys["openai"] = provider_key("openai", prefix="sk-")    # the old form
    mock.accept("openai", keys["openai"])
    texts = []
    resp = tenant.store(keys)
    assert resp.status == 200, resp.body
    texts.append(resp.body.decode())
    bad = provider_key("anthropic")                  # a rejected one
    texts.append(tenant.store({"anthropic": bad}).body.decode())
    texts.append(vault.get(PATH, headers=tenant.key_headers).body.decode())
    texts.append(tenant.delete("google").body.decode())
    reply = tenant.ask("gpt-4o-mini")    # a call that uses the stored key
    assert reply.status == 200, reply.body
    texts.append(reply.body.decode())
    texts.append(vault.get(PATH, headers=tenant.key_headers).body.decode())
    texts.append(vault.post(REENCRYPT, headers=auth()).body.decode())
    all_keys = list(keys.values()) + [bad]
    for text in texts:
        assert_no_secret(text, all_keys, "a response: %s" % text[:300])
    marker = rid("log")
    vault.get("/health", headers={"X-Request-Id": marker})
    served_by(vault, [marker])      # the log has caught up
    assert_no_secret(vault.kg.log_text(), all_keys, "keygated's log")
    dump = vault.pg.dump(vault.dbname)
    assert "CREATE TABLE public.llm_keys" in dump
    assert_no_secret(dump, all_keys, "pg_dump")
    rows = tenant.rows()
    assert set(rows) == {"openai", "anthropic", "openrouter"}
    for p, row in rows.items():
        assert_v1(row["ciphertext"], keys[p])
        assert row["ciphertext"] in dump


# ---------------------------------------------------------------------------
# 2. A value is bound to its tenant and provider

def test_vault_check_decrypts_every_untouched_value(vault, tenant, mock):
    assert tenant.store(accepted(mock, four_keys())).status == 200
    assert_vault_ok(vault, count_rows(vault, "llm_keys"))


def flip_hex(text, index):
    """`text` with the hex digit at `index` changed in one bit."""
    return text[:index] + "%x" % (int(text[index], 16) ^ 1) + text[index + 1:]


TAMPERINGS = ["other_tenant", "other_provider", "iv", "tag", "ciphertext"]


def tamper(vault, how, victim, donor):
    """Spoils the victim's stored OpenAI value; returns (tenant, provider,
    original)."""
    rows = victim.rows()
    provider = "openai"
    if how == "other_tenant":
        # The donor's value for the same provider, copied over.
        value = donor.rows()[provider]["ciphertext"]
    elif how == "other_provider":
        # The victim's own OpenRouter value, copied to its OpenAI row.
        value = rows["openrouter"]["ciphertext"]
    else:
        iv, tag, ct = assert_v1(rows[provider]["ciphertext"])
        part = {"iv": 0, "tag": 1, "ciphertext": 2}[how]
        pieces = [iv, tag, ct]
        pieces[part] = flip_hex(pieces[part], len(pieces[part]) // 2)
        value = "v1:" + ":".join(pieces)
    original = rows[provider]["ciphertext"]
    assert value != original
    vault.psql("UPDATE llm_keys SET ciphertext = '%s' WHERE tenant_id = '%s' "
               "AND provider = '%s'" % (value, victim.id, provider))
    return victim.id, provider, original


def untamper(vault, tenant_id, provider, original):
    vault.psql("UPDATE llm_keys SET ciphertext = '%s' WHERE tenant_id = '%s' "
               "AND provider = '%s'" % (original, tenant_id, provider))


@pytest.mark.parametrize("how", TAMPERINGS)
def test_a_moved_or_altered_value_no_longer_decrypts(vault, mock, how):
    victim, donor = Tenant(vault), Tenant(vault)
    for t in (victim, donor):
        assert t.store(accepted(mock, four_keys())).status == 200
    assert_vault_ok(vault)
    spoiled = tamper(vault, how, victim, donor)
    try:
        out = assert_vault_reports(vault, spoiled[0], spoiled[1])
        # Only the spoiled row is named.
        assert donor.id not in out, out
    finally:
        untamper(vault, *spoiled)
    assert_vault_ok(vault)


def test_vault_check_names_every_value_that_fails(vault, mock):
    tenants = [Tenant(vault) for _ in range(3)]
    for t in tenants:
        assert t.store(accepted(mock, four_keys())).status == 200
    spoiled = [tamper(vault, "other_tenant", tenants[0], tenants[2]),
               tamper(vault, "tag", tenants[1], tenants[2])]
    try:
        out = vault_check(vault).stdout
        for tenant_id, provider, _ in spoiled:
            assert [line for line in out.splitlines()
                    if tenant_id in line and provider in line], (
                "vault-check does not name %s/%s:\n%s"
                % (tenant_id, provider, out))
        assert tenants[2].id not in out, out
    finally:
        for spoilt in spoiled:
            untamper(vault, *spoilt)
    assert_vault_ok(vault)


@pytest.mark.parametrize("how", TAMPERINGS)
def test_the_gateway_never_sends_a_moved_or_altered_value(vault, mock, how):
    """Whatever the gateway answers for a spoiled value, no provider is
    called with a key that is not the caller's own for that provider."""
    victim, donor = Tenant(vault), Tenant(vault)
    keys = {}
    for t in (victim, donor):
        keys[t] = accepted(mock, four_keys())
        assert t.store(keys[t]).status == 200
    spoiled = tamper(vault, how, victim, donor)
    try:
        mock.clear()
        resp = victim.ask("gpt-4o-mini")
        if resp.status != 200:
            assert_error(resp, resp.status)
        assert_upstream_keys(mock, keys[victim])
        assert_no_secret(resp.body.decode(), list(keys[donor].values()),
                         "the reply")
    finally:
        untamper(vault, *spoiled)


def test_reencrypt_with_a_value_that_does_not_decrypt_changes_nothing(
        vault, mock):
    victim, donor = Tenant(vault), Tenant(vault)
    for t in (victim, donor):
        assert t.store(accepted(mock, four_keys())).status == 200
    spoiled = tamper(vault, "other_tenant", victim, donor)
    try:
        before = snapshot(vault)
        request_id = rid("reencrypt-bad")
        resp = vault.post(REENCRYPT, headers=with_rid(auth(), request_id))
        assert resp.status != 200, (
            "reencrypt succeeded over a value it cannot decrypt: %r"
            % resp.body)
        assert_error(resp, resp.status)
        assert snapshot(vault) == before
        assert [r for r in audit_rows(vault, request_id)
                if r["action"] == "vault.reencrypt"] == []
    finally:
        untamper(vault, *spoiled)


# ---------------------------------------------------------------------------
# 3. Rotation of the master key
#
# Values are bound to their tenant and provider (they are the associated
# data), so rows cannot be multiplied by copying them with SQL: the copies
# would not decrypt.  The rotation stack therefore stores real values
# through the API for ROTATION_TENANTS tenants (all four providers each),
# from several client threads, with validation off.  The tenants are
# inserted with one SQL statement.

class Rotation:
    """The rotation stack and its keyring, newest (active) key first."""

    def __init__(self, stack, ring):
        self.stack = stack
        self.kg = stack.kg
        self.ring = ring
        self.tenants = []           # [(tenant id, api key)]
        self.keys = {}              # tenant id -> {provider: key}
        self._n = 0

    @property
    def active(self):
        return self.ring[0][0]

    def add_key(self, key_id=None):
        """Restarts keygated with a fresh master key in front of the
        keyring; returns its id."""
        self._n += 1
        key_id = key_id or "k%d" % self._n
        self.ring.insert(0, (key_id, master_key()))
        restart(self.kg, master_keys=keyring_text(self.ring))
        return key_id

    def headers(self, i=0):
        return auth(self.tenants[i][1])

    def reencrypt(self, request_id=None):
        headers = auth()
        if request_id:
            headers = with_rid(headers, request_id)
        return self.stack.post(REENCRYPT, headers=headers, timeout=60)

    def status_load(self, threads=3, duration=30):
        """Clients reading one tenant's status in a loop."""
        return ks.Load(self.stack.url + PATH, threads=threads,
                       headers=self.headers(0), duration=duration,
                       interval=0.01)

    def assert_values_work(self, mock, tenants=(0, 1, 2)):
        """The gateway calls OpenAI with each tenant's own stored key."""
        for i in tenants:
            tid, key = self.tenants[i]
            mock.accept("openai", self.keys[tid]["openai"])
            mock.clear()
            resp = chat(self.stack, auth(key))
            assert resp.status == 200, resp.body
            calls = mock.chats("openai")
            assert [c.key for c in calls] == [
                self.keys[tid]["openai"]]

    def status_failures(self, samples):
        """Samples that are not a 200 showing all four keys."""
        bad = []
        for s in samples:
            if s.status != 200 or not all(
                    s.response.json.get("has_%s_key" % p) is True
                    for p in PROVIDERS):
                bad.append(s)
        return bad


@pytest.fixture(scope="module")
def rot(workdir, pg, mock):
    ring = [("old", master_key())]
    s = ks.Stack(workdir.subdir("kg"), pg,
                 dbname="rot_%d_%d" % (os.getpid(), time.time_ns()),
                 workers=3, rate_limit_max=100000, validate_llm_keys="false",
                 master_keys=keyring_text(ring), **mock.config())
    r = Rotation(s, ring)
    try:
        prepare_gateway(s)
        ids = [row[0] for row in s.psql(
            "INSERT INTO tenants (id, parent_id, name, path, "
            "credits_balance) "
            "SELECT id, '%s', 'rotation-' || n, ARRAY['%s'::uuid, id], %d "
            "FROM (SELECT gen_random_uuid() AS id, n "
            "      FROM generate_series(1, %d) n) t RETURNING id"
            % (ROOT, ROOT, CREDITS, ROTATION_TENANTS))]
        assert len(ids) == ROTATION_TENANTS

        def populate(tid):
            key = ks.mint(s, TENANT_SCOPES, name=Tenant.name,
                          tenant_id=tid)[0]
            keys = four_keys()
            resp = s.post(PATH, body_of(keys), headers=auth(key))
            assert resp.status == 200, resp.body
            return tid, key, keys
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for tid, key, keys in pool.map(populate, ids):
                r.tenants.append((tid, key))
                r.keys[tid] = keys
        assert count_rows(s, "llm_keys") == 4 * ROTATION_TENANTS
        yield r
    finally:
        s.close()


def install_trigger(stack, body):
    """A trigger on every write to llm_keys that runs `body` on the 100th
    one (counted across statements and transactions by a sequence)."""
    stack.psql(
        "CREATE SEQUENCE e2e_vault_writes; "
        "CREATE FUNCTION e2e_vault_write() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        "IF nextval('e2e_vault_writes') = 100 THEN %s; END IF; "
        "RETURN COALESCE(NEW, OLD); END $$; "
        "CREATE TRIGGER e2e_vault_write BEFORE INSERT OR UPDATE OR DELETE "
        "ON llm_keys FOR EACH ROW EXECUTE FUNCTION e2e_vault_write()" % body)


def drop_trigger(stack):
    stack.psql("DROP TRIGGER IF EXISTS e2e_vault_write ON llm_keys; "
               "DROP FUNCTION IF EXISTS e2e_vault_write(); "
               "DROP SEQUENCE IF EXISTS e2e_vault_writes")


def assert_one_key(before, after, active):
    """Either nothing changed, or every value moved to `active`."""
    assert set(after) == set(before), "rows appeared or vanished"
    if after == before:
        return "unchanged"
    moved = [k for k in after if after[k][1] == active]
    assert len(moved) == len(after), (
        "%d of %d values under %r, the rest under %r: a partial rotation"
        % (len(moved), len(after), active,
           sorted({v[1] for v in after.values()} - {active})))
    same = [k for k in after if after[k][0] == before[k][0]]
    assert not same, "%d values kept their ciphertext" % len(same)
    return "rotated"


def test_store_without_validation_calls_no_provider(rot, mock):
    t = Tenant(rot.stack)
    keys = four_keys()
    resp = t.store(keys)
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json == STORED
    assert mock.seen() == []
    status = t.status()
    for p in PROVIDERS:
        assert status["has_%s_key" % p] is True
        assert status["%s_last_validated" % p] is None, (
            "%s: a key that was never validated has %r" % (
                p, status["%s_last_validated" % p]))
    for p, row in t.rows().items():
        assert_v1(row["ciphertext"], keys[p])
        assert row["master_key_id"] == rot.active


def test_reencrypt_moves_every_value_to_the_new_key(rot, mock):
    rot.add_key("new")              # master_keys = new:...,old:...
    before = snapshot(rot.stack)
    total = len(before)
    assert total >= 4 * ROTATION_TENANTS
    # Old values are readable under a keyring.
    assert_vault_ok(rot.stack, total)
    request_id = rid("reencrypt")
    with rot.status_load() as load:
        load.wait_for(20)
        resp = rot.reencrypt(request_id)
        load.wait_for(20)
    samples = load.results()
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json == {"success": True, "reencrypted": total,
                         "master_key_id": "new"}
    after = snapshot(rot.stack)
    assert assert_one_key(before, after, "new") == "rotated"
    for (tid, p), (ct, _) in after.items():
        assert_v1(ct, rot.keys[tid][p] if tid in rot.keys else None)
    assert [r["action"] for r in audit_rows(rot.stack, request_id)] == [
        "vault.reencrypt"]
    bad = rot.status_failures(samples)
    assert not bad, "status during the rotation:\n" + ks.describe(bad)
    assert len(samples) >= 40
    # Every value decrypts under the new key alone.
    assert_vault_ok(rot.stack, total, keyring=keyring_text(rot.ring[:1]))
    rot.assert_values_work(mock)


def test_values_stored_after_a_key_change_use_the_active_key(rot):
    active = rot.add_key()
    before = snapshot(rot.stack)
    tid, key = rot.tenants[1]
    keys = four_keys()
    resp = rot.stack.post(PATH, {"openai_key": keys["openai"]},
                          headers=auth(key))
    assert resp.status == 200, resp.body
    after = snapshot(rot.stack)
    assert after[(tid, "openai")][1] == active
    rot.keys[tid]["openai"] = keys["openai"]
    for k, v in after.items():
        if k != (tid, "openai"):
            assert v == before[k], "%r changed" % (k,)
    assert_vault_ok(rot.stack, len(after))


def test_reencrypt_failing_midway_changes_nothing(rot):
    active = rot.add_key()
    before = snapshot(rot.stack)
    install_trigger(rot.stack, "RAISE EXCEPTION 'e2e: the 100th write fails'")
    try:
        request_id = rid("reencrypt-fail")
        resp = rot.reencrypt(request_id)
        assert resp.status >= 500, resp.body
        assert_error(resp, resp.status)
        assert snapshot(rot.stack) == before, "a failed rotation changed rows"
        assert audit_rows(rot.stack, request_id) == []
    finally:
        drop_trigger(rot.stack)
    resp = rot.reencrypt()
    assert resp.status == 200, resp.body
    assert resp.json["master_key_id"] == active
    assert assert_one_key(before, snapshot(rot.stack), active) == "rotated"


def test_rotation_killed_midway_leaves_every_value_under_one_key(rot,
                                                                  mock):
    active = rot.add_key()
    before = snapshot(rot.stack)
    install_trigger(rot.stack, "PERFORM pg_sleep(4)")
    out_path = os.path.join(rot.kg.workdir, "rotate.out")
    proc = None
    try:
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [ks.KEYGATECTL, "--config", rot.kg.config_path,
                 "rotate-encryption-key"], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=ks.clean_env(),
                start_new_session=True)

        def sleeping_backend():
            if proc.poll() is not None:
                raise AssertionError(
                    "rotate-encryption-key ended (%s) before its 100th "
                    "write:\n%s" % (proc.returncode, ks.tail(out_path)))
            return rot.stack.pg.scalar(
                "SELECT pid FROM pg_stat_activity WHERE datname = '%s' "
                "AND wait_event = 'PgSleep'" % rot.stack.dbname,
                dbname="postgres")
        backend = ks.wait_until(sleeping_backend, 20,
                                what="the rotation to reach its 100th write")
        with rot.status_load() as load:
            load.wait_for(10, timeout=3)        # readers during the stall
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
            ks.wait_until(lambda: rot.stack.pg.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                % backend, dbname="postgres") == "0", 20,
                what="the killed rotation's session to end")
            load.wait_for(10)
        samples = load.results()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        drop_trigger(rot.stack)
    after = snapshot(rot.stack)
    outcome = assert_one_key(before, after, active)
    assert_vault_ok(rot.stack, len(after))
    bad = rot.status_failures(samples)
    assert not bad, "status during the stalled rotation:\n" + ks.describe(bad)
    rot.assert_values_work(mock)
    if outcome == "unchanged":      # finish it from the shell
        p = rot.kg.ctl("rotate-encryption-key")
        assert p.returncode == 0, p.stdout + p.stderr
        assert str(len(after)) in p.stdout, p.stdout
        assert assert_one_key(before, snapshot(rot.stack),
                              active) == "rotated"


def test_rotation_without_the_current_key_changes_nothing(rot):
    before = snapshot(rot.stack)
    stranger = keyring_text([("stranger", master_key())])
    p = rot.kg.ctl("rotate-encryption-key",
                   env={"KEYGATE_MASTER_KEYS": stranger})
    assert p.returncode != 0, (
        "rotated values it cannot decrypt: %s%s" % (p.stdout, p.stderr))
    assert snapshot(rot.stack) == before
    for key in rot.ring:        # no master key in the output
        assert keyring_text([key]).split(":", 1)[1] not in p.stdout + p.stderr


def test_rotate_encryption_key_from_the_shell(rot):
    active = rot.add_key()
    before = snapshot(rot.stack)
    p = rot.kg.ctl("rotate-encryption-key")
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"\b%d\b" % len(before), p.stdout), (
        "the count %d is not in %r" % (len(before), p.stdout))
    assert assert_one_key(before, snapshot(rot.stack), active) == "rotated"
    assert count_rows(rot.stack, "audit_log",
                 "action = 'vault.reencrypt' AND target_id = '%s'"
                 % active) == 1
    for key in rot.ring:        # no master key in the output
        secret = keyring_text([key]).split(":", 1)[1]
        assert secret not in p.stdout + p.stderr
    # The running keygated reads the moved values (same keyring).
    resp = rot.stack.get(PATH, headers=rot.headers(0))
    assert resp.status == 200 and rot.status_failures([ks.Sample(
        0, 0, resp.status, resp, None)]) == [], resp.body


@pytest.mark.parametrize("ring", [
    "1:" + base64.b64encode(b"k" * 16).decode(),        # 16 bytes
    "1:" + base64.b64encode(b"k" * 33).decode(),        # 33 bytes
    "1:not base64 at all!",
    base64.b64encode(b"k" * 32).decode(),               # no id
    "a:" + base64.b64encode(b"k" * 32).decode() + ",a:" +
    base64.b64encode(b"j" * 32).decode(),               # the same id twice
], ids=["short", "long", "garbage", "no-id", "twice"])
def test_malformed_master_keys_are_refused_at_start(workdir, vault, ring):
    kg = ks.Keygated(workdir.subdir("kg"), vault.pg.conninfo_for(vault.dbname),
                     start=False, workers=1, master_keys=ring)
    try:
        # --check-config finds it too, without starting anything.
        p = ks.subprocess.run([ks.KEYGATED, "--check-config", "--config",
                               kg.config_path], env=ks.clean_env(),
                              stdout=ks.subprocess.PIPE,
                              stderr=ks.subprocess.PIPE, text=True,
                              timeout=10)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        assert "master_keys" in p.stderr and "OK" not in p.stdout
        assert ring.split(",")[0].split(":")[-1] not in p.stderr
        kg.start(wait=False)
        ks.wait_until(lambda: kg.proc.poll() is not None or
                      "killed by signal" in kg.log_text(), 10,
                      what="keygated to give up on master_keys = %r" % ring)
        log = kg.log_text()
        assert "killed by signal" not in log, (
            "a worker crashed on master_keys = %r:\n%s" % (ring, log[-1500:]))
        code = kg.wait(5)
        assert code is not None, "keygated runs with master_keys = %r" % ring
        assert code != 0
        assert "master_keys" in log, log
        assert ring.split(",")[0].split(":")[-1] not in log, (
            "the master key is in the log")
    finally:
        kg.close()


# ---------------------------------------------------------------------------
# 4. Every worker sees a change at once

def test_a_stored_key_and_its_deletion_reach_every_worker_at_once(
        vault, tenant, mock):
    assert tenant.status()["has_openrouter_key"] is False
    on_every_worker(vault, "GET", PATH, tenant.key_headers,
                    lambda r: r.status == 200)      # warm every worker
    keys = accepted(mock, {"openrouter": provider_key("openrouter")})
    assert tenant.store(keys).status == 200

    def has_it(resp):
        assert resp.status == 200, resp.body
        assert resp.json["has_openrouter_key"] is True, resp.body
    on_every_worker(vault, "GET", PATH, tenant.key_headers, has_it)
    assert tenant.delete("openrouter").status == 200

    def lacks_it(resp):
        assert resp.status == 200, resp.body
        assert resp.json["has_openrouter_key"] is False, resp.body
    on_every_worker(vault, "GET", PATH, tenant.key_headers, lacks_it)


def test_a_replaced_or_deleted_key_reaches_every_workers_gateway_at_once(
        vault, tenant, mock):
    """Workers may cache decrypted keys, but a change must reach every one
    of them at once: warm every worker with key A, replace it with B, and
    no worker may call the provider with A again; delete it, and none may
    call the provider at all."""
    first = accepted(mock, {"openai": provider_key("openai")})
    assert tenant.store(first).status == 200
    body = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "Say ok."}]}

    def ok(resp):
        assert resp.status == 200, resp.body
    on_every_worker(vault, "POST", CHAT, tenant.key_headers, ok, body)
    assert_upstream_keys(mock, first)
    second = accepted(mock, {"openai": provider_key("openai")})
    assert tenant.store(second).status == 200
    mock.clear()
    on_every_worker(vault, "POST", CHAT, tenant.key_headers, ok, body)
    assert mock.chats("openai"), "no call reached the provider"
    assert_upstream_keys(mock, second)
    assert tenant.delete().status == 200
    mock.clear()

    def refused(resp):
        assert_error(resp, 401, "missing_provider_key")
    on_every_worker(vault, "POST", CHAT, tenant.key_headers, refused, body)
    assert mock.chats("openai") == [], "a deleted key was used"


def vault_lookups(stack):
    """How many times keygated has read a stored provider key."""
    from test_keycache import statement_calls
    return statement_calls(stack, "FROM llm_keys WHERE tenant_id = $1::uuid "
                                  "AND provider = $2")


CHAT_BODY = {"model": "gpt-4o-mini", "max_tokens": 5,
             "messages": [{"role": "user", "content": "Say ok."}]}


def test_stored_keys_are_read_once_per_worker(vault, tenant, mock):
    """Workers keep the sealed value, not the plaintext, and do not read
    the vault again for every call."""
    keys = accepted(mock, {"openai": provider_key("openai")})
    assert tenant.store(keys).status == 200
    on_every_worker(vault, "POST", CHAT, tenant.key_headers,
                    lambda r: r.status == 200, CHAT_BODY)
    before = vault_lookups(vault)
    for _ in range(60):
        assert vault.post(CHAT, CHAT_BODY, headers=tenant.key_headers).status \
            == 200
    assert vault_lookups(vault) - before < 4
    assert_upstream_keys(mock, keys)


def test_a_key_stored_where_none_was_reaches_every_worker(vault, tenant,
                                                          mock):
    """No key is remembered too: a store ends that everywhere at once."""
    def refused(resp):
        assert_error(resp, 401, "missing_provider_key")
    on_every_worker(vault, "POST", CHAT, tenant.key_headers, refused,
                    CHAT_BODY)
    keys = accepted(mock, {"openai": provider_key("openai")})
    assert tenant.store(keys).status == 200
    mock.clear()

    def ok(resp):
        assert resp.status == 200, resp.body
    on_every_worker(vault, "POST", CHAT, tenant.key_headers, ok, CHAT_BODY)
    assert_upstream_keys(mock, keys)


def test_a_key_deleted_in_the_database_reaches_every_worker(vault, tenant,
                                                            mock):
    """As another host or an operator's SQL would delete it."""
    keys = accepted(mock, {"openai": provider_key("openai")})
    assert tenant.store(keys).status == 200
    on_every_worker(vault, "POST", CHAT, tenant.key_headers,
                    lambda r: r.status == 200, CHAT_BODY)
    vault.psql("DELETE FROM llm_keys WHERE tenant_id = '%s'" % tenant.id)
    ks.wait_until(lambda: vault.post(CHAT, CHAT_BODY,
                                     headers=tenant.key_headers
                                     ).status == 401, 2,
                  what="the deleted key to be gone")
    mock.clear()

    def refused(resp):
        assert_error(resp, 401, "missing_provider_key")
    on_every_worker(vault, "POST", CHAT, tenant.key_headers, refused,
                    CHAT_BODY)
    assert mock.chats("openai") == [], "a deleted key was used"


# ---------------------------------------------------------------------------
# 5. Errors, each storing nothing

def assert_nothing_stored(vault, tenant, before=None, request_id=None):
    assert tenant.rows() == (before or {}), "the vault changed"
    if request_id:
        assert [r for r in audit_rows(vault, request_id)
                if r["action"].startswith("llm_key.")] == []


BAD_FORMATS = [
    ("openai", "sk-ant-" + "a" * 30),           # Anthropic's
    ("openai", "sk-or-v1-" + "a" * 30),         # OpenRouter's
    ("openai", "pk-" + "a" * 30),
    ("openai", "sk-" + "a" * 16),               # 19 characters
    ("openai", "sk-proj-" + "a" * 505),         # 513 characters
    ("openai", "sk-proj-" + "a" * 10 + " " + "a" * 10),
    ("openai", "sk-proj-" + "a" * 10 + "\n" + "a" * 10),
    ("openai", "sk-proj-" + "a" * 10 + "\u00e9" + "a" * 10),
    ("openai", ""),
    ("anthropic", "sk-proj-" + "a" * 30),
    ("anthropic", "sk-ant" + "a" * 30),
    ("anthropic", "sk-ant-" + "a" * 12),        # 19 characters
    ("google", "AIzb" + "a" * 35),
    ("google", "aiza" + "a" * 35),
    ("google", "sk-" + "a" * 35),
    ("google", "AIza" + "a" * 10 + "\t" + "a" * 10),
    ("openrouter", "sk-" + "a" * 30),
    ("openrouter", "sk-ant-" + "a" * 30),
    ("openrouter", "sk-or-" + "a" * 507),       # 513 characters
]


@pytest.mark.parametrize("provider,value", BAD_FORMATS,
                         ids=["%s-%d" % (p, i) for i, (p, _) in
                              enumerate(BAD_FORMATS)])
def test_bad_format_is_400_naming_the_provider(vault, tenant, mock,
                                               provider, value):
    request_id = rid("format")
    resp = tenant.store({"%s_key" % provider: value}, request_id)
    err = assert_error(resp, 400, "invalid_provider_key")
    assert provider in err["message"].lower(), err
    assert mock.seen() == [], "a malformed key was sent to a provider"
    assert_nothing_stored(vault, tenant, request_id=request_id)


def test_a_bad_format_among_good_keys_stores_none(vault, tenant, mock):
    keys = accepted(mock, {"openai": provider_key("openai"),
                           "google": provider_key("google")})
    body = body_of(keys)
    body["anthropic_key"] = "sk-" + "b" * 40
    resp = tenant.store(body)
    err = assert_error(resp, 400, "invalid_provider_key")
    assert "anthropic" in err["message"].lower()
    assert_nothing_stored(vault, tenant)


@pytest.mark.parametrize("provider,length", [
    ("openai", 20), ("openai", 512), ("anthropic", 20), ("google", 512),
    ("openrouter", 20)])
def test_keys_of_20_and_512_characters_are_accepted(vault, tenant, mock,
                                                    provider, length):
    keys = accepted(mock, {provider: provider_key(provider, length)})
    resp = tenant.store(keys)
    assert resp.status == 200, resp.body
    assert_v1(tenant.rows()[provider]["ciphertext"], keys[provider])


@pytest.mark.parametrize("body,field", [
    ({"openai_key": "sk-proj-" + "a" * 30, "mistral_key": "x" * 30},
     "mistral_key"),
    ({"openai_key": 12345678901234567890}, "openai_key"),
    ({"anthropic_key": None}, "anthropic_key"),
    ({"google_key": ["AIza" + "a" * 35]}, "google_key"),
    ({"openrouter_key": {"key": "sk-or-" + "a" * 30}}, "openrouter_key"),
    ({"openai_key": True}, "openai_key"),
    ({"OPENAI_KEY": "sk-proj-" + "a" * 30}, "OPENAI_KEY"),
    ({}, None),
], ids=["unknown", "number", "null", "list", "object", "bool", "case",
        "empty"])
def test_unknown_fields_wrong_types_and_empty_body_are_422(vault, tenant,
                                                          mock, body, field):
    request_id = rid("422")
    resp = tenant.store(body, request_id)
    assert_error(resp, 422, "validation_error")
    details = resp.json["error"].get("details")
    assert isinstance(details, list) and details, resp.json
    if field:
        assert field in json.dumps(details), details
    assert mock.seen() == []
    assert_nothing_stored(vault, tenant, request_id=request_id)


@pytest.mark.parametrize("raw", [b'{"openai_key": "sk-proj-', b"[]",
                                 b'"sk-proj-aaaaaaaaaaaaaaaaaaaa"'],
                         ids=["malformed", "array", "string"])
def test_a_body_that_is_not_an_object_is_refused(vault, tenant, mock, raw):
    resp = vault.post(PATH, raw, headers=dict(
        tenant.key_headers, **{"Content-Type": "application/json"}))
    assert_error(resp, resp.status)
    assert resp.status in (400, 422), resp.body
    assert mock.seen() == []
    assert_nothing_stored(vault, tenant)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rejected_key_is_400_with_the_providers_own_reason(vault, tenant,
                                                           mock, provider):
    key = provider_key(provider)        # not accepted by the mock
    request_id = rid("rejected")
    resp = tenant.store({provider: key}, request_id)
    err = assert_error(resp, 400, "invalid_api_key")
    assert err["message"] == (
        "Invalid API key: Key validation failed: %s: %s"
        % (provider, rejection(provider, key)[1]["error"]["message"])), err
    assert len(mock.seen(provider)) == 1
    assert_no_secret(resp.body.decode(), [key], "the error")
    assert_nothing_stored(vault, tenant, request_id=request_id)
    assert tenant.has() == set()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_validation_presents_the_key_the_way_the_provider_expects(
        vault, tenant, mock, provider):
    key = accepted(mock, {provider: provider_key(provider)})[provider]
    assert tenant.store({provider: key}).status == 200
    reqs = mock.seen(provider)
    assert len(reqs) == 1, reqs
    req = reqs[0]
    assert req.method == "GET"
    assert req.path == VALIDATE_PATHS[provider]
    header = {"openai": "authorization", "openrouter": "authorization",
              "anthropic": "x-api-key", "google": "x-goog-api-key"}[provider]
    expected = "Bearer " + key if header == "authorization" else key
    assert req.headers.get(header) == expected, req.headers
    if provider == "anthropic":
        assert req.headers.get("anthropic-version") == "2023-06-01"
    # Nowhere else: not in the URL, another header or a body ...
    assert key not in req.path and key not in json.dumps(req.query), req
    for name, value in req.headers.items():
        if name != header:
            assert key not in value, "key in header %s" % name
    assert key.encode() not in req.body
    # ... and the caller's keygate key never reaches a provider.
    assert tenant.key not in json.dumps(req.headers) + req.path
    assert tenant.key.encode() not in req.body


def test_google_key_never_appears_in_a_url(vault, tenant, mock):
    key = accepted(mock, {"google": provider_key("google")})["google"]
    assert tenant.store({"google": key}).status == 200
    req = mock.seen("google")[0]
    assert "key" not in req.query, "?key= in the URL: %r" % (req.query,)
    assert key not in req.path
    assert req.headers.get("x-goog-api-key") == key


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_keys_with_punctuation_are_presented_verbatim(vault, tenant, mock,
                                                      provider):
    """Printable ASCII without spaces is a valid key: quotes, backslashes
    and the like reach the provider, and the vault, unchanged."""
    key = KEY_PREFIXES[provider] + "a!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~z"
    mock.accept(provider, key)
    resp = tenant.store({provider: key})
    assert resp.status == 200, resp.body
    req = mock.seen(provider)[0]
    assert req.key == key
    assert_v1(tenant.rows()[provider]["ciphertext"], key)


def test_a_redirecting_provider_is_not_followed(vault, tenant, mock):
    """A validation request that is redirected elsewhere must not carry
    the key there (redirects are never followed)."""
    key = accepted(mock, {"openai": provider_key("openai")})
    mock.behave("openai", Redirect(mock.url + "/elsewhere/v1/models"))
    resp = tenant.store(key)
    assert resp.status != 200, resp.body
    assert_error(resp, resp.status)
    assert mock.seen(path="/elsewhere/") == [], "the redirect was followed"
    assert_nothing_stored(vault, tenant)


def test_concurrent_stores_for_one_tenant_leave_one_value(vault, tenant,
                                                         mock):
    keys = [provider_key("openrouter") for _ in range(PARALLEL)]
    mock.accept("openrouter", *keys)
    barrier = threading.Barrier(PARALLEL)
    out = [None] * PARALLEL

    def run(i):
        try:
            barrier.wait(10)
            out[i] = tenant.store({"openrouter": keys[i]}, timeout=30)
        except Exception as exc:  # reported below
            out[i] = exc
    threads = [threading.Thread(target=run, args=(i,))
               for i in range(PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for resp in out:
        assert not isinstance(resp, Exception), resp
        assert resp.status == 200, resp.body
    rows = tenant.rows()
    assert set(rows) == {"openrouter"}
    assert_v1(rows["openrouter"]["ciphertext"], keys[0])
    assert_vault_ok(vault)


def test_one_rejected_key_stores_none_of_the_request(vault, tenant, mock):
    existing = accepted(mock, {"openai": provider_key("openai"),
                               "anthropic": provider_key("anthropic")})
    assert tenant.store(existing).status == 200
    before = tenant.rows()
    keys = accepted(mock, {"openai": provider_key("openai"),
                           "openrouter": provider_key("openrouter")})
    keys["google"] = provider_key("google")             # rejected
    request_id = rid("partial")
    resp = tenant.store(keys, request_id)
    err = assert_error(resp, 400, "invalid_api_key")
    assert err["message"] == (
        "Invalid API key: Key validation failed: google: "
        "API key not valid. Please pass a valid API key."), err
    assert_nothing_stored(vault, tenant, before, request_id)
    assert tenant.has() == {"openai", "anthropic"}


def assert_store_is_502(vault, tenant, mock, keys, provider, behaviour,
                        request_id=None, timeout=10):
    """Storing `keys` (accepted) while `provider` answers with `behaviour`
    is a 502 upstream_error that names no key and stores nothing, after
    `provider` was asked.  Gives the response."""
    accepted(mock, keys)
    mock.behave(provider, behaviour)
    resp = tenant.store(keys, request_id, timeout=timeout)
    assert_error(resp, 502, "upstream_error")
    assert_no_secret(resp.body.decode(), keys.values(), "the error")
    assert len(mock.seen(provider)) >= 1
    assert_nothing_stored(vault, tenant, request_id=request_id)
    return resp


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_answering_5xx_is_502(vault, tenant, mock, provider):
    assert_store_is_502(vault, tenant, mock,
                        {provider: provider_key(provider)}, provider,
                        Fail(500), rid("5xx"))


def test_provider_503_among_accepted_keys_stores_none(vault, tenant, mock):
    assert_store_is_502(vault, tenant, mock, four_keys(), "anthropic",
                        Fail(503))


def test_provider_closing_the_connection_is_502(vault, tenant, mock):
    assert_store_is_502(vault, tenant, mock,
                        {"openrouter": provider_key("openrouter")},
                        "openrouter", Drop())


def test_hanging_provider_is_502_within_the_timeout(vault, tenant, mock):
    started = time.monotonic()
    assert_store_is_502(vault, tenant, mock,
                        {"anthropic": provider_key("anthropic")},
                        "anthropic", Hang(), timeout=30)
    elapsed = time.monotonic() - started
    # upstream_total_timeout is 2 s.
    assert elapsed < 6, "answered after %.1f s" % elapsed
    mock.behave("anthropic", Complete())
    assert tenant.status()["has_anthropic_key"] is False


@pytest.fixture(scope="module")
def far(workdir, pg):
    """Every provider at a port where nothing listens; a pool key set."""
    dead = "http://127.0.0.1:%d" % ks.free_tcp_port()
    config = {"%s_base_url" % p: dead + BASES[p]
              for p in PROVIDERS}
    s = ks.Stack(workdir.subdir("kg"), pg,
                 dbname="far_%d_%d" % (os.getpid(), time.time_ns()),
                 workers=1, upstream_connect_timeout=2,
                 upstream_total_timeout=2,
                 pool_openrouter_key="sk-or-v1-" + secrets.token_hex(32),
                 **config)
    yield s
    s.close()


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_unreachable_provider_is_502(far, provider):
    t = Tenant(far)
    started = time.monotonic()
    resp = t.store({provider: provider_key(provider)})
    assert_error(resp, 502, "upstream_error")
    assert time.monotonic() - started < 6
    assert t.rows() == {}


def test_pool_available_when_a_pool_key_is_configured(far):
    t = Tenant(far)
    resp = far.get(PATH, headers=t.key_headers)
    assert resp.status == 200, resp.body
    assert_status_object(resp.json)
    assert resp.json["pool_available"] is True
    assert far.kg.config["pool_openrouter_key"] not in resp.body.decode()


@pytest.fixture(scope="module")
def outage(workdir, mock):
    """A stack on its own PostgreSQL cluster, which tests may stop.  Each
    test leaves the cluster running."""
    cluster = ks.PgCluster(workdir.subdir("pg"))
    s = ks.Stack(workdir.subdir("kg"), cluster, workers=2,
                 upstream_total_timeout=10, **mock.config())
    yield s
    s.close()
    cluster.close()


def restart_database(stack):
    if not stack.pg.running():
        stack.pg.start()
    ks.wait_until(lambda: stack.get("/health").status == 200, 15,
                  what="/health to answer 200 again")


def test_store_while_database_is_down_is_503_vault_unavailable(outage,
                                                                mock):
    t = Tenant(outage)
    keys = accepted(mock, {"openai": provider_key("openai")})
    outage.pg.stop()
    try:
        resp = t.store(keys)
        err = assert_error(resp, 503, "vault_unavailable")
        assert err["message"] == VAULT_DOWN, err
        assert retry_after_ok(resp), resp.headers
    finally:
        restart_database(outage)
    assert t.rows() == {}
    assert t.has() == set()


def test_status_and_delete_while_database_is_down_are_503(outage, mock):
    t = Tenant(outage)
    assert t.store(accepted(mock, {"openai": provider_key("openai")})
                   ).status == 200
    before = t.rows()
    outage.pg.stop()
    try:
        for resp in (outage.get(PATH, headers=t.key_headers), t.delete()):
            assert_error(resp, 503)
            assert retry_after_ok(resp), resp.headers
    finally:
        restart_database(outage)
    assert t.rows() == before


def test_health_says_vault_unavailable_while_database_is_down(outage):
    outage.pg.stop()
    try:
        resp = outage.get("/health")
        assert resp.status == 503, resp.body
        assert_json_response(resp)
        assert resp.json.get("vault") == "unavailable", resp.json
        assert resp.json.get("database") == "unavailable", resp.json
    finally:
        restart_database(outage)
    assert outage.get("/health").json["vault"] == "connected"


def test_database_lost_during_validation_is_503_and_stores_nothing(outage,
                                                                   mock):
    t = Tenant(outage)
    keys = accepted(mock, {"google": provider_key("google")})
    mock.hold("google")
    result = []
    thread = threading.Thread(target=lambda: result.append(
        t.store(keys, timeout=30)))
    thread.start()
    try:
        mock.wait_for(1, provider="google")
        outage.pg.stop()
        mock.release("google")
        thread.join(30)
        assert result, "no answer"
        resp = result[0]
        err = assert_error(resp, 503, "vault_unavailable")
        assert err["message"] == VAULT_DOWN, err
    finally:
        mock.release()
        thread.join(30)
        restart_database(outage)
    assert t.rows() == {}
    assert t.has() == set()


# ---------------------------------------------------------------------------
# 6. /health and a missing master key

def test_health_says_vault_connected_with_master_keys(vault):
    resp = vault.get("/health")
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json["vault"] == "connected"
    assert resp.json["database"] == "connected"


@pytest.fixture(scope="module")
def keyless(workdir, pg, mock):
    """No master_keys at all (allowed outside production)."""
    s = ks.Stack(workdir.subdir("kg"), pg,
                 dbname="keyless_%d_%d" % (os.getpid(), time.time_ns()),
                 workers=1, master_keys=None, **mock.config())
    yield s
    s.close()


def test_health_says_vault_unavailable_without_master_keys(keyless):
    resp = keyless.get("/health")
    assert resp.status == 200, resp.body
    assert_json_response(resp)
    assert resp.json["vault"] == "unavailable"
    assert resp.json["database"] == "connected"


def test_store_without_master_keys_is_503_vault_unavailable(keyless, mock):
    t = Tenant(keyless)
    keys = accepted(mock, four_keys())
    request_id = rid("keyless")
    resp = t.store(keys, request_id)
    err = assert_error(resp, 503, "vault_unavailable")
    assert err["message"] == VAULT_DOWN, err
    assert_nothing_stored(keyless, t, request_id=request_id)


def test_reencrypt_without_master_keys_is_503(keyless):
    resp = keyless.post(REENCRYPT, headers=auth())
    err = assert_error(resp, 503, "vault_unavailable")
    assert err["message"] == VAULT_DOWN, err
