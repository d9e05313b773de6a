/* Unit tests for src/core/calls.c: calls in flight per key and host. */
#include "../unit.h"

#include "core/calls.h"

/* The table of calls in flight the workers share, fresh. */
UNIT_SHARED(table, struct calls_shared, calls_shared_size,
    calls_shared_init)

/* max calls of a key at once, counted across processes; others apart. */
static void
test_limit_per_key(void **state)
{
	struct calls_shared *t = table();
	int	 i;

	(void)state;
	for (i = 0; i < 3; i++)
		assert_int_equal(calls_begin(t, "key-a", 100 + i % 2, 3),
		    CALLS_OK);
	assert_int_equal(calls_count(t, "key-a"), 3);
	assert_int_equal(calls_begin(t, "key-a", 102, 3), CALLS_LIMIT);
	assert_int_equal(calls_begin(t, "key-b", 100, 3), CALLS_OK);
	calls_end(t, "key-a", 101);
	assert_int_equal(calls_count(t, "key-a"), 2);
	assert_int_equal(calls_begin(t, "key-a", 102, 3), CALLS_OK);
	assert_int_equal(calls_begin(t, "key-a", 102, 0), CALLS_OK);
	assert_int_equal(calls_count(t, "key-a"), 4);
	assert_int_equal(calls_count(t, "key-b"), 1);
	free(t);
}

/* A process that exits takes its calls with it, and only its own. */
static void
test_forget_process(void **state)
{
	struct calls_shared *t = table();

	(void)state;
	assert_int_equal(calls_begin(t, "k", 7, 2), CALLS_OK);
	assert_int_equal(calls_begin(t, "k", 8, 2), CALLS_OK);
	assert_int_equal(calls_begin(t, "k", 9, 2), CALLS_LIMIT);
	calls_forget(t, 7);
	assert_int_equal(calls_count(t, "k"), 1);
	assert_int_equal(calls_begin(t, "k", 9, 2), CALLS_OK);
	/* An end after the forget does not go below zero. */
	calls_end(t, "k", 7);
	assert_int_equal(calls_count(t, "k"), 2);
	free(t);
}

/*
 * Many keys over time: the table reuses and packs entries, and what is in
 * flight stays counted exactly through it.
 */
static void
test_many_keys_over_time(void **state)
{
	struct calls_shared *t = table();
	char	 k[32];
	int	 i;

	(void)state;
	assert_int_equal(calls_begin(t, "long-lived", 1, 0), CALLS_OK);
	for (i = 0; i < 50000; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		assert_int_equal(calls_begin(t, k, 1 + i % 4, 1), CALLS_OK);
		assert_int_equal(calls_begin(t, k, 2, 1), CALLS_LIMIT);
		if (i % 1000 != 0)
			calls_end(t, k, 1 + i % 4);
	}
	assert_int_equal(calls_count(t, "long-lived"), 1);
	for (i = 0; i < 50000; i += 1000) {
		snprintf(k, sizeof(k), "key-%d", i);
		assert_int_equal(calls_count(t, k), 1);
	}
	assert_int_equal(calls_count(t, "key-1"), 0);
	free(t);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_limit_per_key),
    cmocka_unit_test(test_forget_process),
    cmocka_unit_test(test_many_keys_over_time))
