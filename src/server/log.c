#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "server/log.h"

const char *const log_level_names[LOG__MAX] = {
	"debug",	/* LOG_DEBUG */
	"info",		/* LOG_INFO */
	"warn",		/* LOG_WARN */
	"error",	/* LOG_ERROR */
};

/* The log descriptor: stderr unless log_open() named a file. */
static int log_fd = STDERR_FILENO;

int
log_open(const char *path)
{
	int	 fd;

	if (path == NULL || *path == '\0') {
		log_close();
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	log_close();
	log_fd = fd;
	return 0;
}

void
log_close(void)
{
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = STDERR_FILENO;
}

static void
put_ts(char *out, size_t sz)
{
	struct timespec	 ts;
	struct tm	 tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, sz, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000) % 1000);
}

static void
emit(struct buf *b)
{
	size_t	 off = 0;
	ssize_t	 n;

	if (b->data == NULL)
		return;
	while (off < b->len) {
		n = write(log_fd, b->data + off, b->len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
}

void
log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	struct buf	 msg = { 0 }, line = { 0 };
	char		 ts[64];
	int		 rc;

	put_ts(ts, sizeof(ts));
	rc = buf_vprintf(&msg, fmt, ap);
	if (rc == 0)
		rc = buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\","
		    "\"pid\":%ld,\"msg\":\"", ts, log_level_names[lvl],
		    (long)getpid());
	if (rc == 0)
		rc = buf_json_escape_text(&line, msg.data ? msg.data : "",
		    msg.len);
	if (rc == 0)
		rc = buf_puts(&line, "\"}\n");
	if (rc == 0)
		emit(&line);
	buf_free(&msg);
	buf_free(&line);
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

static int
put_str(struct buf *b, const char *name, const char *v)
{
	if (v == NULL)
		return buf_printf(b, ",\"%s\":null", name);
	if (buf_printf(b, ",\"%s\":\"", name) == -1 ||
	    buf_json_escape_text(b, v, strlen(v)) == -1)
		return -1;
	return buf_puts(b, "\"");
}

void
log_access(const struct log_request *r)
{
	struct buf	 line = { 0 };
	char		 ts[64];

	put_ts(ts, sizeof(ts));
	if (buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"info\","
	    "\"pid\":%ld", ts, (long)getpid()) == 0 &&
	    put_str(&line, "request_id", r->request_id) == 0 &&
	    put_str(&line, "method", r->method) == 0 &&
	    put_str(&line, "path", r->path) == 0 &&
	    buf_printf(&line, ",\"status\":%d,\"latency_ms\":%.3f",
	    r->status, r->latency_ms) == 0 &&
	    put_str(&line, "key_id", r->key_id) == 0 &&
	    buf_puts(&line, "}\n") == 0)
		emit(&line);
	buf_free(&line);
}
