#ifndef KEYGATE_CORE_MODELS_H
#define KEYGATE_CORE_MODELS_H

struct db;
struct db_res;

/* The columns of models_known()'s rows. */
enum model_col {
	MC_ID,		/* the model's name */
	MC_CREATED,	/* when it was added, Unix seconds */
	MC__MAX
};

/*
 * The models keygate knows by name from its database: OpenRouter's native
 * ids and the exact names of prices, once each.  Rows of enum model_col,
 * to be freed with db_res_free(), or NULL with db_status() set.  Which of
 * them a caller reaches is the gateway's rule (core/gateway.c).
 */
struct db_res	*models_known(struct db *) __attribute__((warn_unused_result));

#endif
