#include "autoconfig.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/crypto.h"
#include "lib/harden.h"
#include "lib/upstream.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

/*
 * Signals in a worker: SIGTERM stays blocked in every thread and is read
 * from a signalfd in the accept loop, so it is seen even when the listen
 * socket never stops being readable, and never interrupts a request
 * half-way; SIGINT and SIGHUP belong to the master (a terminal's Ctrl-C
 * reaches the whole process group); a client that disconnects must not
 * kill us with SIGPIPE.  Returns the signalfd, or -1 (logged).
 */
static int
signals_init(void)
{
	struct sigaction sa;
	sigset_t	 block;
	int		 fd;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_SETMASK, &block, NULL);
	if ((fd = signalfd(-1, &block, SFD_NONBLOCK | SFD_CLOEXEC)) == -1)
		log_error("signalfd: watching for SIGTERM: %s",
		    strerror(errno));
	return fd;
}

/* Switches to cfg->user when started as root.  0, or -1 (logged). */
static int
drop_privileges(const struct config *cfg)
{
	struct passwd	*pw;

	if (cfg->user[0] == '\0')
		return 0;
	if ((pw = getpwnam(cfg->user)) == NULL) {
		log_error("getpwnam: looking up user \"%s\": no such user",
		    cfg->user);
		return -1;
	}
	if (geteuid() != 0) {
		if (geteuid() == pw->pw_uid)
			return 0;
		log_error("setuid: switching to user \"%s\": keygated was "
		    "not started as root", cfg->user);
		return -1;
	}
	if (setgid(pw->pw_gid) == -1 ||
	    initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		log_error("setuid: switching to user \"%s\": %s", cfg->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) != -1) {
		log_error("setuid: switching to user \"%s\": root could be "
		    "regained", cfg->user);
		return -1;
	}
	return 0;
}

static bool
request_id_sane(const char *s)
{
	size_t	 n = 0;

	if (s == NULL)
		return false;
	for (; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= REQUEST_ID_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    c == '.'))
			return false;
	}
	return n > 0;
}

/* Fills in what every request needs before the app sees it. */
static int
request_init(struct worker *w, struct request *req)
{
	const char	*uri, *q, *rid;
	unsigned char	 rnd[12];
	size_t		 n;

	req->w = w;
	req->started = clock_mono();
	req->method = request_param(req, "REQUEST_METHOD");
	if (req->method == NULL)
		req->method = "GET";
	req->remote_addr = request_param(req, "REMOTE_ADDR");
	if (req->remote_addr == NULL)
		req->remote_addr = "";

	rid = request_param(req, "HTTP_X_REQUEST_ID");
	if (request_id_sane(rid))
		snprintf(req->request_id, sizeof(req->request_id), "%s", rid);
	else {
		crypto_nonce(rnd, sizeof(rnd));
		memcpy(req->request_id, "req_", 4);
		crypto_hex(rnd, sizeof(rnd), req->request_id + 4);
	}

	if ((uri = request_param(req, "REQUEST_URI")) == NULL)
		uri = request_param(req, "SCRIPT_NAME");
	if (uri == NULL || *uri == '\0')
		uri = "/";
	q = strchr(uri, '?');
	n = q != NULL ? (size_t)(q - uri) : strlen(uri);
	req->query = q != NULL ? q + 1 : "";
	if ((req->path = strndup(uri, n)) == NULL)
		return -1;
	return 0;
}

static void
serve(struct worker *w, struct request *req)
{
	struct log_request lr;

	if (request_init(w, req) == -1)
		http_error(req, ERR_INTERNAL, "out of memory");
	else
		w->app->handle(w, req);
	if (req->status == 0)
		http_error(req, ERR_INTERNAL, "The request was not answered.");

	lr.request_id = req->request_id;
	lr.method = req->method;
	lr.path = req->path != NULL ? req->path : "";
	lr.status = req->status;
	lr.latency_ms = (clock_mono() - req->started) * 1000.0;
	lr.key_id = req->key_id;
	log_access(&lr);
}

