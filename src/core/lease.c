#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "core/credits.h"
#include "core/lease.h"
#include "lib/hash.h"
#include "lib/shmlock.h"

/*
 * The tables, all under one lock:
 *   - tenants: open addressing on the tenant id's hash, probed linearly;
 *     an entry once used keeps its tenant (only its lease comes and
 *     goes), so probes never stop short.  For each lease, always
 *         held = avail + pending + the amounts of its calls' holds,
 *     which is also how the entry is mended when the lock's holder died.
 *   - holds: one per call holding credits, taken from a free scan.
 *   - ring: records seq in [done, head) wait for the writer; a record is
 *     written whole under the lock before head moves past it.
 * done and queued are futex words: callers wait on done, the writer on
 * queued.
 *
 * The ring and its words are a struct lease_journal of their own: in the
 * shared memory, or (credits_journal) a file mapped shared, so that what
 * a host answered but had not written yet outlives every one of its
 * processes: the next keygated to start writes it first.
 */
#define LOCK_WAIT_MS	50

/* done, queued and wanted are read and written outside the lock too. */
#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)
#define ADD(x, v)	__atomic_fetch_add(&(x), (v), __ATOMIC_SEQ_CST)

struct lease_tenant {
	char		 tenant[LEASE_ID_LEN + 1];	/* "" = never used */
	char		 lease[LEASE_ID_LEN + 1];	/* "" = none */
	bool		 lost;		/* the database lost the lease while
					   calls held from it */
	int32_t		 calls;
	int64_t		 held;		/* what the lease row holds */
	int64_t		 avail;		/* not promised to a call */
	int64_t		 pending;	/* charged, not yet written */
	double		 last_used;	/* monotonic s */
	double		 valid;		/* usable for calls ending before */
};

struct lease_hold {
	int32_t		 pid;		/* 0 = free */
	int32_t		 t;		/* index in tenants */
	int64_t		 amount;
};

/*
 * Its first 32 bytes mean the same in every version of keygate: a later
 * one reads them before it trusts the rest of a file.
 */
#define JOURNAL_MAGIC	"keygate-credits\n"	/* 16 bytes, no NUL */

struct lease_journal {
	char		 magic[16];
	uint32_t	 record_size;	/* sizeof(struct lease_record) */
	uint32_t	 ring_size;	/* LEASE_RING */
	uint32_t	 done;		/* records before it are written */
	uint32_t	 head;		/* the next record's number */
	uint32_t	 queued;	/* bumped when one is queued */
	uint32_t	 spare;
	struct lease_record ring[LEASE_RING];
};

struct lease_shared {
	pthread_mutex_t	 lock;
	pthread_mutex_t	 writer;
	int32_t		 wanted;	/* writers waiting for the role */
	uint32_t	 used;		/* tenant entries used */
	uint32_t	 hint;		/* where to look for a free hold */
	int32_t		 holds;		/* holds taken, read outside the lock */
	struct lease_journal *j;	/* &mem, or a file's */
	bool		 journaled;	/* j is a file's */
	uint32_t	 replay;	/* head when the file was opened */
	struct lease_tenant t[LEASE_TENANTS];
	struct lease_hold h[LEASE_HOLDS];
	struct lease_journal mem;
};

size_t
lease_shared_size(void)
{
	return sizeof(struct lease_shared);
}

int
lease_shared_init(struct lease_shared *s)
{
	s->j = &s->mem;
	return shmlock_init(&s->lock, 2, sizeof(pthread_mutex_t));
}

static void
futex_wake(uint32_t *w)
{
	(void)syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL,
	    NULL, 0);
}

static void
futex_wait(uint32_t *w, uint32_t seen, long ms)
{
	struct timespec	 ts = { ms / 1000, (ms % 1000) * 1000000L };

	(void)syscall(SYS_futex, w, FUTEX_WAIT, seen, &ts, NULL,
	    0);
}

/* The entry of tenant, added when add; NULL when absent or no room. */
static struct lease_tenant *
find(struct lease_shared *s, const char *tenant, bool add)
{
	uint32_t	 i, n;
	struct lease_tenant *e;

	if (strlen(tenant) != LEASE_ID_LEN)
		return NULL;
	i = hash_fnv32(tenant) % LEASE_TENANTS;
	for (n = 0; n < LEASE_TENANTS; n++, i = (i + 1) % LEASE_TENANTS) {
		e = &s->t[i];
		if (e->tenant[0] == '\0')
			break;
		if (strcmp(e->tenant, tenant) == 0)
			return e;
	}
	/* Three quarters full: probes would grow long. */
	if (!add || n == LEASE_TENANTS || s->used >= LEASE_TENANTS / 4 * 3)
		return NULL;
	memcpy(e->tenant, tenant, LEASE_ID_LEN + 1);
	s->used++;
	return e;
}

