#ifndef KEYGATE_CORE_TENANTS_H
#define KEYGATE_CORE_TENANTS_H

#include "lib/db.h"

struct db_res;

#define TENANT_ROOT "00000000-0000-0000-0000-000000000001"

/* The columns of a tenant row, in order: the list is DB_TENANT_COLUMNS. */
enum tenant_col {
	DB_TENANT_COLUMNS(DB_COLS_ENUM)
	TC__MAX
};

/* The columns of a role row (DB_ROLE_COLUMNS), then "modifiable". */
enum role_col {
	DB_ROLE_COLUMNS(DB_COLS_ENUM)
	RC_MINE,
	RC__MAX
};


#include <stdbool.h>
#include <stddef.h>

struct db;

enum tenant_result {
	TENANT_OK,
	TENANT_NOT_FOUND,	/* none, or not within the caller's subtree */
	TENANT_SELF,		/* the caller's own tenant, where one below it
				   is needed */
	TENANT_DB,		/* see db_status() */
	TENANT_RESULT__MAX
};

/*
 * Whether tenant is caller's own tenant or one below it: TENANT_OK,
 * TENANT_NOT_FOUND, or TENANT_DB.
 */
enum tenant_result tenant_within(struct db *, const char *tenant,
		    const char *caller) __attribute__((warn_unused_result));
/*
 * Whether tenant is strictly below caller's: a caller can neither
 * deactivate nor purge the tenant it stands in (TENANT_SELF).
 */
enum tenant_result tenant_below(struct db *, const char *tenant,
		    const char *caller) __attribute__((warn_unused_result));
/*
 * Tenant id as caller sees it (caller's own or one below it): a row of
 * enum tenant_col or none, to be freed with db_res_free(); NULL with
 * db_status() set.
 */
struct db_res	*tenant_get(struct db *, const char *id, const char *caller)
		    __attribute__((warn_unused_result));
/*
 * The tenants of caller's subtree after the one of id cursor (NULL = from
 * the first), at most limit: rows of enum tenant_col to be freed with
 * db_res_free(), or NULL with db_status() set.
 */
struct db_res	*tenant_list(struct db *, const char *caller,
		    const char *cursor, int limit)
		    __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, a new tenant name below parent; its id
 * into id.  0, or -1 with db_status() set.
 */
int		 tenant_create(struct db *, const char *parent,
		    const char *name, char *id, size_t idsz)
		    __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, renames tenant id (within caller's
 * subtree) to name; NULL changes nothing but its updated_at.
 */
enum tenant_result tenant_rename(struct db *, const char *id,
		    const char *caller, const char *name)
		    __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, deactivates tenant id and its subtree:
 * their keys stop working.  How many tenants, or -1 with db_status() set.
 */
int		 tenant_deactivate(struct db *, const char *id)
		    __attribute__((warn_unused_result));
/*
 * Where an export goes: part is told the name of each part before its
 * rows, row each of them (the JSON text of one object, borrowed for the
 * call), part_end the end of the part.  Each returns 0 to go on, or -1
 * to stop the export.
 */
struct tenant_export_sink {
	int	(*part)(void *arg, const char *name);
	int	(*row)(void *arg, const char *json);
	int	(*part_end)(void *arg);
	void	*arg;
};

/*
 * Inside the caller's transaction (one snapshot: db_begin_snapshot()),
 * hands the data of tenant id's subtree to sink, part by part (tenants,
 * api_keys, roles, llm_keys, usage, audit_log) and row by row as
 * PostgreSQL sends them, so that memory stays at a row whatever the size
 * of the subtree.  0 when everything was handed over, 1 when the sink
 * stopped, -1 with db_status() set.
 */
int		 tenant_export(struct db *, const char *id,
		    const struct tenant_export_sink *sink)
		    __attribute__((warn_unused_result));
/*
 * Inside the caller's transaction, deletes tenant id, its subtree and all
 * they hold.  What was deleted, as the text of a JSON object of counts
 * (a new string the caller frees), or NULL with db_status() set.
 */
char		*tenant_purge(struct db *, const char *id)
		    __attribute__((warn_unused_result));

#endif
