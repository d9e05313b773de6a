#ifndef KEYGATE_CORE_CALLS_H
#define KEYGATE_CORE_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Gateway calls in flight per API key on one host, counted in memory the
 * workers share so that max_concurrent_calls holds whichever worker takes
 * a call.  Each worker counts in entries of its own (key, pid): when a
 * worker dies, the master forgets its entries and nothing stays counted.
 */
struct calls_shared;

size_t	calls_shared_size(void);
/* Prepares zeroed memory of calls_shared_size() bytes; 0, or -1. */
int	calls_shared_init(struct calls_shared *)
	    __attribute__((warn_unused_result));

enum calls_result {
	CALLS_OK,		/* counted: call calls_end() when it ends */
	CALLS_LIMIT,		/* max calls of this key in flight already */
	CALLS_UNCOUNTED,	/* the table is full or its lock unusable:
				   let the call through, uncounted */
};

/*
 * Counts one more call of key for process pid, unless max (> 0) are in
 * flight already on this host.
 */
enum calls_result calls_begin(struct calls_shared *, const char *key,
	    pid_t pid, int max);
/* Ends a call calls_begin() counted. */
void	calls_end(struct calls_shared *, const char *key, pid_t pid);
/* The calls of key in flight on this host. */
int	calls_count(struct calls_shared *, const char *key);
/* Forgets every call of process pid (it has exited). */
void	calls_forget(struct calls_shared *, pid_t pid);

#endif
