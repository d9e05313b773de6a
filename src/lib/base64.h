#ifndef KEYGATE_LIB_BASE64_H
#define KEYGATE_LIB_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Base64 as keygate reads it: the standard alphabet with '=' padding (url
 * false: master keys), or base64url without padding (url true: JWTs).
 * Only the canonical encoding of a value is accepted (unused bits zero).
 */

/* Decodes n characters into out; the decoded length, or -1. */
long	 base64_decode(const char *in, size_t n, bool url, uint8_t *out,
	    size_t outsz) __attribute__((warn_unused_result));
/*
 * Writes n bytes as unpadded base64url and a NUL into out, which holds at
 * least (n * 4 + 2) / 3 + 1 bytes; returns the length written.
 */
size_t	 base64url_encode(const uint8_t *in, size_t n, char *out);
/*
 * Writes n bytes as padded standard base64 and a NUL into out, which holds
 * at least (n + 2) / 3 * 4 + 1 bytes; returns the length written.
 */
size_t	 base64_encode(const uint8_t *in, size_t n, char *out);

#endif
