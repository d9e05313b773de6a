#ifndef KEYGATE_CTL_CTL_H
#define KEYGATE_CTL_CTL_H

struct config;
struct db;

/* Applies the pending migrations in cfg->sql_dir; the process exit status. */
int	ctl_migrate(const struct config *, struct db *, int argc, char **argv);

/* Creates an API key and prints it once; the process exit status. */
int	ctl_create_key(const struct config *, struct db *, int argc,
	    char **argv);

/* Stores the development key unless present; the process exit status. */
int	ctl_seed_dev_key(const struct config *, struct db *, int argc,
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

#endif
