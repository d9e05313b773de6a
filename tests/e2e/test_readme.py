"""The README's run command, tried as a newcomer would: `tests/dev.sh run`
builds, starts PostgreSQL, keygated and lighttpd, prints an admin key once
with curl examples, and Ctrl-C stops everything."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import keygate_stack as ks

SRC = ks.SRCDIR


def processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


@pytest.mark.skipif(not os.access(os.path.join(SRC, "configure.ac"),
                                  os.W_OK),
                    reason="the source tree is read-only (make distcheck)")
def test_run_command_serves_prints_a_key_and_stops_on_ctrl_c():
    work = tempfile.mkdtemp(prefix="keygate-readme-", dir="/tmp")
    os.chmod(work, 0o755)
    port = ks.free_tcp_port()
    env = ks.clean_env({"KEYGATE_WORKDIR": work,
                        "KEYGATE_HTTP_PORT": str(port)})
    proc = subprocess.Popen([os.path.join(SRC, "tests", "dev.sh"), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, text=True,
                            start_new_session=True)
    out = []
    key = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            m = re.match(r"^\s+(kg_live_[0-9A-Za-z]{49})\s*$", line)
            if m:
                key = m.group(1)
            if line.startswith("Files:"):
                break
        text = "".join(out)
        assert key, "no admin key printed:\n" + text
        assert "http://127.0.0.1:%d" % port in text
        assert "curl" in text
        url = "http://127.0.0.1:%d" % port
        r = ks.request("GET", url + "/health")
        assert r.status == 200 and r.json["database"] == "connected"
        r = ks.request("GET", url + "/v1/auth/whoami", headers=ks.auth(key))
        assert r.status == 200, r.body
        assert r.json["scopes"] == ["*"]
        assert r.json["tenant_id"] == "00000000-0000-0000-0000-000000000001"
        # The key is shown once: it is nowhere in the files it wrote.
        for root, _, files in os.walk(work):
            for name in files:
                path = os.path.join(root, name)
                if "/pg/" in path or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    assert key.encode() not in f.read(), path

        # Ctrl-C reaches the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        out.append(rest)
        ks.wait_until(lambda: not processes_mentioning(work), 20,
                      what="everything under %s to stop" % work)
        with pytest.raises(OSError):
            ks.request("GET", url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid, _ in processes_mentioning(work):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
