/*
 * config.c -- the ini file (relayq.ini(5)) and its environment overrides.
 *
 * iniparser 4.1 quirks this file works around (see the API notes): its
 * numbers are parsed with strtol(s, NULL, 0) ("0587" is octal), it keeps
 * no line numbers, reports syntax errors through a global printf-style
 * callback, and returns pointers into its dictionary.  So values are read
 * as strings only, parsed here, copied out, and a second small scan of the
 * file finds the line of a key for error messages.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <iniparser.h>

#include "address.h"
#include "config.h"
#include "dkim.h"
#include "dns.h"
#include "util.h"

enum config_type { T_STRING, T_PORT, T_SECONDS, T_TLS, T_DELIVERY, T_LOG,
	T_RATE, T_LIFETIME, T_COUNT, T_RETRY, T_REWRITE, T_BOOL, T_SIZE,
	T_IDLE };

struct config_key {
	const char	*section;
	const char	*name;
	enum config_type type;
	const char	*def;		/* default, NULL: unset */
	size_t		 offset;	/* into struct config */
};

#define OFF(f) offsetof(struct config, f)

static int config_validate_dkim(struct config *, char *, size_t);
static const struct config_key config_keys[] = {
	{ "relay", "host", T_STRING, "smtp.elastx.email", OFF(relay.host) },
	{ "relay", "port", T_PORT, "587", OFF(relay.port) },
	{ "relay", "tls", T_TLS, "starttls", OFF(relay.tls) },
	{ "relay", "ca_file", T_STRING, NULL, OFF(relay.ca_file) },
	{ "relay", "pin_sha256", T_STRING, NULL, OFF(relay.pin_sha256) },
	{ "relay", "user", T_STRING, NULL, OFF(relay.user) },
	{ "relay", "password", T_STRING, NULL, OFF(relay.password) },
	{ "relay", "password_file", T_STRING, NULL, OFF(relay.password_file) },
	{ "relay", "timeout", T_SECONDS, "300", OFF(relay.timeout) },
	{ "queue", "dir", T_STRING, SPOOLDIR, OFF(queue.dir) },
	{ "queue", "delivery", T_DELIVERY, "foreground", OFF(queue.delivery) },
	{ "queue", "rate", T_RATE, "10", OFF(queue.rate) },
	{ "queue", "lifetime", T_LIFETIME, "5d", OFF(queue.lifetime) },
	{ "queue", "min_attempts", T_COUNT, "3", OFF(queue.min_attempts) },
	{ "queue", "retry_min", T_RETRY, "1m", OFF(queue.retry_min) },
	{ "queue", "retry_max", T_RETRY, "1h", OFF(queue.retry_max) },
	{ "queue", "session_max", T_COUNT, "100", OFF(queue.session_max) },
	{ "queue", "wait", T_SECONDS, "2m", OFF(queue.wait) },
	{ "queue", "max_size", T_SIZE, "0", OFF(queue.max_size) },
	{ "queue", "idle", T_IDLE, "5s", OFF(queue.idle) },
	{ "sender", "domain", T_STRING, NULL, OFF(sender.domain) },
	{ "sender", "address", T_STRING, NULL, OFF(sender.address) },
	{ "sender", "rewrite", T_REWRITE, "local", OFF(sender.rewrite) },
	{ "sender", "reply_to", T_BOOL, "no", OFF(sender.reply_to) },
	{ "dkim", "domain", T_STRING, NULL, OFF(dkim.domain) },
	{ "dkim", "selector", T_STRING, NULL, OFF(dkim.selector) },
	{ "dkim", "key_file", T_STRING, NULL, OFF(dkim.key_file) },
	{ "dkim", "require", T_BOOL, "no", OFF(dkim.require) },
	{ "dns", "server", T_STRING, NULL, OFF(dns.server) },
	{ "log", "target", T_LOG, "auto", OFF(log.target) },
};
#undef OFF

/* The words each enum-valued key accepts. */
struct config_enum {
	enum config_type type;
	const char	*name;
	int		 value;
};

static const struct config_enum config_enums[] = {
	{ T_TLS, "starttls", CONFIG_TLS_STARTTLS },
	{ T_TLS, "tls", CONFIG_TLS_IMPLICIT },
	{ T_TLS, "none", CONFIG_TLS_NONE },
	{ T_DELIVERY, "foreground", CONFIG_DELIVERY_FOREGROUND },
	{ T_DELIVERY, "background", CONFIG_DELIVERY_BACKGROUND },
	{ T_DELIVERY, "queue", CONFIG_DELIVERY_QUEUE },
	{ T_LOG, "auto", LOG_TARGET_AUTO },
	{ T_LOG, "syslog", LOG_TARGET_SYSLOG },
	{ T_LOG, "stderr", LOG_TARGET_STDERR },
	{ T_REWRITE, "local", CONFIG_REWRITE_LOCAL },
	{ T_REWRITE, "always", CONFIG_REWRITE_ALWAYS },
	{ T_REWRITE, "never", CONFIG_REWRITE_NEVER },
	{ T_BOOL, "yes", 1 },
	{ T_BOOL, "no", 0 },
	{ 0, NULL, 0 }
};

