/*
 * Unit tests for src/core/ratelimit.c: requests taken from the window's
 * row in growing blocks and handed out from the counters the workers
 * share (here a plain block of memory), never more than the limit.  The
 * row is kept by the few database functions below, which do what
 * rate_take and rate_give_back do in SQL (lib/db.c is then not linked in).
 */
#include "../unit.h"

#include <time.h>

/*
 * The module itself, not only its header: a test needs subjects that
 * share one set of counters, which only its hash can tell.
 */
#include "core/ratelimit.c"

#include "../fake_db.h"

#define WINDOW	86400	/* s: a day, so no test runs across a window */

/* The rows of rate_counters, and what was asked of them. */
static struct row {
	char	 subject[64];
	long	 start;
	long	 count;
} rows[64];
static int	 nrows;
static int	 takes;		/* rate_take statements run */
static long	 max_want;	/* the largest block asked for */
static long	 given_back;	/* requests given back by rate_give_back */
static long	 pruned_before;	/* rate_prune's parameter */
static bool	 db_down;	/* every statement fails */

static struct row *
row(const char *subject, long start, bool make)
{
	int	 i;

	for (i = 0; i < nrows; i++)
		if (strcmp(rows[i].subject, subject) == 0 &&
		    rows[i].start == start)
			return &rows[i];
	if (!make)
		return NULL;
	assert_true(nrows < (int)(sizeof(rows) / sizeof(rows[0])));
	snprintf(rows[nrows].subject, sizeof(rows[0].subject), "%s", subject);
	rows[nrows].start = start;
	rows[nrows].count = 0;
	return &rows[nrows++];
}

/* rate_take: count += least(want, limit - count) while count < limit. */
struct db_res *
db_query(struct db *db, enum stmt st, int n, const char *const *p)
{
	struct db_res	*res;
	struct row	*r;
	long		 limit, want, granted;
	bool		 fresh;

	(void)db;
	assert_int_equal(st, STMT_RATE_TAKE);
	assert_int_equal(n, 4);
	if (db_down)
		return NULL;
	takes++;
	limit = atol(p[2]);
	want = atol(p[3]);
	if (want > max_want)
		max_want = want;
	fresh = row(p[0], atol(p[1]), false) == NULL;
	r = row(p[0], atol(p[1]), true);
	if (!fresh && r->count >= limit)
		return fake_res(0);	/* the WHERE refuses: no row */
	granted = want < limit - r->count ? want : limit - r->count;
	r->count += granted;
	res = fake_res(1);
	fake_set(res, 0, "%ld", r->count);
	fake_set(res, 1, "%ld", granted);
	return res;
}

/* rate_give_back and rate_prune. */
int
db_exec(struct db *db, enum stmt st, int n, const char *const *p)
{
	struct row	*r;

	(void)db;
	if (db_down)
		return -1;
	if (st == STMT_RATE_PRUNE) {
		assert_int_equal(n, 1);
		pruned_before = atol(p[0]);
		return 0;
	}
	assert_int_equal(st, STMT_RATE_GIVE_BACK);
	assert_int_equal(n, 3);
	r = row(p[0], atol(p[1]), false);
	if (r != NULL && r->count >= atol(p[2])) {
		r->count -= atol(p[2]);
		given_back += atol(p[2]);
	}
	return 0;
}

/* No rows, nothing asked yet: set up before each test. */
static int
empty(void **state)
{
	(void)state;
	memset(rows, 0, sizeof(rows));
	nrows = takes = 0;
	max_want = given_back = pruned_before = 0;
	db_down = false;
	return 0;
}

/* The row's count for subject in the current window. */
static long
counted(const char *subject)
{
	struct row *r = row(subject, (long)(time(NULL) / WINDOW) * WINDOW,
	    false);

	return r != NULL ? r->count : 0;
}

/* The counters the workers share, fresh. */
UNIT_SHARED(shared, struct rl_shared, rl_shared_size, rl_shared_init)

/* One request for subject that must be answered (allowed or not). */
static struct rl_state
take(struct rl_shared *sh, const char *subject, long limit)
{
	struct rl_state	 st;

	assert_int_equal(rl_take(NULL, sh, subject, limit, WINDOW, &st),
	    RL_OK);
	return st;
}

