#include "autoconfig.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/types.h>
#include <limits.h>
#include <time.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/credits.h"
#include "core/lease.h"
#include "lib/buf.h"
#include "lib/db.h"
#include "lib/json.h"

/*
 * Prices a worker looked up, kept until PostgreSQL announces a change of
 * them (keygate_cache "$", or "*" after a reconnect).  Only in processes
 * that hear those announcements: credits_prices_cache() turns it on.
 */
#define PRICE_CACHE	128
#define PRICE_MODEL_MAX	256

static struct {
	char		 model[PRICE_MODEL_MAX + 1];	/* "" = empty */
	struct credit_price p;
} price_cache[PRICE_CACHE];
static unsigned	 price_next;
static bool	 price_caching;

void
credits_prices_cache(void)
{
	price_caching = true;
}

void
credits_prices_forget(void)
{
	memset(price_cache, 0, sizeof(price_cache));
	price_next = 0;
}

int
credits_price(struct db *db, const char *model, struct credit_price *p)
{
	const char	*params[1] = { model };
	struct db_res	*res;
	size_t		 n = strlen(model);
	unsigned	 i;

	memset(p, 0, sizeof(*p));
	if (price_caching && n > 0 && n <= PRICE_MODEL_MAX)
		for (i = 0; i < PRICE_CACHE; i++)
			if (strcmp(price_cache[i].model, model) == 0) {
				*p = price_cache[i].p;
				return 0;
			}
	if ((res = db_query(db, STMT_PRICE_FOR, 1, params)) == NULL)
		return -1;
	if (db_rows(res) == 1) {
		p->in_per_mtok = atoll(db_value(res, 0, 0));
		p->out_per_mtok = atoll(db_value(res, 0, 1));
		p->specific = strcmp(db_value(res, 0, 2), "*") != 0;
	}
	db_res_free(res);
	if (price_caching && n > 0 && n <= PRICE_MODEL_MAX) {
		i = price_next++ % PRICE_CACHE;
		memcpy(price_cache[i].model, model, n + 1);
		price_cache[i].p = *p;
	}
	return 0;
}

int
credits_pool_price(struct db *db, const char *called, const char *asked,
    struct credit_price *p)
{
	if (credits_price(db, called, p) == -1)
		return -1;
	if (p->specific)
		return 1;
	if (credits_price(db, asked, p) == -1)
		return -1;
	return p->specific ? 1 : 0;
}

/* The markup in basis points: 0.25 -> 2500, exactly. */
static long long
basis_points(double markup)
{
	return llround(markup * 10000.0);
}

/* Sendings of one settlement while PostgreSQL is out of reach, 0.5 s apart. */
#define SETTLE_TRIES	20

/* n within [0, 10^15]. */
static long long
bounded(long long n)
{
	return n < 0 ? 0 : n > 1000000000000000LL ? 1000000000000000LL : n;
}

long long
credits_cost(const struct credit_price *p, long prompt, long completion,
    double markup)
{
	__int128	 base, num, den, cost;
	long long	 bp;

	/*
	 * Token counts come from clients and providers: a negative one
	 * counts as none, and a cost beyond a bigint is the largest there is,
	 * which no balance can hold (402), never a wrapped or negative one.
	 * With every factor bounded no product below overflows: at most
	 * 2 * 10^30 * 10^6, where an __int128 holds 1.7 * 10^38.
	 */
	base = (__int128)bounded(prompt) * bounded(p->in_per_mtok) +
	    (__int128)bounded(completion) * bounded(p->out_per_mtok);
	/* A markup beyond +10000 % counts as that. */
	bp = basis_points(markup);
	num = base * (10000 + (bp < 0 ? 0 : bp > 1000000 ? 1000000 : bp));
	den = (__int128)1000000 * 10000;
	cost = (num + den - 1) / den;
	return cost > LLONG_MAX ? LLONG_MAX : (long long)cost;
}

long
credits_tokens_of(size_t n)
{
	return n >= (size_t)LONG_MAX - 3 ? LONG_MAX / 4 : (long)((n + 3) / 4);
}

