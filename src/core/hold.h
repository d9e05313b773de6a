#ifndef KEYGATE_CORE_HOLD_H
#define KEYGATE_CORE_HOLD_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

/*
 * One call's credits held: in this host's lease of the tenant's balance
 * (core/lease.h) when leases are on and the lease has room, else as a
 * reservation in the database (core/credits.h).  A call takes its hold,
 * then either finishes it (charging the cost, with its usage row) or
 * drops it (charging nothing); both are once, and a hold after
 * hold_init() is none.
 *
 *	struct hold h;
 *
 *	hold_init(&h);
 *	switch (hold_take(&who, &h, tenant, key, request, estimate, ttl,
 *	    &available)) { ... }
 *	... the provider call ...
 *	hold_finish(&who, &h, cost, &usage, &charged);	or hold_drop()
 */

struct credits_usage;
struct db;
struct hold_op;
struct lease_shared;

/*
 * The holds and settlements of a process's calls waiting to be sent to
 * the database together, in one statement each: see hold_take().
 */
#define HOLD_BATCH	64
#define HOLD_GATHER	0.005

struct hold_queue {
	struct hold_op	*op[HOLD_BATCH];
	int		 n;
	double		 since;		/* monotonic s the first came */
	bool		 sending;	/* a thread sends it (or waits to) */
};

/* What holding needs of the process it runs in. */
struct holder {
	struct db	*db;
	struct lease_shared *leases;	/* NULL: every hold in the database */
	pid_t		 owner;		/* the process owning this host's
					   leases; <= 1 when it is gone */
	/*
	 * Around a wait for the writer (the ring full, or the commit of the
	 * call's usage row), so that other calls of the process run.
	 */
	void		(*unlock)(void *);
	void		(*relock)(void *);
	void		*arg;
	/*
	 * Holds and settlements in the database wait here (NULL: each is
	 * sent alone) while other threads of the process have work to do,
	 * and are sent together by the last one to get there: quiet() says
	 * whether any other thread runs or waits to; park() lets go of the
	 * process's lock and waits until all are quiet, unpark() is called
	 * or the monotonic time until (s, 0 = none) has come, and takes the
	 * lock back.  The first in the queue waits at most HOLD_GATHER s.
	 */
	struct hold_queue *queue;
	bool		(*quiet)(void *);
	void		(*park)(void *, double until);
	void		(*unpark)(void *);
	/*
	 * HOLD_SENDING locks shared by the processes of the host (NULL:
	 * none), made by hold_sending_init(): a queue is sent holding the
	 * locks of its tenants (by a hash of the id), so that two processes
	 * never send for one tenant at once.  Their statements would take
	 * turns on the tenant's row anyway, each waiting inside PostgreSQL
	 * and checking its rows again once the other committed (which
	 * doubled the database's CPU per call); this way the second waits
	 * without its lock, and what its threads queue meanwhile goes with
	 * it.  Only an order of sending: a lock not had within
	 * HOLD_SENDING_WAIT s (or whose holder died) is gone without.
	 */
	pthread_mutex_t	*sending;
};

#define HOLD_SENDING		16
#define HOLD_SENDING_WAIT	2
#define HOLD_SENDING_MANY	4

/* Makes the HOLD_SENDING locks at p, in memory shared by processes. */
int		 hold_sending_init(pthread_mutex_t *p)
		    __attribute__((warn_unused_result));


struct hold {
	char		 resv[40];	/* reservation id, "" = none */
	int		 lease;		/* hold in the lease, -1 = none */
};

enum hold_result {
	HOLD_OK,		/* held; or charged and recorded */
	HOLD_SHORT,		/* not enough: *available says what there is */
	HOLD_DB,		/* the database failed: see db_status() */
	HOLD_RING_FULL,		/* charged nothing: the records waiting to be
				   written filled the ring for too long */
	HOLD_UNCONFIRMED,	/* queued on this host, not yet written:
				   *charged says 0 */
	HOLD_RESULT__MAX
};

/*
 * A lease lives as long as the longest call and HOLD_LEASE_EXTRA s more,
 * and is used for calls that end HOLD_LEASE_MARGIN s before that.
 */
#define HOLD_LEASE_EXTRA	120
#define HOLD_LEASE_MARGIN	30.0

void	hold_init(struct hold *);
bool	hold_taken(const struct hold *);
/*
 * Holds amount of tenant's credits for a call of request_id (by key_id,
 * NULL for a token) that ends within ttl s.  HOLD_OK, HOLD_SHORT or
 * HOLD_DB.  With a queue, a hold in the database waits for the other
 * threads' holds and settlements, and all go in one statement each: a
 * tenant's row is then locked once per batch rather than once per call,
 * which is what bounds the calls per second of one tenant.
 */
enum hold_result hold_take(const struct holder *, struct hold *,
	    const char *tenant, const char *key_id, const char *request_id,
	    long long amount, int ttl, long long *available)
	    __attribute__((warn_unused_result));
/*
 * Charges cost with the usage row u; *charged what was recorded.  In a
 * lease, waits (unlocked) until the row is written, or, with a journal,
 * until its record is in it.  HOLD_OK, HOLD_RING_FULL, HOLD_UNCONFIRMED
 * or HOLD_DB (a settlement that failed: the reservation stays held).
 */
enum hold_result hold_finish(const struct holder *, struct hold *,
	    long long cost, const struct credits_usage *u, long long *charged);
/* Lets the hold go, charging nothing.  HOLD_OK or HOLD_DB. */
enum hold_result hold_drop(const struct holder *, struct hold *);

#endif
