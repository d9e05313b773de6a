/*
 * keygate as the gate of other services behind the same web server: the
 * FastCGI authorizer (lighttpd's "mode" => "authorizer", Apache's
 * mod_authnz_fcgi) and GET /v1/auth/check for nginx's auth_request.  Both
 * take the same decision: the credential verified as for the API, the
 * request counted against the key's rate limit, then the scope of the
 * authorize rule with the longest prefix of the path; no rule, no entry.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/metrics.h"
#include "api/validate.h"
#include "core/auth.h"
#include "lib/buf.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/request.h"
#include "server/worker.h"

#define AUTHZ_PATH_MAX	2048	/* longest path decided on */

/*
 * The path of uri (query and fragment cut, percent escapes decoded) into
 * out.  false when it is not in normal form: not absolute, too long, a
 * NUL, a backslash, an empty, "." or ".." segment, which a web server
 * would resolve to another path than the one the rules were matched on.
 */
static bool
path_normal(const char *uri, char *out, size_t outsz)
{
	size_t	 n = 0, seg = 0;
	int	 hi, lo;
	char	 c;

	if (uri == NULL || uri[0] != '/')
		return false;
	for (; *uri != '\0' && *uri != '?' && *uri != '#'; uri++) {
		c = *uri;
		if (c == '%') {
			if ((hi = hex_digit_value(uri[1])) == -1 ||
			    (lo = hex_digit_value(uri[2])) == -1)
				return false;
			c = (char)(hi * 16 + lo);
			uri += 2;
		}
		if (c == '\0' || c == '\\' || n + 1 >= outsz)
			return false;
		if (c == '/') {
			/* The segment that ends here: "", "." or "..". */
			if (n > 0 && (n - seg == 0 ||
			    (n - seg == 1 && out[seg] == '.') ||
			    (n - seg == 2 && out[seg] == '.' &&
			    out[seg + 1] == '.')))
				return false;
			out[n++] = c;
			seg = n;
			continue;
		}
		out[n++] = c;
	}
	out[n] = '\0';
	/* The last segment may be empty ("/reports/"), not "." or "..". */
	return !((n - seg == 1 && out[seg] == '.') ||
	    (n - seg == 2 && out[seg] == '.' && out[seg + 1] == '.'));
}

/*
 * Decides whether the caller of req may make method on uri.  true when
 * admitted (req->principal set), false with the refusal in v.
 */
static bool
decide(struct request *req, const char *method, const char *uri,
    struct api_verdict *v)
{
	const struct config_authz_rule *rule;
	char	 path[AUTHZ_PATH_MAX];

	if (!path_normal(uri, path, sizeof(path))) {
		api_verdict_set(v, ERR_BAD_REQUEST, "The path is not in "
		    "normal form: no \".\" or \"..\" segments, no empty "
		    "segments, no NUL or backslash.");
		return false;
	}
	if (!api_admit(req, NULL, v))
		return false;
	if ((rule = config_authz_find(req->w->cfg, method, path)) == NULL) {
		api_verdict_set(v, ERR_INSUFFICIENT_PERMISSIONS, "No authorize "
		    "rule covers %s %.200s.", method, path);
		return false;
	}
	if (!auth_allows(req->principal, rule->scope)) {
		api_verdict_set(v, ERR_INSUFFICIENT_PERMISSIONS, "This key "
		    "lacks the scope %s, which %s %.200s needs.", rule->scope,
		    method, path);
		return false;
	}
	return true;
}

/* The principal's effective scopes, comma-separated, into b. */
static int
scopes_text(const struct principal *p, struct buf *b)
{
	size_t	 i;

	for (i = 0; i < p->nscopes; i++)
		if (buf_printf(b, "%s%s", i ? "," : "", p->scopes[i]) == -1)
			return -1;
	return buf_puts(b, "");
}

/*
 * Adds who the caller is as three headers: for a FastCGI authorizer the
 * Variable-KEYGATE_* the web server turns into the service's environment,
 * else X-Keygate-Key-Id and the others, for nginx's auth_request_set.
 */
