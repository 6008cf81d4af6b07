/*
 * check.c -- relayq check and relayq dns-records: the sender domains'
 * DNS records and the relay, as the relay provider needs them.
 *
 * Nothing here writes to the spool or sends a message; the only
 * secrets touched are the relay password (preflight.c sends it inside
 * TLS and never prints it) and the DKIM private key (read for its
 * public half).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "buf.h"
#include "check.h"
#include "cli.h"
#include "config.h"
#include "dkim.h"
#include "dns.h"
#include "preflight.h"
#include "records.h"
#include "util.h"

#define CHECK_MAX_PER_DOMAIN	(3 + DKIM_MAX_KEYS)

static enum dns_status
check_lookup(void *arg, const char *name, struct dns_txt *out, char *err,
    size_t errlen)
{
	const struct config *cfg = arg;

	return dns_txt(cfg->dns.server, name, out, err, errlen);
}

/* The domains named on the command line, else the configured ones. */
static size_t
check_domains(const struct config *cfg, const struct cli_opts *o,
    char ***out)
{
	char **v;
	size_t i, n;

	if (o->nrcpts == 0)
		return config_domains(cfg, out);
	v = xcalloc(o->nrcpts, sizeof(*v));
	for (i = n = 0; i < o->nrcpts; i++) {
		char *d = xstrdup(o->rcpts[i]), *p;

		for (p = d; *p != '\0'; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		if (d[0] != '\0' && d[strlen(d) - 1] == '.')
			d[strlen(d) - 1] = '\0';	/* "example.com." */
		v[n++] = d;
	}
	*out = v;
	return n;
}

/* A domain name we are willing to look up and print. */
static int
check_domain_ok(const char *d)
{
	size_t n = strlen(d), i;

	if (n == 0 || n > 253 || d[0] == '.' || d[0] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!((d[i] >= 'a' && d[i] <= 'z') || (d[i] >= '0' &&
		    d[i] <= '9') || d[i] == '-' || d[i] == '.' || d[i] == '_'))
			return 0;
	return strstr(d, "..") == NULL;
}

/* The four (or more: one DKIM check per local key) checks of a domain. */
static size_t
check_domain(struct config *cfg, const char *domain, struct record_check *rc)
{
	const char *user = config_user_for_domain(cfg, domain);
	struct dns_txt txt;
	enum dns_status st;
	char err[512];
	size_t n = 0, i;

	records_name(&rc[n], "token", domain, NULL);
	st = dns_txt(cfg->dns.server, domain, &txt, err, sizeof(err));
	if (user != NULL)
		records_check_token(&rc[n], domain, user, st, &txt, err);
	else
		(void)util_snprintf(rc[n].detail, sizeof(rc[n].detail), "no "
		    "relay account is configured ([relay] user)");
	n++;
	records_name(&rc[n], "spf", domain, NULL);
	records_check_spf(&rc[n], domain, st, &txt, err, check_lookup, cfg);
	n++;
	dns_txt_free(&txt);

	if (dkim_signing_domain(cfg, domain) != NULL) {
		for (i = 0; i < cfg->dkim.nkeys; i++, n++) {
			struct dkim_key key;
			char *pub;

			records_name(&rc[n], "dkim", domain,
			    cfg->dkim.selectors[i]);
			if (dkim_key_load(cfg->dkim.key_files[i], &key, err,
			    sizeof(err)) == -1) {
				(void)util_strlcpy(rc[n].detail, err,
				    sizeof(rc[n].detail));
				continue;
			}
			pub = dkim_key_public(&key);
			st = dns_txt(cfg->dns.server, rc[n].name, &txt, err,
			    sizeof(err));
			records_check_dkim(&rc[n], pub, key.ed25519 ?
			    "ed25519" : "rsa", st, &txt, err);
			dns_txt_free(&txt);
			free(pub);
			dkim_key_free(&key);
		}
	} else {
		records_name(&rc[n], "dkim", domain, RECORDS_DKIM_SELECTOR);
		st = dns_txt(cfg->dns.server, rc[n].name, &txt, err,
		    sizeof(err));
		records_check_dkim(&rc[n], NULL, NULL, st, &txt, err);
		dns_txt_free(&txt);
		n++;
	}
	records_name(&rc[n], "dmarc", domain, NULL);
	st = dns_txt(cfg->dns.server, rc[n].name, &txt, err, sizeof(err));
	records_check_dmarc(&rc[n], st, &txt, err);
	dns_txt_free(&txt);
	return n + 1;
}

static const char *const check_status_names[] = { "PASS", "FAIL", "SKIP" };

static void
check_print_record(struct buf *out, const struct record_check *rc, int json,
    int first)
{
	size_t i;

	if (json) {
		buf_printf(out, "%s{\"record\": ", first ? "" : ", ");
		buf_json_str(out, rc->record);
		buf_puts(out, ", \"name\": ");
		buf_json_str(out, rc->name);
		buf_printf(out, ", \"status\": \"%s\", \"found\": [",
		    rc->pass ? "PASS" : "FAIL");
		for (i = 0; i < rc->found.n; i++) {
			buf_puts(out, i > 0 ? ", " : "");
			buf_json_str(out, rc->found.v[i]);
		}
		buf_puts(out, "], \"detail\": ");
		buf_json_str(out, rc->detail);
		buf_puts(out, ", \"fix\": ");
		if (rc->fix != NULL)
			buf_json_str(out, rc->fix);
		else
			buf_puts(out, "null");
		buf_puts(out, "}");
		return;
	}
	buf_printf(out, "  %s  %-6s %s: %s\n", rc->pass ? "PASS" : "FAIL",
	    rc->record, rc->name, rc->detail);
	if (rc->pass)
		return;
	for (i = 0; i < rc->found.n; i++) {
		char shown[600];

		util_sanitize(shown, sizeof(shown), rc->found.v[i],
		    strlen(rc->found.v[i]));
		buf_printf(out, "        found: \"%s\"\n", shown);
	}
	if (rc->fix != NULL)
		buf_printf(out, "        write: %s\n", rc->fix);
}

static void
check_print_steps(struct buf *out, const struct config *cfg,
    const struct preflight *p, int json, int *first)
{
	size_t i;

	for (i = 0; i < p->nsteps; i++) {
		const struct preflight_step *s = &p->steps[i];

		if (json) {
			buf_printf(out, "%s{\"step\": \"%s\", ", *first ? "" :
			    ", ", s->step);
			*first = 0;
			if (s->domain != NULL) {
				buf_puts(out, "\"domain\": ");
				buf_json_str(out, s->domain);
				buf_puts(out, ", ");
			}
			buf_puts(out, "\"account\": ");
			buf_json_str(out, p->user != NULL ? p->user : "");
			buf_printf(out, ", \"status\": \"%s\", \"reply\": ",
			    check_status_names[s->status]);
			buf_json_str(out, s->reply);
			buf_puts(out, ", \"detail\": ");
			buf_json_str(out, s->detail);
			buf_puts(out, "}");
			continue;
		}
		if (i == 0)
			buf_printf(out, "relay %s port %u, account %s\n",
			    cfg->relay.host, cfg->relay.port, p->user != NULL ?
			    p->user : "(none)");
		buf_printf(out, "  %s  %-8s %s%s%s%s%s\n",
		    check_status_names[s->status], s->step,
		    s->domain != NULL ? s->domain : "",
		    s->domain != NULL && (s->reply[0] != '\0' ||
		    s->detail[0] != '\0') ? ": " : "", s->reply,
		    s->reply[0] != '\0' && s->detail[0] != '\0' ? " -- " : "",
		    s->detail);
	}
}

int
check_main(struct config *cfg, const struct cli_opts *o)
{
	struct record_check rc[CHECK_MAX_PER_DOMAIN];
	struct buf out;
	char **domains;
	size_t nd, i, j, n, failed = 0, total = 0;
	int first = 1;

	nd = check_domains(cfg, o, &domains);
	if (nd == 0 && !o->no_dns) {
		(void)fprintf(stderr, "relayq: no domain to check: name one "
		    "(relayq check example.com), or set [sender] domain or "
		    "[dkim] domain in %s\n", cfg->path != NULL ? cfg->path :
		    CONFIG_DEFAULT_PATH);
		config_free_list(domains, nd);
		return EX_CONFIG;
	}
	for (i = 0; i < nd; i++)
		if (!check_domain_ok(domains[i])) {
			char shown[64];

			util_sanitize(shown, sizeof(shown), domains[i],
			    strlen(domains[i]));
			(void)fprintf(stderr, "relayq: \"%s\" is not a domain "
			    "name\n", shown);
			config_free_list(domains, nd);
			return EX_USAGE;
		}
	buf_init(&out);
	if (o->json)
		buf_puts(&out, "{\"domains\": [");
	for (i = 0; !o->no_dns && i < nd; i++) {
		n = check_domain(cfg, domains[i], rc);
		if (o->json) {
			buf_printf(&out, "%s{\"domain\": ", i > 0 ? ", " : "");
			buf_json_str(&out, domains[i]);
			buf_puts(&out, ", \"checks\": [");
		} else
			buf_printf(&out, "%s\n", domains[i]);
		for (j = 0; j < n; j++) {
			check_print_record(&out, &rc[j], o->json, j == 0);
			failed += !rc[j].pass;
			total++;
			records_check_free(&rc[j]);
		}
		if (o->json)
			buf_puts(&out, "]}");
	}
	if (o->json)
		buf_puts(&out, "], \"relay\": ");
	if (o->no_relay) {
		if (o->json)
			buf_puts(&out, "null");
	} else {
		/* One session per relay account: domains grouped by it. */
		char *done = xcalloc(nd + 1, 1);

		if (o->json) {
			buf_printf(&out, "{\"host\": ");
			buf_json_str(&out, cfg->relay.host);
			buf_printf(&out, ", \"port\": %u, \"steps\": [",
			    cfg->relay.port);
		}
		for (i = 0; i < nd || (i == 0 && nd == 0); i++) {
			struct config_account *acct = NULL;
			struct preflight p;
			char **group = NULL, *probe;
			size_t ng = 0;

			if (nd > 0) {
				if (done[i])
					continue;
				probe = util_asprintf("x@%s", domains[i]);
				acct = config_account_for(cfg, probe);
				free(probe);
				for (j = i; j < nd; j++) {
					struct config_account *a2;

					probe = util_asprintf("x@%s",
					    domains[j]);
					a2 = config_account_for(cfg, probe);
					free(probe);
					if (a2 != acct || done[j])
						continue;
					done[j] = 1;
					group = xreallocarray(group, ng + 1,
					    sizeof(*group));
					group[ng++] = domains[j];
				}
			}
			(void)preflight_run(cfg, acct, group, ng, &p);
			for (j = 0; j < p.nsteps; j++) {
				failed += p.steps[j].status != PREFLIGHT_PASS;
				total++;
			}
			check_print_steps(&out, cfg, &p, o->json, &first);
			preflight_free(&p);
			free(group);
		}
		free(done);
		if (o->json)
			buf_puts(&out, "]}");
	}
	if (o->json)
		buf_printf(&out, ", \"ok\": %s}\n", failed == 0 ? "true" :
		    "false");
	else if (failed == 0)
		buf_printf(&out, "relayq check: all %zu checks passed\n",
		    total);
	else
		buf_printf(&out, "relayq check: %zu of %zu checks failed\n",
		    failed, total);
	(void)fwrite(out.data, 1, out.len, stdout);
	buf_free(&out);
	config_free_list(domains, nd);
	if (fflush(stdout) == EOF)
		return EX_IOERR;
	return failed == 0 ? 0 : 1;
}

/* The SPF line for dns-records: the existing record merged, or new. */
static char *
check_spf_line(struct config *cfg, const char *domain, struct buf *note)
{
	struct dns_txt txt;
	char err[256], **spf = NULL, *advice, *line;
	size_t i, n = 0;

	if (dns_txt(cfg->dns.server, domain, &txt, err, sizeof(err)) ==
	    DNS_FAIL)
		buf_printf(note, "; (could not look up the current SPF record: "
		    "%s)\n", err);
	for (i = 0; i < txt.n; i++)
		if (records_is_spf(txt.v[i])) {
			spf = xreallocarray(spf, n + 1, sizeof(*spf));
			spf[n++] = txt.v[i];
		}
	if (n == 1) {
		struct record_check rc;

		records_name(&rc, "spf", domain, NULL);
		records_check_spf(&rc, domain, DNS_FOUND, &txt, NULL,
		    check_lookup, cfg);
		if (rc.pass) {
			buf_printf(note, "; SPF: the current record already "
			    "authorizes %s; keep it\n", RECORDS_SPF_INCLUDE);
			line = records_zone_line(domain, spf[0]);
			records_check_free(&rc);
			free(spf);
			dns_txt_free(&txt);
			return line;
		}
		records_check_free(&rc);
	}
	if (n > 0)
		buf_printf(note, "; SPF: the domain's current record%s merged "
		    "with include:%s (replace it; one SPF record only)\n",
		    n > 1 ? "s" : "", RECORDS_SPF_INCLUDE);
	advice = records_spf_advice(spf, n);
	free(spf);
	dns_txt_free(&txt);
	line = records_zone_line(domain, advice);
	free(advice);
	return line;
}

int
check_dns_records(struct config *cfg, const struct cli_opts *o)
{
	struct buf out, note;
	char **domains, *line, err[512];
	size_t nd, i, k;
	int rc = 0;

	nd = check_domains(cfg, o, &domains);
	if (nd == 0) {
		(void)fprintf(stderr, "relayq: no domain: name one (relayq "
		    "dns-records example.com), or set [sender] domain or "
		    "[dkim] domain in %s\n", cfg->path != NULL ? cfg->path :
		    CONFIG_DEFAULT_PATH);
		config_free_list(domains, nd);
		return EX_CONFIG;
	}
	buf_init(&out);
	buf_init(&note);
	for (i = 0; i < nd && rc == 0; i++) {
		const char *user = config_user_for_domain(cfg, domains[i]);
		char *token;

		if (!check_domain_ok(domains[i])) {
			(void)fprintf(stderr, "relayq: not a domain name\n");
			rc = EX_USAGE;
			break;
		}
		if (user == NULL) {
			(void)fprintf(stderr, "relayq: no relay account for %s: "
			    "set [relay] user\n", domains[i]);
			rc = EX_CONFIG;
			break;
		}
		buf_printf(&out, "%s; %s: relay account %s\n", i > 0 ? "\n" :
		    "", domains[i], user);
		token = records_token(user);
		line = records_zone_line(domains[i], token);
		buf_printf(&out, "%s\n", line);
		free(line);
		free(token);
		buf_reset(&note);
		line = check_spf_line(cfg, domains[i], &note);
		buf_printf(&out, "%s%s\n", note.len > 0 ? note.data : "", line);
		free(line);
		if (dkim_signing_domain(cfg, domains[i]) == NULL)
			buf_printf(&out, "; DKIM: %s._domainkey.%s TXT gets the "
			    "value Elastx support gives you (no [dkim] key "
			    "signs for %s here)\n", RECORDS_DKIM_SELECTOR,
			    domains[i], domains[i]);
		for (k = 0; dkim_signing_domain(cfg, domains[i]) != NULL &&
		    k < cfg->dkim.nkeys; k++) {
			struct dkim_key key;
			char *val, name[300];

			if (dkim_key_load(cfg->dkim.key_files[k], &key, err,
			    sizeof(err)) == -1) {
				(void)fprintf(stderr, "relayq: %s\n", err);
				rc = EX_CONFIG;
				break;
			}
			val = dkim_key_record(&key);
			dkim_key_free(&key);
			(void)util_snprintf(name, sizeof(name),
			    "%s._domainkey.%s", cfg->dkim.selectors[k],
			    domains[i]);
			line = records_zone_line(name, val != NULL ? val : "");
			buf_printf(&out, "%s\n", line);
			free(line);
			free(val);
		}
		(void)util_snprintf(err, sizeof(err), "_dmarc.%s", domains[i]);
		line = records_zone_line(err, RECORDS_DMARC_EXAMPLE);
		buf_printf(&out, "%s\n", line);
		free(line);
	}
	if (rc == 0) {
		(void)fwrite(out.data, 1, out.len, stdout);
		if (fflush(stdout) == EOF)
			rc = EX_IOERR;
	}
	buf_free(&out);
	buf_free(&note);
	config_free_list(domains, nd);
	return rc;
}
