#include "autoconfig.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/audit.h"
#include "ctl/ctl.h"
#include "lib/crypto.h"
#include "lib/db.h"
#include "lib/harden.h"
#include "server/config.h"

static const struct command {
	const char	*name;
	int		(*run)(const struct config *, struct db *, int, char **);
	const char	*help;
} commands[] = {
	{ "migrate", ctl_migrate, "apply the pending database migrations" },
	{ "create-key", ctl_create_key, "create an API key and print it once" },
	{ "seed-dev-key", ctl_seed_dev_key,
	  "store the development key (not in production)" },
	{ "audit-verify", ctl_audit_verify,
	  "check the audit log's hash chain (and a signed head)" },
	{ "audit-head", ctl_audit_head,
	  "print the audit log's newest row, signed" },
	{ "rotate-encryption-key", ctl_rotate_encryption_key,
	  "re-encrypt the vault under the active master key" },
	{ "vault-check", ctl_vault_check,
	  "check that every vault value opens" },
	{ "ledger-verify", ctl_ledger_verify,
	  "check every tenant's credits: balance, reserve and holds" },
	{ "prices", ctl_prices, "list, set or import model prices" },
	{ "openrouter-models", ctl_openrouter_models,
	  "list, set or import the OpenRouter ids of models" },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *f)
{
	size_t	 i;

	fprintf(f, "usage: keygatectl [--config PATH] COMMAND [OPTIONS]\n"
	    "       keygatectl --help | --version\n\n"
	    "Administers keygate directly in PostgreSQL (database_url).\n\n"
	    "Commands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-18s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n`keygatectl COMMAND --help` describes a command.  Exit "
	    "status: 0 success,\n1 failure, 2 usage or configuration error.  "
	    "See keygatectl(8).\n");
}

/*
 * The options before the command (--config, --help, --version) and the
 * command, at argv[*at].  -1 to go on, else the exit code.
 */
static int
parse_args(int argc, char *argv[], const char **path, int *at,
    const struct command **cmd)
{
	size_t	 i;
	int	 a;

	for (a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--config") == 0 ||
		    strcmp(argv[a], "-c") == 0) {
			if (++a == argc) {
				usage(stderr);
				return 2;
			}
			*path = argv[a];
		} else if (strncmp(argv[a], "--config=", 9) == 0)
			*path = argv[a] + 9;
		else if (strcmp(argv[a], "--help") == 0 ||
		    strcmp(argv[a], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[a], "--version") == 0 ||
		    strcmp(argv[a], "-V") == 0) {
			printf("keygatectl %s\n", PACKAGE_VERSION);
			return 0;
		} else
			break;
	}
	if (a == argc) {
		usage(stderr);
		return 2;
	}
	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(argv[a], commands[i].name) == 0)
			*cmd = &commands[i];
	if (*cmd == NULL) {
		fprintf(stderr, "keygatectl: unknown command \"%s\"\n", argv[a]);
		usage(stderr);
		return 2;
	}
	*at = a;
	return -1;
}

int
ctl_wants_help(int argc, char **argv, const char *usage)
{
	if (argc > 1 && (strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0)) {
		fputs(usage, stdout);
		return 1;
	}
	return 0;
}

/*
 * A command asked for its help: it answers without the database, which
 * is connected to only when a command uses it.
 */
static bool
asks_help(int argc, char **argv)
{
	int	 i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

int
main(int argc, char *argv[])
{
	const char	*path = NULL;
	const struct command *cmd = NULL;
	struct config	*cfg;
	struct db	*db;
	char		 err[512];
	int		 a, code;

	/* Before anything can read them or crash with them. */
	config_env_take();
	if (harden_process(err, sizeof(err)) == -1) {
		fprintf(stderr, "keygatectl: %s\n", err);
		return 1;
	}
	if ((code = parse_args(argc, argv, &path, &a, &cmd)) != -1)
		return code;
	if (path == NULL)
		path = config_getenv("KEYGATE_CONFIG");
	/* Without a file, defaults and KEYGATE_* variables alone. */
	if (path == NULL && access(CONFIG_DEFAULT_PATH, R_OK) == 0)
		path = CONFIG_DEFAULT_PATH;
	if ((cfg = config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "keygatectl: %s\n", err);
		return 2;
	}
	/* Best effort: without the privilege to lock, carry on. */
	(void)config_lock_secrets(cfg);
	if (crypto_init(err, sizeof(err)) == -1) {
		fprintf(stderr, "keygatectl: %s\n", err);
		config_free(cfg);
		return 1;
	}
	if ((db = db_new(cfg->database_url, cfg->database_connect_timeout,
	    "keygatectl")) == NULL) {
		config_free(cfg);
		return 1;
	}
	if (audit_attach(db, cfg->hmac_secret) == -1) {
		fprintf(stderr, "keygatectl: keying the audit chain: failed\n");
		code = 1;
	} else if (!asks_help(argc - a, argv + a) && db_connect(db) == -1) {
		fprintf(stderr, "keygatectl: connecting to PostgreSQL: %s\n",
		    db_errmsg(db));
		code = 1;
	} else
		code = cmd->run(cfg, db, argc - a, argv + a);
	db_free(db);
	config_free(cfg);
	return code;
}
