"""keygatectl migrate, and keygated against a database it has not run on."""

import glob
import os
import re
import time

import keygate_stack as ks


def migration_files():
    """{version: name} for every sql/NNNN-name.sql."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ks.SQL_DIR, "*.sql"))):
        m = re.match(r"^(\d+)-(.+)\.sql$", os.path.basename(path))
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def applied(pg, dbname):
    return pg.psql("SELECT version, name, applied_at FROM schema_migrations "
                   "ORDER BY version", dbname=dbname)


def test_migrate_applies_every_migration(pg, fresh_database, make_keygated):
    files = migration_files()
    assert files, "no migrations in %s" % ks.SQL_DIR
    kg = make_keygated(fresh_database)
    result = kg.migrate()
    assert result.returncode == 0, result.stderr
    rows = applied(pg, fresh_database)
    assert [int(r[0]) for r in rows] == sorted(files), rows
    assert all(r[1] and r[2] for r in rows), "name or applied_at missing"
    output = result.stdout + result.stderr
    for version, name in files.items():
        assert name in output or "%04d" % version in output, (
            "migration %04d-%s not mentioned in:\n%s" % (version, name,
                                                         output))


def test_second_migrate_changes_nothing(pg, fresh_database, make_keygated):
    kg = make_keygated(fresh_database)
    first = kg.migrate()
    assert first.returncode == 0, first.stderr
    before = applied(pg, fresh_database)
    tables = pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = "
                     "'public'", dbname=fresh_database)
    second = kg.migrate()
    assert second.returncode == 0, second.stderr
    assert applied(pg, fresh_database) == before
    assert pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = "
                   "'public'", dbname=fresh_database) == tables
    output = second.stdout + second.stderr
    assert re.search(r"nothing|no pending|up to date|already", output, re.I), (
        "second run did not say nothing was pending:\n%s" % output)
    for name in migration_files().values():
        assert not re.search(r"appl\w*\W+\S*%s" % re.escape(name), output,
                             re.I), "second run re-applied %s:\n%s" % (
                                 name, output)


def test_keygated_refuses_unmigrated_database(fresh_database, make_keygated):
    kg = make_keygated(fresh_database, workers=2)
    started = time.monotonic()
    kg.start(wait=False)
    status = kg.wait(10)
    elapsed = time.monotonic() - started
    assert status is not None, "keygated still running after 10s:\n%s" % (
        kg.log_tail())
    assert status == 2, "exit status %s:\n%s" % (status, kg.log_tail())
    text = kg.log_text()
    assert "not migrated" in text, text[-2000:]
    assert "keygatectl migrate" in text, text[-2000:]
    # Each worker may say it once, and the master once more; a respawn
    # loop would say it again and again.
    mentions = sum("not migrated" in l for l in text.splitlines())
    assert mentions <= 3, "said %d times in %.1fs:\n%s" % (
        mentions, elapsed, text[-2000:])
    assert ks.group_pids(kg.pid) == set(), "workers left behind"


def test_every_command_s_help_needs_no_database(workdir):
    """--help answers even where PostgreSQL cannot be reached."""
    d = workdir.subdir("help")
    conf = os.path.join(d, "keygate.conf")
    with open(conf, "w") as f:
        f.write('database_url = "host=%s/none dbname=none"\n' % d)
    for cmd in ("migrate", "create-key", "seed-dev-key", "audit-verify",
                "audit-head", "rotate-encryption-key", "vault-check",
                "ledger-verify", "prices", "openrouter-models"):
        p = ks.keygatectl(conf, cmd, "--help")
        assert p.returncode == 0, (cmd, p.stderr)
        assert p.stdout.startswith("usage: keygatectl " + cmd), p.stdout
        assert "PostgreSQL" not in p.stderr
    p = ks.keygatectl(conf, "migrate", "--status")
    assert p.returncode == 1 and "connecting to PostgreSQL" in p.stderr
