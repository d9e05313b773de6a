#include "autoconfig.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/leases.h"
#include "core/credits.h"
#include "core/hold.h"
#include "core/lease.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "server/config.h"
#include "server/log.h"
#include "server/worker.h"

/*
 * The host's writer (core/hold.c holds and charges calls): a lease is
 * renewed every RENEW_EVERY seconds while the host runs, for as long as
 * the longest call and HOLD_LEASE_EXTRA s more, and goes back to the
 * balance after IDLE seconds without a call.
 */
#define RENEW_EVERY	10.0		/* s */
#define IDLE		2.0		/* s */
#define WRITE_BATCH	256
#define GATHER_MS	1
#define JOURNAL_GATHER_MS 10
#define RETURNS_MAX	64

struct writer {
	pthread_t	 thread;
	bool		 running;
	atomic_bool	 stop;
	const struct config *cfg;
	struct lease_shared *s;
	struct lease_record rec[WRITE_BATCH];
	char		 renew[LEASE_TENANTS][LEASE_ID_LEN + 1];
	bool		 found[LEASE_TENANTS];	/* renew[i] still exists */
	int		 nrenew;
	char		 idle[RETURNS_MAX][2][LEASE_ID_LEN + 1];
	char		 retry[RETURNS_MAX][LEASE_ID_LEN + 1];
	int		 nretry;
};

static struct writer *writer;		/* slot 0's, NULL elsewhere */

static int
lease_ttl(const struct config *cfg, int call_ttl)
{
	(void)cfg;
	return call_ttl + HOLD_LEASE_EXTRA;
}

static void
unlock(void *arg)
{
	worker_release(arg);
}

static void
relock(void *arg)
{
	worker_acquire(arg);
}

static bool
quiet(void *arg)
{
	return worker_quiet(arg);
}

static void
park(void *arg, double until)
{
	worker_park(arg, until);
}

static void
unpark(void *arg)
{
	worker_unpark(arg);
}

void
leases_holder(struct worker *w, struct holder *who)
{
	struct lease_shared *s = api_leases(w);

	who->db = app(w)->db;
	who->leases = w->cfg->credits_lease ? s : NULL;
	/* The master owns the leases; 1 (or 0) when it is gone. */
	who->owner = getppid();
	who->unlock = unlock;
	who->relock = relock;
	who->arg = w;
	who->queue = &app(w)->holds;
	who->quiet = quiet;
	who->park = park;
	who->unpark = unpark;
	who->sending = api_sending(w);
}

bool
leases_replayed(struct worker *w)
{
	struct lease_shared *s = api_leases(w);

	return s == NULL || lease_replayed(s);
}

static void
renewed(void *arg, const char *id)
{
	struct writer	*wr = arg;
	int		 i;

	for (i = 0; i < wr->nrenew; i++)
		if (strcmp(wr->renew[i], id) == 0)
			wr->found[i] = true;
}

/* Lets leases go: those idle for IDLE s (all, when all), and retries. */
static void
give_back(struct writer *wr, struct db *db, double now, bool all)
{
	int	 i, n, kept = 0;

	n = lease_idle(wr->s, now, all ? -1 : IDLE, wr->idle, RETURNS_MAX);
	for (i = 0; i < n; i++)
		if (credits_release(db, wr->idle[i][1]) == -1 &&
		    wr->nretry < RETURNS_MAX)
			memcpy(wr->retry[wr->nretry++], wr->idle[i][1],
			    LEASE_ID_LEN + 1);
	for (i = 0; i < wr->nretry; i++)
		if (credits_release(db, wr->retry[i]) == -1)
			memmove(wr->retry[kept++], wr->retry[i],
			    LEASE_ID_LEN + 1);
	/* What cannot be let go here ends at its deadline. */
	wr->nretry = kept;
}

static void
renew(struct writer *wr, struct db *db, double now)
{
	int	 i;

	wr->nrenew = lease_all(wr->s, wr->renew, LEASE_TENANTS);
	if (wr->nrenew == 0)
		return;
	memset(wr->found, 0, sizeof(wr->found));
	if (credits_lease_renew(db, wr->renew, wr->nrenew,
	    lease_ttl(wr->cfg, wr->cfg->upstream_total_timeout + 60), renewed,
	    wr) == -1)
		return;
	for (i = 0; i < wr->nrenew; i++)
		if (wr->found[i])
			lease_renewed(wr->s, wr->renew[i], now +
			    lease_ttl(wr->cfg, wr->cfg->upstream_total_timeout +
			    60) - HOLD_LEASE_MARGIN);
		else
			lease_lost(wr->s, wr->renew[i]);
}