/* Mends the tables after a process died holding the lock. */
static void
mend(struct lease_shared *s)
{
	static int64_t	 holds[LEASE_TENANTS];
	struct lease_tenant *e;
	uint32_t	 i, seq;

	memset(holds, 0, sizeof(holds));
	for (i = 0; i < LEASE_TENANTS; i++) {
		s->t[i].calls = 0;
		s->t[i].pending = 0;
	}
	STORE(s->holds, 0);
	for (i = 0; i < LEASE_HOLDS; i++)
		if (s->h[i].pid != 0) {
			s->t[s->h[i].t].calls++;
			holds[s->h[i].t] += s->h[i].amount;
			ADD(s->holds, 1);
		}
	for (seq = LOAD(s->j->done); seq != s->j->head; seq++) {
		const struct lease_record *r = &s->j->ring[seq % LEASE_RING];

		if ((e = find(s, r->tenant, false)) != NULL &&
		    e->lease[0] != '\0' && strcmp(e->lease, r->lease) == 0)
			e->pending += r->charged;
	}
	/* held = avail + pending + holds, always. */
	for (i = 0; i < LEASE_TENANTS; i++) {
		e = &s->t[i];
		e->avail = e->held - e->pending - holds[i];
		if (e->avail < 0)
			e->avail = 0;
	}
}

static bool
lock_wait(struct lease_shared *s, long ms)
{
	bool	 abandoned = false;

	if (shmlock_take(&s->lock, ms, &abandoned) == -1)
		return false;
	if (abandoned)
		mend(s);
	return true;
}

static bool
lock(struct lease_shared *s)
{
	return lock_wait(s, LOCK_WAIT_MS);
}

/* For what must not be lost: waits as long as it takes. */
static void
lock_hard(struct lease_shared *s)
{
	while (!lock_wait(s, 1000))
		continue;
}

static void
unlock(struct lease_shared *s)
{
	pthread_mutex_unlock(&s->lock);
}

static int
hold_alloc(struct lease_shared *s)
{
	uint32_t	 i, n;

	for (n = 0, i = s->hint; n < LEASE_HOLDS; n++,
	    i = (i + 1) % LEASE_HOLDS)
		if (s->h[i].pid == 0) {
			s->hint = (i + 1) % LEASE_HOLDS;
			return (int)i;
		}
	return -1;
}

enum lease_result
lease_hold(struct lease_shared *s, const char *tenant, long long amount,
    pid_t pid, double now, double ends, int *hold, long long *need,
    char lease[LEASE_ID_LEN + 1])
{
	struct lease_tenant *e;
	int		 i;

	*hold = -1;
	*need = 0;
	lease[0] = '\0';
	if (amount < 0 || !lock(s))
		return LEASE_NONE;
	if ((e = find(s, tenant, true)) == NULL || (e->lost && e->calls > 0)) {
		unlock(s);
		return LEASE_NONE;
	}
	/*
	 * Every call held here must find room in the ring when it ends, or
	 * it could not be charged: beyond that, calls hold in the database.
	 */
	if (s->j->head - LOAD(s->j->done) + (uint32_t)LOAD(s->holds) >=
	    LEASE_RING) {
		unlock(s);
		return LEASE_NONE;
	}
	e->lost = false;
	if (e->lease[0] == '\0' || e->valid < ends || e->avail < amount) {
		memcpy(lease, e->lease, LEASE_ID_LEN + 1);
		*need = e->lease[0] != '\0' && e->avail < amount ?
		    amount - e->avail : e->lease[0] == '\0' ? amount : 0;
		unlock(s);
		return LEASE_NEED;
	}
	if ((i = hold_alloc(s)) == -1) {
		unlock(s);
		return LEASE_NONE;
	}
	e->avail -= amount;
	e->calls++;
	ADD(s->holds, 1);
	e->last_used = now;
	s->h[i].t = (int32_t)(e - s->t);
	s->h[i].amount = amount;
	s->h[i].pid = pid;
	unlock(s);
	*hold = i;
	return LEASE_HELD;
}

