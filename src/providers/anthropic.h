#ifndef KEYGATE_PROVIDERS_ANTHROPIC_H
#define KEYGATE_PROVIDERS_ANTHROPIC_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/*
 * The OpenAI chat request req as an Anthropic Messages request for model:
 * system and developer turns become "system", tool results user turns led
 * by tool_result blocks, tool calls tool_use blocks, max_tokens gets
 * default_max when the request sets none, temperature is clamped to Anthropic's 0..1.  0 with *out set
 * (caller puts it), or -1 with the reason in err (a 400 for the client).
 */
int		 anthropic_request(struct json_object *req, const char *model,
		    long default_max, struct json_object **out, char *err,
		    size_t errsz)
		    __attribute__((warn_unused_result));
/* The longest tool name Anthropic takes, with its NUL. */
#define ANT_TOOL_NAME 65

/*
 * A response_format of json_schema or json_object goes to Anthropic as a
 * tool the model is made to call, whose input schema is the answer's;
 * its input comes back as the message content.  name gets that tool's
 * name (the schema's name when Anthropic takes it, else "json_answer"),
 * or "" when the request asks for no JSON answer.
 */
void		 anthropic_answer_tool(struct json_object *req,
		    char name[ANT_TOOL_NAME]);
/*
 * A Messages reply as a chat.completion object (new), or NULL; answer is
 * the tool carrying a JSON answer ("" = none), see above.
 */
struct json_object *anthropic_response(struct json_object *reply,
		    const char *answer);
/* The OpenAI finish_reason of an Anthropic stop_reason (NULL for NULL). */
const char	*anthropic_finish(const char *stop_reason);

#define ANT_MAX_BLOCKS 128

/* What a stream translation remembers between events. */
struct anthropic_stream {
	char	 id[96];
	char	 model[128];
	long	 created;
	long	 input_tokens;
	long	 output_tokens;
	int	 ntools;			/* tool calls seen */
	int	 block_tool[ANT_MAX_BLOCKS];	/* block -> tool index + 1,
						   -1 = the JSON answer */
	char	 answer[ANT_TOOL_NAME];		/* "" = no JSON answer */
	char	 finish[32];
};

enum anthropic_step {
	ANT_SKIP,	/* nothing to send */
	ANT_EMIT,	/* send *out as a chunk */
	ANT_DONE,	/* *out is the usage chunk; the stream is over */
	ANT_ERROR,	/* *out is an error object; the stream is over */
	ANT_STEP__MAX
};

/*
 * Translates one Anthropic stream event (parsed JSON) into an OpenAI chunk.
 * Tool calls carry their id and name on their first delta, then argument
 * fragments, indexed by our own counter.  With answer set, that tool's
 * input arrives as content and text blocks are left out.
 */
enum anthropic_step anthropic_stream_event(struct anthropic_stream *,
		    struct json_object *event, struct json_object **out);

#endif
