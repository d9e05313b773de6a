"""keygate guarding another service behind the same web server.

A service of static files and a program is served by each web server from
its fcgi/*-authorizer.conf snippet, which asks keygated before serving
anything: lighttpd as a FastCGI authorizer ("mode" => "authorizer"),
Apache with mod_authnz_fcgi (keygated on TCP), nginx with auth_request to
GET /v1/auth/check.  keygate.conf says which
scope each path needs (`authorize` rules, longest prefix wins, no rule =
refused).  Also GET /v1/auth/check, the same decision for nginx's
auth_request, asked directly."""

import json
import secrets
import time

import pytest

import keygate_stack as ks
from keygate_stack import assert_error, assert_json_response, auth

RULES = ["/reports/ reports:read",
         "/reports/admin/ reports:admin",
         "POST /reports/ reports:write",
         "/app/ reports:read"]
GUARDING = ("lighttpd", "apache", "nginx")


@pytest.fixture(scope="module", params=GUARDING)
def guarded(workdir, pg, request):
    stack, service = ks.guarded_stack(
        workdir.subdir("kg"), pg, "authz_%s" % secrets.token_hex(4),
        web=request.param, workers=3, authorize=RULES,
        rate_limit_max=100000, rate_limit_window="1 minute")
    yield stack, service
    stack.close()


def refused(service, resp, status, code):
    """resp is keygate's refusal `status` with `code`, as the service's web
    server shows it; returns keygate's message when the client sees it."""
    assert resp.status == service.status_of(status), (
        resp.status, resp.headers, resp.body[:300])
    if service.json_content_type:
        return assert_error(resp, status, code)["message"]
    if service.json_refusals:
        # Apache sends keygate's body under a Content-Type of its own.
        err = json.loads(resp.body)["error"]
        assert err["code"] == code, err
        assert err["message"] and err["type"], err
        return err["message"]
    assert resp.headers.get("x-keygate-error") == code, resp.headers
    return None


def fetch(service, path, key=None, method="GET", header="bearer"):
    headers = {}
    if key is not None:
        headers = (auth(key) if header == "bearer" else {"X-API-Key": key})
    return ks.request(method, service.url + path, headers=headers)


def env_of(resp):
    """The KEYGATE_* variables env.cgi printed, as a dict."""
    return dict(line.split("=", 1) for line in
                resp.body.decode().splitlines() if "=" in line)


# ---------------------------------------------------------------------------
# The FastCGI authorizer, through lighttpd

def test_no_key_is_keygates_401(guarded):
    stack, service = guarded
    resp = fetch(service, "/reports/q3.txt")
    refused(service, resp, 401, "missing_api_key")
    assert b"quarter three" not in resp.body


def test_a_wrong_key_is_401(guarded):
    stack, service = guarded
    _, key = ks.new_api_key(stack, ["reports:read"])
    wrong = key[:-6] + ("A" if key[-6] != "A" else "B") + key[-5:]
    refused(service, fetch(service, "/reports/q3.txt", wrong), 401,
            "invalid_api_key")


def test_a_key_without_the_scope_is_403(guarded):
    stack, service = guarded
    _, key = ks.new_api_key(stack, ["models:read"])
    message = refused(service, fetch(service, "/reports/q3.txt", key), 403,
                      "insufficient_permissions")
    if message is not None:
        assert "reports:read" in message
        assert "GET /reports/q3.txt" in message


def test_a_good_key_gets_the_file(guarded):
    stack, service = guarded
    _, key = ks.new_api_key(stack, ["reports:read"])
    for header in ("bearer", "x-api-key"):
        resp = fetch(service, "/reports/q3.txt", key, header=header)
        assert resp.status == 200, resp.body[:300]
        assert resp.body == b"quarter three\n"