/*
 * A request in flight: its FastCGI connection and what it owns.  Kept on
 * a free list with their buffers once answered.
 */
struct job {
	struct job	*next;
	struct request_io *io;
	struct request	 req;
};

/*
 * The threads of a worker.  The process's first thread waits for
 * connections, signals and timers, and accepts; each accepted request goes
 * to a thread of its own (an idle one, or one made for it), which keeps it
 * to the end.  The app's code runs under w->lock, one thread at a time, as
 * in a worker of one thread: only waits let go of it (reading the body,
 * writing to the client, waiting on a provider), so that thousands of
 * calls can wait at once while the caches, the database connection and
 * the app's state need no locks of their own.
 */
struct pool {
	pthread_mutex_t	 mu;		/* guards what follows */
	pthread_cond_t	 work;		/* a job was queued, or stopping */
	struct job	*queue, *tail;	/* accepted, waiting for a thread */
	int		 queued;
	struct job	*free;
	int		 threads;	/* alive */
	int		 idle;		/* waiting for a job */
	int		 inflight;	/* accepted, not yet finished */
	unsigned long	 served;
	bool		 stopping;	/* idle threads exit */
	double		 after_due;	/* monotonic s, 0 = not wanted */
	int		 wake_fd;	/* eventfd: a request finished */
	atomic_bool	 wake_on_release; /* the accept loop waits for the lock */
	atomic_llong	 held_since;	/* ns the lock is held from, 0 = free */
};

static struct pool pool = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.wake_fd = -1,
};

/*
 * Threads kept waiting for work when idle, and how long one more than that
 * waits before it ends; the stack every request thread gets (the address
 * space is reserved, only pages touched cost memory; sanitizers need more).
 */
#define POOL_SPARE	8
#define POOL_IDLE_S	10
#if defined(__SANITIZE_ADDRESS__)
#define POOL_STACK	(4u << 20)
#else
#define POOL_STACK	(256u << 10)
#endif

static void wake_main(void);

