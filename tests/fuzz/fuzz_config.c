/*
 * fuzz_config.c -- config_load() on the input as relayq.ini (through
 * iniparser, then relayq's own value parsing and checks), without the
 * environment, then the lookups the program makes on a loaded config.
 *
 * iniparser is Debian's uninstrumented library: a crash inside it is
 * still a crash of relayq, but ASan sees only what it does to memory
 * relayq owns.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "config.h"
#include "address.h"

static char *path;

/*
 * Known issue 1: a section "[aliases:NAME]" beside an [aliases] with
 * keys: iniparser lists the subsection's own entry (value NULL) among
 * the [aliases] keys, and config_add_alias() calls strlen(NULL).
 */
static int
has_aliases_subsection(const uint8_t *data, size_t size)
{
	size_t i = 0;

	while (i < size) {
		const uint8_t *l = data + i, *lf = memchr(l, '\n', size - i);
		size_t n = lf != NULL ? (size_t)(lf - l) : size - i, k = 0;

		i += n + 1;
		while (k < n && (l[k] == ' ' || l[k] == '\t'))
			k++;
		if (k >= n || l[k] != '[')
			continue;
		k++;
		while (k < n && (l[k] == ' ' || l[k] == '\t'))
			k++;
		if (n - k >= 8 && strncasecmp((const char *)l + k, "aliases:",
		    8) == 0)
			return 1;
	}
	return 0;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	size_t n;

	(void)argc;
	(void)argv;
	n = strlen(fuzz_tmpdir()) + sizeof("/relayq.ini");
	if ((path = malloc(n)) == NULL)
		fuzz_die("malloc");
	(void)snprintf(path, n, "%s/relayq.ini", fuzz_tmpdir());
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;
	char err[1024], **domains;
	size_t i, n;

	if (size > 64 * 1024)
		return 0;
	if (has_aliases_subsection(data, size) &&
	    fuzz_waive("config: [aliases:NAME] crashes config_load"))
		return 0;
	fuzz_write_file(path, data, size);
	err[0] = '\0';
	cfg = config_load(path, 0, err, sizeof(err));
	if (cfg == NULL) {
		FUZZ_ASSERT(err[0] != '\0');
		FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	/* What validation promises the rest of the program. */
	FUZZ_ASSERT(cfg->relay.host != NULL);
	FUZZ_ASSERT(cfg->queue.dir != NULL && cfg->queue.dir[0] == '/');
	FUZZ_ASSERT(cfg->queue.retry_min <= cfg->queue.retry_max);
	FUZZ_ASSERT(cfg->relay.port >= 1 && cfg->relay.port <= 65535);
	FUZZ_ASSERT(cfg->sender.address == NULL ||
	    addr_is_mailbox(cfg->sender.address));
	FUZZ_ASSERT(cfg->dkim.nkeys <= 2);
	for (i = 0; i < cfg->naliases; i++) {
		size_t j;

		FUZZ_ASSERT(cfg->aliases[i].nto > 0);
		for (j = 0; j < cfg->aliases[i].nto; j++)
			FUZZ_ASSERT(addr_is_mailbox(cfg->aliases[i].to[j]));
		FUZZ_ASSERT(config_alias(cfg, cfg->aliases[i].name) != NULL);
	}

	n = config_domains(cfg, &domains);
	for (i = 0; i < n; i++) {
		char *addr = malloc(strlen(domains[i]) + 3);

		FUZZ_ASSERT(addr != NULL);
		(void)config_user_for_domain(cfg, domains[i]);
		addr[0] = 'u';
		addr[1] = '@';
		memcpy(addr + 2, domains[i], strlen(domains[i]) + 1);
		(void)config_account_for(cfg, addr);
		free(addr);
	}
	config_free_list(domains, n);
	(void)config_alias(cfg, "root");
	(void)config_alias(cfg, "default");
	(void)config_account_for(cfg, "someone@example.com");
	(void)config_account_for(cfg, "");
	config_free(cfg);
	return 0;
}
