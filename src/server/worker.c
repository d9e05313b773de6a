#include "autoconfig.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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
		/* In time order: usage rows are found by it (an index). */
		crypto_time_id(rnd, sizeof(rnd));
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
 * A request thread and its stack, which is ours: glibc would keep the
 * stacks of ended threads in a cache of its own, each with pages still
 * resident, long after a burst.  The first thread joins an ended one and
 * unmaps its stack.
 */
struct pool_thread {
	struct pool_thread *next;
	struct worker	*w;
	pthread_t	 t;
	void		*stack;		/* mmap()ed, guard page included */
	size_t		 size;
};

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
 * The threads of a worker, leader and followers.  One thread at a time,
 * the leader, waits for a connection; the one that accepts it serves the
 * request itself, as a worker of one thread would.  While it computes or
 * waits on the database, nobody in this worker accepts, and new
 * connections go to the other workers.  As soon as it waits on anything
 * else (a provider, a slow client, a body still arriving) it lets go of
 * w->lock, and another thread becomes the leader: an idle one, or one
 * made for it.  A provider call waits in the worker's provider loop
 * (lib/upstream.c), its thread asleep until the call has ended.  The
 * app's code runs under w->lock, one thread at a time, so that the
 * caches, the database connection and the app's state need no locks of
 * their own; a request that never waits never changes thread.
 * The process's first thread handles signals and the app's timer.
 */
struct pool {
	pthread_mutex_t	 mu;		/* guards what follows */
	pthread_cond_t	 follow;	/* followers wait here */
	bool		 leader;	/* a thread waits for connections */
	bool		 promoting;	/* one was asked to lead */
	int		 threads;	/* alive */
	int		 idle;		/* followers waiting */
	int		 inflight;	/* accepted, not yet finished */
	unsigned long	 served;
	bool		 stopping;	/* SIGTERM: accept nothing more */
	double		 after_due;	/* monotonic s, 0 = not wanted */
	struct job	*free;
	int		 nfree;		/* on that list */
	bool		 trim;		/* jobs were freed: give the heap back */
	struct pool_thread *ended;	/* to be joined, their stacks unmapped */
	atomic_bool	 leading;	/* mirrors leader, read without mu */
	int		 wake_fd;	/* eventfd: the first thread's loop */
	int		 stop_fd;	/* eventfd: the leader stops waiting */
	int		 epfd;		/* the leader's: listen socket, stop_fd */
};

static struct pool pool = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.wake_fd = -1,
	.stop_fd = -1,
	.epfd = -1,
};

/*
 * Followers kept when idle, and how long one more than that waits before
 * it ends; the stack every thread gets (the address space is reserved,
 * only pages touched cost memory; sanitizers need far more).
 */
#define POOL_SPARE	8
#define POOL_IDLE_S	10
#if defined(__SANITIZE_ADDRESS__)
#define POOL_STACK	(4u << 20)
#else
#define POOL_STACK	(256u << 10)
#endif

static void	*thread_main(void *);

static void
wake(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("write: waking a thread: %s", strerror(errno));
}

/* One more thread; with pool.mu held.  0, or -1 (logged). */
static int
spawn_thread(struct worker *w)
{
	struct pool_thread *pt;
	pthread_attr_t	 attr;
	size_t		 guard = (size_t)sysconf(_SC_PAGESIZE);
	int		 rc;

	if ((pt = calloc(1, sizeof(*pt))) == NULL) {
		log_error("calloc: a request thread: out of memory");
		return -1;
	}
	pt->w = w;
	pt->size = guard + POOL_STACK;
	pt->stack = mmap(NULL, pt->size, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (pt->stack == MAP_FAILED) {
		log_error("mmap: a request thread's stack: %s",
		    strerror(errno));
		free(pt);
		return -1;
	}
	/* Stacks grow down: an overflow faults on the lowest page. */
	(void)mprotect(pt->stack, guard, PROT_NONE);
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, (char *)pt->stack + guard, POOL_STACK);
	rc = pthread_create(&pt->t, &attr, thread_main, pt);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		log_error("pthread_create: starting a request thread: %s",
		    strerror(rc));
		munmap(pt->stack, pt->size);
		free(pt);
		return -1;
	}
	pool.threads++;
	return 0;
}

