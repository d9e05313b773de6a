#ifndef KEYGATE_CORE_RATELIMIT_H
#define KEYGATE_CORE_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>

struct db;

/*
 * Per-key rate limits in fixed windows aligned to the epoch.  The count of
 * record is one row per subject and window in PostgreSQL, shared by every
 * worker of every host, and only ever grows up to the limit: N workers or
 * N hosts never admit N times the limit.
 *
 * A keygated does not go to that row for every request.  It takes
 * requests from it in blocks and hands them out to its workers from
 * memory they share, under a lock per set of counters; a worker that
 * finds the block spent takes the next one while holding that lock, so
 * the others wait for it instead of over-asking.  A subject's first block
 * in a window is one request, and each next one twice the last, up to a
 * sixteenth of what is left and at most 1024: a quiet key is counted one
 * request at a time, a busy one a block at a time.  A counter reused for
 * another subject gives what it did not spend back to the row.  What a
 * host took and did not spend when the window ends is lost, not given to
 * another host: with several hosts a busy limit can admit up to that
 * much less than its number, never more.
 */

struct rl_state {
	long	 limit;		/* requests per window */
	long	 remaining;	/* after this request */
	long	 reset;		/* s since the epoch when the window ends */
	int	 retry_after;	/* s, when refused */
	bool	 allowed;
};

enum rl_result {
	RL_OK,
	RL_DB,		/* see db_status() */
	RL_RESULT__MAX
};

/* The counters a keygated's workers share; placed by the master. */
struct rl_shared;

size_t		 rl_shared_size(void);
/* Prepares zeroed shared memory of rl_shared_size() bytes.  0, or -1. */
int		 rl_shared_init(struct rl_shared *)
		    __attribute__((warn_unused_result));
/*
 * Counts one request for subject against limit per window seconds, and
 * fills st.  A refused request is not counted.  With shared NULL every
 * request is counted in PostgreSQL.
 */
enum rl_result	 rl_take(struct db *, struct rl_shared *, const char *subject,
		    long limit, int window, struct rl_state *st)
		    __attribute__((warn_unused_result));
/* Drops counters of windows that ended long ago. */
void		 rl_prune(struct db *);

#endif
