"""The audit log: append-only in the database, hash-chained, and checked by
`keygatectl audit-verify`, which names the first bad row."""

import pytest

import keygate_stack as ks


def make_keys(stack, n):
    for i in range(n):
        r = stack.post("/v1/api_keys", {"name": "a%d" % i,
                                        "scopes": ["models:read"]},
                       headers=ks.auth())
        assert r.status == 201, r.body
    return [int(x[0]) for x in stack.psql(
        "SELECT id FROM audit_log ORDER BY id")]


def verify(stack):
    return stack.kg.ctl("audit-verify")


def tamper(stack, sql):
    """Runs sql with the append-only triggers out of the way, as someone
    with direct database access could."""
    stack.psql("ALTER TABLE audit_log DISABLE TRIGGER USER; " + sql +
               "; ALTER TABLE audit_log ENABLE TRIGGER USER")


@pytest.fixture
def audited(make_stack):
    s = make_stack(workers=2)
    ids = make_keys(s, 5)
    assert len(ids) >= 5
    return s, ids


def test_clean_log_verifies(audited):
    s, ids = audited
    p = verify(s)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "audit log intact: %d rows" % len(ids) in p.stdout


def test_update_and_delete_are_refused(audited):
    s, ids = audited
    with pytest.raises(ks.StackError, match="append-only"):
        s.psql("UPDATE audit_log SET action = 'x' WHERE id = %d" % ids[1])
    with pytest.raises(ks.StackError, match="append-only"):
        s.psql("DELETE FROM audit_log WHERE id = %d" % ids[1])
    with pytest.raises(ks.StackError, match="append-only"):
        s.psql("TRUNCATE audit_log")
    assert s.psql("SELECT count(*) FROM audit_log") == [[str(len(ids))]]


def test_edited_row_is_named(audited):
    s, ids = audited
    tamper(s, "UPDATE audit_log SET action = 'api_key.revoke' "
              "WHERE id = %d" % ids[2])
    p = verify(s)
    assert p.returncode == 1
    assert "broken at row %d" % ids[2] in p.stdout
    assert "edited" in p.stdout


def test_deleted_row_is_found(audited):
    s, ids = audited
    tamper(s, "DELETE FROM audit_log WHERE id = %d" % ids[2])
    p = verify(s)
    assert p.returncode == 1
    # The row after the gap no longer follows the one before it.
    assert "broken at row %d" % ids[3] in p.stdout
    assert "removed" in p.stdout


def test_reordered_rows_are_found(audited):
    s, ids = audited
    a, b = ids[1], ids[3]
    # Swap two rows' contents, hashes and all, keeping their ids.
    tamper(s, """
        CREATE TEMP TABLE sw AS SELECT * FROM audit_log
            WHERE id IN (%(a)d, %(b)d);
        UPDATE audit_log t SET created_at = o.created_at,
            tenant_id = o.tenant_id, actor_key_id = o.actor_key_id,
            actor = o.actor, action = o.action, target_type = o.target_type,
            target_id = o.target_id, request_id = o.request_id,
            client_addr = o.client_addr, details = o.details,
            prev_hash = o.prev_hash, row_hash = o.row_hash
        FROM sw o WHERE (t.id, o.id) IN ((%(a)d, %(b)d), (%(b)d, %(a)d))
    """ % {"a": a, "b": b})
    p = verify(s)
    assert p.returncode == 1
    assert "broken at row %d" % a in p.stdout


def test_chain_links_every_row_to_the_one_before(audited):
    s, ids = audited
    rows = s.psql("SELECT id, encode(prev_hash, 'hex'), "
                  "encode(row_hash, 'hex') FROM audit_log ORDER BY id")
    assert rows[0][1] == ""
    for prev, cur in zip(rows, rows[1:]):
        assert cur[1] == prev[2]
    assert len({r[2] for r in rows}) == len(rows)


# ---------------------------------------------------------------------------
# A head signed with hmac_secret, kept outside the database

def head(stack):
    p = stack.kg.ctl("audit-head")
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip()


REBUILD_CHAIN = """
    DO $$
    DECLARE r audit_log; last bytea := '\\x'::bytea;
    BEGIN
        FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
            UPDATE audit_log SET prev_hash = last,
                row_hash = audit_row_hash(last, r) WHERE id = r.id;
            SELECT row_hash INTO last FROM audit_log WHERE id = r.id;
        END LOOP;
    END $$"""


def test_a_signed_head_verifies(audited):
    s, ids = audited
    signed = head(s)
    assert signed.split(":")[0] == str(ids[-1])
    make_keys(s, 2)
    p = s.kg.ctl("audit-verify", "--head", signed)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "audit log intact" in p.stdout and "signed head" in p.stdout


def test_removed_newest_rows_are_found_with_the_head(audited):
    s, ids = audited
    signed = head(s)
    tamper(s, "DELETE FROM audit_log WHERE id >= %d" % ids[-2])
    # The shorter chain is intact by itself ...
    assert verify(s).returncode == 0
    # ... but not with the head taken before.
    p = s.kg.ctl("audit-verify", "--head", signed)
    assert p.returncode == 1, p.stdout
    assert "broken at row %d" % ids[-1] in p.stdout
    assert "removed" in p.stdout


def test_a_rebuilt_chain_is_found_with_the_head(audited):
    """Whoever holds the database password can edit a row and rebuild
    every hash after it; not sign a head for the result."""
    s, ids = audited
    signed = head(s)
    tamper(s, "UPDATE audit_log SET action = 'api_key.revoke' WHERE id = %d"
           % ids[1] + ";" + REBUILD_CHAIN)
    assert verify(s).returncode == 0
    p = s.kg.ctl("audit-verify", "--head", signed)
    assert p.returncode == 1, p.stdout
    assert "rewritten" in p.stdout
    forged = head(s)
    other = s.kg.ctl("audit-verify", "--head", forged[:-1] + (
        "0" if forged[-1] != "0" else "1"))
    assert other.returncode == 1 and "signature" in other.stdout
