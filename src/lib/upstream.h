#ifndef KEYGATE_LIB_UPSTREAM_H
#define KEYGATE_LIB_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

/*
 * The only door to libcurl: HTTP calls to LLM providers.  Redirects are
 * never followed; every call has connect and total timeouts; bodies are
 * capped.  Header values may hold provider keys: they are never logged.
 */

#define UPSTREAM_MAX_HEADERS 8

/*
 * The calls of a process and the connections kept open between them: a
 * worker owns one, shared by all its threads.  Its calls wait in one
 * event loop, a thread of its own, instead of a thread each; calls to a
 * provider reuse a connection instead of a TCP and TLS handshake each.
 */
struct upstream;

struct upstream_call {
	struct upstream	*via;			/* NULL = a connection of its own */
	const char	*method;		/* "GET", "POST" */
	const char	*url;			/* never holds a secret */
	const char	*headers[UPSTREAM_MAX_HEADERS]; /* "Name: value" */
	const char	*body;			/* NULL = none */
	size_t		 body_len;
	long		 connect_timeout;	/* s */
	long		 total_timeout;		/* s */
	size_t		 max_response;		/* bytes kept of the reply */
	long		 idle_timeout;		/* s without a byte, 0 = none */
	/*
	 * Asked about once a second and after every piece of the reply:
	 * nonzero ends the call at once with UPSTREAM_ABORTED (the client
	 * it was for has gone).  NULL = never.
	 */
	int		(*gone)(void *gone_arg);
	void		*gone_arg;
	/*
	 * In the loop, gone() of many calls at once (optional): gone[i] of
	 * arg[i], for calls with the same gone_many.  The loop then asks
	 * every call due in one go, rather than one by one.
	 */
	void		(*gone_many)(void *const *arg, size_t n, bool *gone);
	/*
	 * A stream's receiver that may keep output it could not send at
	 * once (its fn returned UPSTREAM_BACKLOG): no piece comes until
	 * drain(ctx), called when out_fd can be written and a few times a
	 * second, returns 0 (all sent).  1 = some is left; -1 = the
	 * receiver failed or waited too long: the call ends, aborted.
	 * NULL = fn never keeps anything back.
	 */
	int		(*drain)(void *ctx);
	int		 out_fd;
	bool		 sent;			/* out: the whole request went
						   out (the provider has it) */
	char		 retry_after[32];	/* out: the Retry-After header */
	char		 retry_after_ms[32];	/* out: retry-after-ms */
};

enum upstream_result {
	UPSTREAM_OK,		/* an HTTP answer arrived (any status) */
	UPSTREAM_TIMEOUT,
	UPSTREAM_UNREACHABLE,	/* DNS, connect, TLS, reset */
	UPSTREAM_TOO_LARGE,	/* the reply exceeded max_response */
	UPSTREAM_ABORTED,	/* the receiver gave up, or gone() said so */
	UPSTREAM_RESULT__MAX
};

/*
 * Receives a streamed reply piece by piece: status is the HTTP status (known
 * from the first piece on).  Returns 0 to go on, -1 to abort the call (the
 * connection to the provider is closed at once), or, having taken the
 * piece, UPSTREAM_BACKLOG when it kept some of its output back (see
 * drain), UPSTREAM_FINISHED when it has all it needs (the reply ends
 * within a second even if the provider does not end it: UPSTREAM_OK), or
 * both or'ed.
 */
#define UPSTREAM_BACKLOG	1
#define UPSTREAM_FINISHED	2
typedef int	(*upstream_data_fn)(void *ctx, long status, const char *p,
		    size_t n);

/*
 * The wait an answer's headers ask for, in whole seconds rounded up:
 * retry-after-ms first (as OpenAI's clients read it), then Retry-After in
 * seconds.  -1 when neither gives a number (Retry-After may be an
 * HTTP-date, left in call->retry_after).
 */
long		 upstream_retry_seconds(const struct upstream_call *);

/*
 * fn(arg, true) is called as every call starts waiting on the network,
 * fn(arg, false) before the call's callbacks run and before it returns.
 */
void		 upstream_set_waiting(void (*fn)(void *arg, bool waiting),
		    void *arg);
/* Initialises libcurl once per process, before threads or requests. */
int		 upstream_global_init(void) __attribute__((warn_unused_result));
/*
 * The loop, started, with no connection open yet; NULL when out of memory
 * or out of threads.  After fork(), never before: the loop is a thread.
 */
struct upstream	*upstream_new(void) __attribute__((warn_unused_result));
/*
 * Stops the loop, closes the connections and frees; no call may be in
 * flight.  NULL is accepted.
 */
void		 upstream_free(struct upstream *);
/*
 * Lets go of kept handles (and their connections) beyond keep that have
 * been idle idle seconds: what a burst of calls left.  The number let
 * go; *left says how many beyond keep are still kept.
 */
int		 upstream_trim(struct upstream *, int keep, double idle,
		    int *left);
/*
 * Performs the call; on UPSTREAM_OK *status and body hold the answer.
 * err gets a short reason for the other results (no secrets).  With via
 * set, the call runs in via's loop while the caller's thread sleeps;
 * gone() and body are then touched from the loop's thread.
 */
enum upstream_result upstream_perform(struct upstream_call *,
		    long *status, struct buf *body, char *err, size_t errsz);
/*
 * As upstream_perform(), handing the reply to fn as it arrives instead of
 * collecting it.  UPSTREAM_ABORTED when fn returned -1.  fn runs while the
 * call is waiting, in the loop's thread when via is set (the hook of
 * upstream_set_waiting() is not called around it): it must neither block
 * nor touch what the process must not touch from two threads at once.
 */
enum upstream_result upstream_stream(struct upstream_call *,
		    upstream_data_fn fn, void *ctx, long *status, char *err,
		    size_t errsz);

#endif
