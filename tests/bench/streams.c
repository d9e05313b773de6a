/*
 * keygate-streams: what waiting on many provider streams costs, one thread
 * per stream (as keygated's workers do today) or one thread driving all of
 * them through libcurl's multi interface (the event loop keygated(8) names
 * as the alternative: curl_multi_socket_action() told by epoll which
 * sockets are ready, so that a turn costs what is ready, not every
 * stream), or that loop reading for threads that wait on a condition
 * variable, each woken with the pieces of its own stream (the loop does
 * the network, a thread per stream does what the pieces need).  Nothing
 * of keygated runs: only libcurl, reading streams from the benchmarks'
 * mock and throwing them away, so the difference is the waiting alone.
 *
 *   keygate-streams threads|loop|handoff STREAMS ROUNDS URL
 *
 * Opens STREAMS streams at once, each ROUNDS times in a row, and prints
 * the wall time, the CPU time per stream and the context switches.
 */
#include "autoconfig.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char body[] = "{\"model\":\"gpt-4o-mini\",\"stream\":true,"
    "\"messages\":[{\"role\":\"user\",\"content\":\"Say ok.\"}]}";
static const char	*url;
static struct curl_slist *headers;
static long		 rounds;
static long		 received;	/* bytes, all streams */
static long		 failed;	/* streams */

static size_t
drop(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	__atomic_add_fetch(&received, (long)(size * n), __ATOMIC_RELAXED);
	return size * n;
}

static CURL *
stream_handle(void)
{
	CURL	*h;

	if ((h = curl_easy_init()) == NULL)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, drop);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 1024L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
	return h;
}

static void
count(CURLcode rc, CURL *h)
{
	long	 status = 0;

	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK || status != 200)
		__atomic_add_fetch(&failed, 1, __ATOMIC_RELAXED);
}

static void *
one_thread(void *arg)
{
	CURL	*h;
	long	 i;

	(void)arg;
	if ((h = stream_handle()) == NULL) {
		__atomic_add_fetch(&failed, rounds, __ATOMIC_RELAXED);
		return NULL;
	}
	for (i = 0; i < rounds; i++)
		count(curl_easy_perform(h), h);
	curl_easy_cleanup(h);
	return NULL;
}

static int
threads(long n)
{
	pthread_t	*t;
	pthread_attr_t	 attr;
	long		 i, started = 0;

	if ((t = calloc((size_t)n, sizeof(*t))) == NULL)
		return -1;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256u << 10);	/* as keygated's */
	for (i = 0; i < n; i++) {
		if (pthread_create(&t[started], &attr, one_thread, NULL) != 0) {
			__atomic_add_fetch(&failed, rounds, __ATOMIC_RELAXED);
			continue;
		}
		started++;
	}
	pthread_attr_destroy(&attr);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	free(t);
	return 0;
}

/* The loop's epoll set and curl's next timeout. */
static int	 epfd = -1;
static long	 timeout_ms = -1;

static int
on_socket(CURL *h, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct epoll_event ev;

	(void)h;
	(void)arg;
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = fd;
	if (what == CURL_POLL_REMOVE) {
		(void)epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) |
	    (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == -1)
		(void)epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
	(void)sockp;
	return 0;
}

static int
on_timer(CURLM *m, long ms, void *arg)
{
	(void)m;
	(void)arg;
	timeout_ms = ms;
	return 0;
}

