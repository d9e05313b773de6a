#include "autoconfig.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "core/authfail.h"
#include "lib/hash.h"
#include "lib/shmlock.h"

#define AF_SETS		512	/* sets of counters, each with its lock */
#define AF_WAYS		4	/* counters per set */
#define AF_LOCK_WAIT_MS	100	/* ms to wait for a set's lock */

struct af_slot {
	char	 subject[64];	/* "" = free */
	long	 window_start;	/* s since the epoch */
	long	 count;		/* failures in that window */
};

struct af_set {
	pthread_mutex_t	 mu;	/* process-shared, robust */
	struct af_slot	 slot[AF_WAYS];
};

struct af_shared {
	struct af_set	 set[AF_SETS];
};

size_t
af_shared_size(void)
{
	return sizeof(struct af_shared);
}

int
af_shared_init(struct af_shared *sh)
{
	return shmlock_init(&sh->set[0].mu, AF_SETS, sizeof(sh->set[0]));
}

/*
 * The set of subject, locked; NULL when its lock could not be had in
 * time.  A worker that died holding it may have left it half written: it
 * is forgotten.
 */
static struct af_set *
set_of(struct af_shared *sh, const char *subject)
{
	struct af_set	*set;
	bool		 abandoned;

	set = &sh->set[hash_fnv32(subject) % AF_SETS];
	if (shmlock_take(&set->mu, AF_LOCK_WAIT_MS, &abandoned) == -1)
		return NULL;
	if (abandoned)
		memset(set->slot, 0, sizeof(set->slot));
	return set;
}

/* The subject's counter for window ws, or NULL when it has none. */
static struct af_slot *
find(struct af_set *set, const char *subject, long ws)
{
	int	 i;

	for (i = 0; i < AF_WAYS; i++)
		if (set->slot[i].window_start == ws &&
		    strcmp(set->slot[i].subject, subject) == 0)
			return &set->slot[i];
	return NULL;
}

int
af_refused(struct af_shared *sh, const char *subject, long max, int window,
    time_t now)
{
	struct af_set	*set;
	struct af_slot	*s;
	long		 ws = window > 0 ? (long)now / window * window : 0;
	int		 wait = 0;

	if (sh == NULL || max <= 0 || window <= 0 ||
	    (set = set_of(sh, subject)) == NULL)
		return 0;
	if ((s = find(set, subject, ws)) != NULL && s->count >= max)
		wait = (int)(ws + window - (long)now);
	pthread_mutex_unlock(&set->mu);
	return wait > 0 ? wait : 0;
}

/* Which counter gives way first: a free one, then an ended window's. */
static int
rank(const struct af_slot *s, long ws)
{
	if (s->subject[0] == '\0')
		return 0;
	return s->window_start < ws ? 1 : 2;
}

void
af_count(struct af_shared *sh, const char *subject, int window, time_t now)
{
	struct af_set	*set;
	struct af_slot	*s;
	long		 ws = window > 0 ? (long)now / window * window : 0;
	int		 i;

	if (sh == NULL || window <= 0 || strlen(subject) >= sizeof(s->subject) ||
	    (set = set_of(sh, subject)) == NULL)
		return;
	if ((s = find(set, subject, ws)) == NULL) {
		/* A free counter, else an ended window's, else the smallest. */
		s = &set->slot[0];
		for (i = 1; i < AF_WAYS; i++)
			if (rank(&set->slot[i], ws) < rank(s, ws) ||
			    (rank(&set->slot[i], ws) == rank(s, ws) &&
			    set->slot[i].count < s->count))
				s = &set->slot[i];
		memcpy(s->subject, subject, strlen(subject) + 1);
		s->window_start = ws;
		s->count = 0;
	}
	s->count++;
	pthread_mutex_unlock(&set->mu);
}
