/*
 * Unit tests for src/api/common.c, its part that needs no request: the
 * comma-separated lists PostgreSQL hands back (a tenant's path, a role's
 * scopes) rendered as JSON arrays.
 */
#include "../unit.h"

#include "api/api.h"
#include "core/tenants.h"

static void
test_csv_as_an_array(void **state)
{
	static const struct {
		const char	*csv;
		const char	*want;
	} cases[] = {
		{ "a,b,c", "[\"a\",\"b\",\"c\"]" },
		{ "one", "[\"one\"]" },
		{ "", "[]" },
		/* Empty items are kept, but a trailing comma ends the list. */
		{ "a,,b", "[\"a\",\"\",\"b\"]" },
		{ ",a", "[\"\",\"a\"]" },
		{ "a,", "[\"a\"]" },
		{ ",", "[\"\"]" },
		{ TENANT_ROOT ",t2", "[\"" TENANT_ROOT "\",\"t2\"]" },
	};
	struct json_object *a;
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		a = api_csv_array(cases[i].csv);
		assert_json(a, cases[i].want);
		json_object_put(a);
	}
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_csv_as_an_array))
