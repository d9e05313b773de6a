#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/db.h"
#include "server/config.h"

/* Credits as text -> micro-credits; -1 when not a price. */
static long long
parse_credits(const char *s)
{
	char	*end;
	double	 d;

	errno = 0;
	d = strtod(s, &end);
	if (*s == '\0' || *end != '\0' || errno != 0 || !(d >= 0) || d > 1e9)
		return -1;
	return (long long)(d * 1000000.0 + 0.5);
}

/* PATTERN INPUT OUTPUT, the prices in micro-credits for the database. */
static bool
check(char *const *field, const char **param, char store[][32])
{
	long long	 in = parse_credits(field[1]), out;

	if (*field[0] == '\0' || strlen(field[0]) > 200 || in < 0 ||
	    (out = parse_credits(field[2])) < 0)
		return false;
	snprintf(store[1], sizeof(store[1]), "%lld", in);
	snprintf(store[2], sizeof(store[2]), "%lld", out);
	param[0] = field[0];
	param[1] = store[1];
	param[2] = store[2];
	return true;
}

static void
print(const struct db_res *res, int r)
{
	printf("%-32s %14.6f %14.6f\n", db_value(res, r, 0),
	    atoll(db_value(res, r, 1)) / 1e6, atoll(db_value(res, r, 2)) / 1e6);
}

static const struct ctl_table prices = {
	"prices", "prices",
	"usage: keygatectl prices list\n"
	"       keygatectl prices set PATTERN INPUT OUTPUT\n"
	"       keygatectl prices import FILE\n"
	"\n"
	"Prices are credits per million tokens, input and output, for a\n"
	"model name or a pattern where * matches anything (\"claude-*\",\n"
	"\"*\" for every other model); the longest matching pattern wins.\n"
	"An import file has one \"PATTERN INPUT OUTPUT\" line a price\n"
	"(# comments and blank lines allowed) and is applied in one\n"
	"transaction: all lines or none.\n",
	"PATTERN INPUT OUTPUT with prices in credits per million tokens",
	3, STMT_PRICE_SET, STMT_PRICE_LIST,
	"pattern                              input/Mtok    output/Mtok",
	check, print,
};

int
ctl_prices(const struct config *cfg, struct db *db, int argc, char **argv)
{
	(void)cfg;
	return ctl_table(&prices, db, argc, argv);
}
