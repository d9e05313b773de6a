#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/keycache.h"
#include "lib/hash.h"

#define KEYCACHE_SLOTS	1024	/* direct-mapped by prefix */
#define SEALED_SLOTS	1024	/* direct-mapped by tenant and provider */
#define MISS_SLOTS	1024	/* direct-mapped by prefix */
#define RING		256	/* changes kept in shared memory */
#define RING_SLACK	16	/* a reader this close to lapped forgets all */
#define WHAT_MAX	48	/* "k:" and a UUID, with room */

/*
 * The changes workers made themselves, for the others: a ring written
 * under a lock, read without one.  seq counts what was ever published;
 * change n is in what[n % RING] until RING more have been.
 */
struct keycache_shared {
	pthread_mutex_t	 mu;		/* writers: process-shared, robust */
	_Atomic unsigned long seq;
	_Atomic unsigned long flushes;	/* changes that could not be written */
	char		 what[RING][WHAT_MAX];
};

/* A prefix PostgreSQL had no key for. */
struct keycache_miss {
	char		 prefix[48];
	double		 read_at;	/* monotonic s */
	unsigned long	 generation;	/* 0 = empty */
};

struct keycache {
	struct keycache_entry	 slot[KEYCACHE_SLOTS];
	struct keycache_sealed	 sealed[SEALED_SLOTS];
	struct keycache_miss	 miss[MISS_SLOTS];
	unsigned long		 generation;	/* bumped to drop everything */
	unsigned long		 changes;	/* any drop at all */
	unsigned long		 seen;		/* shared->seq applied */
	unsigned long		 seen_flushes;	/* shared->flushes applied */
	unsigned long		 hits;		/* keycache_get() found it */
	unsigned long		 misses;	/* keycache_get() did not */
	struct keycache_shared	*shared;
};

size_t
keycache_shared_size(void)
{
	return sizeof(struct keycache_shared);
}

int
keycache_shared_init(struct keycache_shared *sh)
{
	pthread_mutexattr_t a;
	int		 rc = 0;

	if (pthread_mutexattr_init(&a) != 0)
		return -1;
	if (pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0 ||
	    pthread_mutex_init(&sh->mu, &a) != 0)
		rc = -1;
	pthread_mutexattr_destroy(&a);
	atomic_init(&sh->seq, 0);
	atomic_init(&sh->flushes, 0);
	return rc;
}

struct keycache *
keycache_new(struct keycache_shared *shared)
{
	struct keycache *kc;

	if ((kc = calloc(1, sizeof(*kc))) == NULL)
		return NULL;
	kc->generation = 1;
	kc->shared = shared;
	if (shared != NULL) {
		kc->seen = atomic_load(&shared->seq);
		kc->seen_flushes = atomic_load(&shared->flushes);
	}
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

static void
sealed_clear(struct keycache_sealed *e)
{
	free(e->ciphertext);
	memset(e, 0, sizeof(*e));
}

/* Drops, in this worker only, what a change touched. */
static void
drop(struct keycache *kc, const char *what)
{
	const char	*id = what + 2;
	int		 i;

	kc->changes++;
	if (strlen(what) < 3 || what[1] != ':' ||
	    strchr("krtvp", what[0]) == NULL) {
		kc->generation++;
		return;
	}
	if (what[0] == 'p') {
		for (i = 0; i < MISS_SLOTS; i++)
			if (strcmp(kc->miss[i].prefix, id) == 0)
				memset(&kc->miss[i], 0, sizeof(kc->miss[i]));
		return;
	}
	for (i = 0; i < KEYCACHE_SLOTS && what[0] != 'v'; i++) {
		struct keycache_entry *e = &kc->slot[i];

		if (e->generation == 0)
			continue;
		if ((what[0] == 'k' && strcmp(e->key_id, id) == 0) ||
		    (what[0] == 'r' && strcmp(e->role_id, id) == 0) ||
		    (what[0] == 't' && strcmp(e->tenant_id, id) == 0))
			memset(e, 0, sizeof(*e));
	}
	for (i = 0; i < SEALED_SLOTS && (what[0] == 't' || what[0] == 'v');
	    i++)
		if (strcmp(kc->sealed[i].tenant_id, id) == 0)
			sealed_clear(&kc->sealed[i]);
}

/*
 * Publishes a change for the other workers.  When the ring cannot be
 * written, they are told to drop everything instead.
 */
static void
publish(struct keycache_shared *sh, const char *what)
{
	unsigned long	 n;
	int		 rc = pthread_mutex_lock(&sh->mu);

	if (rc == EOWNERDEAD && pthread_mutex_consistent(&sh->mu) != 0) {
		pthread_mutex_unlock(&sh->mu);
		rc = -1;
	}
	if (rc != 0 && rc != EOWNERDEAD) {
		atomic_fetch_add(&sh->flushes, 1);
		return;
	}
	n = atomic_load(&sh->seq) + 1;
	snprintf(sh->what[n % RING], WHAT_MAX, "%s",
	    strlen(what) < WHAT_MAX ? what : "*");
	atomic_store(&sh->seq, n);
	pthread_mutex_unlock(&sh->mu);
}

/*
 * Applies what the other workers published since the last look.  One that
 * fell too far behind (or was lapped while reading) drops everything.
 */
static void
sync_shared(struct keycache *kc)
{
	struct keycache_shared *sh = kc->shared;
	char		 what[WHAT_MAX];
	unsigned long	 seq, n;

	if (sh == NULL)
		return;
	if ((n = atomic_load(&sh->flushes)) != kc->seen_flushes) {
		kc->seen_flushes = n;
		drop(kc, "*");
	}
	if ((seq = atomic_load(&sh->seq)) == kc->seen)
		return;
	if (seq - kc->seen > RING - RING_SLACK) {
		kc->seen = seq;
		drop(kc, "*");
		return;
	}
	for (n = kc->seen + 1; n - 1 != seq; n++) {
		memcpy(what, sh->what[n % RING], sizeof(what));
		what[sizeof(what) - 1] = '\0';
		/* The copy is done before seq is looked at again. */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load(&sh->seq) - n > RING - RING_SLACK) {
			drop(kc, "*");
			break;
		}
		drop(kc, what);
	}
	kc->seen = seq;
}

