"""The scenarios of tests/faults/run (see there): each sets up keygated
behind lighttpd on a PostgreSQL of its own, breaks something, and prints
one line of what was seen.  An invariant that does not hold is printed
as FAILED and makes the exit status 1."""

import collections
import concurrent.futures
import gzip
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("KEYGATE_SRCDIR", "."),
                                "tests", "e2e"))

import keygate_stack as ks  # noqa: E402
from mock_llm import (BulkOpenAI, Complete, Hang, MockLLM, Raw,  # noqa: E402
                      Redirect)

SECONDS = int(os.environ.get("FAULT_SECONDS", "10"))
OPENAI_KEY = "sk-proj-" + "f" * 40
CONTENT = "".join("piece%02d " % i for i in range(12))
failed = []


def check(what, ok, detail=""):
    """Records an invariant; returns ok."""
    if not ok:
        failed.append("%s %s" % (what, detail))
    return ok


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                total += sum(int(l.split()[1]) for l in f
                             if l.startswith("VmRSS:"))
        except OSError:
            pass
    return total


def fds(pids):
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            pass
    return n


def processes(s):
    return {s.kg.pid} | s.kg.worker_pids()


# ---------------------------------------------------------------------------
# Load

WRK_LUA = """
wrk.method = "%(method)s"
wrk.body = '%(body)s'
wrk.headers["Authorization"] = "Bearer %(key)s"
wrk.headers["Content-Type"] = "application/json"
local threads = {}
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body)
  local k = "s" .. status
  _G[k] = (_G[k] or 0) + 1
end
done = function(summary, latency, requests)
  for code = 100, 599 do
    local n = 0
    for _, t in ipairs(threads) do n = n + (t:get("s" .. code) or 0) end
    if n > 0 then io.write(string.format("status %%d %%d\\n", code, n)) end
  end
  local e = summary.errors
  io.write(string.format("errors %%d\\n",
    e.connect + e.read + e.write + e.timeout))
end
"""


class Wrk:
    """wrk against url for seconds, in the background; result() gives
    (requests/s, {status: n}, socket errors)."""

    def __init__(self, wd, url, key, seconds, conns=32, method="GET",
                 body=""):
        script = os.path.join(wd, "load.lua")
        with open(script, "w") as f:
            f.write(WRK_LUA % {"method": method, "body": body, "key": key})
        self.proc = subprocess.Popen(
            ["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "-s", script,
             url], stdout=subprocess.PIPE, text=True)

    def result(self):
        out, _ = self.proc.communicate(timeout=SECONDS + 60)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        codes = {int(c): int(n) for c, n in
                 re.findall(r"^status (\d+) (\d+)$", out, re.M)}
        errors = int(re.search(r"^errors (\d+)$", out, re.M).group(1))
        return rps, codes, errors


class KeyWriter:
    """Creates API keys in a loop (each with its audit row): the writes a
    fault must not half-do.  Remembers each answer's status, time and
    key id."""

    def __init__(self, s, pause=0.01):
        self.s = s
        self.pause = pause
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                r = self.s.post("/v1/api_keys", {"name": "fault-%d" % n,
                                                 "scopes": ["chat:write"]},
                                headers=ks.auth(), timeout=15)
                kid = r.json.get("id") if r.status == 201 else None
                self.results.append((time.monotonic(), r.status, kid))
            except Exception as exc:
                self.results.append((time.monotonic(), type(exc).__name__,
                                     None))
            self.stop.wait(self.pause)

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        return self.results


def keys_and_audit(s, created):
    """Every key named fault-* has exactly one audit row, and every key a
    client was told of exists: (keys, ok)."""
    rows = s.psql("SELECT k.id, (SELECT count(*) FROM audit_log a WHERE "
                  "a.action = 'api_key.create' AND a.target_id = "
                  "k.id::text) FROM api_keys k WHERE k.name LIKE 'fault-%'")
    ids = {r[0] for r in rows}
    ok = all(r[1] == "1" for r in rows) and \
        {k for _, _, k in created if k} <= ids
    orphans = int(s.psql("SELECT count(*) FROM audit_log a WHERE "
                         "a.action = 'api_key.create' AND NOT EXISTS "
                         "(SELECT 1 FROM api_keys k WHERE k.id::text = "
                         "a.target_id)")[0][0])
    return len(ids), ok and orphans == 0


def statuses(codes, extra=()):
    merged = dict(codes)
    for st in extra:
        merged[st] = merged.get(st, 0) + 1
    return " ".join("%s:%d" % kv for kv in sorted(merged.items(),
                                                  key=lambda kv: str(kv[0])))


