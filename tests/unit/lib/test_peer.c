/*
 * Unit tests for src/lib/peer.c: a client's TCP connection as the kernel
 * sees it, looked up by the four numbers a web server passes over FastCGI.
 * Real loopback connections: the test plays both the client and the web
 * server's end.
 */
#include "../unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/peer.h"

/* One client connection, and the web server's end of it, as strings. */
struct conn {
	int	 listener, client, server;
	char	 local[INET6_ADDRSTRLEN], lport[8];
	char	 remote[INET6_ADDRSTRLEN], rport[8];
};

static void
name_of(const struct sockaddr_storage *ss, char *addr, size_t alen,
    char *port, size_t plen)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)alen);
		snprintf(port, plen, "%u", ntohs(in->sin_port));
	} else {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)alen);
		snprintf(port, plen, "%u", ntohs(in6->sin6_port));
	}
}

/*
 * Connects to a listener on family's loopback (with dual set, an IPv6
 * listener reached over IPv4).  False when the host has no such loopback.
 */
static bool
conn_open(struct conn *c, int family, bool dual)
{
	struct sockaddr_storage ss;
	socklen_t	 len;
	int		 off = 0;

	memset(c, 0, sizeof(*c));
	memset(&ss, 0, sizeof(ss));
	c->listener = socket(family, SOCK_STREAM, 0);
	assert_true(c->listener >= 0);
	if (family == AF_INET) {
		struct sockaddr_in *in = (void *)&ss;

		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (void *)&ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_addr = dual ? in6addr_any : in6addr_loopback;
		len = sizeof(*in6);
		setsockopt(c->listener, IPPROTO_IPV6, IPV6_V6ONLY, &off,
		    sizeof(off));
	}
	if (bind(c->listener, (struct sockaddr *)&ss, len) == -1) {
		close(c->listener);
		return false;
	}
	assert_int_equal(listen(c->listener, 4), 0);
	len = sizeof(ss);
	assert_int_equal(getsockname(c->listener, (struct sockaddr *)&ss,
	    &len), 0);
	if (dual) {
		struct sockaddr_in *in = (void *)&ss;
		in_port_t	 port = ((struct sockaddr_in6 *)&ss)->sin6_port;

		memset(&ss, 0, sizeof(ss));
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		in->sin_port = port;
		len = sizeof(*in);
	}
	c->client = socket(ss.ss_family, SOCK_STREAM, 0);
	assert_true(c->client >= 0);
	assert_int_equal(connect(c->client, (struct sockaddr *)&ss, len), 0);
	c->server = accept(c->listener, NULL, NULL);
	assert_true(c->server >= 0);

	/* What a web server would pass: its end's two halves. */
	len = sizeof(ss);
	assert_int_equal(getsockname(c->server, (struct sockaddr *)&ss, &len),
	    0);
	name_of(&ss, c->local, sizeof(c->local), c->lport, sizeof(c->lport));
	len = sizeof(ss);
	assert_int_equal(getpeername(c->server, (struct sockaddr *)&ss, &len),
	    0);
	name_of(&ss, c->remote, sizeof(c->remote), c->rport,
	    sizeof(c->rport));
	return true;
}

static void
conn_close(struct conn *c)
{
	if (c->client >= 0)
		close(c->client);
	if (c->server >= 0)
		close(c->server);
	close(c->listener);
}

/* The client closes its connection: a FIN. */
static void
client_closes(struct conn *c)
{
	close(c->client);
	c->client = -1;
}

/* The client resets its connection, as one that gives up may. */
static void
client_resets(struct conn *c)
{
	struct linger	 l = { 1, 0 };

	assert_int_equal(setsockopt(c->client, SOL_SOCKET, SO_LINGER, &l,
	    sizeof(l)), 0);
	close(c->client);
	c->client = -1;
}

static bool
find(struct peer *p, const struct conn *c)
{
	return peer_find(p, c->local, c->lport, c->remote, c->rport);
}

