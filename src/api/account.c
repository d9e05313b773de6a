/*
 * GET /v1/account and POST /v1/tenants/{id}/credits: a tenant's credits.
 * Amounts are credits (decimal) on the wire and micro-credits inside.
 */
#include "autoconfig.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/credits.h"
#include "core/ledger.h"
#include "core/usage.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

static struct json_object *
credits(long long micro)
{
	return credits_json(micro);
}

void
api_account(struct request *req)
{
	struct usage_account a;
	struct json_object *o;

	switch (usage_account(app(req->w)->db, req->principal->tenant_id, &a)) {
	case USAGE_OK:
		break;
	case USAGE_NOT_FOUND:
		http_error(req, ERR_NOT_FOUND, "No such tenant.");
		return;
	case USAGE_DB:
	case USAGE_RESULT__MAX:
		api_db_failed(req);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("account"));
	json_object_object_add(o, "tenant_id",
	    json_str(req->principal->tenant_id));
	json_object_object_add(o, "credits_balance", credits(a.balance));
	json_object_object_add(o, "credits_reserved", credits(a.reserved));
	json_object_object_add(o, "active_keys",
	    json_object_new_int64(a.active_keys));
	json_object_object_add(o, "total_keys",
	    json_object_new_int64(a.total_keys));
	http_respond_json(req, 200, o);
}

/* 402 for a transfer the giver's free balance cannot pay. */
static void
short_of(struct request *req, const char *tenant, long long micro)
{
	long long	 available;

	if (ledger_available(app(req->w)->db, tenant, &available) == -1) {
		api_db_failed(req);
		return;
	}
	api_insufficient_credits(req, micro, available, -1);
}

/*
 * The amount given, in micro-credits: whole micro-credits, more than none
 * and at most a billion credits.  0 after recording what is wrong.
 */
static long long
check_amount(struct checks *c, struct json_object *body)
{
	struct json_object *v;
	double		 d;

	if (!json_get(body, "amount", &v) ||
	    (!json_object_is_type(v, json_type_int) &&
	    !json_object_is_type(v, json_type_double))) {
		check_fail(c, "amount", "required: a number of credits");
		return 0;
	}
	d = json_object_get_double(v);
	if (!(d > 0 && d <= 1e9) ||
	    fabs(d * CREDITS_MICRO - llround(d * CREDITS_MICRO)) > 1e-3) {
		check_fail(c, "amount", "must be more than 0 and at most "
		    "1000000000, in steps of 0.000001");
		return 0;
	}
	return llround(d * CREDITS_MICRO);
}

/* The audit row of credits added to req->param, from a tenant or minted. */
static int
audit_credits(struct request *req, long long micro, const char *reason,
    const char *from)
{
	struct json_object *details = json_object_new_object();

	json_object_object_add(details, "amount", credits(micro));
	json_object_object_add(details, "amount_micro",
	    json_object_new_int64(micro));
	json_object_object_add(details, "reason",
	    json_str(reason != NULL ? reason : ""));
	if (from != NULL)
		json_object_object_add(details, "from_tenant_id",
		    json_str(from));
	return api_audit(req, req->param, from == NULL ? "credits.add" :
	    "credits.transfer", "tenant", req->param, details);
}

void
api_tenants_credits(struct request *req)
{
	static const char *const fields[] = { "amount", "reason", NULL };
	struct worker	*w = req->w;
	struct json_object *body, *o;
	struct checks	 c = { NULL };
	const char	*reason, *from;
	long long	 micro, balance;
	bool		 present, mint;

	if (!api_tenant_target(req, req->param))
		return;
	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, fields);
	micro = check_amount(&c, body);
	reason = check_string(&c, body, "reason", 500, &present);
	if (check_done(req, &c) == -1)
		return;
	from = req->principal->tenant_id;
	mint = ledger_mints(from);
	if (ledger_may_give(from, req->param) != LEDGER_OK) {
		http_error(req, ERR_INSUFFICIENT_PERMISSIONS, "Only the root "
		    "tenant creates credits; a tenant gives a tenant below it "
		    "credits from its own balance.");
		return;
	}
	if (!api_begin(req))
		return;
	switch (ledger_give(app(w)->db, from, req->param, micro,
	    req->request_id, &balance)) {
	case LEDGER_OK:
		break;
	case LEDGER_SHORT:
		db_rollback(app(w)->db);
		short_of(req, from, micro);
		return;
	case LEDGER_GONE:
		db_rollback(app(w)->db);
		api_missing(req, "tenant");
		return;
	case LEDGER_NOT_BELOW:
	case LEDGER_DB:
	case LEDGER_RESULT__MAX:
		goto dbfail;
	}
	if (audit_credits(req, micro, reason, mint ? NULL : from) == -1 ||
	    db_commit(app(w)->db) == -1)
		goto dbfail;
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("credits"));
	json_object_object_add(o, "tenant_id", json_str(req->param));
	json_object_object_add(o, "added", credits(micro));
	json_object_object_add(o, "credits_balance", credits(balance));
	json_object_object_add(o, "from_tenant_id", mint ? NULL :
	    json_str(from));
	http_respond_json(req, 200, o);
	return;
