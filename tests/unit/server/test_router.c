/* Unit tests for src/server/router.c: matching, {id}, {id+}, 404, 405 and HEAD. */
#include "../unit.h"

#include "server/router.h"

static void h_list(struct request *r) { (void)r; }
static void h_get(struct request *r) { (void)r; }
static void h_rotate(struct request *r) { (void)r; }

static const struct route table[] = {
	{ METHOD_GET, "/health", h_list, NULL, 0 },
	{ METHOD_GET, "/v1/api_keys", h_list, "api_keys:read", 0 },
	{ METHOD_POST, "/v1/api_keys", h_list, "api_keys:write", 0 },
	{ METHOD_GET, "/v1/api_keys/dormant", h_list, "api_keys:read", 0 },
	{ METHOD_GET, "/v1/api_keys/{id}", h_get, "api_keys:read", 0 },
	{ METHOD_DELETE, "/v1/api_keys/{id}", h_get, "api_keys:write", 0 },
	{ METHOD_POST, "/v1/api_keys/{id}/rotate", h_rotate, "api_keys:write", 0 },
	{ METHOD_GET, "/v1/models", h_list, "models:read", 0 },
	{ METHOD_GET, "/v1/models/{id+}", h_get, "models:read", 0 },
};
#define N (sizeof(table) / sizeof(table[0]))

static enum route_result
run(const char *m, const char *p, const struct route **r, char *param,
    char *allow)
{
	return router_match(table, N, m, p, r, param, 65, allow, 64);
}

static void
test_exact_and_param(void **state)
{
	const struct route *r;
	char	 param[65], allow[64];

	(void)state;
	assert_int_equal(run("GET", "/health", &r, param, allow), ROUTE_FOUND);
	assert_ptr_equal(r, &table[0]);
	assert_int_equal(run("GET", "/v1/api_keys/abc", &r, param, allow),
	    ROUTE_FOUND);
	assert_ptr_equal(r, &table[4]);
	assert_string_equal(param, "abc");
	/* A literal row listed first wins over {id}. */
	assert_int_equal(run("GET", "/v1/api_keys/dormant", &r, param, allow),
	    ROUTE_FOUND);
	assert_ptr_equal(r, &table[3]);
	assert_int_equal(run("POST", "/v1/api_keys/k1/rotate", &r, param,
	    allow), ROUTE_FOUND);
	assert_ptr_equal(r, &table[6]);
	assert_string_equal(param, "k1");
}

/* prefix followed by 'x' up to n - 1 bytes: longer than any param. */
static const char *
long_path(char *buf, size_t n, const char *prefix)
{
	memset(buf, 'x', n - 1);
	memcpy(buf, prefix, strlen(prefix));
	buf[n - 1] = '\0';
	return buf;
}

