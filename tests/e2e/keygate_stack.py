"""Real processes for keygate's end-to-end tests.

Everything here starts something real and owns it until close():

    PgCluster     a private PostgreSQL cluster on a Unix socket
    Keygated      the keygated master and its workers, with a config file
    Lighttpd      lighttpd in front of keygated, from fcgi/lighttpd.conf
    Apache        Apache httpd in front of keygated, from fcgi/apache.conf
    Nginx         nginx in front of keygated, from fcgi/nginx.conf
    Stack         keygated (on a migrated database) behind one of them
    GuardedService  another service behind the same web server, guarded by
                  keygate from fcgi/<web>-authorizer.conf (guarded_stack())
    request()     one HTTP request, no connection reuse
    fcgi_request()  one request straight to keygated's FastCGI socket
    parse_metrics()  the samples of GET /metrics
    burst(), on_every_worker(), served_by()  requests spread over workers
    Load          client threads sending requests and recording each outcome
    assert_error  keygate's error shape, shared by the tests
    assert_documented  a response as the OpenAPI document describes it

Every object registers itself so that an atexit handler (and the pytest
fixtures, earlier) can stop it.  Every wait is bounded.  Working directories
live under /tmp with mode 0755, because when the tests run as root
PostgreSQL runs as the `postgres` user and must reach its data directory;
they are removed at exit unless KEYGATE_KEEP_WORKDIR=1.

Paths come from KEYGATE_BUILDDIR (keygated, keygatectl) and KEYGATE_SRCDIR
(sql/, fcgi/), both defaulting to the top of the source tree.
"""

import atexit
import base64
import collections
import contextlib
import csv
import glob
import hashlib
import hmac
import http.client
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

from mock_llm import EchoBackend, MockLLM, SSEReader

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.path.abspath(os.environ.get("KEYGATE_BUILDDIR") or TOP)
SRCDIR = os.path.abspath(os.environ.get("KEYGATE_SRCDIR") or TOP)
KEEP_WORKDIR = os.environ.get("KEYGATE_KEEP_WORKDIR") == "1"

KEYGATED = os.path.join(BUILDDIR, "keygated")
KEYGATECTL = os.path.join(BUILDDIR, "keygatectl")
# The OpenAPI document as built (src/api/openapi.json.in, version filled in).
OPENAPI_JSON = os.path.join(BUILDDIR, "openapi.json")
# KEYGATE_VALIDATE_OPENAPI=1: request() checks every answer of keygate's
# against that document.
VALIDATE_OPENAPI = os.environ.get("KEYGATE_VALIDATE_OPENAPI") == "1"
SQL_DIR = os.path.join(SRCDIR, "sql")
LIGHTTPD_CONF = os.path.join(SRCDIR, "fcgi", "lighttpd.conf")

DEV_KEY = "kg_dev_local_default_tenant_do_not_use_in_production"
# The operator's pool key of conftest's pooled_stack.
POOL_KEY = "sk-or-v1-pool" + secrets.token_hex(24)

# Environment variables that keygated reads as configuration.  They are
# stripped from the environment of every process started here, so that a
# test sees exactly the configuration it wrote.
_OWN_ENV_PREFIX = "KEYGATE_"


class StackError(Exception):
    """A process did not start, stop or answer as expected."""


# ---------------------------------------------------------------------------
# Cleanup

_live = []          # objects with close(), newest last
_live_lock = threading.Lock()
instances = []      # every Keygated / Lighttpd ever made, for log tails


def _register(obj):
    with _live_lock:
        _live.append(obj)


def _unregister(obj):
    with _live_lock:
        if obj in _live:
            _live.remove(obj)


def close_all():
    """Closes every live object, newest first.  Safe to call twice."""
    while True:
        with _live_lock:
            if not _live:
                return
            obj = _live.pop()
        try:
            obj.close()
        except BaseException as exc:  # cleanup must go on
            print("keygate_stack: closing %r: %s" % (obj, exc))


atexit.register(close_all)


def exit_on_sigterm():
    """Makes SIGTERM (a test driver's timeout) interrupt the main thread
    like Ctrl-C, so that fixtures and the atexit cleanup still run."""
    def handler(signum, frame):
        # pytest stops the run and tears fixtures down on KeyboardInterrupt;
        # SystemExit would only fail the current test.
        raise KeyboardInterrupt("SIGTERM")
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value, which is returned.

    Raises StackError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise StackError("timed out after %.1fs waiting for %s"
                             % (timeout, what))
        time.sleep(interval)


def tail(path, lines=40):
    """The last `lines` lines of a text file, or a note that it is missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, io.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(%s: %s)" % (path, exc.strerror)
    return "\n".join(text.splitlines()[-lines:])


class Workdir:
    """A directory under /tmp, mode 0755, removed on close()."""

    def __init__(self, prefix="keygate-e2e-"):
        self.path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(self.path, 0o755)
        self._n = 0
        _register(self)

    def subdir(self, name):
        """A new, empty, 0755 directory inside this one."""
        self._n += 1
        path = os.path.join(self.path, "%s%d" % (name, self._n))
        os.mkdir(path)
        os.chmod(path, 0o755)
        return path

    def close(self):
        _unregister(self)
        if KEEP_WORKDIR:
            print("keygate_stack: keeping %s" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def __repr__(self):
        return "Workdir(%s)" % self.path


def clean_env(extra=None):
    """os.environ without KEYGATE_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_OWN_ENV_PREFIX)}
    env.update(extra or {})
    return env


def free_tcp_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(address):
    """True if something listens on `address` (a Unix socket path or a
    (host, port) tuple).  Reads /proc/net so that checking does not hand
    keygated an empty connection; connects only where /proc is missing."""
    if isinstance(address, str):
        try:
            with open("/proc/net/unix") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    # Flags 00010000 is __SO_ACCEPTCON: a listening socket.
                    if (len(fields) >= 8 and fields[7] == address and
                            int(fields[3], 16) & 0x10000):
                        return True
            return False
        except OSError:
            return can_connect(address)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if (fields[3] == "0A" and
                        int(fields[1].split(":")[1], 16) == address[1]):
                    return True
        return False
    except OSError:
        return can_connect(address)


def can_connect(address):
    """True if a stream socket connects to `address` (a path or a tuple)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(address)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _proc_state(pid):
    """The one-letter state of `pid` from /proc, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid):
    """True while `pid` exists and is not a zombie."""
    return _proc_state(pid) not in (None, "Z", "X")


def _proc_stats():
    """(pid, the fields of /proc/<pid>/stat after the command name) of
    every process still there when read."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(stat.split("/")[2]), fields


def child_pids(pid):
    """The live (non-zombie) direct children of `pid`."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = {int(x) for x in f.read().split()}
    except OSError:
        kids = {k for k, fields in _proc_stats() if int(fields[1]) == pid}
    return {k for k in kids if pid_alive(k)}


def group_pids(pgid):
    """The live (non-zombie) processes in process group `pgid`."""
    return {k for k, fields in _proc_stats()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X")}


class _Process:
    """A child process in its own process group, output sent to files."""

    def __init__(self, argv, stdout_path, stderr_path, env, cwd):
        self.argv = argv
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=env, cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout):
        """The exit status (negative for a signal), or None on timeout."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def kill_group(self):
        """SIGKILLs the process group this process leads, then reaps it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(5)


# ---------------------------------------------------------------------------
# PostgreSQL