static int
identity_headers(struct request *req, bool variables)
{
	const struct principal *p = req->principal;
	struct buf	 scopes = { 0 };
	int		 rc;

	if (scopes_text(p, &scopes) == -1) {
		buf_free(&scopes);
		return -1;
	}
	rc = http_header(req, variables ? "Variable-KEYGATE_KEY_ID" :
	    "X-Keygate-Key-Id", "%s", req->key_id) == -1 ||
	    http_header(req, variables ? "Variable-KEYGATE_TENANT_ID" :
	    "X-Keygate-Tenant-Id", "%s", p->tenant_id) == -1 ||
	    http_header(req, variables ? "Variable-KEYGATE_SCOPES" :
	    "X-Keygate-Scopes", "%s", scopes.data) == -1 ? -1 : 0;
	buf_free(&scopes);
	return rc;
}

/*
 * FCGI_ROLE=AUTHORIZER: the web server asks before it serves the request
 * itself.  A pass is 200 with the Variable-* headers, which the web server
 * hands to the protected application as KEYGATE_KEY_ID, KEYGATE_TENANT_ID
 * and KEYGATE_SCOPES; a refusal is our JSON error, which the web server
 * sends to the client (Apache with a Content-Type of its own).
 */
void
api_authorizer(struct request *req)
{
	struct api_verdict v;

	if (!decide(req, req->method, req->path, &v)) {
		metrics_authz(req->w, false);
		api_refuse(req, &v, 0);
		return;
	}
	metrics_authz(req->w, true);
	if (identity_headers(req, true) == -1) {
		http_error(req, ERR_INTERNAL, "out of memory");
		return;
	}
	/*
	 * Only the Variable-* and X-RateLimit-* headers: Apache adds an
	 * authorizer's headers to the answer it then serves, where our
	 * Content-Type would be wrong.
	 */
	http_respond_bare(req, 200);
}

/*
 * GET /v1/auth/check, for nginx's auth_request: the decision about
 * X-Original-Method on X-Original-URI, as a status without a body, since
 * nginx reads only the status (2xx, 401, 403; anything else is its 500).
 * A refusal other than 401 is therefore 403, its reason in X-Keygate-Error
 * (and Retry-After for a rate limit); a pass carries X-Keygate-Key-Id,
 * X-Keygate-Tenant-Id and X-Keygate-Scopes for auth_request_set.
 */
void
api_auth_check(struct request *req)
{
	struct api_verdict v;
	const char	*uri = request_param(req, "HTTP_X_ORIGINAL_URI");
	const char	*method = request_param(req, "HTTP_X_ORIGINAL_METHOD");
	int		 status;

	if (method == NULL || *method == '\0')
		method = "GET";
	if (uri == NULL || *uri == '\0') {
		api_verdict_set(&v, ERR_BAD_REQUEST, "No X-Original-URI.");
		status = 403;
	} else if (decide(req, method, uri, &v)) {
		metrics_authz(req->w, true);
		if (identity_headers(req, false) == -1) {
			http_respond(req, 500, "", 0);
			return;
		}
		http_respond(req, 200, "", 0);
		return;
	} else {
		status = http_errs[v.err < ERR__MAX ? v.err :
		    ERR_INTERNAL].status;
		if (v.err == ERR_DATABASE_UNAVAILABLE &&
		    http_header(req, "Retry-After", "2") == -1)
			log_error("http_header: adding Retry-After: out of "
			    "memory");
		if (status != 401 && status != 500 && status != 503)
			status = 403;
	}
	metrics_authz(req->w, false);
	if (http_header(req, "X-Keygate-Error", "%s", http_errs[v.err <
	    ERR__MAX ? v.err : ERR_INTERNAL].code) == -1)
		log_error("http_header: adding X-Keygate-Error: out of memory");
	http_respond(req, status, "", 0);
}
