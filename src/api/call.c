#include "autoconfig.h"

/*
 * A gateway call's life (api/call.h): the credits held for it, the
 * provider's request made from the client's, the request performed, a
 * whole reply answered, and the hold settled or let go.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/call.h"
#include "api/metrics.h"
#include "core/auth.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "lib/json.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

/*
 * Turns the hold into the real cost (core/credits.c says of what) and
 * writes the usage row.  Once.
 */
/* What the provider told of the call's tokens. */
static void
told_of(const struct call *c, struct credits_told *t)
{
	t->told = c->pc.have_usage;
	t->prompt = c->pc.prompt_tokens;
	t->completion = c->pc.completion_tokens;
}

void
call_tokens(const struct call *c, long *prompt, long *completion)
{
	struct credits_told t;

	told_of(c, &t);
	credits_bill_tokens(&c->bill, &t, false, prompt, completion);
}

void
call_settle(struct call *c, const char *status)
{
	struct credits_told t;
	struct credits_usage u;
	struct holder	 who;
	long		 prompt, completion;

	if (!hold_taken(&c->hold))
		return;
	told_of(c, &t);
	credits_bill_tokens(&c->bill, &t, strcmp(status, "partial") == 0,
	    &prompt, &completion);
	memset(&u, 0, sizeof(u));
	u.tenant = c->req->principal->tenant_id;
	u.key_id = c->req->principal->key_id[0] ? c->req->principal->key_id :
	    NULL;
	u.request_id = c->req->request_id;
	u.provider = gateway_provider_name(&c->key);
	u.model = c->model;
	u.pool = c->key.pool;
	u.markup = c->bill.markup;
	u.prompt_tokens = prompt;
	u.completion_tokens = completion;
	u.status = status;
	leases_holder(c->req->w, &who);
	switch (hold_finish(&who, &c->hold, credits_bill_cost(&c->bill, prompt,
	    completion), &u, &c->bill.charged)) {
	case HOLD_RING_FULL:
		log_error("request %s: the usage rows waiting to be written "
		    "fill the queue; the call is not charged", u.request_id);
		break;
	case HOLD_UNCONFIRMED:
		log_error("request %s: its usage row is not written yet "
		    "(PostgreSQL?); it stays queued on this host",
		    u.request_id);
		break;
	case HOLD_DB:
		log_error("PostgreSQL: settling request %s: %s; the "
		    "reservation stays held", u.request_id,
		    db_errmsg(who.db));
		break;
	default:
		break;
	}
}

/* Lets the hold go: the call produced nothing. */
void
call_release(struct call *c)
{
	struct holder	 who;
	char		 resv[sizeof(c->hold.resv)];

	memcpy(resv, c->hold.resv, sizeof(resv));
	leases_holder(c->req->w, &who);
	if (hold_drop(&who, &c->hold) == HOLD_DB)
		log_error("PostgreSQL: releasing reservation %s: %s", resv,
		    db_errmsg(who.db));
}

struct json_object *
call_keygate_block(const struct call *c)
{
	const struct worker *w = c->req->w;
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "key_source",
	    json_object_new_string(c->key.pool ? "pool" : "user"));
	/* An operator upstream is the operator's too, but never marked up. */
	json_object_object_add(o, "pool_markup_applied",
	    c->key.pool && c->key.upstream == NULL ?
	    json_object_new_double(w->cfg->pool_markup) : NULL);
	json_object_object_add(o, "provider",
	    json_object_new_string(gateway_provider_name(&c->key)));
	json_object_object_add(o, "credits_charged",
	    credits_json(c->bill.charged));
	json_object_object_add(o, "request_id",
	    json_object_new_string(c->req->request_id));
	return o;
}

/*
 * The keygate block as X-Keygate-* headers, for clients that cannot read
 * a member of their own; credits_charged only when known (not on a stream,
 * whose headers go first).
 */