long long
credits_bill_open(struct credits_bill *b, const struct credit_price *price,
    double markup, size_t prompt_bytes, long max_out)
{
	memset(b, 0, sizeof(*b));
	b->price = *price;
	b->markup = markup;
	b->prompt_estimate = credits_tokens_of(prompt_bytes);
	b->max_out = max_out > 0 ? max_out : 0;
	return credits_cost(&b->price, b->prompt_estimate, b->max_out,
	    b->markup);
}

void
credits_bill_progress(struct credits_bill *b, size_t n)
{
	b->delivered = n > SIZE_MAX - b->delivered ? SIZE_MAX :
	    b->delivered + n;
}

void
credits_bill_tokens(const struct credits_bill *b,
    const struct credits_told *told, bool partial, long *prompt,
    long *completion)
{
	long	 produced = credits_tokens_of(b->delivered);

	*prompt = told->told ? told->prompt : b->prompt_estimate;
	*completion = told->told ? told->completion : produced;
	if (partial && *completion < produced)
		*completion = produced;
}

long long
credits_bill_cost(const struct credits_bill *b, long prompt, long completion)
{
	return credits_cost(&b->price, prompt, completion, b->markup);
}

long
credits_affordable_tokens(const struct credit_price *p, long prompt,
    double markup, long long available)
{
	__int128	 budget, left;

	if (p->out_per_mtok <= 0)
		return 0;
	/* available >= (prompt * in + n * out) * (1 + m) / 1e6 */
	budget = (__int128)available * 1000000 * 10000 /
	    (10000 + basis_points(markup));
	left = budget - (__int128)prompt * p->in_per_mtok;
	if (left <= 0)
		return 0;
	left /= p->out_per_mtok;
	return left > 1000000000 ? 1000000000 : (long)left;
}

void
credits_format(long long micro, char *out, size_t outsz)
{
	unsigned long long a = micro < 0 ? 0ULL - (unsigned long long)micro :
	    (unsigned long long)micro;
	size_t	 n;

	snprintf(out, outsz, "%s%llu.%06llu", micro < 0 ? "-" : "",
	    a / CREDITS_MICRO, a % CREDITS_MICRO);
	/* 0.050000 -> 0.05, 12.000000 -> 12 */
	n = strlen(out);
	while (n > 0 && out[n - 1] == '0')
		out[--n] = '\0';
	if (n > 0 && out[n - 1] == '.')
		out[--n] = '\0';
}

/* A token count as a usage row can hold it: 0 to INT_MAX. */
static long
token_count(long n)
{
	return n < 0 ? 0 : n > INT_MAX ? INT_MAX : n;
}

struct json_object *
credits_json(long long micro)
{
	char	 text[24];

	credits_format(micro, text, sizeof(text));
	return json_decimal((double)micro / CREDITS_MICRO, text);
}

/* Not enough was free: *available says what is.  CREDITS_SHORT, or DB. */
static enum credits_result
short_of(struct db *db, const char *tenant, long long *available)
{
	struct db_res	*res;
	const char	*p[1] = { tenant };

	if ((res = db_query(db, STMT_CREDITS_AVAILABLE, 1, p)) == NULL)
		return CREDITS_DB;
	if (db_rows(res) == 1)
		*available = atoll(db_value(res, 0, 0));
	db_res_free(res);
	return CREDITS_SHORT;
}

/* Who holds: this host, the process, and for how long (s). */
struct holder {
	char		 host[256];
	char		 pid[16];
	char		 secs[16];
};

static void
holder_of(struct holder *h, pid_t pid, int ttl)
{
	credits_host(h->host, sizeof(h->host));
	snprintf(h->pid, sizeof(h->pid), "%d", (int)pid);
	snprintf(h->secs, sizeof(h->secs), "%d", ttl > 0 ? ttl : 1);
}

/*
 * What a statement that takes a hold answered (res, freed): the hold's id
 * (and, when got is not NULL, what it got) from its row, or, when none
 * came, what the tenant has.
 */
static enum credits_result
took(struct db *db, struct db_res *res, const char *tenant, char id[40],
    long long *got, long long *available)
{
	bool		 held = db_rows(res) == 1;

	if (held) {
		snprintf(id, 40, "%s", db_value(res, 0, 0));
		if (got != NULL)
			*got = atoll(db_value(res, 0, 1));
	}
	db_res_free(res);
	return held ? CREDITS_OK : short_of(db, tenant, available);
}