def audit_ok(s):
    return s.kg.ctl("audit-verify").returncode == 0


def ledger_ok(s):
    return s.kg.ctl("ledger-verify").returncode == 0


def stack(wd, pg, name, **config):
    cfg = dict(workers=4, rate_limiting="false", validate_llm_keys="false",
               max_concurrent_calls="0", worker_calls="4096",
               listen_backlog="4096")
    cfg.update(config)
    return ks.Stack(wd.subdir("kg"), pg, dbname="%s_%d" % (name, os.getpid()),
                    **cfg)


# ---------------------------------------------------------------------------
# Scenarios

def pg_restart(wd, pg):
    s = stack(wd, pg, "pgrestart")
    try:
        load = Wrk(wd.path, s.url + "/v1/auth/whoami", ks.DEV_KEY, SECONDS)
        writer = KeyWriter(s)
        time.sleep(2)
        began = time.monotonic()
        pg.restart()
        restarted = time.monotonic() - began
        time.sleep(max(0, SECONDS - 2 - restarted))
        created = writer.finish()
        rps, codes, errors = load.result()
        after = [r for r in created if r[0] >= began]
        bad = [r for r in after if r[1] != 201]
        back = next((r[0] for r in after if r[1] == 201 and
                     (not bad or r[0] > bad[-1][0])), None)
        keys, paired = keys_and_audit(s, created)
        check("pg-restart: key and audit row both or neither", paired)
        check("pg-restart: audit-verify", audit_ok(s))
        return ("pg-restart: %.0f whoami/s (%s, %d socket errors); "
                "PostgreSQL down %.2f s; writes %s, succeeding again "
                "%.2f s after the restart began; %d keys, each with its "
                "audit row: %s; audit-verify %s" % (
                    rps, statuses(codes), errors, restarted,
                    statuses({}, [r[1] for r in created]),
                    (back - began) if back else -1, keys,
                    "yes" if paired else "NO",
                    "ok" if audit_ok(s) else "FAILED"))
    finally:
        s.close()


def kill_worker(wd, pg):
    s = stack(wd, pg, "killworker")
    try:
        load = Wrk(wd.path, s.url + "/v1/auth/whoami", ks.DEV_KEY, SECONDS)
        writer = KeyWriter(s)
        respawn = []
        time.sleep(1)
        for _ in range(3):
            before = s.kg.worker_pids()
            victim = sorted(before)[0]
            t0 = time.monotonic()
            os.kill(victim, 9)
            ks.wait_until(lambda: len(s.kg.worker_pids()) == len(before)
                          and victim not in s.kg.worker_pids(), 20,
                          what="a new worker")
            respawn.append(time.monotonic() - t0)
            time.sleep(max(0.5, (SECONDS - 2) / 3 - respawn[-1]))
        created = writer.finish()
        rps, codes, errors = load.result()
        fails = sum(n for c, n in codes.items() if c >= 400) + errors + \
            sum(1 for r in created if r[1] != 201)
        keys, paired = keys_and_audit(s, created)
        check("kill-worker: key and audit row both or neither", paired)
        check("kill-worker: audit-verify", audit_ok(s))
        return ("kill-worker: %.0f whoami/s (%s, %d socket errors), key "
                "writes %s; 3 kills: %.1f failed requests per kill, a new "
                "worker after %s s; %d keys, each with its audit row: %s" % (
                    rps, statuses(codes), errors,
                    statuses({}, [r[1] for r in created]), fails / 3.0,
                    "/".join("%.2f" % t for t in respawn), keys,
                    "yes" if paired else "NO"))
    finally:
        s.close()


def _stream(url, key, results):
    """One streamed call over HTTP/1.0: (status, whole) into results."""
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    try:
        r = ks.request("POST", url + "/v1/chat/completions", body.encode(),
                       {"Authorization": "Bearer " + key,
                        "X-OpenAI-Key": OPENAI_KEY,
                        "Content-Type": "application/json"}, timeout=30)
        text = r.body.decode("utf-8", "replace")
        results.append((r.status, "data: [DONE]" in text and
                        "piece11" in text))
    except Exception as exc:
        results.append((type(exc).__name__, False))


