/*
 * Unit tests for src/core/keycache.c: what each change drops, the token
 * that keeps a read from outliving a change, the age limit, and the ring
 * through which workers of one keygated pass their changes on (here two
 * caches on one block of memory, as two workers would be).
 */
#include "../unit.h"

#include <pthread.h>
#include <time.h>

/*
 * The module itself, not only its header: one test holds the ring's lock
 * to stop a worker inside a publish.  (The library's copy is then not
 * linked in: every symbol it has is already here.)
 */
#include "core/keycache.c"

#define KEY_A	"11111111-1111-1111-1111-111111111111"
#define KEY_B	"22222222-2222-2222-2222-222222222222"
#define TENANT	"33333333-3333-3333-3333-333333333333"
#define OTHER	"44444444-4444-4444-4444-444444444444"
#define ROLE	"55555555-5555-5555-5555-555555555555"

/* A cache, or the test stops here. */
static struct keycache *
cache_new(struct keycache_shared *sh)
{
	struct keycache *kc = keycache_new(sh);

	if (kc == NULL)
		abort();
	return kc;
}

/* Caches an API key under prefix, as auth.c does after a lookup. */
static void
put_key(struct keycache *kc, const char *prefix, const char *key_id,
    const char *tenant, const char *role, double now)
{
	struct keycache_entry *e;

	e = keycache_put(kc, prefix, now, keycache_token(kc));
	assert_non_null(e);
	snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
	snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", tenant);
	snprintf(e->role_id, sizeof(e->role_id), "%s", role);
	e->usable = true;
}

static void
put_sealed(struct keycache *kc, const char *tenant, int provider, double now)
{
	keycache_sealed_put(kc, tenant, provider, "k1", "v1:00:00:00", now,
	    keycache_token(kc));
}

/* Three keys (one with a role), two tenants' sealed keys. */
static void
fill(struct keycache *kc)
{
	put_key(kc, "kg_live_aaaaaaaa", KEY_A, TENANT, "", 1.0);
	put_key(kc, "kg_live_bbbbbbbb", KEY_B, TENANT, ROLE, 1.0);
	put_key(kc, "kg_live_cccccccc", "c", OTHER, "", 1.0);
	put_sealed(kc, TENANT, 0, 1.0);
	put_sealed(kc, OTHER, 0, 1.0);
}

static int
cached(struct keycache *kc, const char *prefix)
{
	return keycache_get(kc, prefix, 2.0) != NULL;
}

static int
sealed(struct keycache *kc, const char *tenant)
{
	return keycache_sealed_get(kc, tenant, 0, 2.0) != NULL;
}

static void
test_each_change_drops_what_it_touched(void **state)
{
	struct keycache	*kc = cache_new(NULL);

	(void)state;
	assert_non_null(kc);
	fill(kc);
	assert_true(cached(kc, "kg_live_aaaaaaaa"));
	assert_true(sealed(kc, TENANT));

	keycache_forget(kc, "k:" KEY_A, false);
	assert_false(cached(kc, "kg_live_aaaaaaaa"));
	assert_true(cached(kc, "kg_live_bbbbbbbb"));
	assert_true(cached(kc, "kg_live_cccccccc"));
	assert_true(sealed(kc, TENANT));

	keycache_forget(kc, "r:" ROLE, false);
	assert_false(cached(kc, "kg_live_bbbbbbbb"));
	assert_true(cached(kc, "kg_live_cccccccc"));

	fill(kc);
	keycache_forget(kc, "v:" TENANT, false);
	assert_false(sealed(kc, TENANT));
	assert_true(sealed(kc, OTHER));
	assert_true(cached(kc, "kg_live_aaaaaaaa"));

	fill(kc);
	keycache_forget(kc, "t:" TENANT, false);
	assert_false(cached(kc, "kg_live_aaaaaaaa"));
	assert_false(cached(kc, "kg_live_bbbbbbbb"));
	assert_false(sealed(kc, TENANT));
	assert_true(cached(kc, "kg_live_cccccccc"));
	assert_true(sealed(kc, OTHER));
	keycache_free(kc);
}

/*
 * A prefix with no key is remembered until a key takes it ("p:"), any
 * change to everything, or the age limit; other changes leave it.
 */
