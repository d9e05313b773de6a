"""Credits leased per host (credits_lease = true): a host holds a slice of
a tenant's balance as one reservation owned by its master, calls hold
their estimates from it in shared memory, and one writer per host writes
the usage rows and the lease's charges.  The ledger stays exact: each
balance the sum of its rows, every usage row's charge a ledger charge,
nothing held once the lease is idle, under concurrency, a killed
worker, a killed host and a PostgreSQL restart (two hosts, and random
movements, are in test_credits.py)."""

import concurrent.futures
import os
import subprocess
import signal
import threading
import time

import pytest

import keygate_stack as ks
from mock_llm import Complete, Hang
from credit_helpers import (BODY, POOL_KEY, _exact, _quiet, charged_call,
                            chat, cost, credit_mode, fresh, ledger, micro,
                            overspend_burst, tenant, usage_of)


@pytest.fixture
def mock(mock):
    """conftest's mock, reset for each test and taking our keys."""
    return fresh(mock)


def lease_config(mock, **extra):
    cfg = dict(mock.config())
    cfg.update(credits_enforce="true", credits_lease="true",
               validate_llm_keys="false", pool_openrouter_key=POOL_KEY,
               pool_markup="0.25", workers=3)
    cfg.update(extra)
    return cfg


@pytest.fixture
def leased(make_stack, mock):
    return make_stack(**lease_config(mock))


def idle(s, tid, timeout=20):
    """Waits for the host to give the tenant's lease back."""
    ks.wait_until(lambda: micro(s, tid, "credits_reserved") == 0, timeout,
                  what="the lease to go back to the balance")


def test_a_call_is_charged_from_the_lease_with_one_usage_row(leased, mock):
    tid, r, charged = charged_call(leased, mock)
    # Answered after the usage row and the charge were committed.
    rows = leased.psql("SELECT prompt_tokens, completion_tokens, "
                       "credits_charged, request_id, lease_id IS NOT NULL, "
                       "reservation_id IS NOT NULL FROM usage WHERE "
                       "tenant_id = '%s'" % tid)
    assert rows == [["40", "9", str(charged), r.headers["x-request-id"],
                     "t", "t"]]
    assert micro(leased, tid) == 1000000 - charged
    # The lease is one hold of this host, owned by its master.
    lease = leased.psql("SELECT owner_pid, amount FROM credit_reservations "
                        "WHERE tenant_id = '%s'" % tid)
    if lease:
        assert int(lease[0][0]) == leased.kg.pid
    idle(leased, tid)
    rows = ledger(leased, tid)
    kinds = [k for k, _, _ in rows]
    assert kinds == ["mint", "hold", "charge", "release"], rows
    assert rows[2][1:] == [-charged, -charged]
    assert leased.psql("SELECT count(*) FROM credit_reservations WHERE "
                       "tenant_id = '%s'" % tid) == [["0"]]
    _exact(leased, [tid])


def test_many_calls_share_one_lease_and_the_ledger_is_exact(leased, mock):
    mock.behave("openai", Complete(usage=(30, 7)))
    tid, key = tenant(leased, 5)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: chat(leased, key), range(60)))
    assert [r.status for r in results] == [200] * 60
    charged = sum(round(r.json["keygate"]["credits_charged"] * 1e6)
                  for r in results)
    assert charged == 60 * cost(30, 7)
    # Far fewer holds than calls: the calls were held in memory.
    holds = int(leased.psql("SELECT count(*) FROM credit_ledger WHERE "
                            "tenant_id = '%s' AND kind = 'hold'" % tid)[0][0])
    assert 1 <= holds < 10, holds
    assert leased.psql("SELECT count(*), sum(credits_charged) FROM usage "
                       "WHERE tenant_id = '%s'" % tid) == \
        [["60", str(charged)]]
    idle(leased, tid)
    assert micro(leased, tid) == 5000000 - charged
    _exact(leased, [tid])


