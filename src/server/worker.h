#ifndef KEYGATE_SERVER_WORKER_H
#define KEYGATE_SERVER_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct config;
struct request;
struct worker;

/*
 * What a worker runs: keygate's API, or the bare responder the benchmark
 * measures the ceiling with.  start() runs once after fork, before the
 * first accept; returning -1 there makes the worker exit with status 2
 * (fatal: the master does not respawn it).  handle() answers one request;
 * after() (may be NULL) runs once the response is on its way.
 */
struct worker_app {
	const char	*name;
	int		(*start)(struct worker *);
	void		(*handle)(struct worker *, struct request *);
	/*
	 * After the response went out, and again when idle: deferred work,
	 * off the client's path.  Returns the ms until it wants to run again
	 * though no request comes, or -1 for not at all.
	 */
	int		(*after)(struct worker *);
	void		(*stop)(struct worker *);
	/*
	 * True while the app holds what another request must not touch
	 * (an open transaction on the worker's database connection): a
	 * request then keeps the worker's lock while it waits on its
	 * client.  May be NULL.
	 */
	bool		(*pinned)(struct worker *);
	/*
	 * Memory every worker of this keygated shares (NULL: none): as many
	 * bytes as shared_size() says, mapped by the master before the
	 * first fork, zeroed, handed to shared_init() once (0, or -1), and
	 * kept across respawns and reloads.
	 */
	size_t		(*shared_size)(void);
	int		(*shared_init)(void *, const struct config *);
	/*
	 * In the master, when a worker exited and will be replaced (may be
	 * NULL): crashed, or recycled after max_requests.
	 */
	void		(*worker_exited)(void *shared, pid_t pid, bool crashed);
};

/*
 * Everything a worker process owns.  One per process; passed explicitly.
 * Requests run on threads of their own, and the app's code (handle(),
 * after(), stop()) always runs with lock held: what the worker and the
 * app own needs no other lock.
 */
struct worker {
	pthread_mutex_t		 lock;
	pthread_cond_t		 parked;	/* see worker_park() */
	atomic_int		 active;	/* threads holding lock or
						   waiting for it, but for
						   the parked ones */
	int			 nparked;	/* with lock held */
	const struct config	*cfg;		/* borrowed from the master */
	const struct worker_app	*app;
	int			 listen_fd;	/* shared, non-blocking */
	int			 slot;		/* index in the master's table */
	unsigned long		 served;	/* requests answered */
	void			*shared;	/* the app's shared memory */
	void			*app_data;	/* owned by the app */
};

/*
 * Around a wait (a provider, a slow client), the request's thread lets go
 * of w->lock so that other requests run meanwhile, and takes it back
 * before touching anything the worker or the app owns again.
 */
void	worker_release(struct worker *);
void	worker_acquire(struct worker *);
/*
 * For work that goes faster done for many requests at once (their
 * credits, in one statement): with w->lock held, worker_quiet() says that
 * no other thread of the worker holds or waits for the lock; otherwise
 * worker_park() lets go of it and waits until they all have let go (or
 * parked), until worker_unpark(), or until the monotonic time until
 * (s; 0 = none), and takes it back.  Other
 * connections are accepted meanwhile.
 */
bool	worker_quiet(struct worker *);
void	worker_park(struct worker *, double until);
void	worker_unpark(struct worker *);

/* Worker exit codes the master tells apart. */
#define WORKER_EXIT_OK		0	/* stopped or recycled: respawn */
#define WORKER_EXIT_FAILURE	1	/* crashed: respawn with back-off */
#define WORKER_EXIT_FATAL	2	/* configuration: stop everything */

/*
 * The body of a worker process: drops privileges, starts the app, then
 * accepts and answers requests until told to stop or max_requests is
 * reached.  Never returns; exits with one of the codes above.
 */
void	worker_main(const struct config *, const struct worker_app *,
	    int listen_fd, int slot, void *shared) __attribute__((noreturn));

#endif
