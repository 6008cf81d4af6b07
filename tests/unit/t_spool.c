/*
 * t_spool.c -- commit, re-open, state, and torn or foreign files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool.h"

#include "t_tmpdir.h"

#define dir t_dir
#define setup t_tmpdir_setup
#define teardown t_tmpdir_teardown

/* Spools "data" for two recipients and returns the committed entry. */
static void
spool_one(struct spool *sp, struct spool_entry *e, const char *data)
{
	struct spool_writer *w = malloc(sizeof(*w));
	struct spool_dsn dsn = { "failure,delay", "hdrs", "env-1" };
	struct addr_list r;
	char err[256];

	assert_non_null(w);
	addr_list_init(&r);
	addr_list_add(&r, "a@example.com");
	addr_list_add(&r, "b@example.com");
	assert_int_equal(spool_create(sp, w, 1764133000, "s@example.com", &r, &dsn,
	    err, sizeof(err)), 0);
	assert_int_equal(spool_write(w, data, strlen(data)), 0);
	assert_int_equal(spool_commit(sp, w, 1, 1, e, err, sizeof(err)), 0);
	assert_true(spool_is_id(e->id));
	assert_int_equal(e->data_len, strlen(data));
	addr_list_free(&r);
	free(w);
}

static void
test_commit_and_open(void **state)
{
	struct spool sp;
	struct spool_entry e, e2;
	char err[256], buf[64];

	(void)state;
	assert_int_equal(spool_open(&sp, dir, err, sizeof(err)), 0);
	spool_one(&sp, &e, "Subject: x\r\n\r\nbody\r\n");
	/* The submitter holds the lock: a runner must skip it. */
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_BUSY);
	spool_entry_close(&e);
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_OK);
	assert_string_equal(e2.sender, "s@example.com");
	assert_int_equal(e2.rcpts.n, 2);
	assert_string_equal(e2.rcpts.v[1], "b@example.com");
	assert_int_equal(e2.eightbit, 1);
	assert_int_equal(e2.arrival, 1764133000);
	assert_string_equal(e2.notify, "failure,delay");
	assert_string_equal(e2.ret, "hdrs");
	assert_string_equal(e2.envid, "env-1");
	assert_int_equal(pread(e2.fd, buf, 10, e2.data_off), 10);
	assert_memory_equal(buf, "Subject: x", 10);

	/* State round trip. */
	e2.attempts = 3;
	e2.next_try = 1764134000;
	e2.rstate[0].status = SPOOL_RCPT_DONE;
	e2.rstate[0].code = 250;
	(void)snprintf(e2.rstate[0].text, sizeof(e2.rstate[0].text), "250 ok");
	assert_int_equal(spool_entry_save(&sp, &e2, err, sizeof(err)), 0);
	spool_entry_close(&e2);
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_OK);
	assert_int_equal(e2.attempts, 3);
	assert_int_equal(e2.rstate[0].status, SPOOL_RCPT_DONE);
	assert_string_equal(e2.rstate[0].text, "250 ok");
	assert_int_equal(e2.rstate[1].status, SPOOL_RCPT_PENDING);

	assert_int_equal(spool_entry_done(&sp, &e2, err, sizeof(err)), 0);
	spool_entry_close(&e2);
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_GONE);
	spool_close(&sp);
}

static void
test_torn_file(void **state)
{
	struct spool sp;
	struct spool_entry e, e2;
	char err[256], path[256];

	(void)state;
	assert_int_equal(spool_open(&sp, dir, err, sizeof(err)), 0);
	spool_one(&sp, &e, "Subject: x\r\n\r\nbody\r\n");
	spool_entry_close(&e);
	(void)snprintf(path, sizeof(path), "%s/queue/%s", dir, e.id);
	assert_int_equal(truncate(path, 40), 0);
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_BAD);
	assert_non_null(strstr(err, "torn"));
	spool_close(&sp);
}

static void
test_list_quarantines_foreign(void **state)
{
	struct spool sp;
	struct spool_entry e;
	char err[256], path[256], **ids;
	struct stat st;
	int n;

	(void)state;
	assert_int_equal(spool_open(&sp, dir, err, sizeof(err)), 0);
	spool_one(&sp, &e, "a\r\n");
	spool_entry_close(&e);
	(void)snprintf(path, sizeof(path), "%s/queue/not-an-id", dir);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	n = spool_list(&sp, &ids, err, sizeof(err));
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], e.id);
	spool_free_ids(ids, n);
	assert_int_equal(lstat(path, &st), -1);
	(void)snprintf(path, sizeof(path), "%s/corrupt/not-an-id", dir);
	assert_int_equal(lstat(path, &st), 0);
	spool_close(&sp);
}

static void
test_two_links(void **state)
{
	struct spool sp;
	struct spool_entry e, e2;
	char err[256], qpath[256], twin[256];

	(void)state;
	assert_int_equal(spool_open(&sp, dir, err, sizeof(err)), 0);
	spool_one(&sp, &e, "a\r\n");
	spool_entry_close(&e);
	(void)snprintf(qpath, sizeof(qpath), "%s/queue/%s", dir, e.id);
	/* Mid-commit (link before unlink): busy, never quarantined. */
	(void)snprintf(twin, sizeof(twin), "%s/tmp/%s", dir, e.id);
	assert_int_equal(link(qpath, twin), 0);
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_BUSY);
	assert_int_equal(unlink(twin), 0);
	/* A hard link from anywhere else is hostile. */
	(void)snprintf(twin, sizeof(twin), "%s/elsewhere", dir);
	assert_int_equal(link(qpath, twin), 0);
	assert_int_equal(spool_entry_open(&sp, e.id, &e2, err, sizeof(err)),
	    SPOOL_OPEN_BAD);
	spool_close(&sp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_and_open, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_torn_file, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_list_quarantines_foreign,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_links, setup,
		    teardown),
	};

	return cmocka_run_group_tests_name("spool", tests, NULL, NULL);
}
