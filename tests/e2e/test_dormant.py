"""dormant_disable_days: keys unused that long are disabled, and audited."""

import keygate_stack as ks
from keygate_stack import wait_until


def test_long_unused_key_is_disabled_and_audited(make_stack):
    s = make_stack(workers=1, dormant_disable_days=30)
    old = s.post("/v1/api_keys", {"name": "old", "scopes": ["models:read"]},
                 headers=ks.auth())
    fresh = s.post("/v1/api_keys", {"name": "fresh",
                                    "scopes": ["models:read"]},
                   headers=ks.auth())
    assert old.status == 201 and fresh.status == 201
    s.psql("UPDATE api_keys SET last_used_at = now() - interval '40 days', "
           "created_at = now() - interval '50 days' WHERE id = '%s'"
           % old.json["id"])
    # The development key itself was just used, so it stays; restarting
    # the workers makes the next request trigger a sweep.
    s.kg.sighup()
    s.kg.wait_workers()

    def disabled():
        s.get("/health")
        return s.psql("SELECT disabled_at IS NOT NULL FROM api_keys "
                      "WHERE id = '%s'" % old.json["id"]) == [["t"]]
    wait_until(disabled, 10, what="the dormant key to be disabled")

    r = s.get("/v1/auth/whoami", headers=ks.auth(old.json["key"]))
    ks.assert_error(r, 401, "invalid_api_key")
    r = s.get("/v1/auth/whoami", headers=ks.auth(fresh.json["key"]))
    assert r.status == 200
    rows = s.psql("SELECT action, actor, details->>'reason' FROM audit_log "
                  "WHERE target_id = '%s' ORDER BY id" % old.json["id"])
    assert rows == [["api_key.create", "kg_dev_local_default", ""],
                    ["api_key.disable", "keygated", "dormant"]]
    assert s.psql("SELECT count(*) FROM audit_log WHERE target_id = '%s' "
                  "AND action = 'api_key.disable'" % fresh.json["id"]) == \
        [["0"]]



def test_key_used_only_through_verify_is_not_dormant(make_stack):
    s = make_stack(workers=1, dormant_disable_days=30)
    made = {}
    for name in ("verified elsewhere", "unused"):
        r = s.post("/v1/api_keys", {"name": name, "scopes": ["models:read"]},
                   headers=ks.auth())
        assert r.status == 201, r.body
        made[name] = r.json
    s.psql("UPDATE api_keys SET last_used_at = now() - interval '40 days', "
           "created_at = now() - interval '50 days' WHERE id IN ('%s', '%s')"
           % (made["verified elsewhere"]["id"], made["unused"]["id"]))
    kid = made["verified elsewhere"]["id"]
    r = s.post("/v1/keys/verify", {"key": made["verified elsewhere"]["key"]},
               headers=ks.auth())
    assert r.status == 200 and r.json["valid"] is True, r.body

    def recorded():
        s.get("/health")
        return s.psql("SELECT last_used_at > now() - interval '1 minute' "
                      "FROM api_keys WHERE id = '%s'" % kid) == [["t"]]
    wait_until(recorded, 10, what="last_used_at of the verified key")

    # The next sweep disables the unused key and keeps the verified one.
    s.kg.sighup()
    s.kg.wait_workers()

    def swept():
        s.get("/health")
        return s.psql("SELECT disabled_at IS NOT NULL FROM api_keys "
                      "WHERE id = '%s'" % made["unused"]["id"]) == [["t"]]
    wait_until(swept, 10, what="the unused key to be disabled")
    assert s.psql("SELECT disabled_at IS NULL FROM api_keys WHERE id = '%s'"
                  % kid) == [["t"]]
    r = s.get("/v1/auth/whoami",
              headers=ks.auth(made["verified elsewhere"]["key"]))
    assert r.status == 200, r.body
