#ifndef KEYGATE_API_API_H
#define KEYGATE_API_API_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/hold.h"
#include "core/tenants.h"
#include "server/http.h"
#include "server/router.h"
#include "server/worker.h"

struct auth_settings;
struct checks;
struct db;
struct keycache;
struct metrics;
struct rl_shared;
struct upstream;
struct vault;
struct gateway_settings;
struct json_object;
struct lease_shared;
struct principal;
struct request;
struct worker;
struct worker_app;

/* What a worker last added to the shared metrics from its own counts. */
struct metrics_seen {
	unsigned long	 hits;		/* key cache hits */
	unsigned long	 misses;	/* key cache misses */
	unsigned long	 reconnects;	/* PostgreSQL reconnects */
};

/*
 * What the API opened in a worker (api/app.c), the worker's app_data: the
 * handles every handler uses.  app(w) finds them.
 */
struct app {
	struct db		*db;		/* owned, NULL until started */
	struct vault		*vault;		/* owned, NULL = unusable */
	struct keycache		*keys;		/* owned, verified keys */
	struct upstream		*upstream;	/* owned, kept connections */
	struct rl_shared	*limits;	/* in shared, NULL = none */
	struct metrics		*metrics;	/* in shared, NULL = none */
	struct metrics_seen	 metrics_seen;
	struct hold_queue	 holds;		/* calls' credits to send */
};

static inline struct app *
app(const struct worker *w)
{
	return w->app_data;
}

/* keygate's HTTP API, as a worker app. */
extern const struct worker_app api_app;

/* The route table: one row per SPEC route that exists. */
extern const struct route api_routes[];
extern const size_t api_nroutes;

/* The credits leased to this host, in the workers' shared memory. */
/* The settings core/auth.c checks credentials with. */
const struct auth_settings *api_auth_settings(const struct worker *);
/* The settings core/gateway.c chooses keys with. */
const struct gateway_settings *api_gateway_settings(const struct worker *);
struct lease_shared *api_leases(struct worker *);
/* The host's locks for sending a tenant's credits (core/hold.h). */
pthread_mutex_t	*api_sending(struct worker *);

/* Handlers, one group per file. */
void	api_health(struct request *);
void	api_openapi(struct request *);
void	api_keys_create(struct request *);
void	api_keys_list(struct request *);
void	api_keys_get(struct request *);
void	api_keys_update(struct request *);
void	api_keys_revoke(struct request *);
void	api_keys_rotate(struct request *);
void	api_keys_dormant(struct request *);
void	api_auth_whoami(struct request *);
void	api_keys_verify(struct request *);
void	api_keys_role_put(struct request *);
void	api_keys_role_delete(struct request *);
void	api_roles_create(struct request *);
void	api_roles_list(struct request *);
void	api_roles_get(struct request *);
void	api_roles_update(struct request *);
void	api_roles_delete(struct request *);
void	api_tenants_create(struct request *);
void	api_tenants_list(struct request *);
void	api_tenants_get(struct request *);
void	api_tenants_update(struct request *);
void	api_tenants_delete(struct request *);
void	api_tenants_export(struct request *);
void	api_tenants_purge(struct request *);
void	api_audit_list(struct request *);
void	api_llm_keys_store(struct request *);
void	api_llm_keys_status(struct request *);
void	api_llm_keys_delete(struct request *);
void	api_maintenance_reencrypt(struct request *);
void	api_chat_completions(struct request *);
void	api_messages(struct request *);
void	api_embeddings(struct request *);
void	api_account(struct request *);
void	api_models(struct request *);
void	api_models_get(struct request *);
void	api_account_usage(struct request *);
void	api_tenants_credits(struct request *);
void	api_auth_check(struct request *);
void	api_metrics(struct request *);
/* Answers a FastCGI authorizer request (api/authz.c). */
void	api_authorizer(struct request *);

/*
 * Why a caller was refused: an error of http.c's table (ERR__MAX = not
 * refused) and its message.
 */