/* Without shared memory every request is one take from the row. */
static void
test_each_request_to_the_row(void **state)
{
	struct rl_state	 st;
	time_t		 now = time(NULL);
	int		 i;

	(void)state;
	for (i = 1; i <= 3; i++) {
		st = take(NULL, "k", 3);
		assert_true(st.allowed);
		assert_int_equal(st.remaining, 3 - i);
		assert_int_equal(st.limit, 3);
	}
	st = take(NULL, "k", 3);
	assert_false(st.allowed);
	assert_int_equal(st.remaining, 0);
	/* The window is aligned to the epoch; retry when it ends. */
	assert_int_equal(st.reset % WINDOW, 0);
	assert_true(st.reset > now && st.reset <= now + WINDOW);
	assert_true(st.retry_after >= 1 && st.retry_after <= WINDOW);
	assert_true(st.reset - st.retry_after >= now);
	assert_int_equal(takes, 4);
	assert_int_equal(max_want, 1);
	assert_int_equal(counted("k"), 3);
}

/*
 * A busy key is taken from the row in blocks doubling from one, while
 * the client sees its remaining requests go down one at a time.
 */
static void
test_blocks_double_and_remaining_counts_down(void **state)
{
	struct rl_shared *sh = shared();
	struct rl_state	 st;
	int		 i;

	(void)state;
	for (i = 1; i <= 100; i++) {
		st = take(sh, "busy", 100000);
		assert_true(st.allowed);
		assert_int_equal(st.remaining, 100000 - i);
		/* Blocks of 1, 2, 4...: 1 + 2 + ... + 2^(k-1) = 2^k - 1. */
		if (i == 1 || i == 3 || i == 7 || i == 15)
			assert_int_equal(counted("busy"), i);
	}
	assert_int_equal(takes, 7);		/* 1 + ... + 64 = 127 >= 100 */
	assert_int_equal(counted("busy"), 127);
	/* Never more than 1024 at a time, however busy. */
	for (i = 0; i < 5000; i++)
		(void)take(sh, "busy", 1000000000);
	assert_int_equal(max_want, RL_BLOCK_MAX);
	free(sh);
}

/*
 * A block is at most a sixteenth of what is left: the limit is reached
 * exactly, never passed, and a refused request is neither counted nor
 * sent to the row again.
 */
static void
test_the_limit_exactly(void **state)
{
	struct rl_shared *sh = shared();
	struct rl_state	 st;
	int		 i, allowed = 0;

	(void)state;
	for (i = 0; i < 100; i++) {
		st = take(sh, "k", 40);
		if (st.allowed)
			allowed++;
		assert_true(counted("k") <= 40);
	}
	assert_int_equal(allowed, 40);
	assert_int_equal(counted("k"), 40);
	assert_false(st.allowed);
	assert_int_equal(st.remaining, 0);
	assert_true(max_want <= 40 / RL_BLOCK_SHARE);
	i = takes;
	(void)take(sh, "k", 40);
	assert_int_equal(takes, i);
	/* A limit of 0 admits nothing. */
	st = take(sh, "none", 0);
	assert_false(st.allowed);
	assert_int_equal(counted("none"), 0);
	free(sh);
}

/* Subjects whose counters are in the same set as first's. */
static void
same_set(const char *first, char out[][16], int n)
{
	uint32_t	 want = fnv1a(first) % RL_SETS;
	int		 i, found = 0;

	for (i = 0; found < n; i++) {
		snprintf(out[found], sizeof(out[0]), "s%d", i);
		if (fnv1a(out[found]) % RL_SETS == want &&
		    strcmp(out[found], first) != 0)
			found++;
	}
}

/*
 * A set holds RL_WAYS counters.  Another subject takes the one holding
 * no unspent requests first; else the least recently used gives what it
 * did not spend back to its row.
 */
