"""relayq dns-records, relayq check and [dkim] require, against a local
dnsmasq (see dnsserver.py) that holds the test zones, and the fake relay.

The Elastx relay wants four TXT records per sender domain (seed,
"Getting started"): the challenge token elastx-mrs=<sha256 of the user
account> at the domain, SPF with include:elastx.email, DKIM (the relay's
elastx._domainkey record, or a local key's <selector>._domainkey record)
and a valid DMARC policy at _dmarc."""

import base64
import hashlib
import json
import os
import subprocess

import dns.flags as dnsflags
import pytest

from conftest import RELAY_USER, SECRET, fmt
from dnsserver import (DnsServer, merge_zones, normalize_zone, records_from_text,
                       split255, zone_from_records)

D = "example.com"
OTHER = "other.example"
OTHER_USER = "mailer@other.example"
OTHER_PASS = "other-acct-Pw-917"
ELASTX_SPF = "v=spf1 include:elastx.email -all"
DMARC_DOC = "v=DMARC1; p=quarantine; adkim=r; aspf=r;"   # the seed's example
DMARC_DEFAULT = "v=DMARC1; p=quarantine; adkim=r; aspf=r"
# What the rest of the world answers (include:elastx.email may be looked up).
WORLD = {"elastx.email": [["v=spf1 ip4:192.0.2.0/24 -all"]]}
RECORDS = ("token", "spf", "dkim", "dmarc")
STEPS = ("connect", "ehlo", "starttls", "auth", "mail", "rset", "quit")


def token(user):
    return "elastx-mrs=" + hashlib.sha256(user.encode()).hexdigest()


# ---- keys ------------------------------------------------------------------

class Key:
    def __init__(self, path, kind, p):
        self.path, self.kind, self.p = path, kind, p

    def record(self, v="DKIM1", k=None, p=None):
        return "v=%s; k=%s; p=%s" % (v, k or self.kind, self.p if p is None else p)


class Keys:
    """DKIM keys made with openssl genpkey (mode 0600), made once per session."""

    def __init__(self, d):
        self.d = d
        self._made = {}

    def get(self, name, kind, bits=2048):
        if name in self._made:
            return self._made[name]
        path = os.path.join(self.d, name + ".pem")
        if kind == "rsa":
            gen = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % bits]
        else:
            gen = ["-algorithm", "ED25519"]
        subprocess.run(["openssl", "genpkey", *gen, "-out", path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.chmod(path, 0o600)
        der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform",
                              "DER"], check=True, stdout=subprocess.PIPE).stdout
        if kind == "ed25519":
            assert len(der) == 44, der
            der = der[-32:]          # RFC 8463: p= is the raw public key
        key = Key(path, kind, base64.b64encode(der).decode())
        self._made[name] = key
        return key

    rsa = property(lambda self: self.get("rsa", "rsa"))
    rsa_other = property(lambda self: self.get("rsa-other", "rsa"))
    ed = property(lambda self: self.get("ed", "ed25519"))
    elastx = property(lambda self: self.get("elastx", "rsa"))   # "Elastx's" key
    rsa4096 = property(lambda self: self.get("rsa4096", "rsa", 4096))


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    return Keys(str(tmp_path_factory.mktemp("dkimkeys")))


# ---- DNS -------------------------------------------------------------------

@pytest.fixture
def dns(tmp_path):
    """Factory: dns(zone) -> started DnsServer holding zone (+ WORLD)."""
    started = []

    def make(zone, world=True):
        z = merge_zones(WORLD, zone) if world else normalize_zone(zone)
        srv = DnsServer(z, workdir=str(tmp_path), name="dns%d" % (len(started) + 1))
        started.append(srv)
        return srv.start()

    yield make
    for s in started:
        s.stop()


def good_zone(keys, domain=D, user=RELAY_USER, key=None, selector="sel1"):
    z = {domain: [[token(user)], [ELASTX_SPF], ["google-site-verification=abc123"]],
         "_dmarc." + domain: [[DMARC_DOC]]}
    if key is not None:
        z["%s._domainkey.%s" % (selector, domain)] = [split255(key.record())]
    else:
        z["elastx._domainkey." + domain] = [split255(keys.elastx.record())]
    return normalize_zone(z)


def base_config(srv, **sections):
    cfg = {"dns": {"server": srv.addr}, "sender": {"domain": D}}
    for k, v in sections.items():
        cfg.setdefault(k.replace("_", " "), {}).update(v)
    return cfg


def dkim_section(key, domain=D, selector="sel1"):
    return {"domain": domain, "selector": selector, "key_file": key.path}


def account_section():
    return {"user": OTHER_USER, "password": OTHER_PASS}


# ---- running ---------------------------------------------------------------

def no_secrets(cp):
    for needle in (SECRET.encode(), OTHER_PASS.encode()):
        assert needle not in cp.stdout and needle not in cp.stderr, \
            "password leaked\n" + fmt(cp)


def run_json(relayq, args, config, relay=None):
    cp = relayq(["check", "--json", *args], config=config, relay=relay)
    no_secrets(cp)
    try:
        j = json.loads(cp.stdout)
    except ValueError:
        raise AssertionError("check --json: stdout is not one JSON object\n" + fmt(cp))
    assert_schema(j, cp)
    assert j["ok"] is (cp.returncode == 0), "ok=%r but exit %d\n%s" % (
        j["ok"], cp.returncode, fmt(cp))
    assert cp.returncode in (0, 1), fmt(cp)
    return cp, j