def reload_stop(wd, pg, mock):
    s = stack(wd, pg, "reload", shutdown_timeout="30", **mock.config())
    mock.behave("openai", Complete(content=CONTENT, pieces=12, pause=0.25))
    try:
        before = s.kg.worker_pids()
        load = Wrk(wd.path, s.url + "/v1/auth/whoami", ks.DEV_KEY, SECONDS)
        time.sleep(1)
        for _ in range(3):
            s.kg.sighup()
            time.sleep(max(1.0, (SECONDS - 3) / 3))
        ks.wait_until(lambda: not (s.kg.worker_pids() & before), 30,
                      what="every worker replaced")
        rps, codes, errors = load.result()
        reload_fails = sum(n for c, n in codes.items() if c >= 400) + errors
        check("reload: 0 failed", reload_fails == 0, statuses(codes))
        results = []
        threads = [threading.Thread(target=_stream, args=(
            s.url, ks.DEV_KEY, results), daemon=True) for _ in range(40)]
        for t in threads:
            t.start()
        mock.wait_for(40, 20)
        t0 = time.monotonic()
        s.kg.sigterm()
        status = s.kg.wait(40)
        took = time.monotonic() - t0
        for t in threads:
            t.join(30)
        whole = sum(1 for st, ok in results if st == 200 and ok)
        check("reload: SIGTERM drains every stream", whole == 40,
              str(results[:3]))
        check("reload: exit 0", status == 0)
        return ("reload: 3 SIGHUPs under %.0f whoami/s: %d failed (%s); "
                "SIGTERM with 40 streams in flight: %d whole, %d cut, exit "
                "%s after %.2f s" % (rps, reload_fails, statuses(codes),
                                     whole, 40 - whole, status, took))
    finally:
        s.close()


def _leave_burst(s, bulk, req, calls):
    """1,000 streams opened, each left once its first piece arrived; waits
    until every provider call ended and its usage row is written.  The
    seconds from leaving to the last provider call's end, and the mock's
    figures."""
    socks, seen = [], {}
    for _ in range(1000):
        c = socket.create_connection(("127.0.0.1", s.web.port))
        c.sendall(req)
        socks.append(c)
    deadline = time.monotonic() + 60
    while len(seen) < len(socks) and time.monotonic() < deadline:
        ready, _, _ = select.select([c for c in socks if c not in seen],
                                    [], [], 1)
        for c in ready:
            got = c.recv(65536)
            if b"piece" in got or not got:
                seen[c] = got
    left = time.monotonic()
    for c in socks:
        c.close()
    st = ks.wait_until(lambda: (lambda x: x if x["cut"] +
                                x["completed"] >= calls else None)(
        bulk.stats()), 60, what="every provider call to end")
    ended = time.monotonic() - left
    ks.wait_until(lambda: s.psql("SELECT count(*) FROM usage") ==
                  [[str(calls)]], 30, what="every usage row")
    # Idle threads end, and the provider handles a burst left go.
    time.sleep(12)
    return ended, st


def leave(wd, pg):
    """Two bursts after a warm-up of 16 whole calls (what a first call
    fills: prepared statements, caches, libraries' state, is not a burst's
    doing): the first burst shows what it leaves behind, the second that
    nothing grows from one to the next."""
    bulk = BulkOpenAI(CONTENT, pieces=12, pause=0.5, usage=(9, 8))
    s = stack(wd, pg, "leave", credits_enforce="true", **bulk.config())
    try:
        s.psql("INSERT INTO credit_ledger (tenant_id, kind, amount) SELECT "
               "id, 'opening', 1000000000 - credits_balance FROM tenants "
               "WHERE parent_id IS NULL; UPDATE tenants SET credits_balance "
               "= 1000000000 WHERE parent_id IS NULL")
        procs = processes(s)
        fds_cold, rss_cold = fds(procs), rss_kib(procs)
        body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]})
        req = ("POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nX-OpenAI-Key: %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n"
               "\r\n%s" % (ks.DEV_KEY, OPENAI_KEY, len(body), body)).encode()
        warm = [socket.create_connection(("127.0.0.1", s.web.port))
                for _ in range(16)]
        for c in warm:
            c.sendall(req)
        for c in warm:
            while c.recv(65536):
                pass
            c.close()
        ks.wait_until(lambda: s.psql("SELECT count(*) FROM usage") ==
                      [["16"]], 30, what="the warm-up's usage rows")
        time.sleep(12)
        fds0, rss0 = fds(procs), rss_kib(procs)
        ended, st = _leave_burst(s, bulk, req, 1016)
        procs1 = processes(s)
        fds1, rss1 = fds(procs1), rss_kib(procs1)
        _leave_burst(s, bulk, req, 2016)
        procs2 = processes(s)
        fds2, rss2 = fds(procs2), rss_kib(procs2)
        rows = s.psql("SELECT count(*), count(*) FILTER (WHERE "
                      "credits_charged > 0), min(status), max(status) FROM "
                      "usage")[0]
        held = s.psql("SELECT count(*) FROM credit_reservations")[0][0]
        check("leave: the same processes", procs1 == procs == procs2)
        check("leave: one charged usage row per call",
              rows[:2] == ["2016", "2016"], str(rows))
        check("leave: no hold left", held == "0")
        check("leave: ledger-verify", ledger_ok(s))
        check("leave: nothing grows from one burst to the next",
              fds2 <= fds1 and rss2 <= rss1 * 1.05,
              "fds %d -> %d, %d -> %d KiB" % (fds1, fds2, rss1, rss2))
        return ("leave: 1,000 clients left mid-stream, twice: provider "
                "calls ended %.2f s later (%d cut, %d completed); workers "
                "%s; file descriptors %d / %d -> %d -> %d; memory %d / %d "
                "-> %d -> %d KiB (fresh / after 16 whole calls, after one "
                "burst, after two); %s usage rows (%s charged, status "
                "%s..%s), %s holds left, ledger-verify "
                "%s" % (ended, st["cut"], st["completed"] - 16,
                        "unchanged" if procs1 == procs == procs2 else
                        "CHANGED", fds_cold, fds0, fds1, fds2, rss_cold,
                        rss0, rss1, rss2,
                        rows[0], rows[1], rows[2], rows[3], held,
                        "ok" if ledger_ok(s) else "FAILED"))
    finally:
        s.close()
        bulk.close()


