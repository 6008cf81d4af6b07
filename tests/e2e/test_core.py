"""relayq end to end: submission, message handling, TLS/AUTH policy, spool,
exit codes and logging, against the fake relay (see fakerelay.py)."""

import email.utils
import re
import time

import pytest

from conftest import (RELAY_USER, SECRET, SENDER_DOMAIN, assert_crlf_only,
                      body_of, default_sender, fmt, header_values,
                      split_message)

RCPT = "rcpt@example.com"


# ---- helpers ----------------------------------------------------------------

def sent_ok(relayq, cp):
    assert cp.returncode == 0, fmt(cp)
    assert relayq.queue_files() == [], "queue/ not empty: %r\n%s" % (
        relayq.queue_files(), fmt(cp))
    assert relayq.failed_ids() == [], fmt(cp)


def deliver(relayq, r, args, stdin, **kw):
    """Submits, expects exit 0 and exactly one message at the relay."""
    cp = relayq(args, stdin, relay=r, **kw)
    sent_ok(relayq, cp)
    msgs = r.wait_for_messages(1, timeout=5)
    assert len(msgs) == 1, msgs
    return cp, msgs[0]


def assert_deferred(relayq, r, cp):
    """Exit 0, kept in queue/, a 'deferred' warning, nothing delivered."""
    assert cp.returncode == 0, fmt(cp)
    ids = relayq.queued_ids()
    assert len(ids) == 1, "expected one queued message, queue/=%r\n%s" % (
        relayq.queue_files(), fmt(cp))
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    assert log_lines(cp, "deferred", ids[0]), fmt(cp)
    assert relayq.failed_ids() == [], fmt(cp)
    assert r.messages == [], r.messages
    return ids[0]


def log_lines(cp, status, qid=None):
    """stderr lines with status=<status> (and the queue id, or any id)."""
    out = []
    for line in cp.stderr.decode("utf-8", "replace").splitlines():
        if "status=%s" % status not in line:
            continue
        if qid is not None and qid not in line:
            continue
        if qid is None and not re.search(r"(?<![0-9a-f])[0-9a-f]{20}(?![0-9a-f])", line):
            continue
        out.append(line)
    return out


def count(data, name):
    return len(header_values(data, name))


def assert_std_headers_once(data):
    for h in ("date", "message-id", "from"):
        assert count(data, h) == 1, "%s x%d in %r" % (h, count(data, h), data)


# ---- a. envelope, body, added headers ----------------------------------------

FULL = (b"From: Alice <alice@example.com>\n"
        b"To: Bob <bob@example.org>\n"
        b"Subject: envelope test\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\n"
        b"Message-ID: <fixed-1@example.com>\n"
        b"X-Custom: keep me\n"
        b"\n"
        b"Hello,\n"
        b"this is the body.\n"
        b"\n"
        b"-- \n"
        b"sig\n")


def test_envelope_and_body_exact(relayq, relay):
    r = relay()
    cp, m = deliver(relayq, r, ["-f", "sender@example.com", "--",
                                "bob@example.org", "carol@example.net"], FULL)
    assert m["mail_from"] == "sender@example.com"
    assert sorted(m["rcpt_tos"]) == ["bob@example.org", "carol@example.net"]
    data = m["data"]
    assert_crlf_only(data)
    head, body = split_message(data)
    assert body == b"Hello,\r\nthis is the body.\r\n\r\n-- \r\nsig\r\n"
    # every original header arrives verbatim, exactly once, in order
    orig = FULL.split(b"\n\n")[0].split(b"\n")
    pos = [head.index(h) for h in orig]
    assert pos == sorted(pos), head
    for h in orig:
        assert head.count(h) == 1, (h, head)
    assert_std_headers_once(data)
    assert header_values(data, "message-id") == [b" <fixed-1@example.com>"]
    assert header_values(data, "date") == [b" Mon, 23 Nov 2026 10:00:00 +0000"]
    assert header_values(data, "from") == [b" Alice <alice@example.com>"]
    assert log_lines(cp, "sent"), fmt(cp)
    assert m["tls"] and m["auth_login"] == RELAY_USER


