/* Unit tests for src/core/jwt.c: RFC 7515 vector, alg, claims, times. */
#include "../unit.h"

#include "core/jwt.h"
#include "lib/crypto.h"

#define SECRET "0123456789abcdef0123456789abcdef-test"
#define TENANT "00000000-0000-0000-0000-000000000001"
#define NOW 2000000000

static enum jwt_result
check(const char *payload, struct jwt_claims *c)
{
	char	 tok[4096];

	assert_int_equal(jwt_sign(payload, SECRET, tok, sizeof(tok)), 0);
	return jwt_verify(tok, SECRET, 30, NOW, c);
}

/* RFC 7515 appendix A.1: the HS256 example, key and token as published. */
static void
test_rfc7515_a1(void **state)
{
	static const unsigned char key[] = {
		3, 35, 53, 75, 43, 15, 165, 188, 131, 126, 6, 101, 119, 123,
		166, 143, 90, 179, 40, 230, 240, 84, 201, 40, 169, 15, 132,
		178, 210, 80, 46, 191, 211, 251, 90, 146, 210, 6, 71, 239,
		150, 138, 180, 195, 119, 98, 61, 34, 61, 46, 33, 114, 5, 46,
		79, 8, 192, 205, 154, 245, 103, 208, 128, 163, 0 };
	const char *tok = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
	    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGF"
	    "tcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
	    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
	struct jwt_claims c;

	(void)state;
	/* The signature checks; the example has no sub or tenant_id. */
	assert_int_equal(jwt_verify(tok, (const char *)key, 0, 1300819370,
	    &c), JWT_BAD_CLAIMS);
	/* ... and its exp (2011) is long past. */
	assert_int_equal(jwt_verify(tok, (const char *)key, 0, NOW, &c),
	    JWT_EXPIRED);
	assert_int_equal(jwt_verify(tok, "another key", 0, 1300819370, &c),
	    JWT_BAD_SIGNATURE);
}

static void
test_good_token(void **state)
{
	struct jwt_claims c;

	(void)state;
	assert_int_equal(check("{\"sub\":\"svc\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000100,\"scopes\":[\"chat:write\","
	    "\"models:read\"]}", &c), JWT_OK);
	assert_string_equal(c.sub, "svc");
	assert_string_equal(c.tenant_id, TENANT);
	assert_true(c.has_scopes);
	assert_string_equal(c.scopes, "chat:write,models:read");
	assert_int_equal(check("{\"sub\":\"svc\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000100,\"scopes\":\"api_keys:* audit:read\"}",
	    &c), JWT_OK);
	assert_string_equal(c.scopes, "api_keys:*,audit:read");
	assert_int_equal(check("{\"sub\":\"svc\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000100}", &c), JWT_OK);
	assert_false(c.has_scopes);
}

static void
test_times(void **state)
{
	struct jwt_claims c;

	(void)state;
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\"}", &c), JWT_NO_EXP);
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":1999999900}", &c), JWT_EXPIRED);
	/* Within the 30 s leeway. */
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":1999999990}", &c), JWT_OK);
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000900,\"nbf\":2000000100}", &c),
	    JWT_NOT_YET_VALID);
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000900,\"nbf\":2000000020}", &c), JWT_OK);
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":\"soon\"}", &c), JWT_BAD_CLAIMS);
}

static void
test_refused_algs_and_shapes(void **state)
{
	struct jwt_claims c;
	/* {"alg":"none"} . {"sub":"s","tenant_id":...,"exp":2000000100} . */
	const char *none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzIiwidGVuYW50X2lkIj"
	    "oiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAxIiwiZXhwIjoy"
	    "MDAwMDAwMTAwfQ.";
	char	 tok[1024], *dot;

	(void)state;
	assert_int_equal(jwt_verify(none, SECRET, 30, NOW, &c), JWT_BAD_ALG);
	/* {"alg":"HS512"} with any signature */
	assert_int_equal(jwt_verify("eyJhbGciOiJIUzUxMiJ9.e30.AAAA", SECRET,
	    30, NOW, &c), JWT_BAD_ALG);
	assert_int_equal(jwt_verify("a.b", SECRET, 30, NOW, &c),
	    JWT_MALFORMED);
	assert_int_equal(jwt_verify("a.b.c.d", SECRET, 30, NOW, &c),
	    JWT_MALFORMED);
	assert_false(jwt_looks_like("kg_live_abc"));
	assert_true(jwt_looks_like("a.b.c"));

	/* A tampered payload fails the signature. */
	assert_int_equal(jwt_sign("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000100}", SECRET, tok, sizeof(tok)), 0);
	dot = strchr(tok, '.');
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	assert_int_equal(jwt_verify(tok, SECRET, 30, NOW, &c),
	    JWT_BAD_SIGNATURE);
	/* Unknown scopes and a bad tenant are bad claims. */
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"" TENANT
	    "\",\"exp\":2000000100,\"scopes\":[\"api_keys:all\"]}", &c),
	    JWT_BAD_CLAIMS);
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":\"acme\","
	    "\"exp\":2000000100}", &c), JWT_BAD_CLAIMS);
	/* 36 characters, but no UUID. */
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":"
	    "\"00000000-0000-0000-0000-00000000000g\",\"exp\":2000000100}",
	    &c), JWT_BAD_CLAIMS);
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":"
	    "\"000000000000-0000-0000-000000000000a\",\"exp\":2000000100}",
	    &c), JWT_BAD_CLAIMS);
	/* Upper case is the same tenant, written the one way. */
	assert_int_equal(check("{\"sub\":\"s\",\"tenant_id\":"
	    "\"ABCDEF00-0000-0000-0000-00000000000A\",\"exp\":2000000100}",
	    &c), JWT_OK);
	assert_string_equal(c.tenant_id, "abcdef00-0000-0000-0000-00000000000a");
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_rfc7515_a1),
    cmocka_unit_test(test_good_token),
    cmocka_unit_test(test_times),
    cmocka_unit_test(test_refused_algs_and_shapes))
