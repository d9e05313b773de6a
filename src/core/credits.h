#ifndef KEYGATE_CORE_CREDITS_H
#define KEYGATE_CORE_CREDITS_H

#include <stdbool.h>
#include <stddef.h>

#include <sys/types.h>

#include "core/lease.h"

struct db;
struct json_object;

/*
 * Credits, counted in micro-credits (1 credit = 1 000 000) so that every
 * sum is exact.  A gateway call reserves its estimate before the provider
 * is called and settles to the real usage after; concurrent calls of a
 * tenant can never hold more than its balance.
 */

#define CREDITS_MICRO 1000000LL

struct credit_price {
	long long	 in_per_mtok;	/* micro-credits per million tokens */
	long long	 out_per_mtok;
	bool		 specific;	/* a pattern other than the catch-all
					   '*' set it */
};

enum credits_result {
	CREDITS_OK,
	CREDITS_SHORT,		/* not enough: nothing was held */
	CREDITS_DB,		/* see db_status() */
	CREDITS_RESULT__MAX
};

/*
 * Keep prices looked up in this process until credits_prices_forget():
 * for a process that hears PostgreSQL's announcements of price changes.
 */
void		 credits_prices_cache(void);
void		 credits_prices_forget(void);
/* The price of model: the longest matching pattern.  0, or -1. */
int		 credits_price(struct db *, const char *model,
		    struct credit_price *) __attribute__((warn_unused_result));
/*
 * The price of a call on the operator's pool: a pool call is priced by the
 * model actually called (called, its OpenRouter id), or by the name the
 * client asked for when only that has a price of its own, never by the
 * catch-all.  1 with *p set, 0 when neither has a price of its own, -1.
 */
int		 credits_pool_price(struct db *, const char *called,
		    const char *asked, struct credit_price *p)
		    __attribute__((warn_unused_result));
/* The cost in micro-credits, rounded up, with markup (0.25 = +25 %). */
long long	 credits_cost(const struct credit_price *, long prompt,
		    long completion, double markup);
/*
 * Tokens in n bytes of text, where no provider counted them: about four
 * bytes a token, rounded up (the safe side for a hold).
 */
long		 credits_tokens_of(size_t n);
/*
 * A call's bill: the price it is charged at, what was held for it, and
 * what it produced.  The caller opens it when it holds the estimate,
 * tells it of the content it passes on, and closes it with what the
 * provider told: the tokens billed and their cost come from here, so
 * that every route bills alike.
 */
struct credits_bill {
	struct credit_price price;
	double		 markup;	/* the pool's (0.25 = +25 %), 0 = none */
	long		 prompt_estimate; /* tokens, from the request's size */
	long		 max_out;	/* output tokens held */
	size_t		 delivered;	/* bytes of content passed on */
	long long	 charged;	/* micro-credits recorded, once closed */
};

/* What the provider told of a call's tokens. */
struct credits_told {
	bool		 told;		/* it sent usage */
	long		 prompt;
	long		 completion;
};

/*
 * Opens b at price and markup for a request of prompt_bytes (its
 * messages, or an embedding's input) that may produce max_out tokens;
 * returns the estimate to hold, in micro-credits.
 */
long long	 credits_bill_open(struct credits_bill *b,
		    const struct credit_price *price, double markup,
		    size_t prompt_bytes, long max_out);
/* n more bytes of content (text, tool-call arguments) passed on. */
void		 credits_bill_progress(struct credits_bill *b, size_t n);
/*
 * The tokens billed: the provider's counts when told, else the estimates
 * (the output from the content passed on).  A call cut short (partial)
 * is billed no less than the content passed on: a provider's count stops
 * at what it last told.
 */
void		 credits_bill_tokens(const struct credits_bill *b,
		    const struct credits_told *told, bool partial, long *prompt,
		    long *completion);
/* The cost of those tokens at the bill's price and markup. */
long long	 credits_bill_cost(const struct credits_bill *b, long prompt,
		    long completion);
/* The most output tokens available micro-credits pay for after prompt. */
long		 credits_affordable_tokens(const struct credit_price *,
		    long prompt, double markup, long long available);
/*
 * micro-credits as an exact decimal ("0.05", "12", "-0.000001") in out,
 * which 24 bytes always hold.
 */
void		 credits_format(long long micro, char *out, size_t outsz);
/*
 * micro-credits as a new JSON number written as that exact decimal
 * ("0.022", never 0.021999999999999999); the caller owns it.
 */
struct json_object *credits_json(long long micro);
/*
 * Holds amount for a request as the reservation id (a uuid the caller
 * chose); on CREDITS_SHORT *available says what there was.  Its own
 * transaction.
 * The hold names this process (host name, pid) as its owner and ends at
 * the latest ttl seconds from now: see credits_release_stale().
 */
