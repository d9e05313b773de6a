#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ratelimit.h"
#include "lib/db.h"
#include "lib/hash.h"
#include "lib/shmlock.h"

/* Counters older than this are of no use: the longest window is 31 days. */
#define RL_KEEP (86400L * 32)

#define RL_SETS		4096	/* sets of counters, each with its lock */
#define RL_WAYS		4	/* counters per set */
#define RL_BLOCK_SHARE	16	/* a block is at most 1/16 of what is left */
#define RL_BLOCK_MAX	1024
#define RL_LOCK_WAIT	2	/* s to wait for a set's lock */

/* One subject's window, as this host knows it. */
struct rl_slot {
	char		 subject[48];	/* "" = free */
	long		 window_start;	/* s since the epoch */
	long		 limit;
	int		 window;
	long		 avail;		/* taken from the row, not yet spent */
	long		 count;		/* the row's count after our last take */
	long		 block;		/* the next take: doubles while busy */
	bool		 full;		/* the row refused: the window is over */
	unsigned long	 used;		/* the set's clock at the last use */
};

struct rl_set {
	pthread_mutex_t	 mu;		/* process-shared, robust */
	unsigned long	 clock;
	struct rl_slot	 slot[RL_WAYS];
};

struct rl_shared {
	struct rl_set	 set[RL_SETS];
};

size_t
rl_shared_size(void)
{
	return sizeof(struct rl_shared);
}

int
rl_shared_init(struct rl_shared *sh)
{
	return shmlock_init(&sh->set[0].mu, RL_SETS, sizeof(sh->set[0]));
}

/*
 * Locks a set.  A worker that died holding the lock may have left it half
 * written: it is forgotten, which loses the blocks it held (admitting
 * less, never more).
 */
static int
set_lock(struct rl_set *set)
{
	bool	 abandoned;

	/*
	 * The holder may be waiting for PostgreSQL; past RL_LOCK_WAIT the
	 * caller counts its request there itself.
	 */
	if (shmlock_take(&set->mu, RL_LOCK_WAIT * 1000L, &abandoned) == -1)
		return -1;
	if (abandoned)
		memset(set->slot, 0, sizeof(set->slot));
	return 0;
}

/*
 * Which counter gives way first: a free one, then an ended window's, then
 * one holding no unspent requests.
 */
static int
rank(const struct rl_slot *s, long ws)
{
	if (s->subject[0] == '\0')
		return 0;
	if (s->window_start < ws)
		return 1;
	return s->avail == 0 ? 2 : 3;
}

/*
 * The subject's counter in this set: its own, else the first to give way,
 * the least recently used among equals.
 */
static struct rl_slot *
slot_for(struct rl_set *set, const char *subject, long ws)
{
	struct rl_slot	*v = &set->slot[0];
	int		 i;

	for (i = 0; i < RL_WAYS; i++)
		if (strcmp(set->slot[i].subject, subject) == 0)
			return &set->slot[i];
	for (i = 1; i < RL_WAYS; i++)
		if (rank(&set->slot[i], ws) < rank(v, ws) ||
		    (rank(&set->slot[i], ws) == rank(v, ws) &&
		    set->slot[i].used < v->used))
			v = &set->slot[i];
	return v;
}

/*
 * Gives the requests a counter took and did not spend back to its row, as
 * it is reused: they were never admitted.  A failure loses them (admitting
 * less, never more).
 */
static void
give_back(struct db *db, const struct rl_slot *s, long ws)
{
	char		 start[24], n[24];
	const char	*p[3];

	if (s->avail <= 0 || s->window_start != ws || s->full)
		return;
	snprintf(start, sizeof(start), "%ld", s->window_start);
	snprintf(n, sizeof(n), "%ld", s->avail);
	p[0] = s->subject;
	p[1] = start;
	p[2] = n;
	if (db_exec(db, STMT_RATE_GIVE_BACK, 3, p) == -1)
		return;		/* lost: admitting less, never more */
}

/*
 * Takes up to want requests from the window's row.  RL_OK with *granted
 * (0 when the window is full), or RL_DB.
 */
static enum rl_result
take_block(struct db *db, const char *subject, long ws, long limit,
    long want, long *count, long *granted)
{
	struct db_res	*res;
	char		 start[24], lim[24], w[24];
	const char	*p[4];

	snprintf(start, sizeof(start), "%ld", ws);
	snprintf(lim, sizeof(lim), "%ld", limit);
	snprintf(w, sizeof(w), "%ld", want);
	p[0] = subject;
	p[1] = start;
	p[2] = lim;
	p[3] = w;
	if ((res = db_query(db, STMT_RATE_TAKE, 4, p)) == NULL)
		return RL_DB;
	if (db_rows(res) == 1) {
		*count = atol(db_value(res, 0, 0));
		*granted = atol(db_value(res, 0, 1));
	} else {
		*count = limit;
		*granted = 0;
	}
	db_res_free(res);
	return RL_OK;
}

static void
decide(struct rl_state *st, long remaining, bool allowed, time_t now)
{
	st->allowed = allowed;
	st->remaining = allowed && remaining > 0 ? remaining : 0;
	if (!allowed) {
		st->retry_after = (int)(st->reset - now);
		if (st->retry_after < 1)
			st->retry_after = 1;
	}
}

enum rl_result
rl_take(struct db *db, struct rl_shared *sh, const char *subject, long limit,
    int window, struct rl_state *st)
{
	struct rl_set	*set;
	struct rl_slot	*s;
	time_t		 now = time(NULL);
	long		 ws, want, count, granted;

	memset(st, 0, sizeof(*st));
	ws = (long)(now / window) * window;
	st->limit = limit;
	st->reset = ws + window;
	if (sh == NULL || strlen(subject) >= sizeof(s->subject)) {
		if (take_block(db, subject, ws, limit, 1, &count,
		    &granted) != RL_OK)
			return RL_DB;
		decide(st, limit - count, granted > 0, now);
		return RL_OK;
	}
	set = &sh->set[hash_fnv32(subject) % RL_SETS];
	if (set_lock(set) == -1)
		return rl_take(db, NULL, subject, limit, window, st);
	s = slot_for(set, subject, ws);
	if (strcmp(s->subject, subject) != 0 || s->window_start != ws ||
	    s->limit != limit || s->window != window) {
		give_back(db, s, ws);
		memset(s, 0, sizeof(*s));
		memcpy(s->subject, subject, strlen(subject) + 1);
		s->window_start = ws;
		s->limit = limit;
		s->window = window;
		s->block = 1;
	}
	s->used = ++set->clock;
	if (s->avail == 0 && !s->full) {
		want = (limit - s->count) / RL_BLOCK_SHARE;
		if (want > s->block)
			want = s->block;
		want = want < 1 ? 1 : want > RL_BLOCK_MAX ? RL_BLOCK_MAX : want;
		s->block = s->block < RL_BLOCK_MAX ? s->block * 2 : RL_BLOCK_MAX;
		if (take_block(db, subject, ws, limit, want, &count,
		    &granted) != RL_OK) {
			pthread_mutex_unlock(&set->mu);
			return RL_DB;
		}
		s->count = count;
		s->avail = granted;
		s->full = granted == 0;
	}
	if (s->avail > 0) {
		s->avail--;
		decide(st, limit - s->count + s->avail, true, now);
	} else
		decide(st, 0, false, now);
	pthread_mutex_unlock(&set->mu);
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
