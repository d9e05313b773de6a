#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/credits.h"
#include "core/hold.h"
#include "core/lease.h"
#include "lib/clock.h"
#include "lib/crypto.h"
#include "lib/db.h"
#include "lib/shmlock.h"

/*
 * A lease grows by what 64 more calls like this one would hold, so that a
 * busy tenant's host asks the database rarely; it lives as long as the
 * longest call and HOLD_LEASE_EXTRA s more (renewed by the host's writer
 * while the host runs).  A call waits at most WRITE_WAIT_MS for its usage
 * row (with a journal, only for room in the ring).
 */
#define LEASE_CALLS	64
#define WRITE_WAIT_MS	10000

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

/* Grows tenant's lease (or makes one) by need and then some. */
static enum hold_result
lease_more(const struct holder *who, const char *tenant, const char *lease,
    long long need, long long amount, int ttl, double now,
    long long *available)
{
	char		 id[40];
	long long	 got, avail;
	int		 life = ttl + HOLD_LEASE_EXTRA;
	bool		 gone;

	if (lease[0] != '\0') {
		switch (credits_lease_grow(who->db, lease, tenant, need,
		    need + amount * LEASE_CALLS, life, &got, &gone, &avail)) {
		case CREDITS_OK:
			(void)lease_grown(who->leases, tenant, lease, false,
			    got, now + life - HOLD_LEASE_MARGIN, now);
			return HOLD_OK;
		case CREDITS_SHORT:
			if (gone) {
				lease_lost(who->leases, lease);
				return HOLD_OK;
			}
			/* What is free, here and in the database. */
			*available = avail + (amount - need);
			return HOLD_SHORT;
		default:
			return HOLD_DB;
		}
	}
	switch (credits_lease_new(who->db, tenant, need, need + amount *
	    LEASE_CALLS, who->owner, life, id, &got, &avail)) {
	case CREDITS_OK:
		/* Another process made one meanwhile: use that, let ours go
		 * (or leave it to its deadline, when even that fails). */
		if (lease_grown(who->leases, tenant, id, true, got, now +
		    life - HOLD_LEASE_MARGIN, now) != 0 &&
		    credits_release(who->db, id) == -1)
			return HOLD_OK;
		return HOLD_OK;
	case CREDITS_SHORT:
		*available = avail;
		return HOLD_SHORT;
	default:
		return HOLD_DB;
	}
}

/*
 * Holds amount from tenant's lease: HOLD_OK with *hold set, HOLD_SHORT,
 * HOLD_DB; or HOLD_OK with *hold -1 when the call must hold in the
 * database instead (no lease here, or no room in the tables).
 */
static enum hold_result
lease_take(const struct holder *who, const char *tenant, long long amount,
    int ttl, int *hold, long long *available)
{
	char		 lease[LEASE_ID_LEN + 1];
	long long	 need;
	double		 now;
	enum hold_result r;
	int		 try;

	*hold = -1;
	/* The owner's leases would outlive it forever. */
	if (who->leases == NULL || who->owner <= 1)
		return HOLD_OK;
	for (try = 0; try < 4; try++) {
		now = clock_mono();
		switch (lease_hold(who->leases, tenant, amount, getpid(), now,
		    now + ttl, hold, &need, lease)) {
		case LEASE_HELD:
			return HOLD_OK;
		case LEASE_NONE:
			return HOLD_OK;
		case LEASE_NEED:
			break;
		}
		if ((r = lease_more(who, tenant, lease, need, amount, ttl, now,
		    available)) != HOLD_OK)
			return r;
	}
	return HOLD_OK;
}

/*
 * A uuid of the call's own, for its hold and its usage row: in time order
 * (crypto_uuid7()), so that a usage table of millions of rows takes each
 * new one at the end of its index, not on a random page.  Unique, not
 * secret: from the nonce generator, which unlike the strong one does not
 * poll the process's resource usage each time (a walk over every thread
 * of a worker holding thousands of calls).
 */
