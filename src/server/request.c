#include "autoconfig.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <fastcgi.h>
#include <fcgiapp.h>

#include "lib/clock.h"
#include "lib/json.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

static int	 drain_wait(struct request *);

struct request_io {
	FCGX_Request	 fcgx;
	bool		 active;	/* a request is accepted, not finished */
};

struct request_io *
request_io_new(int listen_fd)
{
	struct request_io *io;

	if (FCGX_Init() != 0)
		return NULL;
	if ((io = calloc(1, sizeof(*io))) == NULL)
		return NULL;
	if (FCGX_InitRequest(&io->fcgx, listen_fd, 0) != 0) {
		free(io);
		return NULL;
	}
	return io;
}

/*
 * libfcgi frees the parameters of a request without wiping them: the
 * values of the headers that carry keys (Authorization, X-API-Key, and
 * each provider's X-<Provider>-Key) are zeroed here first.
 */
static void
wipe_key_params(struct request_io *io)
{
	char	**e, *eq;

	for (e = io->fcgx.envp; e != NULL && *e != NULL; e++) {
		if ((eq = strchr(*e, '=')) == NULL)
			continue;
		if (strncmp(*e, "HTTP_AUTHORIZATION=", 19) == 0 ||
		    (strncmp(*e, "HTTP_X_", 7) == 0 &&
		    eq - *e >= 4 && strncmp(eq - 4, "_KEY", 4) == 0))
			explicit_bzero(eq + 1, strlen(eq + 1));
	}
}

void
request_io_free(struct request_io *io)
{
	if (io == NULL)
		return;
	if (io->active) {
		wipe_key_params(io);
		FCGX_Finish_r(&io->fcgx);
	}
	FCGX_Free(&io->fcgx, 1);
	free(io);
}

int
request_io_accept(struct request_io *io, struct request *req)
{
	int	 rc;

	io->active = false;
	rc = FCGX_Accept_r(&io->fcgx);
	if (rc < 0) {
		/* Another worker took the connection, or it went away. */
		if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR ||
		    rc == -ECONNABORTED)
			return 1;
		log_error("FCGX_Accept_r: accepting a request: %s",
		    strerror(-rc));
		return -1;
	}
	io->active = true;
	req->io = io;
	req->authorizer = io->fcgx.role == FCGI_AUTHORIZER;
	return 0;
}

/*
 * Whether the web server sent what was not read.  libfcgi closes a
 * connection by shutting its sending side and reading until the web
 * server closes its own (up to 2 s): a wake-up more for every request,
 * its thread held meanwhile.  That wait is for bytes still to come, which
 * a close would answer with a reset that may cost the web server the
 * answer; with nothing unread and the request read to its end, nothing
 * is to come, and the connection is closed at once (as a detached one).
 */
static bool
unread(int fd)
{
	int	 n = 0;

	return fd < 0 || ioctl(fd, FIONREAD, &n) == -1 || n > 0;
}

void
request_io_finish(struct request_io *io, struct request *req)
{
	if (io->active && req->records) {
		req->in_loop = false;
		req->w = NULL;		/* the worker's lock is not held */
		if (drain_wait(req) == -1)
			io->fcgx.keepConnection = 0;
	}
	if (io->active) {
		wipe_key_params(io);
		/*
		 * Every request gets a connection of its own: one kept for
		 * the web server's next request would be read by this
		 * request's thread, while the accept loop only watches the
		 * listen socket.
		 */
		io->fcgx.keepConnection = 0;
		io->fcgx.detached = io->fcgx.in != NULL &&
		    FCGX_HasSeenEOF(io->fcgx.in) == EOF &&
		    !unread(io->fcgx.ipcFd);
		FCGX_Finish_r(&io->fcgx);
	}
	io->active = false;
}

const char *
request_param(const struct request *req, const char *name)
{
	return FCGX_GetParam(name, req->io->fcgx.envp);
}

/*
 * Lets other requests run while this one waits on its client, unless the
 * app holds something they must not touch (an open transaction): true
 * when the worker's lock was released, to be taken back with relock().
 */
