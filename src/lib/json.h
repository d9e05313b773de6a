#ifndef KEYGATE_LIB_JSON_H
#define KEYGATE_LIB_JSON_H

#include <stdbool.h>
#include <stddef.h>

/*
 * json-c, and the few helpers keygate needs on top of it.  Ownership follows
 * json-c: json_object_object_get_ex() borrows, json_object_object_add()
 * steals, json_object_put() releases.
 */
#include <json-c/json.h>

enum json_parse_error {
	JSON_PARSE_OK,
	JSON_PARSE_SYNTAX,	/* not JSON */
	JSON_PARSE_UTF8,	/* not valid UTF-8 */
	JSON_PARSE_DEPTH,	/* nested deeper than we accept */
	JSON_PARSE__MAX
};

/*
 * Parses a whole document strictly (no trailing bytes, valid UTF-8).
 * Returns a new object the caller puts, or NULL with *why set and a short
 * description in err.
 */
struct json_object *json_parse(const char *, size_t, enum json_parse_error *why,
		    char *err, size_t errsz) __attribute__((warn_unused_result));
/* True when the n bytes are valid UTF-8 (no overlongs, no surrogates). */
int		 json_utf8_valid(const char *, size_t);
/* Member k of o when present and not null (borrowed into *v). */
bool		 json_get(struct json_object *o, const char *k,
		    struct json_object **v);
/* Member k of o when it is a string (borrowed), else NULL. */
const char	*json_get_str(struct json_object *o, const char *k);
/* A new string object: json_object_new_string, shorter. */
struct json_object *json_str(const char *);
/*
 * A new number object written exactly as text ("0.022"), not as the
 * double's 17 digits; value is what readers of the object get.
 */
struct json_object *json_decimal(double value, const char *text);
/*
 * What a request body may not hold even as valid JSON, because it would
 * not survive the way on: a number beyond a double's range (1e309 would
 * be re-written as the non-JSON token Infinity) and a NUL character in a
 * string or a member name (\u0000, which C strings cut short).  o is the
 * body parsed from text.  0, or -1 with the reason in err.
 */
int		 json_values_portable(const char *text, size_t len,
		    struct json_object *o, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/*
 * Overwrites every string in o and below it with zeros, before o is put:
 * a body that carried an API key or a provider key leaves none behind in
 * freed memory.  NULL is accepted; o is unusable after.
 */
void		 json_wipe(struct json_object *o);
/* The compact text of an object; borrowed from the object. */
const char	*json_text(struct json_object *, size_t *len);

#endif