def assert_schema(j, cp):
    where = "\n" + json.dumps(j, indent=1)[:4000] + "\n" + fmt(cp)
    assert isinstance(j, dict) and isinstance(j.get("ok"), bool), where
    assert isinstance(j.get("domains"), list), where
    for d in j["domains"]:
        assert isinstance(d.get("domain"), str) and isinstance(d.get("checks"), list), where
        for c in d["checks"]:
            assert c.get("record") in RECORDS, where
            assert isinstance(c.get("name"), str) and not c["name"].endswith("."), where
            assert c.get("status") in ("PASS", "FAIL"), where
            assert isinstance(c.get("found"), list), where
            assert all(isinstance(x, str) for x in c["found"]), where
            assert isinstance(c.get("detail"), str), where
            assert c.get("fix") is None or isinstance(c["fix"], str), where
    assert "relay" in j, where
    if j["relay"] is not None:
        r = j["relay"]
        assert isinstance(r.get("host"), str) and isinstance(r.get("port"), int), where
        assert isinstance(r.get("steps"), list), where
        for s in r["steps"]:
            assert s.get("step") in STEPS, where
            assert s.get("status") in ("PASS", "FAIL", "SKIP"), where
            assert isinstance(s.get("reply"), str), where
            assert isinstance(s.get("detail"), str), where
            if s["step"] in ("mail", "rset"):
                assert isinstance(s.get("domain"), str), where


def checks_of(j, domain):
    ds = [d for d in j["domains"] if d["domain"] == domain]
    assert len(ds) == 1, "domain %s: %r" % (domain, [d["domain"] for d in j["domains"]])
    out = {}
    for c in ds[0]["checks"]:
        assert c["record"] not in out, "two %s checks: %r" % (c["record"], ds[0])
        out[c["record"]] = c
    assert sorted(out) == sorted(RECORDS), ds[0]
    return out


def expected_names(domain, selector):
    return {"token": domain, "spf": domain, "dmarc": "_dmarc." + domain,
            "dkim": "%s._domainkey.%s" % (selector, domain)}


def assert_all_pass(j, domain, selector="elastx"):
    c = checks_of(j, domain)
    for rec, chk in c.items():
        assert chk["status"] == "PASS", "%s: %r\n%s" % (rec, chk, json.dumps(j, indent=1))
        assert chk["name"] == expected_names(domain, selector)[rec], chk
    return c


def fix_values(fix):
    """The TXT values of the zone line(s) in a "fix" (parse errors fail)."""
    try:
        recs = records_from_text(fix)
    except ValueError as e:
        raise AssertionError("fix is not a zone line: %r (%s)" % (fix, e))
    assert recs, "fix has no record line: %r" % fix
    return recs


def steps(j):
    return [(s["step"], s.get("domain"), s["status"], s["reply"]) for s in j["relay"]["steps"]]


def step(j, name, domain=None):
    found = [s for s in j["relay"]["steps"] if s["step"] == name
             and (domain is None or s.get("domain") == domain)]
    assert found, "no %s step: %r" % (name, steps(j))
    return found[-1]


# ---- the DNS fixture itself ------------------------------------------------

def test_dnsserver_fixture(dns, keys):
    long_rec = split255(keys.rsa4096.record())
    srv = dns({D: [["elastx-mrs=x"], ["a", "b c", 'q"uote']],
               "big._domainkey." + D: [long_rec]})
    rc, recs, _ = srv.query(D)
    assert rc == "NOERROR" and sorted(recs) == sorted([["elastx-mrs=x"], ["a", "b c", 'q"uote']])
    rc, recs, _ = srv.query("big._domainkey." + D, tcp=True)
    assert rc == "NOERROR" and recs == [long_rec] and len(long_rec) > 2
    assert all(len(s.encode()) <= 255 for s in long_rec)
    assert srv.query("nothing." + D)[0] == "NXDOMAIN"
    assert srv.query("elsewhere.invalid")[0] == "NXDOMAIN"
    assert srv.query(D, "A")[:2] == ("NOERROR", [])
    with pytest.raises(ValueError):
        DnsServer({D: [["x" * 256]]}).conf_text()
    z = zone_from_records('; comment\n%s. 3600 IN TXT "a b" "c\\"d"\n\n'
                          '_dmarc.%s. 3600 IN TXT "v=DMARC1; p=none"\n' % (D, D))
    assert z == {D: [["a b", 'c"d']], "_dmarc." + D: [["v=DMARC1; p=none"]]}
    with pytest.raises(ValueError):
        records_from_text("example.com 3600 IN TXT \"no final dot\"\n")


# ---- 1. dns-records ------------------------------------------------------------

def dns_records(relayq, config, *args):
    cp = relayq(["dns-records", *args], config=config)
    no_secrets(cp)
    assert cp.returncode == 0, fmt(cp)
    try:
        recs = records_from_text(cp.stdout)
    except ValueError as e:
        raise AssertionError("dns-records: %s\n%s" % (e, fmt(cp)))
    for r in recs:
        assert (r.ttl, r.rclass, r.rdtype) == (3600, "IN", "TXT"), r
    return cp, recs


def by_name(recs):
    out = {}
    for r in recs:
        out.setdefault(r.name, []).append(r.value)
    return out


