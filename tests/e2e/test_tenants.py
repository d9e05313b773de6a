"""Tenants, roles and the audit-log listing: a key reaches its own tenant and
the tenants below it, in every route; anything else answers 404."""

import concurrent.futures
import json
import time

import pytest

import keygate_stack as ks

ROOT = "00000000-0000-0000-0000-000000000001"


class World:
    """Tenants A and B under the root, C under A; in each an admin key
    (scope *), a plain key and a role."""

    def __init__(self, stack):
        self.s = stack
        self.t = {}
        self.admin = {}
        self.plain = {}
        self.role = {}
        for name, parent in (("A", ROOT), ("B", ROOT), ("C", None)):
            parent = parent or self.t["A"]
            r = stack.post("/v1/tenants", {"name": "tenant-" + name,
                                           "parent_id": parent},
                           headers=ks.auth())
            assert r.status == 201, r.body
            assert r.json["parent_id"] == parent
            self.t[name] = r.json["id"]
        for name, tid in self.t.items():
            self.admin[name] = self.key(ks.DEV_KEY, tid, ["*"])["key"]
            self.plain[name] = self.key(ks.DEV_KEY, tid, ["models:read"])
            r = stack.post("/v1/roles", {"name": "ops", "scopes":
                                         ["api_keys:read"]},
                           headers=ks.auth(self.admin[name]))
            assert r.status == 201, r.body
            assert r.json["tenant_id"] == tid
            self.role[name] = r.json["id"]

    def key(self, actor, tenant, scopes):
        r = self.s.post("/v1/api_keys", {"tenant_id": tenant,
                                         "scopes": scopes},
                        headers=ks.auth(actor))
        assert r.status == 201, r.body
        return r.json

    def snapshot(self, name):
        """Everything of a tenant's subtree but the keys' last_used_at: a
        worker writes that after a later response, at most once a second,
        so a key used before the snapshot may get it at any moment."""
        tid = self.t[name]
        return self.s.psql(
            "SELECT (SELECT json_agg(t ORDER BY id) FROM tenants t "
            "WHERE '%s' = ANY(path))::text, (SELECT json_agg("
            "to_jsonb(k) - 'last_used_at' ORDER BY id) "
            "FROM api_keys k WHERE tenant_id = '%s')::text, "
            "(SELECT json_agg(r ORDER BY id) FROM roles r "
            "WHERE tenant_id = '%s')::text" % (tid, tid, tid))


@pytest.fixture(scope="module")
def world(workdir, pg):
    s = ks.Stack(workdir.subdir("kg"), pg, dbname="tenants_%d" %
                 time.time_ns(), workers=3)
    yield World(s)
    s.close()


# Routes that name another tenant's object, and a body where one is needed.
def foreign_requests(w, target):
    key = w.plain[target]["id"]
    tid = w.t[target]
    role = w.role[target]
    return [
        ("GET", "/v1/api_keys/%s" % key, None),
        ("PATCH", "/v1/api_keys/%s" % key, {"name": "x"}),
        ("DELETE", "/v1/api_keys/%s" % key, None),
        ("POST", "/v1/api_keys/%s/rotate" % key, None),
        ("PUT", "/v1/api_keys/%s/role" % key, {"role_id": role}),
        ("DELETE", "/v1/api_keys/%s/role" % key, None),
        ("GET", "/v1/tenants/%s" % tid, None),
        ("PATCH", "/v1/tenants/%s" % tid, {"name": "x"}),
        ("DELETE", "/v1/tenants/%s" % tid, None),
        ("GET", "/v1/tenants/%s/export" % tid, None),
        ("POST", "/v1/tenants/%s/purge" % tid, None),
        ("GET", "/v1/roles/%s" % role, None),
        ("PATCH", "/v1/roles/%s" % role, {"name": "x"}),
        ("DELETE", "/v1/roles/%s" % role, None),
        ("POST", "/v1/api_keys", {"tenant_id": tid, "scopes": ["*"]}),
        ("POST", "/v1/tenants", {"name": "x", "parent_id": tid}),
        ("GET", "/v1/api_keys?tenant_id=%s" % tid, None),
    ]


@pytest.mark.parametrize("actor,target", [("A", "B"), ("C", "A"),
                                          ("C", "B"), ("B", "C")])
def test_outside_the_subtree_is_404_and_changes_nothing(world, actor,
                                                        target):
    before = world.snapshot(target)
    for method, path, body in foreign_requests(world, target):
        r = world.s.request(method, path, body,
                            headers=ks.auth(world.admin[actor]))
        ks.assert_error(r, 404, "not_found")
    assert world.snapshot(target) == before


