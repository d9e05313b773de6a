/* Unit tests for src/core/lease.c: credits leased per host. */
#include "../unit.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/credits.h"
#include "core/lease.h"

#define T1	"11111111-1111-4111-8111-111111111111"
#define T2	"22222222-2222-4222-8222-222222222222"
#define L1	"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define L2	"bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

/* The table of leases the workers share, fresh. */
UNIT_SHARED(table, struct lease_shared, lease_shared_size,
    lease_shared_init)

#define CALL	"cccccccc-cccc-4ccc-8ccc-cccccccccccc"

static const struct credits_usage usage = {
	.request_id = "req-1", .provider = "openai", .model = "gpt-4o-mini",
	.prompt_tokens = 10, .completion_tokens = 5, .status = "ok",
};

/* Takes a hold of amount for tenant t, which must succeed. */
static int
held(struct lease_shared *s, const char *t, long long amount, pid_t pid)
{
	char	 lease[LEASE_ID_LEN + 1];
	long long need;
	int	 h;

	assert_int_equal(lease_hold(s, t, amount, pid, 0, 10, &h, &need,
	    lease), LEASE_HELD);
	return h;
}

/* No lease: the caller must make one of at least the amount. */
static void
test_first_call_needs_a_lease(void **state)
{
	struct lease_shared *s = table();
	char	 lease[LEASE_ID_LEN + 1];
	long long need;
	int	 h;

	(void)state;
	assert_int_equal(lease_hold(s, T1, 300, 7, 0, 10, &h, &need, lease),
	    LEASE_NEED);
	assert_int_equal(need, 300);
	assert_string_equal(lease, "");
	assert_int_equal(lease_grown(s, T1, L1, true, 1000, 100, 0), 0);
	h = held(s, T1, 300, 7);
	assert_true(h >= 0);
	/* 700 left: a call of 800 needs 100 more of that lease. */
	assert_int_equal(lease_hold(s, T1, 800, 7, 0, 10, &h, &need, lease),
	    LEASE_NEED);
	assert_int_equal(need, 100);
	assert_string_equal(lease, L1);
	/* A lease valid too briefly for the call must be renewed first. */
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 200, &h, &need, lease),
	    LEASE_NEED);
	assert_int_equal(need, 0);
	free(s);
}

/* Spending never takes more than the hold and what the lease has free. */
static void
test_spend_is_capped_and_queued(void **state)
{
	struct lease_shared *s = table();
	struct lease_record r[4];
	long long charged;
	uint32_t seq;
	int	 h, h2;

	(void)state;
	assert_int_equal(lease_grown(s, T1, L1, true, 1000, 100, 0), 0);
	h = held(s, T1, 600, 7);
	h2 = held(s, T1, 300, 7);
	/* 100 free: a cost of 900 takes 600 + 100, the rest is forgiven. */
	assert_int_equal(lease_spend(s, h, 900, &usage, CALL, 7, &charged,
	    &seq), 0);
	assert_int_equal(charged, 700);
	assert_int_equal(seq, 0);
	assert_int_equal(lease_spend(s, h2, 50, &usage, CALL, 7, &charged,
	    &seq), 0);
	assert_int_equal(charged, 50);
	assert_int_equal(seq, 1);
	assert_false(lease_written(s, 1, 0));
	assert_int_equal(lease_busy(s), 2);
	assert_int_equal(lease_pending(s, r, 4, 0), 2);
	assert_string_equal(r[0].lease, L1);
	assert_string_equal(r[0].tenant, T1);
	assert_int_equal(r[0].charged, 700);
	assert_int_equal(r[1].charged, 50);
	lease_committed(s, r, 2);
	assert_true(lease_written(s, 1, 0));
	assert_int_equal(lease_busy(s), 0);
	/* 1000 - 750 charged = 250 left, free for the next call. */
	h = held(s, T1, 250, 7);
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 10, &h2, &charged,
	    r[0].lease), LEASE_NEED);
	lease_drop(s, h);
	free(s);
}

