/* Unit tests for src/lib/shmlock.c: locks the workers share. */
#include "../unit.h"

#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/shmlock.h"

struct slot {
	pthread_mutex_t	 mu;
	int		 value;
};

static struct slot *
shared(size_t n)
{
	struct slot *s = mmap(NULL, n * sizeof(*s), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	assert_true(s != MAP_FAILED);
	assert_int_equal(shmlock_init(&s[0].mu, n, sizeof(s[0])), 0);
	return s;
}

/* Each of n locks is its own: holding one does not hold another. */
static void
test_each_lock_its_own(void **state)
{
	struct slot	*s = shared(3);
	bool		 abandoned = true;

	(void)state;
	assert_int_equal(shmlock_take(&s[0].mu, 10, &abandoned), 0);
	assert_false(abandoned);
	assert_int_equal(shmlock_take(&s[2].mu, 10, &abandoned), 0);
	assert_false(abandoned);
	pthread_mutex_unlock(&s[2].mu);
	pthread_mutex_unlock(&s[0].mu);
	munmap(s, 3 * sizeof(*s));
}

/* A lock another process holds is refused after the wait, not forever. */
static void
test_held_elsewhere_is_refused_in_time(void **state)
{
	struct slot	*s = shared(1);
	bool		 abandoned = false;
	int		 held[2], done[2], st;
	pid_t		 pid;
	char		 c;

	(void)state;
	assert_int_equal(pipe(held), 0);
	assert_int_equal(pipe(done), 0);
	if ((pid = fork()) == 0) {
		bool a;

		if (shmlock_take(&s->mu, 10, &a) != 0 ||
		    write(held[1], "x", 1) != 1 || read(done[0], &c, 1) != 1)
			_exit(1);
		pthread_mutex_unlock(&s->mu);
		_exit(0);
	}
	assert_int_equal(read(held[0], &c, 1), 1);
	assert_int_equal(shmlock_take(&s->mu, 50, &abandoned), -1);
	assert_int_equal(write(done[1], "x", 1), 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Let go by its holder: free again. */
	assert_int_equal(shmlock_take(&s->mu, 10, &abandoned), 0);
	assert_false(abandoned);
	pthread_mutex_unlock(&s->mu);
	munmap(s, sizeof(*s));
}

/*
 * A holder that dies with the lock leaves it taken and says so: the next
 * taker is told, mends what it guards, and the lock works on.
 */
static void
test_a_dead_holder_s_lock_is_taken_and_said(void **state)
{
	struct slot	*s = shared(1);
	bool		 abandoned = false;
	int		 st;
	pid_t		 pid;

	(void)state;
	if ((pid = fork()) == 0) {
		bool a;

		if (shmlock_take(&s->mu, 10, &a) != 0)
			_exit(1);
		s->value = 42;		/* half written, as far as anyone knows */
		_exit(0);		/* never unlocked */
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(shmlock_take(&s->mu, 100, &abandoned), 0);
	assert_true(abandoned);
	s->value = 0;
	pthread_mutex_unlock(&s->mu);
	abandoned = true;
	assert_int_equal(shmlock_take(&s->mu, 10, &abandoned), 0);
	assert_false(abandoned);
	pthread_mutex_unlock(&s->mu);
	munmap(s, sizeof(*s));
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_each_lock_its_own),
    cmocka_unit_test(test_held_elsewhere_is_refused_in_time),
    cmocka_unit_test(test_a_dead_holder_s_lock_is_taken_and_said))
