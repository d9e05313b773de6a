#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "lib/upstream.h"

struct sink {
	struct buf	*body;
	size_t		 max;
	int		 too_large;
};

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
	struct sink	*s = arg;
	size_t		 len = size * n;

	if (s->body->len + len > s->max) {
		s->too_large = 1;
		return 0;	/* makes curl stop with CURLE_WRITE_ERROR */
	}
	if (buf_append(s->body, p, len) == -1)
		return 0;
	return len;
}

int
upstream_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

enum upstream_result
upstream_perform(const struct upstream_call *c, long *status, struct buf *body,
    char *err, size_t errsz)
{
	struct curl_slist *hdrs = NULL, *tmp;
	struct sink	 sink = { body, c->max_response, 0 };
	CURL		*h;
	CURLcode	 rc;
	enum upstream_result res;
	int		 i;

	*status = 0;
	buf_reset(body);
	if ((h = curl_easy_init()) == NULL) {
		snprintf(err, errsz, "out of memory");
		return UPSTREAM_UNREACHABLE;
	}
	for (i = 0; i < UPSTREAM_MAX_HEADERS && c->headers[i] != NULL; i++) {
		if ((tmp = curl_slist_append(hdrs, c->headers[i])) == NULL)
			break;
		hdrs = tmp;
	}
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, c->total_timeout);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
	if (c->body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)c->body_len);
	}
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
		res = UPSTREAM_OK;
	} else if (sink.too_large) {
		snprintf(err, errsz, "the reply is larger than %zu bytes",
		    c->max_response);
		res = UPSTREAM_TOO_LARGE;
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		snprintf(err, errsz, "no answer within the timeout");
		res = UPSTREAM_TIMEOUT;
	} else {
		snprintf(err, errsz, "%s", curl_easy_strerror(rc));
		res = UPSTREAM_UNREACHABLE;
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return res;
}