/* A UUID reaches the handler in lower case; anything else as it came. */
static void
test_uuid_canonical(void **state)
{
	const struct route *r;
	char	 param[65], allow[64];

	(void)state;
	assert_int_equal(run("DELETE",
	    "/v1/api_keys/0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D", &r, param,
	    allow), ROUTE_FOUND);
	assert_string_equal(param, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
	assert_int_equal(run("GET", "/v1/api_keys/ABC-Key", &r, param, allow),
	    ROUTE_FOUND);
	assert_string_equal(param, "ABC-Key");
	/* 37 characters: not a UUID, not touched. */
	assert_int_equal(run("GET",
	    "/v1/api_keys/0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4DE", &r, param,
	    allow), ROUTE_FOUND);
	assert_string_equal(param, "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4DE");
}

static void
test_not_found(void **state)
{
	const struct route *r;
	char	 param[65], allow[64];
	char	 longseg[200];

	(void)state;
	assert_int_equal(run("GET", "/nope", &r, param, allow),
	    ROUTE_NOT_FOUND);
	assert_null(r);
	assert_int_equal(run("GET", "/health/", &r, param, allow),
	    ROUTE_NOT_FOUND);
	assert_int_equal(run("GET", "/v1/api_keys/", &r, param, allow),
	    ROUTE_NOT_FOUND);
	assert_int_equal(run("GET", "/v1/api_keys/a/b", &r, param, allow),
	    ROUTE_NOT_FOUND);
	assert_int_equal(run("GET", long_path(longseg, sizeof(longseg),
	    "/v1/api_keys/"), &r, param, allow), ROUTE_NOT_FOUND);
}

static void
test_rest_of_the_path(void **state)
{
	const struct route *r;
	char	 param[65], allow[64], longid[80];

	(void)state;
	assert_int_equal(run("GET", "/v1/models/gpt-4o-mini", &r, param,
	    allow), ROUTE_FOUND);
	assert_ptr_equal(r, &table[8]);
	assert_string_equal(param, "gpt-4o-mini");
	assert_int_equal(run("GET", "/v1/models/openai/gpt-4o", &r, param,
	    allow), ROUTE_FOUND);
	assert_ptr_equal(r, &table[8]);
	assert_string_equal(param, "openai/gpt-4o");
	assert_int_equal(run("GET", "/v1/models", &r, param, allow),
	    ROUTE_FOUND);
	assert_ptr_equal(r, &table[7]);
	/* Nothing after the slash, a trailing slash, or too long: no match. */
	assert_int_equal(run("GET", "/v1/models/", &r, param, allow),
	    ROUTE_NOT_FOUND);
	assert_int_equal(run("GET", "/v1/models/openai/", &r, param, allow),
	    ROUTE_NOT_FOUND);
	assert_int_equal(run("GET", long_path(longid, sizeof(longid),
	    "/v1/models/"), &r, param, allow), ROUTE_NOT_FOUND);
	assert_int_equal(run("DELETE", "/v1/models/a/b", &r, param, allow),
	    ROUTE_METHOD_NOT_ALLOWED);
	assert_string_equal(allow, "GET, HEAD");
}

static void
test_method_not_allowed(void **state)
{
	const struct route *r;
	char	 param[65], allow[64];

	(void)state;
	assert_int_equal(run("POST", "/health", &r, param, allow),
	    ROUTE_METHOD_NOT_ALLOWED);
	assert_string_equal(allow, "GET, HEAD");
	assert_int_equal(run("PATCH", "/v1/api_keys/x", &r, param, allow),
	    ROUTE_METHOD_NOT_ALLOWED);
	assert_string_equal(allow, "GET, HEAD, DELETE");
	assert_int_equal(run("BREW", "/v1/api_keys", &r, param, allow),
	    ROUTE_METHOD_NOT_ALLOWED);
	assert_string_equal(allow, "GET, HEAD, POST");
}

/* HEAD finds the GET rows, and only those. */
static void
test_head_is_get(void **state)
{
	const struct route *r;
	char	 param[65], allow[64];

	(void)state;
	assert_int_equal(run("HEAD", "/health", &r, param, allow), ROUTE_FOUND);
	assert_ptr_equal(r, &table[0]);
	assert_int_equal(run("HEAD", "/v1/api_keys", &r, param, allow),
	    ROUTE_FOUND);
	assert_ptr_equal(r, &table[1]);
	assert_int_equal(run("HEAD", "/v1/api_keys/abc", &r, param, allow),
	    ROUTE_FOUND);
	assert_ptr_equal(r, &table[4]);
	assert_string_equal(param, "abc");
	assert_int_equal(run("HEAD", "/v1/api_keys/k1/rotate", &r, param,
	    allow), ROUTE_METHOD_NOT_ALLOWED);
	assert_null(r);
	assert_string_equal(allow, "POST");
	assert_int_equal(run("HEAD", "/nope", &r, param, allow),
	    ROUTE_NOT_FOUND);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_exact_and_param),
    cmocka_unit_test(test_uuid_canonical),
    cmocka_unit_test(test_not_found),
    cmocka_unit_test(test_rest_of_the_path),
    cmocka_unit_test(test_method_not_allowed),
    cmocka_unit_test(test_head_is_get))
