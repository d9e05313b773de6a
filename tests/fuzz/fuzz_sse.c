/*
 * libFuzzer harness for src/lib/sse.c: any bytes, fed whole and again in
 * pieces whose sizes the input's first byte picks, must give the same
 * events, never more data than was fed, and no memory error.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/sse.h"

struct tally {
	size_t	 events;
	size_t	 bytes;
	uint32_t hash;
};

static int
count(void *arg, const struct sse_event *ev)
{
	struct tally	*t = arg;
	size_t		 i;

	t->events++;
	t->bytes += ev->len;
	for (i = 0; i < ev->len; i++)
		t->hash = t->hash * 31 + (unsigned char)ev->data[i];
	for (i = 0; ev->name[i] != '\0'; i++)
		t->hash = t->hash * 31 + (unsigned char)ev->name[i];
	if (ev->data[ev->len] != '\0')
		abort();
	return 0;
}

static int
run(const uint8_t *p, size_t n, size_t piece, struct tally *t)
{
	struct sse_parser s;
	size_t		 off = 0, k;
	int		 rc = 0;

	memset(t, 0, sizeof(*t));
	sse_init(&s, 4096);
	while (off < n && rc == 0) {
		k = n - off < piece ? n - off : piece;
		rc = sse_feed(&s, (const char *)p + off, k, count, t);
		off += k;
	}
	sse_free(&s);
	return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tally	 whole, split;
	size_t		 piece;
	int		 a, b;

	if (size == 0)
		return 0;
	piece = (size_t)data[0] % 17 + 1;
	a = run(data + 1, size - 1, size, &whole);
	b = run(data + 1, size - 1, piece, &split);
	if (a != b)
		abort();
	if (a == 0 && (whole.events != split.events ||
	    whole.bytes != split.bytes || whole.hash != split.hash))
		abort();
	if (whole.bytes > size)
		abort();
	return 0;
}