enum credits_result
credits_reserve(struct db *db, const char *tenant, const char *key_id,
    const char *request_id, long long amount, int ttl, const char *id,
    long long *available)
{
	struct db_res	*res;
	struct holder	 h;
	char		 amt[24], got[40];
	const char	*p[8] = { tenant, key_id, request_id, amt, h.host, h.pid,
	    h.secs, id };

	*available = 0;
	snprintf(amt, sizeof(amt), "%lld", amount);
	holder_of(&h, getpid(), ttl);
	if ((res = db_query(db, STMT_CREDITS_RESERVE, 8, p)) == NULL)
		return CREDITS_DB;
	return took(db, res, tenant, got, NULL, available);
}

int
credits_release(struct db *db, const char *id)
{
	const char	*p[2] = { id, "release" };

	return db_exec(db, STMT_CREDITS_RELEASE, 2, p);
}

void
credits_host(char *out, size_t outsz)
{
	if (gethostname(out, outsz) == -1 || out[0] == '\0')
		snprintf(out, outsz, "localhost");
	out[outsz - 1] = '\0';
}

int
credits_release_stale(struct db *db)
{
	struct db_res	*res;
	const char	*p[1], *q[2] = { NULL, "expiry" };
	char		 host[256];
	pid_t		 pid;
	int		 i, n = 0;

	credits_host(host, sizeof(host));
	p[0] = host;
	if ((res = db_query(db, STMT_CREDITS_STALE, 1, p)) == NULL)
		return -1;
	for (i = 0; i < db_rows(res); i++) {
		pid = (pid_t)atoi(db_value(res, i, 1));
		/* Alive, or another user's: only a pid that is gone counts. */
		if (strcmp(db_value(res, i, 2), "t") != 0 &&
		    (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH))
			continue;
		q[0] = db_value(res, i, 0);
		if (db_exec(db, STMT_CREDITS_RELEASE, 2, q) == -1) {
			n = -1;
			break;
		}
		n++;
	}
	db_res_free(res);
	return n;
}

int
credits_settle(struct db *db, const char *id, long long cost,
    const struct credits_usage *u, long long *charged)
{
	struct db_res	*res;
	char		 c[24], pt[24], ct[24], mk[24];
	const char	*p[12];
	const struct timespec pause = { 0, 500 * 1000 * 1000 };
	int		 try;
	bool		 found;

	*charged = 0;
	snprintf(c, sizeof(c), "%lld", cost > 0 ? cost : 0);
	/* The usage row's columns are integers: a provider's absurd count is
	 * kept at their bounds rather than lose the row and the charge. */
	snprintf(pt, sizeof(pt), "%ld", token_count(u->prompt_tokens));
	snprintf(ct, sizeof(ct), "%ld", token_count(u->completion_tokens));
	snprintf(mk, sizeof(mk), "%.4f", u->markup);
	p[0] = id;
	p[1] = c;
	p[2] = u->tenant;
	p[3] = u->key_id;
	p[4] = u->request_id;
	p[5] = u->provider;
	p[6] = u->model;
	p[7] = u->pool ? "pool" : "user";
	p[8] = pt;
	p[9] = ct;
	p[10] = u->pool ? mk : NULL;
	p[11] = u->status;
	/*
	 * A settlement is sent once per connection; when the connection is
	 * lost (PostgreSQL restarting) it may or may not have committed, so
	 * after reconnecting the usage row it writes says which, and only a
	 * settlement that did not happen is sent again.  Up to about ten
	 * seconds: a hold still there then is left to the deadline sweep.
	 */
	for (try = 0; ; try++) {
		if (try > 0 && (res = db_query(db, STMT_CREDITS_SETTLED, 1,
		    p)) != NULL) {
			found = db_rows(res) == 1;
			if (found)
				*charged = atoll(db_value(res, 0, 0));
			db_res_free(res);
			if (found)
				return 0;
		} else if (try > 0)
			goto again;
		if ((res = db_query(db, STMT_CREDITS_SETTLE, 12, p)) != NULL)
			break;
again:
		if (db_status(db) != DB_UNAVAILABLE || try >= SETTLE_TRIES)
			return -1;
		nanosleep(&pause, NULL);
	}
	if (db_rows(res) == 1)
		*charged = atoll(db_value(res, 0, 0));
	db_res_free(res);
	return 0;
}

