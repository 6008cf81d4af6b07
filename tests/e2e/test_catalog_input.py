"""Fault/attack catalog, input cases I1-I16 (shared/notes/reliability.md
section 5), end to end against the fake relay.

One named test (or a few) per catalog case, asserting what the catalog
states, refined by what relayq documents (relayq(8) MESSAGE HANDLING):
a NUL octet is refused (65), lines over 998 octets are broken with CRLF SP,
a stray CR becomes a space, Bcc is removed, Date/Message-ID/From are added
once, LF/CRLF/mixed input goes out as CRLF, a leading mbox "From " line is
dropped, UTF-8 addresses are refused at submission (no SMTPUTF8), and
[queue] max_size refuses a message at submission (65, 552 5.3.4 with -bs).
"""

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import (assert_crlf_only, body_of, default_sender, fmt,
                      header_values, split_message)

RCPT = "rcpt@example.com"
H = b"To: rcpt@example.com\nSubject: catalog\n\n"


# ---- helpers ----------------------------------------------------------------

def delivered(relayq, r, cp, n=1):
    """Exit 0, nothing left in the spool, n messages at the relay."""
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(n, timeout=10)
    assert len(msgs) == n, msgs
    assert relayq.queue_files() == [] and relayq.failed_ids() == [], fmt(cp)
    return msgs


def one(relayq, r, args, stdin, **kw):
    cp = relayq(args, stdin, relay=r, **kw)
    return cp, delivered(relayq, r, cp)[0]


def corrupt_files(relayq):
    d = os.path.join(relayq.spool, "corrupt")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def assert_nothing_spooled(relayq, r, cp):
    """Nothing in queue/, failed/, tmp/ or corrupt/, nothing at the relay."""
    assert relayq.queue_files() == [], fmt(cp)
    assert relayq.failed_ids() == [], fmt(cp)
    assert relayq.tmp_files() == [], fmt(cp)
    assert corrupt_files(relayq) == [], fmt(cp)
    time.sleep(0.2)
    assert r.connections == 0 and r.messages == [], r.commands


def count(data, name):
    return len(header_values(data, name))


def assert_added_once(data):
    for h in ("date", "message-id", "from"):
        assert count(data, h) == 1, "%s x%d in %r" % (h, count(data, h), data[:2000])


def wire_lines(data):
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def dialogue(relayq, r, lines, **kw):
    stdin = b"".join(l + b"\r\n" for l in lines)
    cp = relayq(["-bs"], stdin, relay=r, **kw)
    return cp, [x for x in cp.stdout.split(b"\r\n") if x]


def codes(replies):
    return [int(x[:3]) for x in replies if re.match(rb"^\d{3} ", x)]


