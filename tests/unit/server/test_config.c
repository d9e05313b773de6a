/* Unit tests for src/server/config.c: parsing, ranges, env, errors. */
#include "../unit.h"

#include <unistd.h>

#include "server/config.h"

static char path[64];

static void
write_conf(const char *text)
{
	FILE	*f;

	snprintf(path, sizeof(path), "/tmp/kg-test-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static struct config *
load(const char *text, char *err, size_t errsz)
{
	struct config *c;

	write_conf(text);
	c = config_load(path, err, errsz);
	unlink(path);
	return c;
}

static void
test_defaults(void **state)
{
	char		 err[256];
	struct config	*c;

	(void)state;
	c = config_load(NULL, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->listen, "unix:/run/keygate/keygate.sock");
	assert_int_equal(c->workers, 0);
	assert_int_equal(c->max_body_bytes, 1048576);
	assert_int_equal(c->rate_limit_max, 100);
	assert_int_equal(c->rate_limit_window, 60);
	assert_int_equal(c->mode, MODE_DEVELOPMENT);
	assert_true(c->validate_llm_keys);
	assert_true(c->pool_markup > 0.2499 && c->pool_markup < 0.2501);
	assert_int_equal(c->socket_mode, 0660);
	/* Development fills in secrets so that keys can be made at all. */
	assert_true(strlen(c->hmac_secret) >= 32);
	assert_true(config_workers(c) >= 2);
	config_free(c);
}

static void
test_file_values_and_comments(void **state)
{
	char		 err[256];
	struct config	*c;

	(void)state;
	c = load("# comment\n\nworkers = 3\nlisten = tcp:127.0.0.1:9000  "
	    "# trailing\nkey_brand = \"acme\"\nvalidate_llm_keys = off\n"
	    "rate_limit_window = 30 seconds\npool_markup = 0.5\n"
	    "log_file = \"/tmp/a # b.log\"\n", err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->workers, 3);
	assert_string_equal(c->listen, "tcp:127.0.0.1:9000");
	assert_string_equal(c->key_brand, "acme");
	assert_false(c->validate_llm_keys);
	assert_int_equal(c->rate_limit_window, 30);
	assert_string_equal(c->log_file, "/tmp/a # b.log");
	config_free(c);
}

static void
test_errors_name_file_and_line(void **state)
{
	char		 err[256], want[128];
	struct config	*c;

	(void)state;
	c = load("workers = 2\nworkers = banana\n", err, sizeof(err));
	assert_null(c);
	snprintf(want, sizeof(want), "%s:2: workers: expected a whole number, "
	    "got \"banana\"", path);
	assert_string_equal(err, want);

	c = load("\nnot_a_key = 1\n", err, sizeof(err));
	assert_null(c);
	snprintf(want, sizeof(want), "%s:2: unknown setting \"not_a_key\"",
	    path);
	assert_string_equal(err, want);

	c = load("workers = 5000\n", err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, ":1: workers: 5000 is out of range"));

	c = load("just words\n", err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, ":1: expected \"key = value\""));

	c = load("listen = http://x\n", err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "listen: expected unix:/PATH"));
}

static void
test_env_overrides_file(void **state)
{
	char		 err[256];
	struct config	*c;

	(void)state;
	setenv("KEYGATE_WORKERS", "7", 1);
	setenv("KEYGATE_DATABASE_URL", "host=/tmp dbname=x", 1);
	c = load("workers = 3\n", err, sizeof(err));
	unsetenv("KEYGATE_WORKERS");
	unsetenv("KEYGATE_DATABASE_URL");
	assert_non_null(c);
	assert_int_equal(c->workers, 7);
	assert_string_equal(c->database_url, "host=/tmp dbname=x");
	config_free(c);

	setenv("KEYGATE_MAX_BODY_BYTES", "12", 1);
	c = config_load(NULL, err, sizeof(err));
	unsetenv("KEYGATE_MAX_BODY_BYTES");
	assert_null(c);
	assert_non_null(strstr(err, "KEYGATE_MAX_BODY_BYTES: max_body_bytes: "
	    "12 is out of range"));
}

