#include "autoconfig.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/json.h"

/* Deep enough for any chat request, shallow enough to bound the stack. */
#define JSON_MAX_DEPTH 64

/*
 * Tokeners kept for the next parse, by any thread.  A new one allocates its
 * stack of JSON_MAX_DEPTH levels, 2.5 KiB: a block big enough that malloc
 * first sweeps its lists of small free blocks, and a stream parses every
 * chunk.  One is kept reset, its scratch buffer wiped, unless that buffer
 * grew beyond TOKENER_KEPT_BUF (a long string was read).
 */
#define TOKENERS_KEPT		16
#define TOKENER_KEPT_BUF	4096

static pthread_mutex_t	 tokeners_mu = PTHREAD_MUTEX_INITIALIZER;
static struct json_tokener *tokeners[TOKENERS_KEPT];
static int		 ntokeners;

/* A tokener ready for a text; NULL = out of memory. */
static struct json_tokener *
tokener_take(void)
{
	struct json_tokener *tok = NULL;

	pthread_mutex_lock(&tokeners_mu);
	if (ntokeners > 0)
		tok = tokeners[--ntokeners];
	pthread_mutex_unlock(&tokeners_mu);
	if (tok == NULL && (tok = json_tokener_new_ex(JSON_MAX_DEPTH)) != NULL)
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
		    JSON_TOKENER_VALIDATE_UTF8);
	return tok;
}

/* After a parse, whatever its outcome. */
static void
tokener_give(struct json_tokener *tok)
{
	/* What a failed parse left on its stack goes. */
	json_tokener_reset(tok);
	/* The scratch buffer held the last string read. */
	if (tok->pb != NULL && tok->pb->buf != NULL)
		explicit_bzero(tok->pb->buf, (size_t)tok->pb->size);
	if (tok->pb == NULL || tok->pb->size <= TOKENER_KEPT_BUF) {
		pthread_mutex_lock(&tokeners_mu);
		if (ntokeners < TOKENERS_KEPT) {
			tokeners[ntokeners++] = tok;
			tok = NULL;
		}
		pthread_mutex_unlock(&tokeners_mu);
	}
	if (tok != NULL)
		json_tokener_free(tok);
}

int
json_utf8_valid(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t	 i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		unsigned int cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			len = 2; cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3; cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4; cp = c & 0x07;
		} else
			return 0;
		if (n - i < len)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

/*
 * json-c accepts a few things RFC 8259 does not: single-quoted strings,
 * NaN and Infinity.  Outside strings, the only letters JSON has are the
 * words true, false and null and a number's exponent.
 */
static int
rfc8259_words_only(const char *p, size_t n)
{
	size_t	 i = 0, start;
	bool	 in_str = false;

	while (i < n) {
		char c = p[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			i++;
			continue;
		}
		if (c == '"') {
			in_str = true;
			i++;
			continue;
		}
		if (c == '\'')
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
			i++;
			continue;
		}
		start = i;
		while (i < n && ((p[i] >= 'a' && p[i] <= 'z') ||
		    (p[i] >= 'A' && p[i] <= 'Z')))
			i++;
		if ((i - start == 4 && (memcmp(p + start, "true", 4) == 0 ||
		    memcmp(p + start, "null", 4) == 0)) ||
		    (i - start == 5 && memcmp(p + start, "false", 5) == 0))
			continue;
		/* An exponent: one e or E right after a digit. */
		if (i - start == 1 && (p[start] == 'e' || p[start] == 'E') &&
		    start > 0 && p[start - 1] >= '0' && p[start - 1] <= '9')
			continue;
		return 0;
	}
	return 1;
}