def test_inside_the_subtree_is_reachable(world):
    a = ks.auth(world.admin["A"])
    for method, path, _ in foreign_requests(world, "C"):
        if method == "GET":
            r = world.s.request(method, path, headers=a)
            assert r.status == 200, (path, r.body)


def test_listings_show_only_the_subtree(world):
    a = ks.auth(world.admin["A"])
    tenants = world.s.get("/v1/tenants?limit=100", headers=a).json["data"]
    assert {t["id"] for t in tenants} == {world.t["A"], world.t["C"]}
    keys = world.s.get("/v1/api_keys?limit=100", headers=a).json["data"]
    assert {k["tenant_id"] for k in keys} == {world.t["A"], world.t["C"]}
    roles = world.s.get("/v1/roles?limit=100", headers=a).json["data"]
    ids = {r["id"] for r in roles}
    assert world.role["A"] in ids and world.role["C"] in ids
    assert world.role["B"] not in ids
    assert {"reader", "writer", "admin"} <= {r["name"] for r in roles}
    logs = world.s.get("/v1/audit_logs?limit=100", headers=a).json["data"]
    assert logs and {l["tenant_id"] for l in logs} <= {world.t["A"],
                                                       world.t["C"]}
    ids = [int(l["id"]) for l in logs]
    assert ids == sorted(ids, reverse=True)


def test_names_are_data_not_patterns(world):
    made = {}
    for name in ("acme", "acme2", "a_%", "ab%"):
        r = world.s.post("/v1/tenants", {"name": name}, headers=ks.auth())
        assert r.status == 201
        made[name] = r.json["id"]
    keys = {n: world.key(ks.DEV_KEY, tid, ["*"])["key"]
            for n, tid in made.items()}
    for name, key in keys.items():
        seen = world.s.get("/v1/tenants?limit=100",
                           headers=ks.auth(key)).json["data"]
        assert [t["id"] for t in seen] == [made[name]], name


def test_role_assignment_changes_a_key_on_every_worker(world):
    k = world.key(world.admin["A"], world.t["A"], ["models:read"])
    headers = ks.auth(k["key"])

    def statuses():
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            return set(ex.map(lambda _: world.s.get(
                "/v1/api_keys", headers=headers).status, range(24)))
    assert statuses() == {403}
    r = world.s.request("PUT", "/v1/api_keys/%s/role" % k["id"],
                        {"role_id": world.role["A"]},
                        headers=ks.auth(world.admin["A"]))
    assert r.status == 200, r.body
    assert r.json["role_id"] == world.role["A"]
    assert r.json["effective_scopes"] == ["api_keys:read"]
    assert statuses() == {200}
    r = world.s.request("DELETE", "/v1/api_keys/%s/role" % k["id"],
                        headers=ks.auth(world.admin["A"]))
    assert r.status == 200 and r.json["role_id"] is None
    assert statuses() == {403}
    actions = world.s.psql("SELECT action FROM audit_log WHERE target_id "
                           "= '%s' ORDER BY id" % k["id"])
    assert actions == [["api_key.create"], ["api_key.role_assign"],
                       ["api_key.role_remove"]]


def test_changing_a_role_reaches_its_keys(world):
    k = world.key(world.admin["A"], world.t["A"], ["models:read"])
    r = world.s.post("/v1/roles", {"name": "viewer", "scopes":
                                   ["models:read"]},
                     headers=ks.auth(world.admin["A"]))
    role = r.json["id"]
    assert world.s.request("PUT", "/v1/api_keys/%s/role" % k["id"],
                           {"role_id": role},
                           headers=ks.auth(world.admin["A"])).status == 200
    assert world.s.get("/v1/api_keys", headers=ks.auth(k["key"])).status \
        == 403
    r = world.s.request("PATCH", "/v1/roles/%s" % role,
                        {"scopes": ["models:read", "api_keys:read"]},
                        headers=ks.auth(world.admin["A"]))
    assert r.status == 200, r.body
    assert world.s.get("/v1/api_keys", headers=ks.auth(k["key"])).status \
        == 200
    # An assigned role cannot be deleted.
    r = world.s.request("DELETE", "/v1/roles/%s" % role,
                        headers=ks.auth(world.admin["A"]))
    ks.assert_error(r, 409, "conflict")


