#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/scope.h"
#include "lib/harden.h"
#include "server/config.h"

extern char **environ;

const char *const config_mode_names[MODE__MAX] = {
	"development",	/* MODE_DEVELOPMENT */
	"production",	/* MODE_PRODUCTION */
};

/*
 * The secret a development setup signs keys with when none is configured.
 * There is no such value for tokens: without jwt_secret JWT
 * authentication is off.  The old development value is still refused.
 */
#define DEV_HMAC_SECRET	"keygate-development-hmac-secret-not-for-production"
#define DEV_JWT_SECRET	"keygate-development-jwt-secret-not-for-production"
#define SECRET_MIN_LEN	32

enum cf_type {
	CF_STR,		/* any text */
	CF_SECRET,	/* text never logged, wiped on free */
	CF_INT,		/* int within [min, max] */
	CF_LONG,	/* long within [min, max] */
	CF_BOOL,	/* true/false/yes/no/on/off/1/0 */
	CF_DOUBLE,	/* decimal within [min, max] */
	CF_OCTAL,	/* octal permission bits */
	CF_MODE,	/* enum config_mode */
	CF_WINDOW,	/* "1 minute" -> seconds, within [min, max] */
	CF_UPSTREAMS,	/* struct config_upstreams */
	CF_UPSTREAM_KEYS, /* "name:key,...": a secret, checked for form */
	CF_AUTHORIZE,	/* "[METHOD] /prefix scope", one rule a line, repeatable */
};

struct cf_key {
	const char	*name;
	enum cf_type	 type;
	size_t		 offset;
	bool		 reloadable;	/* false: a change needs a restart */
	const char	*def;
	double		 min, max;	/* numeric range */
};

#define F(field) offsetof(struct config, field)

/*
 * Every setting, its type, where it lives and its default.  The manual
 * keygate.conf(5) and etc/keygate.conf follow this table.
 */
static const struct cf_key keys[] = {
	{ "listen", CF_STR, F(listen), false, "unix:/run/keygate/keygate.sock", 0, 0 },
	{ "listen_backlog", CF_INT, F(listen_backlog), false, "4096", 1, 65535 },
	{ "socket_mode", CF_OCTAL, F(socket_mode), false, "0660", 0, 0777 },
	{ "user", CF_STR, F(user), false, "", 0, 0 },
	{ "workers", CF_INT, F(workers), true, "0", 0, 1024 },
	{ "max_requests", CF_LONG, F(max_requests), true, "0", 0, 1e12 },
	{ "shutdown_timeout", CF_INT, F(shutdown_timeout), true, "30", 1, 3600 },
	{ "worker_calls", CF_INT, F(worker_calls), true, "1024", 1, 65536 },
	{ "max_concurrent_calls", CF_INT, F(max_concurrent_calls), true, "256", 0, 1000000 },
	{ "body_timeout", CF_INT, F(body_timeout), true, "30", 1, 3600 },
	{ "client_timeout", CF_INT, F(client_timeout), true, "60", 1, 3600 },
	{ "database_url", CF_SECRET, F(database_url), true, "dbname=keygate", 0, 0 },
	{ "database_connect_timeout", CF_INT, F(database_connect_timeout), true, "5", 1, 300 },
	{ "database_statement_timeout", CF_WINDOW, F(database_statement_timeout), true, "30 seconds", 1, 86400 },
	{ "database_lock_timeout", CF_WINDOW, F(database_lock_timeout), true, "5 seconds", 1, 86400 },
	{ "mode", CF_MODE, F(mode), true, "development", 0, 0 },
	{ "hmac_secret", CF_SECRET, F(hmac_secret), true, "", 0, 0 },
	{ "jwt_secret", CF_SECRET, F(jwt_secret), true, "", 0, 0 },
	{ "jwt_leeway", CF_INT, F(jwt_leeway), true, "30", 0, 300 },
	{ "master_keys", CF_SECRET, F(master_keys), true, "", 0, 0 },
	{ "key_brand", CF_STR, F(key_brand), true, "kg", 0, 0 },
	{ "max_body_bytes", CF_LONG, F(max_body_bytes), true, "1048576", 1024, 67108864 },
	{ "rate_limiting", CF_BOOL, F(rate_limiting), true, "true", 0, 0 },
	{ "rate_limit_max", CF_LONG, F(rate_limit_max), true, "100", 1, 100000 },
	{ "rate_limit_window", CF_WINDOW, F(rate_limit_window), true, "1 minute", 1, 86400 * 31 },
	{ "auth_failures_max", CF_LONG, F(auth_failures_max), true, "30", 0, 1000000 },
	{ "auth_failures_window", CF_WINDOW, F(auth_failures_window), true, "1 minute", 1, 86400 },
	{ "max_active_keys_per_tenant", CF_LONG, F(max_active_keys_per_tenant), true, "0", 0, 1e9 },
	{ "dormant_disable_days", CF_INT, F(dormant_disable_days), true, "0", 0, 36500 },
	{ "validate_llm_keys", CF_BOOL, F(validate_llm_keys), true, "true", 0, 0 },
	{ "openai_base_url", CF_STR, F(base_url[PROVIDER_OPENAI]), true, "https://api.openai.com/v1", 0, 0 },
	{ "anthropic_base_url", CF_STR, F(base_url[PROVIDER_ANTHROPIC]), true, "https://api.anthropic.com", 0, 0 },
	{ "google_base_url", CF_STR, F(base_url[PROVIDER_GOOGLE]), true, "https://generativelanguage.googleapis.com", 0, 0 },
	{ "openrouter_base_url", CF_STR, F(base_url[PROVIDER_OPENROUTER]), true, "https://openrouter.ai/api/v1", 0, 0 },
	{ "pool_openrouter_key", CF_SECRET, F(pool_openrouter_key), true, "", 0, 0 },
	{ "pool_markup", CF_DOUBLE, F(pool_markup), true, "0.25", 0, 10 },
	{ "upstreams", CF_UPSTREAMS, F(upstreams), true, "", 0, 0 },
	{ "upstream_keys", CF_UPSTREAM_KEYS, F(upstream_keys), true, "", 0, 0 },
	{ "credits_enforce", CF_BOOL, F(credits_enforce), true, "true", 0, 0 },
	{ "credits_lease", CF_BOOL, F(credits_lease), false, "false", 0, 0 },
	{ "credits_journal", CF_STR, F(credits_journal), false, "", 0, 0 },
	{ "default_max_tokens", CF_INT, F(default_max_tokens), true, "4096", 1, 1000000 },
	{ "upstream_connect_timeout", CF_INT, F(upstream_connect_timeout), true, "10", 1, 600 },
	{ "upstream_idle_timeout", CF_INT, F(upstream_idle_timeout), true, "60", 1, 3600 },
	{ "upstream_total_timeout", CF_INT, F(upstream_total_timeout), true, "600", 1, 86400 },
	{ "authorize", CF_AUTHORIZE, F(authorize), true, "", 0, 0 },
	{ "metrics", CF_BOOL, F(metrics), true, "true", 0, 0 },
	{ "log_file", CF_STR, F(log_file), true, "", 0, 0 },
	{ "sql_dir", CF_STR, F(sql_dir), true, KEYGATE_SQL_DIR, 0, 0 },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))