/* Joins the threads that ended and frees their stacks. */
static void
reap_threads(void)
{
	struct pool_thread *pt, *next;

	pthread_mutex_lock(&pool.mu);
	pt = pool.ended;
	pool.ended = NULL;
	pthread_mutex_unlock(&pool.mu);
	for (; pt != NULL; pt = next) {
		next = pt->next;
		(void)pthread_join(pt->t, NULL);
		munmap(pt->stack, pt->size);
		free(pt);
	}
}

/* Sees that some thread leads: wakes a follower, or makes one. */
static void
promote(struct worker *w)
{
	pthread_mutex_lock(&pool.mu);
	if (!pool.leader && !pool.promoting && !pool.stopping) {
		pool.promoting = true;
		if (pool.idle > 0)
			pthread_cond_signal(&pool.follow);
		else if (spawn_thread(w) == -1)
			pool.promoting = false;
	}
	pthread_mutex_unlock(&pool.mu);
}

/* Lets go of w->lock; the last thread with work wakes a parked one. */
static void
letgo(struct worker *w)
{
	if (atomic_fetch_sub(&w->active, 1) == 1 && w->nparked > 0)
		pthread_cond_signal(&w->parked);
	pthread_mutex_unlock(&w->lock);
}

void
worker_release(struct worker *w)
{
	letgo(w);
	if (!atomic_load_explicit(&pool.leading, memory_order_relaxed))
		promote(w);
}

void
worker_acquire(struct worker *w)
{
	atomic_fetch_add(&w->active, 1);
	pthread_mutex_lock(&w->lock);
}

bool
worker_quiet(struct worker *w)
{
	return atomic_load(&w->active) <= 1;
}

/*
 * Others decrement w->active only with w->lock held, so a worker found
 * busy stays so until this thread waits: the last of them to let go
 * signals it.  The timeout (1 s) only bounds a wait nothing should
 * prolong.
 */
void
worker_park(struct worker *w, double until)
{
	struct timespec	 t;
	double		 limit = clock_mono() + 1.0;

	w->nparked++;
	atomic_fetch_sub(&w->active, 1);
	if (!atomic_load_explicit(&pool.leading, memory_order_relaxed))
		promote(w);
	if (until <= 0 || until > limit)
		until = limit;
	t.tv_sec = (time_t)until;
	t.tv_nsec = (long)((until - (double)t.tv_sec) * 1e9);
	(void)pthread_cond_timedwait(&w->parked, &w->lock, &t);
	atomic_fetch_add(&w->active, 1);
	w->nparked--;
}

