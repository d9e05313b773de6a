/*
 * Unit tests for src/core/hold.c: a call's credits held from this host's
 * lease, charged with its record for the writer, or let go.  (A hold in
 * the database is tested end to end, against PostgreSQL.)
 */
#include "../unit.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
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

/* The host's sending locks, in memory shared with a child process. */
static pthread_mutex_t *
sending_locks(void)
{
	pthread_mutex_t *m = mmap(NULL, HOLD_SENDING * sizeof(*m),
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	assert_true(m != MAP_FAILED);
	assert_int_equal(hold_sending_init(m), 0);
	return m;
}

/*
 * A sending lock held by a live process is not had (at once, nor after
 * the wait); one whose holder died is, and works as a lock again.
 */
static void
test_a_sending_lock_outlives_a_killed_holder(void **state)
{
	pthread_mutex_t	*m = sending_locks();
	int		 fds[2], status;
	char		 c;
	pid_t		 pid;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Takes lock 3, says so, and waits to be killed. */
		if (!hold_sending_lock(&m[3], false))
			_exit(1);
		(void)!write(fds[1], "x", 1);
		for (;;)
			pause();
	}
	assert_int_equal(read(fds[0], &c, 1), 1);
	assert_false(hold_sending_lock(&m[3], false));
	assert_false(hold_sending_lock(&m[3], true));
	/* Others are free meanwhile. */
	assert_true(hold_sending_lock(&m[4], false));
	pthread_mutex_unlock(&m[4]);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(hold_sending_lock(&m[3], false));
	pthread_mutex_unlock(&m[3]);
	assert_true(hold_sending_lock(&m[3], true));
	pthread_mutex_unlock(&m[3]);
	close(fds[0]);
	close(fds[1]);
	munmap(m, HOLD_SENDING * sizeof(*m));
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_a_leased_call_is_charged_once_written),
    cmocka_unit_test(test_a_journaled_call_does_not_wait),
    cmocka_unit_test(test_a_sending_lock_outlives_a_killed_holder))
