/* Unit tests for src/lib/buf.c: the growable byte buffer. */
#include "../unit.h"

#include "lib/buf.h"

static void
test_append_keeps_a_terminated_string(void **state)
{
	struct buf	 b = { 0 };
	int		 i;

	(void)state;
	buf_free(&b);			/* a zeroed buffer: a no-op */
	assert_int_equal(buf_puts(&b, ""), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_append(&b, "ab", 2), 0);
	assert_int_equal(buf_puts(&b, "cd"), 0);
	assert_string_equal(b.data, "abcd");
	assert_int_equal(b.len, 4);
	/* Growth keeps the contents, whatever the size. */
	for (i = 0; i < 10000; i++)
		assert_int_equal(buf_append(&b, "x", 1), 0);
	assert_int_equal(b.len, 10004);
	assert_int_equal(strlen(b.data), 10004);
	assert_true(b.cap > b.len);
	assert_memory_equal(b.data, "abcdxx", 6);
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	assert_int_equal(buf_append(&b, "\0z", 2), 0);
	assert_int_equal(b.len, 2);
	assert_int_equal(b.data[1], 'z');
	buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void
test_printf(void **state)
{
	struct buf	 b = { 0 };
	char		 big[5000];

	(void)state;
	assert_int_equal(buf_printf(&b, "%d-%s", 42, "x"), 0);
	assert_int_equal(buf_printf(&b, "%s", ""), 0);
	assert_string_equal(b.data, "42-x");
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(buf_printf(&b, "[%s]", big), 0);
	assert_int_equal(b.len, 4 + 2 + sizeof(big) - 1);
	assert_int_equal(b.data[b.len - 1], ']');
	buf_free_secret(&b);
	assert_null(b.data);
}

static void
test_json_escape(void **state)
{
	struct buf	 b = { 0 };
	const char	 s[] = "a\"b\\c\n\t\x01/\xc3\xa9";

	(void)state;
	assert_int_equal(buf_json_escape(&b, s, sizeof(s) - 1), 0);
	assert_string_equal(b.data, "a\\\"b\\\\c\\n\\t\\u0001/\xc3\xa9");
	buf_reset(&b);
	/* A NUL inside the bytes is escaped, not an end. */
	assert_int_equal(buf_json_escape(&b, "x\0y", 3), 0);
	assert_string_equal(b.data, "x\\u0000y");
	buf_free(&b);
}

/* Text that is not UTF-8 comes out as UTF-8: U+FFFD for each bad byte. */
static void
test_json_escape_text(void **state)
{
	static const struct {
		const char	*in;
		const char	*out;
	} cases[] = {
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", NULL },
		{ "\xff", "\\ufffd" },
		{ "a\x80" "b", "a\\ufffdb" },
		{ "\xc3", "\\ufffd" },			/* cut short */
		{ "\xc0\xaf", "\\ufffd\\ufffd" },	/* overlong */
		{ "\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd" }, /* a surrogate */
		{ "\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd" },
		{ "\"\xfe\n", "\\\"\\ufffd\\n" },
	};
	struct buf	 b = { 0 };
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_reset(&b);
		assert_int_equal(buf_json_escape_text(&b, cases[i].in,
		    strlen(cases[i].in)), 0);
		assert_string_equal(b.data, cases[i].out != NULL ?
		    cases[i].out : cases[i].in);
	}
	buf_free(&b);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_append_keeps_a_terminated_string),
    cmocka_unit_test(test_printf),
    cmocka_unit_test(test_json_escape),
    cmocka_unit_test(test_json_escape_text))
