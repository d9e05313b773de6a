#ifndef KEYGATE_SERVER_CONFIG_H
#define KEYGATE_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "core/upstreams.h"
#include "providers/provider.h"

#ifndef KEYGATE_SYSCONFDIR
#define KEYGATE_SYSCONFDIR "/etc/keygate"
#endif
#ifndef KEYGATE_SQL_DIR
#define KEYGATE_SQL_DIR "/usr/share/keygate/sql"
#endif
#define CONFIG_DEFAULT_PATH KEYGATE_SYSCONFDIR "/keygate.conf"

/*
 * One authorize rule: requests for paths under prefix (and, when method is
 * set, with that method) need scope.  Used by the FastCGI authorizer and
 * GET /v1/auth/check; the longest matching prefix wins.
 */
struct config_authz_rule {
	char		 method[8];	/* "GET", ...; "" = any method */
	char		*prefix;	/* starts with '/' */
	char		*scope;		/* a valid key scope */
};

/* The authorize settings, in the order written. */
struct config_authz {
	struct config_authz_rule *v;
	size_t		 n;
};

enum config_mode {
	MODE_DEVELOPMENT,
	MODE_PRODUCTION,
	MODE__MAX
};

/*
 * The whole configuration.  Every string is owned by the struct and freed by
 * config_free(); secrets are wiped there first.  A reload parses into a new
 * struct and swaps it in only when the whole parse succeeded.
 */
struct config {
	char		*path;			/* file it came from, NULL = none */
	time_t		 read_at;		/* when it was read, Unix s */
	char		*listen;		/* "unix:PATH" or "tcp:HOST:PORT" */
	int		 listen_backlog;
	int		 socket_mode;		/* permission bits of a unix socket */
	char		*user;			/* "" = stay as started */
	int		 workers;		/* 0 = 2 x CPUs */
	long		 max_requests;		/* per worker, 0 = unlimited */
	int		 shutdown_timeout;	/* s */
	int		 worker_calls;		/* requests in flight a worker takes */
	int		 max_concurrent_calls;	/* per key and host, 0 = unlimited */
	int		 body_timeout;		/* s to receive a request body */
	int		 client_timeout;	/* s a write to the client may wait */
	char		*database_url;		/* libpq conninfo or URI */
	int		 database_connect_timeout; /* s */
	int		 database_statement_timeout; /* s a statement may run */
	int		 database_lock_timeout;	/* s a statement waits for a lock */
	enum config_mode mode;
	char		*hmac_secret;		/* secret */
	char		*jwt_secret;		/* secret */
	int		 jwt_leeway;		/* s of clock skew for exp/nbf */
	char		*master_keys;		/* secret: "id:base64,..." */
	char		*key_brand;
	long		 max_body_bytes;
	bool		 rate_limiting;	/* count requests against limits */
	long		 rate_limit_max;
	int		 rate_limit_window;	/* s */
	long		 auth_failures_max;	/* per address or prefix, 0 = off */
	int		 auth_failures_window;	/* s */
	long		 max_active_keys_per_tenant; /* 0 = unlimited */
	int		 dormant_disable_days;	/* 0 = never */
	bool		 validate_llm_keys;
	/* Each built-in provider's base URL, by enum provider. */
	char		*base_url[PROVIDER__MAX];
	char		*pool_openrouter_key;	/* secret, "" = no pool */
	double		 pool_markup;		/* fraction, 0.25 = +25 % */
	struct config_upstreams upstreams;	/* operator-defined upstreams */
	char		*upstream_keys;		/* secret: "name:key,..." */
	bool		 credits_enforce;	/* charge gateway calls */
	bool		 credits_lease;		/* hold from a lease per host */
	char		*credits_journal;	/* "" = answers wait for the
						   commit; else a file */
	int		 default_max_tokens;	/* when a request sets none */
	int		 upstream_connect_timeout; /* s */
	int		 upstream_idle_timeout;	/* s */
	int		 upstream_total_timeout; /* s */
	struct config_authz authorize;		/* authorizer rules */
	bool		 metrics;		/* count requests for /metrics */
	char		*log_file;		/* "" = stderr */
	char		*sql_dir;
};

/*
 * Loads defaults, then the file at path (NULL = none; a missing file is an
 * error), then KEYGATE_<KEY> variables from the environment, then checks
 * the result as a whole.  Returns a new config, or NULL with a message of
 * the form "file:line: message" (or "KEYGATE_X: message") in err.
 */
struct config	*config_load(const char *path, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/*
 * Moves every KEYGATE_* variable out of the process environment into
 * memory of this module, wiping the original text (what /proc/PID/environ
 * shows), so that neither the process's readers nor its children see a
 * secret.  Later loads and config_getenv() read the moved copy.  Called
 * once, first thing in main(); a second call does nothing.
 */
void		 config_env_take(void);
/* getenv(), also for the variables config_env_take() moved. */
const char	*config_getenv(const char *name);
/*
 * Locks the pages of c's secrets (and of the moved environment) in
 * memory.  Each process holding them calls it: locks do not survive
 * fork().  0, or -1 when the system refused some of them.
 */
int		 config_lock_secrets(const struct config *c);
/* Frees a config and wipes its secrets; NULL is accepted. */
void		 config_free(struct config *);
/*
 * Names the first setting that cannot change without a restart and differs
 * between a and b, or NULL when there is none.
 */
const char	*config_restart_needed(const struct config *a,
		    const struct config *b);
/* The worker count after resolving 0 to 2 x CPUs. */
int		 config_workers(const struct config *);
/*
 * Parses "30 seconds", "1 minute", "2 hours", "1 day" (singular or plural,
 * also "s", "m", "h", "d" suffixes) into seconds; -1 when malformed.
 */
int		 config_parse_window(const char *);
/*
 * The rule that decides a request for path with method: the longest
 * prefix of path among the rules for that method or for any method (on a
 * tie, the one naming the method).  NULL when none covers it.
 */
const struct config_authz_rule *config_authz_find(const struct config *,
		    const char *method, const char *path);
/* The number of settings and their names, for the manual and the tests. */
size_t		 config_key_count(void);
const char	*config_key_name(size_t);

extern const char *const config_mode_names[MODE__MAX];

#endif
