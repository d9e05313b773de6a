#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "server/config.h"
#include "server/log.h"
#include "server/master.h"
#include "server/worker.h"

#define MAX_SLOTS	1024
#define BACKOFF_MIN	0.1	/* s, after a second quick failure */
#define BACKOFF_MAX	30.0	/* s */
#define STABLE_AFTER	10.0	/* s a worker must live to reset back-off */

static volatile sig_atomic_t pending_stop;
static volatile sig_atomic_t pending_reload;
static volatile sig_atomic_t pending_child;

static void handle_sigterm(int sig) { (void)sig; pending_stop = 1; }
static void handle_sighup(int sig) { (void)sig; pending_reload = 1; }
static void handle_sigchld(int sig) { (void)sig; pending_child = 1; }

struct slot {
	pid_t		 pid;		/* 0 = empty */
	unsigned	 generation;	/* configuration it was forked with */
	double		 started;	/* monotonic s */
	double		 next_start;	/* monotonic s, when empty */
	double		 backoff;	/* s, 0 = respawn at once */
};

struct master {
	struct config	*cfg;
	const struct worker_app *app;
	int		 listen_fd;
	char		*unix_path;	/* socket file we created, or NULL */
	void		*shared;	/* the app's, or NULL */
	size_t		 shared_len;
	struct slot	 slots[MAX_SLOTS];
	int		 nslots;	/* wanted now */
	int		 maxslots;	/* highest ever used */
	unsigned	 generation;
	pid_t		 retiring;	/* old worker being replaced, 0 = none */
	bool		 stopping;
	double		 deadline;	/* monotonic s, while stopping */
	int		 exit_code;
};

/* True when fd 0 is a listening socket: a web server spawned us. */
static bool
inherited_listener(void)
{
	int		 v = 0;
	socklen_t	 len = sizeof(v);

	return getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 &&
	    v != 0;
}

static int
open_unix(struct master *m, const char *path)
{
	struct sockaddr_un sa;
	struct stat	 st;
	struct passwd	*pw;
	int		 fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("listen: %s: path too long", path);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		log_error("socket: listening on %s: %s", path, strerror(errno));
		return -1;
	}
	/* A socket file left by a crash is replaced; a live one is not. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			log_error("listen: %s: another keygated is already "
			    "listening there", path);
			close(fd);
			return -1;
		}
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		log_error("bind: listening on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (chmod(path, (mode_t)m->cfg->socket_mode) == -1)
		log_warn("chmod: setting the mode of %s: %s", path,
		    strerror(errno));
	if (m->cfg->user[0] != '\0' && geteuid() == 0 &&
	    (pw = getpwnam(m->cfg->user)) != NULL &&
	    chown(path, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown: giving %s to %s: %s", path, m->cfg->user,
		    strerror(errno));
	if ((m->unix_path = strdup(path)) == NULL) {
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

static int
open_tcp(const char *spec)
{
	struct addrinfo	 hints, *res = NULL, *ai;
	char		 host[256];
	const char	*colon = strrchr(spec, ':');
	size_t		 hl;
	int		 fd = -1, on = 1, rc;

	if (colon == NULL || colon == spec || colon[1] == '\0') {
		log_error("listen: tcp:%s: expected tcp:HOST:PORT", spec);
		return -1;
	}
	hl = (size_t)(colon - spec);
	if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
		spec++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		log_error("listen: tcp:%s: host name too long", spec);
		return -1;
	}
	memcpy(host, spec, hl);
	host[hl] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host, colon + 1, &hints, &res)) != 0) {
		log_error("getaddrinfo: resolving %s: %s", host,
		    gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		log_error("bind: listening on %s:%s: %s", host, colon + 1,
		    strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* Opens the listen socket, non-blocking; -1 on failure (logged). */
