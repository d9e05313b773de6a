#include "autoconfig.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/validate.h"
#include "lib/buf.h"
#include "lib/json.h"
#include "server/http.h"

void
check_fail(struct checks *c, const char *field, const char *fmt, ...)
{
	struct json_object *d;
	struct buf	 msg = { 0 };
	va_list		 ap;
	int		 rc;

	va_start(ap, fmt);
	rc = buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	if (c->details == NULL)
		c->details = json_object_new_array();
	d = json_object_new_object();
	json_object_object_add(d, "field", json_object_new_string(field));
	json_object_object_add(d, "message",
	    json_object_new_string(rc == 0 && msg.data ? msg.data : "invalid"));
	json_object_array_add(c->details, d);
	buf_free(&msg);
}

void
check_known_fields(struct checks *c, struct json_object *body,
    const char *const *allowed)
{
	size_t	 i;
	bool	 ok;

	json_object_object_foreach(body, name, val) {
		(void)val;
		ok = false;
		for (i = 0; allowed[i] != NULL; i++)
			if (strcmp(allowed[i], name) == 0)
				ok = true;
		if (!ok)
			check_fail(c, name, "unknown field");
	}
}

const char *
check_string(struct checks *c, struct json_object *body, const char *field,
    size_t maxlen, bool *present)
{
	struct json_object *v;
	size_t	 n;

	*present = body != NULL && json_object_object_get_ex(body, field, &v);
	if (!*present || v == NULL)
		return NULL;
	if (!json_object_is_type(v, json_type_string)) {
		check_fail(c, field, "must be a string");
		return NULL;
	}
	n = (size_t)json_object_get_string_len(v);
	if (maxlen > 0 && n > maxlen) {
		check_fail(c, field, "must be at most %zu bytes", maxlen);
		return NULL;
	}
	if (memchr(json_object_get_string(v), '\0', n) != NULL) {
		check_fail(c, field, "must not contain NUL");
		return NULL;
	}
	return json_object_get_string(v);
}

bool
check_int(struct checks *c, struct json_object *body, const char *field,
    long min, long max, long *out, bool *present)
{
	struct json_object *v;
	int64_t	 n;

	*present = body != NULL && json_object_object_get_ex(body, field, &v);
	if (!*present || v == NULL)
		return false;
	if (!json_object_is_type(v, json_type_int)) {
		check_fail(c, field, "must be an integer");
		return false;
	}
	n = json_object_get_int64(v);
	if (n < min || n > max) {
		check_fail(c, field, "must be between %ld and %ld", min, max);
		return false;
	}
	*out = (long)n;
	return true;
}

bool
check_bool(struct checks *c, struct json_object *body, const char *field,
    bool *out)
{
	struct json_object *v;

	if (body == NULL || !json_object_object_get_ex(body, field, &v) ||
	    v == NULL)
		return false;
	if (!json_object_is_type(v, json_type_boolean)) {
		check_fail(c, field, "must be true or false");
		return false;
	}
	*out = json_object_get_boolean(v);
	return true;
}

struct json_object *
check_string_array(struct checks *c, struct json_object *body,
    const char *field, size_t maxitems, bool *present)
{
	struct json_object *v;
	size_t	 i, n;

	*present = body != NULL && json_object_object_get_ex(body, field, &v);
	if (!*present || v == NULL)
		return NULL;
	if (!json_object_is_type(v, json_type_array)) {
		check_fail(c, field, "must be an array of strings");
		return NULL;
	}
	n = json_object_array_length(v);
	if (n > maxitems) {
		check_fail(c, field, "must have at most %zu items", maxitems);
		return NULL;
	}
	for (i = 0; i < n; i++)
		if (!json_object_is_type(json_object_array_get_idx(v, i),
		    json_type_string)) {
			check_fail(c, field, "must be an array of strings");
			return NULL;
		}
	return v;
}

int
check_done(struct request *req, struct checks *c)
{
	if (c->details == NULL)
		return 0;
	http_error_details(req, ERR_VALIDATION, c->details,
	    "The request has invalid fields.");
	c->details = NULL;
	return -1;
}

void
check_free(struct checks *c)
{
	if (c->details != NULL)
		json_object_put(c->details);
	c->details = NULL;
}

bool
uuid_valid(const char *s)
{
	size_t	 i;

	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)s[i]))
			return false;
	}
	return s[36] == '\0';
}

static int
digits(const char **p, int n, int *out)
{
	int	 v = 0, i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int
iso8601_parse(const char *s, time_t *out)
{
	struct tm tm;
	int	 y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	time_t	 t;

	memset(&tm, 0, sizeof(tm));
	if (digits(&s, 4, &y) == -1 || *s++ != '-' ||
	    digits(&s, 2, &mo) == -1 || *s++ != '-' ||
	    digits(&s, 2, &d) == -1 || (*s != 'T' && *s != 't' && *s != ' '))
		return -1;
	s++;
	if (digits(&s, 2, &h) == -1 || *s++ != ':' ||
	    digits(&s, 2, &mi) == -1 || *s++ != ':' ||
	    digits(&s, 2, &sec) == -1)
		return -1;
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		while (isdigit((unsigned char)*s))
			s++;
	}
	if (*s == 'Z' || *s == 'z')
		s++;
	else if (*s == '+' || *s == '-') {
		sign = *s++ == '+' ? 1 : -1;
		if (digits(&s, 2, &oh) == -1 || *s++ != ':' ||
		    digits(&s, 2, &om) == -1)
			return -1;
	} else
		return -1;
	if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60 || oh > 23 || om > 59 || y < 1970)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != d)
		return -1;	/* 31 February and friends */
	*out = t - sign * (oh * 3600 + om * 60);
	return 0;
}

int
hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
query_get(const char *q, const char *name, char *out, size_t outsz)
{
	size_t	 nl = strlen(name), n;
	const char *p = q, *end;

	while (p != NULL && *p != '\0') {
		end = strchr(p, '&');
		if (end == NULL)
			end = p + strlen(p);
		if ((size_t)(end - p) >= nl && strncmp(p, name, nl) == 0 &&
		    (p[nl] == '=' || p + nl == end)) {
			p += nl + (p[nl] == '=');
			for (n = 0; p < end; p++) {
				int c = (unsigned char)*p, hi, lo;

				if (c == '%') {
					if (end - p < 3 ||
					    (hi = hex_digit_value(p[1])) < 0 ||
					    (lo = hex_digit_value(p[2])) < 0)
						return -1;
					c = hi * 16 + lo;
					p += 2;
				} else if (c == '+')
					c = ' ';
				if (c == 0 || n + 1 >= outsz)
					return -1;
				out[n++] = (char)c;
			}
			out[n] = '\0';
			return 1;
		}
		p = *end == '&' ? end + 1 : end;
	}
	return 0;
}

bool
query_only(const char *q, const char *name)
{
	size_t	 nl = strlen(name), kl;

	while (q != NULL && *q != '\0') {
		kl = strcspn(q, "=&");
		if (kl > 0 && (kl != nl || strncmp(q, name, nl) != 0))
			return false;
		q += strcspn(q, "&");
		if (*q == '&')
			q++;
	}
	return true;
}