def pg_bindir():
    """Where initdb and pg_ctl live: KEYGATE_PG_BINDIR, or the newest
    /usr/lib/postgresql/*/bin, or the directory of pg_ctl on PATH."""
    if os.environ.get("KEYGATE_PG_BINDIR"):
        return os.environ["KEYGATE_PG_BINDIR"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if
                   p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return os.path.dirname(pg_ctl)
    raise StackError("no PostgreSQL binaries found (set KEYGATE_PG_BINDIR)")


class PgCluster:
    """A private PostgreSQL cluster listening only on a Unix socket.

    As root the server binaries run as the `postgres` user (initdb refuses
    root); the data and socket directories then belong to that user.  A
    database named `keygate` exists once the constructor returns."""

    def __init__(self, workdir, dbname="keygate"):
        self.workdir = workdir
        self.bindir = pg_bindir()
        self.datadir = os.path.join(workdir, "pgdata")
        self.sockdir = os.path.join(workdir, "pgsock")
        self.logfile = os.path.join(workdir, "postgresql.log")
        self.port = 20000 + secrets.randbelow(40000)
        self.dbname = dbname
        self._as_postgres = os.geteuid() == 0
        self._lockers = []
        os.mkdir(self.datadir, 0o700)
        os.mkdir(self.sockdir, 0o755)
        open(self.logfile, "a").close()
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.datadir, self.sockdir, self.logfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        _register(self)
        self._run("initdb", "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8", "--locale=C", "-D", self.datadir)
        self.start()
        self.psql("CREATE DATABASE %s" % dbname, dbname="postgres")

    def _argv(self, tool, *args):
        argv = [os.path.join(self.bindir, tool)] + list(args)
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, tool, *args, timeout=60):
        proc = subprocess.run(self._argv(tool, *args), cwd=self.workdir,
                              env=clean_env({"LC_ALL": "C"}),
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
        if proc.returncode != 0:
            raise StackError("%s failed (%d):\n%s\n%s" % (
                tool, proc.returncode, proc.stdout.decode(errors="replace"),
                tail(self.logfile)))
        return proc.stdout.decode(errors="replace")

    def _server_options(self):
        # pg_stat_statements: tests count what keygated asked the database.
        return ("-k %s -c listen_addresses='' -p %d -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off "
                "-c shared_preload_libraries=pg_stat_statements"
                % (self.sockdir, self.port))

    @property
    def conninfo(self):
        return self.conninfo_for(self.dbname)

    def conninfo_for(self, dbname):
        return "host=%s port=%d dbname=%s user=postgres" % (
            self.sockdir, self.port, dbname)

    def start(self):
        self._run("pg_ctl", "-w", "-t", "30", "-D", self.datadir,
                  "-l", self.logfile, "-o", self._server_options(), "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-w", "-t", "30", "-D", self.datadir,
                  "-m", mode, "stop")

    def restart(self):
        self._run("pg_ctl", "-w", "-t", "30", "-D", self.datadir,
                  "-l", self.logfile, "-o", self._server_options(),
                  "-m", "fast", "restart")

    def running(self):
        return os.path.exists(os.path.join(self.datadir, "postmaster.pid"))

    def create_database(self, name):
        """Creates an empty database and returns its conninfo."""
        self.psql('CREATE DATABASE "%s"' % name, dbname="postgres")
        return self.conninfo_for(name)

    def psql(self, sql, dbname=None, timeout=30, user="postgres"):
        """Runs `sql` and returns the rows of its last statement as lists of
        strings (NULL and '' both read as '').  Raises StackError on error."""
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-t", "--csv",
                "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                "-p", str(self.port), "-U", user,
                "-d", dbname or self.dbname, "-c", sql]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=clean_env({"PGCONNECT_TIMEOUT": "5"}),
                              timeout=timeout)
        if proc.returncode != 0:
            raise StackError("psql %r: %s" % (
                sql, proc.stderr.decode(errors="replace").strip()))
        text = proc.stdout.decode()
        return [row for row in csv.reader(io.StringIO(text)) if row]

    def scalar(self, sql, dbname=None):
        """The single value `sql` returns, or None if it returns no row."""
        rows = self.psql(sql, dbname=dbname)
        return rows[0][0] if rows else None

    def dump(self, dbname=None, timeout=60):
        """pg_dump of a whole database (schema and data) as text."""
        return self._run("pg_dump", "-h", self.sockdir, "-p", str(self.port),
                         "-U", "postgres", "-d", dbname or self.dbname,
                         timeout=timeout)

    def hold_lock(self, table, dbname=None):
        """Opens a session holding ACCESS EXCLUSIVE on `table` until the
        returned TableLock is released."""
        lock = TableLock(self, table, dbname or self.dbname)
        self._lockers.append(lock)
        return lock

    def hold_rows(self, table, where, dbname=None):
        """Opens a session holding the rows of `table` that match `where`
        (SELECT ... FOR UPDATE) until the returned TableLock is released."""
        lock = TableLock(self, table, dbname or self.dbname, where=where)
        self._lockers.append(lock)
        return lock

    def close(self):
        for lock in self._lockers:
            lock.release()
        pidfile = os.path.join(self.datadir, "postmaster.pid")
        try:
            if os.path.exists(pidfile):
                self._run("pg_ctl", "-w", "-t", "10", "-D", self.datadir,
                          "-m", "immediate", "stop", timeout=20)
        except (StackError, subprocess.TimeoutExpired):
            try:
                with open(pidfile) as f:
                    os.kill(int(f.readline()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        _unregister(self)

    def __repr__(self):
        return "PgCluster(%s)" % self.datadir


class TableLock:
    """A psql session inside a transaction holding a table lock, or with
    `where`, the lock of the rows that match."""

    def __init__(self, pg, table, dbname, where=None):
        self.pg = pg
        argv = [os.path.join(pg.bindir, "psql"), "-X", "-q",
                "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir,
                "-p", str(pg.port), "-U", "postgres", "-d", dbname]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     env=clean_env(), start_new_session=True)
        if where is not None:
            self.proc.stdin.write(
                ("SET application_name = 'e2e-rows';\nBEGIN;\n"
                 "SELECT 1 FROM %s WHERE %s FOR UPDATE;\n"
                 "SELECT 'e2e-rows-held';\n" % (table, where)).encode())
            self.proc.stdin.flush()
            wait_until(lambda: pg.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE "
                "application_name = 'e2e-rows' AND state = "
                "'idle in transaction' AND query LIKE '%%e2e-rows-held%%'",
                dbname=dbname) == "1", 10, what="the rows of %s" % table)
            self.dbname = dbname
            return
        self.proc.stdin.write(
            ("SET application_name = 'e2e-lock';\n"
             "BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\n"
             "SELECT 1;\n" % table).encode())
        self.proc.stdin.flush()
        wait_until(lambda: pg.scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
            "USING (pid) WHERE a.application_name = 'e2e-lock' "
            "AND l.mode = 'AccessExclusiveLock' AND l.granted "
            "AND l.relation = '%s'::regclass" % table, dbname=dbname) == "1",
            10, what="the lock on %s" % table)
        self.dbname = dbname

    def waiters(self):
        """How many other sessions wait for a lock right now."""
        return int(self.pg.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
            "'Lock' AND datname = '%s'" % self.dbname, dbname="postgres"))

    def release(self):
        if self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write(b"COMMIT;\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ---------------------------------------------------------------------------
# keygated

def _secret():
    return secrets.token_hex(32)


def audit_key(hmac_secret):
    """What keygated gives each of its sessions as keygate.audit_key: the
    HMAC-SHA256 inner and outer padded keys, hex, of a key derived from
    hmac_secret.  Returns (setting, derived key)."""
    key = hmac.new(hmac_secret.encode(), b"keygate-audit-chain",
                   hashlib.sha256).digest()
    block = key.ljust(64, b"\0")
    pads = bytes(b ^ 0x36 for b in block) + bytes(b ^ 0x5c for b in block)
    return pads.hex(), key


def default_config(workdir, conninfo):
    """The configuration every test keygated starts from."""
    return collections.OrderedDict([
        ("listen", "unix:%s" % os.path.join(workdir, "keygate.sock")),
        ("workers", 3),
        ("shutdown_timeout", 5),
        ("database_url", conninfo),
        ("mode", "development"),
        ("hmac_secret", _secret()),
        ("jwt_secret", _secret()),
        ("master_keys", "1:" + base64.b64encode(
            secrets.token_bytes(32)).decode()),
        ("max_body_bytes", 1048576),
        ("sql_dir", SQL_DIR),
        # Tests drive keys far harder than a client would; the ones about
        # rate limits set their own.
        ("rate_limit_max", 100000),
        ("rate_limit_window", "1 second"),
        # Likewise with bad credentials; the tests about failed
        # authentications set their own limit.
        ("auth_failures_max", 1000000),
        # Gateway tests are about routing and translation; the ones about
        # credits turn charging on.
        ("credits_enforce", "false"),
    ])


def keygatectl(config_path, *args, env=None, timeout=60):
    """Runs keygatectl --config FILE ARGS; returns the CompletedProcess with
    text stdout and stderr."""
    return subprocess.run([KEYGATECTL, "--config", config_path] + list(args),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=clean_env(env),
                          timeout=timeout, text=True, errors="replace")


class Keygated:
    """keygated in the foreground, with its own config file.

    `config` entries replace or add to default_config(); a value of None
    removes a key.  With migrate=True, `keygatectl migrate` runs first (with
    `migrate_env` in its environment).  With start=False nothing runs until
    start() is called.  The constructor returns once the listen socket
    accepts connections and `workers` workers exist."""

    def __init__(self, workdir, conninfo, migrate=False, migrate_env=None,
                 start=True, env=None, **config):
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "keygate.conf")
        self.stdout_path = os.path.join(workdir, "keygated.stdout")
        self.stderr_path = os.path.join(workdir, "keygated.stderr")
        self.env = env or {}
        self.config = default_config(workdir, conninfo)
        self._apply(config)
        self.proc = None
        self.migrate_result = None
        self.started_at = time.time()
        instances.append(self)
        _register(self)
        self.write_config()
        try:
            if migrate:
                self.migrate_result = self.migrate(env=migrate_env)
                if self.migrate_result.returncode != 0:
                    raise StackError(
                        "keygatectl migrate failed (%d):\n%s%s" % (
                            self.migrate_result.returncode,
                            self.migrate_result.stdout,
                            self.migrate_result.stderr))
            if start:
                self.start()
        except BaseException:
            self.close()
            raise

    def _apply(self, changes):
        for key, value in changes.items():
            if value is None:
                self.config.pop(key, None)
            else:
                self.config[key] = value

    # -- configuration

    def config_text(self):
        """The config file; a list value is one line per item (authorize)."""
        lines = ["# keygated configuration for an end-to-end test"]
        for k, v in self.config.items():
            lines += ["%s = %s" % (k, x) for x in (
                v if isinstance(v, (list, tuple)) else [v])]
        return "\n".join(lines) + "\n"

    def write_config(self):
        self.write_config_text(self.config_text())

    def write_config_text(self, text):
        """Replaces the config file with `text`, as is."""
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def rewrite_config(self, **changes):
        """Applies `changes` (None removes a key) and rewrites the file."""
        self._apply(changes)
        self.write_config()

    @property
    def socket_path(self):
        listen = str(self.config.get("listen", ""))
        return listen[len("unix:"):] if listen.startswith("unix:") else None

    @property
    def tcp_address(self):
        listen = str(self.config.get("listen", ""))
        if not listen.startswith("tcp:"):
            return None
        host, port = listen[len("tcp:"):].rsplit(":", 1)
        return (host, int(port))

    @property
    def log_file(self):
        return self.config.get("log_file")

    # -- processes

    def migrate(self, env=None):
        return keygatectl(self.config_path, "migrate", env=env)

    def ctl(self, *args, env=None):
        return keygatectl(self.config_path, *args, env=env)

    def start(self, wait=True, timeout=15):
        if self.socket_path and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.started_at = time.time()
        self.proc = _Process([KEYGATED, "--config", self.config_path],
                             self.stdout_path, self.stderr_path,
                             clean_env(self.env), self.workdir)
        if wait:
            self.wait_ready(timeout)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def wait_ready(self, timeout=15):
        """Waits until the socket accepts and all workers exist."""
        address = self.socket_path or self.tcp_address

        def ready():
            if self.proc.poll() is not None:
                raise StackError("keygated exited with %s while starting:\n%s"
                                 % (self.proc.poll(), self.log_tail()))
            return is_listening(address)
        wait_until(ready, timeout, what="keygated to accept on %s" % (address,))
        self.wait_workers(timeout=timeout)

    def expected_workers(self):
        try:
            n = int(self.config.get("workers", 0))
        except ValueError:
            return None
        return n if n > 0 else 2 * os.cpu_count()

    def wait_workers(self, count=None, timeout=10):
        """Waits until `count` (default: the configured number) workers
        run; returns their pids."""
        count = count or self.expected_workers()
        return wait_until(lambda: (lambda p: p if len(p) == count else None)(
            self.worker_pids()), timeout,
            what="%s keygated workers" % count)

    def worker_pids(self):
        """The pids of the master's live children."""
        if not self.proc or self.proc.poll() is not None:
            return set()
        return child_pids(self.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.signal(sig)

    def sighup(self):
        self.signal(signal.SIGHUP)

    def sigterm(self):
        self.signal(signal.SIGTERM)

    def wait(self, timeout):
        """keygated's exit status (negative for a signal), or None if it is
        still running after `timeout` seconds."""
        return self.proc.wait(timeout)

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    # -- logs

    def log_paths(self):
        paths = [self.stderr_path, self.stdout_path]
        if self.log_file:
            paths.insert(0, self.log_file)
        return paths

    def log_text(self):
        """Everything keygated wrote to stderr, stdout and log_file."""
        parts = []
        for path in self.log_paths():
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    parts.append(f.read())
            except OSError:
                pass
        return "".join(p if p.endswith("\n") or not p else p + "\n"
                       for p in parts)

    def log_lines(self):
        """Every log line that parses as a JSON object, in file order."""
        lines = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                lines.append(obj)
        return lines

    def request_log(self, request_id):
        """The access-log lines carrying `request_id`."""
        return [l for l in self.log_lines()
                if l.get("request_id") == request_id and "status" in l]

    def log_tail(self, lines=40):
        out = []
        for path in self.log_paths():
            if os.path.exists(path) and os.path.getsize(path):
                out.append("==> %s <==\n%s" % (path, tail(path, lines)))
        return "\n".join(out) or "(keygated wrote nothing)"

    def close(self):
        """SIGTERM, three seconds' grace, then SIGKILL to the whole process
        group, so that no worker outlives the test."""
        if self.proc is None:
            _unregister(self)
            return
        try:
            if self.proc.poll() is None:
                self.proc.signal(signal.SIGTERM)
                self.proc.wait(3)
        finally:
            self.proc.kill_group()
            _unregister(self)

    def __repr__(self):
        return "Keygated(pid=%s, %s)" % (self.pid, self.workdir)


# ---------------------------------------------------------------------------
# Web servers

def _replace_once(text, old, new, what):
    """`text` with `old` replaced by `new`; `old` must occur."""
    if old not in text:
        raise StackError("%s no longer contains %r" % (what, old))
    return text.replace(old, new)


class _WebServer:
    """A web server in the foreground, in front of keygated's socket, on a
    free loopback port, with its configuration, logs and pid file in a
    private directory.  `extra` holds configuration lines for keygate's
    server block (a VirtualHost, an nginx server, lighttpd's global
    scope); `main_extra` lines for the level around it (Apache's main
    server, nginx's http block).  Subclasses set NAME and write their
    configuration in _configure(), which returns the command line."""

    NAME = "web server"

    def __init__(self, workdir, socket_path, port=None, timeout=15,
                 extra="", main_extra=""):
        self.workdir = workdir
        self.socket_path = socket_path
        self.port = port or free_tcp_port()
        self.extra = extra
        self.main_extra = main_extra
        self.dir = os.path.join(workdir, self.NAME)
        self.stdout_path = os.path.join(workdir, self.NAME + ".stdout")
        self.stderr_path = os.path.join(workdir, self.NAME + ".stderr")
        self.started_at = time.time()
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        instances.append(self)
        _register(self)
        argv, env = self._configure()
        self.proc = _Process(argv, self.stdout_path, self.stderr_path,
                             clean_env(dict(env, PATH=os.environ.get(
                                 "PATH", "") + ":/usr/sbin:/sbin")),
                             self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise StackError("%s exited with %s:\n%s" % (
                    self.NAME, self.proc.poll(), self.log_tail()))
            return is_listening(("127.0.0.1", self.port))
        try:
            wait_until(ready, timeout, what="%s on port %d" % (self.NAME,
                                                               self.port))
        except BaseException:
            self.close()
            raise

    def _configure(self):
        raise NotImplementedError

    def unprivileged(self, argv):
        """`argv` run as `nobody` when the tests run as root, with the
        group of keygated's socket added, as the package has the web
        server's user join the keygate group.  The private directory
        becomes nobody's."""
        if os.geteuid() != 0:
            return argv
        pw = pwd.getpwnam("nobody")
        for root, dirs, files in os.walk(self.dir):
            for name in [root] + [os.path.join(root, f) for f in files]:
                os.chown(name, pw.pw_uid, pw.pw_gid)
        if isinstance(self.socket_path, str):
            groups = "--groups=%d" % os.stat(self.socket_path).st_gid
        else:
            groups = "--clear-groups"   # keygated listens on TCP
        return ["setpriv", "--reuid=%d" % pw.pw_uid,
                "--regid=%d" % pw.pw_gid, groups, "--"] + argv

    def snippet(self, path, replacements):
        """The text of fcgi/`path` with each (old, new) pair replaced; the
        socket path and the port are all a test changes, and the log
        directory where the snippet names one."""
        with open(os.path.join(SRCDIR, "fcgi", path)) as f:
            text = f.read()
        for old, new in replacements:
            text = _replace_once(text, old, new, "fcgi/" + path)
        return text

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def error_log(self):
        return os.path.join(self.dir, "error.log")

    @property
    def access_log(self):
        """The access log of keygate's server block."""
        raise NotImplementedError

    def access_log_text(self):
        try:
            with open(self.access_log, encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines=40):
        out = []
        for path in (self.error_log, self.stderr_path):
            if os.path.exists(path) and os.path.getsize(path):
                out.append("==> %s <==\n%s" % (path, tail(path, lines)))
        return "\n".join(out) or "(%s wrote nothing)" % self.NAME

    def close(self):
        try:
            if self.proc is not None:
                self.proc.signal(signal.SIGTERM)
                self.proc.wait(5)
        finally:
            if self.proc is not None:
                self.proc.kill_group()
            _unregister(self)

    def __repr__(self):
        return "%s(port=%d)" % (type(self).__name__, self.port)


class Lighttpd(_WebServer):
    """lighttpd -D -f fcgi/lighttpd.conf, pointed at `socket_path` through
    the overrides file that fcgi/lighttpd-keygate.conf reads."""

    NAME = "lighttpd"

    def _configure(self):
        d = self.dir
        self.overrides = self.write("overrides.conf", "".join(
            "var.keygate_%s := %s\n" % kv for kv in (
                ("port", self.port), ("bind", '"127.0.0.1"'),
                ("socket", '"%s"' % self.socket_path),
                ("state_dir", '"%s"' % d),
                ("error_log", '"%s"' % self.error_log),
                ("access_log", '"%s"' % self.access_log))))
        conf = LIGHTTPD_CONF
        if self.extra or self.main_extra:
            # lighttpd resolves a relative include against the directory
            # of the file given with -f: the fcgi/ files come along.
            for name in ("lighttpd.conf", "lighttpd-keygate.conf"):
                shutil.copy(os.path.join(SRCDIR, "fcgi", name), d)
            conf = self.write("main.conf", 'include "lighttpd.conf"\n'
                              '%s\n%s\n' % (self.main_extra, self.extra))
        return (["lighttpd", "-D", "-f", conf],
                {"KEYGATE_LIGHTTPD_OVERRIDES": self.overrides})

    @property
    def access_log(self):
        return os.path.join(self.dir, "access.log")


class Apache(_WebServer):
    """Apache httpd 2.4 in the foreground with a main configuration of its
    own that loads the modules fcgi/apache.conf needs and includes it."""

    NAME = "apache"
    MODULES = ("mpm_event", "authz_core", "authz_host", "proxy",
               "proxy_fcgi", "setenvif", "env")
    MODULE_DIR = "/usr/lib/apache2/modules"

    def _configure(self):
        d = self.dir
        if isinstance(self.socket_path, str):
            backend = ("/run/keygate/keygate.sock", self.socket_path)
        else:
            # keygated on TCP (as mod_authnz_fcgi needs): (host, port).
            backend = ("unix:/run/keygate/keygate.sock|fcgi://localhost/",
                       "fcgi://%s:%d/" % self.socket_path)
        vhost = self.snippet("apache.conf", [
            backend, ("127.0.0.1:8080", "127.0.0.1:%d" % self.port)])
        vhost = _replace_once(vhost, "</VirtualHost>",
                              self.extra + "\n</VirtualHost>",
                              "fcgi/apache.conf")
        self.write("keygate.conf", vhost)
        lines = ["LoadModule %s_module %s/mod_%s.so" % (m, self.MODULE_DIR, m)
                 for m in self.MODULES]
        lines += [
            'ServerRoot "%s"' % d,
            "ServerName localhost",
            'PidFile "%s/apache2.pid"' % d,
            'DefaultRuntimeDir "%s"' % d,
            "Mutex file:%s default" % d,
            'ErrorLog "%s"' % self.error_log,
            "LogLevel warn",
            "StartServers 1",
            "ServerLimit 2",
            "ThreadsPerChild 16",
            "MaxRequestWorkers 32",
            'Define APACHE_LOG_DIR "%s"' % d,
            self.main_extra,
            'Include "%s/keygate.conf"' % d]
        conf = self.write("apache2.conf", "\n".join(lines) + "\n")
        return self.unprivileged(["apache2", "-DFOREGROUND", "-f", conf]), {}

    @property
    def access_log(self):
        return os.path.join(self.dir, "keygate-access.log")

    def log_tail(self, lines=40):
        text = super().log_tail(lines)
        path = os.path.join(self.dir, "keygate-error.log")
        if os.path.exists(path) and os.path.getsize(path):
            text += "\n==> %s <==\n%s" % (path, tail(path, lines))
        return text


class Nginx(_WebServer):
    """nginx in the foreground with a main configuration of its own whose
    http block includes fcgi/nginx.conf."""

    NAME = "nginx"
    TEMP_PATHS = ("client_body", "fastcgi", "proxy", "uwsgi", "scgi")

    def _configure(self):
        d = self.dir
        server = self.snippet("nginx.conf", [
            ("unix:/run/keygate/keygate.sock", "unix:" + self.socket_path),
            ("127.0.0.1:8080", "127.0.0.1:%d" % self.port),
            ("/var/log/nginx/", d + "/")])
        # The extra lines go into the server block, before its last brace.
        cut = server.rindex("}")
        self.write("keygate.conf", server[:cut] + self.extra + "\n" +
                   server[cut:])
        shutil.copy("/etc/nginx/fastcgi_params", d)
        lines = ["daemon off;", "worker_processes 2;",
                 'pid "%s/nginx.pid";' % d,
                 'error_log "%s" warn;' % self.error_log,
                 "events { worker_connections 256; }", "http {",
                 '    access_log "%s/other-access.log";' % d]
        lines += ['    %s_temp_path "%s/%s";' % (t, d, t)
                  for t in self.TEMP_PATHS]
        lines += [self.main_extra, '    include "%s/keygate.conf";' % d, "}"]
        conf = self.write("nginx.conf", "\n".join(lines) + "\n")
        return self.unprivileged(["nginx", "-e", self.error_log, "-p", d,
                                  "-c", conf]), {}

    @property
    def access_log(self):
        return os.path.join(self.dir, "keygate-access.log")


WEB_SERVERS = collections.OrderedDict([
    ("lighttpd", Lighttpd), ("apache", Apache), ("nginx", Nginx)])


# ---------------------------------------------------------------------------
# HTTP client

Response = collections.namedtuple("Response", "status headers body json")


def request(method, url, body=None, headers=None, timeout=10):
    """Sends one request on a fresh connection.

    `body` may be bytes, str, or any other value, which is sent as JSON.
    Returns Response(status, headers with lower-case names, body bytes,
    parsed JSON or None).  Connection errors propagate."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                      timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        got = {}
        for name, value in resp.getheaders():
            name = name.lower()
            got[name] = got[name] + ", " + value if name in got else value
        status = resp.status
    finally:
        conn.close()
    parsed = None
    if data:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
    resp = Response(status, got, data, parsed)
    if VALIDATE_OPENAPI and _is_keygate_path(parts.path):
        assert_documented(method, parts.path, resp)
    return resp


# ---------------------------------------------------------------------------
# FastCGI client: keygated's socket spoken to as a web server does

FCGI_BEGIN_REQUEST, FCGI_ABORT_REQUEST, FCGI_END_REQUEST = 1, 2, 3
FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 4, 5, 6


def fcgi_record(type_, content=b"", request_id=1):
    return struct.pack(">BBHHBB", 1, type_, request_id, len(content), 0,
                       0) + content


def fcgi_pair(name, value):
    out = b""
    for item in (name, value):
        n = len(item)
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 1 << 31)
    return out + name + value


def fcgi_send(socket_path, method, uri, params=None, body=b""):
    """Sends one request (the CGI variables a web server sets, plus
    `params`) to keygated's Unix socket; returns the connection."""
    allp = {"REQUEST_METHOD": method, "REQUEST_URI": uri,
            "SCRIPT_NAME": uri.split("?")[0], "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1"}
    if body:
        allp["CONTENT_LENGTH"] = str(len(body))
    allp.update(params or {})
    pairs = b"".join(fcgi_pair(k.encode(), v.encode())
                     for k, v in allp.items())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(socket_path)
    s.sendall(fcgi_record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", 1, 0)) +
              fcgi_record(FCGI_PARAMS, pairs) + fcgi_record(FCGI_PARAMS) +
              fcgi_record(FCGI_STDIN, body) + fcgi_record(FCGI_STDIN))
    return s


def fcgi_answer(s):
    """The STDOUT of a FastCGI answer, up to END_REQUEST."""
    buf, out = b"", b""
    while True:
        while len(buf) < 8:
            chunk = s.recv(65536)
            if not chunk:
                return out
            buf += chunk
        _, type_, _, clen, plen, _ = struct.unpack(">BBHHBB", buf[:8])
        while len(buf) < 8 + clen + plen:
            chunk = s.recv(65536)
            if not chunk:
                return out
            buf += chunk
        if type_ == FCGI_STDOUT:
            out += buf[8:8 + clen]
        buf = buf[8 + clen + plen:]
        if type_ == FCGI_END_REQUEST:
            return out


def fcgi_request(socket_path, method, uri, params=None, body=b""):
    """One request over FastCGI: (the header block, the body) keygated
    wrote, as bytes."""
    s = fcgi_send(socket_path, method, uri, params, body)
    try:
        head, _, payload = fcgi_answer(s).partition(b"\r\n\r\n")
    finally:
        s.close()
    return head, payload


def fcgi_response(head, payload):
    """fcgi_request()'s answer as a Response(status, headers with
    lower-case names, body, parsed JSON or None)."""
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(headers.pop("status", "200").split()[0])
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = None
    return Response(status, headers, payload, parsed)


def parse_metrics(text):
    """The samples of a Prometheus text exposition as {(name, ((label,
    value), ...)): float}, labels sorted, and {family: type}.  Raises
    ValueError on a line that is not one."""
    samples, types = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? '
                         r'(-?[0-9.e+]+|\+Inf|NaN)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            types[family] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            raise ValueError("not a sample: %r" % line)
        labels = tuple(sorted(label_re.findall(m.group(3) or "")))
        key = (m.group(1), labels)
        if key in samples:
            raise ValueError("sample twice: %r" % line)
        samples[key] = float(m.group(4))
    return samples, types


Sample = collections.namedtuple("Sample", "start end status response error")


class Load:
    """`threads` client threads sending the same request in a loop.

    Each outcome is kept as a Sample(start, end, status, response, error),
    with time.monotonic() timestamps; `status` is None and `error` a string
    when the request raised.  The load stops on stop(), after `duration`
    seconds, or after `max_requests` requests in total, whichever is first."""

    def __init__(self, url, threads=4, method="GET", body=None, headers=None,
                 duration=60, max_requests=20000, interval=0.0, timeout=10):
        self.url = url
        self.method = method
        self.body = body
        self.headers = headers
        self.duration = duration
        self.max_requests = max_requests
        self.interval = interval
        self.timeout = timeout
        self.samples = []
        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True,
                                          name="load-%d" % i)
                         for i in range(threads)]
        self._deadline = None

    def start(self):
        self._deadline = time.monotonic() + self.duration
        for t in self._threads:
            t.start()
        _register(self)
        return self

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self._issued >= self.max_requests:
                    return
                self._issued += 1
            start = time.monotonic()
            try:
                resp = request(self.method, self.url, self.body, self.headers,
                               self.timeout)
                sample = Sample(start, time.monotonic(), resp.status, resp,
                                None)
            except Exception as exc:
                sample = Sample(start, time.monotonic(), None, None,
                                "%s: %s" % (type(exc).__name__, exc))
            with self._lock:
                self.samples.append(sample)
            if self.interval:
                self._stop.wait(self.interval)

    def stop(self, timeout=None):
        """Stops the threads and returns the samples, oldest first."""
        self._stop.set()
        wait = (self.timeout + 2) if timeout is None else timeout
        deadline = time.monotonic() + wait
        for t in self._threads:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        _unregister(self)
        return self.results()

    close = stop

    def results(self):
        with self._lock:
            return sorted(self.samples, key=lambda s: s.start)

    def count(self):
        with self._lock:
            return len(self.samples)

    def wait_for(self, count, timeout=10):
        """Waits until at least `count` more requests have completed."""
        target = self.count() + count
        wait_until(lambda: self.count() >= target, timeout,
                   what="%d more requests" % count)

    def join(self, timeout):
        """Waits for the load to end by itself (duration or max_requests)."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.stop(0)

    def failures(self, ok=(200,)):
        """Samples whose status is not in `ok`."""
        return [s for s in self.results() if s.status not in ok]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def describe(samples, limit=10):
    """A short, readable list of samples for assertion messages."""
    out = []
    for s in samples[:limit]:
        if s.error:
            out.append("t=%.3f %s" % (s.start, s.error))
        else:
            out.append("t=%.3f %d %s" % (s.start, s.status,
                                         s.response.body[:200]))
    if len(samples) > limit:
        out.append("... and %d more" % (len(samples) - limit))
    return "\n".join(out)


# ---------------------------------------------------------------------------
# A whole stack

class Stack:
    """keygated (and its database) behind a web server: `web` names one of
    WEB_SERVERS (lighttpd by default), `web_extra` and `web_main_extra`
    are its `extra` and `main_extra` configuration lines.

    With `dbname`, a new database of that name is created in `pg` first.
    The database is migrated with the development key seeded, so DEV_KEY
    works as an admin key."""

    def __init__(self, workdir, pg, dbname=None, migrate=True,
                 seed_dev_key=True, web="lighttpd", web_extra="",
                 web_main_extra="", **config):
        self.pg = pg
        self.dbname = dbname or pg.dbname
        conninfo = (pg.create_database(dbname) if dbname
                    else pg.conninfo)
        env = {"KEYGATE_SEED_DEV_KEY": "true"} if seed_dev_key else {}
        self.kg = Keygated(workdir, conninfo, migrate=migrate,
                           migrate_env=env, **config)
        try:
            self.web = WEB_SERVERS[web](workdir, self.kg.socket_path or
                                        self.kg.tcp_address,
                                        extra=web_extra,
                                        main_extra=web_main_extra)
        except BaseException:
            self.kg.close()
            raise

    @property
    def url(self):
        return self.web.url

    def request(self, method, path, body=None, headers=None, timeout=10):
        return request(method, self.url + path, body, headers, timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def psql(self, sql):
        return self.pg.psql(sql, dbname=self.dbname)

    def close(self):
        self.web.close()
        self.kg.close()


def b64url(data):
    """base64url without padding, as JWTs use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_token(secret, claims, header=None, sign=True):
    """An HS256 JWT of `claims` signed with `secret` (unsigned, with an
    empty signature, when sign is false)."""
    h = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    p = b64url(json.dumps(claims).encode())
    if not sign:
        return "%s.%s." % (h, p)
    mac = hmac.new(secret.encode(), ("%s.%s" % (h, p)).encode(),
                   hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64url(mac))