enum credits_result
credits_lease_new(struct db *db, const char *tenant, long long need,
    long long want, pid_t owner, int ttl, char id[40], long long *got,
    long long *available)
{
	struct db_res	*res;
	struct holder	 h;
	char		 n[24], w[24];
	const char	*p[6] = { tenant, n, w, h.host, h.pid, h.secs };

	id[0] = '\0';
	*got = 0;
	*available = 0;
	snprintf(n, sizeof(n), "%lld", need);
	snprintf(w, sizeof(w), "%lld", want > need ? want : need);
	holder_of(&h, owner, ttl);
	if ((res = db_query(db, STMT_LEASE_NEW, 6, p)) == NULL)
		return CREDITS_DB;
	return took(db, res, tenant, id, got, available);
}

enum credits_result
credits_lease_grow(struct db *db, const char *lease, const char *tenant,
    long long need, long long want, int ttl, long long *got, bool *gone,
    long long *available)
{
	struct db_res	*res;
	char		 n[24], w[24], secs[16];
	const char	*p[5];
	bool		 held = false;

	*got = 0;
	*gone = false;
	*available = 0;
	snprintf(n, sizeof(n), "%lld", need);
	snprintf(w, sizeof(w), "%lld", want > need ? want : need);
	snprintf(secs, sizeof(secs), "%d", ttl > 0 ? ttl : 1);
	p[0] = lease;
	p[1] = tenant;
	p[2] = n;
	p[3] = w;
	p[4] = secs;
	if ((res = db_query(db, STMT_LEASE_GROW, 5, p)) == NULL)
		return CREDITS_DB;
	if (db_rows(res) == 1) {
		*gone = strcmp(db_value(res, 0, 1), "t") != 0;
		held = !db_isnull(res, 0, 0);
		if (held)
			*got = atoll(db_value(res, 0, 0));
	}
	db_res_free(res);
	if (held)
		return CREDITS_OK;
	return short_of(db, tenant, available);
}

/*
 * Appends s to an array literal in b as one element: NULL for NULL,
 * else quoted, with '"' and '\' escaped.
 */
static int
element(struct buf *b, const char *s)
{
	size_t	 n;

	if (buf_puts(b, b->len == 0 ? "{" : ",") == -1)
		return -1;
	if (s == NULL)
		return buf_puts(b, "NULL");
	if (buf_puts(b, "\"") == -1)
		return -1;
	while (*s != '\0') {
		n = strcspn(s, "\"\\");
		if (buf_append(b, s, n) == -1)
			return -1;
		s += n;
		if (*s != '\0') {
			if (buf_append(b, "\\", 1) == -1 ||
			    buf_append(b, s, 1) == -1)
				return -1;
			s++;
		}
	}
	return buf_puts(b, "\"");
}

int
credits_lease_write(struct db *db, const struct lease_record *r, int n)
{
	struct buf	 col[14];
	const char	*p[14];
	char		 num[5][32];
	int		 i, j, rc = 0;

	memset(col, 0, sizeof(col));
	for (i = 0; i < n && rc == 0; i++) {
		snprintf(num[0], sizeof(num[0]), "%ld",
		    token_count(r[i].prompt_tokens));
		snprintf(num[1], sizeof(num[1]), "%ld",
		    token_count(r[i].completion_tokens));
		snprintf(num[2], sizeof(num[2]), "%lld", r[i].charged);
		snprintf(num[3], sizeof(num[3]), "%.4f", r[i].markup);
		snprintf(num[4], sizeof(num[4]), "%lld", r[i].cost);
		p[0] = r[i].tenant;
		p[1] = r[i].key_id[0] != '\0' ? r[i].key_id : NULL;
		p[2] = r[i].request_id;
		p[3] = r[i].provider;
		p[4] = r[i].model;
		p[5] = r[i].pool ? "pool" : "user";
		p[6] = num[0];
		p[7] = num[1];
		p[8] = num[2];
		p[9] = r[i].pool ? num[3] : NULL;
		p[10] = r[i].status;
		p[11] = r[i].lease[0] != '\0' ? r[i].lease : NULL;
		p[12] = r[i].call;
		p[13] = num[4];
		for (j = 0; j < 14 && rc == 0; j++)
			rc = element(&col[j], p[j]);
	}
	for (j = 0; j < 14 && rc == 0; j++) {
		rc = buf_printf(&col[j], "}");
		p[j] = col[j].data;
	}
	if (rc == 0)
		rc = db_exec(db, STMT_LEASE_WRITE, 14, p);
	for (j = 0; j < 14; j++)
		buf_free(&col[j]);
	return rc;
}

