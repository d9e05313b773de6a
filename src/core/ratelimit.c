#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ratelimit.h"
#include "lib/db.h"

/* Counters older than this are of no use: the longest window is 31 days. */
#define RL_KEEP (86400L * 32)

enum rl_result
rl_take(struct db *db, const char *subject, long limit, int window,
    struct rl_state *st)
{
	struct db_res	*res;
	char		 start[24], lim[24];
	const char	*p[3];
	time_t		 now = time(NULL);
	long		 ws;

	memset(st, 0, sizeof(*st));
	ws = (long)(now / window) * window;
	st->limit = limit;
	st->reset = ws + window;
	snprintf(start, sizeof(start), "%ld", ws);
	snprintf(lim, sizeof(lim), "%ld", limit);
	p[0] = subject;
	p[1] = start;
	p[2] = lim;
	if ((res = db_query(db, STMT_RATE_TAKE, 3, p)) == NULL)
		return RL_DB;
	if (db_rows(res) == 1) {
		st->allowed = true;
		st->remaining = limit - atol(db_value(res, 0, 0));
		if (st->remaining < 0)
			st->remaining = 0;
	} else {
		st->allowed = false;
		st->remaining = 0;
		st->retry_after = (int)(st->reset - now);
		if (st->retry_after < 1)
			st->retry_after = 1;
	}
	db_res_free(res);
	return RL_OK;
}

void
rl_prune(struct db *db)
{
	char		 before[24];
	const char	*p[1] = { before };

	snprintf(before, sizeof(before), "%ld", (long)time(NULL) - RL_KEEP);
	if (db_exec(db, STMT_RATE_PRUNE, 1, p) == -1)
		return;	/* retried at the next sweep */
}
