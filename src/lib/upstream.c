#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lib/clock.h"
#include "lib/upstream.h"

/*
 * Set by the process: called with true as a call starts waiting on the
 * network and with false before it touches anything of its caller's again
 * (keygated's workers let other requests run meanwhile).
 */
static void	(*wait_fn)(void *, bool);
static void	*wait_arg;

void
upstream_set_waiting(void (*fn)(void *arg, bool waiting), void *arg)
{
	wait_fn = fn;
	wait_arg = arg;
}

static void
waiting(bool begin)
{
	if (wait_fn != NULL)
		wait_fn(wait_arg, begin);
}

struct sink {
	struct buf	*body;		/* collect here, or */
	upstream_data_fn fn;		/* hand on to fn */
	void		*ctx;
	int		(*gone)(void *);	/* from the call */
	void		*gone_arg;
	void		(*gone_many)(void *const *, size_t, bool *);
	int		(*drain)(void *);	/* from the call */
	int		 out_fd;
	CURL		*h;
	size_t		 max;
	long		 idle;		/* s allowed without a byte, 0 = any */
	double		 last_byte;	/* monotonic s */
	int		 too_large;
	int		 aborted;
	int		 idled;
	int		 left;		/* gone() said so */
	int		 ended;		/* cut after fn had all it needed */
	double		 finished;	/* monotonic s fn said so, 0 = not yet */
	/* In the loop (struct upstream): */
	struct upstream	*loop;		/* NULL = in the caller's thread */
	struct lane	*lane;		/* whose multi handle has it */
	struct sink	*next, *prev;	/* its inbox, then its calls */
	double		 gone_at;	/* monotonic s gone() was last asked */
	bool		 blocked;	/* fn's output waits on out_fd */
	bool		 done;		/* the loop let go of it */
	CURLcode	 rc;
	pthread_cond_t	 cv;		/* the caller waits here for done */
};

/*
 * The idle timeout: curl's low-speed limit averages over seconds, so a
 * stream that goes quiet after a burst would live on; this counts from the
 * last byte instead.  curl calls it at least once a second.
 */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct sink	*s = arg;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (s->idle > 0 && clock_mono() - s->last_byte > (double)s->idle) {
		s->idled = 1;
		return 1;	/* CURLE_ABORTED_BY_CALLBACK */
	}
	if (s->gone != NULL && s->gone(s->gone_arg)) {
		s->left = 1;
		return 1;
	}
	return 0;
}

static int	backlog(struct sink *);

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
	struct sink	*s = arg;
	size_t		 len = size * n;

	long		 status = 0;
	int		 rc;

	if (s->blocked)
		return CURL_WRITEFUNC_PAUSE;	/* given again once unpaused */
	s->last_byte = clock_mono();
	if (s->fn != NULL) {
		/* Still waiting: fn takes what it needs (upstream.h). */
		curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
		rc = s->fn(s->ctx, status, p, len);
		if (rc > 0 && (rc & UPSTREAM_FINISHED) && s->finished == 0)
			s->finished = s->last_byte;
		if (rc > 0)
			rc = rc & UPSTREAM_BACKLOG ? backlog(s) : 0;
		if (rc == -1) {
			s->aborted = 1;
			return 0;	/* curl stops: CURLE_WRITE_ERROR */
		}
		return len;
	}
	if (s->body->len + len > s->max) {
		s->too_large = 1;
		return 0;
	}
	if (buf_append(s->body, p, len) == -1)
		return 0;
	return len;
}

/* Copies the value of header line p (len bytes, name n long) to out. */
static void
header_value(const char *p, size_t len, size_t n, char *out, size_t outsz)
{
	size_t	 v;

	for (v = n; v < len && (p[v] == ' ' || p[v] == '\t'); v++)
		continue;
	snprintf(out, outsz, "%.*s", (int)strcspn(p + v, "\r\n"), p + v);
}

/* Keeps the Retry-After and retry-after-ms headers of the answer. */
static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct upstream_call *c = arg;
	size_t		 len = size * n;

	if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0)
		header_value(p, len, 12, c->retry_after,
		    sizeof(c->retry_after));
	else if (len > 15 && strncasecmp(p, "retry-after-ms:", 15) == 0)
		header_value(p, len, 15, c->retry_after_ms,
		    sizeof(c->retry_after_ms));
	return len;
}

