/*
 * t_ratelimit.c -- the sliding window: `rate' messages, then a pause
 * until a second after the oldest; state kept across processes.
 * No test here sleeps: delays are computed for a given clock reading.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "ratelimit.h"
#include "util.h"

#include "t_tmpdir.h"

#define dir t_dir
#define setup t_tmpdir_setup
#define teardown t_tmpdir_teardown

static void
test_window(void **state)
{
	struct ratelimit rl;
	long long now;
	int i;

	(void)state;
	ratelimit_open(&rl, dir, 3, NULL);
	now = util_monotonic_ms();
	assert_int_equal(ratelimit_delay(&rl, now), 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(ratelimit_delay(&rl, util_monotonic_ms()), 0);
		ratelimit_sent(&rl);
	}
	/* The fourth waits for the first to be a second old. */
	now = util_monotonic_ms();
	assert_true(ratelimit_delay(&rl, now) > 500);
	assert_true(ratelimit_delay(&rl, now) <= 1005);	/* 1 s + margin */
	assert_int_equal(ratelimit_delay(&rl, now + 1006), 0);
	ratelimit_close(&rl);

	/* Another process sees the same window. */
	ratelimit_open(&rl, dir, 3, NULL);
	assert_true(ratelimit_delay(&rl, util_monotonic_ms()) > 500);
	ratelimit_close(&rl);
}

static void
test_unlimited_and_throttle(void **state)
{
	struct ratelimit rl;
	long long now;
	int i;

	(void)state;
	ratelimit_open(&rl, dir, 0, NULL);
	for (i = 0; i < 100; i++)
		ratelimit_sent(&rl);
	assert_int_equal(ratelimit_delay(&rl, util_monotonic_ms()), 0);
	/* "Slow down" pauses even an unlimited rate, and doubles. */
	ratelimit_throttle(&rl);
	now = util_monotonic_ms();
	assert_true(ratelimit_delay(&rl, now) > 900);
	ratelimit_throttle(&rl);
	assert_true(ratelimit_delay(&rl, util_monotonic_ms()) > 1900);
	/* After the pause: 10/s halved twice, a 400 ms gap. */
	now = util_monotonic_ms();
	rl.penalty_until = 0;
	rl.last = now;
	assert_true(ratelimit_delay(&rl, now) >= 399);
	assert_int_equal(ratelimit_delay(&rl, now + 400), 0);
	/* Ten messages taken lift one strike: 200 ms. */
	for (i = 0; i < 10; i++)
		ratelimit_ok(&rl);
	assert_int_equal(rl.strikes, 1);
	assert_int_equal(ratelimit_delay(&rl, now + 200), 0);
	assert_true(ratelimit_delay(&rl, now + 100) > 0);
	ratelimit_close(&rl);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unlimited_and_throttle,
		    setup, teardown),
	};

	return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