def dkim_tags(value):
    tags = [t.strip() for t in value.split(";") if t.strip()]
    pairs = [t.split("=", 1) for t in tags]
    assert all(len(p) == 2 for p in pairs), value
    assert pairs[0] == ["v", "DKIM1"], "v=DKIM1 must come first: %r" % value
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_dns_records_local_key(relayq, dns, keys, kind):
    key = keys.rsa if kind == "rsa" else keys.ed
    srv = dns({})
    cp, recs = dns_records(relayq, base_config(srv, dkim=dkim_section(key)), D)
    got = by_name(recs)
    assert sorted(got) == sorted([D, "sel1._domainkey." + D, "_dmarc." + D]), \
        cp.stdout.decode()
    assert sorted(got[D]) == sorted([token(RELAY_USER), ELASTX_SPF]), got
    assert got["_dmarc." + D] == [DMARC_DEFAULT], got
    assert token(RELAY_USER) == "elastx-mrs=" + hashlib.sha256(b"relayuser@example.com").hexdigest()
    dk = [r for r in recs if r.name == "sel1._domainkey." + D]
    assert len(dk) == 1, cp.stdout.decode()
    tags = dkim_tags(dk[0].value)
    assert tags.get("k") == kind and tags.get("p") == key.p, (tags, key.p)
    if kind == "rsa":
        assert len(dk[0].strings) >= 2          # 2048-bit: over 255 octets
    assert RELAY_USER.encode() in cp.stdout     # the comment names the account


def test_dns_records_two_keys(relayq, dns, keys):
    srv = dns({})
    cfg = base_config(srv, dkim={"domain": D, "selector": "r1, e1",
                                 "key_file": "%s, %s" % (keys.rsa.path, keys.ed.path)})
    cp, recs = dns_records(relayq, cfg)
    got = by_name(recs)
    assert dkim_tags(got["r1._domainkey." + D][0]) == {"v": "DKIM1", "k": "rsa", "p": keys.rsa.p}
    assert dkim_tags(got["e1._domainkey." + D][0]) == {"v": "DKIM1", "k": "ed25519",
                                                       "p": keys.ed.p}
    assert len(got["r1._domainkey." + D]) == 1 and len(got["e1._domainkey." + D]) == 1


def test_dns_records_without_key(relayq, dns):
    srv = dns({})
    cp, recs = dns_records(relayq, base_config(srv), D)
    got = by_name(recs)
    assert sorted(got) == sorted([D, "_dmarc." + D]), cp.stdout.decode()
    assert sorted(got[D]) == sorted([token(RELAY_USER), ELASTX_SPF])
    assert got["_dmarc." + D] == [DMARC_DEFAULT]
    comments = [l for l in cp.stdout.decode().splitlines() if l.strip().startswith(";")]
    assert any("elastx._domainkey." + D in l for l in comments), cp.stdout.decode()


def test_dns_records_account_has_own_token(relayq, dns):
    srv = dns({})
    cfg = base_config(srv, **{"account_" + OTHER: account_section()})
    cp, recs = dns_records(relayq, cfg)
    got = by_name(recs)
    assert token(RELAY_USER) in got[D] and token(OTHER_USER) not in got[D], got
    assert token(OTHER_USER) in got[OTHER] and token(RELAY_USER) not in got[OTHER], got
    assert any(ELASTX_SPF == v for v in got[OTHER]) and got["_dmarc." + OTHER]
    # one domain asked for: only its records
    cp, recs = dns_records(relayq, cfg, OTHER)
    assert recs and all(r.name == OTHER or r.name.endswith("." + OTHER) for r in recs), \
        cp.stdout.decode()
    assert token(OTHER_USER) in by_name(recs)[OTHER]


def test_dns_records_merges_existing_spf(relayq, dns):
    srv = dns({D: [["v=spf1 mx -all"], [token(RELAY_USER)]]})
    cp, recs = dns_records(relayq, base_config(srv), D)
    spf = [r.value for r in recs if r.name == D and r.value.lower().startswith("v=spf1")]
    assert len(spf) == 1, cp.stdout.decode()
    terms = spf[0].split()
    assert terms[0] == "v=spf1" and terms[-1] == "-all", spf
    assert sorted(terms) == sorted(["v=spf1", "mx", "include:elastx.email", "-all"]), spf


def test_dns_records_config_errors(relayq, dns, keys, tmp_path):
    srv = dns({})
    cp = relayq(["dns-records"], config=base_config(srv, dns={"server": "not-an-ip"}))
    assert cp.returncode == 78, fmt(cp)
    loose = str(tmp_path / "loose.pem")
    with open(keys.rsa.path, "rb") as f, open(loose, "wb") as g:
        g.write(f.read())
    os.chmod(loose, 0o644)
    cp = relayq(["dns-records"], config=base_config(
        srv, dkim={"domain": D, "selector": "sel1", "key_file": loose}))
    assert cp.returncode == 78, fmt(cp)


