/*
 * check.h -- relayq check and relayq dns-records.
 *
 * dns-records prints, ready to paste into a zone, the records each
 * sender domain needs; check looks them up, says per record PASS or
 * FAIL and what to write instead, then probes the relay (preflight.c).
 * Exit status: 0 all passed, 1 something failed, sysexits otherwise.
 */
#ifndef RELAYQ_CHECK_H
#define RELAYQ_CHECK_H

struct cli_opts;
struct config;

int	check_main(struct config *, const struct cli_opts *);
int	check_dns_records(struct config *, const struct cli_opts *);

#endif
