#include "autoconfig.h"

/*
 * What a provider or the network refused, answered in the client's
 * terms (api/call.h): a provider's error keeps its status and words
 * where they are the client's business, the operator's are kept from
 * the tenant, and a failed transfer is a 502 or 504.
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/call.h"
#include "providers/providers.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"

/*
 * The error type a client of the OpenAI format expects for a status, when
 * the provider named none (Gemini, OpenRouter).
 */
static const char *
type_of_status(long status)
{
	switch (status) {
	case 400:
	case 404:
	case 413:
	case 422:
		return "invalid_request_error";
	case 401:
		return "authentication_error";
	case 402:
		return "billing_error";
	case 403:
		return "permission_error";
	case 429:
		return "rate_limit_error";
	default:
		return "upstream_error";
	}
}

/* The Retry-After a provider's 429 asked for, passed on in seconds. */
static void
pass_retry_after(struct request *req, const struct upstream_call *call)
{
	long	 secs = upstream_retry_seconds(call);
	size_t	 n = strlen(call->retry_after);
	int	 rc = 0;

	if (secs >= 0)
		rc = http_header(req, "Retry-After", "%ld", secs);
	/* An HTTP-date means the same to our client: as it came. */
	else if (n > 3 && strcmp(call->retry_after + n - 3, "GMT") == 0)
		rc = http_header(req, "Retry-After", "%s", call->retry_after);
	if (rc == -1)
		log_error("http_header: adding Retry-After: out of memory");
}

/*
 * Answers a provider's non-2xx reply in our shape.  A 4xx keeps its status,
 * message, and the provider's own error type and code where it gave them
 * (the generic ones otherwise); 3xx and 5xx are 502.  A 401 is the
 * provider refusing the provider key: its code says so, so that a client
 * does not take it for its own keygate key being refused.
 */
void
call_provider_error(struct call *c, long status, const struct buf *body,
    const struct upstream_call *call)
{
	struct request	*req = c->req;
	struct provider_error pe;

	provider_error_parse(body, status, &pe);
	/*
	 * On the operator's pool key the provider speaks of the operator's
	 * account (its credit, its limits): the tenant hears the status
	 * only, keygate's log the message, unless it is a refusal of the
	 * key, which may quote part of it.  The operator's own upstreams
	 * speak of the request only.
	 */
	if (c->key.pool) {
		if (status == 401 || status == 403)
			snprintf(pe.message, sizeof(pe.message), "the "
			    "operator's key was refused (%ld)", status);
		else if (c->key.upstream == NULL) {
			log_warn("%s: a pool call answered %ld: %s",
			    gateway_provider_name(&c->key), status, pe.message);
			snprintf(pe.message, sizeof(pe.message), "the request "
			    "failed (%ld)", status);
			pe.type[0] = pe.code[0] = '\0';
		}
	}
	if (status >= 400 && status < 500) {
		if (status == 429)
			pass_retry_after(req, call);
		http_error_as(req, (int)status, pe.type[0] != '\0' ? pe.type :
		    type_of_status(status), status == 401 ?
		    "invalid_provider_key" : pe.code[0] != '\0' ? pe.code :
		    status == 429 ? "rate_limit_exceeded" : "upstream_error",
		    "%s: %s", gateway_provider_name(&c->key), pe.message);
	} else if (status >= 300 && status < 400)
		http_error(req, ERR_UPSTREAM, "%s answered with a redirect, "
		    "which is not followed.", gateway_provider_name(&c->key));
	else {
		/* An overloaded provider (503, Anthropic's 529) may say when. */
		pass_retry_after(req, call);
		http_error(req, ERR_UPSTREAM, "%s failed: %s",
		    gateway_provider_name(&c->key), pe.message);
	}
}

void
call_transport_error(struct call *c, enum upstream_result r, const char *why)
{
	if (r == UPSTREAM_ABORTED && c->req->client_gone)
		http_abandoned(c->req);
	else if (r == UPSTREAM_TIMEOUT)
		http_error(c->req, ERR_UPSTREAM_TIMEOUT, "%s did not answer in "
		    "time.", gateway_provider_name(&c->key));
	else
		http_error(c->req, ERR_UPSTREAM, "%s could not be reached: %s",
		    gateway_provider_name(&c->key), why);
}
