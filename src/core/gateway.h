#ifndef KEYGATE_CORE_GATEWAY_H
#define KEYGATE_CORE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/vault.h"
#include "lib/buf.h"

struct config;
struct db;
struct vault;

/*
 * The gateway's rules: which provider a model belongs to, and which key
 * pays for a call, by a fixed priority.
 */

/*
 * The FastCGI parameter of each provider's inline key header
 * (X-OpenAI-Key -> HTTP_X_OPENAI_KEY, ...).
 */
extern const char *const gateway_inline_param[PROVIDER__MAX];

/* The provider serving model by name, or PROVIDER__MAX when none does. */
enum provider	 gateway_route(const char *model);

/* Where a call goes and with which key. */
struct gateway_key {
	enum provider	 provider;	/* the provider actually called */
	char		 model[256];	/* the model id sent to it */
	bool		 pool;		/* the operator's key, with markup */
	struct buf	 secret;	/* the provider key; wipe with _free */
};

enum resolve_result {
	RESOLVE_OK,
	RESOLVE_NONE,		/* no key anywhere: 401 missing_provider_key */
	RESOLVE_DB,		/* database failure: see db_status() */
	RESOLVE_VAULT,		/* a stored value does not open */
	RESOLVE_RESULT__MAX
};

/*
 * Picks the key, first hit wins: the inline header for the routed
 * provider (inline, may be NULL), the tenant's vault key for it, the
 * tenant's own OpenRouter key (any model, through OpenRouter), the
 * operator's pool_openrouter_key.  vault may be NULL (no master keys).
 */
enum resolve_result gateway_resolve(struct db *, const struct vault *,
		    const struct config *, const char *tenant,
		    enum provider routed, const char *model,
		    const char *inline_key, struct gateway_key *out)
		    __attribute__((warn_unused_result));
/* Wipes and frees the secret. */
void		 gateway_key_free(struct gateway_key *);

#endif