def test_missing_headers_added_once(relayq, relay):
    r = relay()
    stdin = b"To: bob@example.org\nSubject: bare\n\nbody\n"
    cp, m = deliver(relayq, r, ["bob@example.org"], stdin)
    data = m["data"]
    assert m["mail_from"] == default_sender()
    assert m["rcpt_tos"] == ["bob@example.org"]
    assert_crlf_only(data)
    assert_std_headers_once(data)
    assert b"To: bob@example.org\r\n" in data and b"Subject: bare\r\n" in data
    frm = header_values(data, "from")[0]
    assert default_sender().encode() in frm, frm
    assert b"not-the-login" not in data            # $USER/$LOGNAME ignored
    mid = header_values(data, "message-id")[0].strip()
    assert re.fullmatch(rb"<[^<>@\s]+@[^<>@\s]+>", mid), mid
    date = email.utils.parsedate_tz(header_values(data, "date")[0].strip().decode())
    assert date is not None, header_values(data, "date")
    assert abs(email.utils.mktime_tz(date) - time.time()) < 3600
    assert body_of(data) == b"body\r\n"


def test_existing_headers_matched_case_insensitively(relayq, relay):
    r = relay()
    stdin = (b"from: low@example.com\nDATE: Tue, 24 Nov 2026 08:00:00 +0000\n"
             b"Message-Id: <case@example.com>\nTo: bob@example.org\nSubject: c\n\nx\n")
    _, m = deliver(relayq, r, ["bob@example.org"], stdin)
    assert_std_headers_once(m["data"])
    assert header_values(m["data"], "message-id") == [b" <case@example.com>"]
    assert header_values(m["data"], "from") == [b" low@example.com"]


def test_no_header_section_gets_headers(relayq, relay):
    r = relay()
    _, m = deliver(relayq, r, [RCPT], b"Just a body line without headers\nsecond line\n")
    assert_std_headers_once(m["data"])
    assert body_of(m["data"]) == b"Just a body line without headers\r\nsecond line\r\n"


def test_message_id_same_in_spool_and_on_wire(relayq, relay):
    r = relay()
    cp = relayq(["-odq", RCPT], b"To: rcpt@example.com\nSubject: mid\n\nx\n", relay=r)
    assert cp.returncode == 0, fmt(cp)
    ids = relayq.queued_ids()
    assert len(ids) == 1, fmt(cp)
    spooled = relayq.read_queued(ids[0])
    mids = re.findall(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)", spooled)
    assert len(mids) == 1, spooled
    assert r.connections == 0
    cp = relayq(["-q"], relay=r)
    sent_ok(relayq, cp)
    m = r.wait_for_messages(1)[0]
    assert header_values(m["data"], "message-id") == [b" " + mids[0]]


def test_starttls_then_auth_then_mail(relayq, relay):
    r = relay()
    deliver(relayq, r, [RCPT], b"Subject: seq\n\nx\n")
    assert r.verbs(tls=False) == ["EHLO", "STARTTLS"], r.commands
    after = r.verbs(tls=True)
    assert after[0] == "EHLO", r.commands
    assert "AUTH" in after and after.index("AUTH") < after.index("MAIL"), r.commands
    assert [(a["success"], a["tls"]) for a in r.auth_attempts] == [(True, True)]
    assert r.connections == 1 and r.tls_handshakes == 1


# ---- flags ------------------------------------------------------------------

