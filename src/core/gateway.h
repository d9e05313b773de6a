#ifndef KEYGATE_CORE_GATEWAY_H
#define KEYGATE_CORE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/vault.h"
#include "lib/buf.h"

struct config_upstream;
struct config_upstreams;
struct db;
struct keycache;
struct vault;

/*
 * The gateway's rules: which provider a model belongs to, and which key
 * pays for a call, by a fixed priority.
 */

/*
 * The operator upstream (borrowed from ups) serving model, or NULL.  An
 * exact name wins over a prefix, a longer prefix over a shorter one; a
 * prefix matches only a longer name.  *strip gets how many leading bytes
 * of model go unsent (the matched prefix, for an upstream with strip).
 * Callers ask this before provider_route(): an upstream's names win.
 */
const struct config_upstream *gateway_upstream(
		    const struct config_upstreams *, const char *model,
		    size_t *strip);

/* What choosing a key needs of the configuration, as plain values. */
struct gateway_settings {
	const struct config_upstreams *upstreams; /* the operator's */
	const char	*pool_key;	/* the OpenRouter pool's, "" = none */
};

/*
 * Where the key paying for a call comes from, in the order tried: the
 * first that exists wins.
 */
enum key_source {
	SOURCE_UPSTREAM,	/* an operator upstream claims the name */
	SOURCE_INLINE,		/* sent along for the model's provider */
	SOURCE_INLINE_OPENROUTER, /* sent along as X-OpenRouter-Key */
	SOURCE_VAULT,		/* the tenant's stored key for the provider */
	SOURCE_VAULT_OPENROUTER, /* the tenant's stored OpenRouter key */
	SOURCE_POOL,		/* the operator's pool_openrouter_key */
	SOURCE__MAX
};

extern const char *const gateway_source_names[SOURCE__MAX];

/* Where a call goes and with which key. */
struct gateway_key {
	enum provider	 provider;	/* the provider actually called, or
					   PROVIDER__MAX for an upstream */
	enum provider	 native;	/* the provider the name routes to,
					   PROVIDER__MAX = none (an upstream,
					   or a name only OpenRouter knows) */
	enum key_source	 source;
	const struct config_upstream *upstream; /* borrowed, NULL = none */
	char		 model[256];	/* the model id sent to it */
	bool		 pool;		/* the operator's key or upstream */
	struct buf	 secret;	/* the provider key; wipe with _free */
};

/* The name a call's provider goes by: an upstream's, or a built-in's. */
const char	*gateway_provider_name(const struct gateway_key *);
/* The provider a call goes to: an upstream is OpenAI's format. */
const struct provider_module *gateway_provider(const struct gateway_key *);

enum resolve_result {
	RESOLVE_OK,
	RESOLVE_UNROUTED,	/* no provider serves the name: 400
				   unsupported_model */
	RESOLVE_NONE,		/* no key anywhere: 401 missing_provider_key */
	RESOLVE_UNMAPPED,	/* only OpenRouter could serve it, and the name
				   has no OpenRouter id: 400
				   model_not_available */
	RESOLVE_DB,		/* database failure: see db_status() */
	RESOLVE_VAULT,		/* a stored value does not open */
	RESOLVE_RESULT__MAX
};

/*
 * The one place that decides where a call for model goes and which key
 * pays for it; the gateway and the models list both ask it.  First hit
 * wins: an operator upstream claiming the name (gateway_upstream()); the
 * key sent along for the model's provider (inline[], indexed by provider,
 * entries NULL or "" when absent); a key sent along as X-OpenRouter-Key,
 * for any model; the tenant's stored key for the provider; the tenant's
 * stored OpenRouter key; the operator's pool_openrouter_key.  A native
 * name that goes through OpenRouter is sent as its OpenRouter id from the
 * openrouter_models table; one without an id there skips the OpenRouter
 * keys (the tenant's stored key for its provider may still serve it) and
 * is RESOLVE_UNMAPPED when nothing else does.  A name no built-in rule
 * routes reaches OpenRouter only through that table.  vault may be NULL (no master keys: stored keys are not usable);
 * stored keys are looked up in kc when one is given.  With open false
 * nothing is decrypted and out->secret stays empty: for a listing.
 */
enum resolve_result gateway_resolve(struct db *, const struct vault *,
		    struct keycache *kc, const struct gateway_settings *,
		    const char *tenant, const char *model,
		    const char *const inline_keys[PROVIDER__MAX], bool open,
		    struct gateway_key *out) __attribute__((warn_unused_result));
/* Wipes and frees the secret. */
void		 gateway_key_free(struct gateway_key *);

#endif
