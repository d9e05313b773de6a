/*
 * keygate-ceiling: keygated's master and worker loop answering every request
 * with a fixed JSON body and no database work.  What it serves per second
 * behind the web server is the most keygated could ever serve there; the
 * benchmark prints the real routes as a ratio of it.
 *
 *   keygate-ceiling --config FILE   (listen, workers, log_file are used)
 *
 * With KEYGATE_CEILING_DELAY_MS set it stands in for a gateway that does
 * nothing but wait on its provider, as keygated's calls do: the body is
 * read, the worker's lock let go, and after that many ms the answer comes
 * whole, or, when the body asks "stream":true, as KEYGATE_CEILING_CHUNKS
 * (20) events spread over KEYGATE_CEILING_STREAM_MS (2000), as the
 * benchmarks' mock of OpenAI answers.  What it adds
 * to the mock's latency is what the web server and the worker loop alone
 * add: the floor under any gateway's figures there.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/crypto.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/master.h"
#include "server/request.h"
#include "server/worker.h"

static long	delay_ms, chunks = 20, stream_ms = 2000;

/* Waits ms without the worker's lock, as a call waiting on its provider. */
static void
wait_ms(struct worker *w, long ms)
{
	struct timespec	 ts = { ms / 1000, (ms % 1000) * 1000000L };

	worker_release(w);
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		continue;
	worker_acquire(w);
}

static void
delayed(struct worker *w, struct request *req)
{
	static const char whole[] = "{\"id\":\"c\",\"object\":"
	    "\"chat.completion\",\"choices\":[{\"index\":0,\"message\":"
	    "{\"role\":\"assistant\",\"content\":\"ok\"},"
	    "\"finish_reason\":\"stop\"}]}";
	static const char event[] = "data: {\"id\":\"c\",\"object\":"
	    "\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
	    "{\"content\":\"ok \"}}]}\n\n";
	static const char done[] = "data: [DONE]\n\n";
	long		 i;

	if (request_read_body(req, 1 << 20) != 0) {
		http_abandoned(req);
		return;
	}
	if (req->body.len == 0 || memmem(req->body.data, req->body.len,
	    "\"stream\":true", 13) == NULL) {
		wait_ms(w, delay_ms);
		http_respond(req, 200, whole, sizeof(whole) - 1);
		return;
	}
	if (http_stream_begin(req, 200, "text/event-stream") == -1)
		return;
	for (i = 0; i < chunks; i++) {
		wait_ms(w, stream_ms / chunks);
		if (http_stream_write(req, event, sizeof(event) - 1) == -1)
			return;
	}
	if (http_stream_write(req, done, sizeof(done) - 1) == -1)
		return;
}

static void
ceiling_handle(struct worker *w, struct request *req)
{
	static const char body[] = "{\"status\":\"ok\"}";

	if (delay_ms > 0) {
		delayed(w, req);
		return;
	}
	http_respond(req, 200, body, sizeof(body) - 1);
}

static long
env_ms(const char *name, long dflt)
{
	const char	*v = getenv(name);

	return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : dflt;
}

static const struct worker_app ceiling_app = {
	.name = "ceiling",
	.handle = ceiling_handle,
};

int
main(int argc, char *argv[])
{
	struct config	*cfg;
	char		 err[512];

	if (argc != 3 || strcmp(argv[1], "--config") != 0) {
		fprintf(stderr, "usage: keygate-ceiling --config FILE\n");
		return 2;
	}
	delay_ms = env_ms("KEYGATE_CEILING_DELAY_MS", 0);
	chunks = env_ms("KEYGATE_CEILING_CHUNKS", chunks);
	stream_ms = env_ms("KEYGATE_CEILING_STREAM_MS", stream_ms);
	if (delay_ms < 0 || chunks < 1 || stream_ms < 0) {
		fprintf(stderr, "keygate-ceiling: a negative delay, or no "
		    "chunk\n");
		return 2;
	}
	if ((cfg = config_load(argv[2], err, sizeof(err))) == NULL) {
		fprintf(stderr, "keygate-ceiling: %s\n", err);
		return 2;
	}
	if (log_open(cfg->log_file) == -1) {
		fprintf(stderr, "keygate-ceiling: %s: %s\n", cfg->log_file,
		    strerror(errno));
		return 1;
	}
	if (crypto_init(err, sizeof(err)) == -1) {
		fprintf(stderr, "keygate-ceiling: %s\n", err);
		return 1;
	}
	return master_run(cfg, &ceiling_app);
}
