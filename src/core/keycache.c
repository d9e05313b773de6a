#include "autoconfig.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/keycache.h"

#define KEYCACHE_SLOTS	1024	/* direct-mapped by prefix */
#define SEALED_SLOTS	1024	/* direct-mapped by tenant and provider */

struct keycache {
	struct keycache_entry	 slot[KEYCACHE_SLOTS];
	struct keycache_sealed	 sealed[SEALED_SLOTS];
	unsigned long		 generation;	/* entries of older ones are void */
	unsigned long		 seen;		/* *shared when last looked at */
	_Atomic unsigned long	*shared;
};

struct keycache *
keycache_new(_Atomic unsigned long *shared_generation)
{
	struct keycache *kc;

	if ((kc = calloc(1, sizeof(*kc))) == NULL)
		return NULL;
	kc->generation = 1;
	kc->shared = shared_generation;
	if (kc->shared != NULL)
		kc->seen = atomic_load(kc->shared);
	return kc;
}

void
keycache_free(struct keycache *kc)
{
	int	 i;

	if (kc == NULL)
		return;
	for (i = 0; i < SEALED_SLOTS; i++)
		free(kc->sealed[i].ciphertext);
	explicit_bzero(kc, sizeof(*kc));
	free(kc);
}

void
keycache_forget(struct keycache *kc, bool everywhere)
{
	kc->generation++;
	if (everywhere && kc->shared != NULL)
		kc->seen = atomic_fetch_add(kc->shared, 1) + 1;
}

static uint32_t
fnv1a(const char *s, uint32_t h)
{
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static struct keycache_entry *
slot_of(struct keycache *kc, const char *prefix)
{
	return &kc->slot[fnv1a(prefix, 2166136261u) % KEYCACHE_SLOTS];
}

static struct keycache_sealed *
sealed_of(struct keycache *kc, const char *tenant, int provider)
{
	uint32_t h = fnv1a(tenant, 2166136261u);

	h = (h ^ (unsigned)provider) * 16777619u;
	return &kc->sealed[h % SEALED_SLOTS];
}

unsigned long
keycache_generation(struct keycache *kc)
{
	unsigned long	 shared;

	/* Another worker heard of a change: forget, as it did. */
	if (kc->shared != NULL &&
	    (shared = atomic_load(kc->shared)) != kc->seen) {
		kc->seen = shared;
		kc->generation++;
	}
	return kc->generation;
}

struct keycache_entry *
keycache_get(struct keycache *kc, const char *prefix, double now)
{
	struct keycache_entry *e;

	(void)keycache_generation(kc);
	e = slot_of(kc, prefix);
	if (e->generation != kc->generation || strcmp(e->prefix, prefix) != 0 ||
	    now - e->read_at >= KEYCACHE_TTL || now < e->read_at)
		return NULL;
	return e;
}

struct keycache_entry *
keycache_put(struct keycache *kc, const char *prefix, double now,
    unsigned long generation)
{
	struct keycache_entry *e = slot_of(kc, prefix);
	size_t		 n = strlen(prefix);

	memset(e, 0, sizeof(*e));
	if (n >= sizeof(e->prefix))
		return NULL;
	memcpy(e->prefix, prefix, n + 1);
	e->read_at = now;
	e->generation = generation;
	return e;
}

const struct keycache_sealed *
keycache_sealed_get(struct keycache *kc, const char *tenant, int provider,
    double now)
{
	struct keycache_sealed *e;

	(void)keycache_generation(kc);
	e = sealed_of(kc, tenant, provider);
	if (e->generation != kc->generation || e->provider != provider ||
	    strcmp(e->tenant_id, tenant) != 0 ||
	    now - e->read_at >= KEYCACHE_TTL || now < e->read_at)
		return NULL;
	return e;
}

void
keycache_sealed_put(struct keycache *kc, const char *tenant, int provider,
    const char *key_id, const char *ciphertext, double now,
    unsigned long generation)
{
	struct keycache_sealed *e = sealed_of(kc, tenant, provider);

	free(e->ciphertext);
	memset(e, 0, sizeof(*e));
	if (strlen(tenant) >= sizeof(e->tenant_id) ||
	    (key_id != NULL && strlen(key_id) >= sizeof(e->key_id)))
		return;
	if (ciphertext != NULL) {
		if ((e->ciphertext = strdup(ciphertext)) == NULL)
			return;
		memcpy(e->key_id, key_id, strlen(key_id) + 1);
		e->found = true;
	}
	memcpy(e->tenant_id, tenant, strlen(tenant) + 1);
	e->provider = provider;
	e->read_at = now;
	e->generation = generation;
}
