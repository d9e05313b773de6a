#ifndef KEYGATE_PROVIDERS_GEMINI_H
#define KEYGATE_PROVIDERS_GEMINI_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/*
 * The OpenAI chat request req as a Gemini generateContent request: system
 * turns become systemInstruction, assistant turns role "model", tool calls
 * functionCall parts, tool results functionResponse parts (named by the
 * call they answer), limits generationConfig.  0 with *out set, or -1 with
 * the reason in err (a 400 for the client).
 */
int		 gemini_request(struct json_object *req,
		    struct json_object **out, char *err, size_t errsz)
		    __attribute__((warn_unused_result));

/* The most choices (n, Gemini's candidateCount) a request may ask for. */
#define GEMINI_MAX_CHOICES 8

/*
 * The choices a request asks for: its n, 1 when it sets none.  Only
 * meaningful after gemini_request() accepted req.
 */
int		 gemini_choices(struct json_object *req);

/* What a translation remembers of one choice (one candidate). */
struct gemini_choice {
	bool	 started;	/* the role chunk went out */
	bool	 saw_call;	/* a functionCall was seen: STOP means tools */
	bool	 finished;	/* its finish reason arrived */
	int	 ncalls;
};

/* What a reply or stream translation remembers. */
struct gemini_state {
	char	 id[64];
	char	 model[128];
	long	 created;
	int	 n;		/* choices expected, 1 to GEMINI_MAX_CHOICES */
	struct gemini_choice choice[GEMINI_MAX_CHOICES];
	bool	 finished;	/* every choice has its finish reason */
	long	 prompt_tokens;
	long	 completion_tokens;
};

/*
 * A generateContent reply as a chat.completion object (new), one choice per
 * candidate, indexed as Gemini numbers them; NULL with err set when the
 * reply is malformed or a candidate ends in a way that is an error
 * (MALFORMED_FUNCTION_CALL and the like), not a finish.
 */
struct json_object *gemini_response(struct json_object *reply,
		    const char *model, char *err, size_t errsz);
/*
 * One streamed GenerateContentResponse as OpenAI chunks, appended to out
 * (an array the caller owns); each candidate's pieces go to the choice of
 * its index, below s->n.  -1 with err set for a mid-stream error.
 */
int		 gemini_stream_event(struct gemini_state *, struct json_object *ev,
		    struct json_object *out, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/* The usage chunk at the end of a stream (new). */
struct json_object *gemini_usage_chunk(const struct gemini_state *);
/* The state for a stream of model with n choices (1 to the maximum). */
void		 gemini_state_init(struct gemini_state *, const char *model,
		    int n);

/*
 * An OpenAI embeddings request (input: a string or an array of them) as a
 * batchEmbedContents request for model, one request per input, dimensions
 * as outputDimensionality.  0 with *out set, or -1 with the reason in err
 * (a 400 for the client: token arrays, for one, Gemini does not take).
 */
int		 gemini_embed_request(struct json_object *req, const char *model,
		    struct json_object **out, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/*
 * A batchEmbedContents reply as OpenAI's embeddings list (new): the
 * vectors as numbers, or as base64 of little-endian float32 when base64
 * (encoding_format "base64", the OpenAI SDKs' default); usage says
 * prompt_tokens, since Gemini reports none.  NULL with err set when the
 * reply is malformed.
 */
struct json_object *gemini_embed_response(struct json_object *reply,
		    const char *model, bool base64, long prompt_tokens,
		    char *err, size_t errsz);

#endif
