#ifndef KEYGATE_PROVIDERS_PROVIDERS_H
#define KEYGATE_PROVIDERS_PROVIDERS_H

#include <stddef.h>

#include "core/vault.h"
#include "lib/buf.h"

struct config;

enum validate_result {
	VALIDATE_OK,
	VALIDATE_REJECTED,	/* the provider said no: reason says why */
	VALIDATE_UNREACHABLE,	/* no usable answer: timeout, 5xx, network */
	VALIDATE_RESULT__MAX
};

/*
 * Tries key against the provider's cheapest authenticated endpoint (the
 * model list; OpenRouter's key endpoint) at the configured base URL.  The
 * key travels in a header, never in a URL.  reason gets the provider's own
 * message on a rejection, or what went wrong otherwise.
 */
enum validate_result provider_validate_key(const struct config *,
		    enum provider, const char *key, char *reason,
		    size_t reasonsz);

/* The configured base URL of a provider. */
const char	*provider_base_url(const struct config *, enum provider);
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

/*
 * An OpenAI-format call (OpenAI, OpenRouter, an operator upstream) to the
 * API at base: the URL, the auth header (left empty when key is NULL or
 * "") and the body to send, from the client's request (borrowed).  model
 * replaces the client's; a stream always asks for usage.  0, or -1.
 */
int		 openai_prepare(const char *base, const char *model,
		    const char *key, struct json_object *request,
		    struct buf *url, struct buf *auth, struct buf *body)
		    __attribute__((warn_unused_result));

/* As openai_prepare(), for an embeddings call (POST <base>/embeddings). */
int		 openai_prepare_embeddings(const char *base, const char *model,
		    const char *key, struct json_object *request,
		    struct buf *url, struct buf *auth, struct buf *body)
		    __attribute__((warn_unused_result));

#endif