/*
 * The records waiting.  A commit costs the same for one row as for many,
 * so while many calls are in flight (others will end any moment), a few
 * records wait up to GATHER_MS for more: group commit, as PostgreSQL's
 * commit_delay does, but only when there is a group to wait for.  With a
 * journal no answer waits for the commit: records then wait up to
 * JOURNAL_GATHER_MS, whatever is in flight, and the host writes one
 * batch where it would write many.
 */
static int
gather(struct writer *wr)
{
	/*
	 * How often a gathering writer looks again: with a journal, seldom
	 * (a wake-up per look, thousands a second, costs more than the
	 * batch), yet soon enough to write a full batch before the ring
	 * fills.
	 */
	const struct timespec quick = { 0, 250 * 1000 };
	const struct timespec slow = { 0, 2 * 1000 * 1000 };
	bool		 journal = lease_journaled(wr->s);
	double		 until = 0;
	int		 n;

	for (;;) {
		n = lease_pending(wr->s, wr->rec, WRITE_BATCH, 500);
		if (n == 0 || n == WRITE_BATCH ||
		    (!journal && lease_calls(wr->s) == 0))
			return n;
		if (until == 0)
			until = clock_mono() + (journal ? JOURNAL_GATHER_MS :
			    GATHER_MS) / 1000.0;
		else if (clock_mono() >= until || atomic_load(&wr->stop))
			return n;
		nanosleep(journal ? &slow : &quick, NULL);
	}
}

static void *
writer_main(void *arg)
{
	struct writer	*wr = arg;
	struct db	*db;
	const struct timespec pause = { 0, 200 * 1000 * 1000 };
	double		 now, last_idle = 0, last_renew = 0, stop_by = 0;
	int		 n;
	bool		 failing = false;

	db = db_new(wr->cfg->database_url, wr->cfg->database_connect_timeout,
	    "keygated-ledger");
	if (db == NULL) {
		log_error("db_new: the ledger writer: out of memory");
		return NULL;
	}
	db_set_timeouts(db, wr->cfg->database_statement_timeout * 1000,
	    wr->cfg->database_lock_timeout * 1000);
	db_prefer_generic_plans(db);
	/* A worker being replaced may write still: wait for its turn. */
	while (lease_writer_take(wr->s, 200) == -1)
		if (atomic_load(&wr->stop))
			goto out;
	for (;;) {
		n = gather(wr);
		if (n > 0 && credits_lease_write(db, wr->rec, n) == 0) {
			lease_committed(wr->s, wr->rec, n);
			if (failing)
				log_info("PostgreSQL: usage rows are written "
				    "again");
			failing = false;
		} else if (n > 0) {
			if (!failing)
				log_error("PostgreSQL: writing %d usage rows: "
				    "%s; trying again", n, db_errmsg(db));
			failing = true;
			nanosleep(&pause, NULL);
		}
		now = clock_mono();
		if (now - last_renew >= RENEW_EVERY) {
			renew(wr, db, now);
			last_renew = now;
		}
		if (now - last_idle >= 1.0) {
			give_back(wr, db, now, false);
			last_idle = now;
		}
		if (!atomic_load(&wr->stop))
			continue;
		if (stop_by == 0)
			stop_by = now + wr->cfg->shutdown_timeout;
		/* Replaced: the new worker's writer carries on. */
		if (lease_writer_wanted(wr->s) && n == 0)
			break;
		if (lease_busy(wr->s) == 0) {
			give_back(wr, db, now, true);
			break;
		}
		if (now >= stop_by)
			break;
	}
	lease_writer_give(wr->s);
out:
	db_free(db);
	return NULL;
}

int
leases_start(struct worker *w)
{
	struct lease_shared *s = api_leases(w);
	int		 rc;

	/* Also to write what a journal holds when leases were turned off. */
	if (w->slot != 0 || s == NULL || ((!w->cfg->credits_enforce ||
	    !w->cfg->credits_lease) && lease_replayed(s)))
		return 0;
	if ((writer = calloc(1, sizeof(*writer))) == NULL) {
		log_error("calloc: the ledger writer: out of memory");
		return -1;
	}
	writer->cfg = w->cfg;
	writer->s = s;
	if ((rc = pthread_create(&writer->thread, NULL, writer_main,
	    writer)) != 0) {
		log_error("pthread_create: the ledger writer: %s",
		    strerror(rc));
		free(writer);
		writer = NULL;
		return -1;
	}
	writer->running = true;
	return 0;
}

void
leases_stop(struct worker *w)
{
	(void)w;
	if (writer == NULL)
		return;
	atomic_store(&writer->stop, true);
	lease_wake_writer(writer->s);
	if (writer->running)
		pthread_join(writer->thread, NULL);
	free(writer);
	writer = NULL;
}
