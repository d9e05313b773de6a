/*
 * libFuzzer harness for what a web server sends keygated: any parameters
 * and body, framed as FastCGI records and read through libfcgi by
 * server/request.c as a worker does, the method and URI taken apart and
 * routed by server/router.c, the body read to its end (or to where the
 * connection stops), and an error answered with server/http.c.  Every
 * request is answered or refused, never a memory error.
 *
 * The input is "NAME=VALUE" lines, an empty line, then the body; its
 * first byte picks the role, how the records are cut and whether the
 * body's end is sent.  The records' framing is always honest: libfcgi
 * 2.4.2 (Debian 12) aborts on a name and value whose declared lengths add
 * up past 2 GiB (an assertion on malloc's failure), which only a process
 * that can connect to keygated's socket could send, and which is
 * libfcgi's to mend.
 */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/buf.h"
#include "server/http.h"
#include "server/request.h"
#include "server/router.h"
#include "server/worker.h"

/* The harness has no worker: nothing to let go of while a read waits. */
void
worker_release(struct worker *w)
{
	(void)w;
}

void
worker_acquire(struct worker *w)
{
	(void)w;
}

static void
handler(struct request *req)
{
	(void)req;
}

static const struct route routes[] = {
	{ METHOD_GET, "/health", handler, NULL, 0 },
	{ METHOD_GET, "/v1/tenants/{id}", handler, "tenants:read", 0 },
	{ METHOD_PATCH, "/v1/api_keys/{id}", handler, "api_keys:write", 0 },
	{ METHOD_POST, "/v1/chat/completions", handler, "chat:write", 0 },
};

static struct sockaddr_un addr;
static socklen_t addrlen;
static struct request_io *io;

static void
setup(void)
{
	int	 fd;

	/* An abstract socket: no file to leave behind. */
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1,
	    "keygate-fuzz-fcgi-%ld", (long)getpid());
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
	    strlen(addr.sun_path + 1));
	/*
	 * Non-blocking, as keygated's: libfcgi goes back to accept() after a
	 * connection it cannot read, and must then find none, not wait.
	 */
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&addr, addrlen) == -1 ||
	    listen(fd, 16) == -1 || (io = request_io_new(fd)) == NULL) {
		perror("fuzz_fcgi: setting up");
		abort();
	}
}

static void
take_apart(struct request *req)
{
	const struct route *route;
	const char	*uri, *q;
	char		 param[REQUEST_PARAM_MAX + 1], allow[128], *path;
	size_t		 n;

	req->method = request_param(req, "REQUEST_METHOD");
	if (req->method == NULL)
		req->method = "GET";
	if ((uri = request_param(req, "REQUEST_URI")) == NULL)
		uri = "/";
	q = strchr(uri, '?');
	n = q != NULL ? (size_t)(q - uri) : strlen(uri);
	req->query = q != NULL ? q + 1 : "";
	if ((path = strndup(uri, n)) == NULL)
		return;
	req->path = path;
	(void)http_method_parse(req->method);
	(void)router_match(routes, sizeof(routes) / sizeof(routes[0]),
	    req->method, path, &route, param, sizeof(param), allow,
	    sizeof(allow));
	router_canonical_id(param);
}

static int
put(uint8_t *out, size_t cap, size_t *n, const void *p, size_t len)
{
	if (*n + len > cap)
		return -1;
	if (len > 0)
		memcpy(out + *n, p, len);
	*n += len;
	return 0;
}

/* One record of type t holding len bytes of p; 0 or -1 (no room). */
static int
record(uint8_t *out, size_t cap, size_t *n, int t, const uint8_t *p,
    size_t len)
{
	uint8_t	 h[8] = { 1, (uint8_t)t, 0, 1, (uint8_t)(len >> 8),
		    (uint8_t)len, 0, 0 };

	return put(out, cap, n, h, sizeof(h)) == -1 ||
	    put(out, cap, n, p, len) == -1 ? -1 : 0;
}

