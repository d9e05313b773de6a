#ifndef KEYGATE_LIB_HASH_H
#define KEYGATE_LIB_HASH_H

#include <stdint.h>

/*
 * FNV-1a of a string, for the tables in shared memory that place a key,
 * a tenant or a subject by its hash.  Not for anything an attacker could
 * aim at a secret: the strings hashed are ids and prefixes, and every
 * table copes with a full bucket.
 */
static inline uint32_t
hash_fnv32(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static inline uint64_t
hash_fnv64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

#endif