int
lease_grown(struct lease_shared *s, const char *tenant, const char *lease,
    bool fresh, long long amount, double valid, double now)
{
	struct lease_tenant *e;
	int		 rc = 0;

	lock_hard(s);
	if ((e = find(s, tenant, true)) == NULL)
		rc = 1;
	else if (fresh && e->lease[0] == '\0' &&
	    !(e->lost && e->calls > 0)) {
		memcpy(e->lease, lease, LEASE_ID_LEN + 1);
		e->lost = false;
		e->held = amount;
		e->avail = amount;
		e->pending = 0;
		e->valid = valid;
		e->last_used = now;
	} else if (strcmp(e->lease, lease) == 0) {
		e->held += amount;
		e->avail += amount;
		e->valid = valid;
		e->last_used = now;
	} else
		rc = 1;
	unlock(s);
	return rc;
}

/* Ends hold i, its amount less charged back to the lease. */
static void
end_hold(struct lease_shared *s, int i, long long charged)
{
	struct lease_hold *h = &s->h[i];
	struct lease_tenant *e = &s->t[h->t];

	if (!e->lost && e->lease[0] != '\0') {
		e->avail += h->amount - charged;
		e->pending += charged;
	}
	if (e->calls > 0)
		e->calls--;
	ADD(s->holds, -1);
	h->pid = 0;
	h->amount = 0;
}

void
lease_drop(struct lease_shared *s, int hold)
{
	if (hold < 0 || hold >= LEASE_HOLDS)
		return;
	lock_hard(s);
	if (s->h[hold].pid != 0)
		end_hold(s, hold, 0);
	unlock(s);
}

static void
copy(char *dst, size_t sz, const char *src)
{
	size_t	 n = src != NULL ? strlen(src) : 0;

	if (n >= sz)
		n = sz - 1;
	memcpy(dst, src != NULL ? src : "", n);
	dst[n] = '\0';
}

int
lease_spend(struct lease_shared *s, int hold, long long cost,
    const struct credits_usage *u, const char *call, pid_t pid,
    long long *charged, uint32_t *seq)
{
	struct lease_hold *h;
	struct lease_tenant *e;
	struct lease_record *r;
	long long	 cap;

	*charged = 0;
	if (hold < 0 || hold >= LEASE_HOLDS)
		return -1;
	lock_hard(s);
	h = &s->h[hold];
	if (h->pid == 0 || s->j->head - LOAD(s->j->done) >= LEASE_RING) {
		unlock(s);
		return -1;
	}
	e = &s->t[h->t];
	if (!e->lost && e->lease[0] != '\0') {
		/* Never beyond the lease: what is left over is forgiven. */
		cap = h->amount + e->avail;
		*charged = cost < 0 ? 0 : cost < cap ? cost : cap;
	}
	r = &s->j->ring[s->j->head % LEASE_RING];
	memset(r, 0, sizeof(*r));
	r->seq = s->j->head;
	r->pid = pid;
	memcpy(r->tenant, e->tenant, sizeof(r->tenant));
	memcpy(r->lease, e->lease, sizeof(r->lease));
	copy(r->call, sizeof(r->call), call);
	copy(r->key_id, sizeof(r->key_id), u->key_id);
	copy(r->request_id, sizeof(r->request_id), u->request_id);
	copy(r->provider, sizeof(r->provider), u->provider);
	copy(r->model, sizeof(r->model), u->model);
	copy(r->status, sizeof(r->status), u->status);
	r->pool = u->pool;
	r->markup = u->markup;
	r->prompt_tokens = u->prompt_tokens;
	r->completion_tokens = u->completion_tokens;
	r->charged = *charged;
	r->cost = cost < *charged ? *charged : cost;
	end_hold(s, hold, *charged);
	/* Whole before it counts: a journal's reader may be the next run. */
	*seq = r->seq;
	STORE(s->j->head, r->seq + 1);
	ADD(s->j->queued, 1);
	unlock(s);
	futex_wake(&s->j->queued);
	return 0;
}

