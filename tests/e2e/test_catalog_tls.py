"""Attack catalog T1-T9 (shared/notes/reliability.md sections 4 and 5): the
TLS and AUTH bar.  One test per catalog case, named after it: nothing goes
out in clear, a bad or weak server is refused, the message is kept (never
bounced) and the reason logged.

Certificates beyond certs.make_certs() come from certs.extra_pair();
servers that must lie at byte level (injection after "220 ready", different
capabilities before and after TLS) from hostile.py.  Host names other than
127.0.0.1 (relay.example, a.b.example) are mapped to 127.0.0.1 in a private
mount namespace (hostile.hosts_wrap), so nothing but loopback is contacted.
"""

import smtplib
import ssl

import pytest

import certs as certs_mod
from conftest import RELAY_USER, SECRET, fmt, header_values
from hostile import HostileServer, check_log_sane, hosts_wrap, server_ctx

RCPT = "rcpt@example.com"
SENDER = "sender@example.com"
CLEAR_FORBIDDEN = ("AUTH", "MAIL", "RCPT", "DATA")


# ---- helpers ---------------------------------------------------------------------

def configure(relayq, port, queue=None, relay_cfg=None):
    relayq.port = port
    cfg = {"queue": dict(queue or {"rate": 0})}
    if relay_cfg:
        cfg["relay"] = dict(relay_cfg)
    relayq.write_config(cfg)


def run(relayq, args, stdin=b"", **kw):
    kw.setdefault("write", False)
    return relayq(args, stdin, **kw)


def msg(tag, rcpt=RCPT, extra=b""):
    return (b"From: Sender <%s>\nTo: %s\nSubject: %s\nMessage-ID: <%s@example.com>\n%s\n"
            b"body of %s\n" % (SENDER.encode(), rcpt.encode(), tag.encode(),
                               tag.encode(), extra, tag.encode()))


def mid_of(m):
    v = header_values(m["data"], "message-id")
    assert len(v) == 1, m["data"][:500]
    return v[0].strip().decode()


def entry(relayq, qid):
    for e in relayq.queue_list():
        if e["id"] == qid:
            return e
    raise AssertionError("%s not listed: %r" % (qid, relayq.queue_list()))


def assert_kept_deferred(relayq, cp, qid=None):
    """A foreground submission or a queue run that left the message queued,
    pending, with a deferral logged; nothing failed, no DSN queued."""
    assert cp.returncode == 0, fmt(cp)
    ids = relayq.queued_ids()
    if qid is None:
        assert len(ids) == 1, "queue/=%r\n%s" % (relayq.queue_files(), fmt(cp))
        qid = ids[0]
    assert ids == [qid], "queue/=%r (a DSN?)\n%s" % (relayq.queue_list(), fmt(cp))
    assert relayq.failed_ids() == [], fmt(cp)
    assert b"status=deferred" in cp.stderr, fmt(cp)
    e = entry(relayq, qid)
    assert [x["status"] for x in e["recipients"]] == ["pending"], e
    check_log_sane(cp.stderr)
    return qid


def assert_nothing_in_clear(verbs_clear):
    bad = [v for v in verbs_clear if v in CLEAR_FORBIDDEN]
    assert bad == [], "sent in clear: %r (all: %r)" % (bad, verbs_clear)


def assert_no_session(r):
    """A FakeRelay saw no AUTH and no transaction, in clear or in TLS."""
    verbs = r.verbs()
    assert not set(verbs) & set(CLEAR_FORBIDDEN), r.commands
    assert r.auth_attempts == [] and r.messages == [] and r.rejected == []


def ctx_for(cert, key, **kw):
    return server_ctx(cert, key, **kw)


def twice_kept(relayq, cp, wrap=()):
    """cp deferred the message; a queue run keeps it too (no DSN)."""
    qid = assert_kept_deferred(relayq, cp)
    cp = run(relayq, ["-q"], wrap=wrap)
    assert_kept_deferred(relayq, cp, qid)
    return qid, cp


