"""The README's run command, tried as a newcomer would: `tests/dev.sh run`
builds, starts PostgreSQL, keygated, lighttpd and a demo provider, gives
the root tenant credits, prints an admin key once with examples that each
work as printed (a chat completion plain and streamed, charged; the vault;
the audit log), and Ctrl-C stops everything."""

import json
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


def printed_examples(text):
    """The example commands `tests/dev.sh run` printed: the export line and
    each curl command (continuation lines joined), with the comment line
    above it, in order."""
    lines = text[text.index("Try these, in order"):text.index("Files:")]
    lines = lines.splitlines()
    export, examples, comment, cmd = None, [], "", None
    for line in lines:
        stripped = line.strip()
        if cmd is not None:
            cmd += " " + stripped.rstrip("\\").strip()
            if not stripped.endswith("\\"):
                examples.append((comment, cmd))
                cmd = None
        elif stripped.startswith("export KG="):
            export = stripped
        elif stripped.startswith("#"):
            comment = stripped
        elif stripped.startswith("curl "):
            if stripped.endswith("\\"):
                cmd = stripped.rstrip("\\").strip()
            else:
                examples.append((comment, stripped))
    return export, examples


def run_example(export, cmd):
    """Runs one printed example as a shell would, adding only curl's
    report of the status; returns (status, body text)."""
    done = subprocess.run(["bash", "-c", "%s; %s -w '\\n%%{http_code}'"
                           % (export, cmd)],
                          capture_output=True, text=True, timeout=60,
                          env=ks.clean_env())
    assert done.returncode == 0, (cmd, done.stderr)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def sse_chunks(body):
    chunks = []
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[6:]))
    assert body.rstrip().endswith("data: [DONE]"), body
    return chunks


def check_examples(export, examples):
    """Each printed example in order, and what a newcomer would look at in
    its answer."""
    comments = [c for c, _ in examples]
    answers = []
    for comment, cmd in examples:
        answers.append(run_example(export, cmd))
    by_path = iter(zip(comments, [c for _, c in examples], answers))

    def nxt(path_part):
        comment, cmd, (status, body) = next(by_path)
        assert path_part in cmd, (path_part, cmd)
        return comment, cmd, status, body

    _, _, status, body = nxt("/v1/auth/whoami")
    assert status == 200, body
    who = json.loads(body)
    assert who["scopes"] == ["*"]
    assert who["tenant_id"] == ROOT

    _, _, status, body = nxt("/v1/api_keys")
    assert status == 201, body
    created = json.loads(body)
    assert created["scopes"] == ["chat:write"]
    assert created["key"].startswith("kg_live_")

    _, _, status, body = nxt("/v1/account")
    assert status == 200, body
    before = json.loads(body)
    assert float(before["credits_balance"]) >= 50

    _, _, status, body = nxt("/v1/chat/completions")
    assert status == 200, body
    reply = json.loads(body)
    assert reply["model"] == "demo-chat"
    assert "Hello, gateway" in reply["choices"][0]["message"]["content"]
    assert reply["keygate"]["provider"] == "demo"
    charged = float(reply["keygate"]["credits_charged"])
    assert charged > 0

    _, cmd, status, body = nxt("/v1/chat/completions")
    assert "-sN" in cmd and '"stream":true' in cmd
    assert status == 200, body
    chunks = sse_chunks(body)
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.get("choices"))
    assert "Stream this" in text
    finals = [c for c in chunks if "keygate" in c]
    assert len(finals) == 1, chunks
    assert finals[0]["choices"][0]["finish_reason"] == "stop"
    charged += float(finals[0]["keygate"]["credits_charged"])
    for c in chunks:
        assert c["choices"], c          # no usage was asked for
        assert c["id"] and c["object"] == "chat.completion.chunk"

    _, _, status, body = nxt("/v1/account")
    assert status == 200, body
    after = json.loads(body)
    assert round(float(before["credits_balance"]) -
                 float(after["credits_balance"]), 6) == round(charged, 6)
    assert float(after["credits_reserved"]) == 0

    _, _, status, body = nxt("/v1/models")
    assert status == 200, body
    ids = [m["id"] for m in json.loads(body)["data"]]
    assert "demo-chat" in ids

    _, _, status, body = nxt("/v1/account/llm-keys")
    assert status == 200, body
    assert json.loads(body)["success"] is True

    _, _, status, body = nxt("/v1/account/llm-keys")
    assert status == 400, body
    assert "anthropic" in json.loads(body)["error"]["message"].lower()

    _, _, status, body = nxt("/v1/account/llm-keys")
    assert status == 200, body
    vault = json.loads(body)
    assert vault["has_openai_key"] is True
    assert vault["has_anthropic_key"] is False

    _, cmd, status, body = nxt("/v1/account/llm-keys?provider=openai")
    assert "DELETE" in cmd
    assert status == 200, body

    _, _, status, body = nxt("/v1/audit_logs")
    assert status == 200, body
    actions = [row["action"] for row in json.loads(body)["data"]]
    assert "llm_key.delete" in actions and "llm_key.store" in actions
    assert "api_key.create" in actions

    assert next(by_path, None) is None, "an example the test does not check"


ROOT = "00000000-0000-0000-0000-000000000001"


@pytest.mark.skipif(not os.access(os.path.join(SRC, "configure.ac"),
                                  os.W_OK),
                    reason="the source tree is read-only (make distcheck)")
def test_run_command_serves_prints_examples_that_work_and_stops_on_ctrl_c():
    work = tempfile.mkdtemp(prefix="keygate-readme-", dir="/tmp")
    os.chmod(work, 0o755)
    port = ks.free_tcp_port()
    demo_port = ks.free_tcp_port()
    env = ks.clean_env({"KEYGATE_WORKDIR": work,
                        "KEYGATE_HTTP_PORT": str(port),
                        "KEYGATE_DEMO_PORT": str(demo_port)})
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
        url = "http://127.0.0.1:%d" % port
        assert url in text
        r = ks.request("GET", url + "/health")
        assert r.status == 200 and r.json["database"] == "connected"

        export, examples = printed_examples(text)
        assert export == "export KG=%s KEY=%s" % (url, key), text
        check_examples(export, examples)

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
        ks.wait_until(lambda: not processes_mentioning("demo-provider --port %d"
                                                       % demo_port), 20,
                      what="the demo provider to stop")
        with pytest.raises(OSError):
            ks.request("GET", url + "/health", timeout=2)
        with pytest.raises(OSError):
            ks.request("GET", "http://127.0.0.1:%d/v1/models" % demo_port,
                       timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid, _ in (processes_mentioning(work) +
                       processes_mentioning("demo-provider --port %d"
                                            % demo_port)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
