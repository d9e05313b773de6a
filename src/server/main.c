#include "autoconfig.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "api/api.h"
#include "core/vault.h"
#include "lib/crypto.h"
#include "lib/harden.h"
#include "server/config.h"
#include "server/log.h"
#include "server/master.h"
#include "server/worker.h"

/*
 * A request thread spends most of its life waiting on a provider, and
 * glibc gives each thread a cache of freed blocks that only that thread's
 * next allocations use: about 7 KiB once a request has run, kept while
 * the thread waits, for each of thousands of open calls.  glibc reads the
 * tunable that turns the cache off only when a program starts, so
 * keygated starts once more with it (the same process: exec keeps the
 * pid, the environment and the inherited sockets).  Failing that, it
 * carries on with the cache.
 */
static void
tune_malloc(char *argv[])
{
	static const char tunable[] = "glibc.malloc.tcache_count=0";
	const char	*t = getenv("GLIBC_TUNABLES");
	char		 was[512], v[1024];
	int		 n;

	if (t != NULL && strstr(t, "glibc.malloc.tcache_count") != NULL)
		return;
	n = snprintf(was, sizeof(was), "%s", t != NULL ? t : "");
	if (n < 0 || (size_t)n >= sizeof(was))
		return;
	snprintf(v, sizeof(v), "%s%s%s", was, *was != '\0' ? ":" : "",
	    tunable);
	if (setenv("GLIBC_TUNABLES", v, 1) == -1)
		return;
	execv("/proc/self/exe", argv);
	/* Not started again: as before, cache and all. */
	if (t != NULL)
		(void)setenv("GLIBC_TUNABLES", was, 1);
	else
		(void)unsetenv("GLIBC_TUNABLES");
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: keygated [--config PATH] [--check-config]\n"
	    "       keygated --help | --version\n"
	    "\n"
	    "Runs the keygate FastCGI server: a master process and its\n"
	    "preforked workers.  It stays in the foreground and logs JSON\n"
	    "lines to stderr (or log_file).\n"
	    "\n"
	    "  -c, --config PATH   configuration file (default %s)\n"
	    "  -t, --check-config  check the configuration and exit\n"
	    "  -h, --help          show this help\n"
	    "  -V, --version       show the version\n"
	    "\n"
	    "Every setting may also come from KEYGATE_<SETTING> in the\n"
	    "environment.  Signals: TERM/INT stop gracefully, HUP reloads.\n"
	    "Exit status: 0 stopped cleanly, 1 failure, 2 configuration\n"
	    "error or database not migrated.  See keygated(8).\n",
	    CONFIG_DEFAULT_PATH);
}

/*
 * For --check-config: master_keys must also decode into a keyring, which
 * workers otherwise find out only when they start.  0, or 2 after saying
 * why (never quoting a key).
 */
static int
check_keyring(const struct config *cfg, const char *path)
{
	struct vault	*v;
	char		 err[256];

	if (cfg->master_keys[0] == '\0')
		return 0;
	if (crypto_init(err, sizeof(err)) == -1) {
		fprintf(stderr, "keygated: crypto_init: %s\n", err);
		return 1;
	}
	if ((v = vault_new(cfg->master_keys, err, sizeof(err))) == NULL) {
		fprintf(stderr, "keygated: %s: %s\n", path, err);
		return 2;
	}
	vault_free(v);
	return 0;
}

/*
 * The command line: the configuration's path and whether only to check
 * it.  -1 to go on, else the exit code (help, version, a usage error).
 */
static int
parse_args(int argc, char *argv[], const char **path, int *check_only)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int	 ch;

	while ((ch = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			*path = optarg;
			break;
		case 't':
			*check_only = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("keygated %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (*path == NULL)
		*path = config_getenv("KEYGATE_CONFIG");
	if (*path == NULL)
		*path = CONFIG_DEFAULT_PATH;
	return -1;
}

int
main(int argc, char *argv[])
{
	const char	*path = NULL;
	struct config	*cfg;
	char		 err[512];
	int		 rc, check_only = 0;

	tune_malloc(argv);
	/*
	 * Started again from /proc/self/exe, the process is named "exe" (in
	 * ps, top, pgrep): its name again, for the master and its workers.
	 */
	(void)prctl(PR_SET_NAME, "keygated", 0, 0, 0);
	/* Before anything can read them or crash with them. */
	config_env_take();
	if (harden_process(err, sizeof(err)) == -1) {
		fprintf(stderr, "keygated: %s\n", err);
		return 1;
	}
	if ((rc = parse_args(argc, argv, &path, &check_only)) != -1)
		return rc;
	if ((cfg = config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "keygated: %s\n", err);
		return 2;
	}
	if (check_only) {
		rc = check_keyring(cfg, path);
		if (rc == 0)
			printf("%s: configuration OK\n", path);
		config_free(cfg);
		return rc;
	}
	if (log_open(cfg->log_file) == -1) {
		fprintf(stderr, "keygated: log_file %s: %s\n", cfg->log_file,
		    strerror(errno));
		config_free(cfg);
		return 1;
	}
	if (crypto_init(err, sizeof(err)) == -1) {
		log_error("crypto_init: starting: %s", err);
		config_free(cfg);
		return 1;
	}
	if (cfg->mode == MODE_DEVELOPMENT)
		log_warn("mode = development: secrets may be defaults; never "
		    "expose this instance");
	if (cfg->jwt_secret[0] == '\0')
		log_info("jwt_secret is empty: JWT authentication is off");
	if (config_lock_secrets(cfg) == -1)
		log_warn("mlock: locking secrets in memory: %s; they may "
		    "reach swap", strerror(errno));
	return master_run(cfg, &api_app);
}
