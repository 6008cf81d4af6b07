/*
 * fuzz_dialogue.c -- sendmail -bs: dialogue_main() with the input as
 * stdin, its replies on stdout (a memfd), and messages spooled into a
 * private spool on /dev/shm with [queue] delivery = queue, so nothing
 * leaves the process.  The spool is emptied after every input.
 *
 * Input: one flag byte, then what the SMTP client sends.
 *   flags & 3      0: plain config; 1: [sender] address, rewrite =
 *                  always, reply_to; 2, 3: a caller who may not read
 *                  the config (cfg->drop): messages go to the maildrop,
 *                  and the runner's pickup spools them afterwards
 *   flags & 4      -bs with -F, -N, -R, -V and -B 8BITMIME
 *
 * Checked beyond "no crash":
 *   - every reply line is "ddd" or "ddd-" and printable text, CRLF;
 *   - SMTP framing: one final reply per command line, 500 for a line
 *     too long, 501 for one with a NUL, 221 ends it, and after a 354 everything up to the lone
 *     "." is message data (one reply for it), whatever the outcome --
 *     so message data is never taken for commands, and a message cut
 *     short is never accepted;
 *   - "queued as ID": queue/ID reads back (spool_entry_peek) with at
 *     least one recipient; from the maildrop, pickup queues it as ID or
 *     moves it to corrupt/, and leaves the maildrop empty.
 *
 * Speed: a few thousand inputs a second without DATA, fewer with
 * messages (each is written, fsynced and renamed in the spool).
 */
#define _GNU_SOURCE
#define FUZZ_FIXED_HOSTNAME
#include "fuzz.h"

#include <sys/stat.h>

#include <ctype.h>

#include "cli.h"
#include "config.h"
#include "dialogue.h"
#include "maildrop.h"
#include "spool.h"

#define FUZZ_MAX_INPUT	(16 * 1024)
#define FUZZ_MAX_REPLIES (FUZZ_MAX_INPUT + 16)	/* a reply a line, at most */

static struct config *cfgs[3];
static char spooldir[4096], dropdir[4096];
static int outfd = -1;

static char *argv_plain[] = { "sendmail", "-bs", NULL };
static char *argv_opts[] = { "/usr/sbin/sendmail", "-bs", "-FJo Q. Public",
	"-Nsuccess,failure", "-Rhdrs", "-Venv.id-1", "-B8BITMIME", "-oi",
	NULL };
static struct cli_opts opts[2];

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
	char text[8192], err[512];

	(void)argc;
	(void)argv;
	(void)snprintf(spooldir, sizeof(spooldir), "%s/spool", dir);
	(void)snprintf(dropdir, sizeof(dropdir), "%s/maildrop", spooldir);
	(void)snprintf(text, sizeof(text),
	    "[relay]\nhost = 127.0.0.1\ntls = none\n"
	    "[queue]\ndir = %s\ndelivery = queue\n"
	    "[sender]\ndomain = example.org\n"
	    "[aliases]\nroot = admin@example.com\n"
	    "postmaster = pm@example.com, \"Two\" <two@example.net>\n"
	    "default = catchall@example.com\n", spooldir);
	cfgs[0] = load(dir, "plain.ini", text);
	(void)snprintf(text, sizeof(text),
	    "[relay]\nhost = 127.0.0.1\ntls = none\n"
	    "[queue]\ndir = %s\ndelivery = queue\n"
	    "[sender]\ndomain = example.org\naddress = noreply@example.org\n"
	    "rewrite = always\nreply_to = yes\n"
	    "[aliases]\ndefault = catchall@example.com\n", spooldir);
	cfgs[1] = load(dir, "rewrite.ini", text);
	/* As main.c runs a caller who may not read the configuration. */
	cfgs[2] = config_defaults();
	cfgs[2]->drop = 1;
	free(cfgs[2]->queue.dir);
	cfgs[2]->queue.dir = strdup(spooldir);
	cfgs[2]->queue.delivery = CONFIG_DELIVERY_QUEUE;

	if (cli_parse(2, argv_plain, &opts[0], err, sizeof(err)) != 0 ||
	    cli_parse(8, argv_opts, &opts[1], err, sizeof(err)) != 0 ||
	    opts[0].mode != CLI_SMTP || opts[1].mode != CLI_SMTP) {
		(void)fprintf(stderr, "fuzz harness: cli_parse: %s\n", err);
		abort();
	}
	if ((outfd = memfd_create("relayq-fuzz-out", MFD_CLOEXEC)) == -1)
		fuzz_die("memfd_create");
	return 0;
}

