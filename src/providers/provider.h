#ifndef KEYGATE_PROVIDERS_PROVIDER_H
#define KEYGATE_PROVIDERS_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "lib/sse.h"

struct json_object;

/*
 * A provider is a module: all that keygate knows of one LLM API, as data
 * and operations, in one descriptor (in the spirit of nginx's
 * ngx_module_t).  The gateway asks the descriptor and never which provider
 * it is; adding one is a file here, a row in providers[] and an enum
 * value.  Operator upstreams are instances of the OpenAI one.
 */

enum provider {
	PROVIDER_OPENAI,
	PROVIDER_ANTHROPIC,
	PROVIDER_GOOGLE,
	PROVIDER_OPENROUTER,
	PROVIDER__MAX
};

/* What a call asks of a provider. */
enum provider_op {
	PROVIDER_CHAT,		/* an OpenAI chat request */
	PROVIDER_NATIVE,	/* a Messages request, to a provider that
				   speaks it (native_messages) */
	PROVIDER_EMBED,		/* an OpenAI embeddings request */
	PROVIDER_OP__MAX
};

/*
 * One call as the operations see it.  The caller fills the first part,
 * prepare() the request to send, the reply and stream operations the
 * usage; state is state_size bytes of zeroes the operations own.
 */
struct provider_call {
	enum provider_op op;
	bool		 stream;
	const char	*base;		/* base URL (a trailing / is allowed) */
	const char	*model;		/* the model id sent */
	struct json_object *request;	/* the client's request, borrowed */
	long		 max_tokens;	/* output tokens held for the call:
					   sent when the request sets none;
					   0 = none held */
	long		 default_max_tokens; /* for a provider that wants a
					   limit when none is held */
	long		 prompt_estimate; /* tokens, from the request's size */
	/* From prepare(): the URL, the body, up to two headers of its own. */
	struct buf	 url;
	struct buf	 body;
	const char	*headers[2];
	/* What the provider told of its usage, once it did. */
	bool		 have_usage;
	long		 prompt_tokens;
	long		 completion_tokens;
	bool		 usage_final;	/* a native stream's last usage came */
	void		*state;
};

enum provider_result {
	PROVIDER_OK,
	PROVIDER_REFUSED,	/* the request cannot be sent there: a 400
				   with err */
	PROVIDER_BAD_MODEL,	/* the model name cannot be sent there */
	PROVIDER_FAILED,	/* out of memory */
	PROVIDER_RESULT__MAX
};

/* What one event of a provider's stream came to. */
enum provider_step {
	PROVIDER_MORE,		/* chunks (maybe none) were added */
	PROVIDER_END,		/* and the stream is over */
	PROVIDER_ERROR,		/* the last one added is an
				   {"error":{message,type,code}} object: the
				   stream is over */
	PROVIDER_STEP__MAX
};

struct provider_module {
	const char	*name;		/* as in usage rows and the vault */
	const char	*key_format;	/* for messages: "sk-ant-..." */
	const char	*key_prefix;	/* a key starts so */
	const char *const *key_not;	/* ... but not so (NULL-ended) */
	const char	*inline_header;	/* X-Anthropic-Key */
	const char	*inline_param;	/* its FastCGI name */
	const char *const *models;	/* name prefixes it serves, NULL-ended */
	bool		 vendor_ids;	/* serves any "vendor/model" name */
	bool		 embeddings;	/* serves /v1/embeddings */
	bool		 native_messages; /* takes Messages requests as they
					   come (PROVIDER_NATIVE) */
	/* The key goes in this header, after this prefix. */
	const char	*auth;
	/* Where a key is checked (under the base URL), and a header to add. */
	const char	*check_path;
	const char	*check_header;
	/*
	 * Headers a native call takes from the client when it sent them
	 * (printable, at most 256 bytes): name and FastCGI name.  One named
	 * like a header of prepare()'s replaces it.
	 */
	const char	*pass_header[2][2];
	size_t		 state_size;
	/* Builds url, body and headers of c. */
	enum provider_result (*prepare)(struct provider_call *c, char *err,
			    size_t errsz);
	/*
	 * A whole reply (borrowed) as a chat.completion or an embeddings
	 * list (new), usage taken into c; a native call's reply is given
	 * back as it came.  NULL with err set when it is not one.
	 */
	struct json_object *(*reply)(struct provider_call *c,
			    struct json_object *reply, char *err,
			    size_t errsz);
	/*
	 * One stream event (parsed JSON, borrowed) as OpenAI chunks appended
	 * to out, usage taken into c.  A native call's events go to the
	 * client as they came: the chunks only say what they carried.  NULL:
	 * the provider streams OpenAI's chunks.
	 */
	enum provider_step (*event)(struct provider_call *c,
			    struct json_object *ev, struct json_object *out);
	/*
	 * The end of the body when the stream sent no end of its own: the
	 * closing chunks appended to out and true when the stream was
	 * whole, false when it was cut short.  NULL: only an end event
	 * ends a stream.
	 */
	bool		 (*body_end)(struct provider_call *c,
			    struct json_object *out);
};