/* A non-negative decimal number ("7", "1500", "2.5"), or -1. */
static double
number(const char *s)
{
	char	*end;
	double	 d;

	if (*s < '0' || *s > '9')
		return -1;
	d = strtod(s, &end);
	return *end == '\0' && d >= 0 && d < 1e9 ? d : -1;
}

long
upstream_retry_seconds(const struct upstream_call *c)
{
	double	 d;

	if ((d = number(c->retry_after_ms)) >= 0)
		return (long)ceil(d / 1000.0);
	if ((d = number(c->retry_after)) >= 0)
		return (long)ceil(d);
	return -1;
}

/*
 * A kept connection idle longer than this is not used again: below the
 * keep-alive of the servers providers run behind (uvicorn, which serves
 * vLLM, closes after 5 s; others after a minute or more), so that a
 * request is rarely written to a connection the server is closing.
 */
#define UPSTREAM_MAXAGE_CONN	4L	/* s */
#define UPSTREAM_BUFFER		1024L	/* bytes read at a time: curl's least */
#define UPSTREAM_UPLOAD_BUFFER	16384L	/* the least curl takes */

/*
 * The request body, handed to curl piece by piece.  Only the first
 * sending is allowed: libcurl sends a request again on a fresh
 * connection when a kept one dies before any answer, even a POST whose
 * body has gone out, which a provider may have acted on (and billed).
 * Refusing the rewind makes that an error instead.
 */
struct upload {
	const char	*data;
	size_t		 len;
	size_t		 off;		/* bytes handed to curl so far */
};

static size_t
on_read(char *p, size_t size, size_t n, void *arg)
{
	struct upload	*u = arg;
	size_t		 len = size * n;

	if (len > u->len - u->off)
		len = u->len - u->off;
	memcpy(p, u->data + u->off, len);
	u->off += len;
	return len;
}

static int
on_seek(void *arg, curl_off_t offset, int origin)
{
	struct upload	*u = arg;

	/* Nothing was read yet: starting over sends nothing twice. */
	if (offset == 0 && origin == SEEK_SET && u->off == 0)
		return CURL_SEEKFUNC_OK;
	return CURL_SEEKFUNC_FAIL;
}

/*
 * The calls of a process wait in one loop, a thread of its own: libcurl's
 * multi interface told by epoll which sockets are ready
 * (curl_multi_socket_action), so that a turn costs what is ready, not
 * every call in flight.  A caller hands its handle to the loop and sleeps
 * until the call ends; the loop reads the reply, runs the receiver of a
 * stream on each piece, and looks at every call a few times a second for
 * what no socket tells (the client gone, the idle timeout, a receiver's
 * backlog).  The loop's connections are kept by its multi handles and
 * used again by later calls; the handles of finished calls are kept too
 * (up to as many as the lanes keep connections), with the
 * DNS answers and TLS sessions they share (so that a new connection
 * resumes a TLS session instead of a full handshake).
 *
 * The calls are spread over several multi handles, lanes: libcurl looks
 * for a connection to use again by walking every connection its multi
 * handle has to that host, in use or not, as a call starts, and, once it
 * keeps more than it may, again as one ends.  With a thousand calls in
 * flight to one provider that walk cost more than the rest of the call.
 * A call goes to the lane with the fewest calls (the first of them on a
 * tie, so that a quiet host uses one lane and its connections), and a
 * lane walks only its own.
 */
#define UPSTREAM_LANES		32	/* at most 32: a bit each in driven */
#define UPSTREAM_LANE_CONNS	64	/* connections a lane keeps */
#define UPSTREAM_KEPT_HANDLES	(UPSTREAM_LANES * UPSTREAM_LANE_CONNS)
#define UPSTREAM_SWEEP		0.25	/* s between looks at every call */
#define UPSTREAM_GONE_EVERY	0.5	/* s between asking gone() of one */
#define UPSTREAM_GRACE		1.0	/* s a finished stream may take to end */
#define UPSTREAM_IDLE_CLOSE	5.0	/* s without a call: connections close */
#define UPSTREAM_EVENTS		256	/* readied sockets taken a turn */
#define TAG_INBOX		UINT64_MAX
#define TAG_OUT			(UINT64_C(1) << 63)	/* | a sink's address */
#define TAG_LANE_SHIFT		32	/* a socket's: lane << 32 | fd */

