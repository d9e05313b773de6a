#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/db.h"
#include "server/config.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: keygatectl prices list\n"
	    "       keygatectl prices set PATTERN INPUT OUTPUT\n"
	    "       keygatectl prices import FILE\n"
	    "\n"
	    "Prices are credits per million tokens, input and output, for a\n"
	    "model name or a pattern where * matches anything (\"claude-*\",\n"
	    "\"*\" for every other model); the longest matching pattern wins.\n"
	    "An import file has one \"PATTERN INPUT OUTPUT\" line a price\n"
	    "(# comments and blank lines allowed) and is applied in one\n"
	    "transaction: all lines or none.\n");
}

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

static int
set_one(struct db *db, const char *pattern, const char *in, const char *out,
    const char *where)
{
	long long	 i = parse_credits(in), o = parse_credits(out);
	char		 is[24], os[24];
	const char	*p[3];

	if (*pattern == '\0' || strlen(pattern) > 200 || i < 0 || o < 0) {
		fprintf(stderr, "keygatectl: prices: %s: expected PATTERN "
		    "INPUT OUTPUT with prices in credits per million tokens\n",
		    where);
		return 2;
	}
	snprintf(is, sizeof(is), "%lld", i);
	snprintf(os, sizeof(os), "%lld", o);
	p[0] = pattern;
	p[1] = is;
	p[2] = os;
	if (db_exec(db, STMT_PRICE_SET, 3, p) == -1) {
		fprintf(stderr, "keygatectl: prices: %s\n", db_errmsg(db));
		return 1;
	}
	return 0;
}

static int
import(struct db *db, const char *path)
{
	FILE	*f;
	char	*line = NULL, where[1100], pat[256], in[64], out[64], extra[8];
	size_t	 cap = 0;
	unsigned lineno = 0, n = 0;
	int	 rc = 0, k;

	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "keygatectl: prices import: %s: %s\n", path,
		    strerror(errno));
		return 1;
	}
	if (db_begin(db) == -1) {
		fclose(f);
		fprintf(stderr, "keygatectl: prices: %s\n", db_errmsg(db));
		return 1;
	}
	while (rc == 0 && getline(&line, &cap, f) != -1) {
		lineno++;
		line[strcspn(line, "#\r\n")] = '\0';
		k = sscanf(line, "%255s %63s %63s %7s", pat, in, out, extra);
		if (k <= 0)
			continue;
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		rc = k == 3 ? set_one(db, pat, in, out, where) :
		    set_one(db, "", "", "", where);
		n++;
	}
	free(line);
	fclose(f);
	if (rc != 0 || db_commit(db) == -1) {
		db_rollback(db);
		fprintf(stderr, "keygatectl: prices import: nothing was "
		    "changed\n");
		return rc != 0 ? rc : 1;
	}
	printf("imported %u prices\n", n);
	return 0;
}

int
ctl_prices(const struct config *cfg, struct db *db, int argc, char **argv)
{
	struct db_res	*res;
	int		 r;

	(void)cfg;
	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "list") == 0 && argc == 2) {
		if ((res = db_query(db, STMT_PRICE_LIST, 0, NULL)) == NULL) {
			fprintf(stderr, "keygatectl: prices: %s\n",
			    db_errmsg(db));
			return 1;
		}
		printf("%-32s %14s %14s\n", "pattern", "input/Mtok",
		    "output/Mtok");
		for (r = 0; r < db_rows(res); r++)
			printf("%-32s %14.6f %14.6f\n", db_value(res, r, 0),
			    atoll(db_value(res, r, 1)) / 1e6,
			    atoll(db_value(res, r, 2)) / 1e6);
		db_res_free(res);
		return 0;
	}
	if (strcmp(argv[1], "set") == 0 && argc == 5)
		return set_one(db, argv[2], argv[3], argv[4], "set");
	if (strcmp(argv[1], "import") == 0 && argc == 3)
		return import(db, argv[2]);
	usage(stderr);
	return 2;
}
