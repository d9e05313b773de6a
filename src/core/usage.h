#ifndef KEYGATE_CORE_USAGE_H
#define KEYGATE_CORE_USAGE_H

/*
 * What a tenant has and has spent: its account (balance, keys) and its
 * usage rows, one per gateway call, with their totals.
 */

struct db;
struct db_res;

/* A tenant's account as GET /v1/account shows it. */
struct usage_account {
	long long	 balance;	/* micro-credits */
	long long	 reserved;	/* micro-credits held by calls */
	long long	 active_keys;
	long long	 total_keys;
};

enum usage_result {
	USAGE_OK,
	USAGE_NOT_FOUND,	/* no such tenant */
	USAGE_DB,		/* see db_status() */
	USAGE_RESULT__MAX
};

/* The columns of a usage row (usage_list()), in order. */
enum usage_col {
	UC_ID, UC_REQUEST, UC_KEY, UC_PROVIDER, UC_MODEL, UC_SOURCE,
	UC_PROMPT, UC_COMPLETION, UC_CHARGED, UC_STATUS, UC_CREATED, UC__MAX
};

/* What the usage rows of a period add up to. */
struct usage_totals {
	long long	 requests;
	long long	 prompt_tokens;
	long long	 completion_tokens;
	long long	 charged;	/* micro-credits */
};

/* tenant's account into *out. */
enum usage_result usage_account(struct db *, const char *tenant,
		    struct usage_account *out)
		    __attribute__((warn_unused_result));
/*
 * tenant's usage rows from from to to (ISO 8601, NULL = open), newest
 * first, older than row id cursor (NULL = from the newest), at most
 * limit: rows of enum usage_col, to be freed with db_res_free(), or NULL
 * with db_status() set.
 */
struct db_res	*usage_list(struct db *, const char *tenant, const char *from,
		    const char *to, const char *cursor, int limit)
		    __attribute__((warn_unused_result));
/* The totals of tenant's usage from from to to into *out.  0, or -1. */
int		 usage_totals(struct db *, const char *tenant,
		    const char *from, const char *to, struct usage_totals *out)
		    __attribute__((warn_unused_result));

#endif
