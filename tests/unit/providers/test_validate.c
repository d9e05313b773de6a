/*
 * Unit tests for src/providers/validate.c: what a provider's error body
 * says about itself, and a key tried against its check endpoint.  The
 * network is replaced by upstream_perform() below, which records the call
 * and answers as the test says (upstream.c is then not linked in).
 */
#include "../unit.h"

#include "lib/buf.h"
#include "lib/upstream.h"
#include "providers/providers.h"

/* The answer the next call gets, and what the last call asked. */
static struct {
	enum upstream_result result;
	long		 status;
	const char	*body;
	const char	*err;
	char		 url[256];
	char		 auth[256];
	char		 header[256];
	long		 connect_timeout, total_timeout;
} up;

enum upstream_result
upstream_perform(struct upstream_call *call, long *status, struct buf *body,
    char *err, size_t errsz)
{
	assert_string_equal(call->method, "GET");
	assert_null(call->body);
	snprintf(up.url, sizeof(up.url), "%s", call->url);
	snprintf(up.auth, sizeof(up.auth), "%s", call->headers[0]);
	snprintf(up.header, sizeof(up.header), "%s", call->headers[1] != NULL ?
	    call->headers[1] : "(none)");
	up.connect_timeout = call->connect_timeout;
	up.total_timeout = call->total_timeout;
	if (up.result != UPSTREAM_OK) {
		snprintf(err, errsz, "%s", up.err);
		return up.result;
	}
	*status = up.status;
	if (up.body != NULL)
		assert_int_equal(buf_puts(body, up.body), 0);
	return UPSTREAM_OK;
}

/* The next answer: an HTTP status with a body (NULL for none). */
static void
answer(long status, const char *body)
{
	memset(&up, 0, sizeof(up));
	up.result = UPSTREAM_OK;
	up.status = status;
	up.body = body;
}

/* What the error body s (NULL: none) of a status answer says. */
static void
read_error(const char *s, long status, struct provider_error *pe)
{
	struct buf	 b = { 0 };

	if (s != NULL)
		assert_int_equal(buf_puts(&b, s), 0);
	provider_error_parse(&b, status, pe);
	buf_free(&b);
}

/* Copied only when a word of [A-Za-z0-9_.-] that fits with its NUL. */
static void
test_error_words(void **state)
{
	char	 out[8];

	(void)state;
	strcpy(out, "kept");
	provider_error_word("bad word", out, sizeof(out));
	assert_string_equal(out, "kept");
	provider_error_word("", out, sizeof(out));
	provider_error_word(NULL, out, sizeof(out));
	provider_error_word("a\nb", out, sizeof(out));
	provider_error_word("12345678", out, sizeof(out));
	assert_string_equal(out, "kept");
	provider_error_word("1234567", out, sizeof(out));
	assert_string_equal(out, "1234567");
	provider_error_word("a_b.c-D", out, sizeof(out));
	assert_string_equal(out, "a_b.c-D");
}

static void
test_error_bodies(void **state)
{
	struct provider_error pe;
	struct buf	 b = { 0 };
	char		 big[700], msg[32];

	(void)state;
	/* OpenAI's: message, type and code. */
	read_error("{\"error\":{\"message\":\"Incorrect API key\",\"type\":"
	    "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}", 401,
	    &pe);
	assert_string_equal(pe.message, "Incorrect API key");
	assert_string_equal(pe.type, "invalid_request_error");
	assert_string_equal(pe.code, "invalid_api_key");
	/* Gemini's numeric code is the status: its status word instead. */
	read_error("{\"error\":{\"code\":400,\"message\":\"API key not valid\","
	    "\"status\":\"INVALID_ARGUMENT\"}}", 400, &pe);
	assert_string_equal(pe.code, "INVALID_ARGUMENT");
	assert_string_equal(pe.type, "");
	/* A type that is not a word is not passed on. */
	read_error("{\"type\":\"error\",\"error\":{\"type\":\"a b\","
	    "\"message\":\"x\"}}", 400, &pe);
	assert_string_equal(pe.message, "x");
	assert_string_equal(pe.type, "");
	/* Nothing to read: "HTTP <status>". */
	read_error("{\"error\":\"nope\"}", 403, &pe);
	assert_string_equal(pe.message, "HTTP 403");
	assert_string_equal(pe.code, "");
	read_error("<html>Bad Gateway</html>", 502, &pe);
	assert_string_equal(pe.message, "HTTP 502");
	read_error(NULL, 500, &pe);
	assert_string_equal(pe.message, "HTTP 500");
	/* A long message is cut to fit; the short form too. */
	memset(big, 'm', sizeof(big));
	memcpy(big, "{\"error\":{\"message\":\"", 21);
	memcpy(big + sizeof(big) - 5, "\"}}", 4);
	read_error(big, 400, &pe);
	assert_int_equal(strlen(pe.message), sizeof(pe.message) - 1);
	assert_int_equal(buf_puts(&b, big), 0);
	provider_error_message(&b, 400, msg, sizeof(msg));
	assert_int_equal(strlen(msg), sizeof(msg) - 1);
	assert_memory_equal(msg, "mmmm", 4);
	buf_free(&b);
}

