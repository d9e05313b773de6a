"""No IV ever repeats: one million AES-256-GCM encryptions by keygated
workers, each batch drawn by a worker that was forked for it.

The vault seals every provider key under a fresh random 12-byte IV
(SPEC §5; §7: "no two workers may ever produce the same one").  Two values
sealed under one key with one IV give away the XOR of their plaintexts and
let anyone forge tags, so the IVs are drawn here the way production draws
them: POST /v1/maintenance/reencrypt re-seals every stored value under the
active master key, values already under it included, in one transaction.

The stack runs WORKERS workers with max_requests = 1: every request is
served by a worker the master has just forked, at start or in place of one
that has exited, and each re-encryption is its worker's first and only
request.  A worker that inherited its generator's state from the master
would draw the same sequence as its siblings, and a later round would
repeat an earlier round's IVs.

TENANTS tenants store one key per provider each (VALUES values, through the
API with a JWT per tenant, so no API key has to be minted); then ROUNDS
re-encryptions run one after the other.  After each one every stored IV is
read back and must never have been seen before, in that round or any
earlier one.  KEYGATE_IV_TENANTS and KEYGATE_IV_ROUNDS change the size;
a size below VALUES x ROUNDS = 1,000,000 fails before anything starts.
"""

import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import time

import pytest

import keygate_stack as ks
from keygate_stack import auth
from keygate_stack import restart

ROOT = "00000000-0000-0000-0000-000000000001"
PROVIDERS = ("openai", "anthropic", "google", "openrouter")
KEY_PREFIXES = {"openai": "sk-proj-", "anthropic": "sk-ant-api03-",
                "google": "AIza", "openrouter": "sk-or-v1-"}
ALNUM = string.ascii_letters + string.digits
PATH = "/v1/account/llm-keys"
REENCRYPT = "/v1/maintenance/reencrypt"
IV_RE = re.compile(r"^[0-9a-f]{24}$")