/* The final reply codes; checks every reply line on the way. */
static size_t
replies(const char *o, size_t n, int *codes, char ids[][SPOOL_ID_LEN + 1],
    size_t *nids)
{
	size_t i = 0, nc = 0, k;

	*nids = 0;
	while (i < n) {
		const char *l = o + i, *crlf = memmem(l, n - i, "\r\n", 2);
		size_t len;

		FUZZ_ASSERT(crlf != NULL);
		len = (size_t)(crlf - l);
		FUZZ_ASSERT(len >= 4 && isdigit((unsigned char)l[0]) &&
		    isdigit((unsigned char)l[1]) &&
		    isdigit((unsigned char)l[2]) && (l[3] == ' ' ||
		    l[3] == '-'));
		FUZZ_ASSERT(l[0] >= '2' && l[0] <= '5');
		for (k = 0; k < len; k++)
			FUZZ_ASSERT((unsigned char)l[k] >= 0x20 &&
			    l[k] != 0x7f);
		if (l[3] == ' ') {
			static const char q[] = "250 2.0.0 Ok: queued as ";

			FUZZ_ASSERT(nc < FUZZ_MAX_REPLIES);
			codes[nc++] = (l[0] - '0') * 100 + (l[1] - '0') * 10 +
			    (l[2] - '0');
			if (len == sizeof(q) - 1 + SPOOL_ID_LEN &&
			    memcmp(l, q, sizeof(q) - 1) == 0 &&
			    *nids < FUZZ_MAX_REPLIES) {
				memcpy(ids[*nids], l + sizeof(q) - 1,
				    SPOOL_ID_LEN);
				ids[*nids][SPOOL_ID_LEN] = '\0';
				FUZZ_ASSERT(spool_is_id(ids[*nids]));
				(*nids)++;
			}
		}
		i += len + 2;
	}
	return nc;
}

/* The command word of a line, as dialogue.c cuts it. */
static int
is_command(const char *l, size_t n, const char *cmd)
{
	size_t k = 0;

	while (k < n && l[k] != '\0' && l[k] != '\r' && l[k] != '\n' &&
	    l[k] != ' ')
		k++;
	return k == strlen(cmd) && strncasecmp(l, cmd, k) == 0;
}

/* The framing model: see the opening comment. */
static void
check_framing(const char *in, size_t n, const int *codes, size_t nc)
{
	size_t i = 0, r = 0;

	FUZZ_ASSERT(nc >= 1 && codes[r++] == 220);
	while (i < n) {
		const char *l = in + i, *lf = memchr(l, '\n', n - i);
		size_t len = lf != NULL ? (size_t)(lf - l) + 1 : n - i;

		i += len;
		FUZZ_ASSERT(r < nc);
		if (lf == NULL || len > 1000) {
			FUZZ_ASSERT(codes[r++] == 500);
			continue;
		}
		if (memchr(l, '\0', len) != NULL) {
			/* It would cut the command short. */
			FUZZ_ASSERT(codes[r++] == 501);
			continue;
		}
		if (is_command(l, len, "QUIT")) {
			FUZZ_ASSERT(codes[r++] == 221);
			FUZZ_ASSERT(r == nc);
			return;
		}
		if (codes[r++] != 354)
			continue;
		FUZZ_ASSERT(is_command(l, len, "DATA"));
		/* The message, up to a lone ".". */
		for (;;) {
			if (i >= n) {
				/* Input ended inside DATA: nothing queued, and
				 * no reply, or a refusal the data had earned
				 * before (a NUL byte...) -- never a 250. */
				FUZZ_ASSERT(r == nc || (r + 1 == nc &&
				    codes[r] >= 400));
				return;
			}
			l = in + i;
			lf = memchr(l, '\n', n - i);
			len = lf != NULL ? (size_t)(lf - l) + 1 : n - i;
			i += len;
			if ((len == 2 && memcmp(l, ".\n", 2) == 0) ||
			    (len == 3 && memcmp(l, ".\r\n", 3) == 0))
				break;
		}
		FUZZ_ASSERT(r < nc);
		FUZZ_ASSERT(codes[r] == 250 || codes[r] == 451 ||
		    codes[r] == 550 || codes[r] == 554);
		r++;
	}
	FUZZ_ASSERT(r == nc);
}