def test_the_variables_reach_the_service(guarded):
    stack, service = guarded
    key_id, key = ks.new_api_key(stack, ["reports:read", "models:read"])
    resp = fetch(service, service.echo_path, key)
    assert resp.status == 200, resp.body[:300]
    env = env_of(resp)
    assert env.get("KEYGATE_KEY_ID") == key_id, resp.body
    assert env.get("KEYGATE_TENANT_ID") == \
        "00000000-0000-0000-0000-000000000001"
    assert sorted(env.get("KEYGATE_SCOPES", "").split(",")) == \
        ["models:read", "reports:read"]
    # The key itself never reaches the service's environment.
    assert key not in resp.body.decode()


def test_a_jwt_passes_like_a_key(guarded):
    stack, service = guarded
    secret = stack.kg.config["jwt_secret"]
    token = ks.jwt_token(secret, {
        "sub": "report-reader",
        "tenant_id": "00000000-0000-0000-0000-000000000001",
        "scopes": ["reports:read"], "exp": int(time.time()) + 300})
    resp = fetch(service, service.echo_path, token)
    assert resp.status == 200, resp.body[:300]
    assert env_of(resp).get("KEYGATE_SCOPES") == "reports:read"
    assert env_of(resp).get("KEYGATE_KEY_ID") == "jwt:report-reader"
    refused(service, fetch(service, "/reports/admin/plan.txt", token), 403,
            "insufficient_permissions")


def test_the_longest_prefix_decides(guarded):
    stack, service = guarded
    _, reader = ks.new_api_key(stack, ["reports:read"])
    _, admin = ks.new_api_key(stack, ["reports:admin"])
    message = refused(service, fetch(service, "/reports/admin/plan.txt",
                                     reader), 403, "insufficient_permissions")
    assert message is None or "reports:admin" in message
    resp = fetch(service, "/reports/admin/plan.txt", admin)
    assert resp.status == 200 and resp.body == b"the plan\n", resp.body
    # reports:admin is not reports:read: the shorter rule still holds.
    refused(service, fetch(service, "/reports/q3.txt", admin), 403,
            "insufficient_permissions")


def test_a_rule_naming_the_method_wins(guarded):
    stack, service = guarded
    _, reader = ks.new_api_key(stack, ["reports:read"])
    message = refused(service, fetch(service, "/reports/q3.txt", reader,
                                     method="POST"), 403,
                      "insufficient_permissions")
    assert message is None or "reports:write" in message


def test_no_rule_is_refused_even_for_an_admin_key(guarded):
    stack, service = guarded
    message = refused(service, fetch(service, "/secret.txt", ks.DEV_KEY),
                      403, "insufficient_permissions")
    assert message is None or \
        "No authorize rule covers GET /secret.txt" in message


@pytest.mark.parametrize("path", ["/reports/%2e%2e/secret.txt",
                                  "/reports/.%2E/secret.txt",
                                  "/reports//q3.txt"])
def test_a_path_out_of_normal_form_is_refused(guarded, path):
    stack, service = guarded
    _, key = ks.new_api_key(stack, ["reports:read"])
    resp = fetch(service, path, key)
    refused(service, resp, 400, "bad_request")
    assert b"not for anyone" not in resp.body


def test_a_revoked_key_is_refused_at_once(guarded):
    stack, service = guarded
    key_id, key = ks.new_api_key(stack, ["reports:read"])
    # Every worker has it cached, as a busy key would be.
    for _ in range(9):
        assert fetch(service, "/reports/q3.txt", key).status == 200
    resp = stack.request("DELETE", "/v1/api_keys/" + key_id, headers=auth())
    assert resp.status == 200 and resp.json["revoked_at"], resp.body[:300]
    assert stack.psql("SELECT revoked_at IS NOT NULL FROM api_keys "
                      "WHERE id = '%s'" % key_id) == [["t"]]
    # The very next requests, whichever worker takes them, are refused.
    for _ in range(9):
        resp = fetch(service, "/reports/q3.txt", key)
        refused(service, resp, 401, "invalid_api_key")


def limited_key(stack, limit):
    """A reports:read key allowed `limit` requests an hour."""
    return ks.new_api_key(stack, ["reports:read"], rate_limit_max=limit,
                   rate_limit_window="1 hour")[1]


