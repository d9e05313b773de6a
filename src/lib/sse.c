#include "autoconfig.h"

#include <string.h>

#include "lib/sse.h"

void
sse_init(struct sse_parser *s, size_t max)
{
	memset(s, 0, sizeof(*s));
	s->max = max;
}

void
sse_free(struct sse_parser *s)
{
	buf_free(&s->line);
	buf_free(&s->data);
	memset(s, 0, sizeof(*s));
}

/* Delivers the event read so far (when it has data), and starts over. */
static int
dispatch(struct sse_parser *s, sse_event_fn fn, void *arg)
{
	struct sse_event ev;
	int		 rc = 0;

	if (s->ndata > 0) {
		ev.data = s->data.data != NULL ? s->data.data : "";
		ev.len = s->data.len;
		ev.lines = s->ndata;
		ev.name = s->event;
		rc = fn(arg, &ev);
	}
	buf_reset(&s->data);
	s->ndata = 0;
	s->event[0] = '\0';
	return rc;
}

/* One whole line (without its end): a field of the event, or its end. */
static int
on_line(struct sse_parser *s, sse_event_fn fn, void *arg)
{
	const char	*l = s->line.data != NULL ? s->line.data : "";
	size_t		 n = s->line.len, name;
	const char	*v;
	size_t		 vlen;

	/* A byte-order mark may open the stream, and only there. */
	if (!s->past_first && n >= 3 && memcmp(l, "\xef\xbb\xbf", 3) == 0) {
		l += 3;
		n -= 3;
	}
	s->past_first = true;
	if (n == 0)
		return dispatch(s, fn, arg);
	if (l[0] == ':')
		return 0;		/* a comment, as keep-alives are */
	for (name = 0; name < n && l[name] != ':'; name++)
		continue;
	v = l + name + (name < n);
	vlen = n - name - (name < n);
	if (vlen > 0 && *v == ' ') {
		v++;
		vlen--;
	}
	if (name == 4 && memcmp(l, "data", 4) == 0) {
		if (s->data.len + vlen + 1 > s->max)
			return -2;
		if ((s->ndata++ > 0 && buf_append(&s->data, "\n", 1) == -1) ||
		    buf_append(&s->data, v, vlen) == -1)
			return -1;
	} else if (name == 5 && memcmp(l, "event", 5) == 0) {
		if (vlen >= sizeof(s->event))
			vlen = sizeof(s->event) - 1;
		memcpy(s->event, v, vlen);
		s->event[vlen] = '\0';
	}
	/* id, retry and fields nobody defined: nothing to keep. */
	return 0;
}

/* Appends a run of bytes that holds no line end to the current line. */
static int
add(struct sse_parser *s, const char *p, size_t n)
{
	if (s->line.len + n > s->max)
		return -2;
	return buf_append(&s->line, p, n);
}

int
sse_feed(struct sse_parser *s, const char *p, size_t n, sse_event_fn fn,
    void *arg)
{
	size_t	 i = 0, run;
	int	 rc;

	while (i < n) {
		if (p[i] == '\n' && s->saw_cr) {
			/* The \n of a \r\n whose \r ended the line already. */
			s->saw_cr = false;
			i++;
			continue;
		}
		s->saw_cr = false;
		for (run = i; run < n && p[run] != '\r' && p[run] != '\n';
		    run++)
			continue;
		if (run > i && (rc = add(s, p + i, run - i)) != 0)
			return rc;
		if (run == n)
			break;
		s->saw_cr = p[run] == '\r';
		rc = on_line(s, fn, arg);
		buf_reset(&s->line);
		if (rc != 0)
			return rc;
		i = run + 1;
	}
	return 0;
}

int
sse_write(struct buf *out, const char *event, const char *p, size_t n)
{
	const char	*line = p, *nl;

	if (event != NULL && buf_printf(out, "event: %s\n", event) == -1)
		return -1;
	/* A line a data: field; "" is one empty field. */
	do {
		if ((nl = memchr(line, '\n', (size_t)(p + n - line))) == NULL)
			nl = p + n;
		if (buf_puts(out, "data: ") == -1 ||
		    buf_append(out, line, (size_t)(nl - line)) == -1 ||
		    buf_puts(out, "\n") == -1)
			return -1;
		line = nl + 1;
	} while (line < p + n);
	return buf_puts(out, "\n");
}

int
sse_write_data(struct buf *out, const char *p, size_t n)
{
	return sse_write(out, NULL, p, n);
}
