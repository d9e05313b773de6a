/*
 * Unit tests for src/core/credits.c's arithmetic: exact decimals of
 * micro-credits, the cost of a call and what a balance still pays for.
 */
#include "../unit.h"

#include <limits.h>

#include "core/credits.h"

static void
format_is_exact_and_short(void **state)
{
	static const struct { long long micro; const char *text; } t[] = {
		{ 50000, "0.05" }, { 10000, "0.01" }, { 0, "0" },
		{ 12000000, "12" }, { 1, "0.000001" }, { 1234567, "1.234567" },
		{ -1, "-0.000001" }, { -2500000, "-2.5" },
		{ 9223372036854775807LL, "9223372036854.775807" },
	};
	char	 out[24];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		credits_format(t[i].micro, out, sizeof(out));
		assert_string_equal(out, t[i].text);
	}
}

static void
cost_rounds_up_with_markup(void **state)
{
	struct credit_price p = { .in_per_mtok = 150000,
	    .out_per_mtok = 600000 };

	(void)state;
	/* 100 * 0.15 + 10 * 0.6 = 21 micro-credits; +25 % = 26.25 -> 27 */
	assert_int_equal(credits_cost(&p, 100, 10, 0), 21);
	assert_int_equal(credits_cost(&p, 100, 10, 0.25), 27);
	/* 27 pays for 11 after the same prompt: (15 + 6.6) * 1.25 = 27. */
	assert_int_equal(credits_affordable_tokens(&p, 100, 0.25, 27), 11);
	assert_int_equal(credits_cost(&p, 100, 11, 0.25), 27);
	assert_int_equal(credits_affordable_tokens(&p, 100, 0.25, 0), 0);
}

/*
 * Counts from clients and providers: negative ones cost nothing, and
 * the largest ones cost the most a bigint holds, never a wrapped value.
 */
static void
cost_of_absurd_counts_saturates(void **state)
{
	struct credit_price p = { .in_per_mtok = 150000,
	    .out_per_mtok = 600000 };
	struct credit_price dear = { .in_per_mtok = LLONG_MAX,
	    .out_per_mtok = LLONG_MAX };

	(void)state;
	assert_int_equal(credits_cost(&p, -5, -1000000, 0), 0);
	assert_int_equal(credits_cost(&p, -5, 10, 0), 6);
	assert_true(credits_cost(&p, 1, LONG_MAX, 0) > 0);
	assert_int_equal(credits_cost(&p, 1, LONG_MAX, 0),
	    credits_cost(&p, 1, 1000000000000000L, 0));
	assert_int_equal(credits_cost(&dear, LONG_MAX, LONG_MAX, 1e6),
	    LLONG_MAX);
	assert_true(credits_cost(&dear, LONG_MAX, LONG_MAX, 0) > 0);
}

/* About four bytes a token, rounded up; never a negative count. */
static void
tokens_of_bytes_round_up(void **state)
{
	(void)state;
	assert_int_equal(credits_tokens_of(0), 0);
	assert_int_equal(credits_tokens_of(1), 1);
	assert_int_equal(credits_tokens_of(4), 1);
	assert_int_equal(credits_tokens_of(5), 2);
	assert_true(credits_tokens_of((size_t)-1) > 0);
	assert_true(credits_tokens_of((size_t)LONG_MAX) > 0);
}

/*
 * A call's bill: the estimate held; then the tokens billed, the
 * provider's counts when told, else the estimate of the prompt and the
 * content passed on; a call cut short never less than what was passed
 * on; and their cost.
 */
static void
bill_counts_what_was_told_or_produced(void **state)
{
	struct credit_price p = { .in_per_mtok = 1000000,
	    .out_per_mtok = 2000000 };
	struct credits_bill b;
	struct credits_told t = { .told = true, .prompt = 10,
	    .completion = 3 };
	long		 in, out;

	(void)state;
	/* 200 bytes of prompt are 50 tokens; 100 output tokens held. */
	assert_int_equal(credits_bill_open(&b, &p, 0, 200, 100),
	    50 + 2 * 100);
	assert_int_equal(b.prompt_estimate, 50);
	assert_int_equal(credits_bill_open(&b, &p, 0.5, 200, -7), 75);
	assert_int_equal(b.max_out, 0);
	credits_bill_progress(&b, 300);
	credits_bill_progress(&b, 100);
	assert_int_equal(b.delivered, 400);
	credits_bill_tokens(&b, &t, false, &in, &out);
	assert_int_equal(in, 10);
	assert_int_equal(out, 3);
	/* Cut short: the count stopped at 3, the 400 bytes sent say 100. */
	credits_bill_tokens(&b, &t, true, &in, &out);
	assert_int_equal(out, 100);
	t.completion = 500;
	credits_bill_tokens(&b, &t, true, &in, &out);
	assert_int_equal(out, 500);
	t.told = false;
	credits_bill_tokens(&b, &t, false, &in, &out);
	assert_int_equal(in, 50);
	assert_int_equal(out, 100);
	/* +50 %, rounded up. */
	assert_int_equal(credits_bill_cost(&b, in, out), (50 + 200) * 3 / 2);
	credits_bill_progress(&b, (size_t)-1);
	assert_true(b.delivered == (size_t)-1);
	credits_bill_tokens(&b, &t, true, &in, &out);
	assert_true(out > 0);
}

UNIT_MAIN(NULL,
    cmocka_unit_test(format_is_exact_and_short),
    cmocka_unit_test(cost_rounds_up_with_markup),
    cmocka_unit_test(cost_of_absurd_counts_saturates),
    cmocka_unit_test(tokens_of_bytes_round_up),
    cmocka_unit_test(bill_counts_what_was_told_or_produced))
