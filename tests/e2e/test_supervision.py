"""The keygated master looking after its workers while clients keep
sending requests through lighttpd: crashes, recycling, reloads, a broken
reload, shutdown, and PostgreSQL restarting underneath."""

import collections
import os
import re
import signal
import threading
import time

import keygate_stack as ks
from keygate_stack import describe


def replaced(kg, old, count):
    """A predicate: `count` workers run and none of them is in `old`."""
    def check():
        pids = kg.worker_pids()
        return pids if len(pids) == count and not pids & old else None
    return check


def log_line_matching(kg, pattern, timeout=5):
    """The first log line (as text) matching `pattern`, or None."""
    rx = re.compile(pattern, re.I)

    def find():
        for line in kg.log_text().splitlines():
            if rx.search(line):
                return line
        return None
    try:
        return ks.wait_until(find, timeout, what=pattern)
    except ks.StackError:
        return None


def test_the_master_and_its_workers_are_named_keygated(make_stack):
    """ps, top and pgrep show keygated, though it starts itself again
    (from /proc/self/exe, to tune malloc) before anything else."""
    s = make_stack(workers=2)
    for pid in [s.kg.pid] + sorted(s.kg.wait_workers()):
        with open("/proc/%d/comm" % pid) as f:
            assert f.read().strip() == "keygated", pid


def test_killed_worker_is_replaced_and_only_its_requests_fail(make_stack):
    s = make_stack(workers=3)
    workers = s.kg.wait_workers()
    victim = min(workers)
    load = ks.Load(s.url + "/health", threads=4, duration=30).start()
    try:
        load.wait_for(40)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        new = ks.wait_until(
            lambda: (lambda p: p if len(p) == 3 and victim not in p
                     else None)(s.kg.worker_pids()),
            5, what="a worker to replace %d" % victim)
        respawned = time.monotonic()
        load.wait_for(100)
    finally:
        samples = load.stop()
    # A worker holds every request it took until answered: those in
    # flight when it died fail (at most one per load thread), no other.
    failures = [x for x in samples if x.status != 200]
    assert len(failures) <= 4, describe(failures)
    assert all(x.start < killed for x in failures), describe(failures)
    assert new & workers == workers - {victim}, "other workers were touched"
    assert len(new - workers) == 1
    after = [x for x in samples if x.start > respawned]
    assert len(after) >= 50 and all(x.status == 200 for x in after), (
        describe([x for x in after if x.status != 200]))
    assert respawned - killed < 5
    line = log_line_matching(
        s.kg, r"\b%d\b.*(SIGKILL|signal\W{0,3}9\b|killed)|"
              r"(SIGKILL|signal\W{0,3}9\b|killed).*\b%d\b" % (victim, victim))
    assert line, "the master did not log that %d died of SIGKILL:\n%s" % (
        victim, s.kg.log_tail())


def test_worker_is_recycled_after_max_requests(make_stack):
    s = make_stack(workers=3, max_requests=20)
    initial = s.kg.wait_workers()
    load = ks.Load(s.url + "/health", threads=4, duration=30,
                   max_requests=100).start()
    samples = load.join(30)
    assert len(samples) == 100
    failures = [x for x in samples if x.status != 200]
    assert not failures, describe(failures)
    final = s.kg.wait_workers()
    assert initial - final, "no worker was recycled: %r" % final
    ks.wait_until(lambda: len([l for l in s.kg.log_lines()
                               if l.get("path") == "/health"]) >= 100, 5,
                  what="100 access-log lines")
    served = collections.Counter(l.get("pid") for l in s.kg.log_lines()
                                 if l.get("path") == "/health")
    assert max(served.values()) <= 20, "a worker served more: %r" % served
    assert len(served) >= 5, "only %d workers served 100 requests" % (
        len(served))


def test_sighup_replaces_every_worker_without_refusing_a_request(make_stack):
    s = make_stack(workers=3)
    generations = [s.kg.wait_workers()]
    load = ks.Load(s.url + "/health", threads=4, duration=60,
                   interval=0.005).start()
    try:
        load.wait_for(20)
        for _ in range(3):
            s.kg.sighup()
            generations.append(ks.wait_until(
                replaced(s.kg, generations[-1], 3), 15,
                what="all workers replaced after SIGHUP"))
            load.wait_for(20)
    finally:
        samples = load.stop()
    failures = [x for x in samples if x.status != 200]
    assert not failures, describe(failures)
    assert s.kg.alive()
    seen = set().union(*generations)
    assert len(seen) == 12, "worker generations overlap: %r" % generations


