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


def assert_broken_at(stack, row, *words):
    """audit-verify fails, naming `row` as where the chain breaks and
    saying each of `words`."""
    p = verify(stack)
    assert p.returncode == 1, p.stdout
    assert "broken at row %d" % row in p.stdout
    for word in words:
        assert word in p.stdout


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
    assert_broken_at(s, ids[2], "edited")


def test_deleted_row_is_found(audited):
    s, ids = audited
    tamper(s, "DELETE FROM audit_log WHERE id = %d" % ids[2])
    # The row after the gap no longer follows the one before it.
    assert_broken_at(s, ids[3], "removed")


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
    assert_broken_at(s, a)


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


def rebuild(row_hash):
    """A DO block writing every row's hash again, in id order, as
    `row_hash` computes it from `last` (the previous hash) and `r`."""
    return """
    DO $$
    DECLARE r audit_log; last bytea := '\\x'::bytea;
    BEGIN
        FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
            UPDATE audit_log SET prev_hash = last,
                row_hash = %s WHERE id = r.id;
            SELECT row_hash INTO last FROM audit_log WHERE id = r.id;
        END LOOP;
    END $$""" % row_hash


REBUILD_CHAIN = rebuild("audit_row_hash(last, r)")


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


def with_key(stack, sql):
    """sql in a session given the audit key, as keygated's sessions are:
    what someone holding hmac_secret as well as database access can do."""
    setting, _ = ks.audit_key(stack.kg.config["hmac_secret"])
    return "SELECT set_config('keygate.audit_key', '%s', false); %s" % (
        setting, sql)


def test_a_rebuilt_chain_is_found_with_the_head(audited):
    """Whoever holds hmac_secret and the database password can edit a row
    and rebuild every keyed hash after it; not sign a head that the
    operator kept from before."""
    s, ids = audited
    signed = head(s)
    tamper(s, with_key(s, "UPDATE audit_log SET action = 'api_key.revoke' "
                       "WHERE id = %d" % ids[1] + ";" + REBUILD_CHAIN))
    assert verify(s).returncode == 0
    p = s.kg.ctl("audit-verify", "--head", signed)
    assert p.returncode == 1, p.stdout
    assert "rewritten" in p.stdout
    forged = head(s)
    other = s.kg.ctl("audit-verify", "--head", forged[:-1] + (
        "0" if forged[-1] != "0" else "1"))
    assert other.returncode == 1 and "signature" in other.stdout


# ---------------------------------------------------------------------------
# The chain is keyed: a hash needs a secret the database does not hold

# What the chain was before it was keyed, and what anyone who can write the
# table can compute: SHA-256 over the previous hash and the row.
PLAIN_TEXT = """convert_to(concat_ws(E'\\x1f', r.id::text,
    to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    coalesce(r.tenant_id::text, ''), coalesce(r.actor_key_id::text, ''),
    r.actor, r.action, r.target_type, r.target_id, r.request_id,
    r.client_addr, r.details::text), 'UTF8')"""

REBUILD_PLAIN = rebuild("sha256(last || %s)" % PLAIN_TEXT)


def test_each_row_hash_is_an_hmac_under_a_key_derived_from_hmac_secret(
        audited):
    s, ids = audited
    _, key = ks.audit_key(s.kg.config["hmac_secret"])
    rows = s.psql("SELECT encode(prev_hash, 'hex'), encode(row_hash, 'hex'), "
                  "encode(%s, 'hex') FROM audit_log r ORDER BY id"
                  % PLAIN_TEXT)
    assert len(rows) == len(ids)
    for prev, row_hash, text in rows:
        msg = bytes.fromhex(prev) + bytes.fromhex(text)
        assert row_hash == ks.hmac.new(key, msg, ks.hashlib.sha256).hexdigest()
        assert row_hash != ks.hashlib.sha256(msg).hexdigest()


def test_a_chain_rebuilt_without_the_key_is_found(audited):
    """Whoever holds only the database password edits a row and rebuilds
    every hash after it, as the unkeyed chain allowed: audit-verify names
    the first row, with no head needed."""
    s, ids = audited
    tamper(s, "UPDATE audit_log SET action = 'api_key.revoke' WHERE id = %d"
           % ids[2] + ";" + REBUILD_PLAIN)
    assert_broken_at(s, ids[0], "edited")