/* A process that exits gives its holds back to the lease. */
static void
test_forget_process(void **state)
{
	struct lease_shared *s = table();
	char	 out[4][2][LEASE_ID_LEN + 1];

	(void)state;
	assert_int_equal(lease_grown(s, T1, L1, true, 500, 100, 0), 0);
	assert_int_equal(lease_grown(s, T2, L2, true, 500, 100, 0), 0);
	(void)held(s, T1, 500, 7);
	(void)held(s, T2, 200, 8);
	assert_int_equal(lease_busy(s), 2);
	lease_forget(s, 7);
	assert_int_equal(lease_busy(s), 1);
	(void)held(s, T1, 500, 9);
	lease_forget(s, 9);
	/* Idle: T1's lease goes back, T2's has a call. */
	assert_int_equal(lease_idle(s, 5, 2, out, 4), 1);
	assert_string_equal(out[0][0], T1);
	assert_string_equal(out[0][1], L1);
	/* A lease let go meanwhile does not come back by growing. */
	assert_int_equal(lease_grown(s, T1, L1, false, 100, 100, 5), 1);
	/* Another process made a lease meanwhile: the second is refused. */
	assert_int_equal(lease_grown(s, T1, L1, true, 100, 100, 5), 0);
	assert_int_equal(lease_grown(s, T1, L2, true, 100, 100, 5), 1);
	/* And the one made grows. */
	assert_int_equal(lease_grown(s, T1, L1, false, 100, 100, 5), 0);
	free(s);
}

/* A lease the database lost: its calls are charged nothing, and no new
 * lease is taken until they have ended. */
static void
test_lost_lease(void **state)
{
	struct lease_shared *s = table();
	char	 lease[LEASE_ID_LEN + 1];
	long long need, charged;
	uint32_t seq;
	int	 h, h2;

	(void)state;
	assert_int_equal(lease_grown(s, T1, L1, true, 500, 100, 0), 0);
	h = held(s, T1, 100, 7);
	lease_lost(s, L1);
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 10, &h2, &need, lease),
	    LEASE_NONE);
	assert_int_equal(lease_spend(s, h, 90, &usage, CALL, 7, &charged,
	    &seq), 0);
	assert_int_equal(charged, 0);
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 10, &h2, &need, lease),
	    LEASE_NEED);
	free(s);
}

/*
 * Every call held must find room in the ring when it ends: once holds
 * and records waiting fill it, further calls hold in the database.
 */
static void
test_room_in_the_ring_for_every_hold(void **state)
{
	struct lease_shared *s = table();
	char	 lease[LEASE_ID_LEN + 1];
	long long need, charged;
	uint32_t seq;
	int	 i, h, first;

	(void)state;
	assert_int_equal(lease_grown(s, T1, L1, true, 1000000, 100, 0), 0);
	first = held(s, T1, 1, 7);
	for (i = 1; i < LEASE_RING; i++)
		(void)held(s, T1, 1, 7);
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 10, &h, &need, lease),
	    LEASE_NONE);
	/* A call that ended still waits in the ring: no room yet. */
	assert_int_equal(lease_spend(s, first, 1, &usage, CALL, 7, &charged,
	    &seq), 0);
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 10, &h, &need, lease),
	    LEASE_NONE);
	lease_forget(s, 7);
	assert_int_equal(lease_hold(s, T1, 1, 7, 0, 10, &h, &need, lease),
	    LEASE_HELD);
	free(s);
}

/* A journal in a fresh temporary folder; its path into path. */
static void
journal_path(char *path, size_t sz)
{
	char	 dir[] = "/tmp/keygate-journal-XXXXXX";

	assert_non_null(mkdtemp(dir));
	snprintf(path, sz, "%s/credits.journal", dir);
}

/* Opens the journal at path into a fresh table; -1 with why in err. */
static int
journal(struct lease_shared **s, const char *path, int *waiting, char *err,
    size_t errsz)
{
	*s = table();
	return lease_journal_open(*s, path, (uid_t)-1, (gid_t)-1, waiting,
	    err, errsz);
}

/*
 * A run of keygated in a process of its own: it opens the journal at
 * path, leases 1000 to T1, answers n calls of 300 held each costing
 * cost[i] (named CALL, then L2), and is killed before writing them.
 */
