#ifndef KEYGATE_API_LEASES_H
#define KEYGATE_API_LEASES_H

#include <stdbool.h>

#include "core/hold.h"
#include "core/lease.h"

struct worker;

/*
 * A worker's side of credits leased per host (core/lease.h, core/hold.h):
 * what a call's hold needs of the worker, and, in the worker of slot 0,
 * the host's writer thread.
 */

/* The worker's database, the host's leases (when on) and its lock. */
void	leases_holder(struct worker *, struct holder *);

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