/* In the lines config_load() keeps per key: set from the environment. */
#define FROM_ENV UINT_MAX

size_t
config_key_count(void)
{
	return NKEYS;
}

const char *
config_key_name(size_t i)
{
	return i < NKEYS ? keys[i].name : NULL;
}

static const struct cf_key *
key_find(const char *name)
{
	size_t	 i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static bool
is_secret_key(const struct cf_key *k)
{
	return k->type == CF_SECRET || k->type == CF_UPSTREAM_KEYS;
}

static char **
str_field(struct config *c, const struct cf_key *k)
{
	return (char **)(void *)((char *)c + k->offset);
}

static void
secret_free(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

int
config_parse_window(const char *s)
{
	static const struct {
		const char	*unit;
		long		 secs;
	} units[] = {
		{ "s", 1 }, { "sec", 1 }, { "second", 1 }, { "seconds", 1 },
		{ "m", 60 }, { "min", 60 }, { "minute", 60 }, { "minutes", 60 },
		{ "h", 3600 }, { "hour", 3600 }, { "hours", 3600 },
		{ "d", 86400 }, { "day", 86400 }, { "days", 86400 },
	};
	char	*end;
	long	 n;
	size_t	 i;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno != 0 || n <= 0 || n > 86400L * 366)
		return -1;
	while (isspace((unsigned char)*end))
		end++;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		size_t ul = strlen(units[i].unit);
		const char *rest;

		if (strncasecmp(end, units[i].unit, ul) != 0)
			continue;
		rest = end + ul;
		while (isspace((unsigned char)*rest))
			rest++;
		if (*rest != '\0')
			continue;
		if (n > INT_MAX / units[i].secs)
			return -1;
		return (int)(n * units[i].secs);
	}
	return -1;
}