/* Tells curl what epoll said of one of its sockets. */
static void
ready(CURLM *m, const struct epoll_event *ev, int *running)
{
	int	 flags;

	flags = (ev->events & EPOLLIN ? CURL_CSELECT_IN : 0) |
	    (ev->events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
	    (ev->events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
	curl_multi_socket_action(m, ev->data.fd, flags, running);
}

/* Takes the ended streams off, and starts the next round of each. */
static void
ended(CURLM *m)
{
	CURLMsg		*msg;
	CURL		*h;
	long		*left;
	int		 queued;

	while ((msg = curl_multi_info_read(m, &queued)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		h = msg->easy_handle;
		count(msg->data.result, h);
		curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&left);
		curl_multi_remove_handle(m, h);
		if (--*left > 0)
			curl_multi_add_handle(m, h);
		else
			curl_easy_cleanup(h);
	}
}

static int
loop(long n)
{
	struct epoll_event ev[256];
	CURLM		*m;
	CURL		*h;
	long		*left;
	long		 i;
	int		 running = 1, k, j;

	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (m = curl_multi_init()) == NULL ||
	    (left = calloc((size_t)n, sizeof(*left))) == NULL)
		return -1;
	curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
	for (i = 0; i < n; i++) {
		if ((h = stream_handle()) == NULL) {
			failed += rounds;
			continue;
		}
		left[i] = rounds;
		curl_easy_setopt(h, CURLOPT_PRIVATE, (void *)&left[i]);
		curl_multi_add_handle(m, h);
	}
	curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
	while (running > 0) {
		k = epoll_wait(epfd, ev, 256, timeout_ms < 0 ? 1000 :
		    (int)timeout_ms);
		if (k == 0)
			curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0,
			    &running);
		for (j = 0; j < k; j++)
			ready(m, &ev[j], &running);
		ended(m);
		/* A round started: curl counts it once it has run. */
		if (running == 0)
			curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0,
			    &running);
	}
	curl_multi_cleanup(m);
	close(epfd);
	free(left);
	return 0;
}

/*
 * handoff: one loop thread drives every transfer; the thread of each
 * stream hands its handle to the loop and sleeps until the loop gives it
 * pieces (copied into its buffer) or the end.
 */
struct waiter {
	struct waiter	*next;		/* in the loop's inbox */
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	CURL		*h;
	char		 buf[16384];
	size_t		 len;		/* bytes in buf */
	int		 done;
	CURLcode	 rc;
};

static pthread_mutex_t	 inbox_mu = PTHREAD_MUTEX_INITIALIZER;
static struct waiter	*inbox;
static int		 inbox_fd = -1;
static long		 waiting_streams;	/* still to finish, all rounds */

static size_t
hand_piece(char *p, size_t size, size_t n, void *arg)
{
	struct waiter	*wt = arg;
	size_t		 len = size * n;

	pthread_mutex_lock(&wt->mu);
	if (wt->len + len > sizeof(wt->buf)) {
		pthread_mutex_unlock(&wt->mu);
		return CURL_WRITEFUNC_PAUSE;	/* not in this benchmark */
	}
	memcpy(wt->buf + wt->len, p, len);
	if (wt->len == 0)
		pthread_cond_signal(&wt->cv);
	wt->len += len;
	pthread_mutex_unlock(&wt->mu);
	return len;
}

static void *
hand_thread(void *arg)
{
	struct waiter	 wt;
	char		 mine[sizeof(wt.buf)];
	uint64_t	 one = 1;
	size_t		 n;
	long		 i;

	(void)arg;
	memset(&wt, 0, sizeof(wt));
	pthread_mutex_init(&wt.mu, NULL);
	pthread_cond_init(&wt.cv, NULL);
	if ((wt.h = stream_handle()) == NULL) {
		__atomic_add_fetch(&failed, rounds, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&waiting_streams, rounds, __ATOMIC_RELAXED);
		return NULL;
	}
	curl_easy_setopt(wt.h, CURLOPT_WRITEFUNCTION, hand_piece);
	curl_easy_setopt(wt.h, CURLOPT_WRITEDATA, &wt);
	curl_easy_setopt(wt.h, CURLOPT_PRIVATE, (void *)&wt);
	for (i = 0; i < rounds; i++) {
		wt.done = 0;
		pthread_mutex_lock(&inbox_mu);
		wt.next = inbox;
		inbox = &wt;
		pthread_mutex_unlock(&inbox_mu);
		(void)!write(inbox_fd, &one, sizeof(one));
		pthread_mutex_lock(&wt.mu);
		for (;;) {
			while (wt.len == 0 && !wt.done)
				pthread_cond_wait(&wt.cv, &wt.mu);
			n = wt.len;
			memcpy(mine, wt.buf, n);
			wt.len = 0;
			if (n == 0 && wt.done)
				break;
			pthread_mutex_unlock(&wt.mu);
			drop(mine, 1, n, NULL);
			pthread_mutex_lock(&wt.mu);
		}
		pthread_mutex_unlock(&wt.mu);
		count(wt.rc, wt.h);
		__atomic_sub_fetch(&waiting_streams, 1, __ATOMIC_RELAXED);
	}
	curl_easy_cleanup(wt.h);
	pthread_cond_destroy(&wt.cv);
	pthread_mutex_destroy(&wt.mu);
	return NULL;
}

