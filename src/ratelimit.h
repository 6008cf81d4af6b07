/*
 * ratelimit.h -- pacing what reaches the relay: at most `rate' messages
 * in any one-second window, across every process sharing a spool.
 *
 * Only the holder of the runner lock talks to the relay, so the state
 * lives in <spool>/rate and is read and written under that lock.
 */
#ifndef RELAYQ_RATELIMIT_H
#define RELAYQ_RATELIMIT_H

#include <signal.h>

struct ratelimit {
	unsigned	 rate;		/* 0: unlimited */
	long long	*sent;		/* ring of the last `rate' send times */
	unsigned	 next;		/* oldest slot, overwritten next */
	long long	 penalty_until;	/* relay said "slow down" */
	unsigned	 strikes;	/* halvings of the rate in force */
	unsigned	 good;		/* messages taken since the last strike */
	long long	 last;		/* the last send */
	int		 fd;		/* state file, or -1 */
	volatile sig_atomic_t *stop;	/* set by a signal: stop waiting */
};

/* Loads the state for dir (monotonic milliseconds, never in the future). */
void	ratelimit_open(struct ratelimit *, const char *dir, unsigned rate,
	    volatile sig_atomic_t *stop);
void	ratelimit_close(struct ratelimit *);

/* Milliseconds until one more message may start, seen at now_ms. */
long long ratelimit_delay(const struct ratelimit *, long long now_ms);
/* Sleeps until one more message may start.  0, or -1 if stopped. */
int	ratelimit_wait(struct ratelimit *);
/* Records that a message just reached the relay (its reply came). */
void	ratelimit_sent(struct ratelimit *);
/*
 * The relay answered 421/451/454 4.7.x: pause (1 s, doubling with each
 * further strike, at most 60 s), then send at half the rate for each
 * strike in force.
 */
void	ratelimit_throttle(struct ratelimit *);
/* The relay took a message: a second's worth of them lifts one strike. */
void	ratelimit_ok(struct ratelimit *);

#endif
