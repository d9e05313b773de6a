#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"

const struct http_err_info http_errs[ERR__MAX] = {
	{ 400, "invalid_request_error", "bad_request" },	/* ERR_BAD_REQUEST */
	{ 400, "invalid_request_error", "invalid_provider_key" }, /* ERR_INVALID_PROVIDER_KEY */
	{ 400, "invalid_request_error", "invalid_api_key" },	/* ERR_INVALID_UPSTREAM_KEY */
	{ 400, "invalid_request_error", "invalid_json" },	/* ERR_INVALID_JSON */
	{ 400, "invalid_request_error", "invalid_utf8" },	/* ERR_INVALID_UTF8 */
	{ 401, "authentication_error", "missing_api_key" },	/* ERR_MISSING_API_KEY */
	{ 401, "authentication_error", "invalid_api_key" },	/* ERR_INVALID_API_KEY */
	{ 403, "permission_error", "insufficient_permissions" }, /* ERR_INSUFFICIENT_PERMISSIONS */
	{ 404, "not_found_error", "not_found" },		/* ERR_NOT_FOUND */
	{ 405, "invalid_request_error", "method_not_allowed" },	/* ERR_METHOD_NOT_ALLOWED */
	{ 409, "conflict_error", "conflict" },			/* ERR_CONFLICT */
	{ 409, "conflict_error", "key_limit_reached" },		/* ERR_KEY_LIMIT_REACHED */
	{ 413, "invalid_request_error", "request_too_large" },	/* ERR_REQUEST_TOO_LARGE */
	{ 415, "invalid_request_error", "unsupported_media_type" }, /* ERR_UNSUPPORTED_MEDIA_TYPE */
	{ 422, "invalid_request_error", "validation_error" },	/* ERR_VALIDATION */
	{ 429, "rate_limit_error", "rate_limit_exceeded" },	/* ERR_RATE_LIMITED */
	{ 500, "api_error", "internal_error" },			/* ERR_INTERNAL */
	{ 503, "service_unavailable_error", "database_unavailable" }, /* ERR_DATABASE_UNAVAILABLE */
	{ 503, "service_unavailable_error", "vault_unavailable" }, /* ERR_VAULT_UNAVAILABLE */
	{ 502, "upstream_error", "upstream_error" },		/* ERR_UPSTREAM */
	{ 504, "upstream_error", "upstream_timeout" },		/* ERR_UPSTREAM_TIMEOUT */
	{ 401, "authentication_error", "missing_provider_key" }, /* ERR_MISSING_PROVIDER_KEY */
	{ 400, "invalid_request_error", "forbidden_field" },	/* ERR_FORBIDDEN_FIELD */
	{ 400, "invalid_request_error", "unsupported_model" },	/* ERR_UNSUPPORTED_MODEL */
	{ 400, "invalid_request_error", "model_not_available" }, /* ERR_MODEL_NOT_AVAILABLE */
	{ 404, "not_found_error", "model_not_found" },		/* ERR_MODEL_NOT_FOUND */
	{ 501, "api_error", "not_implemented" },		/* ERR_NOT_IMPLEMENTED */
	{ 408, "invalid_request_error", "request_timeout" },	/* ERR_REQUEST_TIMEOUT */
	{ 429, "rate_limit_error", "too_many_concurrent_calls" }, /* ERR_TOO_MANY_CALLS */
};

/* Seconds a client should wait before retrying while the database is down. */
#define RETRY_AFTER_UNAVAILABLE 2

const char *
http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 499: return "Client Closed Request";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default:  return "Unknown";
	}
}

int
http_header(struct request *req, const char *name, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 start = req->headers.len;
	int	 rc;

	if (buf_printf(&req->headers, "%s: ", name) == -1)
		return -1;
	va_start(ap, fmt);
	rc = buf_vprintf(&req->headers, fmt, ap);
	va_end(ap);
	if (rc == -1 || buf_puts(&req->headers, "\r\n") == -1)
		return -1;
	/* Header injection is impossible by construction: drop CR/LF. */
	for (size_t i = start; i + 2 < req->headers.len; i++)
		if (req->headers.data[i] == '\r' || req->headers.data[i] == '\n')
			req->headers.data[i] = ' ';
	return 0;
}

void
http_respond(struct request *req, int status, const char *body, size_t len)
{
	http_respond_type(req, status, "application/json", body, len);
}