static void
test_a_reused_counter_gives_back(void **state)
{
	struct rl_shared *sh = shared();
	char		 s[RL_WAYS + 1][16];
	int		 i;

	(void)state;
	same_set("s-first", s, RL_WAYS + 1);
	/* Two requests each: blocks of 1 then 2, one left unspent. */
	for (i = 0; i < RL_WAYS; i++) {
		(void)take(sh, s[i], 1000);
		(void)take(sh, s[i], 1000);
		assert_int_equal(counted(s[i]), 3);
	}
	/* The last one spends its third: nothing unspent, taken first. */
	(void)take(sh, s[RL_WAYS - 1], 1000);
	(void)take(sh, s[RL_WAYS], 1000);
	assert_int_equal(given_back, 0);
	assert_int_equal(counted(s[RL_WAYS - 1]), 3);
	/* Now all hold one: the least recently used, s[0], gives it back. */
	(void)take(sh, s[RL_WAYS], 1000);
	(void)take(sh, s[RL_WAYS - 1], 1000);
	assert_int_equal(given_back, 1);
	assert_int_equal(counted(s[0]), 2);
	assert_int_equal(counted(s[1]), 3);
	free(sh);
}

/* Another limit for the same subject starts its counter over. */
static void
test_a_new_limit_starts_over(void **state)
{
	struct rl_shared *sh = shared();
	struct rl_state	 st;

	(void)state;
	(void)take(sh, "k", 1000);
	(void)take(sh, "k", 1000);
	assert_int_equal(counted("k"), 3);
	st = take(sh, "k", 5);
	assert_int_equal(given_back, 1);
	assert_int_equal(counted("k"), 3);
	assert_true(st.allowed);
	assert_int_equal(st.limit, 5);
	assert_int_equal(st.remaining, 2);
	assert_int_equal(take(sh, "k", 5).remaining, 1);
	st = take(sh, "k", 5);
	assert_true(st.allowed);
	assert_int_equal(st.remaining, 0);
	assert_false(take(sh, "k", 5).allowed);
	assert_int_equal(counted("k"), 5);
	free(sh);
}

/* A subject too long for a counter is counted in the row every time. */
static void
test_a_long_subject_goes_to_the_row(void **state)
{
	struct rl_shared *sh = shared();
	char		 subject[sizeof(((struct rl_slot *)0)->subject) + 1];
	int		 i;

	(void)state;
	memset(subject, 'x', sizeof(subject) - 1);
	subject[sizeof(subject) - 1] = '\0';
	for (i = 0; i < 10; i++)
		assert_true(take(sh, subject, 100).allowed);
	assert_int_equal(takes, 10);
	assert_int_equal(max_want, 1);
	/* One byte shorter fits: blocks again. */
	subject[sizeof(subject) - 2] = '\0';
	for (i = 0; i < 10; i++)
		assert_true(take(sh, subject, 100).allowed);
	assert_int_equal(takes, 10 + 4);
	free(sh);
}

/* The database down: RL_DB, and the set's lock is not left held. */
static void
test_database_down(void **state)
{
	struct rl_shared *sh = shared();
	struct rl_state	 st;
	double		 t;

	(void)state;
	db_down = true;
	assert_int_equal(rl_take(NULL, NULL, "k", 10, WINDOW, &st), RL_DB);
	assert_int_equal(rl_take(NULL, sh, "k", 10, WINDOW, &st), RL_DB);
	db_down = false;
	t = (double)time(NULL);
	st = take(sh, "k", 10);
	assert_true(st.allowed);
	assert_true((double)time(NULL) - t < RL_LOCK_WAIT);
	/* Pruning failed is retried later; done, it keeps 32 days. */
	db_down = true;
	rl_prune(NULL);
	assert_int_equal(pruned_before, 0);
	db_down = false;
	rl_prune(NULL);
	assert_true(labs(pruned_before - ((long)time(NULL) - RL_KEEP)) <= 1);
	free(sh);
}

UNIT_MAIN(NULL,
    cmocka_unit_test_setup(test_each_request_to_the_row, empty),
    cmocka_unit_test_setup(test_blocks_double_and_remaining_counts_down,
        empty),
    cmocka_unit_test_setup(test_the_limit_exactly, empty),
    cmocka_unit_test_setup(test_a_reused_counter_gives_back, empty),
    cmocka_unit_test_setup(test_a_new_limit_starts_over, empty),
    cmocka_unit_test_setup(test_a_long_subject_goes_to_the_row, empty),
    cmocka_unit_test_setup(test_database_down, empty))
