/*
 * Unit tests for src/server/http.c: the status lines, headers and JSON
 * error bodies keygate answers with, sent once.  The FastCGI connection
 * is replaced by the two functions below, which keep what reached the
 * client in memory (request.c is then not linked in).
 */
#include "../unit.h"

#include "lib/buf.h"
#include "server/http.h"
#include "server/request.h"

static struct buf sent;		/* the bytes the client received */
static int	  flushes;
static bool	  gone;		/* every write and flush fails */

int
request_write(struct request *req, const void *p, size_t n)
{
	(void)req;
	if (gone)
		return -1;
	return buf_append(&sent, p, n);
}

int
request_flush(struct request *req)
{
	(void)req;
	flushes++;
	return gone ? -1 : 0;
}

/* A request as a worker holds it once accepted; nothing sent yet. */
static void
request(struct request *req, const char *method)
{
	memset(req, 0, sizeof(*req));
	req->method = method;
	snprintf(req->request_id, sizeof(req->request_id), "req-1");
	buf_reset(&sent);
	flushes = 0;
	gone = false;
}

/* The body sent after the header lines, as JSON (new). */
static struct json_object *
sent_body(void)
{
	const char	*end;

	assert_non_null(sent.data);
	end = strstr(sent.data, "\r\n\r\n");
	assert_non_null(end);
	return unit_json(end + 4);
}

static void
test_reasons_and_the_table(void **state)
{
	int	 e;

	(void)state;
	assert_string_equal(http_reason(200), "OK");
	assert_string_equal(http_reason(404), "Not Found");
	assert_string_equal(http_reason(413), "Content Too Large");
	assert_string_equal(http_reason(422), "Unprocessable Content");
	assert_string_equal(http_reason(499), "Client Closed Request");
	assert_string_equal(http_reason(418), "Unknown");
	assert_string_equal(http_reason(0), "Unknown");
	/* Every error has a status with a reason, a type and a code. */
	assert_string_equal(http_reason(408), "Request Timeout");
	for (e = 0; e < ERR__MAX; e++) {
		assert_string_not_equal(http_reason(http_errs[e].status),
		    "Unknown");
		assert_non_null(http_errs[e].type);
		assert_non_null(http_errs[e].code);
	}
	assert_int_equal(http_errs[ERR_RATE_LIMITED].status, 429);
	assert_string_equal(http_errs[ERR_TOO_MANY_CALLS].code,
	    "too_many_concurrent_calls");
}

/* CR and LF in a name or value become spaces: no header is injected. */
static void
test_a_header_cannot_inject_another(void **state)
{
	struct request	 req;

	(void)state;
	request(&req, "GET");
	assert_int_equal(http_header(&req, "X-A", "%d", 7), 0);
	assert_int_equal(http_header(&req, "X-B\r\n", "a\r\nSet-Cookie: %s",
	    "x\n"), 0);
	assert_string_equal(req.headers.data,
	    "X-A: 7\r\nX-B  : a  Set-Cookie: x \r\n");
	buf_free(&req.headers);
}

static void
test_an_answer_is_sent_once(void **state)
{
	struct request	 req;

	(void)state;
	request(&req, "GET");
	assert_int_equal(http_header(&req, "Location", "/v1/x"), 0);
	http_respond(&req, 201, "{}", 2);
	assert_int_equal(req.status, 201);
	assert_string_equal(sent.data, "Status: 201 Created\r\n"
	    "Content-Type: application/json\r\n"
	    "Cache-Control: no-store\r\n"
	    "X-Content-Type-Options: nosniff\r\n"
	    "X-Request-Id: req-1\r\n"
	    "Content-Length: 2\r\n"
	    "Location: /v1/x\r\n"
	    "\r\n{}");
	/* A second answer, or an error after it, sends nothing. */
	http_respond(&req, 500, "x", 1);
	http_error(&req, ERR_INTERNAL, "late");
	assert_int_equal(req.status, 201);
	assert_non_null(strstr(sent.data, "\r\n\r\n{}"));
	assert_int_equal(strlen(strstr(sent.data, "\r\n\r\n")), 6);
	assert_false(req.client_gone);
	buf_free(&req.headers);
}

/* HEAD: GET's status and headers, its Content-Length too, no body. */
static void
test_head_has_no_body(void **state)
{
	struct request	 req;

	(void)state;
	request(&req, "HEAD");
	http_respond_type(&req, 200, "text/plain", "hello", 5);
	assert_non_null(strstr(sent.data, "Content-Type: text/plain\r\n"));
	assert_non_null(strstr(sent.data, "Content-Length: 5\r\n"));
	assert_int_equal(strlen(strstr(sent.data, "\r\n\r\n")), 4);
	/* A request with no method at all is answered in full. */
	request(&req, NULL);
	http_respond_type(&req, 200, "text/plain", "hello", 5);
	assert_non_null(strstr(sent.data, "\r\n\r\nhello"));
}

