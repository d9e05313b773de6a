#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "lib/shmlock.h"

int
shmlock_init(pthread_mutex_t *first, size_t n, size_t stride)
{
	pthread_mutexattr_t a;
	size_t		 i;
	int		 rc = 0;

	if (pthread_mutexattr_init(&a) != 0)
		return -1;
	if (pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0)
		rc = -1;
	for (i = 0; rc == 0 && i < n; i++)
		if (pthread_mutex_init((pthread_mutex_t *)(void *)
		    ((char *)first + i * stride), &a) != 0)
			rc = -1;
	pthread_mutexattr_destroy(&a);
	return rc;
}

int
shmlock_take(pthread_mutex_t *m, long wait_ms, bool *abandoned)
{
	struct timespec	 until;
	int		 rc;

	*abandoned = false;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	rc = pthread_mutex_timedlock(m, &until);
	if (rc == EOWNERDEAD) {
		*abandoned = true;
		if (pthread_mutex_consistent(m) != 0) {
			pthread_mutex_unlock(m);
			return -1;
		}
		return 0;
	}
	return rc == 0 ? 0 : -1;
}
