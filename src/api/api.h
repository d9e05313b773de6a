#ifndef KEYGATE_API_API_H
#define KEYGATE_API_API_H

#include <stddef.h>

#include "server/router.h"

struct request;
struct worker;
struct worker_app;

/* keygate's HTTP API, as a worker app. */
extern const struct worker_app api_app;

/* The route table: one row per SPEC route that exists. */
extern const struct route api_routes[];
extern const size_t api_nroutes;

/* Handlers, one group per file. */
void	api_health(struct request *);

#endif
