#ifndef KEYGATE_CORE_GATEWAY_H
#define KEYGATE_CORE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/vault.h"
#include "lib/buf.h"

struct config;
struct config_upstream;
struct db;
struct keycache;
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

/*
 * The built-in provider serving model by name, or PROVIDER__MAX when none
 * does.  Operator upstreams come first: see gateway_upstream().
 */
enum provider	 gateway_route(const char *model);
/*
 * The operator upstream (borrowed from cfg) serving model, or NULL.  An
 * exact name wins over a prefix, a longer prefix over a shorter one; a
 * prefix matches only a longer name.  *strip gets how many leading bytes
 * of model go unsent (the matched prefix, for an upstream with strip).
 * Callers ask this before gateway_route(): an upstream's names win.
 */
const struct config_upstream *gateway_upstream(const struct config *,
		    const char *model, size_t *strip);

/* Where a call goes and with which key. */
struct gateway_key {
	enum provider	 provider;	/* the provider actually called, or
					   PROVIDER__MAX for an upstream */
	const struct config_upstream *upstream; /* borrowed, NULL = none */
	char		 model[256];	/* the model id sent to it */
	bool		 pool;		/* the operator's key or upstream */
	struct buf	 secret;	/* the provider key; wipe with _free */
};

/* The name a call's provider goes by: an upstream's, or a built-in's. */
const char	*gateway_provider_name(const struct gateway_key *);

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
 * operator's pool_openrouter_key.  vault may be NULL (no master keys);
 * stored keys are looked up in the cache when one is given.
 */
enum resolve_result gateway_resolve(struct db *, const struct vault *,
		    struct keycache *, const struct config *, const char *tenant,
		    enum provider routed, const char *model,
		    const char *inline_key, struct gateway_key *out)
		    __attribute__((warn_unused_result));
/*
 * A call to an operator upstream: the model as sent (model already without
 * any stripped prefix) and the upstream's key from the config (the secret
 * stays empty when it has none).  Counts as the operator's ("pool"), with
 * no markup.  RESOLVE_OK, or RESOLVE_DB when out of memory.
 */
enum resolve_result gateway_resolve_upstream(const struct config_upstream *,
		    const char *model, struct gateway_key *out)
		    __attribute__((warn_unused_result));
/* Wipes and frees the secret. */
void		 gateway_key_free(struct gateway_key *);

#endif
