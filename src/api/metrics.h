#ifndef KEYGATE_API_METRICS_H
#define KEYGATE_API_METRICS_H

#include <stdbool.h>
#include <stddef.h>

struct request;
struct worker;

/*
 * The counters behind GET /metrics.  They live in the memory every worker
 * of one keygated shares (mapped by the master before the first fork), so
 * that one answer is the sum over all workers; each event costs a few
 * relaxed atomic adds, no lock and no allocation.  With metrics = false
 * nothing is counted.  The set of metrics is one table in metrics.c.
 */
struct metrics;

/* How a provider call ended. */
enum metrics_outcome {
	OUTCOME_OK,		/* 2xx, or a stream that began */
	OUTCOME_REJECTED,	/* the provider's 4xx */
	OUTCOME_ERROR,		/* 5xx, a refused or broken connection */
	OUTCOME_TIMEOUT,	/* 504: the provider stopped answering */
	OUTCOME_ABANDONED,	/* the client left first */
	OUTCOME__MAX
};

/* The bytes the counters take, and their setup in fresh memory (0 or -1). */
size_t	metrics_shared_size(void);
int	metrics_shared_init(struct metrics *) __attribute__((warn_unused_result));

/* The route of a request that matched no row, and of an authorizer's. */
#define METRICS_ROUTE_NONE	((size_t)-1)
#define METRICS_ROUTE_AUTHORIZER ((size_t)-2)

/* One answered request: its row in api_routes, status, time. */
void	metrics_request(struct worker *, size_t route, int status,
	    double seconds);
/* A provider call begins (calls and streams in flight). */
void	metrics_call_begin(struct worker *, bool stream);
/*
 * A provider call ended: provider index (PROVIDER__MAX = an operator's
 * upstream), outcome, time.
 */
void	metrics_call_end(struct worker *, unsigned provider, bool stream,
	    enum metrics_outcome, double seconds);
/* The outcome of a provider call from the status answered to the client. */
enum metrics_outcome metrics_outcome_of(int status);
/* A credit hold taken (+1) or settled or released (-1). */
void	metrics_holds(struct worker *, int delta);
/* An authorizer decision: allowed or denied. */
void	metrics_authz(struct worker *, bool allowed);
/* A worker exited and is replaced; crashed = not a recycle. */
void	metrics_worker_exit(struct metrics *, bool crashed);
/*
 * Adds what the worker's key cache and database connection counted since
 * the last call (hits, misses, reconnects).
 */
void	metrics_sync(struct worker *);

#endif