static void
test_unknown_prefixes(void **state)
{
	struct keycache	*kc = cache_new(NULL);

	(void)state;
	keycache_miss_put(kc, "kg_live_zzzzzzzz", 1.0, keycache_token(kc));
	keycache_miss_put(kc, "kg_live_yyyyyyyy", 1.0, keycache_token(kc));
	assert_true(keycache_miss_get(kc, "kg_live_zzzzzzzz", 2.0));
	assert_false(keycache_miss_get(kc, "kg_live_xxxxxxxx", 2.0));
	keycache_forget(kc, "k:" KEY_A, false);
	keycache_forget(kc, "t:" TENANT, false);
	assert_true(keycache_miss_get(kc, "kg_live_zzzzzzzz", 2.0));
	keycache_forget(kc, "p:kg_live_zzzzzzzz", false);
	assert_false(keycache_miss_get(kc, "kg_live_zzzzzzzz", 2.0));
	assert_true(keycache_miss_get(kc, "kg_live_yyyyyyyy", 2.0));
	assert_false(keycache_miss_get(kc, "kg_live_yyyyyyyy",
	    1.0 + KEYCACHE_TTL));
	keycache_forget(kc, "*", false);
	assert_false(keycache_miss_get(kc, "kg_live_yyyyyyyy", 2.0));
	/* A change heard during the read: nothing is kept. */
	{
		unsigned long token = keycache_token(kc);

		keycache_forget(kc, "k:" KEY_B, false);
		keycache_miss_put(kc, "kg_live_wwwwwwww", 3.0, token);
		assert_false(keycache_miss_get(kc, "kg_live_wwwwwwww", 3.0));
	}
	/* A prefix is kept when it fits: 47 bytes and the NUL, not 48. */
	{
		char	 longest[49];

		memset(longest, 'v', sizeof(longest) - 1);
		longest[48] = '\0';
		keycache_miss_put(kc, longest, 4.0, keycache_token(kc));
		assert_false(keycache_miss_get(kc, longest, 4.0));
		longest[47] = '\0';
		keycache_miss_put(kc, longest, 4.0, keycache_token(kc));
		assert_true(keycache_miss_get(kc, longest, 4.0));
	}
	keycache_free(kc);
}

static void
test_anything_else_drops_everything(void **state)
{
	static const char *const whats[] = { "*", "", "x:1", "k", "k:", "q" };
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(whats) / sizeof(whats[0]); i++) {
		struct keycache *kc = cache_new(NULL);

		assert_non_null(kc);
		fill(kc);
		keycache_forget(kc, whats[i], false);
		assert_false(cached(kc, "kg_live_aaaaaaaa"));
		assert_false(cached(kc, "kg_live_cccccccc"));
		assert_false(sealed(kc, TENANT));
		assert_false(sealed(kc, OTHER));
		keycache_free(kc);
	}
}

static void
test_a_change_during_a_read_keeps_nothing(void **state)
{
	struct keycache	*kc = cache_new(NULL);
	unsigned long	 token;

	(void)state;
	assert_non_null(kc);
	token = keycache_token(kc);
	/* Even a change to something else: the read may predate it. */
	keycache_forget(kc, "k:" KEY_B, false);
	assert_null(keycache_put(kc, "kg_live_aaaaaaaa", 1.0, token));
	keycache_sealed_put(kc, TENANT, 0, "k1", "v1:00:00:00", 1.0, token);
	assert_false(sealed(kc, TENANT));
	/* A fresh token works again. */
	assert_non_null(keycache_put(kc, "kg_live_aaaaaaaa", 1.0,
	    keycache_token(kc)));
	keycache_free(kc);
}

static void
test_entries_age_out(void **state)
{
	struct keycache	*kc = cache_new(NULL);

	(void)state;
	assert_non_null(kc);
	fill(kc);
	assert_non_null(keycache_get(kc, "kg_live_aaaaaaaa",
	    1.0 + KEYCACHE_TTL - 0.5));
	assert_null(keycache_get(kc, "kg_live_aaaaaaaa", 1.0 + KEYCACHE_TTL));
	assert_null(keycache_sealed_get(kc, TENANT, 0, 1.0 + KEYCACHE_TTL));
	/* A clock that went back trusts nothing either. */
	assert_null(keycache_get(kc, "kg_live_cccccccc", 0.5));
	/* Not another provider's entry, nor a prefix too long to keep. */
	assert_null(keycache_sealed_get(kc, TENANT, 1, 2.0));
	assert_null(keycache_put(kc, "kg_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaa", 1.0, keycache_token(kc)));
	keycache_free(kc);
}

/* The ring of changes the workers share, fresh. */
UNIT_SHARED(shared_new, struct keycache_shared, keycache_shared_size,
    keycache_shared_init)

