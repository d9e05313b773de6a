#ifndef KEYGATE_PROVIDERS_MESSAGES_H
#define KEYGATE_PROVIDERS_MESSAGES_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/*
 * Anthropic's Messages API as a format clients speak to keygate
 * (POST /v1/messages): a Messages request turned into the OpenAI chat
 * shape that every provider path takes, and OpenAI replies and chunks
 * turned back into Messages replies and stream events.  The reverse of
 * providers/anthropic.c, for providers other than Anthropic.
 */

/*
 * A Messages request as an OpenAI chat request (new, in *out): system as
 * a system turn, text and image blocks as parts, tool_use blocks as
 * tool_calls, tool_result blocks as tool turns, tools and tool_choice as
 * functions, stop_sequences as stop.  Thinking blocks are left out.  0, or
 * -1 with the reason in err (a 400 for the client).
 */
int		 messages_to_chat(struct json_object *req,
		    struct json_object **out, char *err, size_t errsz)
		    __attribute__((warn_unused_result));
/* A chat.completion (its first choice) as a Messages reply (new). */
struct json_object *messages_from_chat(struct json_object *completion);
/* The Messages stop_reason of an OpenAI finish_reason. */
const char	*messages_stop_reason(const char *finish);

/* What turning a chunk stream into Messages events remembers. */
struct messages_stream {
	bool	 started;	/* message_start went out */
	int	 block;		/* the open content block, -1 = none */
	int	 nblocks;	/* blocks opened so far */
	int	 tool;		/* OpenAI tool_calls index of the open block,
				   -1 = a text block */
	bool	 stopped;	/* message_delta went out */
	long	 input_tokens;	/* for message_start: the estimate */
};

/* A fresh state; input_tokens is what message_start will say. */
void		 messages_stream_init(struct messages_stream *,
		    long input_tokens);
/*
 * One chat.completion.chunk (choice 0) as Messages events, appended to out
 * (an array the caller owns; each event's name is its "type"): message_start first,
 * blocks opened and closed as text and tool calls come, and on the
 * finish_reason a message_delta with the usage given, carrying the chunk's
 * "keygate" member when it has one.
 */
void		 messages_stream_chunk(struct messages_stream *,
		    struct json_object *chunk, long input_tokens,
		    long output_tokens, struct json_object *out);
/* The end of the stream: message_stop (after what was left open). */
void		 messages_stream_end(struct messages_stream *,
		    struct json_object *out);

#endif
