#ifndef KEYGATE_SERVER_REQUEST_H
#define KEYGATE_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "lib/peer.h"

struct worker;
struct json_object;
struct principal;
struct request_io;

#define REQUEST_ID_MAX	128	/* longest X-Request-Id we echo */
#define REQUEST_PARAM_MAX 200	/* longest {id} path segment kept */

/*
 * One HTTP request as the web server handed it to us over FastCGI.  Strings
 * marked borrowed point into libfcgi's parameter block and live until the
 * next request_io_accept().
 */
struct request {
	struct request_io *io;		/* borrowed: the worker's connection */
	struct worker	*w;		/* borrowed: the worker serving it */
	const char	*method;	/* borrowed */
	char		*path;		/* owned, query string removed */
	const char	*query;		/* borrowed, "" when none */
	const char	*remote_addr;	/* borrowed, "" when unknown */
	char		 request_id[REQUEST_ID_MAX + 1];
	char		 param[REQUEST_PARAM_MAX + 1]; /* the {id} segment */
	double		 started;	/* monotonic s */
	int		 body_timeout;	/* s from the first read, 0 = none */
	double		 body_deadline;	/* monotonic s, 0 = not yet reading */
	bool		 authorizer;	/* FCGI_AUTHORIZER, not a responder */
	struct buf	 body;		/* raw request body */
	struct json_object *json;	/* parsed body (owned), NULL = none */
	struct buf	 headers;	/* extra response header lines */
	int		 status;	/* status sent, 0 = not yet */
	bool		 client_gone;	/* a write to the client failed */
	struct peer	 peer;		/* the client's TCP connection */
	double		 gone_asked;	/* monotonic s: request_abandoned() */
	double		 peer_asked;	/* monotonic s: the kernel, last */
	bool		 call_counted;	/* a gateway call in flight, counted */
	/*
	 * Written from the provider loop (request_loop_begin()): the answer
	 * goes out as FastCGI records of our own, sent without waiting;
	 * what the web server cannot take yet waits in out.
	 */
	bool		 in_loop;
	bool		 records;	/* since then, to the end */
	struct buf	 out;		/* records not sent yet, from out_off */
	size_t		 out_off;
	int		 write_timeout;	/* s a write may wait, 0 = any */
	double		 stuck_since;	/* monotonic s out stopped draining */
	struct principal *principal;	/* the authenticated caller (owned,
					   a malloc'd block), or NULL */
	const char	*key_id;	/* authenticated key id, for the log */
	char		 key_id_buf[40];
};

/*
 * A worker's FastCGI endpoint.  request_io_new() wraps the listen socket,
 * which must be non-blocking: a worker that loses the race for a connection
 * to another worker gets 1 from request_io_accept() instead of blocking.
 */
struct request_io *request_io_new(int listen_fd)
		    __attribute__((warn_unused_result));
void		 request_io_free(struct request_io *);
/*
 * Finishes the previous request (if any) and accepts the next one into
 * req: 0 accepted, 1 nothing to accept after all, -1 error (logged).
 */
int		 request_io_accept(struct request_io *, struct request *)
		    __attribute__((warn_unused_result));
/* Ends the current request: flushes and closes the connection. */
void		 request_io_finish(struct request_io *, struct request *);

/* A FastCGI parameter ("HTTP_X_API_KEY", "CONTENT_LENGTH", ...) or NULL. */
const char	*request_param(const struct request *, const char *);
/*
 * The request's deadlines: its body must have arrived within body_s of
 * now, and a write to the client may wait at most write_s.
 */
void		 request_set_deadlines(struct request *, int body_s,
		    int write_s);
/*
 * Reads the body into req->body.  Returns 0, 1 when it is larger than max
 * (only the declared length is looked at; nothing is read), 2 when it did
 * not arrive within the body deadline, or -1 when the connection failed.
 * Other requests run while it waits.
 */
int		 request_read_body(struct request *, size_t max)
		    __attribute__((warn_unused_result));
/* Sends bytes to the client; 0, or -1 when the client has gone. */
int		 request_write(struct request *, const void *, size_t)
		    __attribute__((warn_unused_result));
/*
 * Starts watching the client's own TCP connection (lib/peer.h), named by
 * the request's SERVER_ADDR, SERVER_PORT, REMOTE_ADDR and REMOTE_PORT: for
 * web servers that notice a client that left only once they write to it.
 * Call while the client is surely there, as its request has just arrived.
 */
void		 request_watch_client(struct request *);
/*
 * True when the client left: the web server closed the FastCGI connection
 * or sent FastCGI's ABORT_REQUEST, or the client's TCP connection, when
 * watched, is reset or closed (a FIN, as nginx judges a client gone).
 * Only meaningful once the body has been read; never blocks.
 */
bool		 request_abandoned(struct request *);
/*
 * request_abandoned() of r[0..n) into gone[0..n), asked of the web
 * server's connections and the kernel once for all, every time.
 */
void		 request_abandoned_many(struct request *const *r, size_t n,
		    bool *gone);
/* Pushes what was written so far to the web server (for streams). */
int		 request_flush(struct request *)
		    __attribute__((warn_unused_result));
/*
 * From here on the request's answer is written by another thread that
 * must never wait (the provider loop, lib/upstream.h): request_write()
 * and request_flush() send what the web server takes at once and keep
 * the rest.  0, or -1 when the connection failed.
 */
int		 request_loop_begin(struct request *)
		    __attribute__((warn_unused_result));
/* Back to writes that wait (the rest still goes out first). */
void		 request_loop_end(struct request *);
/* True while written output waits for the web server to take it. */
bool		 request_backlog(const struct request *);
/*
 * Sends what waits, without waiting: 0 all sent, 1 some left, -1 the
 * connection failed or has taken nothing for the write timeout (the
 * client is then gone).
 */
int		 request_drain(struct request *);
/* The descriptor request_drain() writes to. */
int		 request_fd(const struct request *);
/* Releases what the request owns; the struct can be reused. */
void		 request_clear(struct request *);

#endif