static void
test_production_refuses_weak_secrets(void **state)
{
	char		 err[256];
	struct config	*c;
	const char *strong = "hmac_secret = 0123456789abcdef0123456789abcdefXY\n"
	    "jwt_secret = ZYXWVUTSRQ0123456789abcdef0123456789\n"
	    "master_keys = k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
	char text[512];

	(void)state;
	c = load("mode = production\n", err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "hmac_secret: must be at least 32 bytes"));

	snprintf(text, sizeof(text), "mode = production\n%s"
	    "jwt_secret = change-me-change-me-change-me-change-me\n", strong);
	c = load(text, err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "jwt_secret: still the default"));

	snprintf(text, sizeof(text), "mode = production\n%s", strong);
	c = load(text, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->mode, MODE_PRODUCTION);
	config_free(c);
}

static void
test_windows(void **state)
{
	(void)state;
	assert_int_equal(config_parse_window("30 seconds"), 30);
	assert_int_equal(config_parse_window("1 minute"), 60);
	assert_int_equal(config_parse_window("2 minutes"), 120);
	assert_int_equal(config_parse_window("1 hour"), 3600);
	assert_int_equal(config_parse_window("1 day"), 86400);
	assert_int_equal(config_parse_window("15m"), 900);
	assert_int_equal(config_parse_window("0 seconds"), -1);
	assert_int_equal(config_parse_window("minute"), -1);
	assert_int_equal(config_parse_window("1 fortnight"), -1);
	assert_int_equal(config_parse_window("-1 minute"), -1);
	assert_int_equal(config_parse_window("1 minute extra"), -1);
}

static void
test_restart_needed(void **state)
{
	char		 err[256];
	struct config	*a, *b;

	(void)state;
	a = load("listen = tcp:127.0.0.1:9000\nworkers = 2\n", err,
	    sizeof(err));
	b = load("listen = tcp:127.0.0.1:9000\nworkers = 4\n", err,
	    sizeof(err));
	assert_non_null(a);
	assert_non_null(b);
	assert_null(config_restart_needed(a, b));
	config_free(b);
	b = load("listen = tcp:127.0.0.1:9001\n", err, sizeof(err));
	assert_non_null(b);
	assert_string_equal(config_restart_needed(a, b), "listen");
	config_free(a);
	config_free(b);
}

