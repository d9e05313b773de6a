"""What reaches a provider, and how often:

- a POST is sent once: when a kept connection dies under it, keygate
  answers 502 instead of sending it again on a fresh one (which a
  provider may bill twice);
- a body holding a number beyond a double's range (1e309, which would be
  re-written as the non-JSON Infinity) or a NUL character (\\u0000) is
  refused with 400 invalid_json, on the gateway and on the key routes,
  and nothing is sent or stored."""

import json
import secrets
import uuid

import pytest

from keygate_stack import DEV_KEY, assert_error, auth
from mock_llm import Complete, Drop

ROOT = "00000000-0000-0000-0000-000000000001"
CHAT = "/v1/chat/completions"
OPENAI_KEY = "sk-proj-" + secrets.token_hex(20)


@pytest.fixture
def one_worker(make_stack, llm):
    """One worker, so that one kept connection serves every call."""
    llm.reset()
    llm.accept("openai", OPENAI_KEY)
    return make_stack(workers=1, validate_llm_keys="false", **llm.config())


def chat_key(stack):
    tid = str(uuid.uuid4())
    stack.psql("INSERT INTO tenants (id, parent_id, name, path) SELECT "
               "'%s', id, 'e2e-once', path || '%s'::uuid FROM tenants "
               "WHERE id = '%s'" % (tid, tid, ROOT))
    p = stack.kg.ctl("create-key", "--name", "e2e-once", "--scopes",
                     "chat:write", "--tenant", tid)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def chat(stack, key, body):
    headers = dict(auth(key), **{"X-OpenAI-Key": OPENAI_KEY,
                                 "Content-Type": "application/json"})
    return stack.post(CHAT, body, headers=headers)


BODY = {"model": "gpt-4o-mini", "max_tokens": 20,
        "messages": [{"role": "user", "content": "Hi"}]}


def test_a_post_is_not_sent_again_when_its_kept_connection_dies(one_worker,
                                                                llm):
    key = chat_key(one_worker)
    assert chat(one_worker, key, BODY).status == 200
    # The next request goes out on the connection kept from the first;
    # the provider reads it whole, then closes without an answer.
    llm.reset()
    llm.accept("openai", OPENAI_KEY)
    llm.behave("openai", Drop())
    resp = chat(one_worker, key, BODY)
    assert_error(resp, 502, "upstream_error")
    assert len(llm.seen("openai")) == 1, llm.seen("openai")
    # And the next one works again, on a fresh connection.
    llm.behave("openai", Complete())
    assert chat(one_worker, key, BODY).status == 200
    assert len(llm.seen("openai")) == 2


CHAT_BODIES = {
    "infinite-number": '{"model":"gpt-4o-mini","max_tokens":20,'
                       '"temperature":1e309,"messages":[{"role":"user",'
                       '"content":"Hi"}]}',
    "negative-infinite": '{"model":"gpt-4o-mini","max_tokens":20,'
                         '"messages":[{"role":"user","content":"Hi"}],'
                         '"top_p":-1e400}',
    "nul-in-content": json.dumps(dict(BODY, messages=[
        {"role": "user", "content": "a\u0000b"}])),
    "nul-in-a-member-name": '{"model":"gpt-4o-mini","max_tokens":20,'
                            '"messages":[{"role":"user","content":"Hi",'
                            '"na\\u0000me":"x"}]}',
}


@pytest.mark.parametrize("case", sorted(CHAT_BODIES))
def test_unportable_values_are_refused_on_the_gateway(one_worker, llm,
                                                      case):
    key = chat_key(one_worker)
    llm.reset()
    llm.accept("openai", OPENAI_KEY)
    err = assert_error(chat(one_worker, key, CHAT_BODIES[case]), 400,
                       "invalid_json")
    assert ("NUL" in err["message"] if "nul" in case
            else "range of a double" in err["message"]), err
    assert llm.seen() == []
    # An escaped backslash before "u0000" is no NUL.
    ok = json.dumps(dict(BODY, messages=[
        {"role": "user", "content": "a\\u0000b"}]))
    assert chat(one_worker, key, ok).status == 200


KEY_BODIES = {
    "infinite-limit": '{"scopes":["models:read"],"rate_limit_max":1e309}',
    "nul-in-scope": '{"scopes":["models:read\\u0000junk"]}',
    "nul-in-name": '{"scopes":["models:read"],"name":"a\\u0000b"}',
}


@pytest.mark.parametrize("case", sorted(KEY_BODIES))
def test_unportable_values_are_refused_on_the_key_routes(stack, case):
    before = stack.pg.scalar("SELECT count(*) FROM api_keys",
                             dbname=stack.dbname)
    resp = stack.post("/v1/api_keys", KEY_BODIES[case],
                      headers=dict(auth(DEV_KEY),
                                   **{"Content-Type": "application/json"}))
    assert_error(resp, 400, "invalid_json")
    assert stack.pg.scalar("SELECT count(*) FROM api_keys",
                           dbname=stack.dbname) == before
