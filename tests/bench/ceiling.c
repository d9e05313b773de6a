/*
 * keygate-ceiling: keygated's master and worker loop answering every request
 * with a fixed JSON body and no database work.  What it serves per second
 * behind the web server is the most keygated could ever serve there; the
 * benchmark prints the real routes as a ratio of it.
 *
 *   keygate-ceiling --config FILE   (listen, workers, log_file are used)
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lib/crypto.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/master.h"
#include "server/request.h"
#include "server/worker.h"

static void
ceiling_handle(struct worker *w, struct request *req)
{
	static const char body[] = "{\"status\":\"ok\"}";

	(void)w;
	http_respond(req, 200, body, sizeof(body) - 1);
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