int
credits_lease_renew(struct db *db, char (*ids)[LEASE_ID_LEN + 1], int n,
    int ttl, void (*renewed)(void *, const char *), void *arg)
{
	struct db_res	*res;
	struct buf	 b = { 0 };
	const char	*p[2];
	char		 secs[16];
	int		 i, rc = 0;

	for (i = 0; i < n && rc == 0; i++)
		rc = element(&b, ids[i]);
	if (rc == 0)
		rc = buf_printf(&b, n == 0 ? "{}" : "}");
	snprintf(secs, sizeof(secs), "%d", ttl > 0 ? ttl : 1);
	p[0] = b.data;
	p[1] = secs;
	if (rc == 0 && (res = db_query(db, STMT_LEASE_RENEW, 2, p)) != NULL) {
		for (i = 0; i < db_rows(res); i++)
			renewed(arg, db_value(res, i, 0));
		db_res_free(res);
	} else
		rc = -1;
	buf_free(&b);
	return rc;
}

/*
 * Closes the n array literals in col (an empty one is "{}") and points
 * p[j] at each.  0, or -1.
 */
static int
literals(struct buf *col, const char **p, int n)
{
	int	 j;

	for (j = 0; j < n; j++) {
		if (buf_puts(&col[j], col[j].len == 0 ? "{}" : "}") == -1)
			return -1;
		p[j] = col[j].data;
	}
	return 0;
}

/* Sets held in each of r whose id is in the first column of res. */
static void
mark_held(const struct db_res *res, struct credits_hold_req *r, int n)
{
	int	 i, j;

	for (j = 0; j < db_rows(res); j++)
		for (i = 0; i < n; i++)
			if (strcmp(r[i].id, db_value(res, j, 0)) == 0)
				r[i].held = true;
}

/* The holds of r found in the database: sets held.  0, or -1. */
static int
held_of(struct db *db, struct credits_hold_req *r, int n)
{
	struct db_res	*res;
	struct buf	 ids = { 0 };
	const char	*p[1];
	int		 i, rc = 0;

	for (i = 0; i < n && rc == 0; i++)
		rc = element(&ids, r[i].id);
	if (rc == 0)
		rc = literals(&ids, p, 1);
	if (rc == 0 && (res = db_query(db, STMT_CREDITS_HELD, 1, p)) != NULL) {
		mark_held(res, r, n);
		db_res_free(res);
	} else
		rc = -1;
	buf_free(&ids);
	return rc;
}

int
credits_reserve_many(struct db *db, struct credits_hold_req *r, int n)
{
	struct db_res	*res = NULL;
	struct buf	 col[6];
	struct holder	 h;
	const char	*p[8], *v[6];
	char		 amt[24], secs[16];
	int		 i, j, rc = 0;

	memset(col, 0, sizeof(col));
	for (i = 0; i < n; i++)
		r[i].held = false;
	for (i = 0; i < n && rc == 0; i++) {
		snprintf(amt, sizeof(amt), "%lld", r[i].amount);
		snprintf(secs, sizeof(secs), "%d", r[i].ttl > 0 ? r[i].ttl : 1);
		v[0] = r[i].id;
		v[1] = r[i].tenant;
		v[2] = r[i].key_id;
		v[3] = r[i].request_id;
		v[4] = amt;
		v[5] = secs;
		for (j = 0; j < 6 && rc == 0; j++)
			rc = element(&col[j], v[j]);
	}
	holder_of(&h, getpid(), 1);
	p[6] = h.host;
	p[7] = h.pid;
	if (rc == 0 && literals(col, p, 6) == 0)
		res = db_query(db, STMT_CREDITS_RESERVE_MANY, 8, p);
	for (j = 0; j < 6; j++)
		buf_free(&col[j]);
	/* Failed: nothing was held, or all was and the answer was lost. */
	if (res == NULL)
		return rc == 0 ? held_of(db, r, n) : -1;
	mark_held(res, r, n);
	db_res_free(res);
	return 0;
}