def test_default_domains(relayq, dns, keys):
    srv = dns({})
    cfg = base_config(srv, sender={"address": "noreply@addr.example"},
                      dkim=dkim_section(keys.ed, domain="signed.example"),
                      **{"account_" + OTHER: account_section()})
    cp, recs = dns_records(relayq, cfg)
    owners = {r.name for r in recs if r.value.startswith("elastx-mrs=")}
    assert owners == {D, "addr.example", "signed.example", OTHER}, cp.stdout.decode()
    # blank lines between domains
    assert cp.stdout.decode().count("\n\n") >= 3, cp.stdout.decode()
    # no configured domain at all: a config error, for both commands
    cfg = base_config(srv, sender={"domain": None})
    for args in (["dns-records"], ["check", "--no-relay"], ["check", "--json", "--no-relay"]):
        cp = relayq(args, config=cfg)
        assert cp.returncode == 78 and cp.stderr.strip(), fmt(cp)


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "rsa4096"])
def test_dns_records_output_makes_check_pass(relayq, dns, keys, kind):
    key = {"rsa": keys.rsa, "ed25519": keys.ed, "rsa4096": keys.rsa4096}[kind]
    # [dkim] domain as a space-separated list; other.example has its own account
    sections = {"dkim": dkim_section(key, domain="%s %s" % (D, OTHER)),
                "account_" + OTHER: account_section()}
    empty = dns({})
    cp, _ = dns_records(relayq, base_config(empty, **sections))
    zone = zone_from_records(cp.stdout)
    assert "sel1._domainkey." + OTHER in zone and "sel1._domainkey." + D in zone, zone
    srv = dns(zone)
    if kind == "rsa4096":
        # over 512 octets: truncated over UDP, so relayq has to ask over TCP
        rc, recs, resp = srv.query("sel1._domainkey." + D)
        assert resp.flags & dnsflags.TC and recs == [], (rc, recs)
    cfg = base_config(srv, **sections)
    cp, j = run_json(relayq, ["--no-relay"], cfg)
    assert cp.returncode == 0 and j["ok"] is True, json.dumps(j, indent=1) + fmt(cp)
    assert sorted(d["domain"] for d in j["domains"]) == sorted([D, OTHER])
    assert j["relay"] is None
    for dom, user in ((D, RELAY_USER), (OTHER, OTHER_USER)):
        c = assert_all_pass(j, dom, "sel1")
        assert token(user) in c["token"]["found"], c["token"]
    # the human form says PASS, never FAIL
    cp = relayq(["check", "--no-relay"], config=cfg)
    no_secrets(cp)
    assert cp.returncode == 0, fmt(cp)
    assert b"PASS" in cp.stdout and b"FAIL" not in cp.stdout + cp.stderr, fmt(cp)


def test_two_keys_each_checked(relayq, dns, keys):
    sections = {"dkim": {"domain": D, "selector": "r1, e1",
                         "key_file": "%s, %s" % (keys.rsa.path, keys.ed.path)}}
    cp, _ = dns_records(relayq, base_config(dns({}), **sections))
    zone = zone_from_records(cp.stdout)
    cp, j = run_json(relayq, ["--no-relay"], base_config(dns(zone), **sections))
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 0, dump
    dk = [c for c in j["domains"][0]["checks"] if c["record"] == "dkim"]
    assert sorted(c["name"] for c in dk) == ["e1._domainkey." + D, "r1._domainkey." + D], dump
    del zone["e1._domainkey." + D]
    cp, j = run_json(relayq, ["--no-relay"], base_config(dns(zone), **sections))
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 1, dump
    st = {c["name"]: c["status"] for c in j["domains"][0]["checks"]}
    assert st == {D: "PASS", "r1._domainkey." + D: "PASS", "e1._domainkey." + D: "FAIL",
                  DM: "PASS"}, dump


# ---- 2. check against broken zones -----------------------------------------------

def _set(name, *records):
    def f(z, keys):
        z[name] = [r if isinstance(r, list) else split255(r) for r in records]
    return f


def _drop(name, prefix=None):
    def f(z, keys):
        if prefix is None:
            z.pop(name, None)
        else:
            z[name] = [r for r in z[name] if not "".join(r).startswith(prefix)]
    return f


def _spf(*records):
    """Replaces the SPF record(s) at D."""
    def f(z, keys):
        z[D] = [r for r in z[D] if not "".join(r).startswith("v=spf1")]
        z[D] += [[r] for r in records]
    return f


def _chain(n):
    def f(z, keys):
        _spf("v=spf1 include:_s1.%s -all" % D)(z, keys)
        for i in range(1, n):
            z["_s%d.%s" % (i, D)] = [["v=spf1 include:_s%d.%s -all" % (i + 1, D)]]
        z["_s%d.%s" % (n, D)] = [[ELASTX_SPF]]
    return f


def _both(*fs):
    def f(z, keys):
        for g in fs:
            g(z, keys)
    return f


ED = "elastx._domainkey." + D
SEL = "sel1._domainkey." + D
DM = "_dmarc." + D


def _elastx(**kw):
    return lambda z, keys: _set(ED, keys.elastx.record(**kw))(z, keys)


def _sel(record_fn):
    return lambda z, keys: _set(SEL, record_fn(keys))(z, keys)