dbfail:
	api_abort(req);
}

static struct json_object *
usage_row(const struct db_res *r, int i)
{
	struct json_object *o = json_object_new_object();
	const char	*key = db_value(r, i, UC_KEY);

	json_object_object_add(o, "id", json_str(db_value(r, i, UC_ID)));
	json_object_object_add(o, "object", json_str("usage"));
	json_object_object_add(o, "request_id",
	    json_str(db_value(r, i, UC_REQUEST)));
	json_object_object_add(o, "api_key_id", *key ? json_str(key) : NULL);
	json_object_object_add(o, "provider",
	    json_str(db_value(r, i, UC_PROVIDER)));
	json_object_object_add(o, "model", json_str(db_value(r, i, UC_MODEL)));
	json_object_object_add(o, "key_source",
	    json_str(db_value(r, i, UC_SOURCE)));
	json_object_object_add(o, "prompt_tokens",
	    json_object_new_int64(atoll(db_value(r, i, UC_PROMPT))));
	json_object_object_add(o, "completion_tokens",
	    json_object_new_int64(atoll(db_value(r, i, UC_COMPLETION))));
	json_object_object_add(o, "credits_charged",
	    credits(atoll(db_value(r, i, UC_CHARGED))));
	json_object_object_add(o, "status", json_str(db_value(r, i, UC_STATUS)));
	json_object_object_add(o, "created_at",
	    json_str(db_value(r, i, UC_CREATED)));
	return o;
}

/* Reads an optional ISO 8601 query parameter; false after answering 400. */
static bool
time_param(struct request *req, const char *name, char *out, size_t outsz,
    const char **param)
{
	time_t	 t;
	int	 rc = query_get(req->query, name, out, outsz);

	*param = NULL;
	if (rc == 0)
		return true;
	if (rc == -1 || iso8601_parse(out, &t) == -1) {
		http_error(req, ERR_BAD_REQUEST, "%s must be an ISO 8601 "
		    "timestamp such as 2030-01-01T00:00:00Z.", name);
		return false;
	}
	*param = out;
	return true;
}

/* The "totals" of a usage listing. */
static struct json_object *
totals_json(const struct usage_totals *t)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "requests",
	    json_object_new_int64(t->requests));
	json_object_object_add(o, "prompt_tokens",
	    json_object_new_int64(t->prompt_tokens));
	json_object_object_add(o, "completion_tokens",
	    json_object_new_int64(t->completion_tokens));
	json_object_object_add(o, "credits_charged", credits(t->charged));
	return o;
}

void
api_account_usage(struct request *req)
{
	const char	*tenant = req->principal->tenant_id;
	struct json_object *o, *data;
	struct usage_totals t;
	struct db_res	*res;
	const char	*since, *until;
	char		 from[64], to[64], cursor[32], next[40];
	int		 limit;

	if (!api_page_params_serial(req, &limit, cursor, sizeof(cursor)))
		return;
	if (!time_param(req, "from", from, sizeof(from), &since) ||
	    !time_param(req, "to", to, sizeof(to), &until))
		return;
	if ((res = usage_list(app(req->w)->db, tenant, since, until,
	    cursor[0] ? cursor : NULL, limit + 1)) == NULL) {
		api_db_failed(req);
		return;
	}
	data = api_page_rows(res, limit, UC_ID, usage_row, next, sizeof(next));
	db_res_free(res);
	if (usage_totals(app(req->w)->db, tenant, since, until, &t) == -1) {
		json_object_put(data);
		api_db_failed(req);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("list"));
	json_object_object_add(o, "data", data);
	json_object_object_add(o, "next_cursor", next[0] ? json_str(next) :
	    NULL);
	json_object_object_add(o, "totals", totals_json(&t));
	http_respond_json(req, 200, o);
}