# Runs a command and writes its maximum resident set size (KiB) to a file:
# relayq's memory, whatever the build, without /usr/bin/time.
RSS_WRAPPER = r"""
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write("%d\n" % ru.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


# ---- I1: NUL byte -------------------------------------------------------------

NUL_CASES = [
    ("body", [RCPT], H + b"abc\x00def\n"),
    ("header", [RCPT], b"To: rcpt@example.com\nSubject: a\x00b\n\nbody\n"),
    ("header-with-t", ["-t"], b"To: rcpt@example.com\x00victim@example.com\n\nbody\n"),
    ("first-line-no-header", [RCPT], b"\x00\n"),
    ("after-998-fold", [RCPT], H + b"y" * 3000 + b"\x00" + b"z" * 10 + b"\n"),
    ("last-octet", ["-i", RCPT], H + b"body\n\x00"),
]


@pytest.mark.parametrize("args,stdin", [c[1:] for c in NUL_CASES],
                         ids=[c[0] for c in NUL_CASES])
def test_I1_nul_byte_refused(relayq, relay, args, stdin):
    r = relay()
    cp = relayq(args, stdin, relay=r)
    assert cp.returncode == 65, fmt(cp)
    assert b"NUL" in cp.stderr, fmt(cp)
    assert_nothing_spooled(relayq, r, cp)


def test_I1_nul_byte_refused_in_bs_dialogue(relayq, relay):
    """DATA holding a NUL gets 554 5.6.0 and queues nothing; the dialogue
    goes on, and the next message is queued normally."""
    r = relay()
    cp, replies = dialogue(relayq, r, [
        b"EHLO c", b"MAIL FROM:<app@example.com>", b"RCPT TO:<rcpt@example.com>",
        b"DATA", b"Subject: nul", b"", b"a\x00b", b".",
        b"MAIL FROM:<app@example.com>", b"RCPT TO:<rcpt@example.com>",
        b"DATA", b"Subject: clean", b"", b"ok", b".", b"QUIT"])
    assert cp.returncode == 0, fmt(cp)
    assert codes(replies) == [220, 250, 250, 250, 354, 554, 250, 250, 354, 250,
                              221], replies
    assert [x for x in replies if x.startswith(b"554 5.6.0")], replies
    (m,) = r.wait_for_messages(1)
    time.sleep(0.2)
    assert len(r.messages) == 1
    assert header_values(m["data"], "subject") == [b" clean"]
    assert b"\x00" not in m["data"]
    assert relayq.queue_files() == [] and relayq.tmp_files() == []


# ---- I2: 10 MB single line ------------------------------------------------------

def test_I2_10mb_single_body_line_folded_not_lost(relayq, relay, tmp_path):
    r = relay()
    unit = b"0123456789abcdefghijklmnopqrstuvwxyz-"
    line = (unit * (10 * 1024 * 1024 // len(unit) + 1))[:10 * 1024 * 1024]
    rss = str(tmp_path / "rss")
    small_rss = str(tmp_path / "rss-small")
    wrap = (sys.executable, "-c", RSS_WRAPPER)
    cp = relayq([RCPT], H + b"x\n", relay=r, wrap=(*wrap, small_rss))
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1)
    cp = relayq(["-i", RCPT], H + b"first\n" + line + b"\nlast\n", relay=r,
                wrap=(*wrap, rss), timeout=120)
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(2, timeout=30)
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
    data = msgs[1]["data"]
    assert_crlf_only(data)
    assert max(len(l) for l in wire_lines(data)) <= 998
    body = body_of(data)
    assert body.replace(b"\r\n ", b"") == b"first\r\n" + line + b"\r\nlast\r\n"
    # Bounded memory: the 10 MB line is never held whole.
    big, small = (int(open(p).read()) for p in (rss, small_rss))
    assert big - small < 4 * 1024, "max RSS %d KiB vs %d KiB for a small message" % (
        big, small)


def test_I2_10mb_single_header_line_refused_clearly_or_folded(relayq, relay):
    r = relay()
    value = b"h" * (10 * 1024 * 1024)
    cp = relayq(["-i", RCPT], b"To: rcpt@example.com\nX-Long: " + value + b"\n\nbody\n",
                relay=r, timeout=120)
    if cp.returncode == 65:
        assert re.search(rb"header.*(larger|too large|size)", cp.stderr), fmt(cp)
        assert_nothing_spooled(relayq, r, cp)
    else:
        (m,) = delivered(relayq, r, cp)
        assert max(len(l) for l in wire_lines(m["data"])) <= 998
        (xl,) = header_values(m["data"], "x-long")
        assert xl.replace(b"\r\n ", b"").strip() == value


# ---- I3: bare CR, dot sequences ---------------------------------------------------

def test_I3_bare_cr_and_dot_sequences(relayq, relay):
    r = relay()
    stdin = (H + b"a\rb\n"          # bare CR inside a line
             b".\r\n"               # \n.\r\n
             b"c\r.\r\n"            # \r.\r\n
             b"d\r\r\n"             # \r\r\n
             b".\n"                 # lone dot, LF
             b"..e\n"
             b"f\r")                # CR at the very end
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    data = m["data"]
    assert_crlf_only(data)
    # dots arrive as written: relayq stuffed them on the wire, else the
    # relay (which unstuffs) would have cut the message or eaten a dot
    assert body_of(data) == b"a b\r\n.\r\nc .\r\nd \r\n.\r\n..e\r\nf \r\n"
    assert header_values(data, "subject") == [b" catalog"]


@pytest.mark.parametrize("sep", [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r\n.\r\n",
                                 b"\r.\r\n", b"\n.\r\r\n"],
                         ids=["lf-dot-crlf", "crlf-dot-lf", "lf-dot-lf",
                              "crlf-dot-crlf", "cr-dot-crlf", "lf-dot-cr-crlf"])
def test_I3_smuggled_smtp_commands_stay_in_the_body(relayq, relay, sep):
    """CVE-2023-51764 family: whatever the end-of-data look-alike, one message
    reaches the relay, to the one recipient, with the 'commands' as body."""
    r = relay()
    smuggled = (b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.net>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nspoofed\r\n.\r\n")
    stdin = H + b"legit" + sep + smuggled + b"tail\n"
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    time.sleep(0.3)
    assert len(r.messages) == 1 and r.rejected == [], r.messages
    assert m["rcpt_tos"] == [RCPT]
    assert "MAIL" not in r.verbs()[r.verbs().index("DATA"):], r.commands
    assert_crlf_only(m["data"])
    body = body_of(m["data"])
    assert b"RCPT TO:<victim@example.net>\r\n" in body and body.endswith(b"tail\r\n")


# ---- I4: CR header injection --------------------------------------------------------

def test_I4_cr_in_header_cannot_inject_bcc(relayq, relay):
    r = relay()
    stdin = (b"To: rcpt@example.com\nSubject: x\rBcc: victim@example.com\n"
             b"X-Note: y\rCc: victim2@example.com\n\nbody\n")
    _, m = one(relayq, r, ["-t", "-i"], stdin)
    assert m["rcpt_tos"] == [RCPT]
    assert header_values(m["data"], "subject") == [b" x Bcc: victim@example.com"]
    assert header_values(m["data"], "x-note") == [b" y Cc: victim2@example.com"]
    assert count(m["data"], "bcc") == 0 and count(m["data"], "cc") == 0
    assert_crlf_only(m["data"])


def test_I4_cr_in_to_field_cannot_inject_recipient(relayq, relay):
    r = relay()
    stdin = b"To: a@example.com\rBcc: victim@example.com\nSubject: x\n\nbody\n"
    cp = relayq(["-t", "-i"], stdin, relay=r)
    if cp.returncode == 65:          # refusing the malformed field is fine
        assert_nothing_spooled(relayq, r, cp)
        return
    (m,) = delivered(relayq, r, cp)
    assert "victim@example.com" not in m["rcpt_tos"], m["rcpt_tos"]
    assert m["rcpt_tos"] == ["a@example.com"]


# ---- I5: no header section, no blank line ---------------------------------------------

I5_CASES = [
    ("body-only", b"Just a body line\nsecond: line\n",
     b"Just a body line\r\nsecond: line\r\n", []),
    ("headers-no-blank-no-body", b"Subject: only headers\nX-A: 1\n", b"",
     [b"Subject: only headers", b"X-A: 1"]),
    ("empty-input", b"", b"", []),
    ("single-word", b"hello", b"hello\r\n", []),
]


@pytest.mark.parametrize("stdin,body,hdrs", [c[1:] for c in I5_CASES],
                         ids=[c[0] for c in I5_CASES])
def test_I5_no_header_section_gets_headers_before_body(relayq, relay, stdin, body,
                                                        hdrs):
    r = relay()
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    data = m["data"]
    assert_crlf_only(data)
    head, got_body = split_message(data)
    assert got_body == body
    assert_added_once(data)
    assert head[:len(hdrs)] == hdrs, head
    # every header line is a field or a continuation: the body never leaks up
    for line in head:
        assert re.match(rb"^([!-9;-~]+:|[ \t])", line), head


# ---- I6: no trailing newline --------------------------------------------------------------

@pytest.mark.parametrize("stdin,body", [
    (H + b"first\nlast line", b"first\r\nlast line\r\n"),
    (H + b"only", b"only\r\n"),
    (H.replace(b"\n", b"\r\n") + b"crlf before\r\nlast", b"crlf before\r\nlast\r\n"),
    (H + b"last\r", b"last \r\n"),
], ids=["lf-then-partial", "single-partial", "crlf-then-partial", "final-cr"])
def test_I6_no_trailing_newline_gets_crlf(relayq, relay, stdin, body):
    r = relay()
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    assert_crlf_only(m["data"])
    assert body_of(m["data"]) == body


def test_I6_header_only_without_newline(relayq, relay):
    r = relay()
    _, m = one(relayq, r, ["-i", RCPT], b"Subject: no newline at all")
    assert_crlf_only(m["data"])
    assert header_values(m["data"], "subject") == [b" no newline at all"]
    assert body_of(m["data"]) == b""


# ---- I7: missing From/Date/Message-ID, case-insensitive ------------------------------------

I7_CASES = [
    ("none", b"Subject: s\n", {}),
    ("message-id-mixed-case", b"Message-Id: <m1@example.com>\nSubject: s\n",
     {"message-id": b" <m1@example.com>"}),
    ("all-upper", b"MESSAGE-ID: <m2@example.com>\nDATE: Tue, 24 Nov 2026 08:00:00 +0000\n"
     b"FROM: up@example.com\n", {"message-id": b" <m2@example.com>",
                                 "date": b" Tue, 24 Nov 2026 08:00:00 +0000",
                                 "from": b" up@example.com"}),
    ("all-lower", b"message-id: <m3@example.com>\ndate: Tue, 24 Nov 2026 08:00:00 +0000\n"
     b"from: low@example.com\n", {"message-id": b" <m3@example.com>",
                                  "from": b" low@example.com"}),
    ("only-date", b"Date: Tue, 24 Nov 2026 08:00:00 +0000\n",
     {"date": b" Tue, 24 Nov 2026 08:00:00 +0000"}),
    ("duplicates-in-input", b"Message-ID: <first@example.com>\nMessage-Id: <second@example.com>\n"
     b"Date: Tue, 24 Nov 2026 08:00:00 +0000\nDate: Wed, 25 Nov 2026 08:00:00 +0000\n"
     b"From: a@example.com\nFrom: b@example.com\n",
     {"message-id": b" <first@example.com>", "date": b" Tue, 24 Nov 2026 08:00:00 +0000",
      "from": b" b@example.com"}),
]


@pytest.mark.parametrize("hdrs,kept", [c[1:] for c in I7_CASES],
                         ids=[c[0] for c in I7_CASES])
def test_I7_date_message_id_from_exactly_once(relayq, relay, hdrs, kept):
    r = relay()
    _, m = one(relayq, r, ["-i", RCPT], b"To: rcpt@example.com\n" + hdrs + b"\nbody\n")
    data = m["data"]
    assert_added_once(data)
    for name, value in kept.items():
        assert header_values(data, name) == [value], (name, data[:1000])
    if "from" not in kept:
        assert header_values(data, "from") == [b" " + default_sender().encode()]
    assert body_of(data) == b"body\r\n"


@pytest.mark.parametrize("field", [b"Date : Tue, 24 Nov 2026 08:00:00 +0000",
                                   b"From : app@example.com",
                                   b"Message-ID\t: <m4@example.com>"],
                         ids=["date", "from", "message-id"])
def test_I7_obsolete_space_before_colon_still_exactly_once(relayq, relay, field):
    r = relay()
    _, m = one(relayq, r, ["-i", RCPT], b"Subject: s\n" + field + b"\n\nbody\n")
    assert_added_once(m["data"])
    name = field.split(b":")[0].strip().lower().decode()
    assert header_values(m["data"], name) == [field.split(b":", 1)[1]]


def test_I7_added_message_id_is_the_same_on_every_attempt(relayq, relay):
    r = relay(data_reply=(451, "4.3.0 later"))
    cp = relayq([RCPT], b"Subject: retry\n\nx\n", relay=r)
    assert cp.returncode == 0 and len(relayq.queued_ids()) == 1, fmt(cp)
    r.data_reply = None
    cp = relayq(["-q"], relay=r)
    (m,) = delivered(relayq, r, cp)
    assert_added_once(m["data"])
    qid = re.search(rb"[0-9a-f]{20}", cp.stderr).group(0)
    assert header_values(m["data"], "message-id") == [
        b" <" + qid + b".relayq@host.example>"]


# ---- I8: folded To/Cc with -t ----------------------------------------------------------------

def test_I8_folded_recipient_lists_exact_set(relayq, relay):
    r = relay()
    many = b",\n\t".join(b"user%02d@example.com" % i for i in range(40))
    stdin = (b"To: Alice\n <alice@example.com>,\n \"Doe,\n John\" <john@example.com>,\n"
             b"  bob@example.org (Bob\n  Builder),\n\tteam: c1@example.net,\n"
             b"  c2@example.net;,\n " + many + b"\n"
             b"Cc:\n dee@example.com\n ,\n eve@example.com\n"
             b"Subject: folded\n\nbody\n")
    _, m = one(relayq, r, ["-t", "-i"], stdin)
    expected = {"alice@example.com", "john@example.com", "bob@example.org",
                "c1@example.net", "c2@example.net", "dee@example.com",
                "eve@example.com"} | {"user%02d@example.com" % i for i in range(40)}
    assert len(m["rcpt_tos"]) == len(set(m["rcpt_tos"])), m["rcpt_tos"]
    assert set(m["rcpt_tos"]) == expected
    assert_crlf_only(m["data"])
    # the visible fields are kept, folds included
    (to,) = header_values(m["data"], "to")
    assert to.startswith(b" Alice\r\n <alice@example.com>,\r\n") and b"user39" in to


# ---- I9: Bcc with -t ---------------------------------------------------------------------------

def test_I9_bcc_recipients_get_mail_and_bcc_header_removed(relayq, relay):
    r = relay()
    stdin = (b"To: to@example.com\nBcc: hidden1@example.com,\n  \"H Two\" <hidden2@example.com>\n"
             b"Subject: bcc\nbcc: hidden3@example.com\nBCC:\nX-After: kept\n\nbody\n")
    _, m = one(relayq, r, ["-t", "-i"], stdin)
    assert sorted(m["rcpt_tos"]) == ["hidden1@example.com", "hidden2@example.com",
                                     "hidden3@example.com", "to@example.com"]
    data = m["data"]
    assert count(data, "bcc") == 0
    assert b"hidden" not in data.lower() and b"H Two" not in data
    assert header_values(data, "x-after") == [b" kept"]
    assert header_values(data, "to") == [b" to@example.com"]
    assert body_of(data) == b"body\r\n"


# ---- I10: 8-bit body, UTF-8 Subject, UTF-8 local part ----------------------------------------

def test_I10_8bit_body_and_utf8_subject_sent_with_8bitmime(relayq, relay):
    r = relay()
    subj = "Grüße – 日本語".encode()
    body = "Hälsningar från Göteborg\n".encode()
    stdin = (b"To: rcpt@example.com\nSubject: " + subj + b"\nMIME-Version: 1.0\n"
             b"Content-Type: text/plain; charset=utf-8\n"
             b"Content-Transfer-Encoding: 8bit\n\n" + body)
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    assert "BODY=8BITMIME" in [o.upper() for o in m["mail_options"]], m["mail_options"]
    assert header_values(m["data"], "subject") == [b" " + subj]
    assert body_of(m["data"]) == body.replace(b"\n", b"\r\n")


UTF8 = "jörg@example.org"


@pytest.mark.parametrize("args,stdin", [
    ([UTF8], b"Subject: u\n\nx\n"),
    (["-t"], ("To: %s\nSubject: u\n\nx\n" % UTF8).encode()),
    (["-t"], ("To: ok@example.org\nCc: Jörg <%s>\nSubject: u\n\nx\n" % UTF8).encode()),
    (["-f", UTF8, RCPT], b"Subject: u\n\nx\n"),
    (["ok@example.org", "user@exämple.org"], b"Subject: u\n\nx\n"),
], ids=["argv", "t-to", "t-cc-with-others", "sender", "idn-domain"])
def test_I10_utf8_address_refused_at_submission(relayq, relay, args, stdin):
    r = relay()
    cp = relayq(args, stdin, relay=r)
    assert cp.returncode == 65, fmt(cp)
    assert b"SMTPUTF8" in cp.stderr, fmt(cp)
    assert_nothing_spooled(relayq, r, cp)


def test_I10_utf8_address_refused_in_bs_dialogue(relayq, relay):
    r = relay()
    cp, replies = dialogue(relayq, r, [
        b"EHLO c", b"MAIL FROM:<app@example.com>", ("RCPT TO:<%s>" % UTF8).encode(),
        b"RCPT TO:<ok@example.org>", b"DATA", b"Subject: u", b"", b"x", b".", b"QUIT"])
    assert cp.returncode == 0, fmt(cp)
    assert codes(replies) == [220, 250, 250, 553, 250, 354, 250, 221], replies
    assert b"SMTPUTF8" in [x for x in replies if x.startswith(b"553")][0]
    (m,) = r.wait_for_messages(1)
    assert m["rcpt_tos"] == ["ok@example.org"]


# ---- I11: mixed CRLF/LF (PHP 8) ----------------------------------------------------------------

def test_I11_mixed_crlf_lf_no_doubled_cr_headers_intact(relayq, relay):
    r = relay()
    # PHP 8 mail(): To/Subject joined with LF, additional_headers with CRLF,
    # a body with CRLF lines, LF lines and a CR CR LF.
    stdin = (b"To: rcpt@example.com\nSubject: php8\r\nFrom: App <app@example.com>\r\n"
             b"X-Mailer: PHP/8.2\r\nMIME-Version: 1.0\n"
             b"Content-Type: text/plain; charset=UTF-8\r\n\nline1\r\nline2\nline3\r\r\n")
    _, m = one(relayq, r, ["-t", "-i"], stdin)
    data = m["data"]
    assert_crlf_only(data)
    assert b"\r\r" not in data
    head, body = split_message(data)
    assert head[:6] == [b"To: rcpt@example.com", b"Subject: php8",
                        b"From: App <app@example.com>", b"X-Mailer: PHP/8.2",
                        b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=UTF-8"]
    assert body == b"line1\r\nline2\r\nline3 \r\n"
    assert m["rcpt_tos"] == [RCPT]


# ---- I12: leading "From " line -----------------------------------------------------------------

def test_I12_leading_mbox_from_line_dropped_not_a_header(relayq, relay):
    r = relay()
    stdin = (b"From alice@example.com Thu Nov 26 08:00:00 2026\n"
             b"Subject: mbox\nTo: rcpt@example.com\n\nbody\nFrom here on\n")
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    data = m["data"]
    head, body = split_message(data)
    assert not [l for l in head if l.startswith(b"From ")], head
    assert b"alice@example.com" not in data
    assert header_values(data, "subject") == [b" mbox"]
    assert header_values(data, "to") == [b" rcpt@example.com"]
    assert_added_once(data)
    assert header_values(data, "from") == [b" " + default_sender().encode()]
    # only the very first line is special
    assert body == b"body\r\nFrom here on\r\n"


def test_I12_from_line_later_in_header_ends_the_header(relayq, relay):
    r = relay()
    stdin = b"Subject: s\nFrom bob@example.com Thu Nov 26 08:00:00 2026\nX-A: 1\n\nb\n"
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    head, body = split_message(m["data"])
    assert not [l for l in head if l.startswith(b"From ")], head
    assert body == b"From bob@example.com Thu Nov 26 08:00:00 2026\r\nX-A: 1\r\n\r\nb\r\n"


# ---- I13: 50 MB message, 25 MB limit --------------------------------------------------------------

BIG = b"Subject: big\n\n" + (b"x" * 76 + b"\n") * (50 * 1024 * 1024 // 77 + 1)


def test_I13_50mb_message_over_25mb_limit_refused_at_submission(relayq, relay):
    r = relay()
    cp = relayq(["-i", RCPT], BIG, relay=r, config={"queue": {"max_size": "25M"}},
                timeout=120)
    assert cp.returncode == 65, fmt(cp)
    assert b"max_size" in cp.stderr, fmt(cp)
    assert_nothing_spooled(relayq, r, cp)


def test_I13_50mb_message_refused_552_in_bs_dialogue(relayq, relay):
    r = relay()
    crlf = BIG.replace(b"\n", b"\r\n")
    stdin = (b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
             b"DATA\r\n" + crlf + b".\r\nQUIT\r\n")
    cp = relayq(["-bs"], stdin, relay=r, config={"queue": {"max_size": "25M"}},
                timeout=120)
    assert cp.returncode == 0, fmt(cp)
    replies = [x for x in cp.stdout.split(b"\r\n") if x]
    assert codes(replies) == [220, 250, 250, 250, 354, 552, 221], replies
    assert [x for x in replies if x.startswith(b"552 5.3.4")], replies
    assert_nothing_spooled(relayq, r, cp)


def crlf_lines(n):
    """Exactly n octets (n >= 2) of CRLF-ended lines of at most 100 octets."""
    out = []
    while n > 0:
        take = min(100, n)
        if n - take == 1:
            take -= 1
        out.append(b"y" * (take - 2) + b"\r\n")
        n -= take
    return b"".join(out)


def test_I13_limit_boundary(relayq, relay):
    """A message of exactly max_size octets is queued; one octet more is not."""
    r = relay()
    cfg = {"queue": {"max_size": "4k"}}
    base = b"Subject: fits\r\n\r\nx\r\n"
    cp = relayq(["-odq", RCPT], base, relay=r, config=cfg)
    assert cp.returncode == 0, fmt(cp)
    (qid,) = relayq.queued_ids()
    size = int(re.search(rb"(?m)^size (\d+)$", relayq.read_queued(qid)).group(1))
    pad = 4096 - size
    cp = relayq(["-odq", RCPT], base + crlf_lines(pad), relay=r, config=cfg)
    assert cp.returncode == 0, fmt(cp)
    assert len(relayq.queued_ids()) == 2
    cp = relayq(["-odq", RCPT], base + crlf_lines(pad + 1), relay=r, config=cfg)
    assert cp.returncode == 65, fmt(cp)
    assert b"max_size" in cp.stderr, fmt(cp)
    assert len(relayq.queued_ids()) == 2 and relayq.tmp_files() == []


# ---- I14: 10 000 argv recipients -------------------------------------------------------------------

def _many_recipients(relayq, relay, n, timeout):
    r = relay()
    rcpts = ["u%05d@example.com" % i for i in range(n)]
    t = time.monotonic()
    try:
        cp = relayq(["-odq", "-i", *rcpts], H + b"many\n", relay=r,
                    config={"queue": {"rate": "10"}}, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("submitting %d argv recipients took more than %ds"
                             % (n, timeout))
    took = time.monotonic() - t
    assert cp.returncode == 0, fmt(cp)
    assert len(relayq.queued_ids()) == 1, relayq.queue_files()
    cp = relayq(["-q"], relay=r, timeout=timeout)
    (m,) = delivered(relayq, r, cp)
    time.sleep(0.3)
    assert len(r.messages) == 1 and r.connections == 1, (len(r.messages), r.connections)
    assert r.verbs().count("MAIL") == 1 and r.verbs().count("DATA") == 1
    assert sorted(m["rcpt_tos"]) == rcpts
    return took


def test_I14_many_argv_recipients_one_message_one_connection(relayq, relay):
    _many_recipients(relayq, relay, 1000, 60)


def test_I14_ten_thousand_argv_recipients(relayq, relay):
    _many_recipients(relayq, relay, 10000, 20)


# ---- I15: lone dot --------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,stdin,body", [
    ([], H + b"line1\n.\nline3\n", b"line1\r\n"),
    ([], H + b"line1\r\n.\r\nline3\r\n", b"line1\r\n"),
    ([], H + b"line1\n..\n. \n.x\nend\n", b"line1\r\n..\r\n. \r\n.x\r\nend\r\n"),
    ([], b".\n", None),
    (["-i"], H + b"line1\n.\nline3\n", b"line1\r\n.\r\nline3\r\n"),
    (["-oi"], H + b"line1\r\n.\r\nline3\r\n", b"line1\r\n.\r\nline3\r\n"),
    (["-i"], H + b".\n", b".\r\n"),
], ids=["no-i-lf", "no-i-crlf", "no-i-other-dots-kept", "no-i-dot-first",
        "i", "oi-crlf", "i-dot-only-body"])
def test_I15_lone_dot_line(relayq, relay, flags, stdin, body):
    r = relay()
    _, m = one(relayq, r, [*flags, RCPT], stdin)
    assert_crlf_only(m["data"])
    if body is None:
        # the message ends before it started: only the added header fields
        assert body_of(m["data"]) == b""
        assert_added_once(m["data"])
    else:
        assert body_of(m["data"]) == body


# ---- I16: malformed headers --------------------------------------------------------------------------

@pytest.mark.parametrize("stdin,head,body", [
    (b" leading continuation\nSubject: s\n\nbody\n", [],
     b" leading continuation\r\nSubject: s\r\n\r\nbody\r\n"),
    (b"Subject: s\nfoo\nTo: b@example.com\n\nbody\n", [b"Subject: s"],
     b"foo\r\nTo: b@example.com\r\n\r\nbody\r\n"),
    (b"Subject: s\n:x\nX-B: 1\n\nbody\n", [b"Subject: s"],
     b":x\r\nX-B: 1\r\n\r\nbody\r\n"),
    (b"Subject: s\nBad Name: v\n\nbody\n", [b"Subject: s"],
     b"Bad Name: v\r\n\r\nbody\r\n"),
    (b"Subj\xc3\xa9ct: v\n\nbody\n", [], b"Subj\xc3\xa9ct: v\r\n\r\nbody\r\n"),
], ids=["leading-continuation", "foo", "colon-first", "space-in-name", "8bit-name"])
def test_I16_malformed_header_starts_the_body(relayq, relay, stdin, head, body):
    r = relay()
    _, m = one(relayq, r, ["-i", RCPT], stdin)
    data = m["data"]
    assert_crlf_only(data)
    got_head, got_body = split_message(data)
    assert got_body == body
    assert got_head[:len(head)] == head
    assert_added_once(data)
    for line in got_head:
        assert re.match(rb"^([!-9;-~]+:|[ \t])", line), got_head


def test_I16_malformed_header_with_t_consistent(relayq, relay):
    """The To: after a malformed line is body, also for -t: no recipient."""
    r = relay()
    cp = relayq(["-t", "-i"], b"Subject: s\nfoo\nTo: b@example.com\n\nbody\n", relay=r)
    assert cp.returncode == 65, fmt(cp)
    assert b"recipient" in cp.stderr, fmt(cp)
    assert_nothing_spooled(relayq, r, cp)
