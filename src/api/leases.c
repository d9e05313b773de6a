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
#include "core/lease.h"
#include "lib/clock.h"
#include "lib/crypto.h"
#include "lib/db.h"
#include "server/config.h"
#include "server/log.h"
#include "server/worker.h"

/*
 * A lease grows by what 64 more calls like this one would hold, so that a
 * busy tenant's host asks the database rarely; it lives as long as the
 * longest call and two minutes more, renewed every RENEW_EVERY seconds
 * while the host runs, and goes back to the balance after IDLE seconds
 * without a call.  A call waits at most WRITE_WAIT_MS for its usage row
 * (with a journal, only for room in the ring).
 */
#define LEASE_CALLS	64
#define LEASE_EXTRA	120		/* s beyond the longest call */
#define LEASE_MARGIN	30.0		/* s of a lease not used for calls */
#define RENEW_EVERY	10.0		/* s */
#define IDLE		2.0		/* s */
#define WRITE_BATCH	256
#define GATHER_MS	1
#define WRITE_WAIT_MS	10000
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
	return call_ttl + LEASE_EXTRA;
}

enum leases_result
leases_hold(struct worker *w, const char *tenant, long long amount,
    int ttl, int *hold, long long *available)
{
	struct lease_shared *s = api_leases(w);
	char		 lease[LEASE_ID_LEN + 1], id[40];
	long long	 need, got, avail;
	double		 now;
	pid_t		 owner = getppid();
	bool		 gone;
	int		 try;

	*hold = -1;
	*available = 0;
	/* The master owns leases: one that is gone would own them forever. */
	if (s == NULL || !w->cfg->credits_lease || owner <= 1)
		return LEASES_NONE;
	for (try = 0; try < 4; try++) {
		now = clock_mono();
		switch (lease_hold(s, tenant, amount, getpid(), now, now + ttl,
		    hold, &need, lease)) {
		case LEASE_HELD:
			return LEASES_HELD;
		case LEASE_NONE:
			return LEASES_NONE;
		case LEASE_NEED:
			break;
		}
		if (lease[0] != '\0') {
			switch (credits_lease_grow(app(w)->db, lease, tenant,
			    need, need + amount * LEASE_CALLS,
			    lease_ttl(w->cfg, ttl), &got, &gone, &avail)) {
			case CREDITS_OK:
				(void)lease_grown(s, tenant, lease, false, got,
				    now + lease_ttl(w->cfg, ttl) - LEASE_MARGIN,
				    now);
				continue;
			case CREDITS_SHORT:
				if (gone) {
					lease_lost(s, lease);
					continue;
				}
				/* What is free, here and in the database. */
				*available = avail + (amount - need);
				return LEASES_SHORT;
			default:
				return LEASES_DB;
			}
		}
		switch (credits_lease_new(app(w)->db, tenant, need, need +
		    amount * LEASE_CALLS, owner, lease_ttl(w->cfg, ttl), id,
		    &got, &avail)) {
		case CREDITS_OK:
			if (lease_grown(s, tenant, id, true, got, now +
			    lease_ttl(w->cfg, ttl) - LEASE_MARGIN, now) == 0)
				continue;
			/* Another worker made one meanwhile: use that. */
			if (credits_release(app(w)->db, id) == -1)
				log_error("PostgreSQL: letting lease %s go: "
				    "%s; it ends at its deadline", id,
				    db_errmsg(app(w)->db));
			continue;
		case CREDITS_SHORT:
			*available = avail;
			return LEASES_SHORT;
		default:
			return LEASES_DB;
		}
	}
	return LEASES_NONE;
}

/* A uuid (version 4) of the call's own, for its usage row. */
static void
call_id(char out[LEASE_ID_LEN + 1])
{
	unsigned char	 b[16];

	crypto_random(b, sizeof(b));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, LEASE_ID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-"
	    "%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
	    b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
	    b[15]);
}