/* 2xx: the key works; 4xx but 408 and 429: the provider said no. */
static void
test_a_key_tried(void **state)
{
	char	 reason[128];

	(void)state;
	answer(200, "{\"data\":[]}");
	assert_int_equal(provider_validate_key(PROVIDER_ANTHROPIC,
	    "https://api.anthropic.com//", "sk-ant-secret", 3, 10, reason,
	    sizeof(reason)), VALIDATE_OK);
	/* The key in its header, never in the URL. */
	assert_string_equal(up.url, "https://api.anthropic.com/v1/models");
	assert_string_equal(up.auth, "x-api-key: sk-ant-secret");
	assert_string_equal(up.header, "anthropic-version: 2023-06-01");
	assert_int_equal(up.connect_timeout, 3);
	assert_int_equal(up.total_timeout, 10);

	answer(401, "{\"error\":{\"message\":\"invalid x-api-key\"}}");
	assert_int_equal(provider_validate_key(PROVIDER_OPENAI,
	    "https://api.openai.com/v1", "sk-x", 3, 10, reason,
	    sizeof(reason)), VALIDATE_REJECTED);
	assert_string_equal(reason, "invalid x-api-key");
	assert_string_equal(up.url, "https://api.openai.com/v1/models");
	assert_string_equal(up.auth, "Authorization: Bearer sk-x");
	assert_string_equal(up.header, "(none)");

	answer(404, NULL);
	assert_int_equal(provider_validate_key(PROVIDER_OPENROUTER,
	    "https://openrouter.ai/api/v1", "sk-or-x", 3, 10, reason,
	    sizeof(reason)), VALIDATE_REJECTED);
	assert_string_equal(reason, "HTTP 404");
	assert_string_equal(up.url, "https://openrouter.ai/api/v1/key");
}

/* A busy, slow or broken provider, or none at all: not the key's fault. */
static void
test_no_usable_answer(void **state)
{
	static const long statuses[] = { 408, 429, 500, 503, 301, 100 };
	char	 reason[128], want[64];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		answer(statuses[i], "{\"error\":{\"message\":\"busy\"}}");
		assert_int_equal(provider_validate_key(PROVIDER_GOOGLE,
		    "https://generativelanguage.googleapis.com", "AIza-x", 3,
		    10, reason, sizeof(reason)), VALIDATE_UNREACHABLE);
		snprintf(want, sizeof(want), "the provider answered HTTP %ld",
		    statuses[i]);
		assert_string_equal(reason, want);
	}
	assert_string_equal(up.url,
	    "https://generativelanguage.googleapis.com/v1beta/models");
	assert_string_equal(up.auth, "x-goog-api-key: AIza-x");
	answer(0, NULL);
	up.result = UPSTREAM_TIMEOUT;
	up.err = "timed out after 10 s";
	assert_int_equal(provider_validate_key(PROVIDER_OPENAI,
	    "http://127.0.0.1:9", "sk-x", 3, 10, reason, sizeof(reason)),
	    VALIDATE_UNREACHABLE);
	assert_string_equal(reason, "timed out after 10 s");
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_error_words),
    cmocka_unit_test(test_error_bodies),
    cmocka_unit_test(test_a_key_tried),
    cmocka_unit_test(test_no_usable_answer))
