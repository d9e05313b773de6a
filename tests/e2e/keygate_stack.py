"""Real processes for keygate's end-to-end tests.

Everything here starts something real and owns it until close():

    PgCluster     a private PostgreSQL cluster on a Unix socket
    Keygated      the keygated master and its workers, with a config file
    Lighttpd      lighttpd in front of keygated, from fcgi/lighttpd.conf
    MockProvider  a loopback HTTP server standing in for an LLM provider
    loopback_server  a bare one, for mocks that speak a wire format of their own
    Stack         keygated (on a migrated database) behind lighttpd
    request()     one HTTP request, no connection reuse
    Load          client threads sending requests and recording each outcome
    assert_error  keygate's error shape, shared by the tests

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
import csv
import glob
import hashlib
import hmac
import http.client
import http.server
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.path.abspath(os.environ.get("KEYGATE_BUILDDIR") or TOP)
SRCDIR = os.path.abspath(os.environ.get("KEYGATE_SRCDIR") or TOP)
KEEP_WORKDIR = os.environ.get("KEYGATE_KEEP_WORKDIR") == "1"

KEYGATED = os.path.join(BUILDDIR, "keygated")
KEYGATECTL = os.path.join(BUILDDIR, "keygatectl")
SQL_DIR = os.path.join(SRCDIR, "sql")
LIGHTTPD_CONF = os.path.join(SRCDIR, "fcgi", "lighttpd.conf")

DEV_KEY = "kg_dev_local_default_tenant_do_not_use_in_production"

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


def child_pids(pid):
    """The live (non-zombie) direct children of `pid`."""
    kids = set()
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = {int(x) for x in f.read().split()}
    except OSError:
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.add(int(stat.split("/")[2]))
    return {k for k in kids if pid_alive(k)}


def group_pids(pgid):
    """The live (non-zombie) processes in process group `pgid`."""
    found = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.add(int(stat.split("/")[2]))
    return found


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

    def psql(self, sql, dbname=None, timeout=30):
        """Runs `sql` and returns the rows of its last statement as lists of
        strings (NULL and '' both read as '').  Raises StackError on error."""
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-t", "--csv",
                "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                "-p", str(self.port), "-U", "postgres",
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
    """A psql session inside a transaction holding a table lock."""

    def __init__(self, pg, table, dbname):
        self.pg = pg
        argv = [os.path.join(pg.bindir, "psql"), "-X", "-q",
                "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir,
                "-p", str(pg.port), "-U", "postgres", "-d", dbname]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     env=clean_env(), start_new_session=True)
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
        lines = ["# keygated configuration for an end-to-end test"]
        lines += ["%s = %s" % (k, v) for k, v in self.config.items()]
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
# lighttpd

class Lighttpd:
    """lighttpd -D -f fcgi/lighttpd.conf, pointed at `socket_path`."""

    def __init__(self, workdir, socket_path, port=None, timeout=10):
        self.workdir = workdir
        self.socket_path = socket_path
        self.port = port or free_tcp_port()
        self.state_dir = os.path.join(workdir, "lighttpd")
        self.error_log = os.path.join(workdir, "lighttpd-error.log")
        self.overrides = os.path.join(workdir, "lighttpd-overrides.conf")
        self.stdout_path = os.path.join(workdir, "lighttpd.stdout")
        self.stderr_path = os.path.join(workdir, "lighttpd.stderr")
        self.started_at = time.time()
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.overrides, "w") as f:
            f.write('var.keygate_port := %d\n' % self.port)
            f.write('var.keygate_bind := "127.0.0.1"\n')
            f.write('var.keygate_socket := "%s"\n' % socket_path)
            f.write('var.keygate_state_dir := "%s"\n' % self.state_dir)
            f.write('var.keygate_error_log := "%s"\n' % self.error_log)
        instances.append(self)
        _register(self)
        self.proc = _Process(
            ["lighttpd", "-D", "-f", LIGHTTPD_CONF],
            self.stdout_path, self.stderr_path,
            clean_env({"KEYGATE_LIGHTTPD_OVERRIDES": self.overrides,
                       "PATH": os.environ.get("PATH", "") +
                       ":/usr/sbin:/sbin"}),
            workdir)

        def ready():
            if self.proc.poll() is not None:
                raise StackError("lighttpd exited with %s:\n%s" % (
                    self.proc.poll(), self.log_tail()))
            return is_listening(("127.0.0.1", self.port))
        wait_until(ready, timeout, what="lighttpd on port %d" % self.port)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def log_tail(self, lines=40):
        out = []
        for path in (self.error_log, self.stderr_path):
            if os.path.exists(path) and os.path.getsize(path):
                out.append("==> %s <==\n%s" % (path, tail(path, lines)))
        return "\n".join(out) or "(lighttpd wrote nothing)"

    def close(self):
        try:
            self.proc.signal(signal.SIGTERM)
            self.proc.wait(3)
        finally:
            self.proc.kill_group()
            _unregister(self)

    def __repr__(self):
        return "Lighttpd(port=%d)" % self.port


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
    return Response(status, got, data, parsed)


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
# Mock LLM provider

def loopback_server(serve):
    """A threaded HTTP/1.1 server on a free loopback port that calls
    serve(handler, body) for every request, `body` being the bytes the
    request carried.  Returns the server; shutdown() and server_close()
    stop it."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _any(self):
            n = int(self.headers.get("Content-Length") or 0)
            serve(self, self.rfile.read(n) if n else b"")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever,
                     kwargs={"poll_interval": 0.1}, daemon=True,
                     name="loopback-server").start()
    return server