ROOT_TENANT = "00000000-0000-0000-0000-000000000001"
# The header that carries each provider's key inline in a gateway call.
INLINE_KEY_HEADERS = {"openai": "X-OpenAI-Key",
                      "anthropic": "X-Anthropic-Key",
                      "google": "X-Google-Key",
                      "openrouter": "X-OpenRouter-Key"}
# A model of each provider.
PROVIDER_MODELS = {"openai": "gpt-4o-mini",
                   "anthropic": "claude-3-5-haiku-latest",
                   "google": "gemini-2.0-flash"}


class GuardedService:
    """A service behind the web server of a Stack, guarded by keygate from
    fcgi/<web>-authorizer.conf with only the ports, the socket path and
    the document root changed: static files (FILES) and a program that
    prints the KEYGATE_* variables it was given, at `echo_path` (a CGI
    program for lighttpd, an application nginx proxies to).

    `json_refusals` says whether the web server passes keygate's JSON
    refusal to the client (lighttpd; Apache too, with a Content-Type of
    its own, so `json_content_type` is false there) or answers its own
    page with the reason in X-Keygate-Error (nginx, whose auth_request
    knows only 401 and 403).  Use guarded_stack() to make one."""

    FILES = {"reports/q3.txt": "quarter three\n",
             "reports/admin/plan.txt": "the plan\n",
             "secret.txt": "not for anyone\n"}
    ENV_CGI = ("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
               "env | grep '^KEYGATE_' | sort\n")

    def __init__(self, root, web):
        self.root = root
        self.web = web
        self.port = free_tcp_port()
        self.json_refusals = web != "nginx"
        self.json_content_type = web == "lighttpd"
        self.echo = None
        for name, text in dict(self.FILES, **{
                "reports/env.cgi": self.ENV_CGI}).items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        for d, _, _ in os.walk(root):
            os.chmod(d, 0o755)
        if web == "nginx":
            self.echo = EchoBackend()
        self.echo_path = "/app/env" if self.echo else "/reports/env.cgi"

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def status_of(self, status):
        """The status a client sees for keygate's refusal `status`."""
        return status if self.json_refusals or status == 401 else 403

    def snippet(self, socket_path, dest):
        """fcgi/<web>-authorizer.conf for this service, written to dest."""
        name = "%s-authorizer.conf" % self.web
        with open(os.path.join(SRCDIR, "fcgi", name)) as f:
            text = f.read()
        changes = [("127.0.0.1:8081", "127.0.0.1:%d" % self.port),
                   ("/srv/reports", self.root)]
        if self.web == "apache":
            changes += [("fcgi://127.0.0.1:9000/",
                         "fcgi://%s:%d/" % socket_path)]
        elif self.web == "nginx":
            changes += [("unix:/run/keygate/keygate.sock",
                         "unix:" + socket_path),
                        ("127.0.0.1:8082", "127.0.0.1:%d" % self.echo.port)]
        else:
            changes += [("/run/keygate/keygate.sock", socket_path)]
        for old, new in changes:
            text = _replace_once(text, old, new, "fcgi/" + name)
        with open(dest, "w") as f:
            f.write(text)

    def web_config(self, socket_path, dest):
        """The Stack arguments that add the service to the web server."""
        self.snippet(socket_path, dest)
        if self.web == "nginx":
            return {"web_main_extra": 'include "%s";' % dest}
        if self.web == "apache":
            # The modules a2enmod would enable, and CGI for env.cgi.
            lines = ["LoadModule %s_module %s/mod_%s.so" % (
                m, Apache.MODULE_DIR, m) for m in (
                "authnz_fcgi", "authn_core", "authz_user", "cgid")]
            lines += ['Include "%s"' % dest,
                      '<Directory "%s/reports">' % self.root,
                      "    Options +ExecCGI",
                      '    <Files "env.cgi">',
                      "        SetHandler cgi-script",
                      "    </Files>",
                      "</Directory>"]
            return {"web_main_extra": "\n".join(lines)}
        # lighttpd runs the .cgi files as the service's programs.
        return {"web_extra": 'include "%s"\nserver.modules += ( "mod_cgi" )'
                             '\ncgi.assign = ( ".cgi" => "" )\n' % dest}