_Static_assert(UPSTREAM_LANES <= 32, "a lane is a bit of a uint32_t");

struct lane {
	struct upstream	*u;
	CURLM		*multi;
	double		 timer;		/* monotonic s curl wants a turn at,
					   0 = none */
	double		 last_end;	/* monotonic s a call last ended */
	int		 calls;		/* in flight */
	bool		 used;		/* connections may be open */
};

struct upstream {
	pthread_mutex_t	 mu;		/* guards idle[] */
	CURL		*idle[UPSTREAM_KEPT_HANDLES];	/* oldest first */
	double		 since[UPSTREAM_KEPT_HANDLES];	/* given back at,
							   monotonic s */
	int		 nidle;
	CURLSH		*share;		/* NULL = none (out of memory) */
	pthread_mutex_t	 locks[CURL_LOCK_DATA_LAST];
	/* The loop. */
	pthread_t	 thread;
	bool		 running;	/* the thread was started */
	pthread_mutex_t	 in_mu;		/* guards what follows, and done */
	struct sink	*inbox;		/* calls handed over, not yet taken */
	bool		 stop;
	/* The loop's own, touched by its thread only. */
	struct lane	 lanes[UPSTREAM_LANES];
	int		 epfd;
	int		 wake_fd;	/* eventfd: the inbox has calls */
	double		 swept;		/* monotonic s of the last sweep */
	struct sink	*calls;		/* in flight */
	struct sink	**due;		/* the sweep's calls to ask gone_many */
	void		**due_arg;
	bool		*due_gone;
	size_t		 due_cap;
	uint32_t	 driven;	/* lanes curl ran since the last reap */
};

static void
share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct upstream	*u = arg;

	(void)h;
	(void)access;
	pthread_mutex_lock(&u->locks[data]);
}

static void
share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	struct upstream	*u = arg;

	(void)h;
	pthread_mutex_unlock(&u->locks[data]);
}

int
upstream_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static void	*loop_main(void *);
static int	 on_socket(CURL *, curl_socket_t, int, void *, void *);
static int	 on_timer(CURLM *, long, void *);

/* A lane's multi handle, with no connection; NULL = out of memory. */
static CURLM *
multi_new(struct lane *l)
{
	CURLM	*m;

	if ((m = curl_multi_init()) == NULL)
		return NULL;
	curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(m, CURLMOPT_SOCKETDATA, l);
	curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(m, CURLMOPT_TIMERDATA, l);
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)UPSTREAM_LANE_CONNS);
	return m;
}

static void
lanes_free(struct upstream *u)
{
	int	 i;

	for (i = 0; i < UPSTREAM_LANES; i++) {
		if (u->lanes[i].multi != NULL)
			curl_multi_cleanup(u->lanes[i].multi);
		u->lanes[i].multi = NULL;
	}
}

