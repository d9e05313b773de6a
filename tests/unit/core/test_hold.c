/*
 * Unit tests for src/core/hold.c: a call's credits held from this host's
 * lease, charged with its record for the writer, or let go.  (A hold in
 * the database is tested end to end, against PostgreSQL.)
 */
#include "../unit.h"

#include <unistd.h>

#include "core/credits.h"
#include "core/hold.h"
#include "core/lease.h"

#define T1	"11111111-1111-4111-8111-111111111111"
#define L1	"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"

UNIT_SHARED(table, struct lease_shared, lease_shared_size,
    lease_shared_init)

static const struct credits_usage usage = {
	.tenant = T1, .request_id = "req-1", .provider = "openai",
	.model = "gpt-4o-mini", .prompt_tokens = 10, .completion_tokens = 5,
	.status = "ok",
};

/*
 * The process's lock, as the worker's: each wait for the writer lets it
 * go, and the writer here is whoever runs while it is let go.
 */
struct process {
	struct lease_shared *s;
	int		 unlocked;	/* times let go */
	bool		 held;		/* the lock, taken */
	bool		 writes;	/* the writer commits what waits */
};

static void
unlock(void *arg)
{
	struct process	*p = arg;
	struct lease_record r[8];
	int		 n;

	assert_true(p->held);
	p->held = false;
	p->unlocked++;
	if (p->writes && (n = lease_pending(p->s, r, 8, 0)) > 0)
		lease_committed(p->s, r, n);
}

static void
relock(void *arg)
{
	struct process	*p = arg;

	assert_false(p->held);
	p->held = true;
}

static struct holder
holder(struct process *p)
{
	struct holder	 who = {
		.db = NULL, .leases = p->s, .owner = getppid(),
		.unlock = unlock, .relock = relock, .arg = p,
	};

	p->held = true;
	return who;
}

/*
 * A call held from the lease and finished: charged up to its cost, its
 * record written (the lock let go meanwhile), the rest of the hold back
 * in the lease.
 */
static void
test_a_leased_call_is_charged_once_written(void **state)
{
	struct process	 p = { .s = table(), .writes = true };
	struct holder	 who = holder(&p);
	struct hold	 h;
	long long	 available = -1, charged = -1;

	(void)state;
	assert_int_equal(lease_grown(p.s, T1, L1, true, 1000, 1e9, 0), 0);
	hold_init(&h);
	assert_false(hold_taken(&h));
	assert_int_equal(hold_take(&who, &h, T1, NULL, "req-1", 300, 60,
	    &available), HOLD_OK);
	assert_true(hold_taken(&h));
	assert_true(h.lease >= 0);
	assert_int_equal(lease_busy(p.s), 1);
	assert_int_equal(hold_finish(&who, &h, 120, &usage, &charged),
	    HOLD_OK);
	assert_int_equal(charged, 120);
	assert_false(hold_taken(&h));
	assert_int_equal(p.unlocked, 1);
	assert_true(p.held);
	assert_int_equal(lease_busy(p.s), 0);
	/* 880 left: a call of 880 holds without asking the database. */
	assert_int_equal(hold_take(&who, &h, T1, NULL, "req-2", 880, 60,
	    &available), HOLD_OK);
	assert_true(h.lease >= 0);
	/* Dropped: nothing charged, all of it back. */
	assert_int_equal(hold_drop(&who, &h), HOLD_OK);
	assert_false(hold_taken(&h));
	assert_int_equal(hold_take(&who, &h, T1, NULL, "req-3", 880, 60,
	    &available), HOLD_OK);
	assert_int_equal(hold_drop(&who, &h), HOLD_OK);
	free(p.s);
}

/*
 * With a journal, the answer does not wait for the writer: the record is
 * in the file, and the lock is never let go.
 */
static void
test_a_journaled_call_does_not_wait(void **state)
{
	struct process	 p = { .s = table(), .writes = false };
	struct holder	 who = holder(&p);
	struct lease_record r[2];
	struct hold	 h;
	char		 dir[] = "/tmp/keygate-hold-XXXXXX", path[128],
			 err[256];
	long long	 available, charged;
	int		 waiting;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/credits.journal", dir);
	assert_int_equal(lease_journal_open(p.s, path, (uid_t)-1, (gid_t)-1,
	    &waiting, err, sizeof(err)), 0);
	assert_int_equal(lease_grown(p.s, T1, L1, true, 1000, 1e9, 0), 0);
	assert_int_equal(hold_take(&who, &h, T1, NULL, "req-1", 300, 60,
	    &available), HOLD_OK);
	assert_int_equal(hold_finish(&who, &h, 500, &usage, &charged),
	    HOLD_OK);
	assert_int_equal(charged, 500);
	assert_int_equal(p.unlocked, 0);
	assert_int_equal(lease_pending(p.s, r, 2, 0), 1);
	assert_int_equal(r[0].charged, 500);
	assert_string_equal(r[0].request_id, "req-1");
	free(p.s);
	unlink(path);
	rmdir(dir);
}


UNIT_MAIN(NULL,
    cmocka_unit_test(test_a_leased_call_is_charged_once_written),
    cmocka_unit_test(test_a_journaled_call_does_not_wait))
