/*
 * The client's TCP connection, asked of the kernel.
 *
 * lighttpd stops watching a client once its whole request has arrived and
 * until the answer begins, and Apache's mod_proxy_fcgi watches it only
 * while writing to it: a client that leaves while a provider thinks is
 * noticed by neither, and the FastCGI connection stays open.  The kernel
 * knows, though: the web server's end of the client's connection is
 * reset (gone), half-closed (CLOSE_WAIT: the client sent its FIN, which
 * nginx too takes for a client that left) or still established.
 *
 * A NETLINK_SOCK_DIAG socket per thread, opened on first use, asks by
 * the connection's four numbers (an exact lookup, not a dump).  The kernel
 * answers while the request is being sent, so the answer is read without
 * waiting.  The socket's cookie, taken when it was first found, makes sure
 * a later answer is about the same socket and not a new one that reuses
 * the numbers, nor the listening socket the lookup falls back to.
 */
#include "autoconfig.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/peer.h"

enum lookup {
	LOOKUP_FOUND,		/* the kernel described a socket */
	LOOKUP_NONE,		/* no such socket (any more) */
	LOOKUP_FAILED		/* the kernel could not be asked */
};

/* The kernel's number for an established TCP socket (net/tcp_states.h). */
#define STATE_ESTABLISHED	1

/* The first 12 bytes of an IPv4 address mapped into IPv6. */
static const uint8_t	 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			    0xff, 0xff };

/*
 * Each thread its own socket: thousands of calls, each asking a few times
 * a second, would queue on one socket's lock, and a thread that lost its
 * CPU while holding it would stall the others.  Closed as the thread ends.
 */
static __thread int	 diag_fd = -1;
static __thread unsigned diag_gen;	/* the process diag_fd belongs to */
static atomic_uint	 forks;		/* children made so far, as seen in
					   a child */
static __thread uint32_t diag_seq;
static __thread unsigned long asked;	/* requests sent */
static pthread_key_t	 diag_key;
static pthread_once_t	 diag_once = PTHREAD_ONCE_INIT;
static atomic_uint	 misses;	/* peer_find()s in a row that failed */
static atomic_uint	 skipped;

/* As a thread ends: its socket (kept plus one, 0 being none). */
static void
diag_close(void *p)
{
	close((int)((intptr_t)p - 1));
}

static void
forked(void)
{
	atomic_fetch_add(&forks, 1);
}

static void
diag_key_make(void)
{
	if (pthread_key_create(&diag_key, diag_close) != 0 ||
	    pthread_atfork(NULL, NULL, forked) != 0)
		abort();
}

/*
 * The thread's netlink socket, opened again in a forked child (told by
 * a count of forks rather than by asking the process's id each time).
 */
static int
diag_socket(void)
{
	unsigned gen;

	pthread_once(&diag_once, diag_key_make);
	gen = atomic_load_explicit(&forks, memory_order_relaxed) + 1;
	if (diag_fd >= 0 && diag_gen == gen)
		return diag_fd;
	/* A child's copy of its parent's socket would share its answers. */
	if (diag_fd >= 0)
		close(diag_fd);
	diag_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC,
	    NETLINK_SOCK_DIAG);
	diag_gen = gen;
	(void)pthread_setspecific(diag_key, diag_fd >= 0 ?
	    (void *)(intptr_t)(diag_fd + 1) : NULL);
	return diag_fd;
}

static void
diag_forget(void)
{
	close(diag_fd);
	diag_fd = -1;
	(void)pthread_setspecific(diag_key, NULL);
}

/* What a request's answers are handed to, one socket at a time. */
struct diag_reader {
	void	(*fn)(struct diag_reader *, const struct inet_diag_msg *);
	int	 seen;
};

/*
 * Reads the answers to request seq up to the last (one answer, or a dump's
 * end).  A socket left with a dump half read
 * would refuse the next one: on failure it is closed.
 */
static enum lookup
diag_answers(int fd, uint32_t seq, bool dump, struct diag_reader *rd)
{
	union {
		struct nlmsghdr	 h;
		char		 b[8192];
	}		 buf;
	struct pollfd	 pfd = { fd, POLLIN, 0 };
	ssize_t		 n;
	bool		 waited = false;

	for (;;) {
		struct nlmsghdr *h = &buf.h;
		size_t	 left;

		n = recv(fd, buf.b, sizeof(buf.b), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		/* The kernel answers as it is asked; wait a little at most. */
		if (n < 0 && errno == EAGAIN && !waited) {
			waited = true;
			if (poll(&pfd, 1, 1000) == 1)
				continue;
		}
		if (n <= 0)
			break;
		left = (size_t)n;
		for (; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != seq)
				continue;	/* an answer nobody waits for */
			if (h->nlmsg_type == NLMSG_DONE && dump)
				return rd->seen > 0 ? LOOKUP_FOUND :
				    LOOKUP_NONE;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					goto failed;
				/* ESTALE: the numbers name another socket. */
				if (e->error == -ENOENT || e->error == -ESTALE)
					return LOOKUP_NONE;
				goto failed;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len <
			    NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				goto failed;
			rd->fn(rd, NLMSG_DATA(h));
			rd->seen++;
			if (!dump)
				return LOOKUP_FOUND;
		}
	}
failed:
	diag_forget();
	return LOOKUP_FAILED;
}

