"""Replays the byte-exact captures of real sendmail callers (cron, PHP mail(),
bsd-mailx, Symfony) from the shared fixtures through relayq and the fake relay.

Each fixture NAME has NAME.argv (argN=value, bash %q quoting), NAME.eml
(stdin bytes) and NAME.meta.  The expected envelopes below were written by
reading each fixture; DEFAULT stands for <login>@host.example, the sender
relayq must use without -f (login from getuid()).
"""

import os
import re
import shlex

import pytest

from conftest import (FIXTURES, SENDER_DOMAIN, assert_crlf_only, body_of,
                      default_sender, fmt, header_values, headers,
                      normalize_lines)

DEFAULT = object()
Q = "@" + SENDER_DOMAIN

# fixture -> (envelope sender, recipients)
EXPECTED = {
    "bsd-mailx-full": ("envelope@example.com",
                       ["alice@example.com", "bob@example.org", "cc@example.com",
                        "bcc@example.com"]),
    "bsd-mailx-simple": (DEFAULT, ["user@example.com"]),
    "bsd-mailx-user": (DEFAULT, ["root" + Q]),
    "cron-job1": (DEFAULT, ["root" + Q]),
    "cron-job2": (DEFAULT, ["ops@example.com"]),
    "cron-job3": (DEFAULT, ["a@example.com", "b@example.com"]),
    "cron-job5": (DEFAULT, ["ops@example.com"]),
    "cron-job6": (DEFAULT, ["ops@example.com"]),
    "cron-job7": (DEFAULT, ["crontest" + Q]),
    "php-add-x-header": (DEFAULT, ["user@example.com"]),
    "php-as-www-data": (DEFAULT, ["user@example.com"]),
    "php-bcc-only-empty-to": (DEFAULT, ["hidden@example.com"]),
    "php-crlf-body": (DEFAULT, ["user@example.com"]),
    "php-empty-body": (DEFAULT, ["user@example.com"]),
    "php-fpm": (DEFAULT, ["user@example.com"]),
    "php-fpm-exit1": (DEFAULT, ["user@example.com"]),
    "php-headers": (DEFAULT, ["user@example.com"]),
    "php-headers-lf": (DEFAULT, ["user@example.com"]),
    "php-mixed-lf-crlf-on": (DEFAULT, ["user@example.com"]),
    "php-multi-cc-bcc-utf8": (DEFAULT, ["alice@example.com", "bob@example.org",
                                        "carol@example.net", "dave@example.net"]),
    "php-params-f": ("bounce@example.com", ["user@example.com"]),
    "php-params-f-space": ("bounce@example.com", ["user@example.com"]),
    "php-plain": (DEFAULT, ["user@example.com"]),
    "php-quoted-comma-to": (DEFAULT, ["jane@example.com", "john@example.com",
                                      "r@example.com", "x@example.com"]),
    "symfony-t-i": ("app@example.com", ["alice@example.com", "carol@example.net",
                                        "dave@example.net"]),
}
SMTP_DIALOGUE = "symfony-bs"

# Headers whose value relayq may legitimately rewrite (addresses); every
# other input header must arrive byte-identical (modulo CRLF).
ADDRESS_HEADERS = {"from", "to", "cc", "bcc", "sender", "reply-to"}


def fixture_names():
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".argv"))


def read_argv(name):
    """argv[1:] from NAME.argv (values are bash %q-quoted)."""
    args = {}
    with open(os.path.join(FIXTURES, name + ".argv"), "rb") as f:
        for line in f.read().decode("utf-8", "surrogateescape").splitlines():
            m = re.match(r"arg(\d+)=(.*)$", line)
            if m:
                words = shlex.split(m.group(2)) if m.group(2) else [""]
                assert len(words) == 1, (name, line)
                args[int(m.group(1))] = words[0]
    return [args[i] for i in sorted(args)]


def read_eml(name):
    with open(os.path.join(FIXTURES, name + ".eml"), "rb") as f:
        return f.read()


def input_header_lines(raw):
    """Unfolded (name, value) headers of the raw input, CR/LF normalized."""
    norm = normalize_lines(raw)
    head = norm.split(b"\r\n\r\n", 1)[0]
    out = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + b"\r\n" + line)
        else:
            n, _, v = line.partition(b":")
            out.append((n.strip().lower().decode("latin-1"), v))
    return out


