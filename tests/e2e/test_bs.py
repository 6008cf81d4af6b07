"""sendmail -bs: the SMTP dialogue on stdin/stdout that Symfony Mailer,
SwiftMailer, Laravel and Nextcloud speak.  Replies must tell the truth:
250 after DATA only once the message is queued, 5xx when the relay
refused it for good in foreground mode."""

import re

from conftest import header_values


def dialogue(relayq, r, lines, config=None):
    stdin = b"".join(l + b"\r\n" for l in lines)
    cp = relayq(["-bs"], stdin, relay=r, config=config)
    replies = cp.stdout.split(b"\r\n")
    return cp, [x for x in replies if x]


def codes(replies):
    return [int(x[:3]) for x in replies if re.match(rb"^\d{3} ", x)]


def test_two_messages_rset_and_dot_unstuffing(relayq, relay):
    r = relay()
    cp, replies = dialogue(relayq, r, [
        b"EHLO client.example",
        b"MAIL FROM:<app@example.com>",
        b"RCPT TO:<a@example.org>",
        b"RSET",                                  # drops the first envelope
        b"MAIL FROM:<app@example.com> BODY=8BITMIME",
        b"RCPT TO:<b@example.org>",
        b"RCPT TO:<c@example.org>",
        b"DATA",
        b"Subject: one", b"", b"..leading dot", b"...two", b".",
        b"MAIL FROM:<app@example.com>",
        b"RCPT TO:<d@example.org>",
        b"DATA",
        b"Subject: two", b"", b"second", b".",
        b"NOOP",
        b"QUIT"])
    assert cp.returncode == 0, cp.stderr
    assert codes(replies) == [220, 250, 250, 250, 250, 250, 250, 250, 354, 250,
                              250, 250, 354, 250, 250, 221], replies
    assert b"8BITMIME" in cp.stdout
    msgs = r.wait_for_messages(2)
    by_subject = {header_values(m["data"], "subject")[0].strip(): m for m in msgs}
    one, two = by_subject[b"one"], by_subject[b"two"]
    assert sorted(one["rcpt_tos"]) == ["b@example.org", "c@example.org"]
    assert one["data"].endswith(b"\r\n.leading dot\r\n..two\r\n")
    assert two["rcpt_tos"] == ["d@example.org"]
    assert relayq.queued_ids() == []


def test_refused_for_good_gives_5xx(relayq, relay):
    r = relay(rcpt_replies={"gone@example.org": (550, "5.1.1 No such user")})
    cp, replies = dialogue(relayq, r, [
        b"HELO client.example",
        b"MAIL FROM:<app@example.com>",
        b"RCPT TO:<gone@example.org>",
        b"DATA", b"Subject: x", b"", b"body", b".",
        b"QUIT"])
    assert cp.returncode == 0, cp.stderr
    data_reply = [x for x in replies if x.startswith(b"554 ")]
    assert data_reply and b"550 5.1.1 No such user" in data_reply[0], replies
    assert codes(replies)[-1] == 221
    assert len(relayq.failed_ids()) == 1 and r.messages == []


def test_sequence_errors_and_unknown_commands(relayq, relay):
    r = relay()
    cp, replies = dialogue(relayq, r, [
        b"EHLO client.example",
        b"RCPT TO:<a@example.org>",                # before MAIL
        b"DATA",                                   # before MAIL
        b"MAIL FROM:<app@example.com>",
        b"MAIL FROM:<again@example.com>",          # twice
        b"DATA",                                   # no RCPT yet
        b"RCPT TO:<-oQ/tmp/x@example.org>",        # injection attempt
        b"XYZZY",
        b"VRFY root",
        b"QUIT"])
    assert cp.returncode == 0, cp.stderr
    assert codes(replies) == [220, 250, 503, 503, 250, 503, 503, 553, 502, 252,
                              221], replies
    assert r.connections == 0 and relayq.queued_ids() == []


def test_local_rcpt_resolved_or_refused(relayq, relay):
    r = relay()
    cp, replies = dialogue(relayq, r, [
        b"HELO x", b"MAIL FROM:<www-data@localhost>",
        b"RCPT TO:<root>", b"RCPT TO:<nobody@localhost>",
        b"DATA", b"Subject: l", b"", b"x", b".", b"QUIT"],
        config={"sender": {"address": "noreply@example.com", "domain": None},
                "aliases": {"root": "admin@example.com"}})
    assert cp.returncode == 0, cp.stderr
    # root has an alias; nobody has none and there is no default: 5xx.
    assert codes(replies) == [220, 250, 250, 250, 553, 354, 250, 221], replies
    (m,) = r.wait_for_messages(1)
    assert m["rcpt_tos"] == ["admin@example.com"]
    assert m["mail_from"] == "noreply@example.com"


def test_input_ending_inside_data_queues_nothing(relayq, relay):
    r = relay()
    cp = relayq(["-bs"], b"HELO x\r\nMAIL FROM:<a@example.com>\r\n"
                b"RCPT TO:<b@example.org>\r\nDATA\r\nSubject: cut\r\n\r\npartial",
                relay=r)
    assert cp.returncode == 75, cp.stderr
    assert relayq.queued_ids() == [] and r.connections == 0