# (id, local key: None | "rsa" | "ed25519", zone change, the failing record or None)
ZONE_CASES = [
    ("good", None, lambda z, k: None, None),
    ("good-other-token-too", None,
     lambda z, k: z[D].append([token("someone@example.net")]), None),
    ("spf-softfail", None, _spf("v=spf1 include:elastx.email ~all"), None),
    ("spf-nested-include", None, _both(
        _spf("v=spf1 include:_spf.%s -all" % D),
        _set("_spf." + D, "v=spf1 include:_spf2.%s ~all" % D),
        _set("_spf2." + D, "v=spf1 ip4:192.0.2.7 include:elastx.email -all")), None),
    ("spf-redirect", None, _both(
        _spf("v=spf1 a mx redirect=_spf.%s" % D),
        _set("_spf." + D, ELASTX_SPF)), None),
    ("dmarc-p-none", None, _set(DM, "v=DMARC1; p=none"), None),
    ("dmarc-compact-and-other-txt", None,
     _set(DM, "v=DMARC1;p=reject", "not a dmarc record"), None),
    ("spf-split-strings", None, lambda z, k: _spf()(z, k) or z[D].append(
        ["v=spf1 ip4:192.0.2.1 ", "include:elastx.email -all"]), None),
    # the seed's own Elastx record has no k= (RFC 6376: k defaults to rsa)
    ("dkim-elastx-no-k", None, lambda z, k: _set(ED, "v=DKIM1; p=" + k.elastx.p)(z, k), None),
    ("dkim-compact", None,
     lambda z, k: _set(ED, "v=DKIM1;k=rsa;p=" + k.elastx.p)(z, k), None),
    ("localkey-rsa-no-k", "rsa", _sel(lambda k: "v=DKIM1; p=" + k.rsa.p), None),
    ("localkey-ed25519-no-k", "ed25519", _sel(lambda k: "v=DKIM1; p=" + k.ed.p), "dkim"),
    ("token-missing", None, _drop(D, "elastx-mrs="), "token"),
    ("token-other-account", None, _both(
        _drop(D, "elastx-mrs="),
        lambda z, k: z[D].append([token("someone@example.net")])), "token"),
    ("spf-none", None, _spf(), "spf"),
    ("spf-two", None, _spf(ELASTX_SPF, "v=spf1 mx include:elastx.email -all"), "spf"),
    ("spf-no-include", None, _spf("v=spf1 mx -all"), "spf"),
    ("spf-plus-all", None, _spf("v=spf1 include:elastx.email +all"), "spf"),
    ("spf-bare-all", None, _spf("v=spf1 include:elastx.email all"), "spf"),
    ("spf-nested-no-include", None, _both(
        _spf("v=spf1 include:_spf.%s -all" % D),
        _set("_spf." + D, "v=spf1 ip4:192.0.2.7 -all")), "spf"),
    ("spf-too-many-lookups", None, _chain(12), "spf"),
    # 8 nested includes, then include:elastx.email: 9 lookups (RFC 7208 4.6.4)
    ("spf-nested-9-lookups", None, _chain(8), None),
    # terms after "all" are never evaluated (RFC 7208 5.1): not reached
    ("spf-include-after-all", None, _spf("v=spf1 -all include:elastx.email"), "spf"),
    ("spf-include-loop", None, _both(
        _spf("v=spf1 include:_loop.%s -all" % D),
        _set("_loop." + D, "v=spf1 include:%s -all" % D)), "spf"),
    ("dkim-missing", None, _drop(ED), "dkim"),
    ("dkim-no-p", None, _set(ED, "v=DKIM1; k=rsa"), "dkim"),
    ("dkim-bad-base64", None, _elastx(p="!!not*base64!!"), "dkim"),
    ("dkim-not-dkim1", None, _elastx(v="DKIM2"), "dkim"),
    ("localkey-good", "rsa", lambda z, k: None, None),
    ("localkey-ed25519-good", "ed25519", lambda z, k: None, None),
    ("localkey-dkim-missing", "rsa", _drop(SEL), "dkim"),
    ("localkey-only-elastx-record", "rsa", _both(
        _drop(SEL), lambda z, k: _set(ED, k.elastx.record())(z, k)), "dkim"),
    ("localkey-dkim-no-p", "rsa", _set(SEL, "v=DKIM1; k=rsa; t=y"), "dkim"),
    ("localkey-dkim-bad-base64", "rsa", _sel(lambda k: k.rsa.record(p="%%%%")), "dkim"),
    ("localkey-dkim-not-matching", "rsa", _sel(lambda k: k.rsa_other.record()), "dkim"),
    ("localkey-ed25519-wrong-k", "ed25519", _sel(lambda k: k.ed.record(k="rsa")), "dkim"),
    ("dmarc-missing", None, _drop(DM), "dmarc"),
    ("dmarc-invalid-p", None, _set(DM, "v=DMARC1; p=maybe"), "dmarc"),
    ("dmarc-no-p", None, _set(DM, "v=DMARC1; rua=mailto:dmarc@example.com"), "dmarc"),
    ("dmarc-p-not-first", None, _set(DM, "v=DMARC1; adkim=r; p=reject"), "dmarc"),
    ("dmarc-twice", None, _set(DM, DMARC_DOC, "v=DMARC1; p=reject"), "dmarc"),
]


def zone_case(relayq, dns, keys, keykind, change):
    key = {None: None, "rsa": keys.rsa, "ed25519": keys.ed}[keykind]
    z = good_zone(keys, key=key)
    change(z, keys)
    srv = dns(z)
    cfg = base_config(srv, dkim=dkim_section(key)) if key else base_config(srv)
    return key, srv, cfg


@pytest.mark.parametrize("keykind,change,failing", [c[1:] for c in ZONE_CASES],
                         ids=[c[0] for c in ZONE_CASES])
