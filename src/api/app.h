#ifndef KEYGATE_API_APP_H
#define KEYGATE_API_APP_H

/*
 * The API as a worker app (server/worker.h), in four files: app.c starts
 * and stops it, middleware.c takes a request from the router to its
 * handler (authentication, rate limits, the body), maintenance.c does the
 * deferred work between requests, shared.c lays out the memory the
 * workers of one keygated share.  This header is theirs alone.
 */

#include <stdbool.h>
#include <sys/types.h>

#include "api/api.h"
#include "core/auth.h"
#include "core/gateway.h"

struct af_shared;
struct calls_shared;
struct config;
struct metrics;
struct request;
struct rl_shared;
struct worker;

/* Keys whose last_used_at is written in one batch after a response. */
#define TOUCH_MAX	64

/* A worker's API state, kept across requests: its handles first. */
struct api_state {
	struct app	 app;			/* app(w) */
	struct af_shared *failures;		/* shared; NULL = this worker */
	char		 touch[TOUCH_MAX][40];	/* key ids to mark used */
	int		 ntouch;
	double		 last_touch;		/* monotonic s */
	double		 last_sweep;		/* monotonic s, 0 = never */
	double		 last_holds;		/* monotonic s, 0 = never */
	double		 last_heap_trim;	/* monotonic s, 0 = never */
	bool		 heap_trim_due;		/* handles were freed since */
	unsigned long	 connects;		/* of w->db, last seen */
	unsigned	 db_back;		/* db_news.back, last seen */
	struct auth_settings auth;		/* from the configuration */
	struct gateway_settings gateway;	/* from the configuration */
};

/* shared.c: the layout, and each part of it (NULL without shared memory). */
size_t	api_shared_size(void);
int	api_shared_init(void *, const struct config *);
void	api_worker_exited(void *, pid_t, bool crashed);
struct rl_shared	*api_shared_limits(void *);
struct metrics		*api_shared_metrics(void *);
struct af_shared	*api_shared_failures(void *);
struct calls_shared	*api_shared_calls(void *);
/* Tells the other workers that the database is back, or hears it. */
void	api_db_news(struct worker *);

/* middleware.c: answers one request. */
void	api_handle(struct worker *, struct request *);

/* maintenance.c: the work deferred until after a response. */
int	api_after(struct worker *);

#endif