void
worker_unpark(struct worker *w)
{
	if (w->nparked > 0)
		pthread_cond_broadcast(&w->parked);
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

/* The app's deferred work; with w->lock held. */
static void
run_after(struct worker *w)
{
	double	 due;
	bool	 sooner;
	int	 ms;

	if (w->app->after == NULL)
		return;
	ms = w->app->after(w);
	due = ms < 0 ? 0 : clock_mono() + ms / 1000.0;
	pthread_mutex_lock(&pool.mu);
	/* The first thread sleeps until the old time: wake it if sooner. */
	sooner = due != 0 && (pool.after_due == 0 || due < pool.after_due);
	pool.after_due = due;
	pthread_mutex_unlock(&pool.mu);
	if (sooner)
		wake(pool.wake_fd);
}

/* With pool.mu held: max_requests is reached by what was taken. */
static bool
recycled(const struct worker *w)
{
	return w->cfg->max_requests > 0 &&
	    pool.served + (unsigned long)pool.inflight >=
	    (unsigned long)w->cfg->max_requests;
}

/*
 * Waits until this thread may lead: no other leads, and the worker may
 * take a request.  With pool.mu held; false when the thread should end.
 */
static bool
await_lead(struct worker *w)
{
	struct timespec	 until;
	int		 rc;

	for (;;) {
		if (pool.stopping || recycled(w))
			return false;
		if (!pool.leader && pool.inflight < w->cfg->worker_calls)
			return true;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += POOL_IDLE_S;
		pool.idle++;
		rc = pthread_cond_timedwait(&pool.follow, &pool.mu, &until);
		pool.idle--;
		/* More idle threads than needed, and none asked to lead. */
		if (rc == ETIMEDOUT && pool.idle >= POOL_SPARE &&
		    !pool.promoting)
			return false;
	}
}

/* A job to accept into: a kept one, or a new one; NULL = none. */
static struct job *
job_get(struct worker *w)
{
	struct job	*job;

	pthread_mutex_lock(&pool.mu);
	if ((job = pool.free) != NULL) {
		pool.free = job->next;
		pool.nfree--;
	}
	pthread_mutex_unlock(&pool.mu);
	if (job == NULL && (job = calloc(1, sizeof(*job))) == NULL)
		return NULL;
	if (job->io == NULL &&
	    (job->io = request_io_new(w->listen_fd)) == NULL) {
		free(job);
		return NULL;
	}
	return job;
}

static void
job_free(struct job *job)
{
	buf_free(&job->req.body);
	buf_free(&job->req.headers);
	request_io_free(job->io);
	free(job);
}

/*
 * Keeps a finished job, with its buffers, for a next request: as many as
 * there are threads and a few more.  The rest, left by a burst, are freed.
 * With pool.mu held.
 */
static void
job_keep(struct job *job)
{
	if (pool.nfree >= pool.threads + POOL_SPARE) {
		job_free(job);
		return;
	}
	job->next = pool.free;
	pool.free = job;
	pool.nfree++;
}

static void
job_put(struct job *job)
{
	pthread_mutex_lock(&pool.mu);
	job_keep(job);
	pthread_mutex_unlock(&pool.mu);
}

/*
 * As the leader: waits for a connection and accepts it.  The job, or NULL
 * when the leader should stop waiting (stopping, or an error).
 */
static struct job *
lead(struct worker *w)
{
	struct epoll_event ev;
	struct job	*job;
	int		 n, rc;

	for (;;) {
		n = epoll_wait(pool.epfd, &ev, 1, -1);
		if (n == -1 && errno != EINTR) {
			log_error("epoll_wait: waiting for connections: %s",
			    strerror(errno));
			return NULL;
		}
		if (n <= 0)
			continue;
		if (ev.data.fd == pool.stop_fd)
			return NULL;
		if ((job = job_get(w)) == NULL) {
			usleep(10000);	/* out of memory: let others go on */
			continue;
		}
		rc = request_io_accept(job->io, &job->req);
		if (rc == 0)
			return job;
		job_put(job);
		if (rc == -1)
			usleep(10000);	/* logged; do not spin on it */
		/* Or another worker took it. */
	}
}

/*
 * Whether another connection waits already.  The kernel wakes the leader
 * of one worker per new connection (EPOLLEXCLUSIVE); a connection that
 * came while this leader was leaving its wait may have been counted as
 * its own, and no other leader was woken for it: this worker takes it.
 */
static bool
more_waiting(const struct worker *w)
{
	struct pollfd	 pfd;

	pfd.fd = w->listen_fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) == 1;
}

/* Serves a request accepted by this thread, to the end. */
static void
serve_job(struct worker *w, struct job *job)
{
	request_set_deadlines(&job->req, w->cfg->body_timeout,
	    w->cfg->client_timeout);
	worker_acquire(w);
	serve(w, &job->req);
	run_after(w);
	/*
	 * No other leader is woken: this thread leads next, once the
	 * answer is flushed (at most a socket buffer's worth, mostly).
	 */
	letgo(w);
	request_io_finish(job->io, &job->req);
	request_clear(&job->req);
}