void
http_respond_type(struct request *req, int status, const char *ctype,
    const char *body, size_t len)
{
	struct buf	 head = { 0 };

	if (req->status != 0)
		return;
	req->status = status;
	if (buf_printf(&head, "Status: %d %s\r\n"
	    "Content-Type: %s\r\n"
	    "Cache-Control: no-store\r\n"
	    "X-Content-Type-Options: nosniff\r\n"
	    "X-Request-Id: %s\r\n"
	    "Content-Length: %zu\r\n",
	    status, http_reason(status), ctype, req->request_id, len) == -1 ||
	    buf_append(&head, req->headers.data ? req->headers.data : "",
	    req->headers.len) == -1 || buf_puts(&head, "\r\n") == -1) {
		buf_free(&head);
		return;
	}
	/* HEAD: GET's status and headers, Content-Length too, no body. */
	if (req->method != NULL && strcmp(req->method, "HEAD") == 0)
		len = 0;
	/* A client that went away is not an error worth a log line. */
	if (request_write(req, head.data, head.len) == -1 ||
	    request_write(req, body, len) == -1)
		req->client_gone = true;
	buf_free(&head);
}

void
http_respond_bare(struct request *req, int status)
{
	struct buf	 head = { 0 };

	if (req->status != 0)
		return;
	req->status = status;
	if (buf_printf(&head, "Status: %d %s\r\n", status,
	    http_reason(status)) == -1 ||
	    buf_append(&head, req->headers.data ? req->headers.data : "",
	    req->headers.len) == -1 || buf_puts(&head, "\r\n") == -1) {
		buf_free(&head);
		return;
	}
	if (request_write(req, head.data, head.len) == -1)
		req->client_gone = true;
	buf_free(&head);
}

void
http_respond_json(struct request *req, int status, struct json_object *obj)
{
	const char	*text;
	size_t		 len;

	if (obj == NULL) {
		http_error(req, ERR_INTERNAL, "out of memory");
		return;
	}
	text = json_text(obj, &len);
	http_respond(req, status, text, len);
	json_object_put(obj);
}

static void
verror_as(struct request *req, int status, const char *type, const char *code,
    struct json_object *details, const char *fmt, va_list ap)
{
	struct json_object	*root, *err;
	struct buf		 msg = { 0 };

	if (buf_vprintf(&msg, fmt, ap) == -1) {
		static const char oom[] = "{\"error\":{\"message\":"
		    "\"out of memory\",\"type\":\"api_error\","
		    "\"code\":\"internal_error\"}}";

		json_object_put(details);
		http_respond(req, 500, oom, sizeof(oom) - 1);
		return;
	}
	root = json_object_new_object();
	err = json_object_new_object();
	json_object_object_add(err, "message",
	    json_object_new_string(msg.data ? msg.data : ""));
	json_object_object_add(err, "type", json_object_new_string(type));
	json_object_object_add(err, "code", json_object_new_string(code));
	if (details != NULL)
		json_object_object_add(err, "details", details);
	json_object_object_add(root, "error", err);
	buf_free(&msg);
	http_respond_json(req, status, root);
}

static void
verror(struct request *req, enum http_err e, struct json_object *details,
    const char *fmt, va_list ap)
{
	verror_as(req, http_errs[e].status, http_errs[e].type, http_errs[e].code,
	    details, fmt, ap);
}

void
http_error_as(struct request *req, int status, const char *type,
    const char *code, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	verror_as(req, status, type, code, NULL, fmt, ap);
	va_end(ap);
}

int
http_stream_begin(struct request *req, int status, const char *ctype)
{
	struct buf	 head = { 0 };
	int		 rc = -1;

	if (req->status != 0)
		return -1;
	req->status = status;
	if (buf_printf(&head, "Status: %d %s\r\n"
	    "Content-Type: %s\r\n"
	    "Cache-Control: no-store\r\n"
	    "X-Content-Type-Options: nosniff\r\n"
	    "X-Accel-Buffering: no\r\n"
	    "X-Request-Id: %s\r\n",
	    status, http_reason(status), ctype, req->request_id) == 0 &&
	    buf_append(&head, req->headers.data ? req->headers.data : "",
	    req->headers.len) == 0 && buf_puts(&head, "\r\n") == 0 &&
	    request_write(req, head.data, head.len) == 0 &&
	    request_flush(req) == 0)
		rc = 0;
	if (rc == -1)
		req->client_gone = true;
	buf_free(&head);
	return rc;
}

int
http_stream_write(struct request *req, const void *p, size_t n)
{
	if (req->client_gone || request_write(req, p, n) == -1 ||
	    request_flush(req) == -1) {
		req->client_gone = true;
		return -1;
	}
	return 0;
}

void
http_error(struct request *req, enum http_err e, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	verror(req, e, NULL, fmt, ap);
	va_end(ap);
}

void
http_error_details(struct request *req, enum http_err e,
    struct json_object *details, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	verror(req, e, details, fmt, ap);
	va_end(ap);
}

void
http_abandoned(struct request *req)
{
	if (req->status == 0)
		req->status = 499;
	req->client_gone = true;
}

void
http_unavailable(struct request *req)
{
	if (http_header(req, "Retry-After", "%d",
	    RETRY_AFTER_UNAVAILABLE) == -1)
		log_error("http_header: adding Retry-After: out of memory");
	http_error(req, ERR_DATABASE_UNAVAILABLE,
	    "The database is unavailable; try again shortly.");
}
