"""Secrets inside the processes that hold them:

- development mode, whose secrets may be public, listens on loopback
  only (a unix socket, or 127.0.0.0/8 and ::1); anything else is a
  configuration error, exit status 2;
- the master and every worker take KEYGATE_* out of their environment
  (/proc/PID/environ shows none), cannot dump core (RLIMIT_CORE 0, not
  dumpable: the files of /proc/PID then belong to root whoever runs the
  process),
  and hold locked memory (VmLck) for their secrets."""

import base64
import os
import secrets
import subprocess

import pytest

import keygate_stack as ks


def check_config(make_keygated, fresh_database, **config):
    kg = make_keygated(fresh_database, **config)
    return subprocess.run([ks.KEYGATED, "--config", kg.config_path,
                           "--check-config"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=ks.clean_env(), text=True, timeout=30)


@pytest.mark.parametrize("listen", [
    "tcp:0.0.0.0:%d", "tcp:[::]:%d", "tcp:192.0.2.1:%d",
    "tcp:example.org:%d"])
def test_development_mode_listens_on_loopback_only(make_keygated,
                                                   fresh_database, listen):
    address = listen % ks.free_tcp_port()
    p = check_config(make_keygated, fresh_database, listen=address)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "listen: mode = development listens on loopback only" in p.stderr
    assert address in p.stderr
    # Started for real, it stops at once with the same words.
    kg = make_keygated(fresh_database, listen=address)
    kg.start(wait=False)
    assert kg.wait(15) == 2
    assert "loopback only" in kg.log_text()


@pytest.mark.parametrize("listen", [
    "tcp:127.0.0.1:%d", "tcp:127.3.4.5:%d", "tcp:[::1]:%d",
    "tcp:localhost:%d"])
def test_development_mode_accepts_loopback(make_keygated, fresh_database,
                                           listen):
    p = check_config(make_keygated, fresh_database,
                     listen=listen % ks.free_tcp_port())
    assert p.returncode == 0, p.stdout + p.stderr


def test_production_mode_may_listen_anywhere(make_keygated, fresh_database):
    p = check_config(make_keygated, fresh_database, mode="production",
                     listen="tcp:0.0.0.0:%d" % ks.free_tcp_port())
    assert p.returncode == 0, p.stdout + p.stderr


def proc_text(pid, name):
    with open("/proc/%d/%s" % (pid, name), "rb") as f:
        return f.read()


def status_field(pid, field):
    for line in proc_text(pid, "status").decode().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].split()
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


@pytest.fixture
def from_environment(make_keygated, fresh_database):
    """keygated whose secrets all come from KEYGATE_* variables, with its
    workers under another user when started as root (so that /proc/PID's
    owner tells a dumpable process from another)."""
    env = {
        "KEYGATE_HMAC_SECRET": secrets.token_hex(32),
        "KEYGATE_JWT_SECRET": secrets.token_hex(32),
        "KEYGATE_MASTER_KEYS": "7:" + base64.b64encode(
            secrets.token_bytes(32)).decode(),
        "KEYGATE_POOL_OPENROUTER_KEY": "sk-or-v1-" + secrets.token_hex(24),
    }
    config = dict(hmac_secret=None, jwt_secret=None, master_keys=None,
                  workers=2)
    if os.geteuid() == 0:
        config["user"] = "nobody"
    kg = make_keygated(fresh_database, migrate=True, env=env, **config)
    kg.start()
    return kg, env


def test_no_secret_in_any_environment(from_environment):
    kg, env = from_environment
    pids = [kg.pid] + sorted(kg.wait_workers())
    for pid in pids:
        environ = proc_text(pid, "environ")
        assert b"KEYGATE_" not in environ, pid
        for value in env.values():
            assert value.encode() not in environ, pid
    # The workers were given the secrets all the same.
    ks.wait_until(lambda: "master_keys is empty" not in kg.log_text(), 5)
    assert "the vault is unavailable" not in kg.log_text()


def test_no_core_dumps_and_locked_secrets(from_environment):
    kg, _ = from_environment
    workers = sorted(kg.wait_workers())
    # A worker is root for the moment between fork and the switch to its
    # user, before it touches the network or the database.
    ks.wait_until(lambda: all(int(status_field(pid, "Uid")[0]) != 0
                              for pid in workers), 5,
                  what="the workers to run as their user")
    for pid in [kg.pid] + workers:
        limits = [line for line in proc_text(pid, "limits").decode()
                  .splitlines() if line.startswith("Max core file size")]
        assert limits and limits[0].split()[4:6] == ["0", "0"], limits
        locked = status_field(pid, "VmLck")
        assert int(locked[0]) > 0, (pid, locked)
    for pid in workers:
        assert int(status_field(pid, "Uid")[0]) != 0
        # Not dumpable: the kernel gives the files of /proc/PID to root.
        assert os.stat("/proc/%d/status" % pid).st_uid == 0, pid
