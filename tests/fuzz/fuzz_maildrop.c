/*
 * fuzz_maildrop.c -- the queue runner taking in a maildrop file
 * (maildrop_pickup), the file written by any local user who may submit:
 * the most exposed parser in relayq.  The runner parses the envelope,
 * runs it through the submission code as the file's owner and spools
 * the message under the file's ID, or moves the file to corrupt/.
 *
 * Input: one flag byte, then the file.  The file's "uid 0" line, if
 * any, is made to name the uid the fuzzer runs as, as the submitter's
 * would (the runner refuses a file whose uid line is not its owner).
 *   flags & 1      config with [sender] address, rewrite = always
 *   flags & 2      mode 0600: not finished yet, to be left alone
 *
 * Checked beyond "no crash": the maildrop is empty afterwards (the file
 * was queued or quarantined, never left to be retried forever), and a
 * queued message reads back (spool_entry_peek) under the file's ID,
 * with the file owner's uid and at least one recipient.
 */
#define _GNU_SOURCE
#define FUZZ_FIXED_HOSTNAME
#include "fuzz.h"

#include <sys/stat.h>

#include "config.h"
#include "maildrop.h"
#include "spool.h"

#define FUZZ_ID		"0001a2b3c4d5e6f7a8b9"

static struct config *cfgs[2];

/*
 * Known issue 2: maildrop_take() passes notify, ret and envid on to the
 * spool unchecked (cli_parse checks them for the command line), and
 * spool_parse_envelope() refuses an empty one, one over 100 octets or
 * one with a space or tab: the message is queued but cannot be read
 * back, and the runner quarantines it.  1 if the envelope has such a
 * value.
 */
static int
bad_dsn_value(const char *p, size_t size)
{
	static const char *const names[] = { "notify", "ret", "envid" };
	size_t i = 0, k;

	while (i < size) {
		const char *l = p + i, *lf = memchr(l, '\n', size - i);
		size_t n = lf != NULL ? (size_t)(lf - l) : size - i;

		i += n + 1;
		if (n == 0)
			break;		/* the end of the envelope */
		for (k = 0; k < 3; k++) {
			size_t nl = strlen(names[k]);
			const char *v = l + nl + 1;
			size_t vn = n - nl - 1;

			if (n == nl && memcmp(l, names[k], nl) == 0)
				return 1;
			if (n <= nl || memcmp(l, names[k], nl) != 0 ||
			    l[nl] != ' ')
				continue;
			if (vn == 0 || vn > 100 || memchr(v, ' ', vn) != NULL ||
			    memchr(v, '\t', vn) != NULL ||
			    memchr(v, '\0', vn) != NULL)
				return 1;
		}
	}
	return 0;
}
static char spooldir[4096];

static struct config *
load(const char *dir, const char *name, const char *text)
{
	char path[4096], err[1024];
	struct config *c;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	fuzz_write_file(path, text, strlen(text));
	if ((c = config_load(path, 0, err, sizeof(err))) == NULL) {
		(void)fprintf(stderr, "fuzz harness: %s\n", err);
		abort();
	}
	return c;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = fuzz_tmpdir();
	char text[8192];

	(void)argc;
	(void)argv;
	(void)snprintf(spooldir, sizeof(spooldir), "%s/spool", dir);
	(void)snprintf(text, sizeof(text),
	    "[relay]\nhost = 127.0.0.1\ntls = none\n"
	    "[queue]\ndir = %s\ndelivery = queue\n"
	    "[sender]\ndomain = example.org\n"
	    "[aliases]\nroot = admin@example.com\n"
	    "postmaster = pm@example.com, \"Two\" <two@example.net>\n",
	    spooldir);
	cfgs[0] = load(dir, "plain.ini", text);
	(void)snprintf(text, sizeof(text),
	    "[relay]\nhost = 127.0.0.1\ntls = none\n"
	    "[queue]\ndir = %s\ndelivery = queue\n"
	    "[sender]\ndomain = example.org\naddress = noreply@example.org\n"
	    "rewrite = always\nreply_to = yes\n"
	    "[aliases]\ndefault = catchall@example.com\n", spooldir);
	cfgs[1] = load(dir, "rewrite.ini", text);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool sp;
	struct spool_entry e;
	struct stat st;
	char err[1024], path[8192], uid[32], *file;
	const char *u;
	size_t n;
	unsigned flags;
	int unfinished, r;

	if (size == 0 || size > 64 * 1024)
		return 0;
	flags = data[0];
	data++;
	size--;
	unfinished = (flags & 2) != 0;

	/* "uid 0" as a line of the envelope: the submitter's uid. */
	(void)snprintf(uid, sizeof(uid), "\nuid %lu\n",
	    (unsigned long)getuid());
	file = malloc(size + sizeof(uid));
	FUZZ_ASSERT(file != NULL);
	if ((u = memmem(data, size, "\nuid 0\n", 7)) != NULL) {
		size_t k = (size_t)(u - (const char *)data);

		memcpy(file, data, k);
		memcpy(file + k, uid, strlen(uid));
		memcpy(file + k + strlen(uid), u + 7, size - k - 7);
		n = size - 7 + strlen(uid);
	} else {
		memcpy(file, data, size);
		n = size;
	}

	fuzz_rmtree(spooldir);
	if (spool_open(&sp, spooldir, err, sizeof(err)) == -1)
		fuzz_die(err);
	(void)snprintf(path, sizeof(path), "%s/%s", spooldir, MAILDROP_SUBDIR);
	if (mkdir(path, 0700) == -1)
		fuzz_die(path);
	(void)snprintf(path, sizeof(path), "%s/%s/%s", spooldir,
	    MAILDROP_SUBDIR, FUZZ_ID);
	fuzz_write_file(path, file, n);
	if (chmod(path, unfinished ? 0600 : 0604) == -1)
		fuzz_die(path);

	(void)maildrop_pickup(cfgs[flags & 1], &sp);

	if (unfinished) {
		/* Fresh and unreadable to others: not finished, left alone. */
		FUZZ_ASSERT(lstat(path, &st) == 0);
		(void)snprintf(path, sizeof(path), "%s/queue/%s", spooldir,
		    FUZZ_ID);
		FUZZ_ASSERT(lstat(path, &st) == -1);
		goto out;
	}
	FUZZ_ASSERT(lstat(path, &st) == -1);	/* taken: maildrop empty */
	(void)snprintf(path, sizeof(path), "%s/queue/%s", spooldir, FUZZ_ID);
	if (lstat(path, &st) == -1) {
		/* Quarantined: corrupt/drop-ID, perhaps with a suffix. */
		(void)snprintf(path, sizeof(path), "%s/corrupt", spooldir);
		FUZZ_ASSERT(fuzz_dir_has(path, "drop-" FUZZ_ID));
		goto out;
	}
	r = spool_entry_peek(&sp, "queue", FUZZ_ID, &e, err, sizeof(err));
	if (r != SPOOL_OPEN_OK && bad_dsn_value(file, n) &&
	    fuzz_waive("maildrop: unchecked notify/ret/envid"))
		goto out;
	FUZZ_ASSERT(r == SPOOL_OPEN_OK);
	FUZZ_ASSERT(e.uid == (unsigned long)getuid());
	FUZZ_ASSERT(e.rcpts.n >= 1);
	FUZZ_ASSERT(e.sender != NULL);
	spool_entry_close(&e);
out:
	free(file);
	spool_close(&sp);
	return 0;
}