_Static_assert(LEASE_ID_LEN == CRYPTO_UUID_LEN, "a call's id is a uuid");

static void
call_id(char out[LEASE_ID_LEN + 1])
{
	crypto_uuid7(out);
}

/* A hold or a settlement waiting in the queue, on its thread's stack. */
struct hold_op {
	bool		 take;		/* a hold, else a settlement */
	bool		 done;
	enum hold_result result;
	struct credits_hold_req hold;	/* a hold's */
	struct credits_settle_req settle; /* a settlement's */
	long long	 available;	/* a hold's, when short */
};

/* The settlements of op[0..n), in one statement where they can be. */
static void
send_settlements(const struct holder *who, struct hold_op **op, int n)
{
	struct credits_settle_req r[HOLD_BATCH];
	struct credits_settle_req *s;
	bool		 lost = false;
	int		 i;

	for (i = 0; i < n; i++)
		r[i] = op[i]->settle;
	if (n > 1 && credits_settle_many(who->db, r, n) == -1)
		/* For good, when out of reach: the holds stay, as alone. */
		lost = db_status(who->db) == DB_UNAVAILABLE;
	for (i = 0; i < n; i++) {
		s = &op[i]->settle;
		s->charged = r[i].charged;
		op[i]->result = HOLD_OK;
		if (lost)
			op[i]->result = HOLD_DB;
		else if (!r[i].settled && credits_settle(who->db, s->id,
		    s->cost, s->u, &s->charged) == -1)
			op[i]->result = HOLD_DB;
	}
}

/* The holds of op[0..n), in one statement where they can be. */
static void
send_holds(const struct holder *who, struct hold_op **op, int n)
{
	struct credits_hold_req r[HOLD_BATCH];
	struct credits_hold_req *h;
	int		 i;

	for (i = 0; i < n; i++)
		r[i] = op[i]->hold;
	if (n > 1 && credits_reserve_many(who->db, r, n) == -1) {
		for (i = 0; i < n; i++)
			op[i]->result = HOLD_DB;
		return;
	}
	/* Alone, or not held together: as alone, for the 402's figures. */
	for (i = 0; i < n; i++) {
		h = &op[i]->hold;
		if (r[i].held) {
			op[i]->result = HOLD_OK;
			continue;
		}
		switch (credits_reserve(who->db, h->tenant, h->key_id,
		    h->request_id, h->amount, h->ttl, h->id,
		    &op[i]->available)) {
		case CREDITS_OK:
			op[i]->result = HOLD_OK;
			break;
		case CREDITS_SHORT:
			op[i]->result = HOLD_SHORT;
			break;
		default:
			op[i]->result = HOLD_DB;
			break;
		}
	}
}

int
hold_sending_init(pthread_mutex_t *p)
{
	return shmlock_init(p, HOLD_SENDING, sizeof(*p));
}

/* The sending lock of op's tenant. */
static unsigned
sending_slot(const struct hold_op *op)
{
	const char	*t = op->take ? op->hold.tenant : op->settle.u->tenant;
	uint32_t	 h = 2166136261u;

	for (; *t != '\0'; t++)
		h = (h ^ (unsigned char)*t) * 16777619u;
	return h % HOLD_SENDING;
}

/* The sending locks of the queue's tenants, as bits. */
static uint32_t
queue_slots(const struct hold_queue *q)
{
	uint32_t	 want = 0;
	int		 i;

	for (i = 0; i < q->n; i++)
		want |= UINT32_C(1) << sending_slot(q->op[i]);
	return want;
}

/*
 * Takes a sending lock, waiting up to HOLD_SENDING_WAIT s or not at all:
 * false when not had.  One whose holder died is had (it sent or not, the
 * database tells; the lock guards nothing else).
 */
static bool
sending_lock(pthread_mutex_t *m, bool wait)
{
	bool	 abandoned;

	return shmlock_take(m, wait ? HOLD_SENDING_WAIT * 1000L : 0,
	    &abandoned) == 0;
}