void
keycache_forget(struct keycache *kc, const char *what, bool everywhere)
{
	sync_shared(kc);
	drop(kc, what);
	/*
	 * Our own change comes back at the next sync and is dropped again,
	 * which is harmless; skipping it could skip another worker's change
	 * published just before.
	 */
	if (everywhere && kc->shared != NULL)
		publish(kc->shared, what);
}

unsigned long
keycache_token(struct keycache *kc)
{
	sync_shared(kc);
	return kc->changes;
}

static struct keycache_entry *
slot_of(struct keycache *kc, const char *prefix)
{
	return &kc->slot[hash_fnv32(prefix) % KEYCACHE_SLOTS];
}

static struct keycache_sealed *
sealed_of(struct keycache *kc, const char *tenant, int provider)
{
	uint32_t h = hash_fnv32(tenant);

	/* The provider mixed in as FNV-1a mixes each byte. */
	h = (h ^ (unsigned)provider) * 16777619u;
	return &kc->sealed[h % SEALED_SLOTS];
}

/* An entry of this generation, read less than KEYCACHE_TTL before now. */
static bool
fresh(const struct keycache *kc, unsigned long generation, double read_at,
    double now)
{
	return generation == kc->generation && now >= read_at &&
	    now - read_at < KEYCACHE_TTL;
}

struct keycache_entry *
keycache_get(struct keycache *kc, const char *prefix, double now)
{
	struct keycache_entry *e;

	sync_shared(kc);
	e = slot_of(kc, prefix);
	if (!fresh(kc, e->generation, e->read_at, now) ||
	    strcmp(e->prefix, prefix) != 0) {
		kc->misses++;
		return NULL;
	}
	kc->hits++;
	return e;
}

void
keycache_counts(const struct keycache *kc, unsigned long *hits,
    unsigned long *misses)
{
	*hits = kc != NULL ? kc->hits : 0;
	*misses = kc != NULL ? kc->misses : 0;
}

/*
 * Whether what was read for prefix under token may be kept, in a slot
 * whose prefix holds room bytes: not when a key changed since token was
 * taken (what was read may be stale already), nor when the prefix does
 * not fit.  Other workers' changes are taken in first.
 */
static bool
may_keep(struct keycache *kc, const char *prefix, size_t room,
    unsigned long token)
{
	sync_shared(kc);
	return token == kc->changes && strlen(prefix) < room;
}

struct keycache_entry *
keycache_put(struct keycache *kc, const char *prefix, double now,
    unsigned long token)
{
	struct keycache_entry *e = slot_of(kc, prefix);

	if (!may_keep(kc, prefix, sizeof(e->prefix), token))
		return NULL;
	memset(e, 0, sizeof(*e));
	memcpy(e->prefix, prefix, strlen(prefix) + 1);
	e->read_at = now;
	e->generation = kc->generation;
	return e;
}

static struct keycache_miss *
miss_of(struct keycache *kc, const char *prefix)
{
	return &kc->miss[hash_fnv32(prefix) % MISS_SLOTS];
}

bool
keycache_miss_get(struct keycache *kc, const char *prefix, double now)
{
	struct keycache_miss *m;

	sync_shared(kc);
	m = miss_of(kc, prefix);
	return fresh(kc, m->generation, m->read_at, now) &&
	    strcmp(m->prefix, prefix) == 0;
}

void
keycache_miss_put(struct keycache *kc, const char *prefix, double now,
    unsigned long token)
{
	struct keycache_miss *m = miss_of(kc, prefix);

	if (!may_keep(kc, prefix, sizeof(m->prefix), token))
		return;
	memcpy(m->prefix, prefix, strlen(prefix) + 1);
	m->read_at = now;
	m->generation = kc->generation;
}

const struct keycache_sealed *
keycache_sealed_get(struct keycache *kc, const char *tenant, int provider,
    double now)
{
	struct keycache_sealed *e;

	sync_shared(kc);
	e = sealed_of(kc, tenant, provider);
	if (!fresh(kc, e->generation, e->read_at, now) ||
	    e->provider != provider || strcmp(e->tenant_id, tenant) != 0)
		return NULL;
	return e;
}

void
keycache_sealed_put(struct keycache *kc, const char *tenant, int provider,
    const char *key_id, const char *ciphertext, double now,
    unsigned long token)
{
	struct keycache_sealed *e = sealed_of(kc, tenant, provider);

	sync_shared(kc);
	if (token != kc->changes)
		return;
	sealed_clear(e);
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
	e->generation = kc->generation;
}