def guarded_stack(workdir, pg, dbname, web="lighttpd", **config):
    """(Stack, GuardedService): keygated behind `web`, which also serves
    a GuardedService that keygate guards by its `authorize` rules."""
    service = GuardedService(os.path.join(workdir, "service"), web)
    if web == "apache":
        # mod_authnz_fcgi reaches authorizers over TCP only.
        address = ("127.0.0.1", free_tcp_port())
        config["listen"] = "tcp:%s:%d" % address
    else:
        # Where default_config() puts keygated's socket.
        address = os.path.join(workdir, "keygate.sock")
    extra = service.web_config(address,
                               os.path.join(workdir, "authorizer.conf"))
    stack = Stack(workdir, pg, dbname=dbname, web=web, **dict(config,
                                                              **extra))
    return stack, service


def new_api_key(stack, scopes, **fields):
    """A new key with `scopes`, made with the development key through the
    API: (id, secret)."""
    resp = stack.post("/v1/api_keys", dict(
        {"name": "e2e-" + secrets.token_hex(3), "scopes": scopes},
        **fields), headers=auth())
    if resp.status != 201:
        raise StackError("creating a key: %d %r" % (resp.status,
                                                      resp.body[:300]))
    return resp.json["id"], resp.json["key"]


def statement_calls(stack, fragment):
    """How many times the stack's database has run the statements whose
    text holds `fragment`, as PostgreSQL counts them (pg_stat_statements)."""
    stack.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    rows = stack.psql("SELECT coalesce(sum(calls), 0) FROM "
                      "pg_stat_statements WHERE dbid = (SELECT oid FROM "
                      "pg_database WHERE datname = current_database()) AND "
                      "query LIKE '%%%s%%'" % fragment.replace("'", "''"))
    return int(rows[0][0])


