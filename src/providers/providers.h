#ifndef KEYGATE_PROVIDERS_PROVIDERS_H
#define KEYGATE_PROVIDERS_PROVIDERS_H

#include <stddef.h>

#include "core/vault.h"

struct config;

enum validate_result {
	VALIDATE_OK,
	VALIDATE_REJECTED,	/* the provider said no: reason says why */
	VALIDATE_UNREACHABLE,	/* no usable answer: timeout, 5xx, network */
	VALIDATE_RESULT__MAX
};

/*
 * Tries key against the provider's cheapest authenticated endpoint (the
 * model list; OpenRouter's key endpoint) at the configured base URL.  The
 * key travels in a header, never in a URL.  reason gets the provider's own
 * message on a rejection, or what went wrong otherwise.
 */
enum validate_result provider_validate_key(const struct config *,
		    enum provider, const char *key, char *reason,
		    size_t reasonsz);

#endif