void
call_keygate_headers(struct call *c, bool charged)
{
	struct request	*req = c->req;
	char		 n[24];
	int		 rc;

	rc = http_header(req, "X-Keygate-Key-Source", "%s",
	    c->key.pool ? "pool" : "user");
	if (rc == 0)
		rc = http_header(req, "X-Keygate-Provider", "%s",
		    gateway_provider_name(&c->key));
	if (rc == 0 && c->key.pool && c->key.upstream == NULL)
		rc = http_header(req, "X-Keygate-Pool-Markup-Applied", "%g",
		    req->w->cfg->pool_markup);
	if (rc == 0 && charged) {
		credits_format(c->bill.charged, n, sizeof(n));
		rc = http_header(req, "X-Keygate-Credits-Charged", "%s", n);
	}
	if (rc == -1)
		log_error("http_header: adding the X-Keygate headers: out of "
		    "memory");
}

/*
 * Estimates the call (the prompt from the body's size, the output from
 * max_tokens or the default) at the model's price, with the pool's markup,
 * and holds it.  0, or -1 after answering 402 or the failure.
 */
int
call_reserve(struct call *c, struct json_object *body)
{
	struct request	*req = c->req;
	const struct config *cfg = req->w->cfg;
	struct credit_price price;
	struct holder	 who;
	struct json_object *msgs, *v;
	long		 max_out = cfg->default_max_tokens;
	long long	 est, available;
	size_t		 n = 0;
	bool		 pool = c->key.pool && c->key.upstream == NULL;
	int		 rc;

	rc = pool ? credits_pool_price(app(req->w)->db, c->key.model, c->model,
	    &price) : credits_price(app(req->w)->db, c->model, &price);
	if (rc == -1) {
		api_db_failed(req);
		return -1;
	}
	if (pool && rc == 0) {
		http_error(req, ERR_MODEL_NOT_AVAILABLE, "The operator's pool "
		    "serves only models with a price of their own, and "
		    "\"%.128s\" has none (the operator sets one with "
		    "keygatectl prices).", c->model);
		return -1;
	}
	if (json_get(body, c->embed ? "input" : "messages", &msgs))
		(void)json_text(msgs, &n);
	if (c->embed)
		max_out = 0;	/* an embedding is priced on its input */
	else if ((json_get(body, "max_completion_tokens", &v) ||
	    json_get(body, "max_tokens", &v)) &&
	    json_object_is_type(v, json_type_int) &&
	    json_object_get_int64(v) > 0)
		max_out = (long)json_object_get_int64(v);
	est = credits_bill_open(&c->bill, &price, pool ? cfg->pool_markup : 0,
	    n, max_out);
	c->pc.prompt_estimate = c->bill.prompt_estimate;
	leases_holder(req->w, &who);
	switch (hold_take(&who, &c->hold, req->principal->tenant_id,
	    req->principal->key_id[0] ? req->principal->key_id : NULL,
	    req->request_id, est, cfg->upstream_total_timeout + HOLD_MARGIN,
	    &available)) {
	case HOLD_OK:
		return 0;
	case HOLD_SHORT:
		break;
	default:
		api_db_failed(req);
		return -1;
	}
	api_insufficient_credits(req, est, available,
	    credits_affordable_tokens(&c->bill.price, c->bill.prompt_estimate,
	    c->bill.markup, available));
	return -1;
}

/*
 * The header `name: value` of the client's request into line when it sent
 * one of printable ASCII, at most 256 bytes (Anthropic's version and
 * betas, for a native call).
 */
static void
pass_header(struct request *req, const char *param, const char *name,
    struct buf *line)
{
	const char	*v = request_param(req, param);
	size_t		 i;

	if (v == NULL || *v == '\0')
		return;
	for (i = 0; v[i] != '\0'; i++)
		if (v[i] < 0x20 || v[i] > 0x7e || i >= 256)
			return;
	if (buf_printf(line, "%s: %s", name, v) == -1)
		buf_reset(line);
}

/* The headers of the call: the provider's, the client's, the key. */
static void
call_headers(struct call *c, struct upstream_call *call, struct buf *auth,
    struct buf passed[2])
{
	const struct provider_module *p = c->prov;
	size_t		 nh = 0, i, j, len;