FLAG_CASES = [
    ("f-last-wins", ["-f", "a@example.com", "-f", "b@example.com", RCPT], "b@example.com", [RCPT]),
    ("f-attached-then-r", ["-fa@example.com", "-r", "c@example.com", RCPT], "c@example.com", [RCPT]),
    ("r", ["-r", "r@example.com", RCPT], "r@example.com", [RCPT]),
    ("F-separate", ["-F", "Sender Name", RCPT], None, [RCPT]),
    ("F-separate-word", ["-F", "Sender", "-f", "s@example.com", "--", RCPT], "s@example.com", [RCPT]),
    ("cron", ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", RCPT], None, [RCPT]),
    ("B-separate", ["-B", "8BITMIME", "-odi", "-oi", "-v", RCPT], None, [RCPT]),
    ("other-o", ["-oep", "-om", "-oee", "-i", RCPT], None, [RCPT]),
    ("double-dash", ["-i", "--", "a@example.com", "b@example.com"], None,
     ["a@example.com", "b@example.com"]),
    ("comma-list", ["a@example.com,b@example.com"], None, ["a@example.com", "b@example.com"]),
    ("unqualified", ["root", "nobody"], None,
     ["root@" + SENDER_DOMAIN, "nobody@" + SENDER_DOMAIN]),
    ("unqualified-sender", ["-f", "root", RCPT], "root@" + SENDER_DOMAIN, [RCPT]),
    ("repeated-t-i", ["-i", "-t", "-i", "-t"], None, ["to@example.com"]),
]


@pytest.mark.parametrize("args,sender,rcpts", [c[1:] for c in FLAG_CASES],
                         ids=[c[0] for c in FLAG_CASES])
def test_flags(relayq, relay, args, sender, rcpts):
    r = relay()
    _, m = deliver(relayq, r, args, b"To: to@example.com\nSubject: flags\n\nbody\n")
    assert m["mail_from"] == (sender or default_sender())
    assert sorted(m["rcpt_tos"]) == sorted(rcpts)
    assert body_of(m["data"]) == b"body\r\n"


# ---- b. Bcc -----------------------------------------------------------------

def test_bcc_with_t(relayq, relay):
    r = relay()
    stdin = (b"To: to@example.com\nBcc: hidden@example.com,\n  hidden2@example.com\n"
             b"Subject: bcc\n\nbody\n")
    _, m = deliver(relayq, r, ["-t", "-i"], stdin)
    assert sorted(m["rcpt_tos"]) == ["hidden2@example.com", "hidden@example.com",
                                     "to@example.com"]
    assert count(m["data"], "bcc") == 0
    assert b"hidden" not in m["data"]
    assert b"Subject: bcc\r\n" in m["data"] and b"To: to@example.com\r\n" in m["data"]
    assert body_of(m["data"]) == b"body\r\n"


@pytest.mark.parametrize("name", [b"Bcc", b"BCC", b"bcc"])
def test_bcc_removed_with_argv_recipients(relayq, relay, name):
    r = relay()
    stdin = (b"To: to@example.com\r\n" + name + b": hidden@example.com\r\n"
             b"Subject: bcc argv\r\n\r\nbody\r\n")
    _, m = deliver(relayq, r, ["-i", "-f", "app@example.com", "to@example.com"], stdin)
    assert m["rcpt_tos"] == ["to@example.com"]
    assert count(m["data"], "bcc") == 0
    assert b"hidden" not in m["data"]


# ---- c. -t address lists --------------------------------------------------------

T_CASES = [
    ("display-names", b'To: "Alice A." <alice@example.com>, Bob <bob@example.org>\n', [],
     ["alice@example.com", "bob@example.org"]),
    ("quoted-comma", b'To: "Doe, John" <john@example.com>, jane@example.com\n'
     b'Cc: "Roe, R." <r@example.com>,x@example.com\n', [],
     ["jane@example.com", "john@example.com", "r@example.com", "x@example.com"]),
    ("comments-and-angles", b"To: alice@example.com (Alice), <bob@example.org>,"
     b'"Carol" <carol@example.net>\n', [],
     ["alice@example.com", "bob@example.org", "carol@example.net"]),
    ("group", b"To: undisclosed: a@example.com, b@example.net;\n", [],
     ["a@example.com", "b@example.net"]),
    ("empty-group-plus-cc", b"To: undisclosed-recipients:;\nCc: c@example.com\n", [],
     ["c@example.com"]),
    ("folded", b"To: a@example.com,\n b@example.com,\n\tc@example.com\n"
     b"Cc: Dee\n <d@example.com>\n", [],
     ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]),
    ("empty-to-bcc-only", b"To: \r\nBcc: hidden@example.com\r\n", [], ["hidden@example.com"]),
    ("union-with-argv", b"To: a@example.com\nCc: b@example.com\n",
     ["b@example.com", "extra@example.com"],
     ["a@example.com", "b@example.com", "extra@example.com"]),
]


