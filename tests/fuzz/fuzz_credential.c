/*
 * libFuzzer harness for what a caller presents as a credential: API keys
 * (src/core/apikey.c: shape, checksum, prefix) and JWTs (src/core/jwt.c:
 * base64url, JSON claims, HS256).  Any text is refused or accepted without
 * a memory error, and what is accepted comes back NUL-terminated.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/apikey.h"
#include "core/jwt.h"
#include "lib/crypto.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct apikey_parts parts;
	struct jwt_claims claims;
	static int	 ready;
	char		*text, err[128];

	if (!ready) {
		if (crypto_init(err, sizeof(err)) == -1)
			abort();
		ready = 1;
	}
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (apikey_parse(text, "kg", &parts) == 0 &&
	    memchr(parts.prefix, '\0', sizeof(parts.prefix)) == NULL)
		abort();
	if (jwt_looks_like(text) &&
	    jwt_verify(text, "fuzzing-secret-of-32-bytes-long!", 30,
	    1800000000, &claims) == JWT_OK &&
	    (memchr(claims.sub, '\0', sizeof(claims.sub)) == NULL ||
	    memchr(claims.scopes, '\0', sizeof(claims.scopes)) == NULL))
		abort();
	free(text);
	return 0;
}