	for (i = 0; i < 2 && c->pc.headers[i] != NULL; i++)
		call->headers[nh++] = c->pc.headers[i];
	for (i = 0; c->native && i < 2 && p->pass_header[i][0] != NULL; i++) {
		pass_header(c->req, p->pass_header[i][1], p->pass_header[i][0],
		    &passed[i]);
		if (passed[i].len == 0)
			continue;
		/* The client's replaces the provider's of that name. */
		len = strlen(p->pass_header[i][0]);
		for (j = 0; j < nh; j++)
			if (strncasecmp(call->headers[j], passed[i].data,
			    len + 1) == 0)
				break;
		call->headers[j] = passed[i].data;
		if (j == nh)
			nh++;
	}
	/* An upstream without a key gets no Authorization at all. */
	if (c->key.secret.len > 0 && buf_printf(auth, "%s%s", p->auth,
	    c->key.secret.data) == 0)
		call->headers[nh++] = auth->data;
	call->headers[nh++] = "Content-Type: application/json";
	call->headers[nh++] = c->stream ? "Accept: text/event-stream" :
	    "Accept: application/json";
}

/*
 * The provider's request for the call, from the client's (orig: a
 * Messages request as it came); 0, or -1 after answering.
 */
int
call_prepare(struct call *c, struct json_object *orig)
{
	struct request	*req = c->req;
	const struct config *cfg = req->w->cfg;
	char		 err[160];

	c->pc.op = c->embed ? PROVIDER_EMBED : c->native ? PROVIDER_NATIVE :
	    PROVIDER_CHAT;
	c->pc.stream = c->stream;
	c->pc.base = c->key.upstream != NULL ? c->key.upstream->url :
	    cfg->base_url[c->key.provider];
	c->pc.model = c->key.model;
	c->pc.request = c->native ? orig : c->body;
	c->pc.max_tokens = c->bill.max_out;
	c->pc.default_max_tokens = cfg->default_max_tokens;
	if (c->prov->state_size > 0 &&
	    (c->pc.state = calloc(1, c->prov->state_size)) == NULL) {
		http_error(req, ERR_INTERNAL, "out of memory");
		return -1;
	}
	switch (c->prov->prepare(&c->pc, err, sizeof(err))) {
	case PROVIDER_OK:
		return 0;
	case PROVIDER_REFUSED:
		http_error(req, ERR_BAD_REQUEST, "This request cannot be sent "
		    "to %s: %s.", gateway_provider_name(&c->key), err);
		break;
	case PROVIDER_BAD_MODEL:
		http_error(req, ERR_UNSUPPORTED_MODEL, "\"%.128s\" is not a %s "
		    "model name.", c->key.model, gateway_provider_name(&c->key));
		break;
	case PROVIDER_FAILED:
	case PROVIDER_RESULT__MAX:
		http_error(req, ERR_INTERNAL, "The request could not be "
		    "prepared.");
		break;
	}
	return -1;
}

/*
 * Asked by the upstream call: has the client gone?  Then the call ends at
 * once, whether it streams or not.
 */
static int
client_left(void *arg)
{
	struct call	*c = arg;

	if (!c->req->client_gone && request_abandoned(c->req))
		c->req->client_gone = true;
	return c->req->client_gone;
}

/* client_left() of many calls, asked together (in the provider loop). */
static void
clients_left(void *const *arg, size_t n, bool *gone)
{
	struct request	**reqs = calloc(n, sizeof(*reqs));
	bool		*left = calloc(n, sizeof(*left));
	size_t		*at = calloc(n, sizeof(*at)), i, m = 0;
	struct call	*c;

	if (reqs == NULL || left == NULL || at == NULL) {
		for (i = 0; i < n; i++)
			gone[i] = client_left(arg[i]) != 0;
		goto out;
	}
	for (i = 0; i < n; i++) {
		c = arg[i];
		gone[i] = c->req->client_gone;
		if (!gone[i]) {
			reqs[m] = c->req;
			at[m++] = i;
		}
	}
	request_abandoned_many(reqs, m, left);
	for (i = 0; i < m; i++)
		if (left[i]) {
			reqs[i]->client_gone = true;
			gone[at[i]] = true;
		}
out:
	free(reqs);
	free(left);
	free(at);
}