/*
 * Takes the sending locks in want (lowest first), without waiting when
 * wait is false: the bits of those had.
 */
static uint32_t
slots_take(const struct holder *who, uint32_t want, bool wait)
{
	uint32_t	 had = 0;
	unsigned	 k;

	for (k = 0; k < HOLD_SENDING; k++)
		if (want & UINT32_C(1) << k) {
			if (!sending_lock(&who->sending[k], wait))
				break;
			had |= UINT32_C(1) << k;
		}
	return had;
}

static void
slots_give(const struct holder *who, uint32_t had)
{
	unsigned	 k;

	for (k = 0; k < HOLD_SENDING; k++)
		if (had & UINT32_C(1) << k)
			pthread_mutex_unlock(&who->sending[k]);
}

/*
 * The sending locks of the queue's tenants, with the worker's lock held.
 * While another process has one, the worker's lock is let go and this
 * thread waits until it is free, then takes the worker's lock back and
 * tries again (never holding a sending lock while it waits for its own
 * worker); what was queued meanwhile goes too.  After HOLD_GATHER s of
 * this, or once a lock was not free within HOLD_SENDING_WAIT s, it sends
 * without the locks it could not have; and a queue of HOLD_SENDING_MANY
 * never waits (its statement checking its rows again costs little for
 * each call, while waking the worker's threads for each turn would cost
 * more).  The bits of the locks had.
 */
static uint32_t
slots_for_queue(const struct holder *who)
{
	uint32_t	 want, had, busy;
	double		 until = clock_mono() + HOLD_GATHER;
	unsigned	 k;

	if (who->sending == NULL)
		return 0;
	for (;;) {
		want = queue_slots(who->queue);
		if ((had = slots_take(who, want, false)) == want ||
		    who->queue->n >= HOLD_SENDING_MANY ||
		    clock_mono() >= until)
			return had;
		busy = want & ~had;
		slots_give(who, had);
		who->unlock(who->arg);
		for (k = 0; k < HOLD_SENDING; k++)
			if (busy & UINT32_C(1) << k) {
				if (!sending_lock(&who->sending[k], true)) {
					until = 0;
					break;
				}
				pthread_mutex_unlock(&who->sending[k]);
				break;
			}
		who->relock(who->arg);
	}
}

/*
 * Sends what waits in the queue: settlements first (they free what they
 * held), then holds, each kind in the order it came.  With the lock held.
 */
static void
flush(const struct holder *who)
{
	struct hold_queue *q = who->queue;
	struct hold_op	*takes[HOLD_BATCH], *settles[HOLD_BATCH];
	uint32_t	 had;
	int		 i, nt = 0, ns = 0;

	/* The others wait for this thread (also while it waits for locks). */
	q->sending = true;
	had = slots_for_queue(who);
	for (i = 0; i < q->n; i++) {
		if (q->op[i]->take)
			takes[nt++] = q->op[i];
		else
			settles[ns++] = q->op[i];
	}
	q->n = 0;
	if (ns > 0)
		send_settlements(who, settles, ns);
	if (nt > 0)
		send_holds(who, takes, nt);
	slots_give(who, had);
	for (i = 0; i < ns; i++)
		settles[i]->done = true;
	for (i = 0; i < nt; i++)
		takes[i]->done = true;
	q->sending = false;
	who->unpark(who->arg);
}

/*
 * Queues op and waits until it was sent: by this thread, once no other
 * thread of the process has work to do, the queue is full or its first
 * has waited HOLD_GATHER s; or by another (which may be waiting for the
 * host's sending locks meanwhile).
 */
static void
batched(const struct holder *who, struct hold_op *op)
{
	struct hold_queue *q = who->queue;

	while (q->n == HOLD_BATCH) {
		if (q->sending)
			who->park(who->arg, 0);
		else
			flush(who);
	}
	if (q->n == 0)
		q->since = clock_mono();
	q->op[q->n++] = op;
	while (!op->done) {
		if (!q->sending && (q->n == HOLD_BATCH ||
		    who->quiet(who->arg) ||
		    clock_mono() >= q->since + HOLD_GATHER)) {
			flush(who);
			continue;
		}
		/* The first waits for the others only so long. */
		who->park(who->arg, q->op[0] == op && !q->sending ?
		    q->since + HOLD_GATHER : 0);
	}
}