static void
killed_run(const char *path, const long long *cost, int n)
{
	struct lease_shared *s;
	char	 err[256];
	long long charged;
	uint32_t seq;
	pid_t	 pid;
	int	 i, waiting, st;

	if ((pid = fork()) == 0) {
		if (journal(&s, path, &waiting, err, sizeof(err)) != 0 ||
		    waiting != 0 || lease_grown(s, T1, L1, true, 1000, 100,
		    0) != 0)
			_exit(1);
		for (i = 0; i < n; i++)
			if (lease_spend(s, held(s, T1, 300, 7), cost[i],
			    &usage, i == 0 ? CALL : L2, 7, &charged,
			    &seq) != 0)
				_exit(2);
		_exit(9);	/* killed: nothing written */
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(WEXITSTATUS(st), 9);
}

/*
 * A run that answered two calls and was killed before writing them: the
 * next run finds both in the journal, whole, and its writer gets them
 * first; until they are written the run's leases must stay.
 */
static void
test_journal_outlives_the_process(void **state)
{
	const long long cost[] = { 120, 500 };
	struct lease_shared *s;
	struct lease_record r[4];
	char	 path[128], err[256];
	int	 waiting;

	(void)state;
	journal_path(path, sizeof(path));
	killed_run(path, cost, 2);
	assert_int_equal(journal(&s, path, &waiting, err, sizeof(err)), 0);
	assert_int_equal(waiting, 2);
	assert_true(lease_journaled(s));
	assert_false(lease_replayed(s));
	assert_int_equal(lease_pending(s, r, 4, 0), 2);
	assert_string_equal(r[0].call, CALL);
	assert_string_equal(r[0].lease, L1);
	assert_int_equal(r[0].charged, 120);
	assert_string_equal(r[1].call, L2);
	assert_int_equal(r[1].charged, 500);
	assert_int_equal(r[1].cost, 500);
	assert_string_equal(r[1].request_id, "req-1");
	lease_committed(s, r, 1);
	assert_false(lease_replayed(s));
	lease_committed(s, r + 1, 1);
	assert_true(lease_replayed(s));
	assert_int_equal(lease_busy(s), 0);
	free(s);
	unlink(path);
}

/* One keygated per journal; a file not a journal is left alone. */
static void
test_journal_refusals(void **state)
{
	struct lease_shared *s, *s2;
	char	 path[128], err[256];
	int	 waiting, fd;

	(void)state;
	journal_path(path, sizeof(path));
	assert_int_equal(journal(&s, path, &waiting, err, sizeof(err)), 0);
	assert_int_equal(journal(&s2, path, &waiting, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "in use by another keygated"));
	free(s2);
	free(s);
	unlink(path);
	/* Someone else's file. */
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "host=db1\nport=5432\n" "xxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxx", 54), 54);
	close(fd);
	assert_int_equal(journal(&s, path, &waiting, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is not a keygate credits journal"));
	free(s);
	/* Shorter than a journal's header. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keygate", 7), 7);
	close(fd);
	assert_int_equal(journal(&s, path, &waiting, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is not a keygate credits journal"));
	free(s);
	unlink(path);
}

/* Writes what a journal's header says of its records' size. */
static void
journal_record_size(const char *path, uint32_t size)
{
	int	 fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &size, sizeof(size), 16), sizeof(size));
	close(fd);
}

/*
 * A journal of another version: with calls waiting it is refused (they
 * would be misread), empty it is made anew.
 */
static void
test_journal_of_another_version(void **state)
{
	const long long cost[] = { 120 };
	struct lease_shared *s;
	char	 path[128], err[256];
	pid_t	 pid;
	int	 waiting, st;

	(void)state;
	journal_path(path, sizeof(path));
	killed_run(path, cost, 1);
	journal_record_size(path, 12345);
	assert_int_equal(journal(&s, path, &waiting, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "holds 1 calls not yet written, in the "
	    "format of another version"));
	free(s);
	/* Written meanwhile by that version: nothing waits. */
	if ((pid = fork()) == 0) {
		struct lease_record r[2];

		journal_record_size(path, sizeof(struct lease_record));
		if (journal(&s, path, &waiting, err, sizeof(err)) != 0 ||
		    waiting != 1 || lease_pending(s, r, 2, 0) != 1)
			_exit(1);
		lease_committed(s, r, 1);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(WEXITSTATUS(st), 0);
	journal_record_size(path, 12345);
	assert_int_equal(journal(&s, path, &waiting, err, sizeof(err)), 0);
	assert_int_equal(waiting, 0);
	assert_true(lease_replayed(s));
	free(s);
	unlink(path);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_first_call_needs_a_lease),
    cmocka_unit_test(test_spend_is_capped_and_queued),
    cmocka_unit_test(test_forget_process),
    cmocka_unit_test(test_lost_lease),
    cmocka_unit_test(test_room_in_the_ring_for_every_hold),
    cmocka_unit_test(test_journal_outlives_the_process),
    cmocka_unit_test(test_journal_refusals),
    cmocka_unit_test(test_journal_of_another_version))