@pytest.mark.parametrize("hdrs,argv,expected", [c[1:] for c in T_CASES],
                         ids=[c[0] for c in T_CASES])
def test_t_address_lists(relayq, relay, hdrs, argv, expected):
    r = relay()
    stdin = b"Subject: t\n" + hdrs + b"\nbody\n"
    _, m = deliver(relayq, r, ["-t", "-i", *argv], stdin)
    assert sorted(m["rcpt_tos"]) == sorted(expected)   # also: no duplicates
    assert count(m["data"], "bcc") == 0
    assert_crlf_only(m["data"])


# ---- d. line endings and dots -------------------------------------------------

H = b"To: rcpt@example.com\nSubject: le\n\n"
LE_CASES = [
    ("lf", ["-i"], H + b"l1\nl2\n", b"l1\r\nl2\r\n"),
    ("crlf", ["-i"], H.replace(b"\n", b"\r\n") + b"l1\r\nl2\r\n", b"l1\r\nl2\r\n"),
    ("mixed", ["-i"], b"To: rcpt@example.com\r\nSubject: le\n\r\nl1\nl2\r\n\nl4\r\n",
     b"l1\r\nl2\r\n\r\nl4\r\n"),
    ("crlf-headers-lf-blank", ["-i"], b"To: rcpt@example.com\r\nSubject: le\r\n\nb1\n",
     b"b1\r\n"),
    ("stray-cr", ["-i"], H + b"a\rb\nx\r\r\ny\r.\r\nz\r", b"a b\r\nx \r\ny .\r\nz \r\n"),
    ("dot-crlf-line", ["-i"], H + b"before\n.\r\nafter\n", b"before\r\n.\r\nafter\r\n"),
    ("leading-dots", ["-i"], H + b".hidden\n..two\n.\n...\nend\n",
     b".hidden\r\n..two\r\n.\r\n...\r\nend\r\n"),
    ("no-final-newline", ["-i"], H + b"first\nlast line", b"first\r\nlast line\r\n"),
    ("lone-dot-ends-input", [], H + b"line1\n.\nline3\n", b"line1\r\n"),
    ("lone-dot-with-i", ["-i"], H + b"line1\n.\nline3\n", b"line1\r\n.\r\nline3\r\n"),
    ("lone-dot-with-oi", ["-oi"], H + b"line1\n.\nline3\n", b"line1\r\n.\r\nline3\r\n"),
]


@pytest.mark.parametrize("flags,stdin,body", [c[1:] for c in LE_CASES],
                         ids=[c[0] for c in LE_CASES])
def test_line_endings(relayq, relay, flags, stdin, body):
    r = relay()
    _, m = deliver(relayq, r, [*flags, RCPT], stdin)
    assert_crlf_only(m["data"])
    assert body_of(m["data"]) == body
    assert b"To: rcpt@example.com\r\nSubject: le\r\n" in m["data"]


def test_stray_cr_cannot_inject_header(relayq, relay):
    r = relay()
    stdin = b"To: rcpt@example.com\nSubject: hi\rBcc: victim@example.com\n\nbody\n"
    _, m = deliver(relayq, r, ["-t", "-i"], stdin)
    assert m["rcpt_tos"] == [RCPT]
    assert header_values(m["data"], "subject") == [b" hi Bcc: victim@example.com"]
    assert count(m["data"], "bcc") == 0
    assert_crlf_only(m["data"])


# ---- e. NUL and long lines -------------------------------------------------------

def test_nul_byte_refused(relayq, relay):
    r = relay()
    cp = relayq([RCPT], b"To: rcpt@example.com\nSubject: nul\n\nabc\x00def\n", relay=r)
    assert cp.returncode == 65, fmt(cp)
    assert cp.stderr.strip(), fmt(cp)
    assert relayq.queue_files() == [] and relayq.failed_ids() == [], fmt(cp)
    assert r.connections == 0 and r.messages == []


