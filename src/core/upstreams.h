#ifndef KEYGATE_CORE_UPSTREAMS_H
#define KEYGATE_CORE_UPSTREAMS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * An operator-defined upstream that speaks the OpenAI chat format (vLLM,
 * llama.cpp's server, Ollama), from the upstreams and upstream_keys
 * settings.
 */
struct config_upstream {
	char		 name[33];	/* [a-z0-9_-], 1 to 32 characters */
	char		*url;		/* http(s) base URL, no trailing '/' */
	char	       **models;	/* exact names, or prefixes ending in '*' */
	size_t		 nmodels;
	bool		 strip;		/* send a prefix match without the prefix */
	char		*key;		/* secret, from upstream_keys; NULL = none */
};

/* The upstreams setting: the text as written and what it says. */
struct config_upstreams {
	char		*text;
	struct config_upstream *v;	/* in the order written */
	size_t		 n;
};

#endif
