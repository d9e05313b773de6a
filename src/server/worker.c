#include "autoconfig.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/crypto.h"
#include "lib/harden.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

/* Set by SIGTERM: finish the request in hand, then exit. */
static volatile sig_atomic_t stop_requested;

static void
handle_sigterm(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/*
 * Signals in a worker: SIGTERM stays blocked except while the worker waits
 * for a connection (epoll_pwait unblocks it atomically), so it can never
 * interrupt a request half-way; SIGINT and SIGHUP belong to the master
 * (a terminal's Ctrl-C reaches the whole process group); a client that
 * disconnects must not kill us with SIGPIPE.
 */
static void
signals_init(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t	 block;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = handle_sigterm;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;	/* no SA_RESTART: epoll_pwait must return */
	sigaction(SIGTERM, &sa, NULL);

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_SETMASK, &block, NULL);
	sigemptyset(waitmask);
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

void
worker_main(const struct config *cfg, const struct worker_app *app,
    int listen_fd, int slot, void *shared)
{
	struct worker	 w;
	struct request	 req;
	struct request_io *io = NULL;
	struct epoll_event ev;
	sigset_t	 waitmask;
	int		 epfd = -1, n, rc, code = WORKER_EXIT_OK, idle_ms = -1;
	char		 err[160] = "";

	memset(&w, 0, sizeof(w));
	memset(&req, 0, sizeof(req));
	w.cfg = cfg;
	w.app = app;
	w.listen_fd = listen_fd;
	w.slot = slot;
	w.shared = shared;
	signals_init(&waitmask);

	/*
	 * The start order: secrets locked (fork() does not keep the
	 * master's locks; as root the lock limit does not apply yet), then
	 * privileges (a new user makes the process dumpable again), then
	 * the RNG, then the app.
	 */
	if (config_lock_secrets(cfg) == -1)
		log_warn("mlock: locking secrets in memory: %s; they may "
		    "reach swap", strerror(errno));
	if (drop_privileges(cfg) == -1 ||
	    harden_process(err, sizeof(err)) == -1) {
		if (err[0] != '\0')
			log_error("%s", err);
		_exit(WORKER_EXIT_FATAL);
	}
	crypto_after_fork();
	if (app->start != NULL && app->start(&w) == -1) {
		code = WORKER_EXIT_FATAL;
		goto out;
	}
	if ((io = request_io_new(listen_fd)) == NULL) {
		log_error("FCGX_InitRequest: preparing the listen socket: "
		    "failed");
		code = WORKER_EXIT_FAILURE;
		goto out;
	}
	/*
	 * EPOLLEXCLUSIVE wakes one idle worker per new connection instead
	 * of all of them.
	 */
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		log_error("epoll_create1: waiting for connections: %s",
		    strerror(errno));
		code = WORKER_EXIT_FAILURE;
		goto out;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | EPOLLEXCLUSIVE;
	ev.data.fd = listen_fd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == -1) {
		log_error("epoll_ctl: watching the listen socket: %s",
		    strerror(errno));
		code = WORKER_EXIT_FAILURE;
		goto out;
	}

	/* The app's deferred work gets a first turn before any request. */
	if (app->after != NULL)
		idle_ms = 0;
	while (!stop_requested) {
		n = epoll_pwait(epfd, &ev, 1, idle_ms, &waitmask);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			log_error("epoll_pwait: waiting for connections: %s",
			    strerror(errno));
			code = WORKER_EXIT_FAILURE;
			break;
		}
		if (n == 0) {
			/* Idle long enough for the app's deferred work. */
			idle_ms = app->after != NULL ? app->after(&w) : -1;
			continue;
		}
		rc = request_io_accept(io, &req);
		if (rc == 1)
			continue;
		if (rc == -1) {
			code = WORKER_EXIT_FAILURE;
			break;
		}
		serve(&w, &req);
		request_io_finish(io, &req);
		request_clear(&req);
		if (app->after != NULL)
			idle_ms = app->after(&w);
		w.served++;
		if (cfg->max_requests > 0 &&
		    w.served >= (unsigned long)cfg->max_requests) {
			log_info("worker recycled after %lu requests",
			    w.served);
			break;
		}
	}
out:
	if (app->stop != NULL)
		app->stop(&w);
	request_clear(&req);
	buf_free(&req.body);
	buf_free(&req.headers);
	request_io_free(io);
	if (epfd != -1)
		close(epfd);
	exit(code);
}