/* Found while the client is there, gone once it closed (a FIN). */
static void
test_a_closed_connection_is_gone(void **state)
{
	struct conn	 c;
	struct peer	 p;

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	assert_true(find(&p, &c));
	assert_true(p.known);
	assert_int_equal(peer_state(&p), PEER_OPEN);
	assert_int_equal(peer_state(&p), PEER_OPEN);
	client_closes(&c);
	assert_int_equal(peer_state(&p), PEER_GONE);
	/* Once the web server closes its end too, it stays gone. */
	close(c.server);
	c.server = -1;
	assert_int_equal(peer_state(&p), PEER_GONE);
	conn_close(&c);
}

static void
test_a_reset_connection_is_gone(void **state)
{
	struct conn	 c;
	struct peer	 p;

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	assert_true(find(&p, &c));
	client_resets(&c);
	assert_int_equal(peer_state(&p), PEER_GONE);
	conn_close(&c);
}

/* A client that only stops writing is still there until it closes. */
static void
test_data_waiting_to_be_read_is_not_leaving(void **state)
{
	struct conn	 c;
	struct peer	 p;

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	assert_true(find(&p, &c));
	assert_int_equal(write(c.client, "more", 4), 4);
	assert_int_equal(peer_state(&p), PEER_OPEN);
	conn_close(&c);
}

static void
test_ipv6_and_ipv4_through_a_dual_stack_listener(void **state)
{
	struct conn	 c;
	struct peer	 p;

	(void)state;
	if (!conn_open(&c, AF_INET6, false))
		skip();
	assert_true(find(&p, &c));
	assert_int_equal(p.family, AF_INET6);
	assert_int_equal(peer_state(&p), PEER_OPEN);
	client_resets(&c);
	assert_int_equal(peer_state(&p), PEER_GONE);
	conn_close(&c);

	/*
	 * An IPv4 client of a listener on [::]: the socket is IPv6, and web
	 * servers name the addresses either way.
	 */
	assert_true(conn_open(&c, AF_INET6, true));
	assert_true(find(&p, &c));
	assert_int_equal(peer_state(&p), PEER_OPEN);
	if (strncmp(c.remote, "::ffff:", 7) == 0) {
		assert_true(peer_find(&p, c.local + 7, c.lport, c.remote + 7,
		    c.rport));
		assert_int_equal(peer_state(&p), PEER_OPEN);
	}
	client_closes(&c);
	assert_int_equal(peer_state(&p), PEER_GONE);
	conn_close(&c);
}

/*
 * A web server may name another port as its own than its socket's
 * (Apache's SERVER_PORT is the configured one): the connection is found
 * by its client's end.
 */
static void
test_a_server_port_that_is_not_the_sockets(void **state)
{
	struct conn	 c;
	struct peer	 p;

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	assert_true(peer_find(&p, c.local, "80", c.remote, c.rport));
	assert_int_equal(p.local_port, atoi(c.lport));
	assert_int_equal(peer_state(&p), PEER_OPEN);
	client_closes(&c);
	assert_int_equal(peer_state(&p), PEER_GONE);
	conn_close(&c);
}

/*
 * Numbers that name no established connection are not watched, so they
 * are never judged gone: a web server on another host, an address
 * rewritten from a forwarding header, the listener itself.
 */
static void
test_what_is_not_found_is_never_gone(void **state)
{
	struct conn	 c;
	struct peer	 p;
	char		 port[8];

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	/* The listener's numbers, a client port nobody uses. */
	snprintf(port, sizeof(port), "%u",
	    (unsigned)(atoi(c.rport) == 65535 ? 1 : atoi(c.rport) + 1));
	assert_false(peer_find(&p, c.local, c.lport, c.remote, port));
	assert_false(p.known);
	assert_int_equal(peer_state(&p), PEER_UNKNOWN);
	assert_false(peer_find(&p, c.local, c.lport, "192.0.2.7", c.rport));
	assert_false(peer_find(&p, "192.0.2.1", c.lport, c.remote, c.rport));
	assert_int_equal(peer_state(&p), PEER_UNKNOWN);
	conn_close(&c);
}

