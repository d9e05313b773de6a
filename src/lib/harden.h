#ifndef KEYGATE_LIB_HARDEN_H
#define KEYGATE_LIB_HARDEN_H

#include <stddef.h>

/*
 * Keeping secrets inside the process that holds them: no core dumps, no
 * swap, no environment for others to read.
 */

/*
 * Makes the calling process undumpable (no core file, no ptrace or
 * /proc/PID/mem by its own user) and sets its core size limit to 0.
 * Changing user makes a process dumpable again: call it after that too.
 * 0, or -1 with the reason in err.
 */
int	harden_process(char *err, size_t errsz)
	    __attribute__((warn_unused_result));
/*
 * Locks the pages holding p[0..n) in memory, so that they never reach
 * swap.  Locks are not inherited by fork(): each process locks what it
 * holds.  0, or -1 (errno set) when the system refuses, which callers may
 * log and survive: the rest of the protection still holds.
 */
int	harden_lock(const void *p, size_t n);

#endif