/* Sends the request req (len bytes) and reads its answers into rd. */
static enum lookup
diag_ask(struct nlmsghdr *req, size_t len, struct diag_reader *rd)
{
	struct sockaddr_nl	 kernel;
	enum lookup		 rc = LOOKUP_FAILED;
	int			 fd;

	memset(&kernel, 0, sizeof(kernel));
	kernel.nl_family = AF_NETLINK;
	req->nlmsg_len = (uint32_t)len;
	req->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	if ((fd = diag_socket()) >= 0) {
		req->nlmsg_seq = ++diag_seq;
		asked++;
		if (sendto(fd, req, len, 0, (const struct sockaddr *)&kernel,
		    sizeof(kernel)) == (ssize_t)len)
			rc = diag_answers(fd, req->nlmsg_seq,
			    (req->nlmsg_flags & NLM_F_DUMP) != 0, rd);
		else
			diag_forget();
	}
	return rc;
}

/* The request's part that names p's family and addresses. */
static void
diag_request(struct inet_diag_req_v2 *r, const struct peer *p)
{
	size_t	 alen = p->family == AF_INET ? 4 : 16;

	r->sdiag_family = p->family;
	r->sdiag_protocol = IPPROTO_TCP;
	r->id.idiag_sport = htons(p->local_port);
	r->id.idiag_dport = htons(p->remote_port);
	memcpy(r->id.idiag_src, p->local, alen);
	memcpy(r->id.idiag_dst, p->remote, alen);
	r->id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	r->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

struct one_socket {
	struct diag_reader	 rd;
	struct inet_diag_msg	 m;
};

static void
keep_one(struct diag_reader *rd, const struct inet_diag_msg *m)
{
	((struct one_socket *)(void *)rd)->m = *m;
}

/* Asks for the socket p names (its cookie too when p is known). */
static enum lookup
diag_lookup(const struct peer *p, struct inet_diag_msg *out)
{
	struct {
		struct nlmsghdr		 h;
		struct inet_diag_req_v2	 r;
	}			 req;
	struct one_socket	 one = { { keep_one, 0 }, { 0 } };
	enum lookup		 rc;

	memset(&req, 0, sizeof(req));
	req.h.nlmsg_flags = NLM_F_REQUEST;
	diag_request(&req.r, p);
	req.r.idiag_states = ~0U;
	if (p->known) {
		req.r.id.idiag_cookie[0] = p->cookie[0];
		req.r.id.idiag_cookie[1] = p->cookie[1];
	}
	if ((rc = diag_ask(&req.h, sizeof(req), &one.rd)) == LOOKUP_FOUND)
		*out = one.m;
	return rc;
}

/* The sockets of a dump that are p's connection, whatever its own port. */
struct by_remote {
	struct diag_reader	 rd;
	const struct peer	*p;
	int			 matches;
	struct inet_diag_msg	 m;
};

static void
keep_match(struct diag_reader *rd, const struct inet_diag_msg *m)
{
	struct by_remote *br = (struct by_remote *)(void *)rd;
	size_t	 alen = br->p->family == AF_INET ? 4 : 16;

	if (m->idiag_family != br->p->family ||
	    m->idiag_state != STATE_ESTABLISHED ||
	    m->id.idiag_dport != htons(br->p->remote_port) ||
	    memcmp(m->id.idiag_dst, br->p->remote, alen) != 0 ||
	    memcmp(m->id.idiag_src, br->p->local, alen) != 0)
		return;
	br->matches++;
	br->m = *m;
}

/*
 * Finds p's connection by its remote end and local address, for a web
 * server whose SERVER_PORT is not its socket's (Apache's is the configured
 * port unless UseCanonicalPhysicalPort is on).  A dump of the established
 * sockets with the client's port (the kernel compares the ports it is
 * given, 0 being any); exactly one of them must be p's.
 */
static enum lookup
diag_by_remote(struct peer *p, struct inet_diag_msg *out)
{
	struct {
		struct nlmsghdr		 h;
		struct inet_diag_req_v2	 r;
	}			 req;
	struct by_remote	 br = { { keep_match, 0 }, p, 0, { 0 } };
	enum lookup		 rc;

	memset(&req, 0, sizeof(req));
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	diag_request(&req.r, p);
	req.r.idiag_states = 1U << STATE_ESTABLISHED;
	req.r.id.idiag_sport = 0;
	rc = diag_ask(&req.h, sizeof(req), &br.rd);
	if (rc != LOOKUP_FOUND)
		return rc;
	if (br.matches != 1)
		return LOOKUP_NONE;
	*out = br.m;
	p->local_port = ntohs(br.m.id.idiag_sport);
	return LOOKUP_FOUND;
}

/* A port as web servers write it: 1 to 65535, digits only. */
static bool
parse_port(const char *s, uint16_t *port)
{
	unsigned long	 v = 0;

	if (s == NULL || *s == '\0' || strlen(s) > 5)
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* An address as 16 bytes of IPv6, an IPv4 one mapped (::ffff:a.b.c.d). */
static bool
parse_addr(const char *s, uint8_t out[16])
{

	if (s == NULL)
		return false;
	if (inet_pton(AF_INET, s, out + 12) == 1) {
		memcpy(out, mapped, sizeof(mapped));
		return true;
	}
	return inet_pton(AF_INET6, s, out) == 1;
}

/* Tries p as family: true when an established socket answers. */
static bool
find_as(struct peer *p, int family, const uint8_t local[16],
    const uint8_t remote[16])
{
	struct inet_diag_msg m;

	p->family = (uint8_t)family;
	memset(p->local, 0, sizeof(p->local));
	memset(p->remote, 0, sizeof(p->remote));
	if (family == AF_INET) {
		memcpy(p->local, local + 12, 4);
		memcpy(p->remote, remote + 12, 4);
	} else {
		memcpy(p->local, local, 16);
		memcpy(p->remote, remote, 16);
	}
	if ((diag_lookup(p, &m) != LOOKUP_FOUND ||
	    m.idiag_state != STATE_ESTABLISHED) &&
	    diag_by_remote(p, &m) != LOOKUP_FOUND)
		return false;
	p->cookie[0] = m.id.idiag_cookie[0];
	p->cookie[1] = m.id.idiag_cookie[1];
	p->known = true;
	return true;
}

bool
peer_find(struct peer *p, const char *local, const char *lport,
    const char *remote, const char *rport)
{
	uint8_t		 l[16], r[16];
	bool		 v4;

	memset(p, 0, sizeof(*p));
	if (!parse_addr(local, l) || !parse_addr(remote, r) ||
	    !parse_port(lport, &p->local_port) ||
	    !parse_port(rport, &p->remote_port))
		return false;
	/*
	 * A web server on another host or in another namespace is never
	 * found: after a run of misses, only one request in 64 looks.
	 */
	if (atomic_load(&misses) >= 16 &&
	    atomic_fetch_add(&skipped, 1) % 64 != 0)
		return false;
	/* IPv4 clients of a dual-stack listener have IPv6 sockets. */
	v4 = memcmp(l, mapped, 12) == 0 && memcmp(r, mapped, 12) == 0;
	if ((v4 && find_as(p, AF_INET, l, r)) || find_as(p, AF_INET6, l, r)) {
		atomic_store(&misses, 0);
		return true;
	}
	memset(p, 0, sizeof(*p));
	atomic_fetch_add(&misses, 1);
	return false;
}

enum peer_state
peer_state(const struct peer *p)
{
	struct inet_diag_msg m;

	if (!p->known)
		return PEER_UNKNOWN;
	switch (diag_lookup(p, &m)) {
	case LOOKUP_FOUND:
		return m.idiag_state == STATE_ESTABLISHED ? PEER_OPEN :
		    PEER_GONE;
	case LOOKUP_NONE:
		return PEER_GONE;
	case LOOKUP_FAILED:
		break;
	}
	return PEER_UNKNOWN;
}

unsigned long
peer_questions(void)
{
	return asked;
}

/*
 * Questions sent together: one message of BATCH requests, one read of
 * their answers (the kernel answers each as it reads the message, so all
 * are there when sendto() returns).  An answer is at most a few hundred
 * bytes; the socket's default buffer holds BATCH of them many times over.
 */
#define BATCH		64
#define ANSWER_MAX	1024

struct diag_req {
	struct nlmsghdr		 h;
	struct inet_diag_req_v2	 r;
};

/* The buffers of a thread's batches, kept: the provider loop asks often. */
static __thread struct batch_buf {
	struct diag_req	 req[BATCH];
	char		 ans[BATCH][ANSWER_MAX];
	struct mmsghdr	 msg[BATCH];
	struct iovec	 iov[BATCH];
}			*batch_buf;
static pthread_key_t	 batch_key;
static pthread_once_t	 batch_once = PTHREAD_ONCE_INIT;

static void
batch_key_make(void)
{
	if (pthread_key_create(&batch_key, free) != 0)
		abort();
}

/* The state one answer tells, or PEER__MAX when it tells nothing clear. */
static enum peer_state
answer_state(const struct nlmsghdr *h, size_t len)
{
	const struct nlmsgerr *e;
	const struct inet_diag_msg *m;

	if (!NLMSG_OK(h, len))
		return PEER__MAX;
	if (h->nlmsg_type == NLMSG_ERROR) {
		if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			return PEER__MAX;
		e = NLMSG_DATA(h);
		/* ESTALE: the numbers name another socket now. */
		return e->error == -ENOENT || e->error == -ESTALE ? PEER_GONE :
		    PEER__MAX;
	}
	if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return PEER__MAX;
	m = NLMSG_DATA(h);
	return m->idiag_state == STATE_ESTABLISHED ? PEER_OPEN : PEER_GONE;
}

/*
 * Asks about p[0..n) (n <= BATCH, all known) in one message; out[i] is
 * PEER__MAX where no clear answer came.  False when nothing could be sent.
 */
static bool
ask_batch(struct batch_buf *b, const struct peer *const *p, size_t n,
    enum peer_state *out)
{
	struct sockaddr_nl	 kernel;
	uint32_t		 seq0;
	size_t			 i, j, len;
	int			 fd, got;

	memset(&kernel, 0, sizeof(kernel));
	kernel.nl_family = AF_NETLINK;
	if ((fd = diag_socket()) < 0)
		return false;
	seq0 = diag_seq + 1;
	diag_seq += (uint32_t)n;
	for (i = 0; i < n; i++) {
		memset(&b->req[i], 0, sizeof(b->req[i]));
		b->req[i].h.nlmsg_len = sizeof(b->req[i]);
		b->req[i].h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
		b->req[i].h.nlmsg_flags = NLM_F_REQUEST;
		b->req[i].h.nlmsg_seq = seq0 + (uint32_t)i;
		diag_request(&b->req[i].r, p[i]);
		b->req[i].r.idiag_states = ~0U;
		b->req[i].r.id.idiag_cookie[0] = p[i]->cookie[0];
		b->req[i].r.id.idiag_cookie[1] = p[i]->cookie[1];
		out[i] = PEER__MAX;
	}
	asked++;
	len = n * sizeof(b->req[0]);
	if (sendto(fd, b->req, len, 0, (const struct sockaddr *)&kernel,
	    sizeof(kernel)) != (ssize_t)len) {
		diag_forget();
		return false;
	}
	for (i = 0; i < n; i++) {
		b->iov[i].iov_base = b->ans[i];
		b->iov[i].iov_len = ANSWER_MAX;
		memset(&b->msg[i], 0, sizeof(b->msg[i]));
		b->msg[i].msg_hdr.msg_iov = &b->iov[i];
		b->msg[i].msg_hdr.msg_iovlen = 1;
	}
	got = recvmmsg(fd, b->msg, (unsigned)n, MSG_DONTWAIT, NULL);
	for (i = 0; got > 0 && i < (size_t)got; i++) {
		const struct nlmsghdr *h = (const void *)b->ans[i];

		if (b->msg[i].msg_hdr.msg_flags & MSG_TRUNC ||
		    b->msg[i].msg_len < sizeof(*h))
			continue;
		j = h->nlmsg_seq - seq0;
		if (j < n)
			out[j] = answer_state(h, b->msg[i].msg_len);
	}
	/* Anything unread would be taken for the next question's answer. */
	if (got != (int)n)
		diag_forget();
	return true;
}

void
peer_states(const struct peer *const *p, size_t n, enum peer_state *out)
{
	const struct peer *known[BATCH];
	enum peer_state	 st[BATCH];
	size_t		 at[BATCH], i, k, j;

	pthread_once(&batch_once, batch_key_make);
	if (batch_buf == NULL && n > 1 &&
	    (batch_buf = malloc(sizeof(*batch_buf))) != NULL)
		(void)pthread_setspecific(batch_key, batch_buf);
	for (i = 0; i < n; i++)
		out[i] = PEER_UNKNOWN;
	for (i = 0; i < n; ) {
		/* The next BATCH known peers. */
		for (k = 0; i < n && k < BATCH; i++)
			if (p[i]->known) {
				known[k] = p[i];
				at[k++] = i;
			}
		if (k == 0)
			break;
		if (k == 1 || batch_buf == NULL ||
		    !ask_batch(batch_buf, known, k, st))
			for (j = 0; j < k; j++)
				st[j] = PEER__MAX;
		/* No clear answer: asked alone, as peer_state() would. */
		for (j = 0; j < k; j++)
			out[at[j]] = st[j] != PEER__MAX ? st[j] :
			    peer_state(known[j]);
	}
}