def test_no_role_or_key_beyond_its_creator(world):
    limited = world.key(world.admin["A"], world.t["A"],
                        ["roles:write", "roles:read", "api_keys:write"])
    h = ks.auth(limited["key"])
    r = world.s.post("/v1/roles", {"name": "boss", "scopes": ["*"]},
                     headers=h)
    ks.assert_error(r, 403, "insufficient_permissions")
    r = world.s.post("/v1/roles", {"name": "ok", "scopes": ["roles:read"]},
                     headers=h)
    assert r.status == 201
    # A key with api_keys:write cannot take the admin role it lacks.
    admin_role = [x for x in world.s.get(
        "/v1/roles?limit=100", headers=ks.auth()).json["data"]
        if x["name"] == "admin"][0]["id"]
    target = world.key(world.admin["A"], world.t["A"], ["models:read"])
    r = world.s.request("PUT", "/v1/api_keys/%s/role" % target["id"],
                        {"role_id": admin_role}, headers=h)
    ks.assert_error(r, 403, "insufficient_permissions")
    # Built-in roles cannot be changed.
    r = world.s.request("PATCH", "/v1/roles/%s" % admin_role,
                        {"scopes": ["models:read"]}, headers=ks.auth())
    ks.assert_error(r, 403, "insufficient_permissions")


def test_export_has_metadata_but_no_secret(world):
    r = world.s.get("/v1/tenants/%s/export" % world.t["A"],
                    headers=ks.auth(world.admin["A"]))
    assert r.status == 200, r.body
    doc = r.json
    assert {t["id"] for t in doc["tenants"]} == {world.t["A"], world.t["C"]}
    ids = {k["id"] for k in doc["api_keys"]}
    assert world.plain["A"]["id"] in ids and world.plain["C"]["id"] in ids
    assert world.plain["B"]["id"] not in ids
    text = r.body.decode()
    for secret in (world.admin["A"], world.admin["C"],
                   world.plain["A"]["key"]):
        assert secret not in text
    assert "key_hash" not in text and "ciphertext" not in text
    assert doc["audit_log"]


def test_purge_removes_the_subtree_and_nothing_else(world):
    r = world.s.post("/v1/tenants", {"name": "doomed"}, headers=ks.auth())
    doomed = r.json["id"]
    r = world.s.post("/v1/tenants", {"name": "doomed-child",
                                     "parent_id": doomed}, headers=ks.auth())
    child = r.json["id"]
    k = world.key(ks.DEV_KEY, child, ["models:read"])
    before_b = world.snapshot("B")
    r = world.s.post("/v1/tenants/%s/purge" % doomed, headers=ks.auth())
    assert r.status == 200, r.body
    assert r.json["deleted"]["tenants"] == 2
    assert r.json["deleted"]["api_keys"] == 1
    assert world.s.psql("SELECT count(*) FROM tenants WHERE id IN "
                        "('%s', '%s')" % (doomed, child)) == [["0"]]
    assert world.s.get("/v1/auth/whoami",
                       headers=ks.auth(k["key"])).status == 401
    assert world.snapshot("B") == before_b
    # The audit trail of the purged tenants stays, ids only.
    rows = world.s.psql("SELECT action FROM audit_log WHERE target_id = "
                        "'%s' ORDER BY id" % doomed)
    assert rows == [["tenant.create"], ["tenant.purge"]]
    assert world.s.kg.ctl("audit-verify").returncode == 0


def test_deleting_a_tenant_stops_its_keys(world):
    r = world.s.post("/v1/tenants", {"name": "paused"}, headers=ks.auth())
    tid = r.json["id"]
    k = world.key(ks.DEV_KEY, tid, ["models:read"])
    assert world.s.get("/v1/auth/whoami",
                       headers=ks.auth(k["key"])).status == 200
    r = world.s.request("DELETE", "/v1/tenants/%s" % tid, headers=ks.auth())
    assert r.status == 200 and r.json["active"] is False
    assert world.s.get("/v1/auth/whoami",
                       headers=ks.auth(k["key"])).status == 401
    # A key cannot remove its own tenant.
    r = world.s.request("DELETE", "/v1/tenants/%s" % world.t["A"],
                        headers=ks.auth(world.admin["A"]))
    ks.assert_error(r, 409, "conflict")


def test_audit_log_filters_and_cursor(world):
    a = ks.auth(world.admin["A"])
    r = world.s.get("/v1/audit_logs?action=role.create&limit=1", headers=a)
    assert r.status == 200
    assert [l["action"] for l in r.json["data"]] == ["role.create"]
    seen = []
    cursor = None
    for _ in range(50):
        q = "/v1/audit_logs?limit=2" + ("&cursor=" + cursor if cursor
                                        else "")
        page = world.s.get(q, headers=a).json
        seen += [l["id"] for l in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    full = world.s.get("/v1/audit_logs?limit=100", headers=a).json["data"]
    assert seen == [l["id"] for l in full]
    r = world.s.get("/v1/audit_logs?target_id=%s" % world.plain["C"]["id"],
                    headers=a)
    assert [l["action"] for l in r.json["data"]] == ["api_key.create"]
    ks.assert_error(world.s.get("/v1/audit_logs?since=yesterday",
                                headers=a), 400)
    r = world.s.get("/v1/audit_logs?since=2999-01-01T00:00:00Z", headers=a)
    assert r.json["data"] == []
