#include "autoconfig.h"

#include "api/api.h"

/*
 * Every route keygate answers, in SPEC order.  A path that matches no row
 * is 404; a path that matches with another method is 405 with Allow.
 */
const struct route api_routes[] = {
	{ METHOD_GET, "/health", api_health, NULL },
};

const size_t api_nroutes = sizeof(api_routes) / sizeof(api_routes[0]);
