/* Unit tests for src/core/scope.c: known scopes and wildcards. */
#include "../unit.h"

#include "core/scope.h"

static void
test_valid(void **state)
{
	(void)state;
	assert_true(scope_valid("*"));
	assert_true(scope_valid("api_keys:read"));
	assert_true(scope_valid("api_keys:*"));
	assert_true(scope_valid("maintenance:write"));
	assert_true(scope_valid("embeddings:write"));
	assert_true(scope_valid("embeddings:*"));
	assert_false(scope_valid("embeddings:read"));
	assert_false(scope_valid("api_keys"));
	assert_false(scope_valid("api_keys:delete"));
	assert_true(scope_valid("metrics:read"));
	/* A guarded service's own scopes, and wildcards over them. */
	assert_true(scope_valid("reports:read"));
	assert_true(scope_valid("reports:*"));
	assert_false(scope_valid("Reports:read"));
	assert_false(scope_valid("reports:"));
	assert_false(scope_valid("reports:read:all"));
	assert_false(scope_valid("roles:delete"));
	assert_false(scope_valid("*:read"));
	assert_false(scope_valid(""));
}

static void
test_allows(void **state)
{
	const char *admin[] = { "*" };
	const char *keys[] = { "api_keys:*", "chat:write" };
	const char *reader[] = { "api_keys:read" };

	(void)state;
	assert_true(scope_allows(admin, 1, "maintenance:write"));
	assert_true(scope_allows(keys, 2, "api_keys:write"));
	assert_true(scope_allows(keys, 2, "chat:write"));
	assert_false(scope_allows(keys, 2, "api_keys_extra:read"));
	assert_false(scope_allows(keys, 2, "roles:read"));
	assert_true(scope_allows(reader, 1, "api_keys:read"));
	assert_false(scope_allows(reader, 1, "api_keys:write"));
	assert_false(scope_allows(reader, 0, "api_keys:read"));
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_valid),
    cmocka_unit_test(test_allows))