MockRequest = collections.namedtuple(
    "MockRequest", "method path query headers body time")


class MockReply:
    """What a mock route answers.  `body` is bytes, a str, a JSON-able
    value, or an iterable of byte chunks (sent chunked, flushed one by one,
    `delay` seconds apart, e.g. for Server-Sent Events)."""

    def __init__(self, status=200, body=b"", headers=None, delay=0.0):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.delay = delay


# Where each provider's API lives below its base URL; keygate's
# <provider>_base_url points at MockProvider.url (plus any prefix).
PROVIDER_PATHS = {
    "openai": {"chat": "/v1/chat/completions", "models": "/v1/models"},
    "anthropic": {"chat": "/v1/messages", "models": "/v1/models"},
    "google": {"chat": "/v1beta/models/",       # MODEL:generateContent
               "models": "/v1beta/models"},
    "openrouter": {"chat": "/api/v1/chat/completions",
                   "models": "/api/v1/models"},
}


class MockProvider:
    """A loopback HTTP server standing in for the LLM providers.

    Every request is recorded.  Routes are added with
    route(method, path_prefix, handler); the handler gets a MockRequest and
    returns a MockReply, a (status, body) tuple, or None to close the
    connection without answering.  The longest matching prefix wins;
    without a match the answer is a 404 in JSON.

    One mock serves all four providers, each below its own path prefix
    (PROVIDERS); config() gives the `<provider>_base_url` settings that
    point keygate at it.  Out of the box each provider answers its real
    key-validation request the way the real one does: 200 for a key in
    accepted[provider] (see accept()), otherwise that provider's own
    rejection (REJECTIONS); the OpenAI-compatible ones (OPENAI_COMPATIBLE)
    also answer a chat completion for an accepted key.  Anthropic's and
    Google's chat endpoints are left to route().  A provider can be told to misbehave
    ("hang": answer only after HANG_SECONDS, longer than any client timeout
    a test configures; "error": a 5xx; "drop": close the connection without
    a reply; "reply": a given MockReply), or to hold every answer until the
    test releases it (hold()).
    Routes added later for other endpoints (chat completions, say) get the
    same switches by answering through provider_reply()."""

    # Per provider: `prefix`, the first path segment that is the
    # provider's own; `base`, what <provider>_base_url points at below the
    # mock's URL (the real services' base URLs end the same way); and
    # `validate`, the path keygate requests to check a key.
    PROVIDERS = collections.OrderedDict([
        ("openai", {"prefix": "/openai/", "base": "/openai/v1",
                    "validate": "/openai/v1/models",
                    "chat": "/openai/v1/chat/completions"}),
        ("anthropic", {"prefix": "/anthropic/", "base": "/anthropic",
                       "validate": "/anthropic/v1/models",
                       "chat": "/anthropic/v1/messages"}),
        ("google", {"prefix": "/google/", "base": "/google",
                    "validate": "/google/v1beta/models",
                    # + MODEL:generateContent or :streamGenerateContent
                    "chat": "/google/v1beta/models/"}),
        ("openrouter", {"prefix": "/openrouter/",
                        "base": "/openrouter/api/v1",
                        "validate": "/openrouter/api/v1/key",
                        "chat": "/openrouter/api/v1/chat/completions"}),
    ])
    # Providers whose chat endpoint speaks the OpenAI format; the mock
    # answers their `chat` path out of the box (see _openai_chat_handler).
    OPENAI_COMPATIBLE = ("openai", "openrouter")
    ANTHROPIC_VERSION = "2023-06-01"

    # What each provider answers to a key it accepts ...
    ACCEPTED = {
        "openai": {"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model"}]},
        "anthropic": {"data": [], "has_more": False, "first_id": None,
                      "last_id": None},
        "google": {"models": []},
        "openrouter": {"data": {"label": "sk-or-v1-abc...", "limit": None,
                                "usage": 0}},
    }
    # ... to one it does not (status, body; `message` is the reason a
    # client is shown) ...
    REJECTIONS = {
        "openai": (401, {"error": {
            "message": "Incorrect API key provided: sk-...xyz.",
            "type": "invalid_request_error", "param": None,
            "code": "invalid_api_key"}}),
        "anthropic": (401, {"type": "error", "error": {
            "type": "authentication_error", "message": "invalid x-api-key"}}),
        "google": (400, {"error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                         "reason": "API_KEY_INVALID"}]}}),
        "openrouter": (401, {"error": {"message": "No auth credentials found",
                                       "code": 401}}),
    }
    REJECTION_MESSAGES = {
        "openai": "Incorrect API key provided: sk-...xyz.",
        "anthropic": "invalid x-api-key",
        "google": "API key not valid. Please pass a valid API key.",
        "openrouter": "No auth credentials found",
    }
    # ... and when told to fail with a 5xx.
    SERVER_ERRORS = {
        "openai": {"error": {
            "message": "The server had an error while processing your "
                       "request. Sorry about that!",
            "type": "server_error", "param": None, "code": None}},
        "anthropic": {"type": "error", "error": {
            "type": "api_error", "message": "Internal server error"}},
        "google": {"error": {"code": 500,
                             "message": "An internal error has occurred.",
                             "status": "INTERNAL"}},
        "openrouter": {"error": {"message": "Internal Server Error",
                                 "code": 500}},
    }
    HANG_SECONDS = 60
    HOLD_SECONDS = 30

    def __init__(self):
        self.requests = []
        self._routes = []
        self._lock = threading.Lock()
        # Per provider: the keys it accepts, and what it is told to do
        # instead of answering (None, or a (mode, status, threading.Event)).
        self.accepted = {p: set() for p in self.PROVIDERS}
        self._faults = {p: None for p in self.PROVIDERS}
        self._holds = {p: None for p in self.PROVIDERS}
        self._closing = threading.Event()
        mock = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _handle(self):
                mock._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        daemon=True, name="mock-provider")
        self._thread.start()
        for provider, where in self.PROVIDERS.items():
            self.route("GET", where["validate"],
                       self._validation_handler(provider))
        for provider in self.OPENAI_COMPATIBLE:
            self.route("POST", self.PROVIDERS[provider]["chat"],
                       self._openai_chat_handler(provider))
        _register(self)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def route(self, method, path_prefix, handler):
        """Answers `method` requests whose path starts with `path_prefix`."""
        with self._lock:
            self._routes.append((method.upper(), path_prefix, handler))

    def requests_to(self, path_prefix):
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def reset(self):
        with self._lock:
            self.requests.clear()

    # -- the providers

    def base_url(self, provider):
        """What keygate's <provider>_base_url should be."""
        return self.url + self.PROVIDERS[provider]["base"]

    def config(self):
        """The four <provider>_base_url settings, for Stack(**config)."""
        return {"%s_base_url" % p: self.base_url(p) for p in self.PROVIDERS}

    def provider_of(self, path):
        """The provider whose prefix `path` is under, or None."""
        for provider, where in self.PROVIDERS.items():
            if path.startswith(where["prefix"]):
                return provider
        return None

    def requests_for(self, provider):
        """Every recorded request under `provider`'s prefix, oldest first."""
        return self.requests_to(self.PROVIDERS[provider]["prefix"])

    def wait_for_requests(self, provider, count=1, timeout=10):
        """Waits until `provider` has received at least `count` requests."""
        return wait_until(lambda: len(self.requests_for(provider)) >= count,
                          timeout, what="%d request(s) to the mock %s"
                          % (count, provider))

    def accept(self, provider, *keys):
        """Makes `provider` accept `keys` (in addition to earlier ones)."""
        with self._lock:
            self.accepted[provider].update(keys)

    def reject(self, provider, *keys):
        """Makes `provider` reject `keys` again; every key without any."""
        with self._lock:
            if keys:
                self.accepted[provider].difference_update(keys)
            else:
                self.accepted[provider].clear()

    def is_accepted(self, provider, key):
        with self._lock:
            return key in self.accepted[provider]

    def misbehave(self, provider, mode, status=500, reply=None):
        """From now on `provider` answers every request by `mode`: "hang"
        (answers only after HANG_SECONDS, or when behave() or close() is
        called), "error" (`status` with the provider's 5xx body), "drop"
        (closes the connection without a reply) or "reply" (always
        `reply`, a MockReply: a redirect, say)."""
        if mode not in ("hang", "error", "drop", "reply"):
            raise ValueError("unknown mode %r" % mode)
        with self._lock:
            old = self._faults[provider]
            self._faults[provider] = (
                mode, reply if mode == "reply" else status, threading.Event())
        if old:
            old[2].set()

    def hold(self, provider):
        """Makes `provider` hold every answer until release() (at most
        HOLD_SECONDS).  Returns nothing; see wait_for_requests()."""
        with self._lock:
            if self._holds[provider] is None:
                self._holds[provider] = threading.Event()

    def release(self, provider=None):
        """Lets held answers of `provider` (of every provider) go."""
        for p in [provider] if provider else list(self.PROVIDERS):
            with self._lock:
                gate, self._holds[p] = self._holds[p], None
            if gate:
                gate.set()

    def behave(self, provider=None):
        """Ends misbehaving and holding for `provider` (or all of them);
        anything hanging is answered at once."""
        for p in [provider] if provider else list(self.PROVIDERS):
            with self._lock:
                fault, self._faults[p] = self._faults[p], None
            if fault:
                fault[2].set()
            self.release(p)

    def restore(self):
        """Back to how the mock started: every provider well-behaved and
        accepting no key, and no request recorded."""
        self.behave()
        with self._lock:
            for keys in self.accepted.values():
                keys.clear()
            self.requests.clear()

    @staticmethod
    def presented_key(provider, req):
        """The key a request presents the way `provider` expects it (the
        Authorization bearer, x-api-key or x-goog-api-key header), or None."""
        if provider in ("openai", "openrouter"):
            value = req.headers.get("authorization", "")
            return value[len("Bearer "):] if value.startswith(
                "Bearer ") else None
        if provider == "anthropic":
            return req.headers.get("x-api-key")
        if provider == "google":
            return req.headers.get("x-goog-api-key")
        raise ValueError(provider)

    def provider_reply(self, provider, req, answer):
        """Applies `provider`'s current hold and fault, then answers with
        answer(req) if it is behaving.  For route handlers."""
        with self._lock:
            gate = self._holds[provider]
        if gate is not None:
            gate.wait(self.HOLD_SECONDS)
        with self._lock:
            fault = self._faults[provider]
        if fault is not None:
            mode, value, wake = fault     # value: a status or a reply
            if mode == "drop":
                return None
            if mode == "reply":
                return value
            if mode == "hang":
                wake.wait(self.HANG_SECONDS)
                if self._closing.is_set():
                    return None
                value = 500
            return MockReply(value, self.SERVER_ERRORS[provider])
        return answer(req)

    def _validation_handler(self, provider):
        path = self.PROVIDERS[provider]["validate"]

        def answer(req):
            if req.path.rstrip("/") != path:
                return MockReply(404, {"error": {
                    "message": "no mock route for %s %s" % (req.method,
                                                            req.path),
                    "code": 404}})
            if provider == "anthropic" and req.headers.get(
                    "anthropic-version") != self.ANTHROPIC_VERSION:
                return MockReply(400, {"type": "error", "error": {
                    "type": "invalid_request_error",
                    "message": "anthropic-version: header is required"}})
            key = self.presented_key(provider, req)
            if key is not None and self.is_accepted(provider, key):
                return MockReply(200, self.ACCEPTED[provider])
            return MockReply(*self.REJECTIONS[provider])

        return lambda req: self.provider_reply(provider, req, answer)

    def chat_requests(self, provider):
        """The chat requests `provider` has received, oldest first."""
        return self.requests_to(self.PROVIDERS[provider]["chat"])

    def _openai_chat_handler(self, provider):
        """An OpenAI-format chat completion for an accepted key ("ok",
        streamed when the request asks for it); else the rejection."""
        def answer(req):
            key = self.presented_key(provider, req)
            if key is None or not self.is_accepted(provider, key):
                return MockReply(*self.REJECTIONS[provider])
            try:
                body = json.loads(req.body or b"{}")
            except ValueError:
                body = {}
            model = body.get("model") if isinstance(body, dict) else None
            model = model if isinstance(model, str) else "mock-model"
            usage = {"prompt_tokens": 5, "completion_tokens": 1,
                     "total_tokens": 6}
            base = {"id": "chatcmpl-mock", "created": int(time.time()),
                    "model": model}
            if isinstance(body, dict) and body.get("stream") is True:
                chunks = [
                    dict(base, object="chat.completion.chunk", choices=[{
                        "index": 0, "delta": {"role": "assistant",
                                              "content": ""},
                        "finish_reason": None}]),
                    dict(base, object="chat.completion.chunk", choices=[{
                        "index": 0, "delta": {"content": "ok"},
                        "finish_reason": None}]),
                    dict(base, object="chat.completion.chunk", choices=[{
                        "index": 0, "delta": {}, "finish_reason": "stop"}],
                         usage=usage),
                ]
                events = ["data: %s\n\n" % json.dumps(c) for c in chunks]
                events.append("data: [DONE]\n\n")
                # A tuple, not a list: sent chunk by chunk, not as JSON.
                return MockReply(200, tuple(events), {
                    "Content-Type": "text/event-stream"})
            return MockReply(200, dict(
                base, object="chat.completion", choices=[{
                    "index": 0, "message": {"role": "assistant",
                                            "content": "ok"},
                    "finish_reason": "stop"}], usage=usage))

        return lambda req: self.provider_reply(provider, req, answer)

    # -- serving

    def _find(self, method, path):
        best = None
        with self._lock:
            for m, prefix, handler in self._routes:
                if m == method and path.startswith(prefix) and (
                        best is None or len(prefix) > len(best[0])):
                    best = (prefix, handler)
        return best[1] if best else None

    def _serve(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(h.path)
        req = MockRequest(h.command, parts.path,
                          urllib.parse.parse_qs(parts.query,
                                                keep_blank_values=True),
                          {k.lower(): v for k, v in h.headers.items()},
                          body, time.time())
        with self._lock:
            self.requests.append(req)
        handler = self._find(h.command, parts.path)
        if handler is None:
            reply = MockReply(404, {"error": {
                "message": "no mock route for %s %s" % (h.command, parts.path),
                "type": "invalid_request_error", "code": "not_found"}})
        else:
            reply = handler(req)
            if isinstance(reply, tuple):
                reply = MockReply(*reply)
        if reply is None:
            # No answer at all: the client sees the connection close.
            h.close_connection = True
            return
        self._send(h, reply)

    @staticmethod
    def _send(h, reply):
        body = reply.body
        headers = dict(reply.headers)
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes) and (
                isinstance(body, (dict, list)) or not hasattr(body, "__iter__")):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            h.send_response(reply.status)
            for k, v in headers.items():
                h.send_header(k, v)
            if isinstance(body, bytes):
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                if reply.delay:
                    time.sleep(reply.delay)
                h.wfile.write(body)
            else:
                h.send_header("Transfer-Encoding", "chunked")
                h.end_headers()
                for chunk in body:
                    if reply.delay:
                        time.sleep(reply.delay)
                    if isinstance(chunk, str):
                        chunk = chunk.encode()
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    h.wfile.flush()
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self):
        _unregister(self)
        self._closing.set()
        self.behave()
        self.server.shutdown()
        self.server.server_close()

    def __repr__(self):
        return "MockProvider(%s)" % self.url


# ---------------------------------------------------------------------------
# A whole stack

class Stack:
    """keygated (and its database) behind lighttpd.

    With `dbname`, a new database of that name is created in `pg` first.
    The database is migrated with the development key seeded, so DEV_KEY
    works as an admin key."""

    def __init__(self, workdir, pg, dbname=None, migrate=True,
                 seed_dev_key=True, **config):
        self.pg = pg
        self.dbname = dbname or pg.dbname
        conninfo = (pg.create_database(dbname) if dbname
                    else pg.conninfo)
        env = {"KEYGATE_SEED_DEV_KEY": "true"} if seed_dev_key else {}
        self.kg = Keygated(workdir, conninfo, migrate=migrate,
                           migrate_env=env, **config)
        try:
            self.web = Lighttpd(workdir, self.kg.socket_path)
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


def auth(key=DEV_KEY):
    """Headers presenting `key` as a bearer token."""
    return {"Authorization": "Bearer " + key}


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