def use_up(limit, ask):
    """Makes `limit` requests with ask(), each passing; returns the next."""
    for _ in range(limit):
        resp = ask()
        assert resp.status == 200, resp.body[:300]
    return ask()


def test_the_rate_limit_applies(guarded):
    stack, service = guarded
    key = limited_key(stack, 3)
    resp = use_up(3, lambda: fetch(service, "/reports/q3.txt", key))
    refused(service, resp, 429, "rate_limit_exceeded")
    assert int(resp.headers["retry-after"]) > 0
    if service.json_refusals:
        assert resp.headers["x-ratelimit-limit"] == "3"
        assert resp.headers["x-ratelimit-remaining"] == "0"
    # The same key's API calls count against the same limit.
    assert_error(stack.get("/v1/auth/whoami", headers=auth(key)), 429,
                 "rate_limit_exceeded")


# ---------------------------------------------------------------------------
# GET /v1/auth/check, asked directly

def check(stack, uri, key=None, method=None):
    headers = auth(key) if key else {}
    if uri is not None:
        headers["X-Original-URI"] = uri
    if method is not None:
        headers["X-Original-Method"] = method
    return stack.get("/v1/auth/check", headers=headers)


def test_check_passes_with_who_the_caller_is(guarded):
    stack, _ = guarded
    key_id, key = ks.new_api_key(stack, ["reports:read"])
    resp = check(stack, "/reports/q3.txt?year=2026", key, "GET")
    assert resp.status == 200, resp.headers
    assert resp.body == b""
    assert resp.headers["x-keygate-key-id"] == key_id
    assert resp.headers["x-keygate-tenant-id"] == \
        "00000000-0000-0000-0000-000000000001"
    assert resp.headers["x-keygate-scopes"] == "reports:read"
    assert resp.headers["x-ratelimit-limit"] == "100000"


def test_check_refuses_without_a_body(guarded):
    stack, _ = guarded
    _, reader = ks.new_api_key(stack, ["reports:read"])
    cases = [
        (None, "/reports/q3.txt", "GET", 401, "missing_api_key"),
        (reader[:-1] + ("x" if reader[-1] != "x" else "y"),
         "/reports/q3.txt", "GET", 401, "invalid_api_key"),
        (reader, "/reports/admin/plan.txt", "GET", 403,
         "insufficient_permissions"),
        (reader, "/reports/q3.txt", "POST", 403, "insufficient_permissions"),
        (reader, "/elsewhere", "GET", 403, "insufficient_permissions"),
        (reader, "/reports/../secret.txt", "GET", 403, "bad_request"),
        (reader, None, None, 403, "bad_request"),
    ]
    for key, uri, method, status, code in cases:
        resp = check(stack, uri, key, method)
        assert resp.status == status, (uri, method, resp.status)
        assert resp.body == b"", resp.body
        assert resp.headers.get("x-keygate-error") == code, (uri, code)
        assert "x-keygate-key-id" not in resp.headers


def test_check_counts_against_the_rate_limit(guarded):
    stack, _ = guarded
    key = limited_key(stack, 2)
    resp = use_up(2, lambda: check(stack, "/reports/q3.txt", key))
    # nginx's auth_request knows only 2xx, 401 and 403.
    assert resp.status == 403 and resp.body == b""
    assert resp.headers["x-keygate-error"] == "rate_limit_exceeded"
    assert int(resp.headers["retry-after"]) > 0


def test_a_service_scope_is_a_scope_keys_can_hold(guarded):
    stack, _ = guarded
    resp = stack.post("/v1/api_keys", {"name": "bad",
                                       "scopes": ["api_keys:destroy"]},
                      headers=auth())
    assert_error(resp, 422, "validation_error")
    key_id, key = ks.new_api_key(stack, ["reports:*"])
    resp = stack.get("/v1/auth/whoami", headers=auth(key))
    assert resp.status == 200
    assert_json_response(resp)
    assert resp.json["scopes"] == ["reports:*"]
    assert check(stack, "/reports/admin/plan.txt", key).status == 200