static void *
thread_main(void *arg)
{
	struct pool_thread *pt = arg;
	struct worker	*w = pt->w;
	struct job	*job;

	pthread_mutex_lock(&pool.mu);
	while (await_lead(w)) {
		pool.leader = true;
		pool.promoting = false;
		atomic_store(&pool.leading, true);
		pthread_mutex_unlock(&pool.mu);
		job = lead(w);
		pthread_mutex_lock(&pool.mu);
		pool.leader = false;
		atomic_store(&pool.leading, false);
		if (job == NULL)
			break;
		pool.inflight++;
		/* Recycled: the idle followers end now, not when they time out. */
		if (recycled(w))
			pthread_cond_broadcast(&pool.follow);
		pthread_mutex_unlock(&pool.mu);
		if (more_waiting(w))
			promote(w);

		serve_job(w, job);

		pthread_mutex_lock(&pool.mu);
		job_keep(job);
		pool.inflight--;
		pool.served++;
	}
	pool.threads--;
	/* The jobs a burst left go with the threads it made. */
	while (pool.nfree > pool.threads + POOL_SPARE) {
		job = pool.free;
		pool.free = job->next;
		pool.nfree--;
		job_free(job);
		pool.trim = true;
	}
	pt->next = pool.ended;
	pool.ended = pt;
	pthread_mutex_unlock(&pool.mu);
	wake(pool.wake_fd);
	return NULL;
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
watch(int epfd, int fd, uint32_t events)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.fd = fd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		log_error("epoll_ctl: watching descriptor %d: %s", fd,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/* Stops the leader and every follower; running requests go on. */
static void
stop_taking(void)
{
	pthread_mutex_lock(&pool.mu);
	pool.stopping = true;
	pthread_cond_broadcast(&pool.follow);
	pthread_mutex_unlock(&pool.mu);
	wake(pool.stop_fd);
}

/*
 * The first thread's loop: SIGTERM and the app's timer, until every
 * thread has ended (stopped, or recycled after max_requests, once the
 * requests they held were answered).  Returns the exit code.
 */
static int
first_loop(struct worker *w, int epfd, int sigfd)
{
	struct epoll_event evs[2];
	struct signalfd_siginfo si;
	uint64_t	 count;
	int		 n, i, ms, left, code = WORKER_EXIT_OK;
	bool		 trim;

	for (;;) {
		pthread_mutex_lock(&pool.mu);
		left = pool.threads;
		trim = pool.trim && pool.idle <= POOL_SPARE;
		if (trim)
			pool.trim = false;
		pthread_mutex_unlock(&pool.mu);
		reap_threads();
		if (left == 0)
			break;
		/*
		 * The threads of a burst have ended, and their jobs with them:
		 * the heap they used goes back to the system.
		 */
		if (trim)
			(void)malloc_trim(0);
		ms = after_wait();
		n = epoll_wait(epfd, evs, 2, ms);
		if (n == -1 && errno != EINTR) {
			log_error("epoll_wait: waiting for signals: %s",
			    strerror(errno));
			stop_taking();
			code = WORKER_EXIT_FAILURE;
			usleep(10000);
			continue;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.fd == sigfd) {
				while (read(sigfd, &si, sizeof(si)) > 0)
					stop_taking();
			} else
				(void)read(pool.wake_fd, &count, sizeof(count));
		}
		if (ms >= 0 && after_wait() == 0) {
			worker_acquire(w);
			run_after(w);
			letgo(w);
		}
	}
	if (!pool.stopping)
		log_info("worker recycled after %lu requests", pool.served);
	return code;
}

static void
pool_free(void)
{
	struct job	*job;

	while ((job = pool.free) != NULL) {
		pool.free = job->next;
		job_free(job);
	}
	pool.nfree = 0;
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
	pthread_condattr_t attr;
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
	/*
	 * The app's code runs one thread at a time (but for the pieces of
	 * streams, in the provider loop, which allocate little): one malloc
	 * arena is enough, and spares the memory of one per thread.
	 */
	mallopt(M_ARENA_MAX, 1);
	if (w->app->start != NULL && w->app->start(w) == -1)
		return WORKER_EXIT_FATAL;
	upstream_set_waiting(waiting, w);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool.follow, &attr);
	pthread_cond_init(&w->parked, &attr);
	pthread_condattr_destroy(&attr);
	if ((pool.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (pool.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (*epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (pool.epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		log_error("epoll_create1: waiting for connections: %s",
		    strerror(errno));
		return WORKER_EXIT_FAILURE;
	}
	/*
	 * EPOLLEXCLUSIVE wakes one worker's leader per new connection
	 * instead of every worker's.
	 */
	if (watch(*epfd, *sigfd, EPOLLIN) == -1 ||
	    watch(*epfd, pool.wake_fd, EPOLLIN) == -1 ||
	    watch(pool.epfd, pool.stop_fd, EPOLLIN) == -1 ||
	    watch(pool.epfd, w->listen_fd, EPOLLIN | EPOLLEXCLUSIVE) == -1)
		return WORKER_EXIT_FAILURE;
	return 0;
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

	if ((code = worker_setup(&w, &epfd, &sigfd)) == 0) {
		/* The app's deferred work gets a first turn first. */
		if (app->after != NULL)
			pool.after_due = clock_mono();
		pthread_mutex_lock(&pool.mu);
		if (spawn_thread(&w) == -1)
			code = WORKER_EXIT_FAILURE;
		pthread_mutex_unlock(&pool.mu);
		if (code == 0)
			code = first_loop(&w, epfd, sigfd);
	}
	pool_free();
	w.served = pool.served;
	if (app->stop != NULL)
		app->stop(&w);
	if (epfd != -1)
		close(epfd);
	exit(code);
}