static void
test_what_a_web_server_might_send_otherwise(void **state)
{
	static const char *const ports[] = { NULL, "", "0", "65536", "-1",
	    "80a", " 80", "123456", "0x50" };
	static const char *const addrs[] = { NULL, "", "localhost",
	    "unix:", "127.0.0.1:80", "[::1]", "fe80::1%eth0", "1.2.3" };
	struct peer	 p;
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		assert_false(peer_find(&p, "127.0.0.1", "80", "127.0.0.1",
		    ports[i]));
		assert_false(peer_find(&p, "127.0.0.1", ports[i], "127.0.0.1",
		    "80"));
	}
	for (i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		assert_false(peer_find(&p, addrs[i], "80", "127.0.0.1",
		    "40000"));
		assert_false(peer_find(&p, "127.0.0.1", "80", addrs[i],
		    "40000"));
		assert_false(p.known);
	}
	assert_int_equal(peer_state(&p), PEER_UNKNOWN);
}

static void *
ask_often(void *arg)
{
	const struct peer *p = arg;
	int		 i, open = 0;

	for (i = 0; i < 500; i++)
		open += peer_state(p) == PEER_OPEN;
	return (void *)(intptr_t)open;
}

/* Threads ask at once, each on a socket of its own, and get their answers. */
static void
test_threads_and_forked_children_ask_at_once(void **state)
{
	struct conn	 c;
	struct peer	 p;
	pthread_t	 t[4];
	void		*open;
	int		 i, status;
	pid_t		 pid;

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	assert_true(find(&p, &c));
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, ask_often, &p),
		    0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &open), 0);
		assert_int_equal((intptr_t)open, 500);
	}
	/* A child opens its own socket: its answers are not the parent's. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(peer_state(&p) == PEER_OPEN &&
		    ask_often(&p) == (void *)(intptr_t)500 ? 0 : 1);
	assert_int_equal(peer_state(&p), PEER_OPEN);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	client_resets(&c);
	assert_int_equal(peer_state(&p), PEER_GONE);
	conn_close(&c);
}

/*
 * After 16 lookups in a row that found nothing (a web server elsewhere),
 * only one request in 64 looks (the 17th miss was one); one that finds its connection again makes
 * every request look.  In a child, as the count is the process's.
 */
static void
test_a_run_of_misses_looks_less_often(void **state)
{
	struct conn	 c;
	struct peer	 p;
	int		 i, tries, status;
	pid_t		 pid;

	(void)state;
	assert_true(conn_open(&c, AF_INET, false));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (i = 0; i < 17; i++)
			if (peer_find(&p, "192.0.2.1", "80", "192.0.2.2",
			    "40000"))
				_exit(1);
		for (tries = 1; !find(&p, &c); tries++)
			if (tries > 64)
				_exit(2);
		if (tries == 1)
			_exit(3);	/* it looked every time */
		for (i = 0; i < 100; i++)
			if (!find(&p, &c))
				_exit(4);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	conn_close(&c);
}

/*
 * Hundreds of connections asked about at once: their questions go to the
 * kernel 64 to a message, and each answer is the one a question of its
 * own gets.
 */