# ---- T1-T3: STARTTLS stripped, hijacked, refused -------------------------------------

def test_T1_starttls_stripped_nothing_sent_kept(relayq, relay):
    # A MITM removed STARTTLS from the EHLO reply; the server offers AUTH
    # in clear.
    r = relay(mode="plain-no-starttls")
    configure(relayq, r.port)
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t1"))
    qid, cp2 = twice_kept(relayq, cp)
    assert_no_session(r)
    assert r.tls_handshakes == 0
    assert "EHLO" in r.verbs(), r.commands
    for c in (cp, cp2):
        assert b"STARTTLS" in c.stderr, "no alert naming STARTTLS\n" + fmt(c)


T2_INJECT = {
    "250": b"250 2.0.0 injected\r\n",
    "235": b"235 2.7.0 Authentication successful\r\n",
    "forged-ehlo": b"250-hostile.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
}


@pytest.mark.parametrize("inject", list(T2_INJECT))
def test_T2_injected_bytes_after_starttls(relayq, certs, inject):
    # The 220 to STARTTLS and the injected replies arrive in one segment,
    # before the handshake: a client must see the extra plaintext and
    # abort, never take it as replies to commands sent inside TLS.
    srv = HostileServer(tls_ctx=ctx_for(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET,
                        starttls_inject=T2_INJECT[inject]).start()
    try:
        configure(relayq, srv.port)
        cp = run(relayq, ["-f", SENDER, RCPT], msg("t2"))
        qid, _ = twice_kept(relayq, cp)
        after_tls = srv.verbs(tls=True)
        assert set(after_tls) <= {"QUIT"}, \
            "commands sent after a STARTTLS reply with injected bytes: %r" % srv.commands
        assert srv.auth == [] and srv.messages == [], (srv.auth, srv.messages)
        assert_nothing_in_clear(srv.verbs(tls=False))
    finally:
        srv.stop()


def test_T3_starttls_454_kept_no_plaintext(relayq, relay):
    r = relay(starttls_reply=(454, "4.7.0 TLS not available due to temporary reason"))
    configure(relayq, r.port)
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t3"))
    qid, cp2 = twice_kept(relayq, cp)
    assert r.tls_handshakes == 0
    assert_no_session(r)
    # after the 454: nothing but QUIT on that connection
    verbs = r.verbs()
    for i, v in enumerate(verbs):
        if v == "STARTTLS":
            nxt = verbs[i + 1:i + 2]
            assert nxt in ([], ["QUIT"]), "after a 454 to STARTTLS: %r" % verbs


# ---- T4-T7: certificates, names, CA file, protocol version ------------------------------

T4_CERTS = {
    "self-signed": ("selfsigned", b"self"),
    "expired": ("expired", b"expired"),
    "not-yet-valid": ("notyet", b"not yet valid"),
    "wrong-name": ("wrong", b"mismatch"),
    "untrusted-ca": ("evil", b"certificate"),
}


def _cert_pair(certs, name):
    if name in ("good", "evil", "wrong"):
        return certs.pair(name)
    return certs_mod.extra_pair(certs, name)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
@pytest.mark.parametrize("case", list(T4_CERTS))
def test_T4_bad_certificate_rejected_kept(relayq, relay, certs, case, mode):
    name, why = T4_CERTS[case]
    c, k = _cert_pair(certs, name)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(c, k)
    r = relay(mode=mode, ssl_context=ctx)
    configure(relayq, r.port, relay_cfg={"tls": mode})
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t4"))
    twice_kept(relayq, cp)
    assert_no_session(r)
    assert set(r.verbs(tls=True)) <= {"QUIT"}, r.commands
    low = cp.stderr.lower()
    assert b"certificate" in low and why in low, "no clear reason (%r) logged\n%s" % (
        why, fmt(cp))


T5_CASES = {
    # case: (extra cert, configured host)
    "nul-in-cn": ("nul-cn", "relay.example"),
    "nul-in-san": ("nul-san", "relay.example"),
    "wildcard-two-labels": ("wild-deep", "a.b.example"),
    "wildcard-partial": ("wild-partial", "relay.example"),
    "wildcard-not-leftmost": ("wild-middle", "a.b.example"),
    "wildcard-bare": ("wild-bare", "relay.example"),
}
NAMES = ["relay.example", "a.b.example"]


@pytest.mark.parametrize("host", NAMES)
def test_T5_control_good_name_accepted(relayq, relay, certs, tmp_path, host):
    # Without this the T5 refusals could come from the name mapping.
    c, k = certs_mod.extra_pair(certs, "relay-good")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(c, k)
    r = relay(ssl_context=ctx)
    wrap = hosts_wrap(tmp_path / "ns", NAMES)
    configure(relayq, r.port, relay_cfg={"host": host})
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t5ok"), wrap=wrap)
    assert cp.returncode == 0, fmt(cp)
    assert b"status=sent" in cp.stderr, fmt(cp)
    assert [mid_of(m) for m in r.wait_for_messages(1)] == ["<t5ok@example.com>"]
    assert relayq.queue_files() == []


@pytest.mark.parametrize("case", list(T5_CASES))
def test_T5_nul_or_bad_wildcard_name_rejected(relayq, relay, certs, tmp_path, case):
    name, host = T5_CASES[case]
    c, k = certs_mod.extra_pair(certs, name)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(c, k)
    r = relay(ssl_context=ctx)
    wrap = hosts_wrap(tmp_path / "ns", NAMES)
    configure(relayq, r.port, relay_cfg={"host": host})
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t5"), wrap=wrap)
    twice_kept(relayq, cp, wrap=wrap)
    assert r.connections >= 1, "never connected: the name mapping failed\n" + fmt(cp)
    assert_no_session(r)
    assert set(r.verbs(tls=True)) <= {"QUIT"}, r.commands
    assert b"certificate" in cp.stderr.lower(), fmt(cp)


@pytest.mark.parametrize("how", ["missing", "empty", "garbage", "directory",
                                 "key-not-cert"])
def test_T6_ca_file_missing_or_unreadable_fails_closed(relayq, relay, certs, tmp_path, how):
    path = tmp_path / ("ca-" + how)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                         b"-----END CERTIFICATE-----\n")
    elif how == "directory":
        path.mkdir()
    elif how == "key-not-cert":
        with open(certs.ca_key, "rb") as f:
            path.write_bytes(f.read())
    r = relay()
    configure(relayq, r.port, relay_cfg={"ca_file": str(path)})
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t6"))
    twice_kept(relayq, cp)
    assert_no_session(r)
    assert set(r.verbs(tls=True)) <= {"QUIT"}, r.commands
    assert str(path).encode() in cp.stderr or b"ca_file" in cp.stderr, \
        "the CA file is not named\n" + fmt(cp)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_T7_old_tls_only_server_refused(relayq, relay, certs, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = ctx_for(certs.server_cert, certs.server_key, minimum=v, maximum=v,
                  ciphers="DEFAULT:@SECLEVEL=0")
    r = relay(ssl_context=ctx)
    # the server really speaks only that version (else the test means nothing)
    cli = ssl.create_default_context(cafile=certs.ca)
    cli.set_ciphers("DEFAULT:@SECLEVEL=0")
    cli.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    cli.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.starttls(context=cli)
        assert s.sock.version() == version.replace("_", "."), s.sock.version()
    r.reset()
    configure(relayq, r.port)
    cp = run(relayq, ["-f", SENDER, RCPT], msg("t7"))
    twice_kept(relayq, cp)
    assert r.tls_handshakes == 0, "a %s handshake completed" % version
    assert_no_session(r)


# ---- T8-T9: AUTH --------------------------------------------------------------------------

def test_T8_auth_535_defers_whole_queue_no_dsn(relayq, relay):
    r = relay(auth_fail=True)
    configure(relayq, r.port)
    for i in range(3):
        cp = run(relayq, ["-odq", "-f", SENDER, RCPT], msg("t8-%d" % i))
        assert cp.returncode == 0, fmt(cp)
    ids = relayq.queued_ids()
    assert len(ids) == 3
    for n in (1, 2):
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
        check_log_sane(cp.stderr)
        assert r.connections == n, "one failed AUTH must stop the run: %d connections" % (
            r.connections)
        assert relayq.queued_ids() == ids, "a message left the queue\n" + fmt(cp)
        assert relayq.failed_ids() == []
        alert = [ln for ln in cp.stderr.splitlines() if b"535" in ln]
        assert alert and any(b"auth" in ln.lower() for ln in alert), \
            "no alert naming the AUTH refusal\n" + fmt(cp)
    assert [a["success"] for a in r.auth_attempts] == [False, False]
    assert all(a["tls"] for a in r.auth_attempts)
    assert "MAIL" not in r.verbs() and r.messages == [] and r.rejected == []
    for qid in ids:
        e = entry(relayq, qid)
        assert [x["status"] for x in e["recipients"]] == ["pending"], e


T9_CASES = {
    # case: (caps before TLS, caps after TLS)
    "login-then-plain": (["STARTTLS", "AUTH LOGIN"], ["AUTH PLAIN"]),
    "plain-then-login": (["STARTTLS", "AUTH PLAIN"], ["AUTH LOGIN"]),
    "auth-dropped-after-tls": (["STARTTLS", "AUTH PLAIN LOGIN"], ["ENHANCEDSTATUSCODES"]),
    "8bitmime-dropped-after-tls": (["STARTTLS", "8BITMIME", "AUTH PLAIN LOGIN"],
                                   ["AUTH PLAIN LOGIN"]),
    "8bitmime-added-after-tls": (["STARTTLS"], ["8BITMIME", "AUTH PLAIN LOGIN"]),
}


@pytest.mark.parametrize("case", list(T9_CASES))
def test_T9_only_post_tls_ehlo_used(relayq, certs, case):
    pre, post = T9_CASES[case]
    srv = HostileServer(tls_ctx=ctx_for(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET, caps_pre=pre,
                        caps_post=post).start()
    try:
        configure(relayq, srv.port)
        eight = case.startswith("8bitmime")
        cp = run(relayq, ["-f", SENDER, *(["-B8BITMIME"] if eight else []), RCPT],
                 msg("t9", extra=b"X-Eight: caf\xc3\xa9\n" if eight else b""))
        assert_nothing_in_clear(srv.verbs(tls=False))
        assert all(a["tls"] for a in srv.auth), srv.auth
        if case == "auth-dropped-after-tls":
            assert_kept_deferred(relayq, cp)
            assert srv.auth == [], "AUTH sent though the post-TLS EHLO lists none"
            assert srv.messages == []
            return
        assert cp.returncode == 0, fmt(cp)
        assert b"status=sent" in cp.stderr, fmt(cp)
        (m,) = srv.messages
        post_mechs = {w for c in post if c.startswith("AUTH ") for w in c.split()[1:]}
        used = [a["mechanism"] for a in srv.auth]
        assert used and set(used) <= post_mechs, \
            "AUTH %r, but after TLS the server offered %r" % (used, sorted(post_mechs))
        body8 = "BODY=8BITMIME" in m["mail_params"].upper()
        if case == "8bitmime-dropped-after-tls":
            assert not body8, "BODY=8BITMIME from the pre-TLS EHLO: %r" % m["mail_params"]
        elif case == "8bitmime-added-after-tls":
            assert body8, "8BITMIME of the post-TLS EHLO ignored: %r" % m["mail_params"]
        assert relayq.queue_files() == []
    finally:
        srv.stop()