enum hold_result
hold_take(const struct holder *who, struct hold *h, const char *tenant,
    const char *key_id, const char *request_id, long long amount, int ttl,
    long long *available)
{
	struct hold_op	 op;
	enum hold_result r;

	hold_init(h);
	*available = 0;
	if ((r = lease_take(who, tenant, amount, ttl, &h->lease,
	    available)) != HOLD_OK || h->lease >= 0)
		return r;
	if (who->queue != NULL) {
		memset(&op, 0, sizeof(op));
		op.take = true;
		op.hold.tenant = tenant;
		op.hold.key_id = key_id;
		op.hold.request_id = request_id;
		op.hold.amount = amount;
		op.hold.ttl = ttl;
		call_id(op.hold.id);
		batched(who, &op);
		if (op.result == HOLD_OK)
			memcpy(h->resv, op.hold.id, sizeof(h->resv));
		*available = op.available;
		return op.result;
	}
	call_id(h->resv);
	switch (credits_reserve(who->db, tenant, key_id, request_id, amount,
	    ttl, h->resv, available)) {
	case CREDITS_OK:
		return HOLD_OK;
	case CREDITS_SHORT:
		return HOLD_SHORT;
	default:
		return HOLD_DB;
	}
}

/* Charges a hold in the lease; its record is then the writer's. */
static enum hold_result
lease_finish(const struct holder *who, int hold, long long cost,
    const struct credits_usage *u, long long *charged)
{
	const struct timespec pause = { 0, 50 * 1000 * 1000 };
	char		 call[LEASE_ID_LEN + 1];
	uint32_t	 seq;
	int		 waited;
	bool		 written;

	call_id(call);
	/* A full ring is the database down for a while: wait for room. */
	for (waited = 0; lease_spend(who->leases, hold, cost, u, call,
	    getpid(), charged, &seq) == -1; waited += 50) {
		if (waited >= WRITE_WAIT_MS) {
			lease_drop(who->leases, hold);
			*charged = 0;
			return HOLD_RING_FULL;
		}
		who->unlock(who->arg);
		nanosleep(&pause, NULL);
		who->relock(who->arg);
	}
	/* In the journal, the charge is recorded: it outlives the host. */
	if (lease_journaled(who->leases))
		return HOLD_OK;
	who->unlock(who->arg);
	written = lease_written(who->leases, seq, WRITE_WAIT_MS);
	who->relock(who->arg);
	if (!written) {
		*charged = 0;
		return HOLD_UNCONFIRMED;
	}
	return HOLD_OK;
}

enum hold_result
hold_finish(const struct holder *who, struct hold *h, long long cost,
    const struct credits_usage *u, long long *charged)
{
	struct hold_op	 op;
	enum hold_result r = HOLD_OK;

	*charged = 0;
	if (h->lease >= 0)
		r = lease_finish(who, h->lease, cost, u, charged);
	else if (h->resv[0] != '\0' && who->queue != NULL) {
		memset(&op, 0, sizeof(op));
		op.settle.id = h->resv;
		op.settle.cost = cost;
		op.settle.u = u;
		batched(who, &op);
		*charged = op.settle.charged;
		r = op.result;
	} else if (h->resv[0] != '\0' &&
	    credits_settle(who->db, h->resv, cost, u, charged) == -1)
		r = HOLD_DB;
	hold_init(h);
	return r;
}

enum hold_result
hold_drop(const struct holder *who, struct hold *h)
{
	enum hold_result r = HOLD_OK;

	if (h->lease >= 0)
		lease_drop(who->leases, h->lease);
	else if (h->resv[0] != '\0' && credits_release(who->db, h->resv) == -1)
		r = HOLD_DB;
	hold_init(h);
	return r;
}
