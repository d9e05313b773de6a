"""Verified keys kept in each worker's memory, and rate limits spent from
memory the workers share: both must give exactly the answers PostgreSQL
would.  Changes made through this keygated reach every worker before the
change is answered (test_api_keys.py covers revoke, rotate and scopes that
way); here, changes made elsewhere (straight in the database, as another
host or keygatectl would, or through another keygated), expiry with no
change at all, and the limits' counts."""

import concurrent.futures
import datetime
import time

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, auth
from keygate_stack import (Host, assert_invalid_key, expect_200,
                           limited_key, mint, on_every_worker)

WHOAMI = "/v1/auth/whoami"


def warm(stack, key):
    """Every worker has verified the key (and so holds it)."""
    on_every_worker(stack, "GET", WHOAMI, auth(key), expect_200)


def all_refuse(stack, key, timeout=2):
    """Waits until a burst is refused everywhere; then every worker must
    refuse it, every time."""
    ks.wait_until(lambda: stack.get(WHOAMI, headers=auth(key)).status == 401,
                  timeout, what="the key to be refused")
    on_every_worker(stack, "GET", WHOAMI, auth(key), assert_invalid_key)


statement_calls = ks.statement_calls
lookups = ks.key_lookups


def test_verified_keys_are_answered_from_memory(make_stack):
    s = make_stack(workers=2)
    key, _ = mint(s, ["api_keys:read"])
    warm(s, key)
    before = lookups(s)
    for _ in range(200):
        assert s.get(WHOAMI, headers=auth(key)).status == 200
    # Not one lookup per request: at most the odd re-read.
    assert lookups(s) - before < 20


@pytest.mark.parametrize("change", [
    "UPDATE api_keys SET revoked_at = now() WHERE id = '{id}'",
    "UPDATE api_keys SET disabled_at = now() WHERE id = '{id}'",
    "UPDATE api_keys SET expires_at = now() - interval '1 s' "
    "WHERE id = '{id}'",
    "DELETE FROM api_keys WHERE id = '{id}'",
    "UPDATE tenants SET active = false WHERE id = "
    "(SELECT tenant_id FROM api_keys WHERE id = '{id}')",
])
def test_a_change_made_in_the_database_reaches_every_worker(make_stack,
                                                            change):
    s = make_stack(workers=3)
    tenant = s.post("/v1/tenants", {"name": "elsewhere"}, headers=auth())
    assert tenant.status == 201, tenant.body
    key, obj = mint(s, ["api_keys:read"], tenant_id=tenant.json["id"])
    warm(s, key)
    s.psql(change.format(id=obj["id"]))
    all_refuse(s, key)


def test_a_role_changed_in_the_database_changes_its_keys(make_stack):
    s = make_stack(workers=3)
    role = s.post("/v1/roles", {"name": "readers",
                                "scopes": ["api_keys:read"]},
                  headers=auth())
    assert role.status == 201, role.body
    key, _ = mint(s, [], role_id=role.json["id"])
    on_every_worker(s, "GET", "/v1/api_keys?limit=1", auth(key), expect_200)
    s.psql("UPDATE roles SET scopes = '{models:read}' WHERE id = '%s'"
           % role.json["id"])
    ks.wait_until(lambda: s.get("/v1/api_keys?limit=1",
                                headers=auth(key)).status == 403, 2,
                  what="the role's new scopes")
    ks.assert_scopes_everywhere(s, key, ["models:read"])


def test_bookkeeping_writes_do_not_empty_the_caches(make_stack):
    """last_used_at is written after use; that is no change to the key."""
    s = make_stack(workers=1)
    key, obj = mint(s, ["api_keys:read"])
    warm(s, key)
    s.psql("UPDATE api_keys SET last_used_at = now() - interval '1 day', "
           "updated_at = now() WHERE id = '%s'" % obj["id"])
    before = lookups(s)
    for _ in range(50):
        assert s.get(WHOAMI, headers=auth(key)).status == 200
    assert lookups(s) - before < 5


def test_a_change_to_one_key_leaves_the_others_cached(make_stack):
    """Only what a change touched is read again: revoking, rotating or
    editing one key, here and straight in the database, costs the other
    keys nothing."""
    s = make_stack(workers=1)
    keys = [mint(s, ["api_keys:read"])[0] for _ in range(30)]
    others = [mint(s, ["api_keys:read"])[1] for _ in range(3)]
    for key in keys:
        assert s.get(WHOAMI, headers=auth(key)).status == 200
    before = lookups(s)
    r = s.request("DELETE", "/v1/api_keys/" + others[0]["id"],
                  headers=auth())
    assert r.status == 200, r.body
    r = s.post("/v1/api_keys/%s/rotate" % others[1]["id"],
               {"grace_seconds": 0}, headers=auth())
    assert r.status == 200, r.body
    s.psql("UPDATE api_keys SET scopes = '{models:read}' WHERE id = '%s'"
           % others[2]["id"])
    time.sleep(0.3)
    for key in keys:
        assert s.get(WHOAMI, headers=auth(key)).status == 200
    # Had everything been dropped, each of the 30 would be read again.
    assert lookups(s) - before < 10


def test_revocation_through_another_keygated_reaches_this_one(make_stack,
                                                              workdir):
    a = make_stack(workers=3)
    b = Host(workdir, a)
    try:
        key, obj = mint(a, ["api_keys:read"])
        warm(a, key)
        for _ in range(12):
            assert b.get(WHOAMI, headers=auth(key)).status == 200
        r = ks.request("DELETE", b.web.url + "/v1/api_keys/" + obj["id"],
                       headers=auth())
        assert r.status == 200, r.body
        # The other host hears of it from PostgreSQL, within a moment.
        started = time.monotonic()
        all_refuse(a, key, timeout=1)
        assert time.monotonic() - started < 5
        for _ in range(12):
            assert_invalid_key(b.get(WHOAMI, headers=auth(key)))
    finally:
        b.close()


