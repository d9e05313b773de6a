"""What PostgreSQL's time and work are limited to:

- every connection has statement_timeout and lock_timeout
  (database_statement_timeout, database_lock_timeout): a request that
  runs into either gets a 503 with Retry-After, a line in the log, and
  leaves nothing behind;
- a lookup prefix PostgreSQL has no key for is remembered, so made-up
  keys (the checksum is public) cost no query after the first, until a
  key takes that prefix;
- failed authentications are counted per client address and per prefix:
  past auth_failures_max in auth_failures_window, 429 before any
  database work."""

import hashlib
import hmac
import os
import secrets
import uuid
import zlib

import pytest

import keygate_stack as ks
from keygate_stack import DEV_KEY, assert_error, auth

ROOT = "00000000-0000-0000-0000-000000000001"
WHOAMI = "/v1/auth/whoami"
DIGITS = ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
          "abcdefghijklmnopqrstuvwxyz")


def made_up_key():
    """A well-formed key with a valid checksum that nobody issued."""
    body = "kg_live_" + "".join(secrets.choice(DIGITS) for _ in range(43))
    crc, tail = zlib.crc32(body.encode()), ""
    for _ in range(6):
        crc, digit = divmod(crc, 62)
        tail = DIGITS[digit] + tail
    return body + tail


def new_tenant(stack):
    tid = str(uuid.uuid4())
    stack.psql("INSERT INTO tenants (id, parent_id, name, path) SELECT "
               "'%s', id, 'e2e-db', path || '%s'::uuid FROM tenants "
               "WHERE id = '%s'" % (tid, tid, ROOT))
    return tid


def create_key(stack, tenant, request_id):
    return stack.post("/v1/api_keys", {"tenant_id": tenant,
                                       "scopes": ["models:read"]},
                      headers=dict(auth(DEV_KEY),
                                   **{"X-Request-Id": request_id}))


def count(stack, sql):
    return int(stack.pg.scalar(sql, dbname=stack.dbname))


@pytest.mark.parametrize("limit,sqlstate", [
    ({"database_lock_timeout": "1 second",
      "database_statement_timeout": "1 hour"}, "55P03"),
    ({"database_lock_timeout": "1 hour",
      "database_statement_timeout": "1 second"}, "57014"),
])
def test_a_held_row_answers_503_within_the_timeout(make_stack, limit,
                                                   sqlstate):
    s = make_stack(workers=1, **limit)
    tenant = new_tenant(s)
    request_id = "e2e-db-" + secrets.token_hex(6)
    lock = s.pg.hold_rows("tenants", "id = '%s'" % tenant, dbname=s.dbname)
    try:
        resp = create_key(s, tenant, request_id)
    finally:
        lock.release()
    assert_error(resp, 503, "database_unavailable")
    assert int(resp.headers["retry-after"]) > 0
    assert count(s, "SELECT count(*) FROM api_keys WHERE tenant_id = '%s'"
                 % tenant) == 0
    assert count(s, "SELECT count(*) FROM audit_log WHERE request_id = "
                 "'%s'" % request_id) == 0
    lines = [line for line in s.kg.log_text().splitlines()
             if "SQLSTATE %s" % sqlstate in line]
    assert lines and "/v1/api_keys" in lines[0], s.kg.log_text()[-2000:]
    # The connection is still good: the same request now succeeds.
    assert create_key(s, tenant, request_id + "-again").status == 201


def test_unknown_prefixes_cost_no_query_until_a_key_takes_one(make_stack):
    s = make_stack(workers=1)
    bogus = made_up_key()
    assert_error(s.get(WHOAMI, headers=auth(bogus)), 401, "invalid_api_key")
    before = ks.key_lookups(s)
    for _ in range(30):
        assert_error(s.get(WHOAMI, headers=auth(bogus)), 401,
                     "invalid_api_key")
    assert ks.key_lookups(s) == before
    # A key with that prefix appears (as keygatectl or another host would
    # make it): the next request finds it.
    digest = hmac.new(s.kg.config["hmac_secret"].encode(), bogus.encode(),
                      hashlib.sha256).hexdigest()
    s.psql("INSERT INTO api_keys (tenant_id, key_prefix, key_hash, last4, "
           "scopes) VALUES ('%s', '%s', decode('%s', 'hex'), '%s', "
           "'{models:read}')" % (ROOT, bogus[:16], digest, bogus[-4:]))
    ks.wait_until(lambda: s.get(WHOAMI, headers=auth(bogus)).status == 200,
                  10, what="the new key to be found")


def test_failed_authentications_are_limited(make_stack):
    s = make_stack(workers=2, auth_failures_max=5,
                   auth_failures_window="1 day")
    good = s.kg.ctl("create-key", "--name", "good", "--scopes", "*")
    assert good.returncode == 0, good.stderr
    for _ in range(5):
        assert_error(s.get(WHOAMI, headers=auth(made_up_key())), 401,
                     "invalid_api_key")
    before = ks.key_lookups(s)
    for key in (made_up_key(), "not-a-key", good.stdout.strip()):
        resp = s.get(WHOAMI, headers=auth(key))
        err = assert_error(resp, 429, "rate_limit_exceeded")
        assert "failed authentications" in err["message"]
        assert 0 < int(resp.headers["retry-after"]) <= 86400
    assert ks.key_lookups(s) == before


def worker_peak_kib(stack):
    (pid,) = stack.kg.wait_workers(1)
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for worker %d" % pid)


def test_export_streams_in_bounded_memory(make_stack):
    """A subtree's export far larger than a worker's memory grows by."""
    # A sanitizer build keeps freed memory aside for a while (its
    # quarantine); measured here is keygated's use, not that.
    asan = os.environ.get("ASAN_OPTIONS", "")
    s = make_stack(workers=1, env={"ASAN_OPTIONS": (
        asan + ":" if asan else "") + "quarantine_size_mb=0"})
    tenant = new_tenant(s)
    rows = 30000
    s.psql("INSERT INTO usage (tenant_id, request_id, provider, model, "
           "key_source) SELECT '%s', 'e2e-export-' || n, 'openai', "
           "repeat('m', 1000), 'user' FROM generate_series(1, %d) n"
           % (tenant, rows))
    path = "/v1/tenants/%s/export" % tenant
    # Once small, so that what every request needs is already counted.
    assert s.get("/v1/tenants/%s/export" % new_tenant(s),
                 headers=auth(DEV_KEY), timeout=60).status == 200
    before = worker_peak_kib(s)
    resp = s.get(path, headers=auth(DEV_KEY), timeout=120)
    assert resp.status == 200, resp.body[:300]
    assert len(resp.body) > 30 * 1024 * 1024
    assert resp.json["tenant_id"] == tenant
    assert len(resp.json["usage"]) == rows
    assert [t["id"] for t in resp.json["tenants"]] == [tenant]
    grown = worker_peak_kib(s) - before
    assert grown < 8 * 1024, "the worker grew by %d KiB" % grown