extern const struct provider_module provider_openai;
extern const struct provider_module provider_anthropic;
extern const struct provider_module provider_google;
extern const struct provider_module provider_openrouter;
/* What an operator upstream is: OpenAI's format under another name. */
extern const struct provider_module provider_upstream;

/* The built-in providers, indexed by enum provider. */
extern const struct provider_module *const providers[PROVIDER__MAX];

/* The provider of a name ("openai"), or PROVIDER__MAX. */
enum provider	 provider_parse(const char *);
/*
 * True when key looks like one of the provider's keys: its prefix, none
 * of the prefixes it must not have (another provider's), 20 to 512
 * printable characters, no blanks.
 */
bool		 provider_key_format_ok(enum provider, const char *key);
/*
 * The built-in provider serving model by its name, or PROVIDER__MAX when
 * none does.
 */
enum provider	 provider_route(const char *model);
/*
 * The provider that serves any model by a "vendor/model" id (vendor_ids;
 * OpenRouter): the gateway's way to a model when no key of the model's
 * own provider is at hand.  PROVIDER__MAX when there is none.
 */
enum provider	 provider_aggregator(void);

/*
 * The call's request to base + path: the URL, and the body (o, taken) as
 * JSON.  For the operations.
 */
enum provider_result provider_put(struct provider_call *c, const char *path,
		    struct json_object *o);
/*
 * Adds {"error":{"message","type":"upstream_error","code":code}} to out;
 * PROVIDER_ERROR.
 */
enum provider_step provider_stream_error(struct json_object *out,
		    const char *message, const char *code);
/*
 * A provider's stream as the gateway receives it: bytes in, in pieces of
 * any size, and out one call per chunk in OpenAI's shape, then the end or
 * a failure.  Each returns 0 to go on, -1 to stop the stream.
 */
struct provider_sink {
	/*
	 * A chunk (borrowed); raw is the event as it came when it may be
	 * passed on so (one data line of a provider speaking OpenAI's
	 * chunks), else NULL.  chunk is NULL for an event that is not JSON
	 * from such a provider: raw is then not ours to judge.
	 */
	int	(*chunk)(void *arg, struct json_object *chunk,
		    const struct sse_event *raw);
	/* The stream is over, whole. */
	int	(*end)(void *arg);
	/* The stream ends with err ({"error":{...}}, borrowed, changeable). */
	int	(*fail)(void *arg, struct json_object *err);
	/*
	 * A native call's event (borrowed, changeable: it goes to the
	 * client as it came), with the chunks it came to and the step.
	 */
	int	(*native)(void *arg, struct json_object *ev,
		    enum provider_step, struct json_object *chunks);
};

struct provider_stream {
	const struct provider_module *p;
	struct provider_call *call;
	const struct provider_sink *sink;
	void		*arg;
	struct sse_parser sse;
	bool		 over;		/* ended or failed: the rest is not read */
};

/* A stream of call to p, into sink; events of at most max bytes. */
void		 provider_stream_init(struct provider_stream *,
		    const struct provider_module *p, struct provider_call *call,
		    const struct provider_sink *sink, void *arg, size_t max);
/*
 * n more bytes of the body.  0; -1 when the sink said stop or memory ran
 * out; -2 when an event grew past max.
 */
int		 provider_stream_feed(struct provider_stream *, const char *p,
		    size_t n) __attribute__((warn_unused_result));
/*
 * The body is over (whole when the transfer went well).  0 when the stream
 * had ended, or ends now (a format without a terminator); 1 when it was
 * cut short: the caller says so; -1 when the sink said stop.
 */
int		 provider_stream_finish(struct provider_stream *, bool whole);
void		 provider_stream_free(struct provider_stream *);

/* Reads a reply's or chunk's usage {prompt_tokens, completion_tokens}. */
void		 provider_take_usage(struct provider_call *c,
		    struct json_object *o);
/* Frees what prepare() and the operations kept; c can be used again. */
void		 provider_call_free(struct provider_call *c);

#endif