def test_check_zone(relayq, dns, keys, keykind, change, failing):
    key, srv, cfg = zone_case(relayq, dns, keys, keykind, change)
    cp, j = run_json(relayq, ["--no-relay", D], cfg)
    dump = json.dumps(j, indent=1) + "\n" + fmt(cp)
    assert [d["domain"] for d in j["domains"]] == [D], dump
    assert j["relay"] is None, dump
    c = checks_of(j, D)
    names = expected_names(D, "sel1" if key else "elastx")
    for rec, chk in c.items():
        assert chk["name"] == names[rec], dump
        want = "FAIL" if rec == failing else "PASS"
        assert chk["status"] == want, "%s: want %s\n%s" % (rec, want, dump)
    if failing is None:
        assert cp.returncode == 0 and j["ok"] is True, dump
        return
    assert cp.returncode == 1 and j["ok"] is False, dump
    fix = c[failing]["fix"]
    assert isinstance(fix, str) and fix.strip(), "no fix for %s\n%s" % (failing, dump)
    if failing == "token":
        assert any(token(RELAY_USER) == r.value and r.name == D
                   for r in fix_values(fix)), dump
    elif failing == "spf":
        vals = [r.value for r in fix_values(fix) if r.name == D]
        assert len(vals) == 1 and vals[0].startswith("v=spf1") \
            and "include:elastx.email" in vals[0].split(), dump
        assert not vals[0].split()[-1] in ("+all", "all"), dump
    elif failing == "dmarc":
        vals = [r.value for r in fix_values(fix) if r.name == DM]
        assert len(vals) == 1 and vals[0].startswith("v=DMARC1; p="), dump
    elif failing == "dkim" and key is not None:
        vals = [r.value for r in fix_values(fix) if r.name == SEL]
        assert len(vals) == 1, dump
        assert dkim_tags(vals[0])["p"] == key.p, dump
    else:
        assert ED in fix, dump


def test_check_found_lists_what_is_there(relayq, dns, keys):
    other = token("someone@example.net")
    z = good_zone(keys)
    _both(_drop(D, "elastx-mrs="), lambda zz, k: zz[D].append([other]),
          _spf(ELASTX_SPF, "v=spf1 mx -all"),
          _set(DM, DMARC_DOC, "v=DMARC1; p=reject"))(z, keys)
    srv = dns(z)
    cp, j = run_json(relayq, ["--no-relay", D], base_config(srv))
    assert cp.returncode == 1, fmt(cp)
    c = checks_of(j, D)
    assert other in c["token"]["found"] and c["token"]["status"] == "FAIL", c["token"]
    assert sorted(x for x in c["spf"]["found"] if x.startswith("v=spf1")) == \
        sorted([ELASTX_SPF, "v=spf1 mx -all"]), c["spf"]
    assert sorted(c["dmarc"]["found"]) == sorted([DMARC_DOC, "v=DMARC1; p=reject"]), c["dmarc"]
    # a multi-string DKIM record is found as one value
    assert c["dkim"]["found"] == [keys.elastx.record()], c["dkim"]
    assert c["dkim"]["status"] == "PASS"


def test_check_human_output(relayq, dns, keys):
    z = good_zone(keys)
    _drop(DM)(z, keys)
    srv = dns(z)
    cp = relayq(["check", "--no-relay", D], config=base_config(srv))
    no_secrets(cp)
    out = (cp.stdout + cp.stderr).decode("utf-8", "replace")
    assert cp.returncode == 1, fmt(cp)
    assert "FAIL" in out and "PASS" in out, out
    fail_lines = [l for l in out.splitlines() if "FAIL" in l]
    assert any(DM in l or "dmarc" in l.lower() for l in fail_lines), out
    assert DM in out and "v=DMARC1" in out, out      # what to write instead


def test_check_default_domains_and_config_errors(relayq, dns, keys):
    # default: every configured domain ([sender] domain, [account ...])
    z = merge_zones(good_zone(keys), good_zone(keys, OTHER, OTHER_USER))
    srv = dns(z)
    cfg = base_config(srv, **{"account_" + OTHER: account_section()})
    cp, j = run_json(relayq, ["--no-relay"], cfg)
    assert sorted(d["domain"] for d in j["domains"]) == sorted([D, OTHER]), fmt(cp)
    assert cp.returncode == 0, json.dumps(j, indent=1)
    assert_all_pass(j, OTHER)
    # the other account's token at example.com does not count for relayuser
    z2 = merge_zones(good_zone(keys, OTHER, OTHER_USER))
    z2.update(good_zone(keys))
    z2[D] = [r for r in z2[D] if not r[0].startswith("elastx-mrs=")] + [[token(OTHER_USER)]]
    srv2 = dns(z2)
    cp, j = run_json(relayq, ["--no-relay"], base_config(srv2, **{"account_" + OTHER:
                                                                  account_section()}))
    assert cp.returncode == 1, fmt(cp)
    assert checks_of(j, D)["token"]["status"] == "FAIL"
    assert checks_of(j, OTHER)["token"]["status"] == "PASS"
    cp = relayq(["check", "--no-relay"], config=base_config(srv, dns={"server": "300.1.2.3"}))
    assert cp.returncode == 78, fmt(cp)


# ---- 3. relay preflight ------------------------------------------------------------

def record_mail_from(r):
    """Makes the running fake relay remember every MAIL FROM address."""
    seen = []
    h = r._controller.handler
    orig = h.handle_MAIL

    async def handle_MAIL(server, session, envelope, address, mail_options):
        seen.append(address)
        return await orig(server, session, envelope, address, mail_options)

    h.handle_MAIL = handle_MAIL
    return seen


