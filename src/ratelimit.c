/*
 * ratelimit.c -- pacing what reaches the relay.
 *
 * A token bucket lets a full bucket go out at once and refill during the
 * same second, so a window can see up to twice the rate.  Instead this
 * keeps the times of the last `rate' messages (a sliding-window log on
 * CLOCK_MONOTONIC): a message starts only one second after the reply to
 * the message `rate' places before it.  It reached the relay before that
 * reply, and this one reaches it after it starts, so no second holds more
 * than `rate' arrivals; with a backlog, `rate' go out every second (plus
 * one round trip).  When the relay asks to slow down, each strike halves
 * the rate (a minimum gap between messages) until it has taken a second's
 * worth of messages again.  The state file is text: a header, "penalty
 * strikes good last", and the send times.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"

#define RATE_MAGIC	"relayq-rate 2"
/* One second, plus a margin for the millisecond clock and for the relay
 * stamping an arrival a moment before we see its reply. */
#define RATE_WINDOW_MS	1005
#define RATE_PENALTY_MAX_MS 60000
#define RATE_STRIKES_MAX 7	/* 1, 2, 4 ... 64 s pauses; 1/128 of the rate */

static void
ratelimit_load(struct ratelimit *rl)
{
	char *text, *p, *end;
	long long now = util_monotonic_ms(), v;
	unsigned i = 0;
	ssize_t n;

	text = xmalloc(32 * (size_t)(rl->rate + 4));
	n = pread(rl->fd, text, 32 * (size_t)(rl->rate + 4) - 1, 0);
	if (n <= 0 || strncmp(text, RATE_MAGIC "\n", strlen(RATE_MAGIC) + 1)
	    != 0) {
		free(text);
		return;
	}
	text[n] = '\0';
	p = text + strlen(RATE_MAGIC) + 1;
	errno = 0;
	v = strtoll(p, &end, 10);
	if (errno == 0 && end != p && v <= now + RATE_PENALTY_MAX_MS)
		rl->penalty_until = v;
	p = end;
	v = strtoll(p, &end, 10);
	if (end != p && v >= 0 && v <= RATE_STRIKES_MAX)
		rl->strikes = (unsigned)v;
	p = end;
	v = strtoll(p, &end, 10);
	if (end != p && v >= 0 && v < 1000000)
		rl->good = (unsigned)v;
	p = end;
	v = strtoll(p, &end, 10);
	if (end != p)
		rl->last = v <= now ? v : now;
	for (p = end; i < rl->rate; p = end) {
		errno = 0;
		v = strtoll(p, &end, 10);
		if (errno != 0 || end == p)
			break;
		/* After a reboot the clock restarts: no time from the future. */
		rl->sent[i++] = v <= now ? v : now;
	}
	free(text);
}

/*
 * The state file, rewritten in place: a hard link planted there would
 * have us write into its target, so anything but a plain file of ours
 * with one link is replaced.
 */
static int
ratelimit_open_file(const char *path)
{
	struct stat st;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd != -1 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_nlink == 1 && st.st_uid == geteuid())
		return fd;
	if (fd != -1)
		(void)close(fd);
	if (unlink(path) == -1 && errno != ENOENT)
		return -1;
	return open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
}

void
ratelimit_open(struct ratelimit *rl, const char *dir, unsigned rate,
    volatile sig_atomic_t *stop)
{
	char path[4096];
	unsigned i;

	memset(rl, 0, sizeof(*rl));
	rl->rate = rate;
	rl->stop = stop;
	rl->fd = -1;
	if (rate == 0)
		return;
	rl->sent = xcalloc(rate, sizeof(*rl->sent));
	for (i = 0; i < rate; i++)
		rl->sent[i] = -RATE_WINDOW_MS * 2;
	if (util_snprintf(path, sizeof(path), "%s/rate", dir) == 0)
		rl->fd = ratelimit_open_file(path);
	if (rl->fd != -1)
		ratelimit_load(rl);
}

/* Writes the state; losing it in a crash only forgets one second. */
static void
ratelimit_save(struct ratelimit *rl)
{
	struct buf b;
	unsigned i;

	if (rl->fd == -1)
		return;
	buf_init(&b);
	buf_printf(&b, "%s\n%lld %u %u %lld\n", RATE_MAGIC, rl->penalty_until,
	    rl->strikes, rl->good, rl->last);
	for (i = 0; i < rl->rate; i++)
		buf_printf(&b, "%lld\n", rl->sent[(rl->next + i) % rl->rate]);
	/* A failed write only forgets the recent past: note it, go on. */
	if (util_pwrite_all(rl->fd, b.data, b.len, 0) == -1 ||
	    ftruncate(rl->fd, (off_t)b.len) == -1)
		log_debug("saving the rate state: %s", strerror(errno));
	buf_free(&b);
}

void
ratelimit_close(struct ratelimit *rl)
{
	if (rl->fd != -1) {
		ratelimit_save(rl);
		(void)close(rl->fd);
	}
	free(rl->sent);
	memset(rl, 0, sizeof(*rl));
	rl->fd = -1;
}

long long
ratelimit_delay(const struct ratelimit *rl, long long now)
{
	long long until = rl->penalty_until, gap;

	if (rl->rate > 0 && rl->sent[rl->next] + RATE_WINDOW_MS > until)
		until = rl->sent[rl->next] + RATE_WINDOW_MS;
	if (rl->strikes > 0) {
		/* Slowed down: the rate (10/s when unlimited) halved per
		 * strike, as a gap between messages. */
		gap = (1000LL << rl->strikes) / (rl->rate > 0 ? rl->rate : 10);
		if (rl->last + gap > until)
			until = rl->last + gap;
	}
	return until > now ? until - now : 0;
}

int
ratelimit_wait(struct ratelimit *rl)
{
	for (;;) {
		long long ms = ratelimit_delay(rl, util_monotonic_ms());
		struct timespec ts;

		if (rl->stop != NULL && *rl->stop)
			return -1;
		if (ms == 0)
			return 0;
		/* Short naps, so that a stop request is seen soon. */
		if (ms > 200)
			ms = 200;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)ms * 1000000L;
		(void)nanosleep(&ts, NULL);
	}
}

void
ratelimit_sent(struct ratelimit *rl)
{
	rl->last = util_monotonic_ms();
	if (rl->rate > 0) {
		rl->sent[rl->next] = rl->last;
		rl->next = (rl->next + 1) % rl->rate;
	}
	if (rl->rate > 0 || rl->strikes > 0)
		ratelimit_save(rl);
}

void
ratelimit_throttle(struct ratelimit *rl)
{
	long long ms = 1000;

	if (rl->strikes < RATE_STRIKES_MAX)
		rl->strikes++;
	rl->good = 0;
	ms <<= rl->strikes - 1;
	if (ms > RATE_PENALTY_MAX_MS)
		ms = RATE_PENALTY_MAX_MS;
	rl->penalty_until = util_monotonic_ms() + ms;
	ratelimit_save(rl);
}

void
ratelimit_ok(struct ratelimit *rl)
{
	if (rl->strikes == 0)
		return;
	if (++rl->good >= (rl->rate > 0 ? rl->rate : 10)) {
		rl->strikes--;
		rl->good = 0;
	}
}
