#include "autoconfig.h"

/*
 * What a worker does between requests, off the client's path: the batch
 * of last_used_at writes, the sweeps for dormant keys and for credit
 * holds whose call ended with its process, and letting idle provider
 * connections go.
 */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "api/leases.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/keys.h"
#include "core/ratelimit.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "lib/upstream.h"
#include "server/config.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

#define TOUCH_INTERVAL	1.0	/* s between batches */
#define DORMANT_INTERVAL 600.0	/* s between sweeps for dormant keys */
#define HOLDS_INTERVAL	2.0	/* s between sweeps for orphaned holds */
/*
 * Provider handles idle this long are let go (their connections are the
 * provider loop's, which closes them after 5 s without a call).
 */
#define KEPT_CALLS	0	/* handles kept whatever their age */
#define KEPT_IDLE	5.0	/* s */
#define HEAP_TRIM_INTERVAL 10.0	/* s between malloc_trim()s at most */

/*
 * Every DORMANT_INTERVAL per worker: with dormant_disable_days set,
 * disables keys unused that long, each with its audit row.  Workers racing on the
 * same key are serialized by its row lock: each key is disabled once.
 */
static void
sweep_dormant(struct worker *w, struct api_state *st, double now)
{
	int	 n;

	if (st->last_sweep > 0 && now - st->last_sweep < DORMANT_INTERVAL)
		return;
	st->last_sweep = now;
	/* Old rate-limit windows go on the same schedule. */
	if (w->slot == 0)
		rl_prune(app(w)->db);
	if (w->cfg->dormant_disable_days <= 0)
		return;
	if ((n = key_disable_dormant(app(w)->db,
	    w->cfg->dormant_disable_days)) == -1)
		log_warn("PostgreSQL: disabling dormant keys: %s",
		    db_errmsg(app(w)->db));
	else if (n > 0)
		log_info("disabled %d keys unused for %d days", n,
		    w->cfg->dormant_disable_days);
}

/*
 * Worker 0 of each keygated releases, every HOLDS_INTERVAL, the credit
 * holds of this host's processes that are gone (a worker killed during a
 * call) and any past its deadline.  Returns the ms until the next sweep,
 * or -1 for a worker that does not sweep.
 */
static int
sweep_holds(struct worker *w, struct api_state *st, double now)
{
	int	 n;

	if (w->slot != 0 || !w->cfg->credits_enforce)
		return -1;
	/* A dead run's leases still owe the journal's charges. */
	if (!leases_replayed(w))
		return (int)(HOLDS_INTERVAL * 1000);
	if (st->last_holds > 0 && now - st->last_holds < HOLDS_INTERVAL)
		return (int)((HOLDS_INTERVAL - (now - st->last_holds)) * 1000) +
		    1;
	st->last_holds = now;
	if ((n = credits_release_stale(app(w)->db)) == -1)
		log_warn("PostgreSQL: releasing orphaned credit holds: %s",
		    db_errmsg(app(w)->db));
	else if (n > 0)
		log_info("released %d credit holds whose call ended with its "
		    "process or outlived its deadline", n);
	return (int)(HOLDS_INTERVAL * 1000);
}

/* The sooner of two waits in ms, -1 being none. */
static int
sooner(int a, int b)
{
	return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

/*
 * Writes last_used_at for the keys seen since the last batch: at most once
 * a second per worker, and the statement itself skips keys written less
 * than a minute ago, so a busy key costs one row write a minute.
 */
int
api_after(struct worker *w)
{
	struct api_state *st = w->app_data;
	const char	*ids[TOUCH_MAX];
	char		 lit[TOUCH_MAX * sizeof(st->touch[0]) + 2];
	double		 now = clock_mono();
	int		 i, holds, left;

	sweep_dormant(w, st, now);
	holds = sweep_holds(w, st, now);
	/*
	 * Provider handles a burst of calls left, and any no call has used
	 * for a while, go: their memory (the connections are the provider
	 * loop's, at most 256 kept, lib/upstream.c).  The heap they
	 * used goes back to the system too, but at most every
	 * HEAP_TRIM_INTERVAL: malloc_trim() walks the whole heap, which with
	 * thousands of calls in flight costs more than the calls themselves
	 * when handles are let go one by one under steady load.
	 */
	if (upstream_trim(app(w)->upstream, KEPT_CALLS, KEPT_IDLE, &left) > 0)
		st->heap_trim_due = true;
	if (st->heap_trim_due) {
		if (now - st->last_heap_trim >= HEAP_TRIM_INTERVAL) {
			(void)malloc_trim(0);
			st->heap_trim_due = false;
			st->last_heap_trim = now;
		} else
			holds = sooner(holds, (int)((HEAP_TRIM_INTERVAL -
			    (now - st->last_heap_trim)) * 1000) + 1);
	}
	if (left > 0)
		holds = sooner(holds, (int)(KEPT_IDLE * 1000));
	if (st->ntouch == 0)
		return holds;
	if (now - st->last_touch < TOUCH_INTERVAL && st->ntouch < TOUCH_MAX)
		return sooner(holds, (int)((TOUCH_INTERVAL -
		    (now - st->last_touch)) * 1000) + 1);
	for (i = 0; i < st->ntouch; i++)
		ids[i] = st->touch[i];
	/* Room for every id and a comma after each: the literal fits. */
	if (key_ids_literal(ids, (size_t)st->ntouch, lit, sizeof(lit)) == 0 &&
	    key_touch(app(w)->db, lit) == -1)
		log_warn("PostgreSQL: recording last use of %d keys: %s",
		    st->ntouch, db_errmsg(app(w)->db));
	st->ntouch = 0;
	st->last_touch = now;
	return holds;
}

static void
remember_use(struct api_state *st, const char *key_id)
{
	int	 i;

	for (i = 0; i < st->ntouch; i++)
		if (strcmp(st->touch[i], key_id) == 0)
			return;
	if (st->ntouch < TOUCH_MAX && strlen(key_id) < sizeof(st->touch[0]))
		memcpy(st->touch[st->ntouch++], key_id, strlen(key_id) + 1);
}

void
api_key_used(struct request *req, const struct principal *p)
{
	if (p->touch && p->key_id[0] != '\0')
		remember_use(req->w->app_data, p->key_id);
}