def key_lookups(stack):
    """How many times keygated has looked an API key up."""
    return statement_calls(stack, "OR k.prev_key_prefix = $1")


def auth(key=DEV_KEY):
    """Headers presenting `key` as a bearer token."""
    return {"Authorization": "Bearer " + key}


# ---------------------------------------------------------------------------
# Which worker served what

PARALLEL = 24       # more concurrent requests than a stack has workers


def rid(tag="t"):
    """A fresh X-Request-Id."""
    return "e2e-%s-%s" % (tag, secrets.token_hex(8))


def with_rid(headers, request_id):
    return dict(headers, **{"X-Request-Id": request_id})


def served_by(stack, request_ids, timeout=10):
    """{request id: worker pid} from the access log."""
    wanted = set(request_ids)

    def find():
        got = {}
        for line in stack.kg.log_lines():
            if line.get("request_id") in wanted and "status" in line:
                got[line["request_id"]] = line.get("pid")
        return got if len(got) == len(wanted) else None
    return wait_until(find, timeout, what="access-log lines")


def burst(stack, method, path, headers, body=None, n=PARALLEL):
    """n requests released at once; returns [(request id, Response)]."""
    barrier = threading.Barrier(n)
    ids = [rid("burst") for _ in range(n)]
    out = [None] * n

    def run(i):
        try:
            barrier.wait(10)
            out[i] = stack.request(method, path, body,
                                   with_rid(headers, ids[i]))
        except Exception as exc:  # reported by the caller
            out[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return list(zip(ids, out))


def on_every_worker(stack, method, path, headers, check, body=None):
    """Sends bursts (the first one at once) until every worker has served
    one; check(resp) must hold for every single response.  Returns how
    many requests were sent."""
    workers = stack.kg.worker_pids()
    seen = set()
    sent = 0
    for _ in range(5):
        results = burst(stack, method, path, headers, body)
        sent += len(results)
        for request_id, resp in results:
            assert not isinstance(resp, Exception), resp
            check(resp)
        seen |= set(served_by(stack, [r for r, _ in results]).values())
        if workers <= seen:
            return sent
    assert workers <= seen, "workers %r, served by %r" % (workers, seen)


def assert_scopes_everywhere(stack, key, scopes):
    """Every worker refuses `key` the list of API keys (which it lacks
    the scope for) and answers its whoami with exactly `scopes`."""
    on_every_worker(stack, "GET", "/v1/api_keys?limit=1", auth(key),
                    lambda r: assert_error(r, 403,
                                           "insufficient_permissions"))

    def new_scopes(r):
        assert r.status == 200, r.body
        assert r.json["scopes"] == scopes
    on_every_worker(stack, "GET", "/v1/auth/whoami", auth(key), new_scopes)


# ---------------------------------------------------------------------------
# Assertions shared by the tests

def assert_json_response(resp):
    """Every keygate response: JSON, not cacheable, with a request id."""
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/json", (
        "Content-Type is %r; body %r" % (ctype, resp.body[:300]))
    assert resp.json is not None, "body is not JSON: %r" % resp.body[:300]
    assert "no-store" in resp.headers.get("cache-control", ""), (
        "Cache-Control is %r" % resp.headers.get("cache-control"))
    assert resp.headers.get("x-request-id"), "no X-Request-Id header"


