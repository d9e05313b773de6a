/*
 * GET /v1/account and POST /v1/tenants/{id}/credits: a tenant's credits.
 * Amounts are credits (decimal) on the wire and micro-credits inside.
 */
#include "autoconfig.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/validate.h"
#include "core/auth.h"
#include "core/credits.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/http.h"
#include "server/request.h"
#include "server/worker.h"

static struct json_object *
credits(long long micro)
{
	return json_object_new_double((double)micro / CREDITS_MICRO);
}

void
api_account(struct request *req)
{
	const char	*p[1] = { req->principal->tenant_id };
	struct json_object *o;
	struct db_res	*res;

	if ((res = db_query(req->w->db, STMT_ACCOUNT, 1, p)) == NULL) {
		api_db_failed(req);
		return;
	}
	if (db_rows(res) != 1) {
		db_res_free(res);
		http_error(req, ERR_NOT_FOUND, "No such tenant.");
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("account"));
	json_object_object_add(o, "tenant_id",
	    json_str(req->principal->tenant_id));
	json_object_object_add(o, "credits_balance",
	    credits(atoll(db_value(res, 0, 0))));
	json_object_object_add(o, "credits_reserved",
	    credits(atoll(db_value(res, 0, 1))));
	json_object_object_add(o, "active_keys",
	    json_object_new_int64(atoll(db_value(res, 0, 2))));
	json_object_object_add(o, "total_keys",
	    json_object_new_int64(atoll(db_value(res, 0, 3))));
	db_res_free(res);
	http_respond_json(req, 200, o);
}

void
api_tenants_credits(struct request *req)
{
	static const char *const fields[] = { "amount", "reason", NULL };
	struct worker	*w = req->w;
	struct json_object *body, *v, *details, *o;
	struct checks	 c = { NULL };
	struct db_res	*res;
	const char	*reason, *p[2];
	char		 amt[32];
	long long	 micro = 0, balance;
	bool		 present, answered;
	double		 d;

	if (!uuid_valid(req->param) ||
	    !api_tenant_reachable(req, req->param, &answered)) {
		if (!answered)
			http_error(req, ERR_NOT_FOUND, "No tenant with id %s.",
			    req->param);
		return;
	}
	if (!api_body_object(req, &body))
		return;
	if (body != NULL)
		check_known_fields(&c, body, fields);
	if (!json_get(body, "amount", &v) ||
	    (!json_object_is_type(v, json_type_int) &&
	    !json_object_is_type(v, json_type_double)))
		check_fail(&c, "amount", "required: a number of credits");
	else {
		d = json_object_get_double(v);
		/* Whole micro-credits, and at most a billion credits. */
		if (!(d > 0 && d <= 1e9) ||
		    fabs(d * CREDITS_MICRO - llround(d * CREDITS_MICRO)) > 1e-3)
			check_fail(&c, "amount", "must be more than 0 and at "
			    "most 1000000000, in steps of 0.000001");
		else
			micro = llround(d * CREDITS_MICRO);
	}
	reason = check_string(&c, body, "reason", 500, &present);
	if (check_done(req, &c) == -1)
		return;
	snprintf(amt, sizeof(amt), "%lld", micro);
	p[0] = req->param;
	p[1] = amt;
	if (db_begin(w->db) == -1) {
		api_db_failed(req);
		return;
	}
	if ((res = db_query(w->db, STMT_CREDITS_ADD, 2, p)) == NULL)
		goto dbfail;
	balance = atoll(db_value(res, 0, 0));
	db_res_free(res);
	details = json_object_new_object();
	json_object_object_add(details, "amount", credits(micro));
	json_object_object_add(details, "amount_micro",
	    json_object_new_int64(micro));
	json_object_object_add(details, "reason",
	    json_str(reason != NULL ? reason : ""));
	if (api_audit(req, req->param, "credits.add", "tenant", req->param,
	    details) == -1 || db_commit(w->db) == -1)
		goto dbfail;
	o = json_object_new_object();
	json_object_object_add(o, "object", json_str("credits"));
	json_object_object_add(o, "tenant_id", json_str(req->param));
	json_object_object_add(o, "added", credits(micro));
	json_object_object_add(o, "credits_balance", credits(balance));
	http_respond_json(req, 200, o);
	return;
dbfail:
	db_rollback(w->db);
	api_db_failed(req);
}