static void
test_a_workers_own_change_reaches_the_others(void **state)
{
	struct keycache_shared *sh = shared_new();
	struct keycache	*a = cache_new(sh), *b = cache_new(sh);

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	fill(a);
	fill(b);
	/* Heard from PostgreSQL by a alone: b is not told. */
	keycache_forget(a, "k:" KEY_A, false);
	assert_true(cached(b, "kg_live_aaaaaaaa"));
	/* a's own change: b drops it before its next lookup. */
	keycache_forget(a, "k:" KEY_B, true);
	assert_false(cached(b, "kg_live_bbbbbbbb"));
	assert_true(cached(b, "kg_live_aaaaaaaa"));
	assert_true(cached(b, "kg_live_cccccccc"));
	/* Published while b reads a key: b keeps nothing of that read. */
	{
		unsigned long token = keycache_token(b);

		keycache_forget(a, "v:" OTHER, true);
		assert_null(keycache_put(b, "kg_live_dddddddd", 3.0, token));
		assert_false(sealed(b, OTHER));
		assert_true(sealed(b, TENANT));
	}
	/* Changes from both sides, interleaved: none is skipped. */
	fill(a);
	fill(b);
	keycache_forget(b, "k:" KEY_A, true);
	keycache_forget(a, "t:" OTHER, true);
	assert_false(cached(a, "kg_live_aaaaaaaa"));
	assert_false(cached(a, "kg_live_cccccccc"));
	assert_false(cached(b, "kg_live_cccccccc"));
	assert_false(sealed(b, OTHER));
	assert_true(cached(a, "kg_live_bbbbbbbb"));
	assert_true(cached(b, "kg_live_bbbbbbbb"));
	keycache_free(a);
	keycache_free(b);
	free(sh);
}

struct forgetting {
	struct keycache	*kc;
	const char	*what;
};

static void *
forget_everywhere(void *arg)
{
	struct forgetting *f = arg;

	keycache_forget(f->kc, f->what, true);
	return NULL;
}

static void
test_a_change_published_while_a_worker_waits_is_not_skipped(void **state)
{
	struct keycache_shared *sh = shared_new();
	struct keycache	*a = cache_new(sh);
	struct forgetting f = { a, "k:" KEY_A };
	struct timespec	 pause = { 0, 50 * 1000 * 1000 };
	pthread_t	 t;
	unsigned long	 n;

	(void)state;
	assert_non_null(a);
	fill(a);
	/* a heard its own change and waits for the ring... */
	assert_int_equal(pthread_mutex_lock(&sh->mu), 0);
	assert_int_equal(pthread_create(&t, NULL, forget_everywhere, &f), 0);
	nanosleep(&pause, NULL);
	/* ...while another worker publishes one of its own first. */
	n = atomic_load(&sh->seq) + 1;
	snprintf(sh->what[n % RING], WHAT_MAX, "k:%s", KEY_B);
	atomic_store(&sh->seq, n);
	assert_int_equal(pthread_mutex_unlock(&sh->mu), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(cached(a, "kg_live_aaaaaaaa"));
	assert_false(cached(a, "kg_live_bbbbbbbb"));
	assert_true(cached(a, "kg_live_cccccccc"));
	keycache_free(a);
	free(sh);
}

static void
test_a_worker_left_far_behind_drops_everything(void **state)
{
	struct keycache_shared *sh = shared_new();
	struct keycache	*a = cache_new(sh), *b = cache_new(sh);
	char		 what[64];
	int		 i;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	fill(b);
	/* More changes than the ring holds, none of them b's keys. */
	for (i = 0; i < 300; i++) {
		snprintf(what, sizeof(what), "k:%08d-0000-0000-0000-000000000000",
		    i);
		keycache_forget(a, what, true);
	}
	assert_false(cached(b, "kg_live_cccccccc"));
	assert_false(sealed(b, OTHER));
	/* Caught up: b caches again, and follows the next change. */
	fill(b);
	assert_true(cached(b, "kg_live_aaaaaaaa"));
	keycache_forget(a, "k:" KEY_A, true);
	assert_false(cached(b, "kg_live_aaaaaaaa"));
	assert_true(cached(b, "kg_live_cccccccc"));
	keycache_free(a);
	keycache_free(b);
	free(sh);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_each_change_drops_what_it_touched),
    cmocka_unit_test(test_unknown_prefixes),
    cmocka_unit_test(test_anything_else_drops_everything),
    cmocka_unit_test(test_a_change_during_a_read_keeps_nothing),
    cmocka_unit_test(test_entries_age_out),
    cmocka_unit_test(test_a_workers_own_change_reaches_the_others),
    cmocka_unit_test(
        test_a_change_published_while_a_worker_waits_is_not_skipped),
    cmocka_unit_test(test_a_worker_left_far_behind_drops_everything))