def _money_mode(wd, pg, mock, mode):
    cfg = dict(credits_lease="false" if mode == "holds" else "true")
    if mode == "journal":
        cfg["credits_journal"] = os.path.join(wd.subdir("journal"),
                                              "credits.journal")
    s = stack(wd, pg, "money_" + mode, workers=3, credits_enforce="true",
              **cfg, **mock.config())
    try:
        r = s.post("/v1/tenants", {"name": "money"}, headers=ks.auth())
        tid = r.json["id"]
        key = s.post("/v1/api_keys", {"tenant_id": tid, "scopes": [
            "chat:write"]}, headers=ks.auth()).json["key"]
        s.post("/v1/tenants/%s/credits" % tid, {"amount": 100},
               headers=ks.auth())
        headers = {"Authorization": "Bearer " + key,
                   "X-OpenAI-Key": OPENAI_KEY}

        def call(stream):
            try:
                return ks.request("POST", s.url + "/v1/chat/completions", {
                    "model": "gpt-4o-mini", "max_tokens": 50,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "x" * 200}]},
                    headers, timeout=60)
            except Exception as exc:
                return exc
        # kill -9 with calls in hand, whole and streamed.
        mock.behave("openai", Complete(content=CONTENT, pieces=12,
                                       pause=1.0, wait=30))
        seen = len(mock.seen())
        with concurrent.futures.ThreadPoolExecutor(40) as ex:
            futs = [ex.submit(call, i % 2 == 1) for i in range(40)]
            mock.wait_for(seen + 40, 30)
            time.sleep(1.5)
            t0 = time.monotonic()
            for pid in s.kg.worker_pids():
                os.kill(pid, 9)
            s.kg.wait_workers(timeout=30)
            ks.wait_until(lambda: s.psql(
                "SELECT credits_reserved FROM tenants WHERE id = '%s'"
                % tid) == [["0"]], 60, what="no credits held")
            freed = time.monotonic() - t0
            killed = [f.result() for f in futs]
        kill_ok = ledger_ok(s)
        # PostgreSQL restarted while calls settle.
        mock.behave("openai", Complete(content=CONTENT, pieces=4,
                                       pause=0.05, usage=(30, 7)))
        answers = []

        def calls():
            for i in range(25):
                answers.append(call(i % 2 == 1))
        threads = [threading.Thread(target=calls) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        s.pg.restart()
        for t in threads:
            t.join(180)
        ks.wait_until(lambda: s.psql(
            "SELECT credits_reserved FROM tenants WHERE id = '%s'" % tid) ==
            [["0"]], 60, what="no credits held")
        ok = [a for a in answers if not isinstance(a, Exception) and
              a.status == 200]
        rows = s.psql("SELECT count(*), coalesce(sum(credits_charged), 0) "
                      "FROM usage WHERE tenant_id = '%s'" % tid)[0]
        charged = -int(s.psql("SELECT coalesce(sum(amount), 0) FROM "
                              "credit_ledger WHERE tenant_id = '%s' AND "
                              "kind = 'charge'" % tid)[0][0])
        restart_ok = ledger_ok(s) and int(rows[1]) == charged
        check("money (%s): ledger-verify after kill -9" % mode, kill_ok)
        check("money (%s): usage rows equal charges" % mode, restart_ok,
              "%s vs %d" % (rows, charged))
        others = collections.Counter(
            type(a).__name__ if isinstance(a, Exception) else a.status
            for a in answers if a not in ok)
        return ("%s: kill -9 of every worker with 40 calls in hand (%d "
                "answered): nothing held %.2f s later, ledger-verify %s; "
                "PostgreSQL restarted under 100 calls: %d answered 200 "
                "(others: %s), %s usage rows charging %s = the ledger's "
                "charges %d, ledger-verify %s" % (
                    mode, sum(1 for k in killed if not isinstance(
                        k, Exception) and k.status == 200), freed,
                    "ok" if kill_ok else "FAILED", len(ok),
                    dict(others) or "none", rows[0], rows[1], charged,
                    "ok" if ledger_ok(s) else "FAILED"))
    finally:
        s.close()


def money(wd, pg, mock):
    return "money: " + "; ".join(_money_mode(wd, pg, mock, mode)
                                 for mode in ("holds", "leased", "journal"))


def hostile(wd, pg, mock):
    s = stack(wd, pg, "hostile", upstream_idle_timeout="3",
              upstream_total_timeout="6", **mock.config())
    cases = [
        ("16 MiB line", Raw(200, b"data: " + b"a" * (16 << 20) + b"\n\n",
                            content_type="text/event-stream"), True),
        ("16 MiB reply", Raw(200, b'{"a":"' + b"a" * (16 << 20) + b'"}'),
         False),
        ("invalid JSON", Raw(200, b"{not json"), False),
        ("redirect", Redirect("http://127.0.0.1:9/v1/chat/completions"),
         False),
        ("gzip bomb", Raw(200, gzip.compress(b"0" * (256 << 20)),
                          headers={"Content-Encoding": "gzip"}), False),
        ("silence", Hang(60), False),
        ("silent stream", Hang(60), True),
        ("absurd usage", Complete(usage=(10**15, 10**15)), False),
    ]
    out = []
    try:
        for name, behaviour, stream in cases:
            mock.behave("openai", behaviour)
            t0 = time.monotonic()
            try:
                r = ks.request("POST", s.url + "/v1/chat/completions", {
                    "model": "gpt-4o-mini", "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]},
                    {"Authorization": "Bearer " + ks.DEV_KEY,
                     "X-OpenAI-Key": OPENAI_KEY}, timeout=30)
                status = r.status
                if stream and status == 200:
                    status = "200+error" if b'"error"' in r.body else 200
            except Exception as exc:
                status = type(exc).__name__
            took = time.monotonic() - t0
            check("hostile: %s answered within the timeouts" % name,
                  took < 10, "%.1f s" % took)
            check("hostile: %s is an error" % name,
                  name == "absurd usage" or status != 200, str(status))
            out.append("%s %s in %.2f s" % (name, status, took))
        rss = rss_kib(processes(s))
        check("hostile: memory bounded", rss < 512 * 1024, "%d KiB" % rss)
        return "hostile: %s; keygated's memory after: %d KiB" % (
            "; ".join(out), rss)
    finally:
        s.close()


def main():
    wanted = os.environ.get("FAULTS", "pg-restart kill-worker reload leave "
                            "money hostile").split()
    wd = ks.Workdir("keygate-faults-")
    pg = ks.PgCluster(wd.subdir("pg"))
    mock = MockLLM()
    mock.accept("openai", OPENAI_KEY)
    print("faults: %s, %d cores, load %d s each" % (
        time.strftime("%Y-%m-%d"), os.cpu_count(), SECONDS), flush=True)
    runs = {"pg-restart": lambda: pg_restart(wd, pg),
            "kill-worker": lambda: kill_worker(wd, pg),
            "reload": lambda: reload_stop(wd, pg, mock),
            "leave": lambda: leave(wd, pg),
            "money": lambda: money(wd, pg, mock),
            "hostile": lambda: hostile(wd, pg, mock)}
    try:
        for name in wanted:
            try:
                print(runs[name](), flush=True)
            except Exception as exc:
                failed.append("%s: %s: %s" % (name, type(exc).__name__, exc))
                print("%s: did not run to its end: %s: %s" % (
                    name, type(exc).__name__, exc), flush=True)
    finally:
        mock.close()
        pg.close()
        wd.close()
    for f in failed:
        print("FAILED: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