def test_concurrent_calls_never_overspend_a_lease(leased, mock):
    tid, funds, results = overspend_burst(leased, mock)
    ok = [r for r in results if r.status == 200]
    assert sorted(r.status for r in results) == \
        [200] * len(ok) + [402] * (40 - len(ok))
    assert 1 <= len(ok) <= 5
    assert len(mock.seen("openai")) == len(ok)
    idle(leased, tid)
    calls, charged = usage_of(leased, tid)
    assert calls == len(ok)
    assert micro(leased, tid) == funds - charged >= 0
    _exact(leased, [tid])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_killed_worker_gives_its_holds_back_to_the_lease(leased, mock,
                                                           stream):
    """kill -9 of every worker while a call is held: the master gives the
    dead workers' holds back to the lease, the lease goes back to the
    balance when idle, and nothing was charged for the call."""
    mock.behave("openai", Hang(60) if not stream else
                Complete(pause=5, pieces=12))
    tid, key = tenant(leased, 1)
    t = threading.Thread(target=lambda: _quiet(
        lambda: chat(leased, key, dict(BODY, stream=stream))), daemon=True)
    t.start()
    ks.wait_until(lambda: len(mock.seen("openai")) == 1, 30,
                  what="the call to reach the provider")
    for pid in leased.kg.worker_pids():
        os.kill(pid, signal.SIGKILL)
    leased.kg.wait_workers(timeout=20)
    idle(leased, tid, timeout=30)
    assert micro(leased, tid) == 1000000
    assert leased.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'"
                       % tid) == [["0"]]
    _exact(leased, [tid])
    # The balance is the tenant's to spend again.
    mock.behave("openai", Complete(usage=(40, 9)))
    r = chat(leased, key)
    assert r.status == 200, r.body
    idle(leased, tid)
    assert micro(leased, tid) == 1000000 - cost(40, 9)
    _exact(leased, [tid])


def test_a_killed_host_s_lease_ends_with_what_it_wrote(leased, mock):
    """kill -9 of the master and its workers with a lease held: the next
    keygated on the host lets the dead master's lease go (an expiry row);
    what was charged before stays charged."""
    mock.behave("openai", Complete(usage=(40, 9)))
    tid, key = tenant(leased, 1)
    assert chat(leased, key).status == 200
    mock.behave("openai", Hang(60))
    t = threading.Thread(target=lambda: _quiet(lambda: chat(leased, key)),
                         daemon=True)
    t.start()
    ks.wait_until(lambda: len(mock.seen("openai")) == 2, 30,
                  what="the second call to reach the provider")
    assert micro(leased, tid, "credits_reserved") > 0
    leased.kg.proc.kill_group()
    leased.kg.start()
    idle(leased, tid, timeout=30)
    rows = ledger(leased, tid)
    assert [k for k, _, _ in rows] == ["mint", "hold", "charge", "expiry"], \
        rows
    assert micro(leased, tid) == 1000000 - cost(40, 9)
    _exact(leased, [tid])