static int
listen_open(struct master *m)
{
	const char	*l = m->cfg->listen;
	int		 fd, flags;

	if (inherited_listener()) {
		log_info("using the FastCGI socket inherited on fd 0; "
		    "listen = %s is ignored", l);
		fd = 0;
	} else {
		if (strncmp(l, "unix:", 5) == 0)
			fd = open_unix(m, l + 5);
		else
			fd = open_tcp(l + 4);
		if (fd == -1)
			return -1;
		if (listen(fd, m->cfg->listen_backlog) == -1) {
			log_error("listen: %s: %s", l, strerror(errno));
			close(fd);
			return -1;
		}
		log_info("listening on %s", l);
	}
	flags = fcntl(fd, F_GETFL);
	if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
		log_error("fcntl: making the listen socket non-blocking: %s",
		    strerror(errno));
		return -1;
	}
	return fd;
}

static void
spawn(struct master *m, int i)
{
	struct slot	*s = &m->slots[i];
	pid_t		 pid;

	pid = fork();
	if (pid == -1) {
		log_error("fork: starting worker %d: %s", i, strerror(errno));
		s->backoff = s->backoff > 0 ? s->backoff * 2 : BACKOFF_MIN;
		if (s->backoff > BACKOFF_MAX)
			s->backoff = BACKOFF_MAX;
		s->next_start = clock_mono() + s->backoff;
		return;
	}
	if (pid == 0)
		worker_main(m->cfg, m->app, m->listen_fd, i, m->shared);
	s->pid = pid;
	s->generation = m->generation;
	s->started = clock_mono();
}

static void
describe_exit(int status, char *out, size_t sz)
{
	if (WIFEXITED(status))
		snprintf(out, sz, "exited with status %d",
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, sz, "was killed by signal %d (%s)%s",
		    WTERMSIG(status), strsignal(WTERMSIG(status)),
		    WCOREDUMP(status) ? ", core dumped" : "");
	else
		snprintf(out, sz, "ended with wait status %d", status);
}

static void
begin_stop(struct master *m, int code)
{
	int	 i;

	if (m->stopping)
		return;
	m->stopping = true;
	m->exit_code = code;
	m->deadline = clock_mono() + m->cfg->shutdown_timeout;
	for (i = 0; i < m->maxslots; i++)
		if (m->slots[i].pid > 0)
			kill(m->slots[i].pid, SIGTERM);
	if (m->retiring > 0)
		kill(m->retiring, SIGTERM);
}

static void
reap(struct master *m)
{
	struct slot	*s;
	pid_t		 pid;
	int		 status, i;
	double		 now, lived;
	char		 how[96];

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		describe_exit(status, how, sizeof(how));
		if (pid == m->retiring) {
			m->retiring = 0;
			if (m->app->worker_exited != NULL && m->shared != NULL)
				m->app->worker_exited(m->shared, pid,
				    status != 0);
			if (status != 0)
				log_warn("replaced worker %ld %s", (long)pid,
				    how);
			continue;
		}
		for (i = 0; i < m->maxslots; i++)
			if (m->slots[i].pid == pid)
				break;
		if (i == m->maxslots)
			continue;
		s = &m->slots[i];
		s->pid = 0;
		now = clock_mono();
		lived = now - s->started;
		if (m->stopping) {
			if (status != 0)
				log_warn("worker %ld %s while stopping",
				    (long)pid, how);
			continue;
		}
		if (WIFEXITED(status) &&
		    WEXITSTATUS(status) == WORKER_EXIT_FATAL) {
			log_error("worker %ld %s (fatal error, see above); "
			    "not respawning, stopping keygated", (long)pid,
			    how);
			begin_stop(m, WORKER_EXIT_FATAL);
			continue;
		}
		if (m->app->worker_exited != NULL && m->shared != NULL)
			m->app->worker_exited(m->shared, pid, !(WIFEXITED(status) &&
			    WEXITSTATUS(status) == 0));
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
			/* Recycled after max_requests: replace at once. */
			s->backoff = 0;
			s->next_start = now;
			continue;
		}
		if (lived >= STABLE_AFTER)
			s->backoff = 0;
		else
			s->backoff = s->backoff > 0 ?
			    s->backoff * 2 : BACKOFF_MIN;
		if (s->backoff > BACKOFF_MAX)
			s->backoff = BACKOFF_MAX;
		s->next_start = now + s->backoff;
		log_error("worker %ld (slot %d) %s after %.1f s; respawning "
		    "in %.1f s", (long)pid, i, how, lived, s->backoff);
	}
}

