/*
 * Results as lib/db.c hands them out, made in memory: for the tests of a
 * module that queries PostgreSQL.  Such a test defines db_query() (and
 * any other db_ function its module calls) to answer with fake_res(); the
 * program then links none of lib/db.c.  Included after unit.h, by one
 * file of a program only: it defines db_rows(), db_value() and
 * db_res_free().
 */
#ifndef KEYGATE_TESTS_UNIT_FAKE_DB_H
#define KEYGATE_TESTS_UNIT_FAKE_DB_H

#include "lib/db.h"

#define FAKE_DB_COLS	16

struct db_res {
	int	 rows;				/* 0 or 1 */
	char	 v[FAKE_DB_COLS][256];		/* the row's values */
};

/* A new result of no row or one, its values "" until fake_set(). */
static struct db_res *
fake_res(int rows)
{
	struct db_res	*res = calloc(1, sizeof(*res));

	assert_non_null(res);
	assert_true(rows == 0 || rows == 1);
	res->rows = rows;
	return res;
}

/* Sets the row's value in column col to printf-formatted text. */
static void __attribute__((format(printf, 3, 4)))
fake_set(struct db_res *res, int col, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	assert_true(col >= 0 && col < FAKE_DB_COLS);
	va_start(ap, fmt);
	n = vsnprintf(res->v[col], sizeof(res->v[col]), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(res->v[col]));
}

int
db_rows(const struct db_res *res)
{
	return res->rows;
}

const char *
db_value(const struct db_res *res, int row, int col)
{
	assert_true(row >= 0 && row < res->rows);
	assert_true(col >= 0 && col < FAKE_DB_COLS);
	return res->v[col];
}

void
db_res_free(struct db_res *res)
{
	free(res);
}

#endif
