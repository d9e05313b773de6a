#ifndef KEYGATE_CORE_LEDGER_H
#define KEYGATE_CORE_LEDGER_H

#include <stdbool.h>

struct db;

/*
 * Credits given to a tenant.  Only the root tenant creates (mints)
 * credits; any other tenant moves them from the free part of its own
 * balance to a tenant below it, never to itself.  Which tenants a caller
 * reaches at all is the caller's check.
 */

enum ledger_result {
	LEDGER_OK,
	LEDGER_NOT_BELOW,	/* a tenant other than the root gives itself */
	LEDGER_SHORT,		/* the giver's free balance cannot pay */
	LEDGER_GONE,		/* the receiver was removed meanwhile */
	LEDGER_DB,		/* see db_status() */
	LEDGER_RESULT__MAX
};

/* True when giver mints what it gives: the root tenant. */
bool		 ledger_mints(const char *giver);
/* LEDGER_OK when giver may give to, else LEDGER_NOT_BELOW. */
enum ledger_result ledger_may_give(const char *giver, const char *to);
/*
 * Inside the caller's transaction, gives micro micro-credits to tenant to:
 * minted by the root tenant, taken from any other giver's free balance
 * first.  On LEDGER_OK, *balance is to's balance after.  On LEDGER_SHORT
 * nothing was written, on LEDGER_GONE only the giver's debit: either way
 * the caller rolls back.
 */
enum ledger_result ledger_give(struct db *, const char *giver,
		    const char *to, long long micro, const char *request_id,
		    long long *balance) __attribute__((warn_unused_result));
/*
 * The free part of tenant's balance (balance less what is held) into
 * *available, 0 for no such tenant.  0, or -1 with db_status() set.
 */
int		 ledger_available(struct db *, const char *tenant,
		    long long *available) __attribute__((warn_unused_result));

#endif
