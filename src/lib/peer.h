#ifndef KEYGATE_LIB_PEER_H
#define KEYGATE_LIB_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A client's TCP connection to the web server, as this host's kernel knows
 * it (sock_diag), for web servers that do not pass on a client that left
 * while they wait for the answer's first byte.
 *
 * The connection is named by the FastCGI parameters SERVER_ADDR,
 * SERVER_PORT, REMOTE_ADDR and REMOTE_PORT.  peer_find() looks it up once,
 * while the client is surely there (it just sent its request); only a
 * connection found open then is watched, so a web server on another host,
 * in another network namespace or behind an address rewrite is never
 * judged gone, only not watched.
 */
struct peer {
	bool		 known;		/* found open by peer_find() */
	uint8_t		 family;	/* AF_INET or AF_INET6 */
	uint16_t	 local_port;	/* host order */
	uint16_t	 remote_port;
	uint8_t		 local[16];	/* network order, 4 or 16 bytes */
	uint8_t		 remote[16];
	uint32_t	 cookie[2];	/* the kernel's name for the socket */
};

enum peer_state {
	PEER_OPEN,		/* established, the client still sending */
	PEER_GONE,		/* reset, closed, or the client sent its FIN */
	PEER_UNKNOWN,		/* not watched, or the kernel did not say */
	PEER__MAX
};

/*
 * Looks up the established connection local:lport <-> remote:rport (numeric
 * addresses and ports as web servers pass them; NULL is allowed).  True
 * when it was found; p is then watched.
 */
bool		 peer_find(struct peer *p, const char *local, const char *lport,
		    const char *remote, const char *rport);
/* Where the connection p stands now.  Safe from several threads. */
enum peer_state	 peer_state(const struct peer *p);
/*
 * peer_state() of p[0..n) into out[0..n), the questions sent to the
 * kernel 64 at a time in one message and their answers read at once.
 */
void		 peer_states(const struct peer *const *p, size_t n,
		    enum peer_state *out);
/* The messages this thread has sent the kernel so far. */
unsigned long	 peer_questions(void);

#endif
