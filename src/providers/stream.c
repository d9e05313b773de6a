/*
 * A provider's stream, from the bytes of its body to chunks in OpenAI's
 * shape: lib/sse.c finds the events, the provider's event operation
 * translates them (a provider speaking OpenAI's chunks is passed on), and
 * the sink hears each chunk, then the end or the failure, once.
 */
#include "autoconfig.h"

#include <string.h>

#include "lib/json.h"
#include "providers/provider.h"

void
provider_stream_init(struct provider_stream *s,
    const struct provider_module *p, struct provider_call *call,
    const struct provider_sink *sink, void *arg, size_t max)
{
	memset(s, 0, sizeof(*s));
	s->p = p;
	s->call = call;
	s->sink = sink;
	s->arg = arg;
	sse_init(&s->sse, max);
}

/* The chunks of out, in order; the last fails the stream on an error. */
static int
deliver(struct provider_stream *s, struct json_object *out,
    enum provider_step step)
{
	size_t	 i, n = json_object_array_length(out);
	int	 rc = 0;

	for (i = 0; rc == 0 && i < n; i++)
		rc = step == PROVIDER_ERROR && i == n - 1 ?
		    s->sink->fail(s->arg, json_object_array_get_idx(out, i)) :
		    s->sink->chunk(s->arg, json_object_array_get_idx(out, i),
		    NULL);
	if (step != PROVIDER_MORE)
		s->over = true;
	if (rc == 0 && step == PROVIDER_END)
		rc = s->sink->end(s->arg);
	return rc;
}

/* An event of a provider with a format of its own. */
static int
translate(struct provider_stream *s, struct json_object *ev)
{
	struct json_object *out = json_object_new_array();
	enum provider_step step = s->p->event(s->call, ev, out);
	int		 rc;

	if (s->call->op == PROVIDER_NATIVE) {
		rc = s->sink->native(s->arg, ev, step, out);
		if (step != PROVIDER_MORE)
			s->over = true;
	} else
		rc = deliver(s, out, step);
	json_object_put(out);
	return rc;
}

/* An event of a provider speaking OpenAI's chunks: passed on. */
static int
pass(struct provider_stream *s, struct json_object *o,
    const struct sse_event *ev)
{
	if (o == NULL)
		return s->sink->chunk(s->arg, NULL, ev);
	if (json_object_object_get_ex(o, "error", NULL)) {
		s->over = true;
		return s->sink->fail(s->arg, o);
	}
	provider_take_usage(s->call, o);
	/* One line joined from several cannot go on as it came. */
	return s->sink->chunk(s->arg, o, ev->lines > 1 ? NULL : ev);
}

static int
on_event(void *arg, const struct sse_event *ev)
{
	struct provider_stream *s = arg;
	struct json_object *o;
	enum json_parse_error why;
	char		 err[64];
	int		 rc = 0;

	if (s->over)
		return 0;	/* what follows the end is not read */
	if (ev->len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
		s->over = true;
		return s->sink->end(s->arg);
	}
	o = json_parse(ev->data, ev->len, &why, err, sizeof(err));
	if (s->p->event == NULL)
		rc = pass(s, o, ev);
	else if (o != NULL)
		rc = translate(s, o);
	if (o != NULL)
		json_object_put(o);
	return rc;
}

int
provider_stream_feed(struct provider_stream *s, const char *p, size_t n)
{
	return sse_feed(&s->sse, p, n, on_event, s);
}

int
provider_stream_finish(struct provider_stream *s, bool whole)
{
	struct json_object *out;
	int		 rc;

	if (s->over)
		return 0;
	if (!whole || s->p->body_end == NULL)
		return 1;
	out = json_object_new_array();
	if (!s->p->body_end(s->call, out)) {
		json_object_put(out);
		return 1;
	}
	rc = deliver(s, out, PROVIDER_END);
	json_object_put(out);
	return rc;
}

void
provider_stream_free(struct provider_stream *s)
{
	sse_free(&s->sse);
}