enum credits_result credits_reserve(struct db *, const char *tenant,
		    const char *key_id, const char *request_id, long long amount,
		    int ttl, const char *id, long long *available)
		    __attribute__((warn_unused_result));
/* This host's name as holds record it, in out. */
void		 credits_host(char *out, size_t outsz);
/*
 * Releases the holds whose owner process on this host is gone, and any
 * hold past its deadline: what a process killed during a call (kill -9, a
 * crash) left.  The number released, or -1.
 */
int		 credits_release_stale(struct db *)
		    __attribute__((warn_unused_result));
/* Lets a reservation go, charging nothing.  0, or -1. */
int		 credits_release(struct db *, const char *id)
		    __attribute__((warn_unused_result));

/* What one completed call used, for its usage row. */
struct credits_usage {
	const char	*tenant;
	const char	*key_id;	/* NULL for a token */
	const char	*request_id;
	const char	*provider;
	const char	*model;
	bool		 pool;
	double		 markup;
	long		 prompt_tokens;
	long		 completion_tokens;
	const char	*status;	/* "ok", "partial" */
};

/*
 * Turns reservation id into the real cost and writes exactly one usage
 * row, in one transaction.  *charged gets what was taken (never more than
 * the balance held).  0, or -1.
 */
int		 credits_settle(struct db *, const char *id, long long cost,
		    const struct credits_usage *, long long *charged)
		    __attribute__((warn_unused_result));

/* One call's hold, in a batch of them. */
struct credits_hold_req {
	const char	*tenant;
	const char	*key_id;	/* NULL for a token */
	const char	*request_id;
	long long	 amount;
	int		 ttl;
	char		 id[40];	/* the hold's id, chosen by the caller */
	bool		 held;		/* it was held */
};

/*
 * Holds for n calls in one statement, each under the id it names, owned
 * by this process as credits_reserve() does.  A tenant's calls are held in
 * the order given for as long as its free balance holds all of them so
 * far; held says which were (the others are for credits_reserve()).  When
 * the statement failed, asks which holds exist, for a statement that
 * committed before its connection was lost.  0, or -1 when not even that
 * could be known (db_status() says why).
 */
int		 credits_reserve_many(struct db *, struct credits_hold_req *,
		    int n) __attribute__((warn_unused_result));

/* One call's settlement, in a batch of them. */
struct credits_settle_req {
	const char	*id;		/* the reservation */
	long long	 cost;
	const struct credits_usage *u;
	long long	 charged;	/* what was taken, once settled */
	bool		 settled;
};

/*
 * Settles n reservations in one statement, each as credits_settle() does,
 * but only those of tenants whose balance pays all of their costs, and
 * whose holds still exist; settled says which (the others are for
 * credits_settle()).  Sent again while PostgreSQL is out of reach, as
 * credits_settle() is, after asking which were settled.  0, or -1: the
 * statement failed (DB_UNAVAILABLE: for good; those not settled stay
 * held; otherwise it changed nothing).
 */
int		 credits_settle_many(struct db *, struct credits_settle_req *,
		    int n) __attribute__((warn_unused_result));

/*
 * Leases (see core/lease.h).  A new lease of this host for tenant: up to
 * want of its free balance, at least need, owned by process owner (the
 * master) until ttl seconds from now.  On CREDITS_OK id names it and *got
 * says how much it holds; on CREDITS_SHORT *available is the free balance.
 */
enum credits_result credits_lease_new(struct db *, const char *tenant,
		    long long need, long long want, pid_t owner, int ttl,
		    char id[40], long long *got, long long *available)
		    __attribute__((warn_unused_result));
/*
 * Grows lease by up to want, at least need (0 only renews it), and moves
 * its deadline to ttl seconds from now.  *gone when the lease no longer
 * exists (then CREDITS_SHORT).
 */
enum credits_result credits_lease_grow(struct db *, const char *lease,
		    const char *tenant, long long need, long long want,
		    int ttl, long long *got, bool *gone, long long *available)
		    __attribute__((warn_unused_result));
/*
 * Writes n records of calls ended on leases: usage rows and each lease's
 * charge, in one statement.  Safe to send again.  0, or -1.
 */
int		 credits_lease_write(struct db *, const struct lease_record *,
		    int n) __attribute__((warn_unused_result));
/*
 * Moves the deadline of n leases to ttl seconds from now; renewed() is
 * told each that still exists.  0, or -1.
 */
int		 credits_lease_renew(struct db *,
		    char (*ids)[LEASE_ID_LEN + 1], int n, int ttl,
		    void (*renewed)(void *, const char *), void *arg)
		    __attribute__((warn_unused_result));

#endif