/* Settles the call and answers reply (taken) with the keygate block. */
static void
answer_whole(struct call *c, struct json_object *reply)
{
	call_settle(c, "ok");
	json_object_object_add(reply, "keygate", call_keygate_block(c));
	call_keygate_headers(c, true);
	http_respond_json(c->req, 200, reply);
}

static void
respond_whole(struct call *c, struct upstream_call *call)
{
	struct buf	 reply = { 0 };
	struct json_object *o;
	enum json_parse_error why;
	enum upstream_result r;
	char		 err[160];
	long		 status;

	r = upstream_perform(call, &status, &reply, err, sizeof(err));
	/*
	 * The client left while the provider worked on what it was sent:
	 * the provider bills the prompt at least, and so is the tenant (what
	 * it would have answered is not known).
	 */
	if (r == UPSTREAM_ABORTED && c->req->client_gone && call->sent)
		call_settle(c, "partial");
	if (r != UPSTREAM_OK)
		call_transport_error(c, r, err);
	else if (status < 200 || status >= 300)
		call_provider_error(c, status, &reply, call);
	else if ((o = json_parse(reply.data ? reply.data : "", reply.len, &why,
	    err, sizeof(err))) == NULL ||
	    !json_object_is_type(o, json_type_object)) {
		if (o != NULL)
			json_object_put(o);
		http_error(c->req, ERR_UPSTREAM, "%s sent a reply that is not "
		    "a JSON object.", gateway_provider_name(&c->key));
	} else {
		struct json_object *t = c->prov->reply(&c->pc, o, err,
		    sizeof(err));

		json_object_put(o);
		if (t == NULL)
			http_error(c->req, ERR_UPSTREAM, "%s.", err);
		else {
			if (c->messages && !c->native) {
				o = messages_from_chat(t);
				json_object_put(t);
				t = o;
			}
			answer_whole(c, t);
		}
	}
	/* Any answer but the one above charged nothing. */
	call_release(c);
	buf_free(&reply);
}

/* Calls the provider and answers. */
void
call_perform(struct call *c)
{
	struct worker	*w = c->req->w;
	struct upstream_call call;
	struct buf	 auth = { 0 }, passed[2] = { { 0 }, { 0 } };
	double		 began;

	memset(&call, 0, sizeof(call));
	call.via = app(w)->upstream;
	call.method = "POST";
	call.url = c->pc.url.data;
	call_headers(c, &call, &auth, passed);
	call.body = c->pc.body.data;
	call.body_len = c->pc.body.len;
	call.connect_timeout = w->cfg->upstream_connect_timeout;
	call.total_timeout = w->cfg->upstream_total_timeout;
	call.idle_timeout = w->cfg->upstream_idle_timeout;
	call.max_response = MAX_REPLY;
	call.gone = client_left;
	call.gone_many = clients_left;
	call.gone_arg = c;
	request_watch_client(c->req);
	metrics_call_begin(w, c->stream);
	began = clock_mono();
	if (c->stream)
		call_respond_stream(c, &call);
	else
		respond_whole(c, &call);
	metrics_call_end(w, c->key.upstream != NULL ? PROVIDER__MAX :
	    (unsigned)c->key.provider, c->stream,
	    metrics_outcome_of(c->req->status), clock_mono() - began);
	buf_free_secret(&auth);
	buf_free(&passed[0]);
	buf_free(&passed[1]);
}

void
call_end(struct call *c)
{
	/* A stream that went out is paid for; anything else is released. */
	if (c->started)
		call_settle(c, "partial");
	else
		call_release(c);
	gateway_key_free(&c->key);
	provider_call_free(&c->pc);
	provider_stream_free(&c->ps);
	buf_free(&c->errbody);
	if (c->held != NULL)
		json_object_put(c->held);
	if (c->shape != NULL)
		json_object_put(c->shape);
}