static void
test_errors_in_the_json_shape(void **state)
{
	struct request	 req;
	struct json_object *o, *details;

	(void)state;
	request(&req, "GET");
	http_error(&req, ERR_NOT_FOUND, "no key %s", "k1");
	assert_int_equal(req.status, 404);
	assert_memory_equal(sent.data, "Status: 404 Not Found\r\n", 23);
	o = sent_body();
	assert_json(o, "{\"error\":{\"message\":\"no key k1\","
	    "\"type\":\"not_found_error\",\"code\":\"not_found\"}}");
	json_object_put(o);

	request(&req, "GET");
	details = unit_json("[{\"field\":\"name\",\"message\":\"too long\"}]");
	http_error_details(&req, ERR_VALIDATION, details, "%d invalid", 1);
	assert_int_equal(req.status, 422);
	o = sent_body();
	assert_json(o, "{\"error\":{\"message\":\"1 invalid\",\"type\":"
	    "\"invalid_request_error\",\"code\":\"validation_error\","
	    "\"details\":[{\"field\":\"name\",\"message\":\"too long\"}]}}");
	json_object_put(o);

	/* A provider's own status, type and code are passed on. */
	request(&req, "POST");
	http_error_as(&req, 529, "overloaded_error", "overloaded", "busy");
	assert_memory_equal(sent.data, "Status: 529 Unknown\r\n", 21);
	o = sent_body();
	assert_json(o, "{\"error\":{\"message\":\"busy\",\"type\":"
	    "\"overloaded_error\",\"code\":\"overloaded\"}}");
	json_object_put(o);

	/* No object to send (out of memory making it): a 500. */
	request(&req, "GET");
	http_respond_json(&req, 200, NULL);
	assert_int_equal(req.status, 500);
	o = sent_body();
	assert_json(o, "{\"error\":{\"message\":\"out of memory\",\"type\":"
	    "\"api_error\",\"code\":\"internal_error\"}}");
	json_object_put(o);
}

static void
test_database_unavailable_says_when_to_retry(void **state)
{
	struct request	 req;
	struct json_object *o;

	(void)state;
	request(&req, "GET");
	http_unavailable(&req);
	assert_int_equal(req.status, 503);
	assert_memory_equal(sent.data, "Status: 503 Service Unavailable\r\n",
	    33);
	assert_non_null(strstr(sent.data, "\r\nRetry-After: 2\r\n"));
	o = sent_body();
	assert_string_equal(json_get_str(json_object_object_get(o, "error"),
	    "code"), "database_unavailable");
	json_object_put(o);
	buf_free(&req.headers);
}

/* An authorizer's pass: the status and the extra lines, nothing else. */
static void
test_bare_answer(void **state)
{
	struct request	 req;

	(void)state;
	request(&req, "GET");
	assert_int_equal(http_header(&req, "Variable-KEY_ID", "k1"), 0);
	http_respond_bare(&req, 200);
	assert_string_equal(sent.data, "Status: 200 OK\r\n"
	    "Variable-KEY_ID: k1\r\n\r\n");
	http_respond_bare(&req, 401);
	assert_int_equal(req.status, 200);
	buf_free(&req.headers);
	request(&req, "GET");
	http_respond_bare(&req, 204);
	assert_string_equal(sent.data, "Status: 204 No Content\r\n\r\n");
}

static void
test_stream(void **state)
{
	struct request	 req;

	(void)state;
	request(&req, "POST");
	assert_int_equal(http_stream_begin(&req, 200, "text/event-stream"), 0);
	assert_string_equal(sent.data, "Status: 200 OK\r\n"
	    "Content-Type: text/event-stream\r\n"
	    "Cache-Control: no-store\r\n"
	    "X-Content-Type-Options: nosniff\r\n"
	    "X-Accel-Buffering: no\r\n"
	    "X-Request-Id: req-1\r\n\r\n");
	assert_int_equal(flushes, 1);
	assert_int_equal(http_stream_write(&req, "data: 1\n\n", 9), 0);
	assert_int_equal(flushes, 2);
	assert_non_null(strstr(sent.data, "\r\n\r\ndata: 1\n\n"));
	/* Begun once only; an answer after it sends nothing. */
	assert_int_equal(http_stream_begin(&req, 200, "text/plain"), -1);
	http_error(&req, ERR_UPSTREAM, "late");
	assert_null(strstr(sent.data, "late"));
	/* The client leaves: -1, and nothing more is tried. */
	gone = true;
	assert_int_equal(http_stream_write(&req, "data: 2\n\n", 9), -1);
	assert_true(req.client_gone);
	gone = false;
	assert_int_equal(http_stream_write(&req, "data: 3\n\n", 9), -1);
	assert_null(strstr(sent.data, "data: 3"));
	assert_int_equal(req.status, 200);
	/* A stream whose first flush fails has lost its client. */
	request(&req, "POST");
	gone = true;
	assert_int_equal(http_stream_begin(&req, 200, "text/event-stream"),
	    -1);
	assert_true(req.client_gone);
	assert_int_equal(req.status, 200);
}

/* A client gone: marked, and 499 in the log unless an answer began. */
static void
test_a_client_that_left(void **state)
{
	struct request	 req;

	(void)state;
	request(&req, "GET");
	gone = true;
	http_respond(&req, 200, "{}", 2);
	assert_true(req.client_gone);
	assert_int_equal(req.status, 200);
	request(&req, "GET");
	http_abandoned(&req);
	assert_int_equal(req.status, 499);
	assert_true(req.client_gone);
	http_respond(&req, 200, "{}", 2);
	assert_int_equal(sent.len, 0);
	request(&req, "GET");
	req.status = 200;
	http_abandoned(&req);
	assert_int_equal(req.status, 200);
	buf_free(&sent);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_reasons_and_the_table),
    cmocka_unit_test(test_a_header_cannot_inject_another),
    cmocka_unit_test(test_an_answer_is_sent_once),
    cmocka_unit_test(test_head_has_no_body),
    cmocka_unit_test(test_errors_in_the_json_shape),
    cmocka_unit_test(test_database_unavailable_says_when_to_retry),
    cmocka_unit_test(test_bare_answer),
    cmocka_unit_test(test_stream),
    cmocka_unit_test(test_a_client_that_left))