struct json_object *
json_parse(const char *text, size_t len, enum json_parse_error *why,
    char *err, size_t errsz)
{
	struct json_tokener	*tok;
	struct json_object	*obj = NULL;
	enum json_tokener_error	 jerr;
	size_t			 end;

	*why = JSON_PARSE_OK;
	if (!json_utf8_valid(text, len)) {
		*why = JSON_PARSE_UTF8;
		snprintf(err, errsz, "request body is not valid UTF-8");
		return NULL;
	}
	if (!rfc8259_words_only(text, len)) {
		*why = JSON_PARSE_SYNTAX;
		snprintf(err, errsz, "request body is not valid JSON");
		return NULL;
	}
	if (len > (size_t)INT32_MAX || (tok = tokener_take()) == NULL) {
		*why = JSON_PARSE_SYNTAX;
		snprintf(err, errsz, "request body could not be parsed");
		return NULL;
	}
	obj = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	/*
	 * A number or literal that ends the text ("true", "42") leaves the
	 * tokener waiting for more: the end of the text ends it.
	 */
	if (jerr == json_tokener_continue && end == len) {
		obj = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
	}
	if (obj == NULL || jerr != json_tokener_success || end != len) {
		if (jerr == json_tokener_success && end == len) {
			*why = JSON_PARSE_SYNTAX;	/* json-c reads null as NULL */
			snprintf(err, errsz, "request body is null, not a "
			    "JSON object");
		} else if (jerr == json_tokener_error_depth) {
			*why = JSON_PARSE_DEPTH;
			snprintf(err, errsz, "request body is nested too deeply");
		} else {
			*why = JSON_PARSE_SYNTAX;
			snprintf(err, errsz, "request body is not valid JSON: "
			    "%s at offset %zu", jerr == json_tokener_continue ?
			    "unexpected end of input" :
			    json_tokener_error_desc(jerr), end);
		}
		if (obj != NULL)
			json_object_put(obj);
		obj = NULL;
	}
	tokener_give(tok);
	return obj;
}

/* True when o or anything below it is a number that is not finite. */
static bool
has_infinite(struct json_object *o)
{
	size_t	 i, n;

	switch (json_object_get_type(o)) {
	case json_type_double:
		return !isfinite(json_object_get_double(o));
	case json_type_array:
		n = json_object_array_length(o);
		for (i = 0; i < n; i++)
			if (has_infinite(json_object_array_get_idx(o, i)))
				return true;
		return false;
	case json_type_object: {
		json_object_object_foreach(o, name, member) {
			(void)name;
			if (has_infinite(member))
				return true;
		}
		return false;
	}
	case json_type_null:
	case json_type_boolean:
	case json_type_int:
	case json_type_string:
		break;
	}
	return false;
}

/*
 * True when the text holds a NUL: as a byte, or escaped in a string.
 * Member names are checked here, in the text, because json-c keeps them
 * as C strings, already cut at the NUL.
 */
static bool
has_nul(const char *p, size_t n)
{
	size_t	 i;
	bool	 in_str = false;

	for (i = 0; i < n; i++) {
		if (p[i] == '\0')
			return true;
		if (!in_str) {
			in_str = p[i] == '"';
			continue;
		}
		if (p[i] == '"')
			in_str = false;
		else if (p[i] == '\\') {
			if (i + 5 < n && p[i + 1] == 'u' &&
			    memcmp(p + i + 2, "0000", 4) == 0)
				return true;
			i++;
		}
	}
	return false;
}

int
json_values_portable(const char *text, size_t len, struct json_object *o,
    char *err, size_t errsz)
{
	if (has_infinite(o)) {
		snprintf(err, errsz, "request body holds a number beyond the "
		    "range of a double");
		return -1;
	}
	if (has_nul(text, len)) {
		snprintf(err, errsz, "request body holds a NUL character "
		    "(\\u0000)");
		return -1;
	}
	return 0;
}

void
json_wipe(struct json_object *o)
{
	union { const char *ro; char *rw; } str;
	size_t	 i, n;

	switch (json_object_get_type(o)) {
	case json_type_string:
		/* json-c hands out its own buffer, inline or allocated. */
		str.ro = json_object_get_string(o);
		explicit_bzero(str.rw, (size_t)json_object_get_string_len(o));
		break;
	case json_type_array:
		n = json_object_array_length(o);
		for (i = 0; i < n; i++)
			json_wipe(json_object_array_get_idx(o, i));
		break;
	case json_type_object: {
		json_object_object_foreach(o, name, member) {
			(void)name;
			json_wipe(member);
		}
		break;
	}
	case json_type_null:
	case json_type_boolean:
	case json_type_double:
	case json_type_int:
		break;
	}
}

const char *
json_text(struct json_object *o, size_t *len)
{
	return json_object_to_json_string_length(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

bool
json_get(struct json_object *o, const char *k, struct json_object **v)
{
	return o != NULL && json_object_object_get_ex(o, k, v) && *v != NULL;
}

const char *
json_get_str(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_get(o, k, &v) && json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : NULL;
}

struct json_object *
json_str(const char *s)
{
	return json_object_new_string(s);
}

struct json_object *
json_decimal(double value, const char *text)
{
	return json_object_new_double_s(value, text);
}