/* iniparser reports syntax errors through this global hook. */
static char config_ini_error[512];

static int
config_ini_errback(const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(config_ini_error);

	if (n + 1 >= sizeof(config_ini_error))
		return 0;
	va_start(ap, fmt);
	(void)vsnprintf(config_ini_error + n, sizeof(config_ini_error) - n,
	    fmt, ap);
	va_end(ap);
	return 0;
}

/*
 * Finds the line of "key" in "[section]" of path, the way iniparser reads
 * it (names are case-insensitive).  Returns 0 if not found.
 */
static int
config_find_line(const char *path, const char *section, const char *key)
{
	char line[1100], cur[128] = "";
	FILE *fp;
	int lineno = 0, found = 0;

	if (path == NULL || (fp = fopen(path, "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		char *p = line, *e;
		size_t n;

		lineno++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '[') {
			p++;
			while (isspace((unsigned char)*p))
				p++;
			if ((e = strchr(p, ']')) == NULL)
				continue;
			while (e > p && isspace((unsigned char)e[-1]))
				e--;
			n = (size_t)(e - p);
			if (n >= sizeof(cur))
				n = sizeof(cur) - 1;
			memcpy(cur, p, n);
			cur[n] = '\0';
			continue;
		}
		if (!util_strcaseeq(cur, section))
			continue;
		e = p;
		while (*e != '\0' && *e != '=' && !isspace((unsigned char)*e))
			e++;
		n = (size_t)(e - p);
		if (n == strlen(key) && util_strncaseeq(p, key, n)) {
			found = lineno;	/* iniparser: the last one wins */
		}
	}
	(void)fclose(fp);
	return found;
}

static void
config_error(char *err, size_t errlen, const char *path, const char *section,
    const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void
config_error(char *err, size_t errlen, const char *path, const char *section,
    const char *key, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	int line;

	va_start(ap, fmt);
	(void)vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	line = config_find_line(path, section, key);
	if (path == NULL) {
		/* From the environment: name the variable as it is set. */
		char var[160];
		size_t i;

		(void)util_snprintf(var, sizeof(var), "RELAYQ_%s_%s", section,
		    key);
		for (i = 0; var[i] != '\0'; i++)
			var[i] = (char)toupper((unsigned char)var[i]);
		(void)util_snprintf(err, errlen, "%s: %s", var, what);
	} else if (line > 0)
		(void)util_snprintf(err, errlen, "%s:%d: [%s] %s: %s",
		    path, line, section, key, what);
	else
		(void)util_snprintf(err, errlen, "%s: [%s] %s: %s",
		    path, section, key, what);
}

static const struct config_key *
config_lookup(const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < UTIL_ARRAYLEN(config_keys); i++)
		if (util_strcaseeq(config_keys[i].section, section) &&
		    util_strcaseeq(config_keys[i].name, name))
			return &config_keys[i];
	return NULL;
}

/* Stores one value; src names where it came from for errors. */
static int
config_set(struct config *cfg, const struct config_key *k, const char *val,
    const char *src, char *err, size_t errlen)
{
	char *base = (char *)cfg;
	unsigned long n;

	switch (k->type) {
	case T_STRING: {
		char **dst = (char **)(void *)(base + k->offset);

		free(*dst);
		*dst = (val[0] != '\0') ? xstrdup(val) : NULL;
		return 0;
	}
	case T_PORT:
		if (util_parse_ulong(val, 1, 65535, &n) == -1)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_SECONDS:
		if (util_parse_duration(val, &n) == -1 || n < 1 || n > 86400)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_IDLE:
		if (util_parse_duration(val, &n) == -1 || n > 3600)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_RETRY:
		if (util_parse_duration(val, &n) == -1 || n < 1 ||
		    n > 7 * 86400)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_LIFETIME:
		if (util_parse_duration(val, &n) == -1 || n < 60 ||
		    n > 365 * 86400)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_RATE:
		if (util_parse_ulong(val, 0, 1000, &n) == -1)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_COUNT:
		if (util_parse_ulong(val, 1, 100000, &n) == -1)
			goto bad;
		*(unsigned *)(void *)(base + k->offset) = (unsigned)n;
		return 0;
	case T_SIZE: {
		/* Octets, or with k, M or G (powers of 1024). */
		char num[32];
		size_t len = strlen(val);
		unsigned long mult = 1;

		if (len == 0 || len >= sizeof(num))
			goto bad;
		memcpy(num, val, len + 1);
		switch (num[len - 1]) {
		case 'k': case 'K': mult = 1UL << 10; num[--len] = '\0'; break;
		case 'M': mult = 1UL << 20; num[--len] = '\0'; break;
		case 'G': mult = 1UL << 30; num[--len] = '\0'; break;
		default: break;
		}
		if (util_parse_ulong(num, 0, 64UL << 30, &n) == -1 ||
		    n > (64UL << 30) / mult)
			goto bad;
		*(unsigned long long *)(void *)(base + k->offset) =
		    (unsigned long long)n * mult;
		return 0;
	}
	case T_TLS:
	case T_DELIVERY:
	case T_LOG:
	case T_REWRITE:
	case T_BOOL: {
		const struct config_enum *e;

		for (e = config_enums; e->name != NULL; e++)
			if (e->type == k->type && strcmp(e->name, val) == 0) {
				*(int *)(void *)(base + k->offset) = e->value;
				return 0;
			}
		goto bad;
	}
	}
bad:
	{
		static const char *const expect[] = {
			[T_STRING] = "a string",
			[T_PORT] = "a port number from 1 to 65535",
			[T_SECONDS] = "a duration from 1s to 1d (e.g. 300, 5m)",
			[T_TLS] = "starttls, tls or none",
			[T_DELIVERY] = "foreground, background or queue",
			[T_LOG] = "auto, syslog or stderr",
			[T_RATE] = "messages per second from 0 (unlimited) "
			    "to 1000",
			[T_LIFETIME] = "a duration from 1m to 365d (e.g. 5d)",
			[T_COUNT] = "a whole number from 1 to 100000",
			[T_RETRY] = "a duration from 1s to 7d (e.g. 1m, 1h)",
			[T_REWRITE] = "local, always or never",
			[T_BOOL] = "yes or no",
			[T_SIZE] = "a size in octets, k, M or G (e.g. 25M), "
			    "0 for no limit",
			[T_IDLE] = "a duration from 0 (off) to 1h (e.g. 5s)",
		};
		char shown[64];

		util_sanitize(shown, sizeof(shown), val, strlen(val));
		config_error(err, errlen, src, k->section, k->name,
		    "invalid value \"%s\" (expected %s)", shown,
		    expect[k->type]);
	}
	return -1;
}

/* Rejects sections and keys that the table does not know. */
static int
config_check_unknown(dictionary *d, const char *path, char *err, size_t errlen)
{
	int i, nsec = iniparser_getnsec(d);

	for (i = 0; i < nsec; i++) {
		const char *sec = iniparser_getsecname(d, i);
		const char **keys;
		int j, nkeys;
		size_t k, known = 0;

		if (sec == NULL || strcmp(sec, "aliases") == 0)
			continue;	/* any local name is a key there */
		for (k = 0; k < UTIL_ARRAYLEN(config_keys); k++)
			if (strcmp(config_keys[k].section, sec) == 0)
				known = 1;
		known |= strncmp(sec, "account ", 8) == 0;
		if (!known) {
			(void)util_snprintf(err, errlen,
			    "%s: unknown section [%s]", path, sec);
			return -1;
		}
		nkeys = iniparser_getsecnkeys(d, sec);
		if (nkeys <= 0)
			continue;
		keys = xcalloc((size_t)nkeys, sizeof(*keys));
		if (iniparser_getseckeys(d, sec, keys) == NULL) {
			free(keys);
			continue;
		}
		for (j = 0; j < nkeys; j++) {
			const char *name = strchr(keys[j], ':');

			name = name != NULL ? name + 1 : keys[j];
			if (strncmp(sec, "account ", 8) == 0 ?
			    strcmp(name, "user") != 0 &&
			    strcmp(name, "password") != 0 &&
			    strcmp(name, "password_file") != 0 :
			    config_lookup(sec, name) == NULL) {
				config_error(err, errlen, path, sec, name,
				    "unknown key");
				free(keys);
				return -1;
			}
		}
		free(keys);
	}
	/* Keys before any section end up as ":key". */
	for (i = 0; i < d->size; i++) {
		if (d->key[i] != NULL && d->key[i][0] == ':') {
			(void)util_snprintf(err, errlen,
			    "%s: key \"%s\" is outside any [section]", path,
			    d->key[i] + 1);
			return -1;
		}
	}
	return 0;
}

/* Adds or replaces an alias; value is a list of full addresses. */
static int
config_add_alias(struct config *cfg, const char *name, const char *value,
    const char *src, char *err, size_t errlen)
{
	struct config_alias *a = NULL;
	struct addr_list l;
	char why[256], lname[128];
	size_t i;

	for (i = 0; i < sizeof(lname) - 1 && name[i] != '\0'; i++)
		lname[i] = (char)tolower((unsigned char)name[i]);
	lname[i] = '\0';
	addr_list_init(&l);
	why[0] = '\0';
	if (addr_list_parse(value, strlen(value), &l, why, sizeof(why)) == -1 ||
	    l.n == 0) {
		config_error(err, errlen, src, "aliases", lname, "%s",
		    why[0] == '\0' ? "is empty" : why);
		addr_list_free(&l);
		return -1;
	}
	for (i = 0; i < l.n; i++) {
		if (!addr_is_mailbox(l.v[i])) {
			config_error(err, errlen, src, "aliases", lname,
			    "\"%s\" is not a full address (user@domain)",
			    l.v[i]);
			addr_list_free(&l);
			return -1;
		}
	}
	for (i = 0; i < cfg->naliases; i++)
		if (strcmp(cfg->aliases[i].name, lname) == 0)
			a = &cfg->aliases[i];
	if (a == NULL) {
		cfg->aliases = xreallocarray(cfg->aliases, cfg->naliases + 1,
		    sizeof(*cfg->aliases));
		a = &cfg->aliases[cfg->naliases++];
		a->name = xstrdup(lname);
	} else {
		for (i = 0; i < a->nto; i++)
			free(a->to[i]);
		free(a->to);
	}
	a->to = l.v;		/* the strings move over; the index goes */
	a->nto = l.n;
	free(l.slots);
	return 0;
}

static int
config_read_aliases(struct config *cfg, dictionary *d, const char *path,
    char *err, size_t errlen)
{
	const char **keys;
	int j, n = iniparser_getsecnkeys(d, "aliases");

	if (n <= 0)
		return 0;
	keys = xcalloc((size_t)n, sizeof(*keys));
	if (iniparser_getseckeys(d, "aliases", keys) == NULL) {
		free(keys);
		return 0;
	}
	for (j = 0; j < n; j++) {
		const char *v = iniparser_getstring(d, keys[j], "");

		/* iniparser lists a section [aliases:x] as a key without a
		 * value. */
		if (v == NULL) {
			(void)util_snprintf(err, errlen, "%s: unknown section "
			    "[%.100s]", path, keys[j]);
			free(keys);
			return -1;
		}
		if (config_add_alias(cfg, keys[j] + strlen("aliases:"), v,
		    path, err, errlen) == -1) {
			free(keys);
			return -1;
		}
	}
	free(keys);
	return 0;
}

static int
config_read_accounts(struct config *cfg, dictionary *d, const char *path,
    char *err, size_t errlen)
{
	int i, nsec = iniparser_getnsec(d);

	for (i = 0; i < nsec; i++) {
		const char *sec = iniparser_getsecname(d, i), *v;
		struct config_account *a;
		char key[300];

		if (sec == NULL || strncmp(sec, "account ", 8) != 0)
			continue;
		cfg->accounts = xreallocarray(cfg->accounts,
		    cfg->naccounts + 1, sizeof(*cfg->accounts));
		a = &cfg->accounts[cfg->naccounts++];
		memset(a, 0, sizeof(*a));
		a->domain = xstrdup(sec + 8);
		(void)util_snprintf(key, sizeof(key), "%s:user", sec);
		if ((v = iniparser_getstring(d, key, NULL)) != NULL && *v)
			a->user = xstrdup(v);
		(void)util_snprintf(key, sizeof(key), "%s:password", sec);
		if ((v = iniparser_getstring(d, key, NULL)) != NULL && *v)
			a->password = xstrdup(v);
		(void)util_snprintf(key, sizeof(key), "%s:password_file", sec);
		if ((v = iniparser_getstring(d, key, NULL)) != NULL && *v)
			a->password_file = xstrdup(v);
		if (!addr_is_mailbox(sec + 8) && strchr(sec + 8, '.') == NULL) {
			config_error(err, errlen, path, sec, "user",
			    "the section name must be [account DOMAIN]");
			return -1;
		}
		if (a->user == NULL || strlen(a->user) > 255) {
			config_error(err, errlen, path, sec, "user",
			    "is required (at most 255 characters)");
			return -1;
		}
		if ((a->password == NULL) == (a->password_file == NULL)) {
			config_error(err, errlen, path, sec, "password",
			    "set exactly one of password and password_file");
			return -1;
		}
	}
	return 0;
}

static int
config_read_file(struct config *cfg, const char *path, char *err,
    size_t errlen)
{
	dictionary *d;
	size_t i;

	config_ini_error[0] = '\0';
	iniparser_set_error_callback(config_ini_errback);
	d = iniparser_load(path);
	iniparser_set_error_callback(NULL);
	if (d == NULL) {
		char why[512];

		if (config_ini_error[0] != '\0')
			util_sanitize(why, sizeof(why), config_ini_error,
			    strlen(config_ini_error));
		else
			(void)util_strlcpy(why, "cannot be parsed (a line of "
			    "1023 characters or more, or a byte order mark?)",
			    sizeof(why));
		(void)util_snprintf(err, errlen, "%s: %s", path, why);
		return -1;
	}
	if (config_check_unknown(d, path, err, errlen) == -1)
		goto fail;
	for (i = 0; i < UTIL_ARRAYLEN(config_keys); i++) {
		const struct config_key *k = &config_keys[i];
		char name[128];
		const char *v;

		(void)util_snprintf(name, sizeof(name), "%s:%s", k->section,
		    k->name);
		if ((v = iniparser_getstring(d, name, NULL)) == NULL)
			continue;
		if (config_set(cfg, k, v, path, err, errlen) == -1)
			goto fail;
	}
	if (config_read_aliases(cfg, d, path, err, errlen) == -1 ||
	    config_read_accounts(cfg, d, path, err, errlen) == -1)
		goto fail;
	iniparser_freedict(d);
	return 0;
fail:
	iniparser_freedict(d);
	return -1;
}

extern char **environ;

/* The first line of a file named by a variable (NAME_FILE).  Or NULL. */
static char *
config_read_value_file(const char *path, const char *var, char *err,
    size_t errlen)
{
	char buf[4096], *v;
	ssize_t n;
	size_t len = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		(void)util_snprintf(err, errlen, "%s: %s: %s", var, path,
		    strerror(errno));
		return NULL;
	}
	while (len < sizeof(buf) - 1 && (n = util_read(fd, buf + len,
	    sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	(void)close(fd);
	buf[len] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	v = xstrdup(buf);
	util_wipe(buf, sizeof(buf));	/* it may be a secret */
	return v;
}

/* RELAYQ_<SECTION>_<KEY>=value, for unprivileged runs and containers. */
static int
config_read_env(struct config *cfg, char *err, size_t errlen)
{
	size_t i, j;
	char **ep;

	/* RELAYQ_ALIASES_<NAME>=addresses adds or replaces an alias. */
	for (ep = environ; *ep != NULL; ep++) {
		const char *eq;
		char name[128];
		size_t n;

		if (strncmp(*ep, "RELAYQ_ALIASES_", 15) != 0 ||
		    (eq = strchr(*ep, '=')) == NULL)
			continue;
		n = (size_t)(eq - (*ep + 15));
		if (n == 0 || n >= sizeof(name))
			continue;
		memcpy(name, *ep + 15, n);
		name[n] = '\0';
		if (config_add_alias(cfg, name, eq + 1, NULL, err, errlen) ==
		    -1)
			return -1;
	}

	for (i = 0; i < UTIL_ARRAYLEN(config_keys); i++) {
		const struct config_key *k = &config_keys[i];
		char name[128], fname[64];
		const char *v;

		(void)util_snprintf(name, sizeof(name), "RELAYQ_%s_%s",
		    k->section, k->name);
		for (j = 0; name[j] != '\0'; j++)
			name[j] = (char)toupper((unsigned char)name[j]);
		if ((v = getenv(name)) != NULL) {
			if (config_set(cfg, k, v, NULL, err, errlen) == -1)
				return -1;
			continue;
		}
		/* The container convention: NAME_FILE holds the value --
		 * unless that is a key of its own (password_file). */
		(void)util_snprintf(fname, sizeof(fname), "%s_file", k->name);
		if (config_lookup(k->section, fname) != NULL ||
		    util_strlcpy(name + strlen(name), "_FILE", sizeof(name) -
		    strlen(name)) == -1 || (v = getenv(name)) == NULL)
			continue;
		{
			char *val = config_read_value_file(v, name, err,
			    errlen);
			int rc;

			if (val == NULL)
				return -1;
			rc = config_set(cfg, k, val, NULL, err, errlen);
			util_wipe(val, strlen(val));
			free(val);
			if (rc == -1)
				return -1;
		}
	}
	return 0;
}

static int
config_is_loopback(const char *host)
{
	return strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
	    strncmp(host, "127.", 4) == 0;
}

static int
config_validate(struct config *cfg, char *err, size_t errlen)
{
	const char *src = cfg->path;

	if (cfg->relay.host == NULL) {
		config_error(err, errlen, src, "relay", "host", "is empty");
		return -1;
	}
	if (cfg->relay.tls == CONFIG_TLS_NONE) {
		/* Plain SMTP is for a local MTA only, and never with AUTH. */
		if (!config_is_loopback(cfg->relay.host)) {
			config_error(err, errlen, src, "relay", "tls",
			    "\"none\" is allowed only for a loopback host");
			return -1;
		}
		if (cfg->relay.user != NULL || cfg->naccounts > 0) {
			config_error(err, errlen, src, "relay", cfg->relay.user ?
			    "user" : "tls", "no AUTH without TLS: remove user "
			    "and [account] sections, or set tls");
			return -1;
		}
	} else if (cfg->relay.user == NULL) {
		config_error(err, errlen, src, "relay", "user",
		    "is required (the relay user account)");
		return -1;
	} else if (cfg->relay.password == NULL &&
	    cfg->relay.password_file == NULL) {
		config_error(err, errlen, src, "relay", "password",
		    "set password or password_file");
		return -1;
	}
	if (cfg->relay.password != NULL && cfg->relay.password_file != NULL) {
		config_error(err, errlen, src, "relay", "password_file",
		    "set either password or password_file, not both");
		return -1;
	}
	/* The PLAIN plugin copies both into a 513-byte buffer. */
	if (cfg->relay.user != NULL && strlen(cfg->relay.user) > 255) {
		config_error(err, errlen, src, "relay", "user",
		    "longer than 255 characters");
		return -1;
	}
	if (cfg->sender.address != NULL &&
	    !addr_is_mailbox(cfg->sender.address)) {
		config_error(err, errlen, src, "sender", "address",
		    "must be a full address (e.g. noreply@example.com)");
		return -1;
	}
	if (cfg->queue.retry_min > cfg->queue.retry_max) {
		config_error(err, errlen, src, "queue", "retry_min",
		    "is larger than retry_max");
		return -1;
	}
	if (cfg->queue.dir == NULL || cfg->queue.dir[0] != '/') {
		config_error(err, errlen, src, "queue", "dir",
		    "must be an absolute path");
		return -1;
	}
	if (cfg->dns.server != NULL && dns_server_parse(cfg->dns.server,
	    NULL) == -1) {
		config_error(err, errlen, src, "dns", "server",
		    "\"%.64s\" is not an IP address with an optional port "
		    "(e.g. 127.0.0.1:5353, [::1]:53)", cfg->dns.server);
		return -1;
	}
	return config_validate_dkim(cfg, err, errlen);
}

struct config *
config_load(const char *path, int allow_env, char *err, size_t errlen)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	int explicit = path != NULL, env_only;
	struct stat st;
	size_t i;

	for (i = 0; i < UTIL_ARRAYLEN(config_keys); i++)
		if (config_keys[i].def != NULL &&
		    config_set(cfg, &config_keys[i], config_keys[i].def,
		    "(defaults)", err, errlen) == -1)
			goto fail;
	if (path == NULL && allow_env && getenv("RELAYQ_CONFIG") != NULL) {
		path = getenv("RELAYQ_CONFIG");
		explicit = 1;
	}
	if (path == NULL)
		path = CONFIG_DEFAULT_PATH;
	/* RELAYQ_CONFIG="" means the environment alone. */
	env_only = path[0] == '\0' && allow_env;
	if (!env_only && stat(path, &st) == -1) {
		/* Without a file the environment may carry everything. */
		if (explicit || errno != ENOENT || !allow_env) {
			(void)util_snprintf(err, errlen, "%s: %s", path,
			    strerror(errno));
			goto fail;
		}
	} else if (!env_only) {
		cfg->path = xstrdup(path);
		if (config_read_file(cfg, path, err, errlen) == -1)
			goto fail;
	}
	if (allow_env && config_read_env(cfg, err, errlen) == -1)
		goto fail;
	if (config_validate(cfg, err, errlen) == -1)
		goto fail;
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

struct config *
config_defaults(void)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	char err[256];
	size_t i;

	for (i = 0; i < UTIL_ARRAYLEN(config_keys); i++)
		if (config_keys[i].def != NULL)
			(void)config_set(cfg, &config_keys[i],
			    config_keys[i].def, "(defaults)", err, sizeof(err));
	return cfg;
}

char *
config_sender_domain(const struct config *cfg)
{
	if (cfg->sender.domain != NULL)
		return xstrdup(cfg->sender.domain);
	return config_host_fqdn();
}

char *
config_host_fqdn(void)
{
	struct addrinfo hints, *res = NULL;
	char host[256];
	char *fqdn;

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		return xstrdup("localhost");
	host[sizeof(host) - 1] = '\0';
	if (strchr(host, '.') != NULL)
		return xstrdup(host);
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_CANONNAME;
	if (getaddrinfo(host, NULL, &hints, &res) == 0 && res != NULL &&
	    res->ai_canonname != NULL && strchr(res->ai_canonname, '.'))
		fqdn = xstrdup(res->ai_canonname);
	else
		fqdn = xstrdup(host);
	if (res != NULL)
		freeaddrinfo(res);
	return fqdn;
}

/* Reads the first line of a password file into *out. */
static int
config_read_secret(const char *file, char **out, char *err, size_t errlen)
{
	char line[512];
	FILE *fp;
	size_t n;

	if ((fp = fopen(file, "re")) == NULL) {
		(void)util_snprintf(err, errlen, "password_file %s: %s", file,
		    strerror(errno));
		return -1;
	}
	if (fgets(line, sizeof(line), fp) == NULL) {
		(void)fclose(fp);
		(void)util_snprintf(err, errlen, "password_file %s is empty",
		    file);
		return -1;
	}
	(void)fclose(fp);
	n = strcspn(line, "\r\n");
	line[n] = '\0';
	if (n == 0 || n > 255) {
		util_wipe(line, sizeof(line));
		(void)util_snprintf(err, errlen, "password_file %s: the first "
		    "line must hold a password of 1 to 255 characters", file);
		return -1;
	}
	*out = xstrdup(line);
	util_wipe(line, sizeof(line));
	return 0;
}

int
config_load_password(struct config *cfg, char *err, size_t errlen)
{
	if (cfg->relay.password != NULL || cfg->relay.password_file == NULL)
		return 0;
	return config_read_secret(cfg->relay.password_file,
	    &cfg->relay.password, err, errlen);
}

int
config_account_password(struct config_account *a, char *err, size_t errlen)
{
	if (a->password != NULL || a->password_file == NULL)
		return 0;
	return config_read_secret(a->password_file, &a->password, err, errlen);
}

const struct config_alias *
config_alias(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->naliases; i++)
		if (util_strcaseeq(cfg->aliases[i].name, name))
			return &cfg->aliases[i];
	return NULL;
}

struct config_account *
config_account_for(struct config *cfg, const char *sender)
{
	const char *at = strrchr(sender, '@');
	size_t i;

	if (at == NULL)
		return NULL;
	for (i = 0; i < cfg->naccounts; i++)
		if (util_strcaseeq(cfg->accounts[i].domain, at + 1))
			return &cfg->accounts[i];
	return NULL;
}

void
config_free(struct config *cfg)
{
	size_t i, j;

	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->relay.host);
	free(cfg->relay.ca_file);
	free(cfg->relay.pin_sha256);
	free(cfg->relay.user);
	if (cfg->relay.password != NULL) {
		util_wipe(cfg->relay.password, strlen(cfg->relay.password));
		free(cfg->relay.password);
	}
	free(cfg->relay.password_file);
	free(cfg->queue.dir);
	free(cfg->sender.domain);
	free(cfg->sender.address);
	for (i = 0; i < cfg->naliases; i++) {
		for (j = 0; j < cfg->aliases[i].nto; j++)
			free(cfg->aliases[i].to[j]);
		free(cfg->aliases[i].to);
		free(cfg->aliases[i].name);
	}
	free(cfg->aliases);
	for (i = 0; i < cfg->naccounts; i++) {
		struct config_account *a = &cfg->accounts[i];

		free(a->domain);
		free(a->user);
		if (a->password != NULL) {
			util_wipe(a->password, strlen(a->password));
			free(a->password);
		}
		free(a->password_file);
	}
	free(cfg->accounts);
	free(cfg->dkim.domain);
	free(cfg->dkim.selector);
	free(cfg->dkim.key_file);
	config_free_list(cfg->dkim.domains, cfg->dkim.ndomains);
	config_free_list(cfg->dkim.selectors, cfg->dkim.nkeys);
	config_free_list(cfg->dkim.key_files, cfg->dkim.nkeys);
	free(cfg->dns.server);
	free(cfg);
}