/* Operator upstreams: what a good setting gives, and every refusal. */
static void
test_upstreams(void **state)
{
	static const struct {
		const char	*text;
		const char	*error;		/* after "file:N: " */
	} bad[] = {
		{ "upstreams = \"gpu url=ftp://x models=a\"\n",
		  "1: upstreams: gpu: url: expected http://HOST[:PORT][/PATH] "
		  "or https://..., without user, query or fragment" },
		/* The URL is not quoted: the password stays out of the log. */
		{ "upstreams = \"gpu url=http://u:pw@x models=a\"\n",
		  "1: upstreams: gpu: url: expected http://HOST[:PORT][/PATH] "
		  "or https://..., without user, query or fragment" },
		{ "upstreams = \"gpu url=http://x?a=1 models=a\"\n", NULL },
		{ "upstreams = \"a url=http://x models=m; a url=http://y "
		  "models=n\"\n", "1: upstreams: a: named twice" },
		{ "upstreams = \"a url=http://x models=m*; b url=http://y "
		  "models=n,m*\"\n",
		  "1: upstreams: b: the model pattern \"m*\" is already a's" },
		{ "upstreams = \"google url=http://x models=m\"\n",
		  "1: upstreams: google: the name of a built-in provider" },
		{ "upstreams = \"Big url=http://x models=m\"\n",
		  "1: upstreams: \"Big\" is not a name: 1 to 32 of a-z, 0-9, "
		  "'_' and '-'" },
		{ "upstreams = \"a url=http://x\"\n",
		  "1: upstreams: a: url= and models= are required" },
		{ "upstreams = \"a models=m\"\n",
		  "1: upstreams: a: url= and models= are required" },
		{ "upstreams = \"a url=http://x models=*m\"\n",
		  "1: upstreams: a: \"*m\" is not a model name, nor a prefix "
		  "ending in one '*'" },
		{ "upstreams = \"a url=http://x models=m strip=maybe\"\n",
		  "1: upstreams: a: strip: expected true or false, got "
		  "\"maybe\"" },
		{ "upstreams = \"a url=http://x models=m key=k\"\n",
		  "1: upstreams: a: unknown attribute \"key\" (url, models, "
		  "strip)" },
		{ "upstreams = \"a url=http://x models=m\"\n"
		  "upstream_keys = b:sekrit-one\n",
		  "2: upstream_keys: no upstream named \"b\" in upstreams" },
		{ "upstream_keys = sekrit-one\n"
		  "upstreams = \"a url=http://x models=m\"\n",
		  "1: upstream_keys: entry 1: expected NAME:KEY, NAME being one "
		  "of upstreams" },
		{ "upstreams = \"a url=http://x models=m\"\n"
		  "upstream_keys = a:sekrit-one,a:sekrit-two\n",
		  "2: upstream_keys: a: a second key" },
		{ "upstream_keys = \"a:sekrit one\"\n",
		  "1: upstream_keys: a: the key must be printable, without "
		  "blanks" },
	};
	char		 err[512], want[512];
	struct config	*c;
	size_t		 i;

	(void)state;
	c = load("upstreams = \"gpu url=http://10.0.0.5:8000/v1/ "
	    "models=local/*,llama3.1:8b strip=true; ollama "
	    "url=https://ollama.example/v1 models=qwen*;\"\n"
	    "upstream_keys = \" gpu:sekrit-gpu-key ,\"\n", err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->upstreams.n, 2);
	assert_string_equal(c->upstreams.v[0].name, "gpu");
	/* The trailing '/' goes: /chat/completions is appended. */
	assert_string_equal(c->upstreams.v[0].url, "http://10.0.0.5:8000/v1");
	assert_int_equal(c->upstreams.v[0].nmodels, 2);
	assert_string_equal(c->upstreams.v[0].models[0], "local/*");
	assert_string_equal(c->upstreams.v[0].models[1], "llama3.1:8b");
	assert_true(c->upstreams.v[0].strip);
	assert_string_equal(c->upstreams.v[0].key, "sekrit-gpu-key");
	assert_string_equal(c->upstreams.v[1].name, "ollama");
	assert_false(c->upstreams.v[1].strip);
	assert_null(c->upstreams.v[1].key);
	config_free(c);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = load(bad[i].text, err, sizeof(err));
		if (c != NULL)
			fail_msg("accepted: %s", bad[i].text);
		/* A key is never quoted back. */
		assert_null(strstr(err, "sekrit"));
		if (bad[i].error == NULL)
			continue;
		snprintf(want, sizeof(want), "%s:%s", path, bad[i].error);
		assert_string_equal(err, want);
	}

	/* From the environment, the variable is the place. */
	setenv("KEYGATE_UPSTREAM_KEYS", "zz:sekrit", 1);
	c = config_load(NULL, err, sizeof(err));
	unsetenv("KEYGATE_UPSTREAM_KEYS");
	assert_null(c);
	assert_string_equal(err, "KEYGATE_UPSTREAM_KEYS: upstream_keys: no "
	    "upstream named \"zz\" in upstreams");
}

