#include "autoconfig.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <string.h>

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
	CURL		*h;
	size_t		 max;
	long		 idle;		/* s allowed without a byte, 0 = any */
	double		 last_byte;	/* monotonic s */
	int		 too_large;
	int		 aborted;
	int		 idled;
	int		 left;		/* gone() said so */
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

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
	struct sink	*s = arg;
	size_t		 len = size * n;

	long		 status = 0;
	int		 rc;

	s->last_byte = clock_mono();
	if (s->fn != NULL) {
		/* Still waiting: fn takes what it needs (upstream.h). */
		curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
		rc = s->fn(s->ctx, status, p, len);
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
 * Kept connections: the handles of finished calls, each with the
 * connection it made, kept to be used again by any thread, and the DNS
 * answers and TLS sessions, shared by all of them (so that a new
 * connection resumes a TLS session instead of a full handshake).  The
 * connections themselves are not shared between handles: libcurl does
 * not support that across threads.
 */
#define UPSTREAM_KEPT_HANDLES 256

struct upstream {
	pthread_mutex_t	 mu;		/* guards idle[] */
	CURL		*idle[UPSTREAM_KEPT_HANDLES];	/* oldest first */
	double		 since[UPSTREAM_KEPT_HANDLES];	/* given back at,
							   monotonic s */
	int		 nidle;
	CURLSH		*share;		/* NULL = none (out of memory) */
	pthread_mutex_t	 locks[CURL_LOCK_DATA_LAST];
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

struct upstream *
upstream_new(void)
{
	struct upstream	*u;
	int		 i;

	if ((u = calloc(1, sizeof(*u))) == NULL)
		return NULL;
	pthread_mutex_init(&u->mu, NULL);
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
	return u;
}

void
upstream_free(struct upstream *u)
{
	int	 i;

	if (u == NULL)
		return;
	for (i = 0; i < u->nidle; i++)
		curl_easy_cleanup(u->idle[i]);
	if (u->share != NULL)
		curl_share_cleanup(u->share);
	free(u);
}

int
upstream_trim(struct upstream *u, int keep, double idle, int *left)
{
	CURL	*h;
	double	 now = clock_mono();
	int	 freed = 0, n = 0;

	for (; u != NULL; freed++) {
		h = NULL;
		pthread_mutex_lock(&u->mu);
		if (u->nidle > keep && now - u->since[0] >= idle) {
			h = u->idle[0];
			u->nidle--;
			memmove(u->idle, u->idle + 1, u->nidle * sizeof(*u->idle));
			memmove(u->since, u->since + 1,
			    u->nidle * sizeof(*u->since));
		}
		n = u->nidle;
		pthread_mutex_unlock(&u->mu);
		if (h == NULL)
			break;
		curl_easy_cleanup(h);
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
	if (rc == CURLE_OK)
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
	sink->idle = c->idle_timeout;
	sink->last_byte = clock_mono();
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, sink);
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
	rc = curl_easy_perform(h);
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