def test_long_lines_are_broken_not_lost(relayq, relay):
    r = relay()
    long_body = b"A" * 5000
    long_hdr = b"B" * 2000
    stdin = b"To: rcpt@example.com\nSubject: long\nX-Long: " + long_hdr + b"\n\nfirst\n" \
        + long_body + b"\nlast\n"
    _, m = deliver(relayq, r, ["-i", RCPT], stdin)
    data = m["data"]
    assert_crlf_only(data)
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, len(line)
    assert body_of(data).replace(b"\r\n ", b"") == b"first\r\n" + long_body + b"\r\nlast\r\n"
    xl = header_values(data, "x-long")
    assert len(xl) == 1 and xl[0].replace(b"\r\n ", b"").strip() == long_hdr


# ---- f-h. deferrals: AUTH failure, no STARTTLS, bad certificates -------------------

def test_wrong_password_defers_without_dsn(relayq, relay):
    r = relay(password="another-password")
    cp = relayq([RCPT], b"Subject: pw\n\nx\n", relay=r)
    qid = assert_deferred(relayq, r, cp)
    assert "MAIL" not in r.verbs()
    att = r.auth_attempts
    assert att and not any(a["success"] for a in att) and all(a["tls"] for a in att)
    # a queue run with the same bad password: still kept, never bounced
    cp = relayq(["-q"], relay=r)
    assert cp.returncode == 0, fmt(cp)
    assert relayq.queued_ids() == [qid] and relayq.failed_ids() == []
    assert r.messages == [] and r.rejected == []


def test_no_starttls_no_auth_no_mail(relayq, relay):
    r = relay(mode="plain-no-starttls")
    cp = relayq([RCPT], b"Subject: strip\n\nx\n", relay=r)
    assert_deferred(relayq, r, cp)
    verbs = r.verbs()
    assert "EHLO" in verbs, r.commands
    for v in ("AUTH", "MAIL", "RCPT", "DATA"):
        assert v not in verbs, r.commands
    assert r.auth_attempts == []


@pytest.mark.parametrize("mode,cert,cfg", [
    ("starttls", "evil", {}),
    ("starttls", "wrong", {}),
    ("tls", "evil", {"relay": {"tls": "tls"}}),
    ("tls", "wrong", {"relay": {"tls": "tls"}}),
    ("starttls", "good", {"relay": {"ca_file": None}}),   # test CA not in system store
], ids=["untrusted-ca", "wrong-name", "tls-untrusted-ca", "tls-wrong-name",
        "system-store"])
def test_bad_certificate_defers(relayq, relay, mode, cert, cfg):
    r = relay(mode=mode, cert=cert)
    cp = relayq([RCPT], b"Subject: cert\n\nx\n", relay=r, config=cfg)
    assert_deferred(relayq, r, cp)
    assert r.connections >= 1
    if mode == "starttls":
        assert "STARTTLS" in r.verbs(tls=False), r.commands
    assert set(r.verbs(tls=True)) <= {"QUIT"}, r.commands
    assert "AUTH" not in r.verbs() and "MAIL" not in r.verbs()
    assert r.auth_attempts == []


# ---- i. relay down, then -q ----------------------------------------------------------

def test_relay_down_then_queue_run(relayq, relay):
    down = relay()
    down_port = down.port
    down.stop()
    cp = relayq([RCPT], b"To: rcpt@example.com\nSubject: later\n\nbody\n",
                config={"relay": {"port": down_port}})
    assert cp.returncode == 0, fmt(cp)
    ids = relayq.queued_ids()
    assert len(ids) == 1, fmt(cp)
    assert b"deferred" in cp.stderr.lower() and log_lines(cp, "deferred", ids[0]), fmt(cp)

    up = relay()
    cp = relayq(["-q"], relay=up)
    sent_ok(relayq, cp)
    assert log_lines(cp, "sent", ids[0]), fmt(cp)
    m = up.wait_for_messages(1)[0]
    assert m["rcpt_tos"] == [RCPT] and body_of(m["data"]) == b"body\r\n"
    assert_std_headers_once(m["data"])
    cp = relayq(["-q"], relay=up)
    assert cp.returncode == 0, fmt(cp)
    time.sleep(0.3)
    assert len(up.messages) == 1
    assert relayq.queue_files() == [] and relayq.tmp_files() == []