def test_a_session_without_the_key_cannot_append(audited):
    s, ids = audited
    insert = ("INSERT INTO audit_log (actor, action) VALUES "
              "('intruder', 'api_key.create')")
    with pytest.raises(ks.StackError, match="no audit key"):
        s.psql(insert)
    assert s.psql("SELECT count(*) FROM audit_log") == [[str(len(ids))]]
    # With a key of its own making, the row goes in and is named.
    wrong, _ = ks.audit_key("not the secret")
    s.psql("SELECT set_config('keygate.audit_key', '%s', false); %s"
           % (wrong, insert))
    p = verify(s)
    assert p.returncode == 1, p.stdout
    last = int(s.psql("SELECT max(id) FROM audit_log")[0][0])
    assert "broken at row %d" % last in p.stdout and "edited" in p.stdout
    # keygated still appends after it, and the verdict stays on that row.
    make_keys(s, 1)
    assert "broken at row %d" % last in verify(s).stdout


def test_the_audit_key_is_in_no_query_text_or_log(audited):
    s, ids = audited
    setting, key = ks.audit_key(s.kg.config["hmac_secret"])
    s.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    text = "\n".join(",".join(r) for r in s.psql(
        "SELECT query FROM pg_stat_activity UNION ALL "
        "SELECT query FROM pg_stat_statements"))
    assert "set_config($1, $2" in text  # the statement is seen ...
    assert setting not in text and key.hex() not in text  # ... not the key
    with open(s.pg.logfile, errors="replace") as f:
        pglog = f.read()
    assert setting not in pglog and setting not in s.kg.log_text()


# ---------------------------------------------------------------------------
# Upgrading: the rows written before the chain was keyed

KEYED_SINCE = 11


def migrated_before_keying(workdir, pg, name):
    """A database at the version before the keyed chain, with three rows
    chained the old way; returns its Keygated (not started)."""
    old = workdir.subdir("sql")
    for path in ks.glob.glob(ks.os.path.join(ks.SQL_DIR, "*.sql")):
        if int(ks.os.path.basename(path)[:4]) < KEYED_SINCE:
            ks.shutil.copy(path, old)
    pg.create_database(name)
    kg = ks.Keygated(workdir.subdir("kg"), pg.conninfo_for(name),
                     migrate=True, start=False, sql_dir=old)
    for i in range(3):
        p = kg.ctl("create-key", "--name", "old%d" % i, "--scopes",
                   "models:read")
        assert p.returncode == 0, p.stderr
    return kg


def plain_chain_ok(pg, name):
    rows = pg.psql("SELECT encode(prev_hash, 'hex'), encode(row_hash, "
                   "'hex'), encode(%s, 'hex') FROM audit_log r ORDER BY id"
                   % PLAIN_TEXT, dbname=name)
    last = ""
    for prev, row_hash, text in rows:
        if prev != last or row_hash != ks.hashlib.sha256(
                bytes.fromhex(prev + text)).hexdigest():
            return False
        last = row_hash
    return len(rows) > 0


def test_upgrading_rekeys_the_rows_already_written(workdir, pg):
    name = "audit_upgrade_%d" % ks.os.getpid()
    kg = migrated_before_keying(workdir, pg, name)
    try:
        assert plain_chain_ok(pg, name)
        before = pg.psql("SELECT id, action, target_id FROM audit_log "
                         "ORDER BY id", dbname=name)
        kg.rewrite_config(sql_dir=ks.SQL_DIR)
        p = kg.migrate()
        assert p.returncode == 0, p.stderr
        assert "0011-keyed-audit.sql" in p.stdout
        assert pg.psql("SELECT id, action, target_id FROM audit_log "
                       "ORDER BY id", dbname=name) == before
        assert not plain_chain_ok(pg, name)
        p = kg.ctl("audit-verify")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "audit log intact: 3 rows" in p.stdout
    finally:
        kg.close()


def test_upgrading_refuses_to_rekey_a_broken_log(workdir, pg):
    name = "audit_broken_%d" % ks.os.getpid()
    kg = migrated_before_keying(workdir, pg, name)
    try:
        second = int(pg.psql("SELECT id FROM audit_log ORDER BY id "
                             "OFFSET 1 LIMIT 1", dbname=name)[0][0])
        pg.psql("ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE "
                "audit_log SET action = 'api_key.revoke' WHERE id = %d; "
                "ALTER TABLE audit_log ENABLE TRIGGER USER" % second,
                dbname=name)
        hashes = pg.psql("SELECT row_hash FROM audit_log ORDER BY id",
                         dbname=name)
        kg.rewrite_config(sql_dir=ks.SQL_DIR)
        p = kg.migrate()
        assert p.returncode == 1
        assert "0011-keyed-audit.sql failed, nothing of it was applied" in (
            p.stderr)
        assert "broken at row %d" % second in p.stderr
        assert "not re-keyed" in p.stderr
        assert pg.psql("SELECT max(version) FROM schema_migrations",
                       dbname=name) == [[str(KEYED_SINCE - 1)]]
        assert pg.psql("SELECT row_hash FROM audit_log ORDER BY id",
                       dbname=name) == hashes
    finally:
        kg.close()