def test_a_cached_key_expires_on_time(make_stack):
    s = make_stack(workers=3)
    soon = (datetime.datetime.now(datetime.timezone.utc) +
            datetime.timedelta(seconds=4)).replace(microsecond=0)
    key, _ = mint(s, ["api_keys:read"], expires_at=soon.isoformat())
    warm(s, key)
    time.sleep(max(0.0, soon.timestamp() - time.time()) + 0.2)
    on_every_worker(s, "GET", WHOAMI, auth(key), assert_invalid_key)


def test_a_cached_old_secret_ends_with_its_grace(make_stack):
    s = make_stack(workers=3)
    old, obj = mint(s, ["api_keys:read"])
    warm(s, old)
    r = s.post("/v1/api_keys/%s/rotate" % obj["id"], {"grace_seconds": 3},
               headers=auth())
    assert r.status == 200, r.body
    ends = time.time() + 3
    warm(s, old)
    warm(s, r.json["key"])
    time.sleep(max(0.0, ends - time.time()) + 1.1)
    on_every_worker(s, "GET", WHOAMI, auth(old), assert_invalid_key)
    on_every_worker(s, "GET", WHOAMI, auth(r.json["key"]), expect_200)


# ---------------------------------------------------------------------------
# Limits spent from shared memory, in blocks taken from PostgreSQL

def fresh_window(window, margin=30):
    """Sleeps into the next window when less than `margin` seconds are
    left of this one, so that a burst (slow under the sanitizers) ends in
    the window it started in."""
    left = window - (time.time() % window)
    if left < margin:
        time.sleep(left + 0.2)


def hammer(get, key, n, threads=24):
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(lambda i: get(i, key), range(n)))


def counted(stack, key):
    rows = stack.psql("SELECT coalesce(sum(count), 0) FROM rate_counters "
                      "WHERE subject = (SELECT id::text FROM api_keys "
                      "WHERE key_prefix = '%s')" % key[:16])
    return int(rows[0][0])


def test_a_large_limit_is_exact_on_one_keygated(make_stack):
    s = make_stack(workers=4)
    key = limited_key(s, 500, "2 minutes")
    fresh_window(120)
    results = hammer(lambda i, k: s.get(WHOAMI, headers=auth(k)), key, 700)
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 429]
    assert len(ok) == 500 and len(refused) == 200
    # Each admitted request was told a different remaining count.
    assert sorted(int(r.headers["x-ratelimit-remaining"]) for r in ok) == \
        list(range(500))
    for r in refused:
        assert_error(r, 429, "rate_limit_exceeded")
        assert r.headers["x-ratelimit-remaining"] == "0"
    assert counted(s, key) == 500
    # The counts were taken in blocks, not one statement per request.
    takes = statement_calls(s, "INSERT INTO rate_counters")
    assert 0 < takes < 100, takes


def test_a_large_limit_is_never_exceeded_across_keygateds(make_stack,
                                                          workdir):
    a = make_stack(workers=3)
    b = Host(workdir, a)
    try:
        limit = 400
        key = limited_key(a, limit, "2 minutes")
        fresh_window(120)
        hosts = [a, b]
        results = hammer(lambda i, k: hosts[i % 2].get(
            WHOAMI, headers=auth(k)), key, 1000)
        ok = [r for r in results if r.status == 200]
        assert all(r.status in (200, 429) for r in results)
        # Never more than the limit; at most a block per host less, taken
        # by a host whose requests ended first.
        assert limit - 2 * (limit // 16) <= len(ok) <= limit, len(ok)
        assert counted(a, key) <= limit
        for host in hosts:
            served = [l for l in host.kg.log_lines()
                      if l.get("path") == WHOAMI and l.get("status") == 200]
            assert served, "a host admitted nothing"
    finally:
        b.close()


def fnv1a(text):
    h = 2166136261
    for byte in text.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def test_counters_sharing_a_set_lose_nothing(make_stack):
    """Six subjects whose counters fall in one set of four, used in turn:
    each use pushes another out, and what it took and did not spend goes
    back to its row, so each subject still gets exactly its limit."""
    from test_jwt import bearer, claims, secret_of, token
    limit = 200
    s = make_stack(workers=2, rate_limit_max=limit,
                   rate_limit_window="2 minutes")
    subs, target = [], None
    for i in range(200000):
        sub = "svc-%d" % i
        h = fnv1a("jwt:" + sub) % 4096      # RL_SETS
        if target is None:
            target = h
        if h == target:
            subs.append(sub)
            if len(subs) == 6:
                break
    assert len(subs) == 6
    tokens = [token(secret_of(s), claims(sub=sub, scopes=["models:read"]))
              for sub in subs]
    fresh_window(120)
    admitted = [0] * len(tokens)
    # Five in a row: blocks of 1, 2 and 4 are taken and 2 are left over
    # when the next subject pushes this one out.
    for _ in range(limit // 5 + 2):
        for i, t in enumerate(tokens):
            for _ in range(5):
                r = s.get(WHOAMI, headers=bearer(t))
                assert r.status in (200, 429), r.body
                if r.status == 200:
                    admitted[i] += 1
                    assert int(r.headers["x-ratelimit-remaining"]) == \
                        limit - admitted[i]
    assert admitted == [limit] * len(tokens)
    rows = s.psql("SELECT subject, count FROM rate_counters WHERE subject "
                  "LIKE 'jwt:svc-%' ORDER BY subject")
    assert sorted(rows) == sorted(["jwt:" + sub, str(limit)] for sub in subs)
