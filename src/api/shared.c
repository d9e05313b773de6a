#include "autoconfig.h"

#include <pwd.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

#include "api/api.h"
#include "api/app.h"
#include "api/metrics.h"
#include "core/authfail.h"
#include "core/calls.h"
#include "core/hold.h"
#include "core/keycache.h"
#include "core/lease.h"
#include "core/ratelimit.h"
#include "lib/db.h"
#include "server/config.h"
#include "server/log.h"
#include "server/worker.h"

/*
 * What the workers of one keygated share: the changes to keys they made
 * themselves (so that the others drop what they cached before the change
 * is answered), then the rate-limit counters, then the metrics.
 */
static size_t
aligned(size_t n)
{
	size_t	 a = alignof(max_align_t);

	return (n + a - 1) / a * a;
}

static size_t
limits_offset(void)
{
	return aligned(keycache_shared_size());
}

static size_t
metrics_offset(void)
{
	return limits_offset() + aligned(rl_shared_size());
}

/* Then the failed authentications. */
static size_t
failures_offset(void)
{
	return metrics_offset() + aligned(metrics_shared_size());
}

/* Then the calls in flight per key. */
static size_t
calls_offset(void)
{
	return failures_offset() + aligned(af_shared_size());
}

/* Then the credits leased to this host. */
static size_t
leases_offset(void)
{
	return calls_offset() + aligned(calls_shared_size());
}

/* Last, what the workers tell each other of the database. */
struct db_news {
	atomic_uint	 back;		/* bumped by a worker that reconnected */
	/* Who sends holds and settlements for a tenant (core/hold.h). */
	pthread_mutex_t	 sending[HOLD_SENDING];
};

static size_t
news_offset(void)
{
	return leases_offset() + aligned(lease_shared_size());
}

size_t
api_shared_size(void)
{
	return news_offset() + sizeof(struct db_news);
}

static struct db_news *
db_news(void *shared)
{
	return shared != NULL ?
	    (struct db_news *)((char *)shared + news_offset()) : NULL;
}

/*
 * A worker that finds the database back tells the others, who try again
 * at once instead of when their own wait between attempts ends: once
 * one worker answers again, they all do.
 */
void
api_db_news(struct worker *w)
{
	struct api_state *st = w->app_data;
	struct db_news	*news = db_news(w->shared);
	unsigned long	 n;
	unsigned	 back;

	if (news == NULL || app(w)->db == NULL)
		return;
	if ((n = db_connects(app(w)->db)) != st->connects) {
		st->connects = n;
		st->db_back = atomic_fetch_add(&news->back, 1) + 1;
		return;
	}
	if ((back = atomic_load(&news->back)) != st->db_back) {
		st->db_back = back;
		db_retry_now(app(w)->db);
	}
}

pthread_mutex_t *
api_sending(struct worker *w)
{
	struct db_news	*news = db_news(w->shared);

	return news != NULL ? news->sending : NULL;
}

struct calls_shared *
api_shared_calls(void *shared)
{
	return shared != NULL ?
	    (struct calls_shared *)((char *)shared + calls_offset()) : NULL;
}

static struct lease_shared *
lease_table(void *shared)
{
	return shared != NULL ?
	    (struct lease_shared *)((char *)shared + leases_offset()) : NULL;
}

struct rl_shared *
api_shared_limits(void *shared)
{
	return shared != NULL ?
	    (struct rl_shared *)((char *)shared + limits_offset()) : NULL;
}

struct metrics *
api_shared_metrics(void *shared)
{
	return shared != NULL ?
	    (struct metrics *)((char *)shared + metrics_offset()) : NULL;
}

struct af_shared *
api_shared_failures(void *shared)
{
	return shared != NULL ?
	    (struct af_shared *)((char *)shared + failures_offset()) : NULL;
}

struct lease_shared *
api_leases(struct worker *w)
{
	return lease_table(w->shared);
}

/*
 * The ring of ended leased calls in the file credits_journal names, made
 * as the user the workers run as: what a killed host answered but had
 * not written waits there for the next keygated.
 */
static int
journal_open(struct lease_shared *s, const struct config *cfg)
{
	struct passwd	*pw = NULL;
	char		 err[512];
	int		 waiting;

	if (cfg->credits_journal[0] == '\0')
		return 0;
	if (cfg->user[0] != '\0' && geteuid() == 0 &&
	    (pw = getpwnam(cfg->user)) == NULL) {
		log_error("credits_journal: no user \"%s\"", cfg->user);
		return -1;
	}
	if (lease_journal_open(s, cfg->credits_journal, pw != NULL ?
	    pw->pw_uid : (uid_t)-1, pw != NULL ? pw->pw_gid : (gid_t)-1,
	    &waiting, err, sizeof(err)) == -1) {
		log_error("credits_journal: %s", err);
		return -1;
	}
	if (waiting > 0)
		log_info("credits_journal: %d leased calls a previous run "
		    "answered are not written yet: written first", waiting);
	return 0;
}

int
api_shared_init(void *p, const struct config *cfg)
{
	if (keycache_shared_init(p) == -1 ||
	    rl_shared_init(api_shared_limits(p)) == -1 ||
	    af_shared_init(api_shared_failures(p)) == -1 ||
	    calls_shared_init(api_shared_calls(p)) == -1 ||
	    lease_shared_init(lease_table(p)) == -1 ||
	    hold_sending_init(db_news(p)->sending) == -1 ||
	    journal_open(lease_table(p), cfg) == -1)
		return -1;
	return metrics_shared_init(api_shared_metrics(p));
}

void
api_worker_exited(void *p, pid_t pid, bool crashed)
{
	calls_forget(api_shared_calls(p), pid);
	lease_forget(lease_table(p), pid);
	metrics_worker_exit(api_shared_metrics(p), crashed);
}