static void
reload(struct master *m)
{
	struct config	*next;
	const char	*key;
	char		 err[512];

	log_info("SIGHUP: reloading %s",
	    m->cfg->path != NULL ? m->cfg->path : "(no file)");
	/* Reopen the log first: logrotate's SIGHUP must work even when the
	 * new configuration does not. */
	if (log_open(m->cfg->log_file) == -1)
		log_error("open: reopening log file %s: %s", m->cfg->log_file,
		    strerror(errno));
	next = config_load(m->cfg->path, err, sizeof(err));
	if (next == NULL) {
		log_error("reload failed: %s; keeping the current "
		    "configuration", err);
		return;
	}
	if ((key = config_restart_needed(m->cfg, next)) != NULL) {
		log_error("reload failed: %s cannot change without a "
		    "restart; keeping the current configuration", key);
		config_free(next);
		return;
	}
	if (strcmp(next->log_file, m->cfg->log_file) != 0 &&
	    log_open(next->log_file) == -1)
		log_error("open: reopening log file %s: %s; logging to "
		    "the previous destination", next->log_file,
		    strerror(errno));
	if (config_lock_secrets(next) == -1)
		log_warn("mlock: locking secrets in memory: %s; they may "
		    "reach swap", strerror(errno));
	config_free(m->cfg);
	m->cfg = next;
	m->generation++;
	m->nslots = config_workers(m->cfg);
	if (m->nslots > MAX_SLOTS)
		m->nslots = MAX_SLOTS;
	if (m->nslots > m->maxslots)
		m->maxslots = m->nslots;
	log_info("configuration reloaded; replacing workers one at a time");
}

/*
 * Replaces one old-generation worker when none is being replaced: the new
 * one is forked first, then the old one told to finish its request and
 * exit.  The listen socket stays open throughout, so a request that
 * arrives in between waits in the backlog instead of being refused.
 */
static void
replace_step(struct master *m)
{
	int	 i;

	if (m->retiring != 0)
		return;
	for (i = 0; i < m->maxslots; i++) {
		struct slot *s = &m->slots[i];

		if (s->pid <= 0 || s->generation == m->generation)
			continue;
		m->retiring = s->pid;
		s->pid = 0;
		if (i < m->nslots)
			spawn(m, i);
		kill(m->retiring, SIGTERM);
		return;
	}
}

static int
live_children(const struct master *m)
{
	int	 i, n = m->retiring > 0;

	for (i = 0; i < m->maxslots; i++)
		n += m->slots[i].pid > 0;
	return n;
}

static void
signals_init(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t	 block;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, NULL);

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = handle_sigterm;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = handle_sighup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = handle_sigchld;
	sa.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sa.sa_flags = 0;
	sigaction(SIGPIPE, &sa, NULL);

	sigprocmask(SIG_SETMASK, NULL, waitmask);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGHUP);
	sigdelset(waitmask, SIGCHLD);
}

/* The memory the app's workers share, made before any of them.  0, -1. */
static int
share_memory(struct master *m)
{
	m->shared_len = m->app->shared_size();
	m->shared = mmap(NULL, m->shared_len, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m->shared == MAP_FAILED) {
		log_error("mmap: %zu bytes for the workers to share: %s",
		    m->shared_len, strerror(errno));
		m->shared = NULL;
		return -1;
	}
	if (m->app->shared_init != NULL && m->app->shared_init(m->shared,
	    m->cfg) == -1) {
		log_error("preparing the memory the workers share: failed");
		return -1;
	}
	return 0;
}

