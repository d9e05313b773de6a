#ifndef KEYGATE_SERVER_HTTP_H
#define KEYGATE_SERVER_HTTP_H

#include <stddef.h>

struct request;
struct json_object;

/*
 * Every error keygate answers with.  One row each in http.c's table gives
 * the status, the "type" and the "code" of the JSON body
 * {"error":{"message","type","code"}}.
 */
enum http_err {
	ERR_BAD_REQUEST,
	ERR_INVALID_PROVIDER_KEY,
	ERR_INVALID_UPSTREAM_KEY,
	ERR_INVALID_JSON,
	ERR_INVALID_UTF8,
	ERR_MISSING_API_KEY,
	ERR_INVALID_API_KEY,
	ERR_INSUFFICIENT_PERMISSIONS,
	ERR_NOT_FOUND,
	ERR_METHOD_NOT_ALLOWED,
	ERR_CONFLICT,
	ERR_KEY_LIMIT_REACHED,
	ERR_REQUEST_TOO_LARGE,
	ERR_UNSUPPORTED_MEDIA_TYPE,
	ERR_VALIDATION,
	ERR_RATE_LIMITED,
	ERR_INTERNAL,
	ERR_DATABASE_UNAVAILABLE,
	ERR_VAULT_UNAVAILABLE,
	ERR_UPSTREAM,
	ERR_UPSTREAM_TIMEOUT,
	ERR_MISSING_PROVIDER_KEY,
	ERR_FORBIDDEN_FIELD,
	ERR_UNSUPPORTED_MODEL,
	ERR_MODEL_NOT_AVAILABLE,
	ERR_MODEL_NOT_FOUND,
	ERR_NOT_IMPLEMENTED,
	ERR_REQUEST_TIMEOUT,
	ERR_TOO_MANY_CALLS,
	ERR__MAX
};

/* The reason phrase of a status ("Not Found"). */
const char	*http_reason(int status);
/*
 * Adds a response header line; name and value must not hold CR or LF.
 * 0, or -1 when out of memory.
 */
int		 http_header(struct request *, const char *name,
		    const char *fmt, ...)
		    __attribute__((format(printf, 3, 4), warn_unused_result));
/*
 * Sends a complete response: the status, our standard headers
 * (Content-Type, Cache-Control: no-store, X-Request-Id), the extra header
 * lines collected in req->headers, and the body.  A request answers once;
 * later calls are ignored.
 */
void		 http_respond(struct request *, int status, const char *body,
		    size_t len);
/* As http_respond() with a body of another Content-Type. */
void		 http_respond_type(struct request *, int status,
		    const char *content_type, const char *body, size_t len);
/*
 * Sends the status and the extra header lines in req->headers only: no
 * body and none of our standard headers.  For a FastCGI authorizer's
 * pass, whose headers the web server may add to the answer it serves.
 */
void		 http_respond_bare(struct request *, int status);
/* As http_respond() with a JSON body; takes ownership of obj. */
void		 http_respond_json(struct request *, int status,
		    struct json_object *obj);
/* Sends the error's JSON body with a printf-formatted message. */
void		 http_error(struct request *, enum http_err, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
/*
 * As http_error(), adding "details": an array (owned, may be NULL) of
 * {"field","message"} objects for 422 answers.
 */
void		 http_error_details(struct request *, enum http_err,
		    struct json_object *details, const char *fmt, ...)
		    __attribute__((format(printf, 4, 5)));
/*
 * An error with a status, type and code given by the caller rather than
 * the table: for provider errors passed on with their own status.
 */
void		 http_error_as(struct request *, int status, const char *type,
		    const char *code, const char *fmt, ...)
		    __attribute__((format(printf, 5, 6)));
/*
 * Starts a streamed answer (no Content-Length): the status line and our
 * standard headers with the given Content-Type, flushed at once.  0 or -1.
 */
int		 http_stream_begin(struct request *, int status,
		    const char *content_type) __attribute__((warn_unused_result));
/* Sends a piece of a streamed answer and flushes it; 0, or -1 gone. */
int		 http_stream_write(struct request *, const void *, size_t)
		    __attribute__((warn_unused_result));
/*
 * The client left before an answer: nothing more is sent, and the access
 * log records 499 (as nginx does) unless an answer had begun.
 */
void		 http_abandoned(struct request *);
/* The database is out of reach: 503 with Retry-After. */
void		 http_unavailable(struct request *);

extern const struct http_err_info {
	int		 status;
	const char	*type;
	const char	*code;
} http_errs[ERR__MAX];

#endif