def assert_order(j):
    names = [s["step"] for s in j["relay"]["steps"]]
    it = iter(names)
    for want in ("connect", "ehlo", "starttls", "auth", "mail", "rset", "quit"):
        assert want in it, "steps out of order or missing %s: %r" % (want, names)


def test_preflight_good(relayq, relay, dns, keys):
    r = relay()
    seen = record_mail_from(r)
    srv = dns(good_zone(keys))
    cp, j = run_json(relayq, [], base_config(srv), relay=r)
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 0 and j["ok"] is True, dump
    assert_all_pass(j, D)
    assert j["relay"]["host"] == "127.0.0.1" and j["relay"]["port"] == r.port, dump
    assert_order(j)
    for s in j["relay"]["steps"]:
        assert s["status"] == "PASS", dump
    codes = {"connect": "220", "starttls": "220", "auth": "235", "mail": "250",
             "rset": "250", "quit": "221", "ehlo": "250"}
    for s in j["relay"]["steps"]:
        assert s["reply"].startswith(codes[s["step"]]), dump
    assert step(j, "mail", D) and step(j, "rset", D)
    assert r.messages == [] and r.rejected == [], r.messages
    v = r.verbs()
    assert "DATA" not in v and v.count("MAIL") == 1 and v.count("RSET") == 1, v
    assert v[-1] == "QUIT" and v.index("STARTTLS") < v.index("AUTH") < v.index("MAIL"), v
    assert r.auth_successes == 1
    assert len(seen) == 1 and seen[0].lower().endswith("@" + D), seen
    # human form
    cp = relayq(["check"], config=base_config(srv), relay=r)
    no_secrets(cp)
    assert cp.returncode == 0 and b"FAIL" not in cp.stdout, fmt(cp)
    assert r.messages == []


def test_preflight_probes_each_domain(relayq, relay, dns):
    r = relay()
    seen = record_mail_from(r)
    srv = dns({})
    cp, j = run_json(relayq, ["--no-dns", D, "example.org"], base_config(srv), relay=r)
    assert cp.returncode == 0, json.dumps(j, indent=1) + fmt(cp)
    assert j["domains"] == []
    for dom in (D, "example.org"):
        assert step(j, "mail", dom)["status"] == "PASS"
        assert step(j, "rset", dom)["status"] == "PASS"
    assert sorted(a.lower().rsplit("@", 1)[1] for a in seen) == sorted([D, "example.org"]), seen
    assert r.verbs().count("RSET") >= 2 and "DATA" not in r.verbs() and r.messages == []


def test_preflight_wrong_password(relayq, relay, dns):
    r = relay(password="the-relay-wants-another")
    srv = dns({})
    cp, j = run_json(relayq, ["--no-dns"], base_config(srv), relay=r)
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 1 and j["ok"] is False, dump
    for name in ("connect", "ehlo", "starttls"):
        assert step(j, name)["status"] == "PASS", dump
    a = step(j, "auth")
    assert a["status"] == "FAIL" and a["reply"].startswith("535"), dump
    for s in j["relay"]["steps"]:
        if s["step"] in ("mail", "rset"):
            assert s["status"] == "SKIP", dump
    assert "MAIL" not in r.verbs() and r.messages == []
    cp = relayq(["check", "--no-dns"], config=base_config(srv), relay=r)
    no_secrets(cp)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1 and b"FAIL" in out and b"535" in out and b"SKIP" in out, fmt(cp)


@pytest.mark.parametrize("how", ["no-starttls", "untrusted-cert", "wrong-name-cert"])
def test_preflight_tls_failure(relayq, relay, dns, how):
    if how == "no-starttls":
        r = relay(mode="plain-no-starttls")
    else:
        r = relay(cert="evil" if how == "untrusted-cert" else "wrong")
    srv = dns({})
    cp, j = run_json(relayq, ["--no-dns"], base_config(srv), relay=r)
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 1 and j["ok"] is False, dump
    assert step(j, "connect")["status"] == "PASS", dump
    assert step(j, "starttls")["status"] == "FAIL", dump
    assert step(j, "auth")["status"] == "SKIP", dump
    for s in j["relay"]["steps"]:
        if s["step"] in ("mail", "rset"):
            assert s["status"] == "SKIP", dump
    assert r.auth_attempts == [], r.auth_attempts
    assert "AUTH" not in r.verbs() and "MAIL" not in r.verbs(), r.commands


def test_preflight_connect_failures(relayq, relay, dns):
    srv = dns({})
    r = relay(greeting_reply=(421, "4.3.2 try later"))
    cp, j = run_json(relayq, ["--no-dns"], base_config(srv), relay=r)
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 1 and j["ok"] is False, dump
    c = step(j, "connect")
    assert c["status"] == "FAIL" and c["reply"].startswith("421"), dump
    for s in j["relay"]["steps"]:
        if s["step"] in ("starttls", "auth", "mail", "rset"):
            assert s["status"] == "SKIP", dump
    assert r.auth_attempts == []
    # nothing listening
    import socket
    sk = socket.socket()
    sk.bind(("127.0.0.1", 0))
    port = sk.getsockname()[1]
    sk.close()
    cp, j = run_json(relayq, ["--no-dns"], base_config(srv, relay={"port": port}))
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 1 and step(j, "connect")["status"] == "FAIL", dump
    assert j["relay"]["port"] == port and step(j, "connect")["reply"] == "", dump
    assert step(j, "auth")["status"] == "SKIP", dump


