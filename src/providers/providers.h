#ifndef KEYGATE_PROVIDERS_PROVIDERS_H
#define KEYGATE_PROVIDERS_PROVIDERS_H

#include <stddef.h>

#include "lib/buf.h"
#include "providers/provider.h"

enum validate_result {
	VALIDATE_OK,
	VALIDATE_REJECTED,	/* the provider said no: reason says why */
	VALIDATE_UNREACHABLE,	/* no usable answer: timeout, 5xx, network */
	VALIDATE_RESULT__MAX
};

/*
 * Tries key against the provider's cheapest authenticated endpoint (its
 * check_path: the model list; OpenRouter's key endpoint) under base, within
 * the timeouts (s).  The key travels in a header, never in a URL.  reason
 * gets the provider's own message on a rejection, or what went wrong
 * otherwise.
 */
enum validate_result provider_validate_key(enum provider, const char *base,
		    const char *key, long connect_timeout, long timeout,
		    char *reason, size_t reasonsz);
/*
 * The provider's own message from an error body, else "HTTP <status>".
 * OpenAI, Gemini and OpenRouter use {"error":{"message"}}, Anthropic
 * {"type":"error","error":{"message"}}: the same path.
 */
void		 provider_error_message(const struct buf *body, long status,
		    char *out, size_t outsz);

/* What a provider's error body says about itself. */
struct provider_error {
	char	 message[512];	/* its message, else "HTTP <status>" */
	char	 type[64];	/* error.type (OpenAI, Anthropic), "" = none */
	char	 code[64];	/* error.code when a string (OpenAI), else
				   error.status (Gemini), "" = none */
};

/*
 * Reads an error body.  A type or code is kept only when it is a word of
 * [A-Za-z0-9_.-], at most 63 bytes: it goes to clients as it is.
 */
void		 provider_error_parse(const struct buf *body, long status,
		    struct provider_error *);
/* Copies s to out when it is such a word; out is left alone otherwise. */
void		 provider_error_word(const char *s, char *out, size_t outsz);

struct json_object;

/*
 * The OpenAI shapes every translation produces (providers/shape.c).
 * chat_chunk() makes a chat.completion.chunk with one choice holding delta
 * (taken; NULL = no choice, for the usage chunk) and finish (NULL = null).
 */
struct json_object *chat_chunk(const char *id, const char *model,
		    long created, struct json_object *delta, const char *finish);
/* As chat_chunk(), for the choice of that index. */
struct json_object *chat_chunk_at(const char *id, const char *model,
		    long created, int index, struct json_object *delta,
		    const char *finish);
/*
 * Appends items (taken) to the last turn of turns when it has role, under
 * member ("content" for Anthropic, "parts" for Gemini), else starts a new
 * turn: both providers want alternating roles.
 */
void		 chat_add_turn(struct json_object *turns, const char *role,
		    const char *member, struct json_object *items);
/*
 * A token count a provider reported under key in u: 0 when absent, and
 * within 0..USAGE_COUNT_MAX whatever it says, so that sums of a few of them
 * cannot overflow.  Billing bounds what it charges separately.
 */
#define USAGE_COUNT_MAX	2147483647L
long		 usage_count(struct json_object *u, const char *key);
/*
 * A tool's declaration in another provider's words: its name and
 * description as they are, its schema (fn's member from) as member to, or
 * {"type":"object"} when fn has none and empty_schema is set.  NULL when
 * fn has no name.
 */
struct json_object *chat_tool_decl(struct json_object *fn, const char *from,
		    const char *to, bool empty_schema);
/*
 * An OpenAI tool call: {id, type "function", function {name, arguments}},
 * the arguments input's JSON text ({} when input is NULL).
 */
struct json_object *chat_tool_call(const char *id, const char *name,
		    struct json_object *input);
/* {"prompt_tokens","completion_tokens","total_tokens"}. */
struct json_object *chat_usage(long prompt, long completion);
/* What a request's response_format asks for. */
enum chat_format {
	CHAT_FORMAT_TEXT,	/* none, or "text" */
	CHAT_FORMAT_JSON,	/* json_object: any JSON object */
	CHAT_FORMAT_SCHEMA,	/* json_schema: *schema says which */
	CHAT_FORMAT__MAX
};
/*
 * Reads response_format: an enum chat_format, with *schema (borrowed) the
 * JSON schema for CHAT_FORMAT_SCHEMA; -1 with err set (a 400 for the
 * client) when it is none of them.
 */
int		 chat_response_format(struct json_object *req,
		    struct json_object **schema, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/*
 * OpenAI's "stop" (a string or an array of them) as a new array, the form
 * both Anthropic and Gemini want.
 */
struct json_object *chat_stop_list(struct json_object *stop);

#endif