/* The loop's parts and its thread; 0, or -1 (its parts are freed). */
static int
loop_start(struct upstream *u)
{
	struct epoll_event ev;
	int		 i;

	u->epfd = u->wake_fd = -1;
	for (i = 0; i < UPSTREAM_LANES; i++) {
		u->lanes[i].u = u;
		if ((u->lanes[i].multi = multi_new(&u->lanes[i])) == NULL)
			goto fail;
	}
	if ((u->epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (u->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		goto fail;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u64 = TAG_INBOX;
	if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, u->wake_fd, &ev) == -1)
		goto fail;
	if (pthread_create(&u->thread, NULL, loop_main, u) != 0)
		goto fail;
	u->running = true;
	return 0;
fail:
	lanes_free(u);
	if (u->epfd != -1)
		close(u->epfd);
	if (u->wake_fd != -1)
		close(u->wake_fd);
	return -1;
}

static void
wake_loop(struct upstream *u)
{
	uint64_t one = 1;

	(void)!write(u->wake_fd, &one, sizeof(one));
}

struct upstream *
upstream_new(void)
{
	struct upstream	*u;
	int		 i;

	if ((u = calloc(1, sizeof(*u))) == NULL)
		return NULL;
	pthread_mutex_init(&u->mu, NULL);
	pthread_mutex_init(&u->in_mu, NULL);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&u->locks[i], NULL);
	if ((u->share = curl_share_init()) != NULL) {
		curl_share_setopt(u->share, CURLSHOPT_LOCKFUNC, share_lock);
		curl_share_setopt(u->share, CURLSHOPT_UNLOCKFUNC,
		    share_unlock);
		curl_share_setopt(u->share, CURLSHOPT_USERDATA, u);
		curl_share_setopt(u->share, CURLSHOPT_SHARE,
		    CURL_LOCK_DATA_DNS);
		curl_share_setopt(u->share, CURLSHOPT_SHARE,
		    CURL_LOCK_DATA_SSL_SESSION);
	}
	if (loop_start(u) == -1) {
		if (u->share != NULL)
			curl_share_cleanup(u->share);
		free(u);
		return NULL;
	}
	return u;
}

void
upstream_free(struct upstream *u)
{
	int	 i;

	if (u == NULL)
		return;
	if (u->running) {
		/* No call is in flight any more: its callers have returned. */
		pthread_mutex_lock(&u->in_mu);
		u->stop = true;
		pthread_mutex_unlock(&u->in_mu);
		wake_loop(u);
		pthread_join(u->thread, NULL);
		lanes_free(u);
		close(u->epfd);
		close(u->wake_fd);
	}
	for (i = 0; i < u->nidle; i++)
		curl_easy_cleanup(u->idle[i]);
	if (u->share != NULL)
		curl_share_cleanup(u->share);
	free(u->due);
	free(u->due_arg);
	free(u->due_gone);
	free(u);
}

int
upstream_trim(struct upstream *u, int keep, double idle, int *left)
{
	CURL	*h[64];
	double	 now = clock_mono();
	int	 freed = 0, n = 0, k, i;

	/* The oldest first, a few at a time, each freed outside the lock. */
	for (; u != NULL; freed += k) {
		pthread_mutex_lock(&u->mu);
		for (k = 0; k < (int)(sizeof(h) / sizeof(h[0])) &&
		    u->nidle - k > keep && now - u->since[k] >= idle; k++)
			h[k] = u->idle[k];
		u->nidle -= k;
		memmove(u->idle, u->idle + k, u->nidle * sizeof(*u->idle));
		memmove(u->since, u->since + k, u->nidle * sizeof(*u->since));
		n = u->nidle;
		pthread_mutex_unlock(&u->mu);
		if (k == 0)
			break;
		for (i = 0; i < k; i++)
			curl_easy_cleanup(h[i]);
	}
	*left = n > keep ? n - keep : 0;
	return freed;
}

/* A handle for a call: a kept one, or a new one; NULL = out of memory. */
static CURL *
handle_take(struct upstream *u)
{
	CURL	*h = NULL;

	if (u == NULL)
		return curl_easy_init();
	pthread_mutex_lock(&u->mu);
	if (u->nidle > 0)
		h = u->idle[--u->nidle];
	pthread_mutex_unlock(&u->mu);
	return h != NULL ? h : curl_easy_init();
}

/*
 * Gives a handle back after its call.  Nothing of the call may stay but
 * the connection: not its URL, headers (with the provider key), body or
 * callbacks.
 */