static bool
unlock_for_io(struct request *req)
{
	struct worker	*w = req->w;

	if (w == NULL || req->in_loop ||
	    (w->app->pinned != NULL && w->app->pinned(w)))
		return false;
	worker_release(w);
	return true;
}

static void
relock(struct request *req, bool released)
{
	if (released)
		worker_acquire(req->w);
}

/* True unless the body's next bytes are in libfcgi's buffer or socket. */
static bool
read_would_wait(struct request *req)
{
	FCGX_Stream	*in = req->io->fcgx.in;
	struct pollfd	 pfd;

	if (in->rdNext != in->stop)
		return false;
	pfd.fd = req->io->fcgx.ipcFd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) != 1;
}

/* True unless n bytes fit in what libfcgi buffers before writing. */
static bool
write_would_wait(struct request *req, size_t n)
{
	FCGX_Stream	*out = req->io->fcgx.out;

	return out->stop - out->wrNext < (ptrdiff_t)n;
}

/* Sets a socket timeout of s seconds (at least 1 ms; 0 = none). */
static void
sock_timeout(int fd, int opt, double s)
{
	struct timeval	 tv;

	if (s > 0 && s < 0.001)
		s = 0.001;
	tv.tv_sec = (time_t)s;
	tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
	(void)setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

void
request_set_deadlines(struct request *req, int body_s, int write_s)
{
	req->body_timeout = body_s;
	req->write_timeout = write_s;
	sock_timeout(req->io->fcgx.ipcFd, SO_SNDTIMEO, write_s);
}

/* One piece of the body within the deadline: as FCGX_GetStr(), or -2. */
static int
body_piece(struct request *req, char *p, int n)
{
	double	 left;
	bool	 released;
	int	 got;

	/* The client's time runs from the first read, not from the accept. */
	if (req->body_deadline == 0 && req->body_timeout > 0)
		req->body_deadline = clock_mono() + req->body_timeout;
	left = req->body_deadline - clock_mono();
	if (req->body_deadline > 0) {
		if (left <= 0)
			return -2;
		sock_timeout(req->io->fcgx.ipcFd, SO_RCVTIMEO, left);
	}
	released = read_would_wait(req) && unlock_for_io(req);
	got = FCGX_GetStr(p, n, req->io->fcgx.in);
	relock(req, released);
	if (req->body_deadline > 0 && clock_mono() >= req->body_deadline &&
	    FCGX_GetError(req->io->fcgx.in) != 0)
		return -2;
	return got;
}

int
request_read_body(struct request *req, size_t max)
{
	const char	*cl = request_param(req, "CONTENT_LENGTH");
	char		*end, chunk[1024];	/* small: a thread's stack pages stay */
	unsigned long long declared = 0;
	int		 n;

	buf_reset(&req->body);
	if (cl != NULL && *cl != '\0') {
		errno = 0;
		declared = strtoull(cl, &end, 10);
		if (*end != '\0' || errno != 0 || declared > max)
			return 1;
	}
	/*
	 * Read what is there even without a declared length, but never
	 * more than max: a body that keeps coming is refused, not buffered.
	 */
	for (;;) {
		n = body_piece(req, chunk, sizeof(chunk));
		if (n == -2)
			return 2;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		if (req->body.len + (size_t)n > max)
			return 1;
		if (buf_append(&req->body, chunk, (size_t)n) == -1)
			return -1;
	}
	if (FCGX_GetError(req->io->fcgx.in) != 0)
		return -1;
	return 0;
}

/*
 * Our own FastCGI records: what libfcgi's stream would send, but without
 * waiting (libfcgi's writes block, or fail on a socket that would block).
 * libfcgi's buffer is empty from request_loop_begin() on; its closing
 * records go after ours, from request_io_finish().
 */
static int
put_records(struct request *req, const char *p, size_t n)
{
	FCGI_Header	 h;
	int		 id = req->io->fcgx.requestId;
	size_t		 len;

	while (n > 0) {
		len = n > 65535 ? 65535 : n;
		memset(&h, 0, sizeof(h));
		h.version = FCGI_VERSION_1;
		h.type = FCGI_STDOUT;
		h.requestIdB1 = (unsigned char)((id >> 8) & 0xff);
		h.requestIdB0 = (unsigned char)(id & 0xff);
		h.contentLengthB1 = (unsigned char)((len >> 8) & 0xff);
		h.contentLengthB0 = (unsigned char)(len & 0xff);
		if (buf_append(&req->out, &h, sizeof(h)) == -1 ||
		    buf_append(&req->out, p, len) == -1)
			return -1;
		p += len;
		n -= len;
	}
	return 0;
}

int
request_drain(struct request *req)
{
	ssize_t		 n;
	double		 now;

	while (req->out_off < req->out.len) {
		n = send(req->io->fcgx.ipcFd, req->out.data + req->out_off,
		    req->out.len - req->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			req->out_off += (size_t)n;
			req->stuck_since = 0;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			now = clock_mono();
			if (req->stuck_since == 0)
				req->stuck_since = now;
			else if (req->write_timeout > 0 &&
			    now - req->stuck_since > req->write_timeout)
				goto gone;
			return 1;
		}
		goto gone;
	}
	buf_reset(&req->out);
	req->out_off = 0;
	req->stuck_since = 0;
	return 0;
gone:
	req->client_gone = true;
	return -1;
}

/* Sends what waits, waiting as long as the write timeout allows. */
static int
drain_wait(struct request *req)
{
	struct pollfd	 pfd;
	bool		 released;
	int		 rc;

	while ((rc = request_drain(req)) == 1) {
		pfd.fd = req->io->fcgx.ipcFd;
		pfd.events = POLLOUT;
		pfd.revents = 0;
		released = unlock_for_io(req);
		(void)poll(&pfd, 1, 250);
		relock(req, released);
	}
	return rc;
}

bool
request_backlog(const struct request *req)
{
	return req->out_off < req->out.len;
}

int
request_fd(const struct request *req)
{
	return req->io->fcgx.ipcFd;
}

int
request_loop_begin(struct request *req)
{
	if (!req->records && FCGX_FFlush(req->io->fcgx.out) != 0)
		return -1;
	req->records = true;
	req->in_loop = true;
	return 0;
}

void
request_loop_end(struct request *req)
{
	req->in_loop = false;
}

int
request_write(struct request *req, const void *p, size_t n)
{
	const char	*s = p;
	bool		 released;
	int		 rc = 0;

	if (req->records) {
		if (put_records(req, p, n) == -1)
			return -1;
		if (req->in_loop)
			return request_drain(req) == -1 ? -1 : 0;
		return req->out.len > 65536 ? drain_wait(req) : 0;
	}
	released = write_would_wait(req, n) && unlock_for_io(req);

	while (n > 0) {
		int chunk = n > 65536 ? 65536 : (int)n;

		if (FCGX_PutStr(s, chunk, req->io->fcgx.out) != chunk) {
			rc = -1;
			break;
		}
		s += chunk;
		n -= (size_t)chunk;
	}
	relock(req, released);
	return rc;
}

void
request_watch_client(struct request *req)
{
	(void)peer_find(&req->peer, request_param(req, "SERVER_ADDR"),
	    request_param(req, "SERVER_PORT"), request_param(req,
	    "REMOTE_ADDR"), request_param(req, "REMOTE_PORT"));
	req->peer_asked = clock_mono();
}

/*
 * What the web server's connection tells, once poll() found it readable
 * or closed (revents): has the web server given the request up?
 */
static bool
fastcgi_told(int fd, short revents)
{
	unsigned char	 head[8];
	ssize_t		 n;

	if (revents & (POLLHUP | POLLERR | POLLNVAL))
		return true;
	n = recv(fd, head, sizeof(head), MSG_PEEK | MSG_DONTWAIT);
	if (n == 0)
		return true;
	if (n < 0)
		return errno == ECONNRESET || errno == ENOTCONN;
	/* A record header: version 1, then type 2 = FCGI_ABORT_REQUEST. */
	return n == (ssize_t)sizeof(head) && head[0] == 1 && head[1] == 2;
}

/* The web server's side of request_abandoned(). */
static bool
fastcgi_abandoned(struct request *req)
{
	struct pollfd	 pfd;

	pfd.fd = req->io->fcgx.ipcFd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (pfd.fd < 0)
		return true;
	if (poll(&pfd, 1, 0) != 1)
		return false;
	return fastcgi_told(pfd.fd, pfd.revents);
}

bool
request_abandoned(struct request *req)
{
	double	 now = clock_mono();

	/*
	 * Asked at every turn of a provider call's loop, which is several
	 * times for each piece of a stream: the connection is looked at ten
	 * times a second at most, the kernel four times.
	 */
	if (now - req->gone_asked < 0.1)
		return false;
	req->gone_asked = now;
	if (fastcgi_abandoned(req))
		return true;
	if (!req->peer.known || now - req->peer_asked < 0.25)
		return false;
	req->peer_asked = now;
	return peer_state(&req->peer) == PEER_GONE;
}

void
request_abandoned_many(struct request *const *r, size_t n, bool *gone)
{
	struct pollfd	*pfd = calloc(n, sizeof(*pfd));
	const struct peer **peers = calloc(n, sizeof(*peers));
	enum peer_state	*st = calloc(n, sizeof(*st));
	size_t		*at = calloc(n, sizeof(*at)), i, m = 0;
	double		 now = clock_mono();

	if (pfd == NULL || peers == NULL || st == NULL || at == NULL) {
		for (i = 0; i < n; i++)
			gone[i] = request_abandoned(r[i]);
		goto out;
	}
	/* One poll() for every web server connection. */
	for (i = 0; i < n; i++) {
		pfd[i].fd = r[i]->io->fcgx.ipcFd;
		pfd[i].events = POLLIN;
		gone[i] = pfd[i].fd < 0;
		r[i]->gone_asked = now;
	}
	if (n > 0 && poll(pfd, (nfds_t)n, 0) > 0)
		for (i = 0; i < n; i++)
			if (pfd[i].revents != 0 && !gone[i])
				gone[i] = fastcgi_told(pfd[i].fd,
				    pfd[i].revents);
	/* The clients' own connections, asked of the kernel together. */
	for (i = 0; i < n; i++) {
		if (gone[i] || !r[i]->peer.known)
			continue;
		r[i]->peer_asked = now;
		peers[m] = &r[i]->peer;
		at[m++] = i;
	}
	peer_states(peers, m, st);
	for (i = 0; i < m; i++)
		if (st[i] == PEER_GONE)
			gone[at[i]] = true;
out:
	free(pfd);
	free(peers);
	free(st);
	free(at);
}

int
request_flush(struct request *req)
{
	bool	 released;
	int	 rc;

	if (req->records)
		return (req->in_loop ? request_drain(req) : drain_wait(req)) ==
		    -1 ? -1 : 0;
	released = unlock_for_io(req);

	rc = FCGX_FFlush(req->io->fcgx.out) == 0 ? 0 : -1;
	relock(req, released);
	return rc;
}

void
request_clear(struct request *req)
{
	struct buf	 body = req->body, headers = req->headers, out = req->out;

	free(req->path);
	free(req->principal);
	/* Bodies carry secrets (provider keys, new keys): wipe them. */
	if (body.data != NULL)
		explicit_bzero(body.data, body.len);
	if (req->json != NULL) {
		json_wipe(req->json);
		json_object_put(req->json);
	}
	buf_reset(&body);
	buf_reset(&headers);
	/* A stream's records: freed, not kept (they may have grown). */
	buf_free(&out);
	memset(req, 0, sizeof(*req));
	/* Keep the buffers' memory for the next request. */
	req->body = body;
	req->headers = headers;
}