static void *
hand_loop(void *arg)
{
	struct epoll_event ev[256];
	struct waiter	*wt, *next;
	CURLMsg		*msg;
	CURLM		*m = arg;
	uint64_t	 count8;
	int		 running = 0, k, j, queued;

	while (__atomic_load_n(&waiting_streams, __ATOMIC_RELAXED) > 0) {
		k = epoll_wait(epfd, ev, 256, timeout_ms < 0 ? 100 :
		    (int)timeout_ms);
		if (k == 0)
			curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0,
			    &running);
		for (j = 0; j < k; j++) {
			if (ev[j].data.fd == inbox_fd) {
				(void)!read(inbox_fd, &count8, sizeof(count8));
				pthread_mutex_lock(&inbox_mu);
				wt = inbox;
				inbox = NULL;
				pthread_mutex_unlock(&inbox_mu);
				for (; wt != NULL; wt = next) {
					next = wt->next;
					curl_multi_add_handle(m, wt->h);
				}
				continue;
			}
			ready(m, &ev[j], &running);
		}
		while ((msg = curl_multi_info_read(m, &queued)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
			    (char **)&wt);
			curl_multi_remove_handle(m, wt->h);
			pthread_mutex_lock(&wt->mu);
			wt->rc = msg->data.result;
			wt->done = 1;
			pthread_cond_signal(&wt->cv);
			pthread_mutex_unlock(&wt->mu);
		}
	}
	return NULL;
}

static int
handoff(long n)
{
	struct epoll_event ev;
	pthread_t	*t, lt;
	pthread_attr_t	 attr;
	CURLM		*m;
	long		 i, started = 0;

	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (inbox_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (m = curl_multi_init()) == NULL ||
	    (t = calloc((size_t)n, sizeof(*t))) == NULL)
		return -1;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.fd = inbox_fd;
	(void)epoll_ctl(epfd, EPOLL_CTL_ADD, inbox_fd, &ev);
	curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
	waiting_streams = n * rounds;
	if (pthread_create(&lt, NULL, hand_loop, m) != 0)
		return -1;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256u << 10);
	for (i = 0; i < n; i++) {
		if (pthread_create(&t[started], &attr, hand_thread, NULL) !=
		    0) {
			__atomic_add_fetch(&failed, rounds, __ATOMIC_RELAXED);
			__atomic_sub_fetch(&waiting_streams, rounds,
			    __ATOMIC_RELAXED);
			continue;
		}
		started++;
	}
	pthread_attr_destroy(&attr);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	(void)!write(inbox_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
	pthread_join(lt, NULL);
	curl_multi_cleanup(m);
	free(t);
	return 0;
}

int
main(int argc, char *argv[])
{
	struct timespec	 t0, t1;
	struct rusage	 ru;
	double		 wall, cpu;
	long		 n;
	int		 rc;

	if (argc != 5 || (strcmp(argv[1], "threads") != 0 &&
	    strcmp(argv[1], "loop") != 0 &&
	    strcmp(argv[1], "handoff") != 0) || (n = atol(argv[2])) < 1 ||
	    (rounds = atol(argv[3])) < 1) {
		fprintf(stderr, "usage: keygate-streams threads|loop|handoff "
		    "STREAMS "
		    "ROUNDS URL\n");
		return 2;
	}
	url = argv[4];
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    (headers = curl_slist_append(NULL,
	    "Content-Type: application/json")) == NULL) {
		fprintf(stderr, "keygate-streams: libcurl did not start\n");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = argv[1][0] == 't' ? threads(n) : argv[1][0] == 'l' ? loop(n) :
	    handoff(n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rc == -1) {
		fprintf(stderr, "keygate-streams: out of memory\n");
		return 1;
	}
	getrusage(RUSAGE_SELF, &ru);
	wall = (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	printf("%-7s %6ld %7ld %8.2f %8.2f %8.3f %9ld %6ld\n", argv[1], n,
	    n * rounds, wall, cpu, cpu * 1000 / (double)(n * rounds),
	    ru.ru_nvcsw + ru.ru_nivcsw, failed);
	curl_slist_free_all(headers);
	curl_global_cleanup();
	return failed > 0;
}