void
config_free_list(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Splits a list of words separated by commas and/or whitespace. */
static size_t
config_split(const char *s, char ***out)
{
	char **v = NULL;
	size_t n = 0, len;

	while (s != NULL && *s != '\0') {
		s += strspn(s, ", \t");
		if ((len = strcspn(s, ", \t")) == 0)
			break;
		v = xreallocarray(v, n + 1, sizeof(*v));
		v[n++] = xstrndup(s, len);
		s += len;
	}
	*out = v;
	return n;
}

/* A DNS name: labels of letters, digits, hyphens and underscores. */
static int
config_is_dns_name(const char *s)
{
	size_t label = 0, total = 0;

	for (; *s != '\0'; s++, total++) {
		if (*s == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0 && total <= 253;
}

static void
config_add_domain(char ***v, size_t *n, const char *d)
{
	size_t i;
	char *c;

	if (d == NULL || *d == '\0')
		return;
	c = xstrdup(d);
	for (i = 0; c[i] != '\0'; i++)
		c[i] = (char)tolower((unsigned char)c[i]);
	for (i = 0; i < *n; i++)
		if (strcmp((*v)[i], c) == 0) {
			free(c);
			return;
		}
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[(*n)++] = c;
}

size_t
config_domains(const struct config *cfg, char ***out)
{
	char **v = NULL;
	size_t n = 0, i;
	const char *at;

	config_add_domain(&v, &n, cfg->sender.domain);
	if (cfg->sender.address != NULL &&
	    (at = strrchr(cfg->sender.address, '@')) != NULL)
		config_add_domain(&v, &n, at + 1);
	for (i = 0; i < cfg->dkim.ndomains; i++)
		config_add_domain(&v, &n, cfg->dkim.domains[i]);
	for (i = 0; i < cfg->naccounts; i++)
		config_add_domain(&v, &n, cfg->accounts[i].domain);
	*out = v;
	return n;
}

const char *
config_user_for_domain(const struct config *cfg, const char *domain)
{
	size_t i;

	for (i = 0; i < cfg->naccounts; i++)
		if (util_strcaseeq(cfg->accounts[i].domain, domain))
			return cfg->accounts[i].user;
	return cfg->relay.user;
}

/* [dkim]: lists parsed, keys paired with selectors, names checked. */
static int
config_validate_dkim(struct config *cfg, char *err, size_t errlen)
{
	const char *src = cfg->path;
	size_t i, nsel;

	cfg->dkim.ndomains = config_split(cfg->dkim.domain,
	    &cfg->dkim.domains);
	cfg->dkim.nkeys = config_split(cfg->dkim.key_file,
	    &cfg->dkim.key_files);
	nsel = config_split(cfg->dkim.selector, &cfg->dkim.selectors);
	if (nsel != cfg->dkim.nkeys) {
		config_free_list(cfg->dkim.selectors, nsel);
		cfg->dkim.selectors = NULL;
		config_free_list(cfg->dkim.key_files, cfg->dkim.nkeys);
		cfg->dkim.key_files = NULL;
		config_error(err, errlen, src, "dkim", "selector",
		    "needs one selector per key_file (%zu selector%s, %zu "
		    "key file%s)", nsel, nsel == 1 ? "" : "s",
		    cfg->dkim.nkeys, cfg->dkim.nkeys == 1 ? "" : "s");
		cfg->dkim.nkeys = 0;
		return -1;
	}
	if (cfg->dkim.nkeys > DKIM_MAX_KEYS) {
		config_error(err, errlen, src, "dkim", "key_file",
		    "at most two keys (one RSA, one Ed25519)");
		return -1;
	}
	if (cfg->dkim.nkeys > 0 && cfg->dkim.ndomains == 0) {
		config_error(err, errlen, src, "dkim", "domain",
		    "is required with key_file (the domains to sign for)");
		return -1;
	}
	if (cfg->dkim.ndomains > 0 && cfg->dkim.nkeys == 0) {
		config_error(err, errlen, src, "dkim", "key_file",
		    "is required with domain (the private key to sign with)");
		return -1;
	}
	for (i = 0; i < cfg->dkim.ndomains; i++)
		if (!config_is_dns_name(cfg->dkim.domains[i])) {
			config_error(err, errlen, src, "dkim", "domain",
			    "\"%.64s\" is not a domain name",
			    cfg->dkim.domains[i]);
			return -1;
		}
	for (i = 0; i < cfg->dkim.nkeys; i++) {
		if (!config_is_dns_name(cfg->dkim.selectors[i])) {
			config_error(err, errlen, src, "dkim", "selector",
			    "\"%.64s\" is not a valid selector",
			    cfg->dkim.selectors[i]);
			return -1;
		}
		if (cfg->dkim.key_files[i][0] != '/') {
			config_error(err, errlen, src, "dkim", "key_file",
			    "\"%.200s\" must be an absolute path",
			    cfg->dkim.key_files[i]);
			return -1;
		}
	}
	return 0;
}