bool
lease_written(struct lease_shared *s, uint32_t seq, long wait_ms)
{
	struct timespec	 t0, t;
	uint32_t	 done;
	long		 left;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		done = LOAD(s->j->done);
		/* Written once done has moved past seq (modulo 2^32). */
		if ((int32_t)(done - seq) > 0)
			return true;
		clock_gettime(CLOCK_MONOTONIC, &t);
		left = wait_ms - ((t.tv_sec - t0.tv_sec) * 1000 +
		    (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			return false;
		futex_wait(&s->j->done, done, left < 100 ? left : 100);
	}
}

void
lease_forget(struct lease_shared *s, pid_t pid)
{
	int	 i;

	lock_hard(s);
	for (i = 0; i < LEASE_HOLDS; i++)
		if (s->h[i].pid == pid)
			end_hold(s, i, 0);
	unlock(s);
}

int
lease_pending(struct lease_shared *s, struct lease_record *out, int max,
    long wait_ms)
{
	uint32_t	 q, seq;
	int		 n = 0;

	q = LOAD(s->j->queued);
	if (!lock(s))
		return 0;
	if (s->j->head == LOAD(s->j->done)) {
		unlock(s);
		futex_wait(&s->j->queued, q, wait_ms);
		if (!lock(s))
			return 0;
	}
	for (seq = LOAD(s->j->done); seq != s->j->head && n < max; seq++)
		out[n++] = s->j->ring[seq % LEASE_RING];
	unlock(s);
	return n;
}

void
lease_committed(struct lease_shared *s, const struct lease_record *r,
    int n)
{
	struct lease_tenant *e;
	int		 i;

	lock_hard(s);
	for (i = 0; i < n; i++) {
		if ((e = find(s, r[i].tenant, false)) == NULL ||
		    e->lease[0] == '\0' || strcmp(e->lease, r[i].lease) != 0)
			continue;
		e->held -= r[i].charged;
		e->pending -= r[i].charged;
	}
	if (n > 0)
		STORE(s->j->done, r[n - 1].seq + 1);
	unlock(s);
	futex_wake(&s->j->done);
}

void
lease_lost(struct lease_shared *s, const char *lease)
{
	int	 i;

	lock_hard(s);
	for (i = 0; i < LEASE_TENANTS; i++) {
		struct lease_tenant *e = &s->t[i];

		if (e->lease[0] == '\0' || strcmp(e->lease, lease) != 0)
			continue;
		e->lease[0] = '\0';
		e->lost = e->calls > 0;
		e->held = e->avail = e->pending = 0;
	}
	unlock(s);
}

int
lease_idle(struct lease_shared *s, double now, double idle,
    char (*out)[2][LEASE_ID_LEN + 1], int max)
{
	int	 i, n = 0;
	bool	 empty;

	if (!lock(s))
		return 0;
	empty = s->j->head == LOAD(s->j->done);
	for (i = 0; i < LEASE_TENANTS && n < max; i++) {
		struct lease_tenant *e = &s->t[i];

		if (e->lease[0] == '\0' || e->calls > 0 ||
		    (e->pending != 0 && !empty) || now - e->last_used < idle)
			continue;
		memcpy(out[n][0], e->tenant, LEASE_ID_LEN + 1);
		memcpy(out[n][1], e->lease, LEASE_ID_LEN + 1);
		n++;
		e->lease[0] = '\0';
		e->held = e->avail = e->pending = 0;
	}
	unlock(s);
	return n;
}

int
lease_all(struct lease_shared *s, char (*out)[LEASE_ID_LEN + 1], int max)
{
	int	 i, n = 0;

	if (!lock(s))
		return 0;
	for (i = 0; i < LEASE_TENANTS && n < max; i++)
		if (s->t[i].lease[0] != '\0')
			memcpy(out[n++], s->t[i].lease, LEASE_ID_LEN + 1);
	unlock(s);
	return n;
}

void
lease_renewed(struct lease_shared *s, const char *lease, double valid)
{
	int	 i;

	lock_hard(s);
	for (i = 0; i < LEASE_TENANTS; i++)
		if (s->t[i].lease[0] != '\0' &&
		    strcmp(s->t[i].lease, lease) == 0)
			s->t[i].valid = valid;
	unlock(s);
}

int
lease_writer_take(struct lease_shared *s, long wait_ms)
{
	bool	 abandoned;
	int	 rc;

	ADD(s->wanted, 1);
	rc = shmlock_take(&s->writer, wait_ms, &abandoned);
	ADD(s->wanted, -1);
	return rc;
}

bool
lease_writer_wanted(struct lease_shared *s)
{
	return LOAD(s->wanted) > 0;
}

void
lease_writer_give(struct lease_shared *s)
{
	pthread_mutex_unlock(&s->writer);
}

void
lease_wake_writer(struct lease_shared *s)
{
	ADD(s->j->queued, 1);
	futex_wake(&s->j->queued);
}

int
lease_calls(struct lease_shared *s)
{
	return LOAD(s->holds);
}

int
lease_busy(struct lease_shared *s)
{
	int	 i, n;

	lock_hard(s);
	n = (int)(s->j->head - LOAD(s->j->done));
	for (i = 0; i < LEASE_TENANTS; i++)
		n += s->t[i].calls;
	unlock(s);
	return n;
}

/* The journal a file at fd holds, checked; NULL with why in err. */
static struct lease_journal *
journal_map(int fd, const char *path, char *err, size_t errsz)
{
	struct lease_journal head, *j;
	struct stat	 st;
	ssize_t		 n;
	uint32_t	 seq, waiting;
	bool		 fresh;

	memset(&head, 0, sizeof(head));
	if (fstat(fd, &st) == -1 || (n = pread(fd, &head,
	    offsetof(struct lease_journal, ring), 0)) == -1) {
		snprintf(err, errsz, "reading %s: %s", path, strerror(errno));
		return NULL;
	}
	if (st.st_size > 0 && (n != (ssize_t)offsetof(struct lease_journal,
	    ring) || memcmp(head.magic, JOURNAL_MAGIC, 16) != 0)) {
		snprintf(err, errsz, "%s is not a keygate credits journal",
		    path);
		return NULL;
	}
	waiting = head.head - head.done;
	fresh = st.st_size == 0 || head.record_size !=
	    sizeof(struct lease_record) || head.ring_size != LEASE_RING;
	if (fresh && waiting != 0) {
		snprintf(err, errsz, "%s holds %u calls not yet written, in "
		    "the format of another version of keygated: start that "
		    "version once to write them", path, waiting);
		return NULL;
	}
	if (!fresh && st.st_size != (off_t)sizeof(*j)) {
		snprintf(err, errsz, "%s is cut short", path);
		return NULL;
	}
	/* Blocks of its own: a full disk is an error now, not a SIGBUS. */
	if (fresh && (ftruncate(fd, sizeof(*j)) == -1 ||
	    (errno = posix_fallocate(fd, 0, sizeof(*j))) != 0)) {
		snprintf(err, errsz, "making room in %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	j = mmap(NULL, sizeof(*j), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (j == MAP_FAILED) {
		snprintf(err, errsz, "mmap: %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fresh) {
		memset(j, 0, sizeof(*j));
		j->record_size = sizeof(struct lease_record);
		j->ring_size = LEASE_RING;
		memcpy(j->magic, JOURNAL_MAGIC, 16);
		return j;
	}
	/* Every record waiting must be whole and where its number says. */
	for (seq = j->done; waiting <= LEASE_RING && seq != j->head; seq++)
		if (j->ring[seq % LEASE_RING].seq != seq)
			break;
	if (waiting > LEASE_RING || seq != j->head) {
		snprintf(err, errsz, "%s is damaged (records %u to %u)", path,
		    j->done, j->head);
		munmap(j, sizeof(*j));
		return NULL;
	}
	return j;
}

int
lease_journal_open(struct lease_shared *s, const char *path, uid_t uid,
    gid_t gid, int *waiting, char *err, size_t errsz)
{
	struct lease_journal *j;
	int		 fd;

	*waiting = 0;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		snprintf(err, errsz, "opening %s: %s", path, strerror(errno));
		return -1;
	}
	/* One keygated per journal: held until this one's last process. */
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			snprintf(err, errsz, "%s is in use by another "
			    "keygated", path);
		else
			snprintf(err, errsz, "locking %s: %s", path,
			    strerror(errno));
		close(fd);
		return -1;
	}
	if (uid != (uid_t)-1 && fchown(fd, uid, gid) == -1) {
		snprintf(err, errsz, "chown: %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if ((j = journal_map(fd, path, err, errsz)) == NULL) {
		close(fd);
		return -1;
	}
	/* The descriptor stays open: it holds the lock. */
	s->j = j;
	s->journaled = true;
	s->replay = j->head;
	*waiting = (int)(j->head - j->done);
	return 0;
}

bool
lease_journaled(struct lease_shared *s)
{
	return s->journaled;
}

bool
lease_replayed(struct lease_shared *s)
{
	return !s->journaled || (int32_t)(LOAD(s->j->done) - s->replay) >= 0;
}