def test_fixture_table_is_complete():
    names = fixture_names()
    assert names, "no fixtures found in %s" % FIXTURES
    assert set(names) == set(EXPECTED) | {SMTP_DIALOGUE}, (
        "fixtures without an expected envelope (or stale entries): %r"
        % (set(names) ^ (set(EXPECTED) | {SMTP_DIALOGUE})))


def test_argv_parsing_of_cron_comma_list():
    assert read_argv("cron-job3") == ["-FCronDaemon", "-i", "-B8BITMIME", "-oem",
                                      "a@example.com,b@example.com"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_client_fixture(relayq, relay, name):
    sender, rcpts = EXPECTED[name]
    sender = default_sender() if sender is DEFAULT else sender
    raw = read_eml(name)
    argv = read_argv(name)
    r = relay()
    cp = relayq(argv, raw, relay=r)
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(1, timeout=5)
    assert len(msgs) == 1, msgs
    assert relayq.queue_files() == [] and relayq.failed_ids() == [], fmt(cp)
    m = msgs[0]
    data = m["data"]

    assert m["mail_from"] == sender
    assert sorted(m["rcpt_tos"]) == sorted(rcpts)
    assert_crlf_only(data)
    assert not header_values(data, "bcc"), data
    for h in ("date", "message-id"):
        assert len(header_values(data, h)) == 1, (h, data)
    # bsd-mailx-full carries two From: headers (-r plus -a 'From:'); relayq
    # may pass both through or keep one.  Everyone else: exactly one.
    n_from_in = sum(1 for n, _ in input_header_lines(raw) if n == "from")
    n_from = len(header_values(data, "from"))
    assert n_from == 1 or (n_from_in > 1 and n_from == n_from_in), (n_from, data)

    # Existing Message-ID / Date kept as they were.
    for h in ("message-id", "date"):
        given = [v for n, v in input_header_lines(raw) if n == h]
        if given:
            assert header_values(data, h) == given
    # Other non-address headers arrive unchanged, in order.
    want = [(n, v) for n, v in input_header_lines(raw) if n not in ADDRESS_HEADERS]
    got = [(n, v) for n, v in headers(data) if n not in ADDRESS_HEADERS]
    it = iter(got)
    assert all(w in it for w in want), "headers changed:\nwant %r\ngot %r" % (want, got)

    # Body: CRLF, stray CR -> space, final newline added; dots kept (-i).
    assert "-i" in argv or "-oi" in argv
    assert body_of(data) == normalize_lines(raw).split(b"\r\n\r\n", 1)[1]


def smtp_replies(out):
    """Reply codes of a server transcript, one per (possibly multi-line) reply."""
    codes = []
    for line in out.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            continue
        m = re.match(rb"(\d{3})([ -])", line + b" ")
        assert m, "not an SMTP reply line: %r" % line
        if m.group(2) == b" ":
            codes.append(int(m.group(1)))
    return codes


def test_symfony_bs_dialogue(relayq, relay):
    raw = read_eml(SMTP_DIALOGUE)
    argv = read_argv(SMTP_DIALOGUE)
    assert argv == ["-bs"]
    r = relay()
    cp = relayq(argv, raw, relay=r)
    assert cp.returncode == 0, fmt(cp)
    # 220 greeting; HELO, MAIL, 3x RCPT: 250; DATA: 354; final dot: 250; QUIT: 221
    assert smtp_replies(cp.stdout) == [220, 250, 250, 250, 250, 250, 354, 250, 221], fmt(cp)
    msgs = r.wait_for_messages(1, timeout=10)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["mail_from"] == "app@example.com"
    assert sorted(m["rcpt_tos"]) == ["alice@example.com", "carol@example.net",
                                     "dave@example.net"]
    data = m["data"]
    assert_crlf_only(data)
    assert not header_values(data, "bcc")
    for h in ("date", "message-id", "from"):
        assert len(header_values(data, h)) == 1, (h, data)
    assert header_values(data, "message-id") == [
        b" <5fb05c062c8945960d93fa7b5e6c559d@example.com>"]
    assert header_values(data, "from") == [b" Web App <app@example.com>"]
    # "..\r\n" in the dialogue is a dot-stuffed "." line of the message
    assert body_of(data) == b"Hello\r\n.\r\nBye\r\n"
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
