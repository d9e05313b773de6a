/*
 * Unit tests for src/core/audit.c: the chain's key as PostgreSQL gets it
 * (HMAC's two padded keys, so that sha256() alone makes the HMAC there),
 * and a row's parameters.  The two database functions it calls are
 * replaced below and keep what they were given (lib/db.c is then not
 * linked in).
 */
#include "../unit.h"

#include "core/audit.h"
#include "lib/db.h"

static char	 set_name[64], set_value[512];
static bool	 set_fails;
static enum stmt exec_st;
static char	 exec_params[9][64];
static bool	 exec_null[9];

int
db_set_session(struct db *db, const char *name, const char *value)
{
	(void)db;
	snprintf(set_name, sizeof(set_name), "%s", name);
	snprintf(set_value, sizeof(set_value), "%s", value);
	return set_fails ? -1 : 0;
}

int
db_exec(struct db *db, enum stmt st, int n, const char *const *p)
{
	int	 i;

	(void)db;
	assert_int_equal(n, 9);
	exec_st = st;
	for (i = 0; i < n; i++) {
		exec_null[i] = p[i] == NULL;
		snprintf(exec_params[i], sizeof(exec_params[i]), "%s",
		    p[i] != NULL ? p[i] : "");
	}
	return 0;
}

/* n bytes of hex s into out; the test fails on anything else. */
static void
unhex(const char *s, uint8_t *out, size_t n)
{
	size_t	 i;
	unsigned int b;

	assert_int_equal(strlen(s), 2 * n);
	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(s + 2 * i, "%2x", &b), 1);
		out[i] = (uint8_t)b;
	}
}

/*
 * sha256(outer pad || sha256(inner pad || row)), as PostgreSQL computes
 * it, is HMAC-SHA256 under the chain's key: the key the secret derives
 * for "keygate-audit-chain".
 */
static void
test_the_pads_make_the_hmac(void **state)
{
	static const char row[] = "a row of the audit log";
	uint8_t		 pads[128], other[128], key[CRYPTO_SHA256_LEN];
	uint8_t		 inner[64 + sizeof(row) - 1], outer[64 + 32];
	uint8_t		 got[CRYPTO_SHA256_LEN], want[CRYPTO_SHA256_LEN];

	(void)state;
	set_fails = false;
	assert_int_equal(audit_attach(NULL, "the hmac secret"), 0);
	assert_string_equal(set_name, "keygate.audit_key");
	unhex(set_value, pads, sizeof(pads));
	memcpy(inner, pads, 64);
	memcpy(inner + 64, row, sizeof(row) - 1);
	memcpy(outer, pads + 64, 64);
	crypto_sha256(inner, sizeof(inner), outer + 64);
	crypto_sha256(outer, sizeof(outer), got);
	assert_int_equal(crypto_hmac_sha256("the hmac secret", 15,
	    "keygate-audit-chain", 19, key), 0);
	assert_int_equal(crypto_hmac_sha256(key, sizeof(key), row,
	    sizeof(row) - 1, want), 0);
	assert_memory_equal(got, want, sizeof(want));
	/* Another secret, another key. */
	assert_int_equal(audit_attach(NULL, "another secret"), 0);
	unhex(set_value, other, sizeof(other));
	assert_memory_not_equal(other, pads, sizeof(pads));
	/* The session setting could not be made: said. */
	set_fails = true;
	assert_int_equal(audit_attach(NULL, "the hmac secret"), -1);
	set_fails = false;
}

/* The columns left out are "", details "{}"; who and where as given. */
static void
test_a_row(void **state)
{
	struct audit_entry e = {
		.tenant_id = "t1", .actor_key_id = NULL,
		.action = "api_key.create",
	};
	static const char *const want[9] = {
		"t1", "", "", "api_key.create", "", "", "", "", "{}",
	};
	int	 i;

	(void)state;
	assert_int_equal(audit_write(NULL, &e), 0);
	assert_int_equal(exec_st, STMT_AUDIT_INSERT);
	for (i = 0; i < 9; i++)
		assert_string_equal(exec_params[i], want[i]);
	/* No key acted: SQL NULL, not "". */
	assert_true(exec_null[1]);
	assert_false(exec_null[2]);
	e.actor_key_id = "k1";
	e.actor = "keygatectl";
	e.target_type = "api_key";
	e.target_id = "k2";
	e.request_id = "req-1";
	e.client_addr = "192.0.2.1";
	e.details = "{\"scopes\":[]}";
	assert_int_equal(audit_write(NULL, &e), 0);
	assert_string_equal(exec_params[1], "k1");
	assert_string_equal(exec_params[2], "keygatectl");
	assert_string_equal(exec_params[4], "api_key");
	assert_string_equal(exec_params[5], "k2");
	assert_string_equal(exec_params[6], "req-1");
	assert_string_equal(exec_params[7], "192.0.2.1");
	assert_string_equal(exec_params[8], "{\"scopes\":[]}");
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_the_pads_make_the_hmac),
    cmocka_unit_test(test_a_row))