static void
handle_give(struct upstream *u, CURL *h)
{
	if (u == NULL) {
		curl_easy_cleanup(h);
		return;
	}
	curl_easy_reset(h);
	pthread_mutex_lock(&u->mu);
	if (u->nidle < UPSTREAM_KEPT_HANDLES) {
		u->since[u->nidle] = clock_mono();
		u->idle[u->nidle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&u->mu);
	if (h != NULL)
		curl_easy_cleanup(h);
}

/* The call's headers as curl takes them; NULL when there are none. */
static struct curl_slist *
header_list(const struct upstream_call *c)
{
	struct curl_slist *hdrs = NULL, *tmp;
	int		 i;

	for (i = 0; i < UPSTREAM_MAX_HEADERS && c->headers[i] != NULL; i++) {
		if ((tmp = curl_slist_append(hdrs, c->headers[i])) == NULL)
			break;
		hdrs = tmp;
	}
	/* The body goes at once: no "Expect: 100-continue" round trip. */
	if (c->body != NULL && (tmp = curl_slist_append(hdrs, "Expect:")) !=
	    NULL)
		hdrs = tmp;
	return hdrs;
}

/* What curl's rc and the sink's state say of the call, err telling why. */
static enum upstream_result
outcome(const struct upstream_call *c, const struct sink *sink, CURLcode rc,
    char *err, size_t errsz)
{
	if (rc == CURLE_OK || sink->ended)
		return UPSTREAM_OK;
	if (sink->aborted || sink->left) {
		snprintf(err, errsz, "the receiver stopped the call");
		return UPSTREAM_ABORTED;
	}
	if (sink->too_large) {
		snprintf(err, errsz, "the reply is larger than %zu bytes",
		    c->max_response);
		return UPSTREAM_TOO_LARGE;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT || sink->idled) {
		snprintf(err, errsz, "no answer within the timeout");
		return UPSTREAM_TIMEOUT;
	}
	snprintf(err, errsz, "%s", curl_easy_strerror(rc));
	return UPSTREAM_UNREACHABLE;
}

/*
 * The loop's side.  Everything below runs in the loop's thread, but for
 * loop_perform(), the caller's.
 */

/* curl's wish for socket fd: watched for what, or no more. */
static int
on_socket(CURL *h, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct lane	*l = arg;
	struct upstream	*u = l->u;
	struct epoll_event ev;

	(void)h;
	(void)sockp;
	if (what == CURL_POLL_REMOVE) {
		(void)epoll_ctl(u->epfd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) |
	    (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	ev.data.u64 = (uint64_t)(l - u->lanes) << TAG_LANE_SHIFT |
	    (uint32_t)fd;
	if (epoll_ctl(u->epfd, EPOLL_CTL_MOD, fd, &ev) == -1 &&
	    epoll_ctl(u->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		return -1;
	return 0;
}

/* curl's wish for a turn in ms (-1 = none). */
static int
on_timer(CURLM *m, long ms, void *arg)
{
	struct lane	*l = arg;

	(void)m;
	l->timer = ms < 0 ? 0 : clock_mono() + (double)ms / 1000.0;
	return 0;
}

/* Watches, or stops watching, the receiver's output of s. */
static void
watch_out(struct upstream *u, struct sink *s, bool on)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLOUT;
	ev.data.u64 = TAG_OUT | (uint64_t)(uintptr_t)s;
	if (on && epoll_ctl(u->epfd, EPOLL_CTL_ADD, s->out_fd, &ev) == -1)
		(void)epoll_ctl(u->epfd, EPOLL_CTL_MOD, s->out_fd, &ev);
	else if (!on)
		(void)epoll_ctl(u->epfd, EPOLL_CTL_DEL, s->out_fd, NULL);
}

/*
 * The receiver of s kept output it could not send yet: no more pieces
 * until it has.  In the loop, the transfer pauses while out_fd is
 * watched; a caller's own thread (no loop) waits on out_fd at once.
 * 0, or -1 when the receiver failed.
 */
static int
backlog(struct sink *s)
{
	struct upstream	*u = s->loop;
	struct pollfd	 pfd;
	int		 rc;

	if (s->drain == NULL)
		return -1;
	if (u != NULL) {
		s->blocked = true;
		watch_out(u, s, true);
		return 0;
	}
	while ((rc = s->drain(s->ctx)) == 1) {
		pfd.fd = s->out_fd;
		pfd.events = POLLOUT;
		pfd.revents = 0;
		(void)poll(&pfd, 1, 250);
	}
	return rc;
}

/* Hands s back to its caller, whose thread goes on; s is gone after. */
static void
finish(struct upstream *u, struct sink *s, CURLcode rc)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		u->calls = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	if (s->blocked)
		watch_out(u, s, false);
	s->blocked = false;
	s->lane->calls--;
	s->lane->last_end = clock_mono();
	pthread_mutex_lock(&u->in_mu);
	s->rc = rc;
	s->done = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&u->in_mu);
}

/* Ends s before curl did: the provider's connection is closed at once. */
static void
cut(struct upstream *u, struct sink *s)
{
	curl_multi_remove_handle(s->lane->multi, s->h);
	finish(u, s, CURLE_ABORTED_BY_CALLBACK);
}

/* The calls curl has ended, in the lanes it ran since the last look. */
static void
reap(struct upstream *u)
{
	struct sink	*s;
	CURLMsg		*msg;
	CURLM		*m;
	int		 i, queued;

	for (i = 0; i < UPSTREAM_LANES; i++) {
		if (!(u->driven & UINT32_C(1) << i))
			continue;
		m = u->lanes[i].multi;
		while ((msg = curl_multi_info_read(m, &queued)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			s = NULL;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
			    (char **)&s);
			curl_multi_remove_handle(m, msg->easy_handle);
			if (s != NULL)
				finish(u, s, msg->data.result);
		}
	}
	u->driven = 0;
}

/* The lane a new call goes to: the fewest calls, the first on a tie. */
static struct lane *
lane_for_call(struct upstream *u)
{
	struct lane	*best = &u->lanes[0];
	int		 i;

	for (i = 1; i < UPSTREAM_LANES && best->calls > 0; i++)
		if (u->lanes[i].calls < best->calls)
			best = &u->lanes[i];
	return best;
}

/* The receiver of s can take more: what it kept goes first. */
static void
unblock(struct upstream *u, struct sink *s)
{
	int	 rc = s->drain(s->ctx);

	if (rc == 1)
		return;
	if (rc == -1) {
		s->aborted = 1;
		cut(u, s);
		return;
	}
	watch_out(u, s, false);
	s->blocked = false;
	s->last_byte = clock_mono();
	/* Pieces held meanwhile come now (on_data may block again). */
	u->driven |= UINT32_C(1) << (s->lane - u->lanes);
	curl_easy_pause(s->h, CURLPAUSE_CONT);
}

/* Room for n calls in the sweep's arrays; false when out of memory. */
static bool
due_room(struct upstream *u, size_t n)
{
	struct sink	**d;
	void		**a;
	bool		*g;
	size_t		 cap = u->due_cap > 0 ? u->due_cap : 64;

	if (n <= u->due_cap)
		return true;
	while (cap < n)
		cap *= 2;
	if ((d = realloc(u->due, cap * sizeof(*d))) != NULL)
		u->due = d;
	if ((a = realloc(u->due_arg, cap * sizeof(*a))) != NULL)
		u->due_arg = a;
	if ((g = realloc(u->due_gone, cap * sizeof(*g))) != NULL)
		u->due_gone = g;
	if (d == NULL || a == NULL || g == NULL)
		return false;
	u->due_cap = cap;
	return true;
}

/*
 * What no socket tells, for every call: the client gone (asked twice a
 * second, of all calls due at once where the call allows), no byte within
 * the idle timeout, a receiver whose output stays stuck (its drain says
 * when it has waited too long), a reply whose receiver has had all it
 * needed a while ago.
 */
static void
sweep(struct upstream *u, double now)
{
	struct sink	*s, *next;
	void		(*many)(void *const *, size_t, bool *) = NULL;
	size_t		 n = 0, i;

	u->swept = now;
	for (s = u->calls; s != NULL; s = next) {
		next = s->next;
		if (s->blocked) {
			if (s->drain(s->ctx) == -1) {
				s->aborted = 1;
				cut(u, s);
			}
			continue;
		}
		if (s->finished > 0 && now - s->finished >= UPSTREAM_GRACE) {
			/* The provider does not end what it has finished. */
			s->ended = 1;
			cut(u, s);
		} else if (s->idle > 0 && now - s->last_byte > (double)s->idle) {
			s->idled = 1;
			cut(u, s);
		} else if (s->gone != NULL &&
		    now - s->gone_at >= UPSTREAM_GONE_EVERY) {
			/* Two or three system calls a time: not every sweep. */
			s->gone_at = now;
			if (s->gone_many != NULL && (many == NULL ||
			    many == s->gone_many) && due_room(u, n + 1)) {
				many = s->gone_many;
				u->due[n] = s;
				u->due_arg[n++] = s->gone_arg;
			} else if (s->gone(s->gone_arg)) {
				s->left = 1;
				cut(u, s);
			}
		}
	}
	if (n == 0)
		return;
	many(u->due_arg, n, u->due_gone);
	for (i = 0; i < n; i++)
		if (u->due_gone[i]) {
			u->due[i]->left = 1;
			cut(u, u->due[i]);
		}
}

/* Takes the calls handed over into curl. */
static bool
take_inbox(struct upstream *u)
{
	struct sink	*s, *next;
	uint64_t	 n;
	bool		 stop;

	(void)!read(u->wake_fd, &n, sizeof(n));
	pthread_mutex_lock(&u->in_mu);
	s = u->inbox;
	u->inbox = NULL;
	stop = u->stop;
	pthread_mutex_unlock(&u->in_mu);
	for (; s != NULL; s = next) {
		next = s->next;
		s->prev = NULL;
		s->next = u->calls;
		if (u->calls != NULL)
			u->calls->prev = s;
		u->calls = s;
		s->last_byte = s->gone_at = clock_mono();
		s->lane = lane_for_call(u);
		s->lane->calls++;
		s->lane->used = true;
		u->driven |= UINT32_C(1) << (s->lane - u->lanes);
		if (curl_multi_add_handle(s->lane->multi, s->h) != CURLM_OK)
			finish(u, s, CURLE_OUT_OF_MEMORY);
	}
	return stop;
}

/*
 * No call in a lane for a while: the connections it kept go, with their
 * descriptors and memory (libcurl closes a kept connection only when a
 * new one is made), by starting it over with a new multi handle.
 */
static void
idle_close(struct upstream *u, double now)
{
	struct lane	*l;
	CURLM		*m;
	int		 i;

	for (i = 0; i < UPSTREAM_LANES; i++) {
		l = &u->lanes[i];
		if (l->calls > 0 || !l->used ||
		    now - l->last_end < UPSTREAM_IDLE_CLOSE ||
		    (m = multi_new(l)) == NULL)
			continue;
		curl_multi_cleanup(l->multi);
		l->multi = m;
		l->timer = 0;
		l->used = false;
	}
}

static void *
loop_main(void *arg)
{
	struct upstream	*u = arg;
	struct epoll_event ev[UPSTREAM_EVENTS];
	struct sink	*s;
	struct lane	*l;
	double		 now, next;
	int		 n, i, flags, running;

	u->swept = clock_mono();
	for (;;) {
		now = clock_mono();
		next = u->swept + UPSTREAM_SWEEP;
		for (i = 0; i < UPSTREAM_LANES; i++)
			if (u->lanes[i].timer != 0 && u->lanes[i].timer < next)
				next = u->lanes[i].timer;
		n = epoll_wait(u->epfd, ev, UPSTREAM_EVENTS, next <= now ? 0 :
		    (int)((next - now) * 1000.0) + 1);
		for (i = 0; i < n; i++) {
			if (ev[i].data.u64 == TAG_INBOX) {
				if (take_inbox(u))
					return NULL;
			} else if (ev[i].data.u64 & TAG_OUT) {
				s = (struct sink *)(uintptr_t)(ev[i].data.u64 &
				    ~TAG_OUT);
				if (s->blocked)
					unblock(u, s);
			} else {
				flags = (ev[i].events & EPOLLIN ?
				    CURL_CSELECT_IN : 0) |
				    (ev[i].events & EPOLLOUT ?
				    CURL_CSELECT_OUT : 0) |
				    (ev[i].events & (EPOLLERR | EPOLLHUP) ?
				    CURL_CSELECT_ERR : 0);
				l = &u->lanes[ev[i].data.u64 >> TAG_LANE_SHIFT];
				u->driven |= UINT32_C(1) << (l - u->lanes);
				curl_multi_socket_action(l->multi,
				    (curl_socket_t)(uint32_t)ev[i].data.u64,
				    flags, &running);
			}
		}
		now = clock_mono();
		for (i = 0; i < UPSTREAM_LANES; i++) {
			l = &u->lanes[i];
			if (l->timer != 0 && l->timer <= now) {
				l->timer = 0;
				u->driven |= UINT32_C(1) << i;
				curl_multi_socket_action(l->multi,
				    CURL_SOCKET_TIMEOUT, 0, &running);
			}
		}
		reap(u);
		if (now - u->swept >= UPSTREAM_SWEEP) {
			sweep(u, now);
			reap(u);
			idle_close(u, now);
		}
	}
}

/*
 * Hands the call of s to the loop and waits until it has ended; in the
 * caller's thread.
 */
static CURLcode
loop_perform(struct upstream *u, struct sink *s)
{
	CURLcode	 rc;

	s->loop = u;
	curl_easy_setopt(s->h, CURLOPT_PRIVATE, (void *)s);
	pthread_cond_init(&s->cv, NULL);
	pthread_mutex_lock(&u->in_mu);
	s->next = u->inbox;
	u->inbox = s;
	pthread_mutex_unlock(&u->in_mu);
	wake_loop(u);
	pthread_mutex_lock(&u->in_mu);
	while (!s->done)
		pthread_cond_wait(&s->cv, &u->in_mu);
	rc = s->rc;
	pthread_mutex_unlock(&u->in_mu);
	pthread_cond_destroy(&s->cv);
	return rc;
}

static enum upstream_result
run(struct upstream_call *c, struct sink *sink, long *status,
    char *err, size_t errsz)
{
	struct curl_slist *hdrs = NULL, *tmp;
	struct upload	 up = { c->body, c->body_len, 0 };
	CURL		*h;
	CURLcode	 rc;
	enum upstream_result res;
	curl_off_t	 sent = 0;
	long		 head = 0;

	*status = 0;
	c->sent = false;
	c->retry_after[0] = c->retry_after_ms[0] = '\0';
	if ((h = handle_take(c->via)) == NULL) {
		snprintf(err, errsz, "out of memory");
		return UPSTREAM_UNREACHABLE;
	}
	hdrs = header_list(c);
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, c->total_timeout);
	sink->h = h;
	sink->gone = c->gone;
	sink->gone_arg = c->gone_arg;
	sink->gone_many = c->gone_many;
	sink->drain = c->drain;
	sink->out_fd = c->out_fd;
	sink->idle = c->idle_timeout;
	sink->last_byte = clock_mono();
	if (c->via == NULL) {
		/* The loop's sweep does this for its calls. */
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, sink);
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(h, CURLOPT_MAXAGE_CONN, UPSTREAM_MAXAGE_CONN);
	/*
	 * Thousands of calls wait at once: small buffers (provider events
	 * are small; a whole answer just takes more reads).
	 */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, UPSTREAM_BUFFER);
	curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, UPSTREAM_UPLOAD_BUFFER);
	if (c->via != NULL && c->via->share != NULL)
		curl_easy_setopt(h, CURLOPT_SHARE, c->via->share);
	if (c->body != NULL) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &up);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, &up);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)c->body_len);
	}
	waiting(true);
	rc = c->via != NULL ? loop_perform(c->via, sink) :
	    curl_easy_perform(h);
	waiting(false);
	c->sent = curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &sent) ==
	    CURLE_OK && sent >= (curl_off_t)c->body_len &&
	    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &head) == CURLE_OK &&
	    head > 0;
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	res = outcome(c, sink, rc, err, errsz);
	handle_give(c->via, h);
	for (tmp = hdrs; tmp != NULL; tmp = tmp->next)
		explicit_bzero(tmp->data, strlen(tmp->data));
	curl_slist_free_all(hdrs);
	return res;
}

enum upstream_result
upstream_perform(struct upstream_call *c, long *status, struct buf *body,
    char *err, size_t errsz)
{
	struct sink	 sink;

	memset(&sink, 0, sizeof(sink));
	sink.body = body;
	sink.max = c->max_response;
	buf_reset(body);
	return run(c, &sink, status, err, errsz);
}

enum upstream_result
upstream_stream(struct upstream_call *c, upstream_data_fn fn, void *ctx,
    long *status, char *err, size_t errsz)
{
	struct sink	 sink;

	memset(&sink, 0, sizeof(sink));
	sink.fn = fn;
	sink.ctx = ctx;
	return run(c, &sink, status, err, errsz);
}