static void
test_many_connections_asked_together(void **state)
{
	enum { N = 300 };
	struct sockaddr_in in;
	socklen_t	 len = sizeof(in);
	struct conn	*c = calloc(N, sizeof(*c));
	struct peer	*p = calloc(N + 2, sizeof(*p));
	const struct peer **list = calloc(N + 3, sizeof(*list));
	enum peer_state	*got = calloc(N + 3, sizeof(*got));
	int		 listener, i, resets = 0;
	unsigned long	 before;

	(void)state;
	assert_non_null(c);
	assert_non_null(p);
	assert_non_null(list);
	assert_non_null(got);
	listener = socket(AF_INET, SOCK_STREAM, 0);
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(listener, (struct sockaddr *)&in, sizeof(in)),
	    0);
	assert_int_equal(listen(listener, 16), 0);
	assert_int_equal(getsockname(listener, (struct sockaddr *)&in, &len),
	    0);
	for (i = 0; i < N; i++) {
		struct sockaddr_storage ss;

		c[i].listener = -1;
		c[i].client = socket(AF_INET, SOCK_STREAM, 0);
		assert_int_equal(connect(c[i].client, (struct sockaddr *)&in,
		    sizeof(in)), 0);
		c[i].server = accept(listener, NULL, NULL);
		assert_true(c[i].server >= 0);
		len = sizeof(ss);
		assert_int_equal(getsockname(c[i].server,
		    (struct sockaddr *)&ss, &len), 0);
		name_of(&ss, c[i].local, sizeof(c[i].local), c[i].lport,
		    sizeof(c[i].lport));
		len = sizeof(ss);
		assert_int_equal(getpeername(c[i].server,
		    (struct sockaddr *)&ss, &len), 0);
		name_of(&ss, c[i].remote, sizeof(c[i].remote), c[i].rport,
		    sizeof(c[i].rport));
		assert_true(find(&p[i], &c[i]));
		list[i] = &p[i];
	}
	/* Every third client closes, every seventh resets, one server end
	 * is closed after its client's FIN; the rest stay. */
	for (i = 0; i < N; i++)
		if (i % 3 == 0)
			client_closes(&c[i]);
		else if (i % 7 == 0) {
			client_resets(&c[i]);
			resets++;
		}
	close(c[3].server);
	c[3].server = -1;
	/* Two calls on one connection, and one never found. */
	list[N] = &p[1];
	assert_false(peer_find(&p[N + 1], "192.0.2.1", "80", "192.0.2.2",
	    "40000"));
	list[N + 1] = &p[N + 1];
	list[N + 2] = &p[2];
	before = peer_questions();
	peer_states(list, N + 3, got);
	/* 302 known peers (one of them twice): five messages. */
	assert_int_equal(peer_questions() - before, (N + 1 + 63) / 64);
	assert_true(resets > 0);
	for (i = 0; i < N; i++) {
		enum peer_state want = i % 3 == 0 || i % 7 == 0 ? PEER_GONE :
		    PEER_OPEN;

		assert_int_equal(got[i], want);
		assert_int_equal(peer_state(&p[i]), want);
	}
	assert_int_equal(got[N], PEER_OPEN);
	assert_int_equal(got[N + 1], PEER_UNKNOWN);
	assert_int_equal(got[N + 2], PEER_OPEN);
	/* A few, and one alone. */
	before = peer_questions();
	peer_states(list + 1, 10, got);
	assert_int_equal(peer_questions() - before, 1);
	for (i = 0; i < 10; i++)
		assert_int_equal(got[i], (i + 1) % 3 == 0 || (i + 1) % 7 == 0 ?
		    PEER_GONE : PEER_OPEN);
	before = peer_questions();
	peer_states(list + 4, 1, got);
	assert_int_equal(peer_questions() - before, 1);
	assert_int_equal(got[0], PEER_OPEN);
	for (i = 0; i < N; i++) {
		if (c[i].client >= 0)
			close(c[i].client);
		if (c[i].server >= 0)
			close(c[i].server);
	}
	close(listener);
	free(c);
	free(p);
	free(list);
	free(got);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_a_closed_connection_is_gone),
    cmocka_unit_test(test_a_reset_connection_is_gone),
    cmocka_unit_test(test_data_waiting_to_be_read_is_not_leaving),
    cmocka_unit_test(test_ipv6_and_ipv4_through_a_dual_stack_listener),
    cmocka_unit_test(test_a_server_port_that_is_not_the_sockets),
    cmocka_unit_test(test_what_is_not_found_is_never_gone),
    cmocka_unit_test(test_what_a_web_server_might_send_otherwise),
    cmocka_unit_test(test_threads_and_forked_children_ask_at_once),
    cmocka_unit_test(test_a_run_of_misses_looks_less_often),
    cmocka_unit_test(test_many_connections_asked_together))