struct api_verdict {
	enum http_err	 err;
	char		 message[256];
};

/*
 * Authenticates the caller (API key or JWT), counts the request against
 * its rate limit (adding the X-RateLimit-* headers) and checks scope (NULL
 * or "" = any valid key).  true when admitted, req->principal set; false
 * with the refusal in v, nothing answered yet (api/app.c).
 */
bool	api_admit(struct request *, const char *scope, struct api_verdict *v)
	    __attribute__((warn_unused_result));
/* Sets v to err with a printf-formatted message. */
void	api_verdict_set(struct api_verdict *v, enum http_err err,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/*
 * Answers a refusal in keygate's JSON shape; a database outage on a
 * ROUTE_VAULT route is the vault's 503.
 */
void	api_refuse(struct request *, const struct api_verdict *,
	    unsigned route_flags);

/*
 * Records a use of the key p names (when its last_used_at is due), in the
 * worker's next batch: what a request with that key does (api/app.c).
 */
void	api_key_used(struct request *, const struct principal *p);
/*
 * A gateway call of the authenticated caller starts: false (answered 429
 * too_many_concurrent_calls) when its key has max_concurrent_calls in
 * flight on this host already.  Every true is followed by api_call_end().
 */
bool	api_call_begin(struct request *);
void	api_call_end(struct request *);

/* The gateway (api/chat.c), for its three routes. */

/* The shape a client speaks. */
enum api_format {
	API_FORMAT_CHAT,	/* OpenAI chat completions */
	API_FORMAT_MESSAGES,	/* Anthropic's Messages API */
	API_FORMAT_EMBEDDINGS,	/* OpenAI embeddings */
	API_FORMAT__MAX
};

/*
 * Runs a checked gateway request to its end, answered: routes model,
 * resolves the key, holds credits, calls the provider and answers in the
 * client's format with the keygate block, streamed or not.  body is the
 * request in the OpenAI shape (borrowed); orig the client's own when it
 * is another (a Messages request, passed to Anthropic as it came), else
 * NULL.
 */
void	api_gateway(struct request *, enum api_format,
	    struct json_object *body, struct json_object *orig,
	    const char *model);
/* Refuses fields that would redirect the call; 0, or -1 after a 400. */
int	api_gateway_forbidden(struct request *, struct json_object *body)
	    __attribute__((warn_unused_result));
/* The model (borrowed), or NULL with the failure in the checks. */
const char *api_gateway_model(struct checks *, struct json_object *body);
/*
 * Records a failure unless messages is a non-empty array, and unless
 * stream, when sent, is a boolean.
 */
void	api_gateway_turns(struct checks *, struct json_object *body);
/*
 * The checks of every gateway route, in order: a JSON object (a missing
 * body fails "model" and each field absent names, with why), no
 * forbidden field, a model, the route's own check, the inline keys' form.
 * 0 with *body and *model set, or -1 after answering.
 */
int	api_gateway_checked(struct request *, const char *const absent[][2],
	    void (*check)(struct checks *, struct json_object *),
	    struct json_object **body, const char **model)
	    __attribute__((warn_unused_result));
/*
 * Every inline key sent must have its provider's form, as a key stored in
 * the vault must: a mistyped or misplaced key is the client's to fix, and
 * never worth a provider call.  Checked whether or not the call would use
 * it.  0, or -1 after answering 400.
 */
int	api_gateway_inline_keys(struct request *)
	    __attribute__((warn_unused_result));

/* Shared by the handlers (api/common.c). */

struct gateway_key;
/*
 * Decides where a gateway call for model goes and with which key
 * (gateway_resolve(), with the keys sent along in the request), into out;
 * 0, or -1 after answering why not: 400 unsupported_model or
 * model_not_available, 401 missing_provider_key, the database failure, a
 * stored key that does not open.  out is to be freed with
 * gateway_key_free() either way.
 */
int	api_gateway_key(struct request *, const char *model,
	    struct gateway_key *out) __attribute__((warn_unused_result));


/*
 * Answers 503 for a database out of reach, or too slow (a statement or
 * lock timeout, logged here); in the vault's own words for its routes.
 */
void	api_db_unavailable(struct request *, bool vault);
/* Answers a failed database call: 503 when unreachable, else 500. */
void	api_db_failed(struct request *);
/*
 * Opens the request's transaction: true, or false after answering the
 * failure as api_db_failed().
 */
bool	api_begin(struct request *) __attribute__((warn_unused_result));
/* Rolls the open transaction back and answers as api_db_failed(). */
void	api_abort(struct request *);
/*
 * Commits the open transaction and answers obj (taken) with status; a
 * failed commit answers as api_abort() instead.
 */
void	api_commit_respond(struct request *, int status,
	    struct json_object *obj);
/*
 * Where tenant stands to the caller, by check (tenant_within() or
 * tenant_below(), given tenant and the caller's tenant): a tenant that
 * is no UUID is TENANT_NOT_FOUND; TENANT_DB has been answered (the
 * database failure), any other result is the caller's to answer.
 */
enum tenant_result api_tenant_check(struct request *, const char *tenant,
	    enum tenant_result (*check)(struct db *, const char *,
	    const char *));
/*
 * True when tenant is the caller's tenant or below it.  On false the answer
 * has been sent when *answered is set (database failure); otherwise the
 * caller answers 404.
 */
bool	api_tenant_reachable(struct request *, const char *tenant,
	    bool *answered);
/*
 * The scopes of role, one of the roles tenant can see, into *scopes
 * (a principal holding nothing else).  1 found; 0 no such role (not
 * answered); -1 answered (the database, or a role of too many scopes).
 */
struct principal;
int	api_role_scopes(struct request *, const char *role,
	    const char *tenant, struct principal *scopes);
/*
 * Writes the audit row of a mutation inside the open transaction: actor,
 * request id and client address come from the request.  0 or -1.
 */
int	api_audit(struct request *, const char *tenant, const char *action,
	    const char *target_type, const char *target_id,
	    struct json_object *details) __attribute__((warn_unused_result));
/*
 * No key may act on a key more powerful than itself: true when every
 * effective scope of the rendered key is among the caller's, else answers
 * 403 and returns false.
 */
bool	api_key_within_caller(struct request *, struct json_object *key);
struct db_res;
/*
 * A list cursor must be an id the caller can see; false after answering
 * 400.  get is core's reader of one such object by (id, caller's tenant),
 * as key_get() or tenant_get().
 */
bool	api_cursor_known(struct request *,
	    struct db_res *(*get)(struct db *, const char *, const char *),
	    const char *cursor);

/*
 * One object of the caller's subtree, read by get (id, caller's tenant)
 * and rendered by render; NULL when there is none or the read failed
 * (see api_missing()).
 */
struct json_object *api_fetch(struct request *,
	    struct db_res *(*get)(struct db *, const char *, const char *),
	    const char *id,
	    struct json_object *(*render)(const struct db_res *, int));
/*
 * Answers for an object api_fetch() did not find: the database failure,
 * or 404 "No <what> with id <req->param>."
 */
void	api_missing(struct request *, const char *what);
/*
 * The id in the path (req->param) must be a UUID to name anything: true
 * when it is, else false after answering 404 "No <what> with id <id>."
 */
bool	api_path_id(struct request *, const char *what);
/*
 * A GET of one object of the caller's subtree, the one the path names:
 * read by get and rendered by render (as api_fetch()), answered 200, or
 * 404 "No <what> with id <id>." when the id is no UUID or names none the
 * caller can see.
 */
void	api_get_object(struct request *, const char *what,
	    struct db_res *(*get)(struct db *, const char *, const char *),
	    struct json_object *(*render)(const struct db_res *, int));
/*
 * Answers 402 insufficient_credits: the message and the error object give
 * the required and the available credits (micro-credits here), and
 * max_affordable_tokens when it is not negative.
 */
void	api_insufficient_credits(struct request *, long long required,
	    long long available, long max_affordable_tokens);

/*
 * A listing of the caller's subtree: reads limit and cursor from the
 * query, reads the page with core's list (caller's tenant, cursor, limit;
 * limit + 1 rows, to know whether there is a next page), renders each row
 * with render, and answers the page.  get reads one object by (id,
 * caller's tenant), to check the cursor; id_col is the id's column in
 * list's rows.
 */
void	api_list_page(struct request *,
	    struct db_res *(*list)(struct db *, const char *, const char *,
	    int),
	    struct db_res *(*get)(struct db *, const char *, const char *),
	    int id_col,
	    struct json_object *(*render)(const struct db_res *, int));
/* The body as an object, or NULL (an empty body is {}); 400 answered. */
bool	api_body_object(struct request *, struct json_object **out);
/*
 * Reads limit (1-100, default 20) and cursor (a UUID) from the query.
 * false when malformed (400 answered).
 */
bool	api_page_params(struct request *, int *limit, char *cursor,
	    size_t cursorsz);
/*
 * As api_page_params() for listings ordered by a serial id: the cursor is
 * a positive whole number ("" when none).
 */
bool	api_page_params_serial(struct request *, int *limit, char *cursor,
	    size_t cursorsz);
/*
 * Sends {"object":"list","data":[...],"next_cursor":next} (takes ownership
 * of data); next NULL = last page.
 */
void	api_page_respond(struct request *, struct json_object *data,
	    const char *next);

/*
 * No escalation: every scope given must be among the caller's
 * (role_scope_beyond()); otherwise answers 403 "This key cannot <verb>
 * scope <the first one missing>..." and returns false.
 */
bool	api_within_caller(struct request *, const char *const *scopes,
	    size_t n, const char *verb);
/*
 * Whether the caller may give role, one of the roles tenant can see: it
 * must hold every scope the role grants.  1 yes; 0 no such role (not
 * answered); -1 answered (403, or as api_role_scopes()).
 */
int	api_role_grantable(struct request *, const char *role,
	    const char *tenant);

/* Renderers: the API's view of a row, a new object the caller owns. */
/* The value of a column, or JSON null when it is empty or NULL. */
struct json_object *api_text_or_null(const struct db_res *, int row, int col);
/* "a,b,c" as a JSON array of strings. */
struct json_object *api_csv_array(const char *);
/* A key row (enum key_col): metadata only, never a secret or hash. */
struct json_object *api_key_json(const struct db_res *, int row);
/* A tenant row (enum tenant_col). */
struct json_object *api_tenant_json(const struct db_res *, int row);
/* A role row (enum role_col). */
struct json_object *api_role_json(const struct db_res *, int row);

/*
 * The rows of a page fetched with limit + 1 rows: the first limit
 * rendered, in a new array; into next, the id (column id_col) of the last
 * one shown when there are more, else "".
 */
struct json_object *api_page_rows(const struct db_res *, int limit,
	    int id_col, struct json_object *(*render)(const struct db_res *,
	    int), char *next, size_t nextsz);

/*
 * The tenant a request acts on must be the caller's or one below it: true
 * when it is; false after answering 404 "No tenant with id <tenant>." (or
 * the database failure).
 */
bool	api_tenant_target(struct request *, const char *tenant);

/*
 * The end of a change in the open transaction: writes its audit row
 * (details taken), reads the object changed (get by (id, caller's
 * tenant), rendered by render), commits and answers it with status.  A
 * failure anywhere answers as api_abort().
 */
void	api_change_done(struct request *, const char *tenant,
	    const char *action, const char *target_type, const char *id,
	    struct json_object *details,
	    struct db_res *(*get)(struct db *, const char *, const char *),
	    struct json_object *(*render)(const struct db_res *, int),
	    int status);

#endif
