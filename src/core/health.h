#ifndef KEYGATE_CORE_HEALTH_H
#define KEYGATE_CORE_HEALTH_H

#include <stdbool.h>

struct db;

/* What GET /health reports of the parts a request needs. */
struct health {
	bool	 database;	/* a query reached keygate's schema */
	bool	 vault;		/* usable: the database is, and a master key
				   is configured */
};

/*
 * Probes the database with one query of the schema (a migrated database
 * answers it; one out of reach, or never migrated, does not) and says,
 * into out, what is usable: the vault only when the database is and
 * vault_configured (a master key was given) is true.
 */
void		 health_check(struct db *, bool vault_configured,
		    struct health *out);

#endif
