/*
 * Unit tests for src/server/log.c: one JSON object a line, its fields
 * escaped, written to the file log_open() names and kept there when a new
 * name cannot be opened.
 */
#include "../unit.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "lib/buf.h"
#include "server/log.h"

/* A fresh, empty file, the log from now on; its path in path. */
static void
log_to_temp(char *path, size_t sz)
{
	const char	*dir = getenv("TMPDIR");
	int		 fd;

	snprintf(path, sz, "%s/test_log.XXXXXX", dir != NULL && *dir != '\0' ?
	    dir : "/tmp");
	fd = mkstemp(path);
	assert_int_not_equal(fd, -1);
	close(fd);
	assert_int_equal(log_open(path), 0);
}

/* Line n (from 0) of the file at path, without its newline. */
static char *
line_of(const char *path, int n)
{
	char	 text[8192], *p, *end;
	ssize_t	 got;
	int	 fd = open(path, O_RDONLY);

	assert_int_not_equal(fd, -1);
	got = read(fd, text, sizeof(text) - 1);
	close(fd);
	assert_true(got >= 0);
	text[got] = '\0';
	for (p = text; n > 0; n--) {
		p = strchr(p, '\n');
		assert_non_null(p);
		p++;
	}
	end = strchr(p, '\n');
	assert_non_null(end);	/* every line ends with a newline */
	*end = '\0';
	return strdup(p);
}

/* "2026-12-04T09:53:12.123Z": UTC, to the millisecond. */
static void
assert_timestamp(const char *ts)
{
	int	 i;

	assert_int_equal(strlen(ts), 24);
	for (i = 0; i < 24; i++)
		if (strchr("-T:.Z", ts[i]) == NULL)
			assert_true(ts[i] >= '0' && ts[i] <= '9');
	assert_int_equal(ts[4], '-');
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[19], '.');
	assert_int_equal(ts[23], 'Z');
}

static void
test_a_message_is_one_json_line(void **state)
{
	char		 path[4096], *line;
	struct json_object *o;

	(void)state;
	log_to_temp(path, sizeof(path));
	log_error("db_query: %s: \"%s\"\n\tagain", "reading keys", "a\\b");
	log_msg(LOG_DEBUG, "%d%%", 5);
	log_close();
	line = line_of(path, 0);
	o = unit_json(line);
	assert_timestamp(json_get_str(o, "ts"));
	assert_string_equal(json_get_str(o, "level"), "error");
	assert_int_equal(json_object_get_int64(json_object_object_get(o,
	    "pid")), getpid());
	assert_string_equal(json_get_str(o, "msg"),
	    "db_query: reading keys: \"a\\b\"\n\tagain");
	/* The fields, in this order, and no other. */
	assert_int_equal(json_object_object_length(o), 4);
	assert_memory_equal(line, "{\"ts\":\"", 7);
	json_object_put(o);
	free(line);
	line = line_of(path, 1);
	o = unit_json(line);
	assert_string_equal(json_get_str(o, "level"), "debug");
	assert_string_equal(json_get_str(o, "msg"), "5%");
	json_object_put(o);
	free(line);
	unlink(path);
}

static void
test_access_line(void **state)
{
	struct log_request r = {
		.request_id = "req\"1", .method = "POST",
		.path = "/v1/chat/completions", .status = 200,
		.latency_ms = 12.3456, .key_id = NULL,
	};
	char		 path[4096], *line;
	struct json_object *o, *v;

	(void)state;
	log_to_temp(path, sizeof(path));
	log_access(&r);
	r.key_id = "k1";
	r.status = 499;
	r.path = "/a\x01";
	log_access(&r);
	log_close();
	line = line_of(path, 0);
	o = unit_json(line);
	json_object_object_del(o, "ts");
	json_object_object_del(o, "pid");
	assert_json(o, "{\"level\":\"info\",\"request_id\":\"req\\\"1\","
	    "\"method\":\"POST\",\"path\":\"/v1/chat/completions\","
	    "\"status\":200,\"latency_ms\":12.346,\"key_id\":null}");
	/* No key: null, not absent; milliseconds with three decimals. */
	assert_true(json_object_object_get_ex(o, "key_id", &v));
	assert_null(v);
	assert_non_null(strstr(line, "\"latency_ms\":12.346,"));
	json_object_put(o);
	free(line);
	line = line_of(path, 1);
	o = unit_json(line);
	assert_string_equal(json_get_str(o, "key_id"), "k1");
	assert_string_equal(json_get_str(o, "path"), "/a\x01");
	assert_non_null(strstr(line, "\"path\":\"/a\\u0001\""));
	json_object_put(o);
	free(line);
	unlink(path);
}

/*
 * Bytes that are not UTF-8 (a client's path can hold any) become U+FFFD:
 * every line stays JSON to a strict reader; valid UTF-8 stays as it is.
 */
static void
test_bytes_that_are_not_utf8(void **state)
{
	struct log_request r = {
		.request_id = "r", .method = "GET", .path = "/\xff\xfe\xc3\xa9",
		.status = 404, .latency_ms = 1, .key_id = NULL,
	};
	char		 path[4096], *line;

	(void)state;
	log_to_temp(path, sizeof(path));
	log_access(&r);
	log_msg(LOG_WARN, "odd \xed\xa0\x80 bytes");
	log_close();
	line = line_of(path, 0);
	assert_non_null(strstr(line, "\"path\":\"/\\ufffd\\ufffd\xc3\xa9\""));
	assert_true(json_utf8_valid(line, strlen(line)));
	free(line);
	line = line_of(path, 1);
	assert_non_null(strstr(line, "odd \\ufffd\\ufffd\\ufffd bytes"));
	assert_true(json_utf8_valid(line, strlen(line)));
	free(line);
	unlink(path);
}

/* A path that cannot be opened: -1 with errno, the old file kept. */
static void
test_a_failed_open_keeps_the_old_file(void **state)
{
	char		 path[4096], *line;

	(void)state;
	log_to_temp(path, sizeof(path));
	errno = 0;
	assert_int_equal(log_open("/nonexistent-dir/keygate.log"), -1);
	assert_int_equal(errno, ENOENT);
	log_info("still here");
	/* Reopening the same name appends; it does not truncate. */
	assert_int_equal(log_open(path), 0);
	log_warn("and here");
	/* NULL or "" is stderr again; the file is closed. */
	assert_int_equal(log_open(""), 0);
	line = line_of(path, 0);
	assert_non_null(strstr(line, "\"level\":\"info\",\"pid\":"));
	assert_non_null(strstr(line, "\"msg\":\"still here\"}"));
	free(line);
	line = line_of(path, 1);
	assert_non_null(strstr(line, "\"level\":\"warn\""));
	free(line);
	assert_int_equal(log_open(NULL), 0);
	log_close();
	unlink(path);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_a_message_is_one_json_line),
    cmocka_unit_test(test_access_line),
    cmocka_unit_test(test_bytes_that_are_not_utf8),
    cmocka_unit_test(test_a_failed_open_keeps_the_old_file))