def count_rows(stack, table, where="true"):
    """How many rows of `table` in the stack's database match `where`."""
    return int(stack.pg.scalar("SELECT count(*) FROM %s WHERE %s"
                               % (table, where), dbname=stack.dbname))


def audit_rows(stack, request_id):
    """The audit_log rows a request wrote, as dicts, oldest first."""
    rows = stack.psql("SELECT row_to_json(a)::text FROM audit_log a "
                      "WHERE request_id = '%s' ORDER BY id" % request_id)
    return [json.loads(r[0]) for r in rows]


def assert_error(resp, status, code=None):
    """`resp` is an error of `status` (and `code`) in keygate's shape:
    {"error": {"message": str, "type": str, "code": str}}."""
    assert resp.status == status, "expected %d, got %d: %r" % (
        status, resp.status, resp.body[:300])
    assert_json_response(resp)
    err = resp.json.get("error") if isinstance(resp.json, dict) else None
    assert isinstance(err, dict), "no error object: %r" % resp.json
    for field in ("message", "type", "code"):
        assert isinstance(err.get(field), str) and err[field], (
            "error.%s missing or empty: %r" % (field, err))
    if code is not None:
        assert err["code"] == code, "error code %r, expected %r" % (
            err["code"], code)
    return err


def sse_data(resp):
    """The data of every Server-Sent Event of a whole response, in order
    ("[DONE]" included)."""
    return [line[6:] for block in resp.body.decode().split("\n\n")
            for line in block.split("\n") if line.startswith("data: ")]