WORKERS = 4
TENANTS = int(os.environ.get("KEYGATE_IV_TENANTS", "5000"))
VALUES = TENANTS * len(PROVIDERS)
ROUNDS = int(os.environ.get("KEYGATE_IV_ROUNDS", "50"))
ENCRYPTIONS = 1000000


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(secret, tenant, scopes):
    """An HS256 token for `tenant` with `scopes`, valid for an hour."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({
        "sub": "e2e-vault-iv", "tenant_id": tenant, "scopes": scopes,
        "exp": int(time.time()) + 3600}).encode())
    mac = hmac.new(secret.encode(), ("%s.%s" % (head, body)).encode(),
                   hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64url(mac))


def provider_key(provider, length=48):
    head = KEY_PREFIXES[provider]
    return head + "".join(secrets.choice(ALNUM)
                          for _ in range(length - len(head)))


def stored_ivs(stack):
    """The IV of every stored value, as bytes, and the master key ids."""
    rows = stack.psql("SELECT split_part(ciphertext, ':', 2), master_key_id "
                      "FROM llm_keys")
    bad = [iv for iv, _ in rows if not IV_RE.match(iv)]
    assert not bad, "IVs that are not 24 hex digits: %r" % bad[:5]
    return [bytes.fromhex(iv) for iv, _ in rows], {k for _, k in rows}


@pytest.fixture(scope="module")
def filled(workdir, pg):
    """A stack holding VALUES values, restarted with max_requests = 1."""
    assert VALUES * ROUNDS >= ENCRYPTIONS, (
        "%d values x %d rounds is fewer than %d encryptions"
        % (VALUES, ROUNDS, ENCRYPTIONS))
    s = ks.Stack(workdir.subdir("kg"), pg,
                 dbname="iv_%d_%d" % (os.getpid(), time.time_ns()),
                 workers=WORKERS, validate_llm_keys="false")
    try:
        ids = [row[0] for row in s.psql(
            "INSERT INTO tenants (id, parent_id, name, path) "
            "SELECT id, '%s', 'iv-' || n, ARRAY['%s'::uuid, id] "
            "FROM (SELECT gen_random_uuid() AS id, n "
            "      FROM generate_series(1, %d) n) t RETURNING id"
            % (ROOT, ROOT, TENANTS))]
        assert len(ids) == TENANTS
        secret = s.kg.config["jwt_secret"]

        def store(tid):
            body = {"%s_key" % p: provider_key(p) for p in PROVIDERS}
            resp = s.post(PATH, body, headers=auth(
                jwt(secret, tid, ["llm_keys:write"])))
            assert resp.status == 200, resp.body[:300]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(store, ids))
        print("\nstored %d values in %.1f s"
              % (VALUES, time.monotonic() - started))
        restart(s.kg, max_requests=1)
        yield s
    finally:
        s.close()


def test_a_million_encryptions_by_fresh_workers_never_repeat_an_iv(filled):
    s = filled
    seen = set()
    ivs, key_ids = stored_ivs(s)
    assert len(ivs) == VALUES and len(key_ids) == 1
    seen.update(ivs)
    assert len(seen) == VALUES, "the stored values share an IV"
    first_workers = s.kg.wait_workers()
    served = []             # (request id, worker pids before the call)
    spent = []              # seconds per re-encryption
    for n in range(ROUNDS):
        request_id = "e2e-vault-iv-%d-%s" % (n, secrets.token_hex(4))
        before = s.kg.wait_workers()
        started = time.monotonic()
        resp = s.post(REENCRYPT, headers=dict(
            auth(), **{"X-Request-Id": request_id}), timeout=120)
        spent.append(time.monotonic() - started)
        assert resp.status == 200, resp.body[:300]
        assert resp.json["reencrypted"] == VALUES, resp.json
        served.append((request_id, before))
        ivs, key_ids = stored_ivs(s)
        assert len(ivs) == VALUES
        assert key_ids == {resp.json["master_key_id"]}
        fresh = set(ivs)
        assert len(fresh) == VALUES, (
            "round %d: %d values share an IV within the round"
            % (n, VALUES - len(fresh)))
        repeated = fresh & seen
        assert not repeated, (
            "round %d repeated %d IV(s) seen before, e.g. %s"
            % (n, len(repeated), sorted(repeated)[0].hex()))
        seen |= fresh
    assert len(seen) == VALUES * (ROUNDS + 1)

    # Which worker served each round: the access log names its pid.
    wanted = {rid for rid, _ in served}

    def pids_by_request():
        got = {l["request_id"]: l.get("pid") for l in s.kg.log_lines()
               if l.get("request_id") in wanted and "status" in l}
        return got if len(got) == len(wanted) else None
    pids = ks.wait_until(pids_by_request, 10, what="access-log lines")
    by_round = [pids[rid] for rid, _ in served]
    assert len(set(by_round)) == ROUNDS, (
        "%d rounds served by only %d workers: %r"
        % (ROUNDS, len(set(by_round)), by_round))
    for (rid, before), pid in zip(served, by_round):
        assert pid in before, "%s served by %s, not one of the workers %r" % (
            rid, pid, sorted(before))
    respawned = [p for p in by_round if p not in first_workers]
    assert len(respawned) >= ROUNDS - WORKERS
    # Each of them exits after its one request and is replaced.
    ks.wait_until(lambda: not any(ks.pid_alive(p) for p in by_round), 10,
                  what="the recycled workers to exit")
    s.kg.wait_workers()

    print("\n%d encryptions, %d distinct IVs, %d values x %d rounds by %d "
          "workers (%d forked at start, %d respawned); re-encryption "
          "%.2f s median, %.2f s max, %.1f s in all"
          % (VALUES * (ROUNDS + 1), len(seen), VALUES, ROUNDS,
             len(set(by_round)), ROUNDS - len(respawned), len(respawned),
             sorted(spent)[len(spent) // 2], max(spent), sum(spent)))
