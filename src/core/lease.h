#ifndef KEYGATE_CORE_LEASE_H
#define KEYGATE_CORE_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Credits leased per host.  Instead of a hold and a settlement in the
 * database per call, a host holds a slice of a tenant's balance (a lease:
 * one credit_reservations row, owned by the master) and its workers hold
 * each call's estimate from that slice in the memory they share.  A call
 * that ends becomes a record in a ring; one writer per host turns every
 * record waiting there into its usage row and the lease's charge in one
 * transaction.  The call's answer waits for that commit; or, when the
 * ring is a file (a journal, credits_journal), only for its record to be
 * in the file.  A lease idle for a while goes back to the balance.
 *
 * What survives what:
 *   - a worker killed: its calls' holds go back to the lease (charged
 *     nothing, as a hold released); its records already in the ring are
 *     written by the writer;
 *   - the whole host gone: the lease row's owner (the master's pid) is
 *     gone, so the next sweep on this host, or the deadline on any other,
 *     lets the rest go; what was committed was charged.  With a journal,
 *     the next keygated on the host first writes what the journal holds
 *     (each record once: a call's usage row is keyed by its own id),
 *     and only then lets the dead master's leases go.
 * Nothing can be spent beyond a lease, and a lease is taken from the
 * free balance in the database: a balance is never overspent, across
 * workers or hosts.
 *
 * This module is the shared memory only; the database side is in
 * core/credits.c and the writer in api/leases.c.
 */
struct credits_usage;
struct lease_shared;

#define LEASE_ID_LEN	36		/* a uuid as text */
#define LEASE_TENANTS	16384		/* tenants a host has leased to */
#define LEASE_HOLDS	16384		/* calls holding credits on a host */
#define LEASE_RING	4096		/* calls ended, not yet written */
#define LEASE_MODEL_MAX	256
#define LEASE_REQ_MAX	128

size_t	lease_shared_size(void);
/* Prepares zeroed memory of lease_shared_size() bytes; 0, or -1. */
int	lease_shared_init(struct lease_shared *)
	    __attribute__((warn_unused_result));

enum lease_result {
	LEASE_HELD,		/* *hold names the call's hold */
	LEASE_NEED,		/* the lease must grow by at least *need */
	LEASE_NONE,		/* no room in the tables, or none in the
				   ring for one more call to end: hold
				   in the database instead */
};

/*
 * Holds amount of tenant's lease for a call of process pid that ends by
 * ends (monotonic s).  On LEASE_NEED, *lease says which lease to grow
 * ("" for a new one).
 */
enum lease_result lease_hold(struct lease_shared *, const char *tenant,
	    long long amount, pid_t pid, double now, double ends, int *hold,
	    long long *need, char lease[LEASE_ID_LEN + 1]);
/*
 * The lease of tenant grew by amount, or was made (fresh), valid until
 * valid (monotonic s).  0; 1 when the table no longer has that lease: a
 * fresh one because another process made one meanwhile (the caller lets
 * its own go), a grown one because the writer let it go meanwhile (with
 * what it grew by).
 */
int	lease_grown(struct lease_shared *, const char *tenant,
	    const char *lease, bool fresh, long long amount, double valid,
	    double now);
/* Lets a call's hold go: nothing charged. */
void	lease_drop(struct lease_shared *, int hold);

/*
 * Charges cost to a call's hold: up to the hold and what the lease has
 * free beyond it (the rest is forgiven: *charged says what was taken),
 * and queues its usage record, named call (a uuid of its own).  0 with
 * *seq the record's number, -1 when the ring is full (the hold then
 * stays: try again, or drop it).
 */
int	lease_spend(struct lease_shared *, int hold, long long cost,
	    const struct credits_usage *, const char *call, pid_t pid,
	    long long *charged, uint32_t *seq);
/*
 * Waits until record seq is written, at most wait_ms.  True once it is.
 */
bool	lease_written(struct lease_shared *, uint32_t seq, long wait_ms);

/*
 * Keeps the ring of ended calls in the file at path instead of in the
 * shared memory (made when missing, mode 0600, given to uid and gid
 * unless uid is -1, locked for this keygated alone): what was answered
 * then outlives every process of the host, and waits there for the
 * next keygated's writer.  Before the first fork.  0 with *waiting the
 * records a previous run left unwritten; -1 with why in err.
 */
int	lease_journal_open(struct lease_shared *, const char *path, uid_t uid,
	    gid_t gid, int *waiting, char *err, size_t errsz)
	    __attribute__((warn_unused_result));
/* True when the ring is a file's. */
bool	lease_journaled(struct lease_shared *);
/*
 * True once the records a previous run left in the journal are written
 * (at once without a journal): until then, that run's leases must not
 * be let go, or their charges would find no lease.
 */
bool	lease_replayed(struct lease_shared *);

/* Forgets what process pid held (it has exited): back to the leases. */
void	lease_forget(struct lease_shared *, pid_t pid);

/* For the writer. */

/* One record as the writer reads it. */
struct lease_record {
	uint32_t	 seq;
	int32_t		 pid;		/* the worker that queued it */
	char		 tenant[LEASE_ID_LEN + 1];
	char		 lease[LEASE_ID_LEN + 1];
	char		 call[LEASE_ID_LEN + 1];	/* the call's own id */
	char		 key_id[LEASE_ID_LEN + 1];	/* "" for a token */
	char		 request_id[LEASE_REQ_MAX + 1];
	char		 provider[24];
	char		 model[LEASE_MODEL_MAX + 1];
	char		 status[12];
	bool		 pool;
	double		 markup;
	long		 prompt_tokens;
	long		 completion_tokens;
	long long	 charged;
	long long	 cost;		/* what the call cost: charged, and
					   what was forgiven beyond it */
};

/*
 * Copies up to max records waiting, oldest first, into out; waits at
 * most wait_ms for one when none is.  The number copied.
 */
int	lease_pending(struct lease_shared *, struct lease_record *out,
	    int max, long wait_ms);
/*
 * The n records lease_pending() gave are written: their charges leave
 * the leases' held amounts, and whoever waits on them is woken.
 */
void	lease_committed(struct lease_shared *, const struct lease_record *,
	    int n);
/* A lease the database no longer has: forgotten, whatever it held. */
void	lease_lost(struct lease_shared *, const char *lease);

/*
 * The leases of tenants with no call and nothing to write for idle
 * seconds are taken out of the table (up to max, each as tenant and
 * lease id into out), for the writer to let go.
 */
int	lease_idle(struct lease_shared *, double now, double idle,
	    char (*out)[2][LEASE_ID_LEN + 1], int max);
/* Up to max lease ids in the table, to renew. */
int	lease_all(struct lease_shared *, char (*out)[LEASE_ID_LEN + 1],
	    int max);
/* Leases renewed: usable for calls ending before valid. */
void	lease_renewed(struct lease_shared *, const char *lease, double valid);

/* Writers: at most one at a time per host.  0 with the role, -1. */
int	lease_writer_take(struct lease_shared *, long wait_ms);
/* True while a writer waits for the role (a worker replacing another). */
bool	lease_writer_wanted(struct lease_shared *);
void	lease_writer_give(struct lease_shared *);
/* Ends a writer's wait in lease_pending() at once. */
void	lease_wake_writer(struct lease_shared *);
/* Calls holding credits on this host, without the lock: a hint. */
int	lease_calls(struct lease_shared *);
/* Calls holding credits and records waiting, on this host. */
int	lease_busy(struct lease_shared *);

#endif