static char *
trim(char *s)
{
	char	*e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* true/false/yes/no/on/off/1/0 into *out: 0, or -1 when it is none. */
static int
parse_bool(const char *v, bool *out)
{
	if (strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
	    strcasecmp(v, "on") == 0 || strcmp(v, "1") == 0)
		*out = true;
	else if (strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 ||
	    strcasecmp(v, "off") == 0 || strcmp(v, "0") == 0)
		*out = false;
	else
		return -1;
	return 0;
}

static bool
upstream_name_ok(const char *s, size_t n)
{
	size_t	 i;

	if (n == 0 || n > 32)
		return false;
	for (i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) &&
		    !isdigit((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

/*
 * A base URL an upstream may have: http or https, a host, no user info
 * (a key belongs in upstream_keys, never in a URL, which may be logged),
 * no query or fragment (the chat path is appended), printable ASCII.
 */
static bool
upstream_url_ok(const char *u)
{
	const char	*host, *p;
	size_t		 hl;

	if (strncmp(u, "http://", 7) == 0)
		host = u + 7;
	else if (strncmp(u, "https://", 8) == 0)
		host = u + 8;
	else
		return false;
	hl = strcspn(host, "/");
	if (hl == 0 || memchr(host, '@', hl) != NULL)
		return false;
	for (p = u; *p != '\0'; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127 ||
		    *p == '?' || *p == '#')
			return false;
	return true;
}

/* An exact model name, or a prefix followed by one final '*'. */
static bool
model_pattern_ok(const char *m)
{
	size_t	 n = strlen(m), i;

	if (n == 0 || n > 255)
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char)m[i] <= ' ' || (unsigned char)m[i] >= 127 ||
		    m[i] == '"' || (m[i] == '*' && i != n - 1))
			return false;
	return true;
}

static void
upstreams_free(struct config_upstream *v, size_t n)
{
	size_t	 i, j;

	for (i = 0; i < n; i++) {
		free(v[i].url);
		for (j = 0; j < v[i].nmodels; j++)
			free(v[i].models[j]);
		free(v[i].models);
		secret_free(v[i].key);
	}
	free(v);
}

/* The upstream in v[0..n) that claims pattern, or NULL. */
static const struct config_upstream *
pattern_owner(const struct config_upstream *v, size_t n, const char *pattern)
{
	size_t	 i, j;

	for (i = 0; i < n; i++)
		for (j = 0; j < v[i].nmodels; j++)
			if (strcmp(v[i].models[j], pattern) == 0)
				return &v[i];
	return NULL;
}

/* Adds the comma-separated patterns of list to u: 0, or -1 with err. */
static int
upstream_models(struct config_upstream *all, size_t n,
    struct config_upstream *u, char *list, char *err, size_t errsz)
{
	const struct config_upstream *owner;
	char	*p, *save = NULL, **grown;

	if (u->nmodels > 0) {
		snprintf(err, errsz, "upstreams: %s: models= given twice",
		    u->name);
		return -1;
	}
	for (p = strtok_r(list, ",", &save); p != NULL;
	    p = strtok_r(NULL, ",", &save)) {
		if (!model_pattern_ok(p)) {
			snprintf(err, errsz, "upstreams: %s: \"%.64s\" is not a "
			    "model name, nor a prefix ending in one '*'",
			    u->name, p);
			return -1;
		}
		if ((owner = pattern_owner(all, n, p)) != NULL) {
			snprintf(err, errsz, "upstreams: %s: the model pattern "
			    "\"%.64s\" is already %s's", u->name, p,
			    owner == u ? u->name : owner->name);
			return -1;
		}
		if ((grown = realloc(u->models, (u->nmodels + 1) *
		    sizeof(*grown))) == NULL) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		u->models = grown;
		if ((u->models[u->nmodels] = strdup(p)) == NULL) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		u->nmodels++;
	}
	if (u->nmodels == 0) {
		snprintf(err, errsz, "upstreams: %s: models= names no model",
		    u->name);
		return -1;
	}
	return 0;
}

/* One "NAME attr=value ..." entry into u, the n-th of all. */
static int
upstream_entry(struct config_upstream *all, size_t n,
    struct config_upstream *u, char *entry, char *err, size_t errsz)
{
	char	*tok, *save = NULL, *val;
	size_t	 i, len;

	tok = strtok_r(entry, " \t", &save);
	if (!upstream_name_ok(tok, strlen(tok))) {
		snprintf(err, errsz, "upstreams: \"%.40s\" is not a name: 1 to "
		    "32 of a-z, 0-9, '_' and '-'", tok);
		return -1;
	}
	/* The gateway reports it as "provider" and writes it in usage rows. */
	if (provider_parse(tok) != PROVIDER__MAX) {
		snprintf(err, errsz, "upstreams: %s: the name of a built-in "
		    "provider", tok);
		return -1;
	}
	for (i = 0; i < n; i++)
		if (strcmp(all[i].name, tok) == 0) {
			snprintf(err, errsz, "upstreams: %s: named twice", tok);
			return -1;
		}
	snprintf(u->name, sizeof(u->name), "%s", tok);
	while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
		if ((val = strchr(tok, '=')) == NULL) {
			snprintf(err, errsz, "upstreams: %s: expected "
			    "attribute=value, got \"%.40s\"", u->name, tok);
			return -1;
		}
		*val++ = '\0';
		if (strcmp(tok, "url") == 0) {
			if (u->url != NULL) {
				snprintf(err, errsz, "upstreams: %s: url= given "
				    "twice", u->name);
				return -1;
			}
			if (!upstream_url_ok(val)) {
				/* Not quoted: it may hold a password. */
				snprintf(err, errsz, "upstreams: %s: url: "
				    "expected http://HOST[:PORT][/PATH] or "
				    "https://..., without user, query or "
				    "fragment", u->name);
				return -1;
			}
			len = strlen(val);
			while (len > 0 && val[len - 1] == '/')
				val[--len] = '\0';
			if ((u->url = strdup(val)) == NULL) {
				snprintf(err, errsz, "out of memory");
				return -1;
			}
		} else if (strcmp(tok, "models") == 0) {
			if (upstream_models(all, n, u, val, err, errsz) == -1)
				return -1;
		} else if (strcmp(tok, "strip") == 0) {
			if (parse_bool(val, &u->strip) == -1) {
				snprintf(err, errsz, "upstreams: %s: strip: "
				    "expected true or false, got \"%.20s\"",
				    u->name, val);
				return -1;
			}
		} else {
			snprintf(err, errsz, "upstreams: %s: unknown attribute "
			    "\"%.20s\" (url, models, strip)", u->name, tok);
			return -1;
		}
	}
	if (u->url == NULL || u->nmodels == 0) {
		snprintf(err, errsz, "upstreams: %s: url= and models= are "
		    "required", u->name);
		return -1;
	}
	return 0;
}

/*
 * Parses "NAME url=URL models=PATTERN[,PATTERN...] [strip=BOOL]; ..." into
 * out (replacing what it held).  0, or -1 with the reason in err and out
 * unchanged.
 */
static int
upstreams_parse(const char *text, struct config_upstreams *out, char *err,
    size_t errsz)
{
	struct config_upstream *v = NULL, *grown;
	char	*copy, *entry, *save = NULL, *t;
	size_t	 n = 0;
	int	 rc = -1;

	if ((copy = strdup(text)) == NULL) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	for (entry = strtok_r(copy, ";", &save); entry != NULL;
	    entry = strtok_r(NULL, ";", &save)) {
		t = trim(entry);
		if (*t == '\0')
			continue;	/* a trailing ';' */
		if ((grown = realloc(v, (n + 1) * sizeof(*v))) == NULL) {
			snprintf(err, errsz, "out of memory");
			goto out;
		}
		v = grown;
		memset(&v[n], 0, sizeof(v[n]));
		n++;
		if (upstream_entry(v, n - 1, &v[n - 1], t, err, errsz) == -1)
			goto out;
	}
	if ((t = strdup(text)) == NULL) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	free(out->text);
	upstreams_free(out->v, out->n);
	out->text = t;
	out->v = v;
	out->n = n;
	v = NULL;
	n = 0;
	rc = 0;
out:
	upstreams_free(v, n);
	free(copy);
	return rc;
}

/*
 * Reads upstream_keys, "NAME:KEY[,NAME:KEY...]".  With ups NULL only the
 * form is checked; otherwise each key is given to the upstream it names,
 * which must exist.  No message ever quotes a key.  0, or -1 with err.
 */
static int
upstream_keys_apply(const char *text, struct config_upstreams *ups,
    char *err, size_t errsz)
{
	const char	*p = text, *end, *colon, *key;
	size_t		 len, nl, kl, i, entry = 0;
	struct config_upstream *u;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		end = p + strcspn(p, ",");
		len = (size_t)(end - p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		colon = memchr(p, ':', len);
		entry++;
		if (colon == NULL || !upstream_name_ok(p, (size_t)(colon - p))) {
			snprintf(err, errsz, "upstream_keys: entry %zu: expected "
			    "NAME:KEY, NAME being one of upstreams", entry);
			return -1;
		}
		nl = (size_t)(colon - p);
		key = colon + 1;
		kl = len - nl - 1;
		if (kl == 0 || kl > 512) {
			snprintf(err, errsz, "upstream_keys: %.*s: the key must "
			    "be 1 to 512 characters", (int)nl, p);
			return -1;
		}
		for (i = 0; i < kl; i++)
			if ((unsigned char)key[i] <= ' ' ||
			    (unsigned char)key[i] >= 127) {
				snprintf(err, errsz, "upstream_keys: %.*s: the "
				    "key must be printable, without blanks",
				    (int)nl, p);
				return -1;
			}
		if (ups != NULL) {
			for (u = NULL, i = 0; i < ups->n; i++)
				if (strlen(ups->v[i].name) == nl &&
				    memcmp(ups->v[i].name, p, nl) == 0)
					u = &ups->v[i];
			if (u == NULL) {
				snprintf(err, errsz, "upstream_keys: no upstream "
				    "named \"%.*s\" in upstreams", (int)nl, p);
				return -1;
			}
			if (u->key != NULL) {
				snprintf(err, errsz, "upstream_keys: %s: a "
				    "second key", u->name);
				return -1;
			}
			if ((u->key = strndup(key, kl)) == NULL) {
				snprintf(err, errsz, "out of memory");
				return -1;
			}
		}
		p = end;
	}
	return 0;
}

static void
authz_free(struct config_authz *a)
{
	size_t	 i;

	for (i = 0; i < a->n; i++) {
		free(a->v[i].prefix);
		free(a->v[i].scope);
	}
	free(a->v);
	a->v = NULL;
	a->n = 0;
}

/*
 * One rule's words, [METHOD] /PREFIX SCOPE (nt of them), checked into r:
 * its method; tok[0] and tok[1] are left naming the prefix and the scope.
 * 0, or -1 with err set.
 */
static int
rule_of(char *tok[4], size_t nt, struct config_authz_rule *r, char *err,
    size_t errsz)
{
	size_t	 i;

	memset(r, 0, sizeof(*r));
	if (nt == 3) {
		for (i = 0; tok[0][i] != '\0'; i++)
			if (!isupper((unsigned char)tok[0][i]))
				break;
		if (tok[0][i] != '\0' || i == 0 || i >= sizeof(r->method)) {
			snprintf(err, errsz, "authorize: \"%.20s\" is not a "
			    "method such as GET", tok[0]);
			return -1;
		}
		memcpy(r->method, tok[0], i + 1);
		tok[0] = tok[1];
		tok[1] = tok[2];
	} else if (nt != 2) {
		snprintf(err, errsz, "authorize: expected \"[METHOD] /PREFIX "
		    "SCOPE\"");
		return -1;
	}
	if (tok[0][0] != '/') {
		snprintf(err, errsz, "authorize: the prefix \"%.64s\" does not "
		    "start with '/'", tok[0]);
		return -1;
	}
	if (!scope_valid(tok[1])) {
		snprintf(err, errsz, "authorize: %s: \"%.64s\" is not a scope "
		    "(resource:action)", tok[0], tok[1]);
		return -1;
	}
	return 0;
}

/*
 * Adds the rules of text ("[METHOD] /prefix scope", several separated by
 * ';') to a.  0, or -1 with the reason in err and a unchanged.
 */
static int
authz_add(struct config_authz *a, const char *text, char *err, size_t errsz)
{
	struct config_authz_rule r, *grown;
	char	*copy, *entry, *save = NULL, *tok[4], *tsave;
	size_t	 n0 = a->n, i, nt;

	if ((copy = strdup(text)) == NULL) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	for (entry = strtok_r(copy, ";", &save); entry != NULL;
	    entry = strtok_r(NULL, ";", &save)) {
		tsave = NULL;
		for (nt = 0; nt < 4; nt++)
			if ((tok[nt] = strtok_r(nt == 0 ? entry : NULL, " \t",
			    &tsave)) == NULL)
				break;
		if (nt == 0)
			continue;	/* an empty entry */
		if (rule_of(tok, nt, &r, err, errsz) == -1)
			goto fail;
		for (i = 0; i < a->n; i++)
			if (strcmp(a->v[i].prefix, tok[0]) == 0 &&
			    strcmp(a->v[i].method, r.method) == 0) {
				snprintf(err, errsz, "authorize: %s%s%s: a "
				    "second rule for the same prefix", r.method,
				    r.method[0] ? " " : "", tok[0]);
				goto fail;
			}
		if ((grown = realloc(a->v, (a->n + 1) * sizeof(*grown))) ==
		    NULL) {
			snprintf(err, errsz, "out of memory");
			goto fail;
		}
		a->v = grown;
		r.prefix = strdup(tok[0]);
		r.scope = strdup(tok[1]);
		a->v[a->n++] = r;
		if (r.prefix == NULL || r.scope == NULL) {
			snprintf(err, errsz, "out of memory");
			goto fail;
		}
	}
	free(copy);
	return 0;
fail:
	while (a->n > n0) {
		a->n--;
		free(a->v[a->n].prefix);
		free(a->v[a->n].scope);
	}
	free(copy);
	return -1;
}

const struct config_authz_rule *
config_authz_find(const struct config *c, const char *method,
    const char *path)
{
	const struct config_authz_rule *best = NULL, *r;
	size_t	 i, len, bestlen = 0;

	for (i = 0; i < c->authorize.n; i++) {
		r = &c->authorize.v[i];
		if (r->method[0] != '\0' && strcmp(r->method, method) != 0)
			continue;
		len = strlen(r->prefix);
		if (strncmp(path, r->prefix, len) != 0)
			continue;
		if (best == NULL || len > bestlen ||
		    (len == bestlen && r->method[0] != '\0'))
			best = r, bestlen = len;
	}
	return best;
}

/* A whole, octal or real number within the key's range, into field. */
static int
set_number(const struct cf_key *k, void *field, const char *v, char *err,
    size_t errsz)
{
	char	*end;
	long	 l;
	double	 d;

	errno = 0;
	if (k->type == CF_DOUBLE) {
		d = strtod(v, &end);
		if (*v == '\0' || *end != '\0' || errno != 0 || d != d) {
			snprintf(err, errsz, "%s: expected a number, got \"%s\"",
			    k->name, v);
			return -1;
		}
		if (d < k->min || d > k->max) {
			snprintf(err, errsz, "%s: %g is out of range (%g to %g)",
			    k->name, d, k->min, k->max);
			return -1;
		}
		*(double *)field = d;
		return 0;
	}
	l = strtol(v, &end, k->type == CF_OCTAL ? 8 : 10);
	if (*v == '\0' || *end != '\0' || errno != 0) {
		snprintf(err, errsz, "%s: expected %s, got \"%s\"", k->name,
		    k->type == CF_OCTAL ? "an octal number" : "a whole number",
		    v);
		return -1;
	}
	if (l < (long)k->min || l > (long)k->max) {
		snprintf(err, errsz, "%s: %ld is out of range (%.0f to %.0f)",
		    k->name, l, k->min, k->max);
		return -1;
	}
	if (k->type == CF_LONG)
		*(long *)field = l;
	else
		*(int *)field = (int)l;
	return 0;
}

/*
 * Stores one value.  Returns 0, or -1 with the reason (no location) in err.
 */
static int
key_set(struct config *c, const struct cf_key *k, const char *v,
    char *err, size_t errsz)
{
	char	*dup;
	int	 w;
	void	*field = (char *)c + k->offset;

	switch (k->type) {
	case CF_STR:
	case CF_SECRET:
		if ((dup = strdup(v)) == NULL) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		if (k->type == CF_SECRET)
			secret_free(*str_field(c, k));
		else
			free(*str_field(c, k));
		*str_field(c, k) = dup;
		return 0;
	case CF_INT:
	case CF_LONG:
	case CF_OCTAL:
	case CF_DOUBLE:
		return set_number(k, field, v, err, errsz);
	case CF_BOOL:
		if (parse_bool(v, (bool *)field) == -1) {
			snprintf(err, errsz, "%s: expected true or false, "
			    "got \"%s\"", k->name, v);
			return -1;
		}
		return 0;
	case CF_UPSTREAMS:
		return upstreams_parse(v, field, err, errsz);
	case CF_UPSTREAM_KEYS:
		if (upstream_keys_apply(v, NULL, err, errsz) == -1)
			return -1;
		if ((dup = strdup(v)) == NULL) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		secret_free(*str_field(c, k));
		*str_field(c, k) = dup;
		return 0;
	case CF_AUTHORIZE:
		return authz_add(field, v, err, errsz);
	case CF_MODE:
		for (w = 0; w < MODE__MAX; w++)
			if (strcmp(v, config_mode_names[w]) == 0) {
				*(enum config_mode *)field = (enum config_mode)w;
				return 0;
			}
		snprintf(err, errsz, "%s: expected development or production, "
		    "got \"%s\"", k->name, v);
		return -1;
	case CF_WINDOW:
		w = config_parse_window(v);
		if (w < (int)k->min || w > (int)k->max) {
			snprintf(err, errsz, "%s: expected a window such as "
			    "\"30 seconds\", \"1 minute\", \"1 hour\" or "
			    "\"1 day\", got \"%s\"", k->name, v);
			return -1;
		}
		*(int *)field = w;
		return 0;
	}
	snprintf(err, errsz, "%s: unknown type", k->name);
	return -1;
}

/*
 * Reads "key = value" lines.  A value may be wrapped in double quotes to
 * keep leading or trailing blanks or a '#'; outside quotes a '#' starts a
 * comment.
 */
static int
parse_file(struct config *c, const char *path, unsigned *lines, char *err,
    size_t errsz)
{
	FILE	*f;
	char	*line = NULL, *p, *eq, *name, *val, *q;
	size_t	 cap = 0;
	ssize_t	 n;
	unsigned lineno = 0;
	char	 why[256];
	int	 rc = -1;
	const struct cf_key *k;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errsz, "%s: cannot open: %s", path,
		    strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		lineno++;
		p = trim(line);
		if (*p == '\0' || *p == '#')
			continue;
		if ((eq = strchr(p, '=')) == NULL) {
			snprintf(err, errsz, "%s:%u: expected \"key = value\"",
			    path, lineno);
			goto out;
		}
		*eq = '\0';
		name = trim(p);
		val = trim(eq + 1);
		if (*val == '"') {
			if ((q = strrchr(val + 1, '"')) == NULL) {
				snprintf(err, errsz, "%s:%u: unterminated quote",
				    path, lineno);
				goto out;
			}
			*q = '\0';
			p = trim(q + 1);
			if (*p != '\0' && *p != '#') {
				snprintf(err, errsz, "%s:%u: text after the "
				    "closing quote", path, lineno);
				goto out;
			}
			val++;
		} else if ((q = strchr(val, '#')) != NULL) {
			*q = '\0';
			val = trim(val);
		}
		if ((k = key_find(name)) == NULL) {
			snprintf(err, errsz, "%s:%u: unknown setting \"%s\"",
			    path, lineno, name);
			goto out;
		}
		if (key_set(c, k, val, why, sizeof(why)) == -1) {
			snprintf(err, errsz, "%s:%u: %s", path, lineno, why);
			goto out;
		}
		lines[k - keys] = lineno;
	}
	if (ferror(f)) {
		snprintf(err, errsz, "%s: read error: %s", path,
		    strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (line != NULL) {
		explicit_bzero(line, cap);
		free(line);
	}
	fclose(f);
	return rc;
}

/*
 * The KEYGATE_* variables once config_env_take() has moved them out of
 * the environment: "NAME=value" strings end to end, each ended by its NUL,
 * locked in memory.  Set once, before any worker exists, and read by
 * every later load (a reload takes its overrides from here).
 */
static char	*env_block;
static size_t	 env_size;
static bool	 env_taken;

void
config_env_take(void)
{
	size_t	 i, j, n = 0;
	char	*p;

	if (env_taken)
		return;
	env_taken = true;
	for (i = 0; environ != NULL && environ[i] != NULL; i++)
		if (strncmp(environ[i], "KEYGATE_", 8) == 0)
			n += strlen(environ[i]) + 1;
	if (n > 0 && (env_block = malloc(n)) != NULL)
		env_size = n;
	p = env_block;
	for (i = j = 0; environ != NULL && environ[i] != NULL; i++) {
		size_t len = strlen(environ[i]);

		if (strncmp(environ[i], "KEYGATE_", 8) != 0) {
			environ[j++] = environ[i];
			continue;
		}
		if (p != NULL) {
			memcpy(p, environ[i], len + 1);
			p += len + 1;
		}
		/*
		 * The text itself, not only the pointer: the original block
		 * is what /proc/PID/environ shows.
		 */
		explicit_bzero(environ[i], len);
	}
	if (environ != NULL)
		environ[j] = NULL;
	if (env_block != NULL)
		(void)harden_lock(env_block, env_size);
}

const char *
config_getenv(const char *name)
{
	size_t	 n = strlen(name), off;

	if (!env_taken)
		return getenv(name);
	for (off = 0; off < env_size; off += strlen(env_block + off) + 1)
		if (strncmp(env_block + off, name, n) == 0 &&
		    env_block[off + n] == '=')
			return env_block + off + n + 1;
	return NULL;
}

int
config_lock_secrets(const struct config *c)
{
	size_t	 i;
	int	 rc = 0;

	if (env_block != NULL && harden_lock(env_block, env_size) == -1)
		rc = -1;
	for (i = 0; i < NKEYS; i++) {
		const char *v;

		if (keys[i].type != CF_SECRET)
			continue;
		v = *(char *const *)(const void *)((const char *)c +
		    keys[i].offset);
		if (v != NULL && *v != '\0' &&
		    harden_lock(v, strlen(v) + 1) == -1)
			rc = -1;
	}
	for (i = 0; i < c->upstreams.n; i++)
		if (c->upstreams.v[i].key != NULL &&
		    harden_lock(c->upstreams.v[i].key,
		    strlen(c->upstreams.v[i].key) + 1) == -1)
			rc = -1;
	return rc;
}

static int
parse_env(struct config *c, unsigned *lines, char *err, size_t errsz)
{
	char	 var[80], why[256];
	const char *v;
	size_t	 i, j;

	for (i = 0; i < NKEYS; i++) {
		snprintf(var, sizeof(var), "KEYGATE_%s", keys[i].name);
		for (j = 8; var[j] != '\0'; j++)
			var[j] = (char)toupper((unsigned char)var[j]);
		if ((v = config_getenv(var)) == NULL)
			continue;
		/* The variable replaces the file's rules, not adds to them. */
		if (keys[i].type == CF_AUTHORIZE)
			authz_free((struct config_authz *)(void *)((char *)c +
			    keys[i].offset));
		if (key_set(c, &keys[i], v, why, sizeof(why)) == -1) {
			snprintf(err, errsz, "%s: %s", var, why);
			return -1;
		}
		lines[i] = FROM_ENV;
	}
	return 0;
}

static bool
secret_is_default(const char *s)
{
	return strcmp(s, DEV_HMAC_SECRET) == 0 ||
	    strcmp(s, DEV_JWT_SECRET) == 0 ||
	    strstr(s, "change-me") != NULL || strstr(s, "changeme") != NULL ||
	    strstr(s, "CHANGE_ME") != NULL;
}

/*
 * Where key k was set, for a message about it: "file:line",
 * "KEYGATE_KEY" or, for a default, the file.
 */
static void
origin(const struct config *c, const unsigned *lines, const char *name,
    char *out, size_t outsz)
{
	const struct cf_key *k = key_find(name);
	unsigned	 line = lines[k - keys];
	size_t		 i;

	if (line == FROM_ENV) {
		snprintf(out, outsz, "KEYGATE_%s", k->name);
		for (i = 8; out[i] != '\0'; i++)
			out[i] = (char)toupper((unsigned char)out[i]);
	} else if (line > 0)
		snprintf(out, outsz, "%s:%u", c->path, line);
	else
		snprintf(out, outsz, "%s", c->path != NULL ? c->path :
		    "configuration");
}

/*
 * True for a unix socket, and for tcp:HOST:PORT whose HOST is an address
 * in 127.0.0.0/8 or ::1 (in brackets or not) or "localhost".
 */
static bool
listen_is_loopback(const char *listen)
{
	char		 host[64];
	const char	*h, *colon;
	size_t		 n;
	struct in_addr	 a4;
	struct in6_addr	 a6;

	if (strncmp(listen, "tcp:", 4) != 0)
		return true;
	h = listen + 4;
	if ((colon = strrchr(h, ':')) == NULL || colon == h)
		return false;
	n = (size_t)(colon - h);
	if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n >= sizeof(host))
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	if (strcmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

/* Checks that need the whole config, and fills development defaults. */
static int
check(struct config *c, const unsigned *lines, char *err, size_t errsz)
{
	const char *where = c->path != NULL ? c->path : "configuration";
	size_t	 i;
	char	 why[64], msg[256], at[PATH_MAX + 16];

	/* Each upstream's key, now that both settings are known. */
	if (upstream_keys_apply(c->upstream_keys, &c->upstreams, msg,
	    sizeof(msg)) == -1) {
		origin(c, lines, "upstream_keys", at, sizeof(at));
		snprintf(err, errsz, "%s: %s", at, msg);
		return -1;
	}

	if (strncmp(c->listen, "unix:/", 6) != 0 &&
	    strncmp(c->listen, "tcp:", 4) != 0) {
		snprintf(err, errsz, "%s: listen: expected unix:/PATH or "
		    "tcp:HOST:PORT, got \"%s\"", where, c->listen);
		return -1;
	}
	if (c->mode == MODE_DEVELOPMENT && !listen_is_loopback(c->listen)) {
		origin(c, lines, "listen", at, sizeof(at));
		snprintf(err, errsz, "%s: listen: mode = development listens on "
		    "loopback only (127.0.0.0/8 or ::1), not \"%s\"; its "
		    "secrets may be public", at, c->listen);
		return -1;
	}
	if (c->key_brand[0] == '\0' || strlen(c->key_brand) > 12) {
		snprintf(err, errsz, "%s: key_brand: 1 to 12 lower-case "
		    "letters or digits", where);
		return -1;
	}
	for (i = 0; c->key_brand[i] != '\0'; i++)
		if (!islower((unsigned char)c->key_brand[i]) &&
		    !isdigit((unsigned char)c->key_brand[i])) {
			snprintf(err, errsz, "%s: key_brand: 1 to 12 "
			    "lower-case letters or digits", where);
			return -1;
		}
	if (c->mode == MODE_PRODUCTION) {
		const struct { const char *name, *val; } s[] = {
			{ "hmac_secret", c->hmac_secret },
			{ "jwt_secret", c->jwt_secret },
		};
		for (i = 0; i < 2; i++) {
			/* Without jwt_secret, JWT authentication is off. */
			if (i == 1 && s[i].val[0] == '\0')
				continue;
			if (strlen(s[i].val) < SECRET_MIN_LEN) {
				snprintf(err, errsz, "%s: %s: must be at least "
				    "%d bytes in production mode", where,
				    s[i].name, SECRET_MIN_LEN);
				return -1;
			}
			if (secret_is_default(s[i].val)) {
				snprintf(err, errsz, "%s: %s: still the "
				    "default; generate one (head -c 32 "
				    "/dev/urandom | base64)", where, s[i].name);
				return -1;
			}
		}
		if (c->master_keys[0] == '\0') {
			snprintf(err, errsz, "%s: master_keys: required in "
			    "production mode", where);
			return -1;
		}
	} else {
		/* Development runs without configured secrets. */
		if (c->hmac_secret[0] == '\0' &&
		    key_set(c, key_find("hmac_secret"), DEV_HMAC_SECRET,
		    why, sizeof(why)) == -1)
			goto oom;

	}
	return 0;
oom:
	snprintf(err, errsz, "out of memory");
	return -1;
}

struct config *
config_load(const char *path, char *err, size_t errsz)
{
	struct config	*c;
	unsigned	 lines[NKEYS] = { 0 };	/* where each key was set */
	size_t		 i;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	c->read_at = time(NULL);
	for (i = 0; i < NKEYS; i++)
		if (key_set(c, &keys[i], keys[i].def, err, errsz) == -1)
			goto fail;
	if (path != NULL) {
		if ((c->path = strdup(path)) == NULL) {
			snprintf(err, errsz, "out of memory");
			goto fail;
		}
		if (parse_file(c, path, lines, err, errsz) == -1)
			goto fail;
	}
	if (parse_env(c, lines, err, errsz) == -1 ||
	    check(c, lines, err, errsz) == -1)
		goto fail;
	return c;
fail:
	config_free(c);
	return NULL;
}

void
config_free(struct config *c)
{
	size_t	 i;

	if (c == NULL)
		return;
	for (i = 0; i < NKEYS; i++) {
		if (keys[i].type == CF_STR)
			free(*str_field(c, &keys[i]));
		else if (is_secret_key(&keys[i]))
			secret_free(*str_field(c, &keys[i]));
	}
	free(c->upstreams.text);
	upstreams_free(c->upstreams.v, c->upstreams.n);
	authz_free(&c->authorize);
	free(c->path);
	free(c);
}

const char *
config_restart_needed(const struct config *a, const struct config *b)
{
	size_t	 i;

	for (i = 0; i < NKEYS; i++) {
		const struct cf_key *k = &keys[i];
		const char *pa = (const char *)a + k->offset;
		const char *pb = (const char *)b + k->offset;

		if (k->reloadable)
			continue;
		if (k->type == CF_STR || k->type == CF_SECRET) {
			if (strcmp(*(char *const *)(const void *)pa,
			    *(char *const *)(const void *)pb) != 0)
				return k->name;
		} else if (memcmp(pa, pb, sizeof(int)) != 0)
			return k->name;
	}
	return NULL;
}

int
config_workers(const struct config *c)
{
	long	 n;

	if (c->workers > 0)
		return c->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > 512)
		n = 512;
	return (int)n * 2;
}
