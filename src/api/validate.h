#ifndef KEYGATE_API_VALIDATE_H
#define KEYGATE_API_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct json_object;
struct request;

/*
 * Collects what is wrong with a request body, one entry per field, for a
 * single 422 answer: {"field","message"} objects under "details".
 */
struct checks {
	struct json_object *details;	/* owned array, NULL = no error yet */
};

void	check_fail(struct checks *, const char *field, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Every member of body not named in allowed (NULL-terminated) is an error. */
void	check_known_fields(struct checks *, struct json_object *body,
	    const char *const *allowed);
/*
 * The member `field` when it is a string of 1..maxlen bytes (0 = any
 * length); NULL when absent (or JSON null, with *is_null set) or wrong
 * (an error is recorded).  *present says whether the member exists.
 */
const char *check_string(struct checks *, struct json_object *body,
	    const char *field, size_t maxlen, bool *present);
/* An integer member within [min, max]; false when absent or wrong. */
bool	check_int(struct checks *, struct json_object *body, const char *field,
	    long min, long max, long *out, bool *present);
/* A boolean member; false when absent or wrong. */
bool	check_bool(struct checks *, struct json_object *body,
	    const char *field, bool *out);
/* The member as an array of strings (borrowed); NULL when absent/wrong. */
struct json_object *check_string_array(struct checks *, struct json_object *,
	    const char *field, size_t maxitems, bool *present);
/*
 * Answers 422 with the details and returns -1 when anything failed;
 * otherwise 0.
 */
int	check_done(struct request *, struct checks *)
	    __attribute__((warn_unused_result));
/* Releases the details (after an early return). */
void	check_free(struct checks *);

/* True for a canonical UUID (8-4-4-4-12 hex digits). */
bool	uuid_valid(const char *);
/*
 * Parses an ISO 8601 / RFC 3339 timestamp ("2026-01-02T03:04:05Z",
 * fractions and offsets allowed).  0, or -1 when malformed.
 */
int	iso8601_parse(const char *, time_t *) __attribute__((warn_unused_result));
/* The value of a hexadecimal digit, or -1 when c is none. */
int	hex_digit_value(char c);
/*
 * Copies the percent-decoded value of query parameter name into out; 1
 * found, 0 absent, -1 malformed or too long.
 */
int	query_get(const char *query, const char *name, char *out, size_t outsz)
	    __attribute__((warn_unused_result));

/* True when every parameter of the query string is named name. */
bool	query_only(const char *query, const char *name);

#endif
