"""What the credit tests share: keys the mock accepts, a funded tenant,
the estimate and cost of the standard call at gpt-4o-mini's seeded
price, and the ledger's invariants."""

import concurrent.futures
import math
import os

import keygate_stack as ks
from mock_llm import Complete

OPENAI_KEY = "sk-proj-" + "c" * 40
POOL_KEY = "sk-or-v1-" + "p" * 40
# gpt-4o-mini's seeded price, micro-credits per million tokens.
IN, OUT = 150000, 600000


# The ways a host holds credits: a hold per call in the database, a lease
# per host whose answers wait for PostgreSQL's commit, and a lease whose
# answers wait only for the host's journal.
MODES = ["holds", "leased", "journal"]


def credit_mode(mode, workdir):
    """The settings of one of MODES; a journal of its own in workdir."""
    cfg = {"credits_lease": "false" if mode == "holds" else "true"}
    if mode == "journal":
        cfg["credits_journal"] = os.path.join(workdir.subdir("journal"),
                                              "credits.journal")
    return cfg


def fresh(m):
    """Forgets what the mock saw and was told, and accepts our keys."""
    m.reset()
    m.accept("openai", OPENAI_KEY)
    m.accept("openrouter", POOL_KEY)
    return m


def tenant(s, credits):
    r = s.post("/v1/tenants", {"name": "billed"}, headers=ks.auth())
    tid = r.json["id"]
    r = s.post("/v1/api_keys", {"tenant_id": tid, "scopes": [
        "chat:write", "account:read"]}, headers=ks.auth())
    key = r.json["key"]
    if credits:
        r = s.post("/v1/tenants/%s/credits" % tid,
                   {"amount": credits, "reason": "test"}, headers=ks.auth())
        assert r.status == 200, r.body
    return tid, key


BODY = {"model": "gpt-4o-mini", "max_tokens": 100,
        "messages": [{"role": "user", "content": "x" * 396}]}


def estimate(body=BODY, markup=0.0):
    prompt = math.ceil(len(ks.json.dumps(body["messages"],
                                         separators=(",", ":"))) / 4)
    base = prompt * IN + body["max_tokens"] * OUT
    return math.ceil(base * (1 + markup) / 1e6), prompt


def cost(prompt, completion, markup=0.0):
    return math.ceil((prompt * IN + completion * OUT) * (1 + markup) / 1e6)


def decimal(micro_credits):
    """micro-credits as keygate writes them in a message: 0.05, 12."""
    text = "%d.%06d" % divmod(micro_credits, 10**6)
    return text.rstrip("0").rstrip(".")


def micro(s, tid, col="credits_balance"):
    return int(s.psql("SELECT %s FROM tenants WHERE id = '%s'"
                      % (col, tid))[0][0])


def set_balance(s, tid, micro_credits):
    """Sets a balance as an operator's SQL would, with the ledger row that
    keeps it the sum of the tenant's rows."""
    s.psql("INSERT INTO credit_ledger (tenant_id, kind, amount) SELECT id, "
           "'opening', %d - credits_balance FROM tenants WHERE id = '%s'; "
           "UPDATE tenants SET credits_balance = %d WHERE id = '%s'"
           % (micro_credits, tid, micro_credits, tid))


def ledger(s, tid):
    """The tenant's ledger rows: [kind, amount, held], oldest first."""
    return [[k, int(a), int(h)] for k, a, h in s.psql(
        "SELECT kind, amount, held FROM credit_ledger WHERE tenant_id = "
        "'%s' ORDER BY id" % tid)]


def chat(s, key, body=BODY, inline=True):
    headers = ks.auth(key)
    if inline:
        headers["X-OpenAI-Key"] = OPENAI_KEY
    return s.post("/v1/chat/completions", body, headers=headers)


def _quiet(call):
    try:
        return call()
    except Exception as exc:    # the worker died under the request
        return exc


def _exact(s, tids, leased=False):
    """The ledger's invariants, for the tenants given and for all: each
    balance the sum of its rows, no hold left (with leases: none but what
    the leases hold), every usage row's charge a ledger row of the same
    amount.  Each tenant's figures come from one statement, one snapshot:
    a lease's writer may move them meanwhile."""
    out = s.kg.ctl("ledger-verify")
    assert out.returncode == 0, (out.stdout, out.stderr)
    for tid in tids:
        row = s.psql(
            "SELECT t.credits_balance, t.credits_reserved, "
            "(SELECT coalesce(sum(amount), 0) FROM credit_ledger l WHERE "
            "l.tenant_id = t.id), (SELECT coalesce(sum(held), 0) FROM "
            "credit_ledger l WHERE l.tenant_id = t.id), (SELECT "
            "coalesce(-sum(amount), 0) FROM credit_ledger l WHERE "
            "l.tenant_id = t.id AND kind = 'charge'), (SELECT "
            "coalesce(sum(credits_charged), 0) FROM usage u WHERE "
            "u.tenant_id = t.id), (SELECT coalesce(sum(amount), 0) FROM "
            "credit_reservations r WHERE r.tenant_id = t.id AND "
            "r.request_id = 'lease') FROM tenants t WHERE t.id = '%s'"
            % tid)[0]
        balance, reserved, amounts, held, charges, usage, leases = \
            (int(v) for v in row)
        assert amounts == balance, (row, ledger(s, tid))
        assert held == (reserved if leased else 0), (row, ledger(s, tid))
        if leased:
            assert leases == reserved, row
        assert usage == charges, row


def overspend_burst(s, mock):
    """Forty calls at once (twenty at a time) of a new tenant funded for
    five estimates, the provider answering each after a pause.  Returns
    (the tenant's id, its funds, the responses)."""
    est, _ = estimate()
    tid, key = tenant(s, None)
    set_balance(s, tid, 5 * est)
    mock.behave("openai", Complete(usage=(100, 100), pause=0.05))
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda _: chat(s, key), range(40)))
    return tid, 5 * est, results


def usage_of(s, tid):
    """(how many calls, the credits charged) in `tid`'s usage rows."""
    used = s.psql("SELECT count(*), coalesce(sum(credits_charged), 0) "
                  "FROM usage WHERE tenant_id = '%s'" % tid)[0]
    return int(used[0]), int(used[1])


def charged_call(s, mock, usage=(40, 9)):
    """One call of a new tenant funded with a credit, the provider saying
    it used `usage` tokens: answered, and charged their cost.  Returns
    (the tenant's id, the response, the micro-credits charged)."""
    mock.behave("openai", Complete(usage=usage))
    tid, key = tenant(s, 1)
    r = chat(s, key)
    assert r.status == 200, r.body
    charged = cost(*usage)
    assert round(r.json["keygate"]["credits_charged"] * 1e6) == charged
    return tid, r, charged
