#ifndef KEYGATE_CORE_RATELIMIT_H
#define KEYGATE_CORE_RATELIMIT_H

#include <stdbool.h>

struct db;

/*
 * Per-key rate limits in fixed windows aligned to the epoch, counted in
 * PostgreSQL so that every worker of every host sharing the database sees
 * one counter: N workers or N hosts never admit N times the limit.
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

/*
 * Counts one request for subject against limit per window seconds, and
 * fills st.  A refused request is not counted.
 */
enum rl_result	 rl_take(struct db *, const char *subject, long limit,
		    int window, struct rl_state *st)
		    __attribute__((warn_unused_result));
/* Drops counters of windows that ended long ago. */
void		 rl_prune(struct db *);

#endif
