#ifndef KEYGATE_API_CALL_H
#define KEYGATE_API_CALL_H

/*
 * One provider call of the gateway, from the hold to the answer, in the
 * four files that share this header: api/call.c holds the credits, has
 * the provider's request made and performs it (answering a whole reply),
 * api/call_stream.c passes a stream on, api/call_errors.c answers what
 * the provider or the network refused, and api/chat.c (with messages.c
 * and embeddings.c) checks the client's request and runs the steps:
 *
 *	call_reserve	hold the estimate (402 when the balance is short)
 *	call_prepare	the provider's request, from the client's
 *	call_perform	send it; answer whole or streamed
 *	call_settle	charge what was produced, once; or
 *	call_release	let the hold go, charging nothing
 */

#include <stdbool.h>
#include <stddef.h>

#include "api/leases.h"
#include "core/credits.h"
#include "core/gateway.h"
#include "lib/buf.h"
#include "lib/upstream.h"
#include "providers/messages.h"
#include "providers/provider.h"

struct json_object;
struct request;

/* Provider replies kept in memory at most (non-streaming). */
#define MAX_REPLY	(8 << 20)
/* s a hold outlives the longest call: its deadline's margin. */
#define HOLD_MARGIN	60
/* Bytes of one SSE event we hold while waiting for its end. */
#define MAX_EVENT	(1 << 20)

struct call {
	struct request	*req;
	struct gateway_key key;
	bool		 stream;
	bool		 want_usage;	/* the client asked for the usage chunk */
	bool		 started;	/* stream headers sent */
	bool		 done;		/* [DONE] sent */
	long		 status;
	struct provider_stream ps;	/* the provider's stream */
	struct buf	 errbody;	/* a non-200 streamed reply */
	const struct provider_module *prov;
	struct provider_call pc;	/* the request out, the usage told */
	/* Credits: what is held, and what the call used. */
	struct hold	 hold;		/* the credits held for the call */
	struct credits_bill bill;	/* its price, and what it produced */
	const char	*model;		/* the client's model name */
	/*
	 * The keygate block rides on the chunk that carries finish_reason,
	 * and credits_charged is known only once usage arrives: that chunk
	 * waits here until then (or until the stream ends).
	 */
	struct json_object *held;	/* a finish chunk, NULL = none */
	struct json_object *shape;	/* the last chunk (id, model, created) */
	bool		 kg_sent;	/* the keygate block went out */
	bool		 usage_sent;	/* the usage chunk went out */
	/* A Messages client (POST /v1/messages). */
	bool		 messages;	/* answers in Messages shapes */
	bool		 native;	/* to Anthropic, passed through */
	struct messages_stream ms;	/* chunks into Messages events */
	bool		 embed;		/* POST /v1/embeddings */
	struct json_object *body;	/* the request, borrowed */
	/* While the provider loop runs the stream (call_stream.c). */
	bool		 in_loop;
	bool		 deferring;	/* the sink's calls wait for the
					   call's thread */
	struct later	*later;		/* those calls, in order */
	size_t		 nlater;
};

/* call.c */
int	call_reserve(struct call *, struct json_object *body);
int	call_prepare(struct call *, struct json_object *orig);
void	call_perform(struct call *);
/* Settles or releases what is held, and frees the call's parts. */
void	call_end(struct call *);
void	call_settle(struct call *, const char *status);
void	call_release(struct call *);
struct json_object *call_keygate_block(const struct call *);
void	call_keygate_headers(struct call *, bool charged);
/* The tokens so far: the provider's counts, or the estimates. */
void	call_tokens(const struct call *, long *prompt, long *completion);

/* call_stream.c */
void	call_stream_init(struct call *);
void	call_respond_stream(struct call *, struct upstream_call *);

/* call_errors.c */
void	call_provider_error(struct call *, long status, const struct buf *body,
	    const struct upstream_call *);
void	call_transport_error(struct call *, enum upstream_result,
	    const char *why);

#endif
