#include "autoconfig.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/keycache.h"

#define KEYCACHE_SLOTS	1024	/* direct-mapped by prefix */

struct keycache {
	struct keycache_entry	 slot[KEYCACHE_SLOTS];
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
	if (kc == NULL)
		return;
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

static struct keycache_entry *
slot_of(struct keycache *kc, const char *prefix)
{
	uint32_t h = 2166136261u;
	const char *s;

	for (s = prefix; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return &kc->slot[h % KEYCACHE_SLOTS];
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
