/* Unit tests for src/core/authfail.c: counting failures per subject. */
#include "../unit.h"

#include "core/authfail.h"

/* The failure counts the workers share, fresh. */
UNIT_SHARED(shared, struct af_shared, af_shared_size, af_shared_init)

/* Refused after max failures, until the window ends; others unaffected. */
static void
test_limit_per_subject(void **state)
{
	struct af_shared *sh = shared();
	time_t	 now = 1800000030;	/* 30 s into a minute */
	int	 i;

	(void)state;
	for (i = 0; i < 3; i++) {
		assert_int_equal(af_refused(sh, "a:192.0.2.1", 3, 60, now), 0);
		af_count(sh, "a:192.0.2.1", 60, now);
	}
	assert_int_equal(af_refused(sh, "a:192.0.2.1", 3, 60, now), 30);
	assert_int_equal(af_refused(sh, "a:192.0.2.1", 3, 60, now + 29), 1);
	assert_int_equal(af_refused(sh, "p:kg_live_AbCdEfGh", 3, 60, now), 0);
	/* The next window starts from nothing. */
	assert_int_equal(af_refused(sh, "a:192.0.2.1", 3, 60, now + 30), 0);
	/* A limit of 0 is no limit. */
	assert_int_equal(af_refused(sh, "a:192.0.2.1", 0, 60, now), 0);
	free(sh);
}

/* Many subjects in the same sets: each keeps its own count or loses it. */
static void
test_many_subjects_never_share_a_count(void **state)
{
	struct af_shared *sh = shared();
	time_t	 now = 1800000000;
	char	 s[32];
	int	 i;

	(void)state;
	for (i = 0; i < 5000; i++) {
		snprintf(s, sizeof(s), "a:10.0.%d.%d", i / 256, i % 256);
		af_count(sh, s, 60, now);
	}
	for (i = 0; i < 5000; i++) {
		snprintf(s, sizeof(s), "a:10.0.%d.%d", i / 256, i % 256);
		assert_int_equal(af_refused(sh, s, 2, 60, now), 0);
	}
	af_count(sh, "p:kg_live_12345678", 60, now);
	af_count(sh, "p:kg_live_12345678", 60, now);
	assert_int_not_equal(af_refused(sh, "p:kg_live_12345678", 2, 60, now),
	    0);
	/* Without shared memory nothing is counted or refused. */
	af_count(NULL, "a:x", 60, now);
	assert_int_equal(af_refused(NULL, "a:x", 1, 60, now), 0);
	free(sh);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_limit_per_subject),
    cmocka_unit_test(test_many_subjects_never_share_a_count))
