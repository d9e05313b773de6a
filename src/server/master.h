#ifndef KEYGATE_SERVER_MASTER_H
#define KEYGATE_SERVER_MASTER_H

struct config;
struct worker_app;

/*
 * Runs the master process: opens (or inherits on fd 0) the FastCGI listen
 * socket, forks the workers, respawns them, reloads on SIGHUP, and stops
 * on SIGTERM or SIGINT.  Takes ownership of cfg.  Returns the process exit
 * status: 0 after a clean stop, 1 on a runtime failure, 2 when a worker
 * reported a fatal configuration error.
 */
int	master_run(struct config *cfg, const struct worker_app *app);

#endif