/* Which of the pending settlements of r were made: sets them.  0, or -1. */
static int
settled_of(struct db *db, struct credits_settle_req *r, int n)
{
	struct db_res	*res;
	struct buf	 ids = { 0 };
	const char	*p[1];
	int		 i, j, rc = 0;

	for (i = 0; i < n && rc == 0; i++)
		if (!r[i].settled)
			rc = element(&ids, r[i].id);
	if (rc == 0)
		rc = literals(&ids, p, 1);
	if (rc == 0 && (res = db_query(db, STMT_CREDITS_SETTLED_MANY, 1,
	    p)) != NULL) {
		for (j = 0; j < db_rows(res); j++)
			for (i = 0; i < n; i++)
				if (!r[i].settled &&
				    strcmp(r[i].id, db_value(res, j, 0)) == 0) {
					r[i].settled = true;
					r[i].charged = atoll(db_value(res, j,
					    1));
				}
		db_res_free(res);
	} else
		rc = -1;
	buf_free(&ids);
	return rc;
}

/* Sends the settlements of r not made yet, once.  0, or -1. */
static int
settle_pending(struct db *db, struct credits_settle_req *r, int n)
{
	struct db_res	*res = NULL;
	struct buf	 col[12];
	const char	*p[12], *v[12];
	char		 num[4][24];
	int		 i, j, rc = 0;

	memset(col, 0, sizeof(col));
	for (i = 0; i < n && rc == 0; i++) {
		if (r[i].settled)
			continue;
		snprintf(num[0], sizeof(num[0]), "%lld",
		    r[i].cost > 0 ? r[i].cost : 0);
		snprintf(num[1], sizeof(num[1]), "%ld",
		    token_count(r[i].u->prompt_tokens));
		snprintf(num[2], sizeof(num[2]), "%ld",
		    token_count(r[i].u->completion_tokens));
		snprintf(num[3], sizeof(num[3]), "%.4f", r[i].u->markup);
		v[0] = r[i].id;
		v[1] = num[0];
		v[2] = r[i].u->tenant;
		v[3] = r[i].u->key_id;
		v[4] = r[i].u->request_id;
		v[5] = r[i].u->provider;
		v[6] = r[i].u->model;
		v[7] = r[i].u->pool ? "pool" : "user";
		v[8] = num[1];
		v[9] = num[2];
		v[10] = r[i].u->pool ? num[3] : NULL;
		v[11] = r[i].u->status;
		for (j = 0; j < 12 && rc == 0; j++)
			rc = element(&col[j], v[j]);
	}
	if (rc == 0 && literals(col, p, 12) == 0)
		res = db_query(db, STMT_CREDITS_SETTLE_MANY, 12, p);
	for (j = 0; j < 12; j++)
		buf_free(&col[j]);
	if (res == NULL)
		return -1;
	for (j = 0; j < db_rows(res); j++)
		for (i = 0; i < n; i++)
			if (!r[i].settled &&
			    strcmp(r[i].id, db_value(res, j, 0)) == 0) {
				r[i].settled = true;
				r[i].charged = r[i].cost > 0 ? r[i].cost : 0;
			}
	db_res_free(res);
	return 0;
}

int
credits_settle_many(struct db *db, struct credits_settle_req *r, int n)
{
	const struct timespec pause = { 0, 500 * 1000 * 1000 };
	int		 i, try;

	for (i = 0; i < n; i++) {
		r[i].settled = false;
		r[i].charged = 0;
	}
	/* As credits_settle(): what a lost connection took is asked after. */
	for (try = 0; ; try++) {
		if (try == 0 || settled_of(db, r, n) == 0) {
			for (i = 0; i < n && r[i].settled; i++)
				continue;
			if (i == n || settle_pending(db, r, n) == 0)
				return 0;
		}
		if (db_status(db) != DB_UNAVAILABLE || try >= SETTLE_TRIES)
			return -1;
		nanosleep(&pause, NULL);
	}
}
