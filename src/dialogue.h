/*
 * dialogue.h -- sendmail -bs: an SMTP server dialogue on stdin/stdout.
 */
#ifndef RELAYQ_DIALOGUE_H
#define RELAYQ_DIALOGUE_H

struct cli_opts;
struct config;

/* Runs the dialogue until QUIT or end of input.  Returns an exit code. */
int	dialogue_main(struct config *, const struct cli_opts *);

#endif
