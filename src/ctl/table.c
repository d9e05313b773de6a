/*
 * What keygatectl's table commands share (prices, openrouter-models): the
 * list / set / import verbs, and an import file read line by line and
 * applied in one transaction, all lines or none.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "lib/db.h"

#define MAX_FIELDS	4	/* per line, one more than any table takes */

/* Splits line at blanks into at most MAX_FIELDS fields; their count. */
static int
split(char *line, char *field[MAX_FIELDS])
{
	char	*save = NULL, *f;
	int	 n = 0;

	for (f = strtok_r(line, " \t", &save); f != NULL;
	    f = strtok_r(NULL, " \t", &save)) {
		if (n == MAX_FIELDS)
			return MAX_FIELDS + 1;
		field[n++] = f;
	}
	return n;
}

/* One line's fields (NULL: a line with another count) into the table. */
static int
set_one(const struct ctl_table *t, struct db *db, char *const *field,
    const char *where)
{
	const char	*param[MAX_FIELDS];
	char		 store[MAX_FIELDS][32];

	if (field == NULL || !t->check(field, param, store)) {
		fprintf(stderr, "keygatectl: %s: %s: expected %s\n", t->command,
		    where, t->expected);
		return 2;
	}
	if (db_exec(db, (enum stmt)t->set_stmt, t->nfields, param) == -1) {
		fprintf(stderr, "keygatectl: %s: %s\n", t->command,
		    db_errmsg(db));
		return 1;
	}
	return 0;
}

static int
list(const struct ctl_table *t, struct db *db)
{
	struct db_res	*res;
	int		 r;

	if ((res = db_query(db, (enum stmt)t->list_stmt, 0, NULL)) == NULL) {
		fprintf(stderr, "keygatectl: %s: %s\n", t->command,
		    db_errmsg(db));
		return 1;
	}
	printf("%s\n", t->header);
	for (r = 0; r < db_rows(res); r++)
		t->print(res, r);
	db_res_free(res);
	return 0;
}

static int
import(const struct ctl_table *t, struct db *db, const char *path)
{
	FILE	*f;
	char	*line = NULL, *field[MAX_FIELDS], where[1100];
	size_t	 cap = 0;
	unsigned lineno = 0, n = 0;
	int	 rc = 0, k;

	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "keygatectl: %s import: %s: %s\n", t->command,
		    path, strerror(errno));
		return 1;
	}
	if (db_begin(db) == -1) {
		fclose(f);
		fprintf(stderr, "keygatectl: %s: %s\n", t->command,
		    db_errmsg(db));
		return 1;
	}
	while (rc == 0 && getline(&line, &cap, f) != -1) {
		lineno++;
		line[strcspn(line, "#\r\n")] = '\0';
		if ((k = split(line, field)) == 0)
			continue;
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		rc = set_one(t, db, k == t->nfields ? field : NULL, where);
		n++;
	}
	free(line);
	fclose(f);
	if (rc != 0 || db_commit(db) == -1) {
		db_rollback(db);
		fprintf(stderr, "keygatectl: %s import: nothing was changed\n",
		    t->command);
		return rc != 0 ? rc : 1;
	}
	printf("imported %u %s\n", n, t->things);
	return 0;
}

int
ctl_table(const struct ctl_table *t, struct db *db, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(t->usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "list") == 0 && argc == 2)
		return list(t, db);
	if (strcmp(argv[1], "set") == 0 && argc == 2 + t->nfields)
		return set_one(t, db, argv + 2, "set");
	if (strcmp(argv[1], "import") == 0 && argc == 3)
		return import(t, db, argv[2]);
	fputs(t->usage, stderr);
	return 2;
}
