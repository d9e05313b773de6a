/*
 * keygatectl openrouter-models: the OpenRouter id of each native model id,
 * used when a call for a native model goes through OpenRouter (a tenant's
 * OpenRouter key, or the operator's pool).
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/db.h"

/* Printable, no blank, no '*', at most 200 bytes. */
static bool
plain(const char *s)
{
	const unsigned char *p;

	if (*s == '\0' || strlen(s) > 200)
		return false;
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '*')
			return false;
	return true;
}

/* A native id (no '/') and an OpenRouter one (vendor/model). */
static bool
pair_ok(const char *model, const char *id)
{
	const char	*slash = strchr(id, '/');

	return plain(model) && strchr(model, '/') == NULL && plain(id) &&
	    slash != NULL && slash != id && slash[1] != '\0' &&
	    strchr(slash + 1, '/') == NULL;
}

static bool
check(char *const *field, const char **param, char store[][32])
{
	(void)store;
	param[0] = field[0];
	param[1] = field[1];
	return pair_ok(field[0], field[1]);
}

static void
print(const struct db_res *res, int r)
{
	printf("%-40s %s\n", db_value(res, r, 0), db_value(res, r, 1));
}

static const struct ctl_table openrouter_models = {
	"openrouter-models", "model ids",
	"usage: keygatectl openrouter-models list\n"
	"       keygatectl openrouter-models set MODEL OPENROUTER_ID\n"
	"       keygatectl openrouter-models import FILE\n"
	"\n"
	"The OpenRouter id of each native model id (gpt-4o-mini ->\n"
	"openai/gpt-4o-mini), used when a call for a native model goes\n"
	"through OpenRouter; a native model without one is not sent there.\n"
	"set adds or changes one.  An import file has one \"MODEL\n"
	"OPENROUTER_ID\" line a model (# comments and blank lines allowed)\n"
	"and is applied in one transaction: all lines or none.\n",
	"MODEL OPENROUTER_ID, such as gpt-4o-mini openai/gpt-4o-mini",
	2, STMT_OPENROUTER_MODEL_SET, STMT_OPENROUTER_MODEL_LIST,
	"model                                    openrouter id",
	check, print,
};

int
ctl_openrouter_models(const struct config *cfg, struct db *db, int argc,
    char **argv)
{
	(void)cfg;
	return ctl_table(&openrouter_models, db, argc, argv);
}