# ---- j. permanent and temporary refusals -------------------------------------------

def test_rcpt_550_only_recipient(relayq, relay):
    text = "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
    r = relay(rcpt_replies={"nobody@example.com": (550, text)})
    cp = relayq(["nobody@example.com"], b"Subject: 550\n\nx\n", relay=r)
    assert cp.returncode == 67, fmt(cp)
    assert ("550 " + text).encode() in cp.stderr, fmt(cp)
    assert len(relayq.failed_ids()) == 1, fmt(cp)
    assert relayq.queue_files() == [], fmt(cp)
    assert log_lines(cp, "failed", relayq.failed_ids()[0]), fmt(cp)
    assert not [m for m in r.messages if "nobody@example.com" in m["rcpt_tos"]]


def test_rcpt_550_and_250(relayq, relay):
    r = relay(rcpt_replies={"bad@example.com": (550, "5.1.1 User unknown")})
    cp = relayq(["good@example.com", "bad@example.com"], b"Subject: mix\n\nx\n", relay=r)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1)
    # The DSN for bad@ is queued and sent by a detached runner: wait for it.
    deadline = time.time() + 10
    while relayq.queued_ids() and time.time() < deadline:
        time.sleep(0.05)
    assert relayq.queued_ids() == [], fmt(cp)
    cp = relayq(["-q"], relay=r)
    assert cp.returncode == 0, fmt(cp)
    time.sleep(0.3)
    to_good = [m for m in r.messages if "good@example.com" in m["rcpt_tos"]]
    assert len(to_good) == 1 and to_good[0]["rcpt_tos"] == ["good@example.com"]


def test_mail_from_550(relayq, relay):
    text = "5.7.1 Sender address rejected: not owned by user"
    r = relay(mail_reply=(550, text))
    cp = relayq(["-f", "other@example.com", RCPT], b"Subject: m\n\nx\n", relay=r)
    assert cp.returncode == 69, fmt(cp)
    assert ("550 " + text).encode() in cp.stderr, fmt(cp)
    assert len(relayq.failed_ids()) == 1 and relayq.queue_files() == [], fmt(cp)
    assert r.messages == []


def test_data_554(relayq, relay):
    text = "5.6.0 Message content rejected"
    r = relay(data_reply=(554, text))
    cp = relayq([RCPT], b"Subject: d\n\nx\n", relay=r)
    assert cp.returncode == 69, fmt(cp)
    assert ("554 " + text).encode() in cp.stderr, fmt(cp)
    assert len(relayq.failed_ids()) == 1 and relayq.queue_files() == [], fmt(cp)
    assert r.messages == []


def test_rcpt_451_defers(relayq, relay):
    r = relay(rcpt_replies={RCPT: (451, "4.3.0 Try again later")})
    cp = relayq([RCPT], b"Subject: 451\n\nx\n", relay=r)
    assert_deferred(relayq, r, cp)


def test_data_451_defers_then_delivers_once(relayq, relay):
    r = relay(data_reply=(451, "4.3.0 Try again later"))
    cp = relayq([RCPT], b"Subject: 451 data\n\nx\n", relay=r)
    assert_deferred(relayq, r, cp)
    r.data_reply = None
    cp = relayq(["-q"], relay=r)
    sent_ok(relayq, cp)
    r.wait_for_messages(1)
    time.sleep(0.3)
    assert len(r.messages) == 1


# ---- k. implicit TLS ------------------------------------------------------------------

def test_implicit_tls(relayq, relay):
    r = relay(mode="tls")
    _, m = deliver(relayq, r, [RCPT], b"Subject: 465\n\nx\n", config={"relay": {"tls": "tls"}})
    assert "STARTTLS" not in r.verbs()
    assert all(t for _, t in r.commands), r.commands
    assert [a["success"] for a in r.auth_attempts] == [True]
    assert m["tls"] and r.tls_handshakes == 1


# ---- l. password file, secrecy, config errors, usage, -odq -------------------------------

