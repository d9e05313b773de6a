/* Unit tests for src/lib/sse.c: Server-Sent Events from untrusted bytes. */
#include "../unit.h"

#include "lib/sse.h"

/* What the events came to: "name|data" per event, \x1e between them. */
struct seen {
	struct buf	 out;
	int		 events;
	int		 stop_after;	/* -1 from the callback after that many */
};

static int
collect(void *arg, const struct sse_event *ev)
{
	struct seen	*s = arg;

	assert_int_equal(ev->data[ev->len], '\0');
	if (s->events++ > 0)
		assert_int_equal(buf_puts(&s->out, "\x1e"), 0);
	assert_int_equal(buf_puts(&s->out, ev->name), 0);
	assert_int_equal(buf_puts(&s->out, "|"), 0);
	assert_int_equal(buf_append(&s->out, ev->data, ev->len), 0);
	return s->stop_after > 0 && s->events >= s->stop_after ? -1 : 0;
}

/* Feeds text in pieces of `piece` bytes (0: all at once); the result. */
static char *
parse(const char *text, size_t len, size_t piece, size_t max, int *rc)
{
	struct sse_parser p;
	struct seen	 s = { { 0 }, 0, 0 };
	size_t		 off = 0, n;
	char		*out;

	sse_init(&p, max);
	*rc = 0;
	while (off < len && *rc == 0) {
		n = piece == 0 || len - off < piece ? len - off : piece;
		*rc = sse_feed(&p, text + off, n, collect, &s);
		off += n;
	}
	sse_free(&p);
	out = strdup(s.out.data != NULL ? s.out.data : "");
	buf_free(&s.out);
	return out;
}

static void
expect(const char *text, const char *want)
{
	size_t	 len = strlen(text), piece;
	char	*got;
	int	 rc;

	/* Whole, and in pieces of every size down to a byte at a time. */
	for (piece = 0; piece <= len; piece++) {
		got = parse(text, len, piece, 1 << 20, &rc);
		assert_int_equal(rc, 0);
		if (strcmp(got, want) != 0)
			fail_msg("pieces of %zu: got \"%s\", want \"%s\"", piece,
			    got, want);
		free(got);
	}
}

static void
test_line_ends(void **state)
{
	(void)state;
	expect("data: a\n\ndata: b\n\n", "|a\x1e|b");
	expect("data: a\r\n\r\ndata: b\r\n\r\n", "|a\x1e|b");
	expect("data: a\r\rdata: b\r\r", "|a\x1e|b");
	expect("data: a\r\n\ndata: b\n\r\n", "|a\x1e|b");
	/* \r then \n is one line end, \n then \r two. */
	expect("data: a\n\rdata: b\n\n", "|a\x1e|b");
}

static void
test_fields(void **state)
{
	(void)state;
	/* Several data lines joined with \n; one space after the colon. */
	expect("data: {\"a\":\ndata:  1}\n\n", "|{\"a\":\n 1}");
	expect("event: message_start\ndata: {}\n\n", "message_start|{}");
	/* Comments, id, retry and unknown fields carry nothing. */
	expect(": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: x\n"
	    "id: 7\nretry: 10\nfoo: bar\n\n", "|x");
	/* A field without a colon is a name with an empty value. */
	expect("data\n\n", "|");
	expect("data:\n\n", "|");
	/* An event without data is not an event; its name does not leak. */
	expect("event: ping\n\ndata: y\n\n", "|y");
}

static void
test_stream_edges(void **state)
{
	(void)state;
	/* A byte-order mark opens the stream; later it is data. */
	expect("\xef\xbb\xbf" "data: a\n\n", "|a");
	expect("data: \xef\xbb\xbf" "a\n\n", "|\xef\xbb\xbf" "a");
	/* Bytes after the last blank line are not an event. */
	expect("data: a\n\ndata: b\n", "|a");
	expect("data: a", "");
	expect("", "");
	expect("\n\n\n", "");
}

static void
test_nul_bytes_in_data(void **state)
{
	static const char text[] = "data: a\0b\n\n";
	struct sse_parser p;
	struct seen	 s = { { 0 }, 0, 0 };

	(void)state;
	sse_init(&p, 1024);
	assert_int_equal(sse_feed(&p, text, sizeof(text) - 1, collect, &s), 0);
	assert_int_equal(s.events, 1);
	assert_int_equal(s.out.len, 4);	/* "|a\0b" */
	assert_memory_equal(s.out.data, "|a\0b", 4);
	sse_free(&p);
	buf_free(&s.out);
}

static void
test_limits(void **state)
{
	char	 big[200], *got;
	int	 rc;

	(void)state;
	memset(big, 'x', sizeof(big));
	memcpy(big, "data: ", 6);
	/* A line that never ends, and data lines adding up, both refused. */
	got = parse(big, sizeof(big), 7, 100, &rc);
	assert_int_equal(rc, -2);
	free(got);
	got = parse("data: 0123456789\ndata: 0123456789\n\n", 35, 0, 20, &rc);
	assert_int_equal(rc, -2);
	free(got);
	/* At the limit exactly it is fine. */
	got = parse("data: 0123456789\n\n", 18, 0, 17, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(got, "|0123456789");
	free(got);
}

static void
test_callback_stops(void **state)
{
	struct sse_parser p;
	struct seen	 s = { { 0 }, 0, 1 };
	const char	*text = "data: a\n\ndata: b\n\n";

	(void)state;
	sse_init(&p, 1024);
	assert_int_equal(sse_feed(&p, text, strlen(text), collect, &s), -1);
	assert_int_equal(s.events, 1);
	sse_free(&p);
	buf_free(&s.out);
}

static void
test_writer(void **state)
{
	struct buf	 b = { 0 };

	(void)state;
	assert_int_equal(sse_write_data(&b, "[DONE]", 6), 0);
	assert_string_equal(b.data, "data: [DONE]\n\n");
	buf_free(&b);
}

/* Named events, and data of several lines: what a parser reads back. */
static void
test_writer_lines_and_names(void **state)
{
	struct buf	 b = { 0 };

	(void)state;
	assert_int_equal(sse_write(&b, "message_start", "{\"a\":1}", 7), 0);
	assert_string_equal(b.data, "event: message_start\ndata: {\"a\":1}\n\n");
	buf_reset(&b);
	assert_int_equal(sse_write(&b, NULL, "one\ntwo\n", 8), 0);
	assert_string_equal(b.data, "data: one\ndata: two\n\n");
	buf_reset(&b);
	assert_int_equal(sse_write(&b, NULL, "", 0), 0);
	assert_string_equal(b.data, "data: \n\n");
	buf_reset(&b);
	assert_int_equal(sse_write(&b, "", "x\n\ny", 4), 0);
	assert_string_equal(b.data, "event: \ndata: x\ndata: \ndata: y\n\n");
	buf_free(&b);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_line_ends),
    cmocka_unit_test(test_fields),
    cmocka_unit_test(test_stream_edges),
    cmocka_unit_test(test_nul_bytes_in_data),
    cmocka_unit_test(test_limits),
    cmocka_unit_test(test_callback_stops),
    cmocka_unit_test(test_writer),
    cmocka_unit_test(test_writer_lines_and_names))