def test_preflight_mail_refused(relayq, relay, dns, keys):
    r = relay(mail_replies=["550 5.7.1 not allowed"])
    srv = dns(good_zone(keys))
    cp, j = run_json(relayq, [], base_config(srv), relay=r)
    dump = json.dumps(j, indent=1) + fmt(cp)
    assert cp.returncode == 1 and j["ok"] is False, dump
    assert_all_pass(j, D)
    assert step(j, "auth")["status"] == "PASS", dump
    m = step(j, "mail", D)
    assert m["status"] == "FAIL" and m["reply"].startswith("550") \
        and "not allowed" in m["reply"], dump
    assert r.messages == [] and "DATA" not in r.verbs()


# ---- 4. [dkim] require = yes -----------------------------------------------------

def require_config(srv, **extra):
    cfg = {"dns": {"server": srv.addr}, "dkim": {"require": "yes"}}
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def msg(frm, subject="require"):
    return ("From: App <%s>\nTo: rcpt@example.org\nSubject: %s\n\nbody\n"
            % (frm, subject)).encode()


def test_require_refuses_without_dkim_record(relayq, dns, keys):
    srv = dns({"elastx._domainkey.good.example": [split255(keys.elastx.record())],
               "elastx._domainkey.nop.example": [["v=DKIM1; k=rsa"]]})
    cfg = require_config(srv)
    cp = relayq(["-odq", "rcpt@example.org"], msg("app@nokey.example"), config=cfg)
    assert cp.returncode == 65, fmt(cp)
    assert b"elastx._domainkey.nokey.example" in cp.stderr, fmt(cp)
    assert relayq.queue_files() == [] and relayq.failed_ids() == [], fmt(cp)
    # a record without p= is not one
    cp = relayq(["-odq", "rcpt@example.org"], msg("app@nop.example"), config=cfg)
    assert cp.returncode == 65, fmt(cp)
    assert b"elastx._domainkey.nop.example" in cp.stderr, fmt(cp)
    assert relayq.queue_files() == []
    # the From header decides, not the envelope sender
    cp = relayq(["-odq", "-f", "app@good.example", "rcpt@example.org"],
                msg("app@nokey.example"), config=cfg)
    assert cp.returncode == 65 and relayq.queue_files() == [], fmt(cp)
    # with the record: accepted
    cp = relayq(["-odq", "-f", "app@nokey.example", "rcpt@example.org"],
                msg("app@good.example"), config=cfg)
    assert cp.returncode == 0, fmt(cp)
    assert len(relayq.queued_ids()) == 1, fmt(cp)
    # the same message is accepted with require = no
    cp = relayq(["-odq", "rcpt@example.org"], msg("app@nokey.example"),
                config=require_config(srv, dkim={"require": "no"}))
    assert cp.returncode == 0 and len(relayq.queued_ids()) == 2, fmt(cp)


def test_require_accepts_local_key_domain(relayq, dns, keys):
    srv = dns({})                                     # no DKIM record at all
    cfg = require_config(srv, dkim=dkim_section(keys.rsa, domain="signed.example"))
    cp = relayq(["-odq", "rcpt@example.org"], msg("app@signed.example"), config=cfg)
    assert cp.returncode == 0, fmt(cp)
    assert len(relayq.queued_ids()) == 1
    cp = relayq(["-odq", "rcpt@example.org"], msg("app@SIGNED.Example"), config=cfg)
    assert cp.returncode == 0, fmt(cp)                # domains ignore case
    assert len(relayq.queued_ids()) == 2
    cp = relayq(["-odq", "rcpt@example.org"], msg("app@unsigned.example"), config=cfg)
    assert cp.returncode == 65 and b"elastx._domainkey.unsigned.example" in cp.stderr, fmt(cp)
    assert len(relayq.queued_ids()) == 2


def test_require_bs_dialogue(relayq, dns, keys):
    srv = dns({"elastx._domainkey.good.example": [split255(keys.elastx.record())]})
    cfg = require_config(srv, queue={"delivery": "queue"})
    lines = [b"EHLO client.example",
             b"MAIL FROM:<app@good.example>", b"RCPT TO:<a@example.org>", b"DATA",
             b"From: app@nokey.example", b"Subject: bad", b"", b"body", b".",
             b"MAIL FROM:<app@good.example>", b"RCPT TO:<a@example.org>", b"DATA",
             b"From: app@good.example", b"Subject: good", b"", b"body", b".",
             b"QUIT"]
    cp = relayq(["-bs"], b"".join(l + b"\r\n" for l in lines), config=cfg)
    replies = [x for x in cp.stdout.split(b"\r\n") if x]
    finals = [x for x in replies if x[3:4] == b" "]
    codes = [int(x[:3]) for x in finals]
    assert codes == [220, 250, 250, 250, 354, 550, 250, 250, 354, 250, 221], \
        "%r\n%s" % (replies, fmt(cp))
    refusal = finals[5]
    assert refusal.startswith(b"550 5.7.1"), refusal
    ids = relayq.queued_ids()
    assert len(ids) == 1, fmt(cp)
    assert b"Subject: good" in relayq.read_queued(ids[0])
