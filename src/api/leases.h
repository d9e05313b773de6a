#ifndef KEYGATE_API_LEASES_H
#define KEYGATE_API_LEASES_H

#include <stdbool.h>

#include "core/lease.h"

struct credits_usage;
struct worker;

/*
 * A worker's side of credits leased per host (core/lease.h): holding a
 * call's estimate from its tenant's lease, growing the lease from the
 * database when it is short, and charging a call that ended; and, in the
 * worker of slot 0, the host's writer thread.
 */

enum leases_result {
	LEASES_HELD,		/* *hold names the call's hold */
	LEASES_NONE,		/* no lease here: hold in the database */
	LEASES_SHORT,		/* not enough: *available says what there is */
	LEASES_DB,		/* the database failed: see db_status() */
};

enum leases_result leases_hold(struct worker *, const char *tenant,
	    long long amount, int ttl, int *hold, long long *available);
/*
 * Charges cost to hold and waits (the worker's lock let go) until its
 * usage row is written, or, with a journal, until its record is in it.
 * 0 with *charged what was taken; -1 when it could not be confirmed in
 * time (it is written later, as long as this host runs; *charged is
 * then 0).
 */
int	leases_spend(struct worker *, int hold, long long cost,
	    const struct credits_usage *, long long *charged);
/* Lets a hold go, charging nothing. */
void	leases_drop(struct worker *, int hold);

/*
 * One call's credits held: in this host's lease when credits_lease is on
 * and the lease has room, else as a reservation in the database.  A
 * call takes its hold, then either finishes it (charging the cost, with
 * its usage row) or drops it (charging nothing); both are once, and a
 * zeroed hold after hold_init() is none.
 */
struct hold {
	char		 resv[40];	/* reservation id, "" = none */
	int		 lease;		/* hold in the lease, -1 = none */
};

void	hold_init(struct hold *);
/* 0 held; 1 short (*available says what is free); -1 the database. */
int	hold_take(struct worker *, struct hold *, const char *tenant,
	    const char *key_id, const char *request_id, long long amount,
	    int ttl, long long *available) __attribute__((warn_unused_result));
/* Charges cost with the usage row u; *charged what was recorded. */
void	hold_finish(struct worker *, struct hold *, long long cost,
	    const struct credits_usage *u, long long *charged);
void	hold_drop(struct worker *, struct hold *);
bool	hold_taken(const struct hold *);

/*
 * False while records a previous run left in the journal wait: its
 * leases must not be let go before they are written.
 */
bool	leases_replayed(struct worker *);

/* The writer, in slot 0.  0, or -1. */
int	leases_start(struct worker *);
/* Stops it once nothing is left to write on this host, or is wanted by
 * the worker replacing this one, or shutdown_timeout passed. */
void	leases_stop(struct worker *);

#endif