def finished_stream(resp, usage=False):
    """stream_chunks() of a whole streamed response, which must end with
    [DONE]."""
    events = sse_data(resp)
    assert events and events[-1] == "[DONE]", events
    return stream_chunks([json.loads(e) for e in events[:-1]], usage)


def inline_chat(stack, provider, body, key):
    """POST /v1/chat/completions with the development key and, unless it
    is empty, `key` inline for `provider`."""
    headers = dict(auth())
    if key:
        headers[INLINE_KEY_HEADERS[provider]] = key
    return stack.post("/v1/chat/completions", body, headers=headers)


@contextlib.contextmanager
def direct_stack(workdir, pg, provider, key, behaviour, tag):
    """A stack of two workers, on a database of its own named after `tag`,
    that calls `provider` on a mock_llm.MockLLM of its own, which accepts
    `key` and answers with `behaviour`, and validates no key: for the tests
    of a provider's wire format.  Gives (stack, mock), and closes both."""
    mock = MockLLM()
    mock.accept(provider, key)
    mock.behave(provider, behaviour)
    try:
        s = Stack(workdir.subdir("kg"), pg,
                  dbname="%s_%d" % (tag, time.time_ns()), workers=2,
                  validate_llm_keys="false",
                  **{"%s_base_url" % provider: mock.base_url(provider)})
        try:
            yield s, mock
        finally:
            s.close()
    finally:
        mock.close()


def stream_chunks(chunks, usage=False):
    """The chunks of a finished chat stream ([DONE] left out) as an OpenAI
    SDK reads them: every one a chat.completion.chunk with id, created,
    model and non-empty choices, except the usage chunk, last, which is
    there only when `usage` was asked for.  The keygate member rides on
    the last finish_reason chunk (and on the usage chunk, the same).
    Returns (the chunks with keygate taken off, the keygate member)."""
    assert chunks, "no chunk before [DONE]"
    for c in chunks:
        assert c.get("object") == "chat.completion.chunk", c
        for field in ("id", "created", "model"):
            assert c.get(field) not in (None, ""), (
                "chunk without %s: %r" % (field, c))
    body = chunks[:-1] if usage else chunks
    assert all(c.get("choices") for c in body), (
        "a chunk with empty choices: %r" % [c for c in body
                                             if not c.get("choices")])
    carriers = [i for i, c in enumerate(body) if "keygate" in c]
    assert carriers == [len(body) - 1], (
        "the keygate member is on chunk(s) %r of %d" % (carriers, len(body)))
    finish = body[-1]
    assert any(ch.get("finish_reason") for ch in finish["choices"]), finish
    kg = finish["keygate"]
    if usage:
        last = chunks[-1]
        assert last["choices"] == [] and isinstance(last.get("usage"),
                                                    dict), last
        assert last.get("keygate") == kg, (last.get("keygate"), kg)
    return [{k: v for k, v in c.items() if k != "keygate"}
            for c in chunks], kg


# ---------------------------------------------------------------------------
# The OpenAPI document: answers as it describes them

_openapi_cache = {}


def openapi_document():
    """The built OpenAPI document (openapi.json in KEYGATE_BUILDDIR)."""
    if "doc" not in _openapi_cache:
        with open(OPENAPI_JSON, encoding="utf-8") as f:
            _openapi_cache["doc"] = json.load(f)
    return _openapi_cache["doc"]


def _is_keygate_path(path):
    return (path.startswith("/v1/") or
            path in ("/health", "/metrics", "/openapi.json"))


