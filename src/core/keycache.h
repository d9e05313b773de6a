#ifndef KEYGATE_CORE_KEYCACHE_H
#define KEYGATE_CORE_KEYCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/*
 * Keys a worker has looked up.  API keys by the prefix a client presented:
 * what the key may do and the HMAC its secret must match, never the
 * secret.  Tenants' provider keys by tenant and provider: the stored
 * ciphertext (or that there is none), never the plaintext, which is opened
 * per request and wiped.
 *
 * Also the prefixes PostgreSQL had no key for, so that made-up keys cost
 * no query after the first (sql/0006 announces "p:<prefix>" when a key
 * takes one).
 *
 * Every change that can alter either is announced by PostgreSQL (sql/0004)
 * with what it touched: "k:<key id>", "r:<role id>", "t:<tenant id>",
 * "v:<tenant id>" (its provider keys) or "*" (anything).  Each worker
 * drops the entries concerned (keycache_forget).  A change a worker made
 * itself also goes, before it is answered, to the other workers of this
 * keygated through shared memory.  An entry is dropped after KEYCACHE_TTL
 * seconds whatever happens, and an API key's expiry is kept with it, so a
 * cached key expires on time.
 */

#define KEYCACHE_TTL	60.0	/* s */

struct keycache_entry {
	char	 prefix[48];	/* as presented: current or previous */
	char	 hash[65];	/* hex HMAC the presented key must match */
	bool	 usable;	/* when it was read */
	time_t	 until;		/* usable until then (expiry, grace); 0 = on */
	char	 key_id[40];
	char	 tenant_id[40];
	char	 key_prefix[48];	/* the key's current prefix */
	char	 env[8];
	char	 role_id[40];
	char	 scopes[1024];	/* effective scopes, comma-separated */
	long	 rate_limit_max;
	int	 rate_limit_window;
	double	 next_touch;	/* monotonic s: when last_used_at is due */
	double	 read_at;	/* monotonic s */
	unsigned long generation;	/* 0 = empty */
};

/* A tenant's stored provider key, sealed as the vault keeps it. */
struct keycache_sealed {
	char	 tenant_id[40];
	int	 provider;	/* enum provider */
	bool	 found;		/* false: the tenant stores none */
	char	 key_id[32];	/* master key it is sealed under */
	char	*ciphertext;	/* owned; NULL when !found */
	double	 read_at;	/* monotonic s */
	unsigned long generation;
};

struct keycache;
/* The changes the workers of one keygated pass each other. */
struct keycache_shared;

size_t		 keycache_shared_size(void);
/* Prepares zeroed shared memory of keycache_shared_size() bytes.  0, -1. */
int		 keycache_shared_init(struct keycache_shared *)
		    __attribute__((warn_unused_result));

/* A cache for one worker; shared may be NULL (this worker alone). */
struct keycache	*keycache_new(struct keycache_shared *shared)
		    __attribute__((warn_unused_result));
void		 keycache_free(struct keycache *);
/*
 * Drops what a change touched ("k:<id>", "r:<id>", "t:<id>", "v:<id>",
 * "p:<prefix>"; anything else drops everything), and with everywhere set,
 * passes it on
 * to the other workers of this keygated.
 */
void		 keycache_forget(struct keycache *, const char *what,
		    bool everywhere);
/*
 * Taken before reading a key from PostgreSQL and given to keycache_put()
 * or keycache_sealed_put(): a change heard while the read was under way
 * makes them keep nothing.
 */
unsigned long	 keycache_token(struct keycache *);
/* How many keycache_get() calls found their key, and how many did not. */
void		 keycache_counts(const struct keycache *, unsigned long *hits,
		    unsigned long *misses);
/* The entry for prefix, or NULL; now is monotonic s. */
struct keycache_entry *keycache_get(struct keycache *, const char *prefix,
		    double now);
/*
 * A slot for prefix, read at now, to fill; it replaces what was there.
 * NULL when the prefix is too long to keep or a change came since token.
 */
struct keycache_entry *keycache_put(struct keycache *, const char *prefix,
		    double now, unsigned long token);
/* True when PostgreSQL had no key for prefix, at most KEYCACHE_TTL ago. */
bool		 keycache_miss_get(struct keycache *, const char *prefix,
		    double now);
/* Remembers that no key has prefix, unless a change came since token. */
void		 keycache_miss_put(struct keycache *, const char *prefix,
		    double now, unsigned long token);
/* The tenant's sealed key for provider, or NULL when not cached. */
const struct keycache_sealed *keycache_sealed_get(struct keycache *,
		    const char *tenant, int provider, double now);
/*
 * Keeps what was read (ciphertext NULL: none stored) at now, unless a
 * change came since token.  Failing to keep it is not an error.
 */
void		 keycache_sealed_put(struct keycache *, const char *tenant,
		    int provider, const char *key_id, const char *ciphertext,
		    double now, unsigned long token);

#endif