@pytest.mark.parametrize("mode", ["leased", "journal"])
def test_postgresql_restarted_under_leased_calls_loses_no_charge(
        make_stack, own_pg, mock, workdir, mode):
    """PostgreSQL restarts while calls are answered: every call that got
    a 200 with a charge has its usage row and its ledger charge; with a
    journal too, where the answers did not wait for the commit."""
    s = make_stack(cluster=own_pg, **lease_config(
        mock, **credit_mode(mode, workdir)))
    mock.behave("openai", Complete(usage=(30, 7), pause=0.2))
    tid, key = tenant(s, 5)
    results = []

    def calls():
        for _ in range(30):
            results.append(_quiet(lambda: chat(s, key)))
    threads = [threading.Thread(target=calls) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    own_pg.restart()
    for t in threads:
        t.join(120)
    ok = [r for r in results if r is not None and r.status == 200]
    assert ok, [getattr(r, "status", None) for r in results]
    idle(s, tid, timeout=30)
    told = sum(round(r.json["keygate"]["credits_charged"] * 1e6) for r in ok)
    used = s.psql("SELECT count(*), coalesce(sum(credits_charged), 0) FROM "
                  "usage WHERE tenant_id = '%s'" % tid)[0]
    # Every answer's charge is recorded; a call whose answer could not
    # confirm it said 0 and may still have been written.
    assert int(used[1]) >= told
    assert int(used[0]) >= len([r for r in ok if
                                r.json["keygate"]["credits_charged"] > 0])
    assert micro(s, tid) == 5000000 - int(used[1])
    _exact(s, [tid])


def test_a_cost_beyond_the_lease_is_charged_up_to_it_and_recorded(leased,
                                                                  mock):
    """A provider claiming far more usage than was held: the call takes
    its hold and what the lease has free, never more, and the rest is
    recorded as forgiven on its usage row."""
    mock.behave("openai", Complete(usage=(10**15, 9)))
    tid, key = tenant(leased, 1)
    r = chat(leased, key)
    assert r.status == 200, r.body
    charged = round(r.json["keygate"]["credits_charged"] * 1e6)
    assert 0 < charged <= 1000000
    rows = leased.psql("SELECT credits_charged, credits_forgiven FROM usage "
                       "WHERE tenant_id = '%s'" % tid)
    assert rows[0][0] == str(charged) and int(rows[0][1]) > 0, rows
    idle(leased, tid)
    assert micro(leased, tid) == 1000000 - charged >= 0
    _exact(leased, [tid])


def test_a_journal_keeps_what_a_killed_host_answered(make_stack, mock,
                                                     workdir):
    """credits_journal: answers go out once their charge is in the
    journal, not in PostgreSQL.  With the usage table locked away from
    the host's writer, calls are still answered from the lease and their
    charges wait in the journal; the whole host is then killed (kill -9)
    before it could write them.  The next keygated writes them first,
    and only then lets the dead host's lease go: every charge an answer
    told is recorded, once."""
    path = os.path.join(workdir.subdir("journal"), "credits.journal")
    s = make_stack(**lease_config(mock, workers=1, credits_journal=path))
    mock.behave("openai", Complete(usage=(30, 7)))
    tid, key = tenant(s, 5)
    for _ in range(2):
        assert chat(s, key).status == 200
    # Written within milliseconds, though the answers did not wait.
    ks.wait_until(lambda: s.psql("SELECT count(*) FROM usage WHERE "
                                 "tenant_id = '%s'" % tid) == [["2"]], 10,
                  what="the first two usage rows")
    lock = s.pg.hold_lock("usage", s.dbname)
    answered = [chat(s, key) for _ in range(5)]
    assert [r.status for r in answered] == [200] * 5, \
        [r.body for r in answered]
    told = [round(r.json["keygate"]["credits_charged"] * 1e6)
            for r in answered]
    assert told == [cost(30, 7)] * 5
    s.kg.proc.kill_group()
    # The dead host's sessions go with it, the statement its writer was
    # waiting on included.
    s.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
           "application_name LIKE 'keygated%'")
    ks.wait_until(lambda: s.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name "
        "LIKE 'keygated%'") == [["0"]], 10, what="the sessions to end")
    lock.release()
    assert s.psql("SELECT count(*) FROM usage WHERE tenant_id = '%s'"
                  % tid) == [["2"]]
    s.kg.start()
    idle(s, tid, timeout=30)
    assert "written first" in s.kg.log_text()
    ids = [r.headers["x-request-id"] for r in answered]
    rows = s.psql("SELECT request_id, credits_charged FROM usage WHERE "
                  "tenant_id = '%s' ORDER BY id" % tid)
    assert len(rows) == 7, rows
    assert [r[0] for r in rows[2:]] == ids
    assert [int(r[1]) for r in rows] == [cost(30, 7)] * 7
    kinds = [k for k, _, _ in ledger(s, tid)]
    assert kinds[0] == "mint" and kinds[-1] == "expiry", kinds
    assert micro(s, tid) == 5000000 - 7 * cost(30, 7)
    _exact(s, [tid])
    # And the restarted host serves the tenant from a new lease.
    assert chat(s, key).status == 200


def test_a_journal_serves_one_keygated_only(make_stack, mock, workdir):
    """A second keygated naming the same journal refuses to start, and
    says why; the first goes on."""
    path = os.path.join(workdir.subdir("journal"), "credits.journal")
    s = make_stack(**lease_config(mock, workers=1, credits_journal=path))
    other = os.path.join(workdir.subdir("other"), "keygated.sock")
    r = subprocess.run([ks.KEYGATED, "--config", s.kg.config_path],
                       env=ks.clean_env({"KEYGATE_LISTEN": "unix:" + other}),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30, text=True)
    assert r.returncode != 0
    assert "credits_journal: %s is in use by another keygated" % path \
        in r.stdout, r.stdout
    tid, key = tenant(s, 1)
    assert chat(s, key).status == 200
    assert os.stat(path).st_mode & 0o777 == 0o600