static void
check_queued(struct spool *sp, const char *id)
{
	struct spool_entry e;
	char err[1024];
	size_t i;

	FUZZ_ASSERT(spool_entry_peek(sp, "queue", id, &e, err, sizeof(err)) ==
	    SPOOL_OPEN_OK);
	FUZZ_ASSERT(e.rcpts.n >= 1);
	for (i = 0; i < e.rcpts.n; i++)
		FUZZ_ASSERT(addr_check_safe(e.rcpts.v[i], err, sizeof(err)) ==
		    0);
	spool_entry_close(&e);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int codes[FUZZ_MAX_REPLIES];
	static char ids[FUZZ_MAX_REPLIES][SPOOL_ID_LEN + 1];
	struct config *cfg;
	struct spool sp;
	struct stat st;
	char err[1024], *out;
	size_t nc, nids, i;
	off_t olen;
	int infd, drop;
	unsigned flags;

	if (size == 0 || size > FUZZ_MAX_INPUT)
		return 0;
	flags = data[0];
	data++;
	size--;
	drop = (flags & 3) >= 2;
	cfg = cfgs[drop ? 2 : flags & 1];

	fuzz_rmtree(spooldir);
	if (mkdir(spooldir, 0700) == -1 || (drop && mkdir(dropdir, 0700) ==
	    -1))
		fuzz_die(spooldir);

	infd = fuzz_memfd(data, size);
	if (dup2(infd, 0) == -1 || dup2(outfd, 1) == -1 ||
	    ftruncate(outfd, 0) == -1 || lseek(outfd, 0, SEEK_SET) == -1)
		fuzz_die("dup2");
	(void)close(infd);

	(void)dialogue_main(cfg, &opts[(flags >> 2) & 1]);

	if (fstat(outfd, &st) == -1 || lseek(outfd, 0, SEEK_SET) == -1)
		fuzz_die("fstat");
	olen = st.st_size;
	out = malloc((size_t)olen + 1);
	FUZZ_ASSERT(out != NULL);
	if (olen > 0 && pread(outfd, out, (size_t)olen, 0) != olen)
		fuzz_die("pread");
	if (getenv("RELAYQ_FUZZ_DEBUG") != NULL)	/* for triage */
		(void)fprintf(stderr, "--- replies:\n%.*s---\n", (int)olen, out);
	nc = replies(out, (size_t)olen, codes, ids, &nids);
	free(out);
	check_framing((const char *)data, size, codes, nc);

	if (spool_open(&sp, spooldir, err, sizeof(err)) == -1)
		fuzz_die(err);
	if (drop) {
		char path[8192], corrupt[8192], prefix[64];

		/* The runner takes the maildrop in, as the service would. */
		(void)maildrop_pickup(cfgs[0], &sp);
		FUZZ_ASSERT(rmdir(dropdir) == 0);	/* nothing left */
		for (i = 0; i < nids; i++) {
			(void)snprintf(path, sizeof(path), "%s/queue/%s",
			    spooldir, ids[i]);
			if (lstat(path, &st) == 0) {
				check_queued(&sp, ids[i]);
				continue;
			}
			/* Quarantined: corrupt/drop-ID, perhaps a suffix. */
			(void)snprintf(corrupt, sizeof(corrupt), "%s/corrupt",
			    spooldir);
			(void)snprintf(prefix, sizeof(prefix), "drop-%s",
			    ids[i]);
			FUZZ_ASSERT(fuzz_dir_has(corrupt, prefix));
		}
	} else
		for (i = 0; i < nids; i++)
			check_queued(&sp, ids[i]);
	spool_close(&sp);
	return 0;
}
