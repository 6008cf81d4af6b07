/*
 * config.h -- the ini file (relayq.ini(5)) and its environment overrides.
 *
 * config_load() reads the file through iniparser, checks every key against
 * a table of known keys, parses values itself and copies them out, so the
 * result owns all of its strings.  Errors name the file, line and key.
 */
#ifndef RELAYQ_CONFIG_H
#define RELAYQ_CONFIG_H

#include <stddef.h>

#include "log.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#ifndef SPOOLDIR
#define SPOOLDIR "/var/spool/relayq"
#endif
#define CONFIG_DEFAULT_PATH SYSCONFDIR "/relayq.ini"

enum config_tls {
	CONFIG_TLS_STARTTLS,
	CONFIG_TLS_IMPLICIT,
	CONFIG_TLS_NONE
};

enum config_rewrite {
	CONFIG_REWRITE_LOCAL,		/* local and unqualified senders */
	CONFIG_REWRITE_ALWAYS,
	CONFIG_REWRITE_NEVER
};

/* A relay account: [relay] itself, or [account DOMAIN] for a sender domain. */
struct config_account {
	char		*domain;	/* NULL for [relay] */
	char		*user;
	char		*password;	/* NULL until loaded */
	char		*password_file;
};

/* [aliases]: a local name and the addresses it stands for. */
struct config_alias {
	char		*name;		/* lower case; "default" catches all */
	char		**to;
	size_t		 nto;
};

enum config_delivery {
	CONFIG_DELIVERY_FOREGROUND,
	CONFIG_DELIVERY_BACKGROUND,
	CONFIG_DELIVERY_QUEUE
};

struct config {
	char			*path;		/* file read, or NULL */
	/* The caller may not read the file: defaults only, and every
	 * submission goes to the maildrop (maildrop.h). */
	int			 drop;
	struct {
		char		*host;
		unsigned	 port;
		enum config_tls	 tls;
		char		*ca_file;	/* NULL: system store */
		char		*pin_sha256;	/* NULL: no pin */
		char		*user;
		char		*password;	/* NULL until loaded */
		char		*password_file;
		unsigned	 timeout;	/* seconds per SMTP phase */
	} relay;
	struct {
		char		*dir;
		enum config_delivery delivery;
		unsigned	 rate;		/* messages/s, 0: unlimited */
		unsigned	 lifetime;	/* seconds */
		unsigned	 min_attempts;	/* before expiry */
		unsigned	 retry_min;	/* seconds */
		unsigned	 retry_max;
		unsigned	 session_max;	/* messages per SMTP session */
		unsigned	 wait;		/* foreground wait for a runner */
		unsigned long long max_size;	/* octets of message, 0: any */
		unsigned	 idle;		/* daemon: keep a session open */
	} queue;
	struct {
		char		*domain;	/* qualifies bare local names */
		char		*address;	/* replaces local senders */
		enum config_rewrite rewrite;
		int		 reply_to;	/* keep the original From there */
	} sender;
	struct config_alias	*aliases;
	size_t			 naliases;
	struct config_account	*accounts;	/* [account DOMAIN] sections */
	size_t			 naccounts;
	struct {
		char		*domain;	/* as written: a list */
		char		*selector;
		char		*key_file;
		char		**domains;	/* parsed: sign From these */
		size_t		 ndomains;
		char		**selectors;	/* one per key file */
		char		**key_files;
		size_t		 nkeys;
		int		 require;	/* refuse what cannot be signed */
	} dkim;
	struct {
		char		*server;	/* IP[:PORT], NULL: resolv.conf */
	} dns;
	struct {
		enum log_target	 target;
	} log;
};

/*
 * Loads path (NULL: $RELAYQ_CONFIG when allowed, else the default path,
 * which may be missing).  allow_env permits RELAYQ_CONFIG and the
 * RELAYQ_<SECTION>_<KEY> overrides; privileged runs pass 0.
 * Returns a config to free with config_free(), or NULL with err set.
 */
struct config *config_load(const char *path, int allow_env,
	    char *err, size_t errlen);
void	config_free(struct config *);
/* The built-in defaults alone, for a maildrop submission. */
struct config *config_defaults(void);

/*
 * The domain that qualifies bare names: [sender] domain, else this host's
 * fully qualified name.  The caller frees it.
 */
char	*config_sender_domain(const struct config *);
/* This host's fully qualified name (the resolver's canonical name). */
char	*config_host_fqdn(void);

/*
 * Makes cfg->relay.password available, reading password_file if needed.
 * Returns 0, or -1 with err set.  The password never appears in err.
 */
int	config_load_password(struct config *, char *err, size_t errlen);

/*
 * The sender domains the configuration names: [sender] domain and
 * address, [dkim] domain, [account DOMAIN]; lower case, no duplicates.
 * Returns the count; *out to free with config_free_list().
 */
size_t	config_domains(const struct config *, char ***out);
void	config_free_list(char **, size_t);
/* The relay user account that sends for a domain. */
const char *config_user_for_domain(const struct config *, const char *domain);

/* The [aliases] entry for a local name (any case), or NULL. */
const struct config_alias *config_alias(const struct config *,
	    const char *name);
/*
 * The account for an envelope sender: [account DOMAIN] matching its
 * domain, else NULL for [relay] user/password.
 */
struct config_account *config_account_for(struct config *,
	    const char *sender);
/* Loads an account's password like config_load_password().  0 or -1. */
int	config_account_password(struct config_account *, char *err,
	    size_t errlen);

#endif
