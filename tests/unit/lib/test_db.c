/*
 * Unit tests for src/lib/db.c's statement table: the number of parameters
 * each statement says it takes is the number its SQL text uses.  No
 * database is needed; a wrong count would otherwise show only when the
 * statement runs.  And the parameters of a change that may not be asked
 * for (db_param_change()).
 */
#include "autoconfig.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/db.h"

#define MAX_PARAM 64

/*
 * The distinct parameters ($1, $2, ...) sql uses: how many, and the
 * highest into *highest.  -1 for a parameter numbered 0 or too high.
 */
static int
distinct_params(const char *sql, int *highest)
{
	bool		 seen[MAX_PARAM + 1] = { false };
	const char	*p;
	int		 n, count = 0;

	*highest = 0;
	for (p = sql; (p = strchr(p, '$')) != NULL; ) {
		p++;
		if (!isdigit((unsigned char)*p))
			continue;
		for (n = 0; isdigit((unsigned char)*p) && n <= MAX_PARAM; p++)
			n = n * 10 + (*p - '0');
		if (n < 1 || n > MAX_PARAM)
			return -1;
		if (!seen[n])
			count++;
		seen[n] = true;
		if (n > *highest)
			*highest = n;
	}
	return count;
}

/* The counting itself: repeats count once, numbers go past 9. */
static void
test_counting(void **state)
{
	int	 highest;

	(void)state;
	assert_int_equal(distinct_params("SELECT 1", &highest), 0);
	assert_int_equal(highest, 0);
	assert_int_equal(distinct_params("$1 = $1 AND $2", &highest), 2);
	assert_int_equal(highest, 2);
	assert_int_equal(distinct_params("$1, $3", &highest), 2);
	assert_int_equal(highest, 3);
	assert_int_equal(distinct_params("$12::int, $1", &highest), 2);
	assert_int_equal(highest, 12);
	assert_int_equal(distinct_params("'$' || $1", &highest), 1);
	assert_int_equal(distinct_params("$0", &highest), -1);
}

/*
 * Every statement takes $1 to $nparams, each used: no gap (PostgreSQL
 * could not tell the type of a parameter never used) and no parameter
 * more or less than the table says.
 */
static void
test_nparams(void **state)
{
	int	 s, count, highest;

	(void)state;
	for (s = 0; s < STMT__MAX; s++) {
		assert_non_null(db_stmt_name((enum stmt)s));
		assert_non_null(db_stmt_sql((enum stmt)s));
		count = distinct_params(db_stmt_sql((enum stmt)s), &highest);
		if (count != highest || count != db_stmt_nparams((enum stmt)s))
			fail_msg("statement %s: the table says %d parameters; "
			    "its SQL uses %d distinct, up to $%d",
			    db_stmt_name((enum stmt)s),
			    db_stmt_nparams((enum stmt)s), count, highest);
	}
}

/* A change asked for, or not: the flag, then the value or a placeholder. */
static void
test_param_change(void **state)
{
	const char	*p[3] = { NULL, NULL, "untouched" };

	(void)state;
	db_param_change(p, "new name", "");
	assert_string_equal(p[0], "true");
	assert_string_equal(p[1], "new name");
	db_param_change(p, NULL, "{}");
	assert_string_equal(p[0], "false");
	assert_string_equal(p[1], "{}");
	/* An empty value is a change too: to "". */
	db_param_change(p, "", "{}");
	assert_string_equal(p[0], "true");
	assert_string_equal(p[1], "");
	assert_string_equal(p[2], "untouched");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counting),
		cmocka_unit_test(test_nparams),
		cmocka_unit_test(test_param_change),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
