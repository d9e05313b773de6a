#ifndef KEYGATE_LIB_SSE_H
#define KEYGATE_LIB_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

/*
 * Server-Sent Events (the HTML standard's "text/event-stream"), as LLM
 * providers stream their answers: an incremental parser of untrusted
 * bytes, fed as they arrive in pieces of any size, and the writer of the
 * events keygate sends on.
 *
 * Lines end with \r\n, \r or \n (a \r\n may be split between two pieces);
 * a blank line ends an event; "data:" lines are joined with \n; "event:"
 * names the event; comments (":") and "id:" and "retry:" are read and
 * dropped; a byte-order mark at the very start is skipped.  An event
 * without a data line is not delivered, as the standard says.  Bytes after
 * the last blank line are not an event.
 */
struct sse_parser {
	struct buf	 line;		/* the line being read */
	struct buf	 data;		/* the event's data, lines joined */
	size_t		 ndata;		/* its data lines */
	char		 event[64];	/* its event name, "" = none */
	size_t		 max;		/* bytes one event may hold */
	bool		 past_first;	/* the first line was read */
	bool		 saw_cr;	/* the last byte fed was \r */
};

/* One whole event; valid during the callback only. */
struct sse_event {
	const char	*data;		/* NUL-terminated; may hold NULs */
	size_t		 len;
	size_t		 lines;		/* data lines it was joined from */
	const char	*name;		/* the event: field, "" = none */
};

/* Receives an event; 0 to go on, -1 to stop (sse_feed() returns -1). */
typedef int	(*sse_event_fn)(void *arg, const struct sse_event *);

/* A parser for events of at most max bytes (lines and data alike). */
void	sse_init(struct sse_parser *, size_t max);
/*
 * Reads n more bytes, calling fn for each event they complete.  Returns
 * 0; -1 when fn returned -1 or memory ran out; -2 when an event or a line
 * grew past max (the stream is not to be trusted further).
 */
int	sse_feed(struct sse_parser *, const char *p, size_t n,
	    sse_event_fn fn, void *arg) __attribute__((warn_unused_result));
/* Frees what the parser holds; it can be initialised again. */
void	sse_free(struct sse_parser *);

/*
 * Appends an event to out: "event: <event>" when event is not NULL, then
 * p's lines (split at \n; a trailing \n adds none) each as a "data:"
 * line, then the blank line.  0, or -1 when memory ran out.
 */
int	sse_write(struct buf *out, const char *event, const char *p, size_t n)
	    __attribute__((warn_unused_result));
/* The same without an event name. */
int	sse_write_data(struct buf *out, const char *p, size_t n)
	    __attribute__((warn_unused_result));

#endif
