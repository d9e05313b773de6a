/*
 * libFuzzer harness for src/lib/base64.c: decoding any text never writes
 * past its buffer, and what decodes is canonical: encoding it again gives
 * the same text back.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t	 out[1024];
	char	 again[1400];
	bool	 url;
	long	 n;
	size_t	 m;

	if (size == 0 || size > 1300)
		return 0;
	url = data[0] & 1;
	n = base64_decode((const char *)data + 1, size - 1, url, out,
	    sizeof(out));
	if (n < 0)
		return 0;
	if ((size_t)n > sizeof(out))
		abort();
	m = url ? base64url_encode(out, (size_t)n, again) :
	    base64_encode(out, (size_t)n, again);
	if (m != size - 1 || memcmp(again, data + 1, m) != 0)
		abort();
	return 0;
}
