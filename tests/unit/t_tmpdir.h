/*
 * t_tmpdir.h -- a scratch directory per unit test (setup/teardown).
 */
#ifndef T_TMPDIR_H
#define T_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

static char t_dir[64];

static int
t_tmpdir_setup(void **state)
{
	(void)state;
	(void)snprintf(t_dir, sizeof(t_dir), "/tmp/relayq-unit.XXXXXX");
	return mkdtemp(t_dir) != NULL ? 0 : -1;
}

static int
t_tmpdir_teardown(void **state)
{
	char cmd[128];

	(void)state;
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
	return system(cmd) == 0 ? 0 : -1;
}

#endif