# ---------------------------------------------------------------------------
# An owner of its own: keygate's role may only read and append

def test_the_audit_log_can_belong_to_a_role_keygate_cannot_act_as(workdir,
                                                                   pg):
    n = ks.os.getpid()
    app, owner, name = "kg_app_%d" % n, "kg_audit_%d" % n, "audit_own_%d" % n
    pg.psql('CREATE ROLE "%s" LOGIN; CREATE ROLE "%s" NOLOGIN' % (app, owner),
            dbname="postgres")
    pg.psql('CREATE DATABASE "%s" OWNER "%s"' % (name, app),
            dbname="postgres")
    as_app = pg.conninfo_for(name).replace("user=postgres", "user=" + app)
    superuser = {"KEYGATE_DATABASE_URL": pg.conninfo_for(name)}
    kg = ks.Keygated(workdir.subdir("kg"), as_app, migrate=True, start=False,
                     migrate_env={"KEYGATE_SEED_DEV_KEY": "true"}, workers=2)
    try:
        # Refused: a role that does not exist, keygate's own, and without
        # the privilege to give a table away (keygate's role itself).
        p = kg.ctl("migrate", "--audit-owner", "nobody_%d" % n, env=superuser)
        assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
        p = kg.ctl("migrate", "--audit-owner", app, env=superuser)
        assert p.returncode == 1 and "cannot act as" in p.stderr, p.stderr
        p = kg.ctl("migrate", "--audit-owner", owner)
        assert p.returncode == 1 and "must be" in p.stderr, p.stderr
        assert pg.psql("SELECT tableowner FROM pg_tables WHERE tablename = "
                       "'audit_log'", dbname=name) == [[app]]

        p = kg.ctl("migrate", "--audit-owner", owner, env=superuser)
        assert p.returncode == 0, p.stderr
        assert "now belongs to %s" % owner in p.stdout
        assert pg.psql("SELECT tableowner FROM pg_tables WHERE tablename = "
                       "'audit_log'", dbname=name) == [[owner]]

        # keygated, as its own role, still appends (a key and its row).
        kg.start()
        head, body = ks.fcgi_request(
            kg.socket_path, "POST", "/v1/api_keys",
            {"HTTP_AUTHORIZATION": "Bearer " + ks.DEV_KEY,
             "CONTENT_TYPE": "application/json"},
            b'{"name":"after","scopes":["models:read"]}')
        assert ks.fcgi_response(head, body).status == 201, body
        p = kg.ctl("create-key", "--name", "ctl", "--scopes", "models:read")
        assert p.returncode == 0, p.stderr
        rows = pg.psql("SELECT count(*) FROM audit_log", dbname=name)
        assert int(rows[0][0]) >= 2
        p = kg.ctl("audit-verify")
        assert p.returncode == 0, p.stdout + p.stderr

        # ... and can do nothing else to it, whoever holds its password.
        setting, _ = ks.audit_key(kg.config["hmac_secret"])
        for sql, why in [
                ("UPDATE audit_log SET action = 'x'", "permission denied"),
                ("DELETE FROM audit_log", "permission denied"),
                ("TRUNCATE audit_log", "permission denied"),
                ("ALTER TABLE audit_log DISABLE TRIGGER USER",
                 "must be owner"),
                ("DROP TRIGGER audit_log_no_update ON audit_log",
                 "must be owner"),
                ("CREATE OR REPLACE FUNCTION audit_row_hash(p bytea, "
                 "r audit_log) RETURNS bytea LANGUAGE sql AS "
                 "'SELECT p'", "must be owner"),
                ("ALTER TABLE audit_log OWNER TO \"%s\"" % app,
                 "must be owner")]:
            with pytest.raises(ks.StackError, match=why):
                pg.psql("SELECT set_config('keygate.audit_key', '%s', "
                        "false); %s" % (setting, sql), dbname=name, user=app)
        p = kg.ctl("audit-verify")
        assert p.returncode == 0, p.stdout + p.stderr
        # Giving it again changes nothing.
        p = kg.ctl("migrate", "--audit-owner", owner, env=superuser)
        assert p.returncode == 0, p.stderr
    finally:
        kg.close()
