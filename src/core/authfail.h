#ifndef KEYGATE_CORE_AUTHFAIL_H
#define KEYGATE_CORE_AUTHFAIL_H

#include <stddef.h>
#include <time.h>

/*
 * Failed authentications, counted per subject (a client address, a key's
 * lookup prefix) in fixed windows aligned to the epoch, in memory the
 * workers of one keygated share.  A subject that failed max times in the
 * current window is refused until the window ends, before any database
 * work.  Counters live in sets of a few, each set under its own lock; a
 * subject that loses its counter to another is forgotten (counted from 0
 * again), which only ever lets a flood through more slowly, never locks
 * a subject out.
 */

struct af_shared;

size_t		 af_shared_size(void);
/* Prepares zeroed shared memory of af_shared_size() bytes.  0, or -1. */
int		 af_shared_init(struct af_shared *)
		    __attribute__((warn_unused_result));
/*
 * Seconds until subject may try again when it already failed max times
 * in the window of `window` seconds that holds now; 0 when it may try
 * now.  Never blocks for long: a set whose lock cannot be had answers 0.
 */
int		 af_refused(struct af_shared *, const char *subject, long max,
		    int window, time_t now);
/* Counts one failure of subject in the window that holds now. */
void		 af_count(struct af_shared *, const char *subject, int window,
		    time_t now);

#endif
