#include "autoconfig.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/calls.h"
#include "lib/hash.h"
#include "lib/shmlock.h"

/*
 * An open-addressing table of (key hash, pid) -> calls, probed linearly
 * from the key's hash.  All of one key's entries lie in the run of used
 * entries that starts at its hash, so a count walks that run.  An entry
 * is never emptied (that would cut runs short): one whose count fell to 0
 * is taken over by the next (key, pid) whose probe passes it, and when
 * three quarters of the table have been used the live entries are packed
 * again.
 */
#define CALLS_SLOTS	4096
#define CALLS_WAIT_MS	50

struct calls_entry {
	uint64_t	 key;		/* hash of the key id, 0 = never used */
	int32_t		 pid;
	int32_t		 n;		/* calls in flight */
};

struct calls_shared {
	pthread_mutex_t	 lock;
	uint32_t	 used;		/* entries ever taken since packing */
	struct calls_entry e[CALLS_SLOTS];
};

size_t
calls_shared_size(void)
{
	return sizeof(struct calls_shared);
}

int
calls_shared_init(struct calls_shared *t)
{
	return shmlock_init(&t->lock, 1, sizeof(*t));
}

/* Never 0 (0 marks an unused entry). */
static uint64_t
hash(const char *s)
{
	uint64_t h = hash_fnv64(s);

	return h != 0 ? h : 1;
}

static bool
lock(struct calls_shared *t)
{
	bool	 abandoned = false;

	if (shmlock_take(&t->lock, CALLS_WAIT_MS, &abandoned) == -1)
		return false;
	if (abandoned) {
		/* Half written by a worker that died: start over. */
		memset(t->e, 0, sizeof(t->e));
		t->used = 0;
	}
	return true;
}

/* Packs the live entries again, dropping those at 0. */
static void
pack(struct calls_shared *t)
{
	static struct calls_entry live[CALLS_SLOTS];
	uint32_t i, n = 0, j;

	for (i = 0; i < CALLS_SLOTS; i++)
		if (t->e[i].key != 0 && t->e[i].n > 0)
			live[n++] = t->e[i];
	memset(t->e, 0, sizeof(t->e));
	for (i = 0; i < n; i++) {
		for (j = live[i].key % CALLS_SLOTS; t->e[j].key != 0;
		    j = (j + 1) % CALLS_SLOTS)
			continue;
		t->e[j] = live[i];
	}
	t->used = n;
}

/*
 * Walks key's run: its calls in flight, and the entry for (key, pid) or,
 * when there is none, one to take for it (-1: the table is full).
 */
static int
walk(struct calls_shared *t, uint64_t key, pid_t pid, long *slot)
{
	uint32_t i, j;
	long	 reuse = -1;
	int	 total = 0;

	*slot = -1;
	for (i = 0, j = key % CALLS_SLOTS; i < CALLS_SLOTS;
	    i++, j = (j + 1) % CALLS_SLOTS) {
		struct calls_entry *e = &t->e[j];

		if (e->key == 0) {
			if (reuse == -1)
				reuse = j;
			break;
		}
		if (e->key == key) {
			total += e->n;
			if (e->pid == pid && *slot == -1)
				*slot = j;
		} else if (e->n == 0 && reuse == -1)
			reuse = j;
	}
	if (*slot == -1)
		*slot = reuse;
	return total;
}

enum calls_result
calls_begin(struct calls_shared *t, const char *key, pid_t pid, int max)
{
	uint64_t h = hash(key);
	long	 slot;
	int	 total;

	if (t == NULL || !lock(t))
		return CALLS_UNCOUNTED;
	if (t->used >= CALLS_SLOTS / 4 * 3)
		pack(t);
	total = walk(t, h, pid, &slot);
	if (max > 0 && total >= max) {
		pthread_mutex_unlock(&t->lock);
		return CALLS_LIMIT;
	}
	if (slot == -1) {
		pthread_mutex_unlock(&t->lock);
		return CALLS_UNCOUNTED;
	}
	if (t->e[slot].key == 0)
		t->used++;
	if (t->e[slot].key != h || t->e[slot].pid != (int32_t)pid) {
		t->e[slot].key = h;
		t->e[slot].pid = (int32_t)pid;
		t->e[slot].n = 0;
	}
	t->e[slot].n++;
	pthread_mutex_unlock(&t->lock);
	return CALLS_OK;
}

void
calls_end(struct calls_shared *t, const char *key, pid_t pid)
{
	uint64_t h = hash(key);
	long	 slot;

	if (t == NULL || !lock(t))
		return;
	(void)walk(t, h, pid, &slot);
	if (slot != -1 && t->e[slot].key == h &&
	    t->e[slot].pid == (int32_t)pid && t->e[slot].n > 0)
		t->e[slot].n--;
	pthread_mutex_unlock(&t->lock);
}

int
calls_count(struct calls_shared *t, const char *key)
{
	long	 slot;
	int	 total;

	if (t == NULL || !lock(t))
		return 0;
	total = walk(t, hash(key), 0, &slot);
	pthread_mutex_unlock(&t->lock);
	return total;
}

void
calls_forget(struct calls_shared *t, pid_t pid)
{
	uint32_t i;

	if (t == NULL || !lock(t))
		return;
	for (i = 0; i < CALLS_SLOTS; i++)
		if (t->e[i].key != 0 && t->e[i].pid == (int32_t)pid)
			t->e[i].n = 0;
	pthread_mutex_unlock(&t->lock);
}
