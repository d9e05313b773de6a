/* Unit tests for src/lib/clock.c: the monotonic clock, in seconds. */
#include "../unit.h"

#include <time.h>

#include "lib/clock.h"

/* Never backwards, and a sleep of 50 ms reads as 50 ms or more. */
static void
test_monotonic_seconds(void **state)
{
	struct timespec	 nap = { 0, 50 * 1000 * 1000 };
	double		 a, b, c;
	int		 i;

	(void)state;
	a = clock_mono();
	assert_true(a > 0);
	for (i = 0, b = a; i < 100000; i++) {
		c = clock_mono();
		assert_true(c >= b);
		b = c;
	}
	b = clock_mono();
	assert_int_equal(nanosleep(&nap, NULL), 0);
	c = clock_mono();
	assert_true(c - b >= 0.050);
	/* Seconds, not milliseconds: far less than a minute went by. */
	assert_true(c - a < 60);
}

/* Fractions of a second are kept (nanoseconds, not whole seconds). */
static void
test_fractions_are_kept(void **state)
{
	double	 t;
	int	 i, whole = 0;

	(void)state;
	for (i = 0; i < 10; i++) {
		t = clock_mono();
		if (t == (double)(long long)t)
			whole++;
	}
	assert_true(whole < 10);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_monotonic_seconds),
    cmocka_unit_test(test_fractions_are_kept))