def test_password_file(relayq, relay, tmp_path):
    pw = tmp_path / "relay-password"
    pw.write_text(SECRET + "\nsecond line is not the password\n")
    pw.chmod(0o600)
    r = relay()
    deliver(relayq, r, [RCPT], b"Subject: pwfile\n\nx\n",
            config={"relay": {"password": None, "password_file": str(pw)}})
    assert [a["success"] for a in r.auth_attempts] == [True]


@pytest.mark.parametrize("relay_password", [SECRET, "another-password"],
                         ids=["auth-ok", "auth-fails"])
def test_password_never_in_verbose_output(relayq, relay, relay_password):
    # conftest's runner asserts on every run that the password (plain or as
    # an AUTH LOGIN / PLAIN blob) is absent from stdout and stderr.
    r = relay(password=relay_password)
    cp = relayq(["-v", RCPT], b"Subject: v\n\nx\n", relay=r)
    assert cp.returncode == 0, fmt(cp)
    cp = relayq(["-v", "-q"], relay=r)
    assert cp.returncode == 0, fmt(cp)


def _config_error_line(cp, path, key, lineno=None):
    for line in cp.stderr.decode("utf-8", "replace").splitlines():
        if path in line and key in line:
            if lineno is None or re.search(r"(?<!\d)%d(?!\d)" % lineno,
                                           line.replace(path, "")):
                return line
    return None


@pytest.mark.parametrize("override,key,bad_line", [
    ({"relay": {"port": "99999"}}, "port", "port = 99999"),
    ({"relay": {"hots": "x"}}, "hots", "hots = x"),
    ({"relay": {"tls": "sometimes"}}, "tls", "tls = sometimes"),
    ({"queue": {"delivery": "later"}}, "delivery", "delivery = later"),
], ids=["port-range", "unknown-key", "tls-value", "delivery-value"])
def test_config_errors(relayq, relay, override, key, bad_line):
    r = relay()
    text = relayq.write_config(override)
    lineno = text.split("\n").index(bad_line) + 1
    cp = relayq([RCPT], b"Subject: cfg\n\nx\n", relay=r, write=False)
    assert cp.returncode == 78, fmt(cp)
    assert _config_error_line(cp, relayq.ini, key, lineno), \
        "no stderr line naming %s, %r and line %d\n%s" % (relayq.ini, key, lineno, fmt(cp))
    assert relayq.queue_files() == [] and r.connections == 0


def test_missing_config_file(relayq, relay, tmp_path):
    r = relay()
    missing = str(tmp_path / "does-not-exist.ini")
    cp = relayq([RCPT], b"Subject: cfg\n\nx\n", ini=missing)
    assert cp.returncode == 78, fmt(cp)
    assert missing.encode() in cp.stderr, fmt(cp)
    assert r.connections == 0


def test_unknown_option(relayq, relay):
    r = relay()
    cp = relayq(["-Z", RCPT], b"Subject: u\n\nx\n", relay=r)
    assert cp.returncode == 64, fmt(cp)
    assert b"usage" in cp.stderr.lower(), fmt(cp)
    assert relayq.queue_files() == [] and r.connections == 0


def test_no_recipients(relayq, relay):
    r = relay()
    cp = relayq([], b"Subject: nobody\n\nx\n", relay=r)
    assert cp.returncode == 64, fmt(cp)
    assert cp.stderr.strip(), fmt(cp)
    assert relayq.queue_files() == [] and r.connections == 0


@pytest.mark.parametrize("args,cfg", [(["-odq"], {}),
                                      ([], {"queue": {"delivery": "queue"}})],
                         ids=["odq", "delivery-queue"])
def test_queue_only_then_queue_run(relayq, relay, args, cfg):
    r = relay()
    cp = relayq([*args, RCPT], b"Subject: odq\n\nx\n", relay=r, config=cfg)
    assert cp.returncode == 0, fmt(cp)
    ids = relayq.queued_ids()
    assert len(ids) == 1, fmt(cp)
    time.sleep(0.5)
    assert r.connections == 0
    cp = relayq(["-q"], relay=r)
    sent_ok(relayq, cp)
    assert log_lines(cp, "sent", ids[0]), fmt(cp)
    m = r.wait_for_messages(1)[0]
    assert m["rcpt_tos"] == [RCPT]
