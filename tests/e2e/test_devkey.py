"""The development key: seeded only on request and never in production;
while it is active every start says so; production refuses to run with it."""

import keygate_stack as ks


def test_seeded_key_works_and_every_start_warns(make_stack):
    s = make_stack(workers=1)
    r = s.get("/v1/auth/whoami", headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200 and r.json["scopes"] == ["*"]
    assert any("development key is active" in l.get("msg", "")
               for l in s.kg.log_lines())


def test_production_refuses_to_start_with_the_dev_key(pg, fresh_database,
                                                        make_keygated):
    kg = make_keygated(fresh_database, migrate=True,
                       migrate_env={"KEYGATE_SEED_DEV_KEY": "true"})
    # Seeded in development; the same database then run in production.
    kg.rewrite_config(mode="production")
    kg.start(wait=False)
    assert kg.wait(15) == 2
    assert "development key" in kg.log_text()
    assert "refusing to run in mode = production" in kg.log_text()


def test_seeding_is_refused_in_production(pg, fresh_database, make_keygated):
    kg = make_keygated(fresh_database, migrate=True, mode="production")
    p = kg.ctl("seed-dev-key")
    assert p.returncode == 2
    assert "refused in mode = production" in p.stderr
    assert pg.psql("SELECT count(*) FROM api_keys", dbname=fresh_database) \
        == [["0"]]
    # Nor does migrate seed it there.
    p = kg.ctl("migrate", env={"KEYGATE_SEED_DEV_KEY": "true"})
    assert p.returncode == 2
    assert pg.psql("SELECT count(*) FROM api_keys", dbname=fresh_database) \
        == [["0"]]


def test_not_seeded_unless_asked(pg, fresh_database, make_keygated):
    kg = make_keygated(fresh_database, migrate=True, start=True, workers=1)
    assert pg.psql("SELECT count(*) FROM api_keys", dbname=fresh_database) \
        == [["0"]]
    assert not any("development key is active" in l.get("msg", "")
                   for l in kg.log_lines())


DEV_ID = "00000000-0000-0000-0000-000000000010"


def test_dev_key_has_the_fixed_id(make_stack):
    s = make_stack(workers=1)
    r = s.get("/v1/auth/whoami", headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200, r.body
    assert r.json["key_id"] == DEV_ID
    r = s.get("/v1/api_keys/" + DEV_ID, headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200, r.body
    assert r.json["id"] == DEV_ID and r.json["scopes"] == ["*"]


def test_dev_key_revoked_by_its_id_is_seeded_afresh(make_stack):
    s = make_stack(workers=2)
    r = s.request("DELETE", "/v1/api_keys/" + DEV_ID,
                  headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200, r.body
    assert r.json["id"] == DEV_ID and r.json["revoked_at"] is not None
    ks.assert_error(s.get("/v1/auth/whoami", headers=ks.auth(ks.DEV_KEY)),
                    401, "invalid_api_key")

    p = s.kg.ctl("seed-dev-key")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stored the development key" in p.stderr
    assert s.psql("SELECT id, revoked_at IS NULL, scopes::text, tenant_id "
                  "FROM api_keys WHERE key_prefix = 'kg_dev_local_default'") \
        == [[DEV_ID, "t", "{*}", "00000000-0000-0000-0000-000000000001"]]
    r = s.get("/v1/auth/whoami", headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200, r.body
    assert r.json["key_id"] == DEV_ID and r.json["scopes"] == ["*"]
    assert s.psql("SELECT action FROM audit_log WHERE target_id = '%s' "
                  "ORDER BY id" % DEV_ID) == \
        [["api_key.create"], ["api_key.revoke"], ["api_key.create"]]

    # Seeding again while it is usable changes nothing.
    p = s.kg.ctl("seed-dev-key")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "already exists" in p.stderr
    assert s.psql("SELECT count(*) FROM api_keys") == [["1"]]


def test_migrate_seeds_a_fresh_dev_key_after_a_revoke(make_stack):
    s = make_stack(workers=1)
    r = s.request("DELETE", "/v1/api_keys/" + DEV_ID,
                  headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200, r.body
    p = s.kg.ctl("migrate", env={"KEYGATE_SEED_DEV_KEY": "true"})
    assert p.returncode == 0, p.stdout + p.stderr
    r = s.get("/v1/auth/whoami", headers=ks.auth(ks.DEV_KEY))
    assert r.status == 200 and r.json["key_id"] == DEV_ID, r.body