/* Slurps a file of the source tree (KEYGATE_SRCDIR, else "."). */
static char *
slurp(const char *rel)
{
	const char *top = getenv("KEYGATE_SRCDIR");
	char	 p[1024], *buf;
	FILE	*f;
	long	 n;

	snprintf(p, sizeof(p), "%s/%s", top != NULL ? top : ".", rel);
	f = fopen(p, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

/*
 * authorize is repeatable: each line adds a rule; the longest prefix
 * decides, a rule naming the method wins a tie, no rule covers the rest;
 * a bad rule names its file and line; the environment replaces them all.
 */
static void
test_authorize_rules(void **state)
{
	const struct config_authz_rule *r;
	struct config	*c;
	char		 err[256], want[256];
	size_t		 i;
	static const struct {
		const char	*text;
		const char	*msg;
	} bad[] = {
		{ "authorize = reports/ reports:read\n",
		  "authorize: the prefix \"reports/\" does not start with '/'" },
		{ "authorize = /reports/ api_keys:delete\n",
		  "authorize: /reports/: \"api_keys:delete\" is not a scope "
		  "(resource:action)" },
		{ "authorize = /reports/\n",
		  "authorize: expected \"[METHOD] /PREFIX SCOPE\"" },
		{ "authorize = get /r/ reports:read\n",
		  "authorize: \"get\" is not a method such as GET" },
		{ "authorize = /r/ reports:read\nauthorize = /r/ reports:list\n",
		  "authorize: /r/: a second rule for the same prefix" },
	};

	(void)state;
	c = load("authorize = /reports/ reports:read\n"
	    "authorize = /reports/private/ reports:admin\n"
	    "workers = 2\n"
	    "authorize = POST /reports/ reports:write\n", err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->authorize.n, 3);
	r = config_authz_find(c, "GET", "/reports/q3.csv");
	assert_non_null(r);
	assert_string_equal(r->scope, "reports:read");
	r = config_authz_find(c, "POST", "/reports/q3.csv");
	assert_non_null(r);
	assert_string_equal(r->scope, "reports:write");
	r = config_authz_find(c, "POST", "/reports/private/x");
	assert_non_null(r);
	assert_string_equal(r->scope, "reports:admin");
	assert_null(config_authz_find(c, "GET", "/reports"));
	assert_null(config_authz_find(c, "GET", "/admin/"));

	setenv("KEYGATE_AUTHORIZE", "/a/ reports:read; /b/ models:read", 1);
	config_free(c);
	c = load("authorize = /reports/ reports:read\n", err, sizeof(err));
	unsetenv("KEYGATE_AUTHORIZE");
	assert_non_null(c);
	assert_int_equal(c->authorize.n, 2);
	assert_null(config_authz_find(c, "GET", "/reports/x"));
	r = config_authz_find(c, "GET", "/b/x");
	assert_non_null(r);
	assert_string_equal(r->scope, "models:read");
	config_free(c);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = load(bad[i].text, err, sizeof(err));
		assert_null(c);
		snprintf(want, sizeof(want), "%s:%d: %s", path,
		    strchr(bad[i].text, '\n')[1] != '\0' ? 2 : 1, bad[i].msg);
		assert_string_equal(err, want);
	}
}

/* Every setting is documented in the manual and the example config. */
static void
test_every_key_is_documented(void **state)
{
	char	*man = slurp("etc/keygate.conf.5");
	char	*conf = slurp("etc/keygate.conf");
	char	 want[128];
	size_t	 i;

	(void)state;
	for (i = 0; i < config_key_count(); i++) {
		const char *k = config_key_name(i);

		snprintf(want, sizeof(want), ".B %s\n", k);
		if (strstr(man, want) == NULL)
			fail_msg("keygate.conf.5 does not describe %s", k);
		snprintf(want, sizeof(want), "\n%s = ", k);
		if (strstr(conf, want) == NULL)
			fail_msg("etc/keygate.conf does not set %s", k);
	}
	free(man);
	free(conf);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_file_values_and_comments),
    cmocka_unit_test(test_errors_name_file_and_line),
    cmocka_unit_test(test_env_overrides_file),
    cmocka_unit_test(test_production_refuses_weak_secrets),
    cmocka_unit_test(test_windows),
    cmocka_unit_test(test_restart_needed),
    cmocka_unit_test(test_upstreams),
    cmocka_unit_test(test_authorize_rules),
    cmocka_unit_test(test_every_key_is_documented))