static long long
now_ns(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void
worker_release(struct worker *w)
{
	atomic_store_explicit(&pool.held_since, 0, memory_order_relaxed);
	pthread_mutex_unlock(&w->lock);
	if (atomic_load_explicit(&pool.wake_on_release, memory_order_relaxed) &&
	    atomic_exchange(&pool.wake_on_release, false))
		wake_main();
}

void
worker_acquire(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	atomic_store_explicit(&pool.held_since, now_ns(),
	    memory_order_relaxed);
}

/* lib/upstream's hook: a provider call waits without the lock. */
static void
waiting(void *arg, bool begin)
{
	if (begin)
		worker_release(arg);
	else
		worker_acquire(arg);
}

static void
wake_main(void)
{
	uint64_t one = 1;

	if (write(pool.wake_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("write: waking the accept loop: %s", strerror(errno));
}

/* The app's deferred work; with w->lock held. */
static void
run_after(struct worker *w)
{
	int	 ms;

	if (w->app->after == NULL)
		return;
	ms = w->app->after(w);
	pthread_mutex_lock(&pool.mu);
	pool.after_due = ms < 0 ? 0 : clock_mono() + ms / 1000.0;
	pthread_mutex_unlock(&pool.mu);
}

/* The next job for a thread, or NULL when the thread should end. */
static struct job *
next_job(void)
{
	struct timespec	 until;
	struct job	*job;
	int		 rc = 0;

	pthread_mutex_lock(&pool.mu);
	pool.idle++;
	while (pool.queue == NULL && !pool.stopping && rc != ETIMEDOUT) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += POOL_IDLE_S;
		rc = pthread_cond_timedwait(&pool.work, &pool.mu, &until);
		if (rc == ETIMEDOUT && pool.idle <= POOL_SPARE)
			rc = 0;		/* one of the spares: stay */
	}
	pool.idle--;
	if ((job = pool.queue) != NULL) {
		if ((pool.queue = job->next) == NULL)
			pool.tail = NULL;
		pool.queued--;
	} else
		pool.threads--;
	pthread_mutex_unlock(&pool.mu);
	if (job == NULL)
		wake_main();
	return job;
}

static void
job_done(struct job *job)
{
	pthread_mutex_lock(&pool.mu);
	job->next = pool.free;
	pool.free = job;
	pool.inflight--;
	pool.served++;
	pthread_mutex_unlock(&pool.mu);
	wake_main();
}

static void *
thread_main(void *arg)
{
	struct worker	*w = arg;
	struct job	*job;

	while ((job = next_job()) != NULL) {
		request_set_deadlines(&job->req, w->cfg->body_timeout,
		    w->cfg->client_timeout);
		worker_acquire(w);
		serve(w, &job->req);
		worker_release(w);
		/* Flushing and closing may wait on a slow client. */
		request_io_finish(job->io, &job->req);
		request_clear(&job->req);
		worker_acquire(w);
		run_after(w);
		worker_release(w);
		job_done(job);
	}
	return NULL;
}

/* One more thread; 0, or -1 (logged) when none could be made. */
static int
spawn_thread(struct worker *w)
{
	pthread_attr_t	 attr;
	pthread_t	 t;
	int		 rc;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, POOL_STACK);
	rc = pthread_create(&t, &attr, thread_main, w);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		log_error("pthread_create: starting a request thread: %s",
		    strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * A lock held this long means its holder waits (on the database, most
 * likely) rather than computes.
 */
#define POOL_STUCK_NS	5000000LL	/* 5 ms */

/*
 * Whether the worker should take a connection now, as far as its lock
 * goes: not while a request has held the lock for long (it waits on the
 * database, say), so that new connections go to the other workers, who
 * are all woken for each one.  The next release of the lock wakes the
 * accept loop again.
 */
static bool
lock_free(struct worker *w)
{
	long long since;

	(void)w;
	since = atomic_load(&pool.held_since);
	if (since == 0 || now_ns() - since < POOL_STUCK_NS)
		return true;
	atomic_store(&pool.wake_on_release, true);
	since = atomic_load(&pool.held_since);
	if (since == 0 || now_ns() - since < POOL_STUCK_NS) {
		atomic_store(&pool.wake_on_release, false);
		return true;
	}
	return false;
}

/* Whether max_requests is reached by what was taken so far. */
static bool
recycled(const struct worker *w)
{
	bool	 done;

	if (w->cfg->max_requests == 0)
		return false;
	pthread_mutex_lock(&pool.mu);
	done = pool.served + (unsigned long)pool.inflight >=
	    (unsigned long)w->cfg->max_requests;
	pthread_mutex_unlock(&pool.mu);
	return done;
}

/*
 * Accepts the connections waiting, as many as the worker may still take:
 * 0, or -1 on an error that ends the worker (logged).
 */
static int
accept_some(struct worker *w)
{
	struct job	*job;
	int		 i, rc, more;

	for (i = 0; i < 16; i++) {
		if (recycled(w) || !lock_free(w))
			return 0;
		pthread_mutex_lock(&pool.mu);
		if (pool.inflight >= w->cfg->worker_calls) {
			pthread_mutex_unlock(&pool.mu);
			return 0;
		}
		if ((job = pool.free) != NULL)
			pool.free = job->next;
		pthread_mutex_unlock(&pool.mu);
		if (job == NULL && (job = calloc(1, sizeof(*job))) == NULL)
			return 0;
		if (job->io == NULL &&
		    (job->io = request_io_new(w->listen_fd)) == NULL) {
			free(job);
			return 0;
		}
		rc = request_io_accept(job->io, &job->req);
		pthread_mutex_lock(&pool.mu);
		if (rc != 0) {
			job->next = pool.free;
			pool.free = job;
			pthread_mutex_unlock(&pool.mu);
			return rc == 1 ? 0 : -1;
		}
		job->next = NULL;
		if (pool.tail != NULL)
			pool.tail->next = job;
		else
			pool.queue = job;
		pool.tail = job;
		pool.queued++;
		pool.inflight++;
		more = pool.queued > pool.idle;
		if (more)
			pool.threads++;
		pthread_cond_signal(&pool.work);
		pthread_mutex_unlock(&pool.mu);
		if (more && spawn_thread(w) == -1) {
			pthread_mutex_lock(&pool.mu);
			pool.threads--;
			pthread_mutex_unlock(&pool.mu);
		}
	}
	return 0;
}

/* Milliseconds until the app's deferred work is due, -1 = none. */
static int
after_wait(void)
{
	double	 due, left;

	pthread_mutex_lock(&pool.mu);
	due = pool.after_due;
	pthread_mutex_unlock(&pool.mu);
	if (due == 0)
		return -1;
	left = (due - clock_mono()) * 1000.0;
	return left <= 0 ? 0 : (int)left + 1;
}

static int
watch(int epfd, int fd, int op, uint32_t events)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.fd = fd;
	if (epoll_ctl(epfd, op, fd, &ev) == -1) {
		log_error("epoll_ctl: watching descriptor %d: %s", fd,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/* Requests accepted and not yet finished. */
static int
inflight(void)
{
	int	 n;

	pthread_mutex_lock(&pool.mu);
	n = pool.inflight;
	pthread_mutex_unlock(&pool.mu);
	return n;
}

/*
 * The accept loop: connections, SIGTERM, finished requests and the app's
 * timer.  The listen socket is watched only while the worker takes
 * connections: not once stopping (SIGTERM) or recycled (max_requests),
 * nor while it holds worker_calls requests (the other workers take them
 * meanwhile).  Returns the worker's exit code once it takes no more and
 * the last request finished.
 */
static int
accept_loop(struct worker *w, int epfd, int sigfd)
{
	struct epoll_event evs[4];
	struct signalfd_siginfo si;
	uint64_t	 count;
	bool		 listening = false, stopping = false, done, want;
	int		 n, i, ms;

	for (;;) {
		done = stopping || recycled(w);
		want = !done && inflight() < w->cfg->worker_calls &&
		    lock_free(w);
		if (want != listening) {
			if (watch(epfd, w->listen_fd, want ? EPOLL_CTL_ADD :
			    EPOLL_CTL_DEL, EPOLLIN) == -1)
				return WORKER_EXIT_FAILURE;
			listening = want;
		}
		if (done && inflight() == 0) {
			if (!stopping)
				log_info("worker recycled after %lu requests",
				    pool.served);
			return WORKER_EXIT_OK;
		}
		ms = after_wait();
		n = epoll_wait(epfd, evs, 4, ms);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: waiting for connections: %s",
			    strerror(errno));
			return WORKER_EXIT_FAILURE;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.fd == sigfd) {
				while (read(sigfd, &si, sizeof(si)) > 0)
					stopping = true;
			} else if (evs[i].data.fd == pool.wake_fd) {
				if (read(pool.wake_fd, &count,
				    sizeof(count)) == -1 && errno != EAGAIN)
					return WORKER_EXIT_FAILURE;
			} else if (listening && !stopping &&
			    accept_some(w) == -1)
				return WORKER_EXIT_FAILURE;
		}
		if (ms >= 0 && after_wait() == 0) {
			worker_acquire(w);
			run_after(w);
			worker_release(w);
		}
	}
}

/* Tells idle threads to end and waits for every thread to be gone. */
static void
threads_end(void)
{
	struct job	*job;
	int		 left;

	pthread_mutex_lock(&pool.mu);
	pool.stopping = true;
	pthread_cond_broadcast(&pool.work);
	pthread_mutex_unlock(&pool.mu);
	for (;;) {
		pthread_mutex_lock(&pool.mu);
		left = pool.threads;
		pthread_mutex_unlock(&pool.mu);
		if (left == 0)
			break;
		usleep(1000);
	}
	while ((job = pool.free) != NULL) {
		pool.free = job->next;
		buf_free(&job->req.body);
		buf_free(&job->req.headers);
		request_io_free(job->io);
		free(job);
	}
}

/*
 * The open-file limit a worker needs: two descriptors per call in flight
 * (the web server's connection and the provider's) and some to spare.
 */
static void
raise_nofile(const struct config *cfg)
{
	struct rlimit	 rl;
	rlim_t		 want = (rlim_t)cfg->worker_calls * 2 + 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ?
	    want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur < want)
		log_warn("setrlimit: the open-file limit (%llu) is below what "
		    "worker_calls = %d needs (%llu); raise LimitNOFILE",
		    (unsigned long long)rl.rlim_cur, cfg->worker_calls,
		    (unsigned long long)want);
}

/* Everything the worker needs before its first accept; 0, or exit code. */
static int
worker_setup(struct worker *w, int *epfd, int *sigfd)
{
	char	 err[160] = "";

	if ((*sigfd = signals_init()) == -1)
		return WORKER_EXIT_FAILURE;
	/*
	 * The start order: secrets locked (fork() does not keep the
	 * master's locks; as root the lock limit does not apply yet), the
	 * open-file limit (root may raise it), then privileges (a new user
	 * makes the process dumpable again), then the RNG, then the app.
	 */
	if (config_lock_secrets(w->cfg) == -1)
		log_warn("mlock: locking secrets in memory: %s; they may "
		    "reach swap", strerror(errno));
	raise_nofile(w->cfg);
	if (drop_privileges(w->cfg) == -1 ||
	    harden_process(err, sizeof(err)) == -1) {
		if (err[0] != '\0')
			log_error("%s", err);
		return WORKER_EXIT_FATAL;
	}
	crypto_after_fork();
	/*
	 * The app's code runs one thread at a time: one malloc arena is
	 * enough, and spares the memory of one per thread.
	 */
	mallopt(M_ARENA_MAX, 1);
	if (w->app->start != NULL && w->app->start(w) == -1)
		return WORKER_EXIT_FATAL;
	upstream_set_waiting(waiting, w);
	if ((pool.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (*epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		log_error("epoll_create1: waiting for connections: %s",
		    strerror(errno));
		return WORKER_EXIT_FAILURE;
	}
	if (watch(*epfd, *sigfd, EPOLL_CTL_ADD, EPOLLIN) == -1 ||
	    watch(*epfd, pool.wake_fd, EPOLL_CTL_ADD, EPOLLIN) == -1)
		return WORKER_EXIT_FAILURE;
	return 0;
}

static void
pool_init(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool.work, &attr);
	pthread_condattr_destroy(&attr);
}

void
worker_main(const struct config *cfg, const struct worker_app *app,
    int listen_fd, int slot, void *shared)
{
	struct worker	 w;
	int		 epfd = -1, sigfd = -1, code;

	memset(&w, 0, sizeof(w));
	w.cfg = cfg;
	w.app = app;
	w.listen_fd = listen_fd;
	w.slot = slot;
	w.shared = shared;
	pthread_mutex_init(&w.lock, NULL);
	pool_init();

	if ((code = worker_setup(&w, &epfd, &sigfd)) == 0) {
		/* The app's deferred work gets a first turn first. */
		if (app->after != NULL)
			pool.after_due = clock_mono();
		code = accept_loop(&w, epfd, sigfd);
	}
	threads_end();
	w.served = pool.served;
	if (app->stop != NULL)
		app->stop(&w);
	if (epfd != -1)
		close(epfd);
	exit(code);
}
