#ifndef KEYGATE_CTL_CTL_H
#define KEYGATE_CTL_CTL_H

#include <stdbool.h>

struct config;
struct db;
struct db_res;

/*
 * 1 after printing usage when the command's first argument is --help or
 * -h, else 0.
 */
int	ctl_wants_help(int argc, char **argv, const char *usage);

/* Applies the pending migrations in cfg->sql_dir; the process exit status. */
int	ctl_migrate(const struct config *, struct db *, int argc, char **argv);

/* Creates an API key and prints it once; the process exit status. */
int	ctl_create_key(const struct config *, struct db *, int argc,
	    char **argv);

/* Stores the development key unless present; the process exit status. */
int	ctl_seed_dev_key(const struct config *, struct db *, int argc,
	    char **argv);

/* Checks every tenant's credit invariants; the process exit status. */
int	ctl_ledger_verify(const struct config *, struct db *, int argc,
	    char **argv);

/* Checks the audit log's hash chain; the process exit status. */
int	ctl_audit_verify(const struct config *, struct db *, int argc,
	    char **argv);

/* Prints the audit log's newest row, signed; the exit status. */
int	ctl_audit_head(const struct config *, struct db *, int argc,
	    char **argv);

/* Re-seals the vault under the active master key; the exit status. */
int	ctl_rotate_encryption_key(const struct config *, struct db *, int argc,
	    char **argv);
/* Opens every vault value; the exit status. */
int	ctl_vault_check(const struct config *, struct db *, int argc,
	    char **argv);

/* Lists, sets or imports prices; the exit status. */
int	ctl_prices(const struct config *, struct db *, int argc, char **argv);

/* Lists, sets or imports the OpenRouter ids of models; the exit status. */
int	ctl_openrouter_models(const struct config *, struct db *, int argc,
	    char **argv);

/*
 * A table kept with "list", "set FIELD..." and "import FILE" (ctl/table.c):
 * its set statement takes the nfields fields of a line as parameters,
 * once check() has found them valid (and rewritten those that need it
 * into store); list prints the rows of its list statement.
 */
struct ctl_table {
	const char	*command;	/* "prices" */
	const char	*things;	/* "prices", for "imported N prices" */
	const char	*usage;		/* the whole usage text */
	const char	*expected;	/* what a line holds, for errors */
	int		 nfields;	/* per line, 1 to 3 */
	int		 set_stmt;	/* enum stmt, nfields parameters */
	int		 list_stmt;	/* enum stmt, no parameters */
	const char	*header;	/* printed above the rows */
	/* Validates field[], setting param[]: to a field or into store. */
	bool		(*check)(char *const *field, const char **param,
			    char store[][32]);
	/* Prints row r of the list statement's result. */
	void		(*print)(const struct db_res *, int r);
};

/* Runs a table command's verb; the exit status. */
int	ctl_table(const struct ctl_table *, struct db *, int argc, char **argv);

#endif