def test_broken_config_on_sighup_keeps_the_running_workers(make_stack):
    s = make_stack(workers=3)
    workers = s.kg.wait_workers()
    lines = s.kg.config_text().splitlines()
    lineno = next(i for i, l in enumerate(lines, 1)
                  if l.startswith("workers"))
    lines[lineno - 1] = "workers = banana"
    s.kg.write_config_text("\n".join(lines) + "\n")
    load = ks.Load(s.url + "/health", threads=4, duration=30,
                   interval=0.005).start()
    try:
        load.wait_for(20)
        s.kg.sighup()
        line = log_line_matching(s.kg, "keeping the current configuration")
        load.wait_for(40)
        time.sleep(0.5)
        load.wait_for(20)
    finally:
        samples = load.stop()
    assert line, "no 'keeping the current configuration' line:\n%s" % (
        s.kg.log_tail())
    assert "keygate.conf:%d:" % lineno in line, (
        "the line does not say where (keygate.conf:%d:): %s" % (lineno, line))
    failures = [x for x in samples if x.status != 200]
    assert not failures, describe(failures)
    assert s.kg.alive()
    assert s.kg.worker_pids() == workers, "workers were replaced"


def process_states(pids):
    """{pid: one-letter state or None} for a failure message."""
    return {p: ks._proc_state(p) for p in sorted(pids)}


def test_sigterm_when_idle_exits_promptly(make_stack):
    s = make_stack(workers=3, shutdown_timeout=5)
    workers = s.kg.wait_workers()
    term = time.monotonic()
    s.kg.sigterm()
    status = s.kg.wait(3)
    assert status is not None, (
        "keygated still running 3s after SIGTERM with nothing in flight; "
        "master and workers: %r" % process_states(workers | {s.kg.pid}))
    assert status == 0, "exit status %s" % status
    assert time.monotonic() - term < 3
    assert not [p for p in workers if ks.pid_alive(p)]


def test_sigterm_drains_in_flight_requests_then_exits(make_stack):
    s = make_stack(workers=3, shutdown_timeout=5)
    workers = s.kg.wait_workers()
    lock = s.pg.hold_lock("schema_migrations", dbname=s.dbname)
    results = [None] * 3

    def call(i):
        try:
            results[i] = s.get("/health", timeout=20)
        except Exception as exc:
            results[i] = exc
    threads = [threading.Thread(target=call, args=(i,), daemon=True)
               for i in range(3)]
    try:
        for t in threads:
            t.start()
        # A worker holds several requests at once: those waiting on the
        # lock, and those waiting behind them for the worker's own lock.
        ks.wait_until(lambda: lock.waiters() >= 1, 5,
                      what="a /health request blocked on the lock")
        time.sleep(0.5)
        s.kg.sigterm()
        term = time.monotonic()
        time.sleep(1)
        assert all(r is None for r in results), (
            "requests finished before the lock was released: %r" % results)
    finally:
        lock.release()
    for t in threads:
        t.join(15)
    status = s.kg.wait(max(0.0, term + 5.5 - time.monotonic()))
    gone = time.monotonic() - term
    for r in results:
        assert isinstance(r, ks.Response), "request failed: %r" % (r,)
        assert r.status == 200, r.body
    assert status is not None, (
        "keygated still running %.1fs after SIGTERM; master and workers: %r"
        % (gone, process_states(workers | {s.kg.pid})))
    assert status == 0, "exit status %s" % status
    assert gone <= 5.5
    alive = [p for p in workers if ks.pid_alive(p)]
    assert not alive, "workers still running: %r" % alive


def test_database_restart_under_load_gives_only_503(own_pg, make_stack):
    s = make_stack(cluster=own_pg, workers=3)
    workers = s.kg.wait_workers()
    load = ks.Load(s.url + "/health", threads=4, duration=40,
                   interval=0.01).start()
    try:
        load.wait_for(20)
        own_pg.restart()
        up = time.monotonic()
        # Run on until two seconds pass without a failure, at most 12 s.
        while time.monotonic() - up < 12:
            time.sleep(0.2)
            bad = [x for x in load.results() if x.status != 200]
            last_bad = bad[-1].end if bad else up
            if time.monotonic() - last_bad >= 2:
                break
    finally:
        samples = load.stop()
    not_503 = [x for x in samples if x.status not in (200, 503)]
    assert not not_503, describe(not_503)
    for x in samples:
        if x.status == 503:
            assert x.response.json is not None, describe([x])
            assert x.response.headers.get("retry-after"), describe([x])
    bad = [x for x in samples if x.status != 200]
    if bad:
        assert bad[-1].end - up < 10, (
            "still failing %.1fs after PostgreSQL came back" % (
                bad[-1].end - up))
    after = [x for x in samples if x.start > (bad[-1].end if bad else up)]
    assert len(after) >= 20 and all(x.status == 200 for x in after)
    assert s.kg.worker_pids() == workers, "workers were replaced"