/* What the signal handlers noted since the last turn of the loop. */
static void
take_signals(struct master *m)
{
	if (pending_child) {
		pending_child = 0;
		reap(m);
	}
	if (pending_stop) {
		pending_stop = 0;
		if (!m->stopping)
			log_info("stopping: letting in-flight requests finish "
			    "(at most %d s)", m->cfg->shutdown_timeout);
		begin_stop(m, 0);
	}
	if (pending_reload) {
		pending_reload = 0;
		if (!m->stopping)
			reload(m);
	}
}

/*
 * Stopping, with workers left: past the deadline they are killed.  The
 * time to look again, no later than wake.
 */
static double
stop_step(struct master *m, double now, double wake)
{
	int	 i;

	if (now >= m->deadline) {
		log_warn("shutdown_timeout reached: killing %d remaining "
		    "workers", live_children(m));
		for (i = 0; i < m->maxslots; i++)
			if (m->slots[i].pid > 0)
				kill(m->slots[i].pid, SIGKILL);
		if (m->retiring > 0)
			kill(m->retiring, SIGKILL);
		m->deadline = now + 5.0;
	}
	return m->deadline < wake ? m->deadline : wake;
}

/*
 * A worker in every slot: an empty one is filled once its back-off has
 * passed, one beyond the slots a reload left is retired.  The time to look
 * again, no later than wake.
 */
static double
keep_workers(struct master *m, double now, double wake)
{
	struct slot	*s;
	int		 i;

	for (i = 0; i < m->maxslots; i++) {
		s = &m->slots[i];
		if (i >= m->nslots) {
			/* Fewer workers after a reload. */
			if (s->pid > 0 && m->retiring == 0) {
				m->retiring = s->pid;
				s->pid = 0;
				kill(m->retiring, SIGTERM);
			}
			continue;
		}
		if (s->pid != 0)
			continue;
		if (s->next_start <= now)
			spawn(m, i);
		else if (s->next_start < wake)
			wake = s->next_start;
	}
	return wake;
}

int
master_run(struct config *cfg, const struct worker_app *app)
{
	struct master	*m;
	struct timespec	 ts;
	sigset_t	 waitmask;
	double		 now, wake;
	int		 code;

	if ((m = calloc(1, sizeof(*m))) == NULL) {
		log_error("calloc: starting the master: out of memory");
		config_free(cfg);
		return 1;
	}
	m->cfg = cfg;
	m->app = app;
	m->nslots = m->maxslots = config_workers(cfg);
	if (m->nslots > MAX_SLOTS)
		m->nslots = m->maxslots = MAX_SLOTS;
	signals_init(&waitmask);
	if ((m->listen_fd = listen_open(m)) == -1) {
		code = 1;
		goto out;
	}
	if (app->shared_size != NULL && share_memory(m) == -1) {
		code = 1;
		goto out;
	}
	log_info("keygated %s starting %d workers (%s mode)", PACKAGE_VERSION,
	    m->nslots, config_mode_names[cfg->mode]);

	for (;;) {
		take_signals(m);
		now = clock_mono();
		wake = now + 1.0;
		if (m->stopping) {
			if (live_children(m) == 0)
				break;
			wake = stop_step(m, now, wake);
		} else {
			replace_step(m);
			wake = keep_workers(m, now, wake);
		}
		now = clock_mono();
		if (wake < now)
			wake = now;
		ts.tv_sec = (time_t)(wake - now);
		ts.tv_nsec = (long)((wake - now - (double)ts.tv_sec) * 1e9);
		/* Signals are delivered only here, atomically with the wait. */
		if (!pending_child && !pending_stop && !pending_reload)
			(void)ppoll(NULL, 0, &ts, &waitmask);
	}
	code = m->exit_code;
	log_info("stopped");
out:
	if (m->listen_fd > 0)
		close(m->listen_fd);
	if (m->unix_path != NULL) {
		unlink(m->unix_path);
		free(m->unix_path);
	}
	if (m->shared != NULL)
		munmap(m->shared, m->shared_len);
	config_free(m->cfg);
	free(m);
	return code;
}
