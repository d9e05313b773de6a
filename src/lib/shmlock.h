#ifndef KEYGATE_LIB_SHMLOCK_H
#define KEYGATE_LIB_SHMLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Locks in memory that the workers of one keygated share: process-shared
 * and robust, so that a worker dying with one held does not stop the
 * others.
 */

/*
 * Initialises n such mutexes, the first at first and each next stride
 * bytes further (one per element of an array of structs).  0, or -1.
 */
int	shmlock_init(pthread_mutex_t *first, size_t n, size_t stride)
	    __attribute__((warn_unused_result));
/*
 * Locks m, waiting at most wait_ms.  When its holder died with it,
 * *abandoned is set and the lock is taken all the same: what it guards
 * may be half written, and the caller resets it.  0, or -1 when the lock
 * could not be had.
 */
int	shmlock_take(pthread_mutex_t *m, long wait_ms, bool *abandoned)
	    __attribute__((warn_unused_result));

#endif