int
leases_spend(struct worker *w, int hold, long long cost,
    const struct credits_usage *u, long long *charged)
{
	struct lease_shared *s = api_leases(w);
	const struct timespec pause = { 0, 50 * 1000 * 1000 };
	char		 call[LEASE_ID_LEN + 1];
	uint32_t	 seq;
	int		 waited;
	bool		 written;

	*charged = 0;
	if (s == NULL)
		return -1;
	call_id(call);
	/* A full ring is the database down for a while: wait for room. */
	for (waited = 0; lease_spend(s, hold, cost, u, call, getpid(),
	    charged, &seq) == -1; waited += 50) {
		if (waited >= WRITE_WAIT_MS) {
			log_error("request %s: the usage rows waiting to be "
			    "written fill the queue; the call is not charged",
			    u->request_id);
			leases_drop(w, hold);
			return -1;
		}
		worker_release(w);
		nanosleep(&pause, NULL);
		worker_acquire(w);
	}
	/* In the journal, the charge is recorded: it outlives the host. */
	if (lease_journaled(s))
		return 0;
	worker_release(w);
	written = lease_written(s, seq, WRITE_WAIT_MS);
	worker_acquire(w);
	if (!written) {
		log_error("request %s: its usage row is not written yet "
		    "(PostgreSQL?); it stays queued on this host",
		    u->request_id);
		*charged = 0;
		return -1;
	}
	return 0;
}

void
leases_drop(struct worker *w, int hold)
{
	struct lease_shared *s = api_leases(w);

	if (s != NULL)
		lease_drop(s, hold);
}

bool
leases_replayed(struct worker *w)
{
	struct lease_shared *s = api_leases(w);

	return s == NULL || lease_replayed(s);
}

void
hold_init(struct hold *h)
{
	h->resv[0] = '\0';
	h->lease = -1;
}

bool
hold_taken(const struct hold *h)
{
	return h->lease >= 0 || h->resv[0] != '\0';
}

int
hold_take(struct worker *w, struct hold *h, const char *tenant,
    const char *key_id, const char *request_id, long long amount, int ttl,
    long long *available)
{
	hold_init(h);
	switch (leases_hold(w, tenant, amount, ttl, &h->lease, available)) {
	case LEASES_HELD:
		return 0;
	case LEASES_SHORT:
		return 1;
	case LEASES_DB:
		return -1;
	case LEASES_NONE:
		break;
	}
	switch (credits_reserve(app(w)->db, tenant, key_id, request_id, amount,
	    ttl, h->resv, available)) {
	case CREDITS_OK:
		return 0;
	case CREDITS_SHORT:
		return 1;
	default:
		return -1;
	}
}

void
hold_finish(struct worker *w, struct hold *h, long long cost,
    const struct credits_usage *u, long long *charged)
{
	/* Held in this host's lease: charged there, written by its writer. */
	if (h->lease >= 0)
		(void)leases_spend(w, h->lease, cost, u, charged);
	else if (h->resv[0] != '\0' &&
	    credits_settle(app(w)->db, h->resv, cost, u, charged) == -1)
		log_error("PostgreSQL: settling request %s: %s; the "
		    "reservation stays held", u->request_id,
		    db_errmsg(app(w)->db));
	hold_init(h);
}

void
hold_drop(struct worker *w, struct hold *h)
{
	if (h->lease >= 0)
		leases_drop(w, h->lease);
	else if (h->resv[0] != '\0' &&
	    credits_release(app(w)->db, h->resv) == -1)
		log_error("PostgreSQL: releasing reservation %s: %s", h->resv,
		    db_errmsg(app(w)->db));
	hold_init(h);
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
			    60) - LEASE_MARGIN);
		else
			lease_lost(wr->s, wr->renew[i]);
}

/*
 * The records waiting.  A commit costs the same for one row as for many,
 * so while many calls are in flight (others will end any moment), a few
 * records wait up to GATHER_MS for more: group commit, as PostgreSQL's
 * commit_delay does, but only when there is a group to wait for.
 */
static int
gather(struct writer *wr)
{
	const struct timespec pause = { 0, 250 * 1000 };
	double		 until = 0;
	int		 n;

	for (;;) {
		n = lease_pending(wr->s, wr->rec, WRITE_BATCH, 500);
		if (n == 0 || n == WRITE_BATCH || lease_calls(wr->s) == 0)
			return n;
		if (until == 0)
			until = clock_mono() + GATHER_MS / 1000.0;
		else if (clock_mono() >= until)
			return n;
		nanosleep(&pause, NULL);
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