def openapi_resolve(doc, node):
    """Follows a {"$ref": "#/..."} within the document; other nodes as
    they are."""
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def openapi_operation(doc, method, path):
    """(template, operation or None) for a request path; template is None
    when no path of the document matches.  A {name} segment matches one
    segment, except a trailing {id} of /v1/models/{id}, which takes the
    rest (vendor/model ids keep their slash)."""
    segs = path.rstrip("/").split("/") if path != "/" else [""]
    for template, item in doc["paths"].items():
        tsegs = template.split("/")
        rest = template == "/v1/models/{id}"
        if len(tsegs) != len(segs) and not (rest and len(segs) > len(tsegs)):
            continue
        if all(t == p or (t.startswith("{") and p != "")
               for t, p in zip(tsegs, segs)):
            m = "get" if method.upper() == "HEAD" else method.lower()
            return template, item.get(m)
    return None, None


def _schema_validator(doc, schema):
    import jsonschema  # python3-jsonschema; only the checks need it
    root = dict(schema)
    root["components"] = doc["components"]
    return jsonschema.Draft202012Validator(root)


def openapi_problems(doc, method, path, resp):
    """What in `resp` disagrees with the document, as a list of strings
    (empty when it agrees): the status is one the operation lists, the
    Content-Type is the response's, the body validates against its schema
    (each data: event of a stream too, where the document gives one) and
    the headers it lists are there."""
    template, op = openapi_operation(doc, method, path)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip()
    if op is None:
        # No such route, or not with this method: keygate's 404 / 405.
        want = 404 if template is None else 405
        if resp.status != want:
            return ["%s %s: not in the document, answered %d, not %d" % (
                method, path, resp.status, want)]
        spec = {"description": "", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        where = "%s %s (undocumented)" % (method, path)
    else:
        responses = op["responses"]
        spec = (responses.get(str(resp.status)) or
                responses.get("%dXX" % (resp.status // 100)) or
                responses.get("default"))
        where = "%s %s -> %d" % (method.upper(), template, resp.status)
        if spec is None:
            return ["%s: status not documented (documented: %s); body %r" % (
                where, ", ".join(sorted(responses)), resp.body[:300])]
        spec = openapi_resolve(doc, spec)
    problems = []
    for name, h in spec.get("headers", {}).items():
        h = openapi_resolve(doc, h)
        if h.get("required") and name.lower() not in resp.headers:
            problems.append("%s: header %s missing" % (where, name))
    content = spec.get("content")
    if method.upper() == "HEAD" or not content:
        if method.upper() != "HEAD" and resp.body:
            problems.append("%s: a body where the document has none: %r" % (
                where, resp.body[:200]))
        return problems
    if ctype not in content:
        return problems + ["%s: Content-Type %r, documented %s" % (
            where, ctype, ", ".join(sorted(content)))]
    media = content[ctype]
    if ctype == "application/json":
        if resp.json is None:
            return problems + ["%s: body is not JSON: %r" % (
                where, resp.body[:200])]
        bodies = [resp.json]
    elif ctype == "text/event-stream" and "x-keygate-event-schema" in media:
        bodies = [json.loads(line[5:]) for line in
                  resp.body.decode().splitlines()
                  if line.startswith("data:") and line[5:].strip() != "[DONE]"]
        media = {"schema": media["x-keygate-event-schema"]}
    else:
        return problems
    v = _schema_validator(doc, media["schema"])
    for body in bodies:
        for e in v.iter_errors(body):
            problems.append("%s: body at /%s: %s" % (
                where, "/".join(str(p) for p in e.absolute_path),
                e.message[:300]))
    return problems


def assert_documented(method, path, resp):
    """`resp` (to `method` `path`, the path without its query) is one the
    OpenAPI document describes: status, Content-Type, body and headers."""
    problems = openapi_problems(openapi_document(), method, path, resp)
    assert not problems, "\n".join(problems)
    return resp


# ---------------------------------------------------------------------------
# Tenants, keys and hosts, as the tests make them

INVALID_KEY_BODY = (b'{"error":{"message":"Invalid API key.",'
                    b'"type":"authentication_error",'
                    b'"code":"invalid_api_key"}}')


def assert_invalid_key(resp):
    """The one 401 every bad credential gets, byte for byte."""
    assert resp.status == 401, "expected 401, got %d: %r" % (
        resp.status, resp.body[:300])
    assert_json_response(resp)
    assert resp.body == INVALID_KEY_BODY, resp.body


def expect_200(resp):
    assert resp.status == 200, resp.body[:300]


def mint(stack, scopes, key=DEV_KEY, **fields):
    """Creates a key through the API (with `key`, the development key by
    default); returns (secret, key object)."""
    body = dict(fields, scopes=scopes)
    body.setdefault("name", "e2e")
    resp = stack.post("/v1/api_keys", body, headers=auth(key))
    assert resp.status == 201, resp.body[:500]
    return resp.json["key"], resp.json


def limited_key(stack, limit, window):
    """A key allowed `limit` requests per `window`."""
    return mint(stack, ["models:read"], name="limited",
                rate_limit_max=limit, rate_limit_window=window)[0]


def new_tenant(stack, name="e2e", parent=ROOT_TENANT, credits=None):
    """A tenant below `parent`, inserted with SQL; returns its id."""
    tid = str(uuid.uuid4())
    stack.psql("INSERT INTO tenants (id, parent_id, name, path%s) SELECT "
               "'%s', id, '%s', path || '%s'::uuid%s FROM tenants "
               "WHERE id = '%s'" % (
                   ", credits_balance" if credits is not None else "", tid,
                   name, tid, ", %d" % credits if credits is not None
                   else "", parent))
    return tid


class Tenant:
    """A new tenant below the root with a key of its own, made with
    keygatectl (through POST /v1/api_keys with the development key when
    `key_by_api`); what a module needs besides (its vault, its ledger) a
    subclass adds.  `extra` headers are added to the key's, and a fresh
    X-Request-Id unless `request_id` is given; `key_headers` are the key's
    alone."""

    name = "e2e"
    scopes = ("chat:write",)
    credits = None          # micro-credits, None: the schema's default
    key_by_api = False

    def __init__(self, stack, scopes=None):
        self.stack = stack
        self.id = new_tenant(stack, self.name, credits=self.credits)
        scopes = scopes or self.scopes
        if self.key_by_api:
            self.key = mint(stack, list(scopes), name=self.name,
                            tenant_id=self.id)[0]
            return
        p = stack.kg.ctl("create-key", "--name", self.name, "--scopes",
                         ",".join(scopes), "--tenant", self.id)
        assert p.returncode == 0, p.stdout + p.stderr
        self.key = p.stdout.strip()

    @property
    def key_headers(self):
        return dict(auth(self.key))

    def headers(self, extra=None, request_id=None):
        h = dict(auth(self.key))
        h["X-Request-Id"] = request_id or "%s-%s" % (
            self.name, secrets.token_hex(8))
        h.update(extra or {})
        return h

    def chat(self, body, extra=None, request_id=None, timeout=15):
        return self.stack.post("/v1/chat/completions", body,
                               headers=self.headers(extra, request_id),
                               timeout=timeout)

    def stream(self, body, extra=None, request_id=None, timeout=15):
        return SSEReader(self.stack.url + "/v1/chat/completions",
                         dict(body, stream=True),
                         self.headers(extra, request_id), timeout=timeout)


class Host:
    """A second keygated (behind its own lighttpd) on an existing stack's
    database, as another host sharing it would be."""

    def __init__(self, workdir, stack, **config):
        d = workdir.subdir("kg")
        config.setdefault("workers", 3)
        self.kg = Keygated(d, stack.kg.config["database_url"],
                           hmac_secret=stack.kg.config["hmac_secret"],
                           **config)
        self.web = Lighttpd(d, self.kg.socket_path)

    def get(self, path, **kw):
        return request("GET", self.web.url + path, **kw)

    def close(self):
        self.web.close()
        self.kg.close()


def restart(kg, **changes):
    """Stops keygated, applies `changes` to its config, starts it again."""
    kg.sigterm()
    if kg.wait(10) is None:
        kg.proc.kill_group()
    kg.rewrite_config(**changes)
    kg.start()