/* A stream's bytes in records of at most piece bytes, then its end. */
static int
stream(uint8_t *out, size_t cap, size_t *n, int t, const uint8_t *p,
    size_t len, size_t piece, int end)
{
	size_t	 k;

	for (; len > 0; p += k, len -= k) {
		k = len < piece ? len : piece;
		if (record(out, cap, n, t, p, k) == -1)
			return -1;
	}
	return end ? record(out, cap, n, t, NULL, 0) : 0;
}

static void
pair_len(uint8_t *b, size_t *k, size_t len)
{
	if (len < 128)
		b[(*k)++] = (uint8_t)len;
	else {
		b[(*k)++] = (uint8_t)(0x80 | (len >> 24));
		b[(*k)++] = (uint8_t)(len >> 16);
		b[(*k)++] = (uint8_t)(len >> 8);
		b[(*k)++] = (uint8_t)len;
	}
}

/* The lines before the empty one as name-value pairs; the body after. */
static size_t
encode(const uint8_t *data, size_t size, uint8_t *out, size_t cap)
{
	static uint8_t	 params[8192];
	uint8_t		 begin[8] = { 0, 1, 0, 0, 0, 0, 0, 0 };
	const uint8_t	*p = data + 1, *end = data + size, *nl, *eq;
	size_t		 n = 0, k = 0, piece;
	int		 flags = size > 0 ? data[0] : 0;

	if (size == 0)
		return 0;
	begin[1] = (flags & 1) ? 2 : 1;		/* authorizer, responder */
	piece = 1 + (size_t)((flags >> 1) & 7) * 97;
	while (p < end && *p != '\n') {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		eq = memchr(p, '=', (size_t)(nl - p));
		if (eq == NULL)
			eq = nl;
		if (k + 8 + (size_t)(nl - p) > sizeof(params))
			break;
		pair_len(params, &k, (size_t)(eq - p));
		pair_len(params, &k, eq < nl ? (size_t)(nl - eq - 1) : 0);
		memcpy(params + k, p, (size_t)(eq - p));
		k += (size_t)(eq - p);
		if (eq < nl) {
			memcpy(params + k, eq + 1, (size_t)(nl - eq - 1));
			k += (size_t)(nl - eq - 1);
		}
		p = nl < end ? nl + 1 : end;
	}
	if (p < end)
		p++;				/* the empty line */
	if (record(out, cap, &n, 1, begin, sizeof(begin)) == -1 ||
	    stream(out, cap, &n, 4, params, k, piece, 1) == -1 ||
	    stream(out, cap, &n, 5, p, (size_t)(end - p), piece,
	    !(flags & 0x10)) == -1)
		return 0;
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t	 wire[65536];
	struct request	 req;
	size_t		 n;
	int		 c;

	if (io == NULL)
		setup();
	if ((n = encode(data, size, wire, sizeof(wire))) == 0)
		return 0;
	if ((c = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    connect(c, (struct sockaddr *)&addr, addrlen) == -1)
		abort();
	/* A socket buffer holds any input of -max_len: no reader needed. */
	if (write(c, wire, n) != (ssize_t)n)
		abort();
	shutdown(c, SHUT_WR);
	memset(&req, 0, sizeof(req));
	if (request_io_accept(io, &req) == 0) {
		take_apart(&req);
		request_set_deadlines(&req, 1, 1);
		switch (request_read_body(&req, 8192)) {
		case 0:
			http_error(&req, ERR_NOT_FOUND, "%zu bytes",
			    req.body.len);
			break;
		case 1:
			http_error(&req, ERR_REQUEST_TOO_LARGE, "too large");
			break;
		default:
			http_error(&req, ERR_BAD_REQUEST, "unreadable");
			break;
		}
		request_io_finish(io, &req);
		request_clear(&req);
		buf_free(&req.body);
		buf_free(&req.headers);
	}
	close(c);
	return 0;
}
