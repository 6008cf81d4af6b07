"""Addresses the relay accepts: [aliases] for local recipients, [sender]
rewriting of local senders (envelope and From:), and [account DOMAIN]
credentials chosen by the sender's domain."""

import email
import os
import socket

from conftest import RELAY_USER, SECRET, header_values

SENDER = {"address": "noreply@example.com", "rewrite": "local"}
ALIASES = {"root": "admin@example.com, ops@example.com",
           "default": "catchall@example.com"}
HOST = socket.gethostname().split(".")[0]


def run(relayq, r, args, stdin, sender=None, aliases=None, extra=None):
    cfg = {"sender": dict(SENDER, **(sender or {})),
           "aliases": dict(ALIASES) if aliases is None else aliases}
    cfg.update(extra or {})
    return relayq(args, stdin, config=cfg, relay=r)


def one(r):
    (m,) = r.wait_for_messages(1)
    return m


def test_local_recipients_go_through_aliases(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["root", "root@localhost", "www-data@" + HOST,
                         "real@example.org"], b"Subject: a\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert sorted(m["rcpt_tos"]) == ["admin@example.com", "catchall@example.com",
                                     "ops@example.com", "real@example.org"]


def test_t_local_recipients_resolved_too(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-t"], b"To: root\nCc: someone@localhost\nSubject: t\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert sorted(m["rcpt_tos"]) == ["admin@example.com", "catchall@example.com",
                                     "ops@example.com"]
    # The envelope is resolved, the visible header stays as written.
    assert header_values(m["data"], "to") == [b" root"]


def test_no_alias_and_no_default_is_an_error(relayq, relay):
    r = relay()
    # Without [sender] domain nothing may qualify the name either.
    cp = run(relayq, r, ["nobody"], b"Subject: n\n\nx\n", aliases={"root": "a@example.com"},
             sender={"domain": None})
    assert cp.returncode == 67, cp.stderr
    assert b"<nobody>" in cp.stderr and b"[aliases]" in cp.stderr
    assert relayq.queued_ids() == [] and r.connections == 0


def test_bare_name_qualified_with_sender_domain_without_aliases(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["ops"], b"Subject: q\n\nx\n", aliases={})
    assert cp.returncode == 0, cp.stderr
    assert one(r)["rcpt_tos"] == ["ops@host.example"]


def test_cron_sender_rewritten_keeping_display_name(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
             b"From: root (Cron Daemon)\nTo: root\nSubject: cron\n\nout\n")
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert m["mail_from"] == "noreply@example.com"
    assert header_values(m["data"], "from") == [b' "Cron Daemon" <noreply@example.com>']
    assert header_values(m["data"], "reply-to") == []     # local: no use


def test_default_sender_and_added_from_are_rewritten(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-F", "Backup Job", "ops@example.org"], b"Subject: s\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert m["mail_from"] == "noreply@example.com"
    assert header_values(m["data"], "from") == [b' "Backup Job" <noreply@example.com>']
    mid = header_values(m["data"], "message-id")[0]
    assert mid.endswith(b"@example.com>"), mid


def test_real_sender_left_alone_with_rewrite_local(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-f", "bounce@example.net", "ops@example.org"],
             b"From: App <app@example.net>\nSubject: s\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert m["mail_from"] == "bounce@example.net"
    assert header_values(m["data"], "from") == [b" App <app@example.net>"]


def test_rewrite_always_keeps_original_in_reply_to(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-f", "bounce@example.net", "ops@example.org"],
             b"From: App <app@example.net>\nSubject: s\n\nx\n",
             sender={"rewrite": "always", "reply_to": "yes"})
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert m["mail_from"] == "noreply@example.com"
    assert header_values(m["data"], "from") == [b' "App" <noreply@example.com>']
    assert header_values(m["data"], "reply-to") == [b" App <app@example.net>"]


def test_rewrite_never(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["ops@example.org"], b"From: root\nSubject: s\n\nx\n",
             sender={"rewrite": "never"})
    assert cp.returncode == 0, cp.stderr
    m = one(r)
    assert m["mail_from"].endswith("@host.example")
    assert header_values(m["data"], "from") == [b" root"]


def test_garbage_f_falls_back_to_rewritten_default(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-oi", "-f", "Sender", "-t"], b"To: ops@example.org\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    assert one(r)["mail_from"] == "noreply@example.com"


def test_null_sender_is_never_rewritten(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["-f", "<>", "ops@example.org"], b"Subject: s\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    assert one(r)["mail_from"] == ""


def test_account_chosen_by_sender_domain(relayq, relay, tmp_path):
    # The relay knows only RELAY_USER; [relay] carries a wrong account, the
    # [account example.se] section the right one.
    r = relay()
    pw = tmp_path / "se.pw"
    pw.write_text(SECRET + "\n")
    acct = {"relay": {"user": "wrong@example.com", "password": "nope"},
            "account example.se": {"user": RELAY_USER, "password_file": str(pw)}}
    cp = run(relayq, r, ["-f", "app@example.se", "ops@example.org"], b"Subject: se\n\nx\n",
             sender={"rewrite": "never"}, extra=acct)
    assert cp.returncode == 0, cp.stderr
    assert one(r)["mail_from"] == "app@example.se"
    assert [a["login"] for a in r.auth_attempts if a["success"]] == [RELAY_USER]
    # Another domain uses [relay] user and is refused by the relay: deferred.
    cp = run(relayq, r, ["-f", "app@example.no", "ops@example.org"], b"Subject: no\n\nx\n",
             sender={"rewrite": "never"}, extra=acct)
    assert cp.returncode == 0 and b"deferred" in cp.stderr, cp.stderr
    assert len(r.messages) == 1 and len(relayq.queued_ids()) == 1


def test_bad_alias_and_account_config(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["x@example.org"], b"x\n", aliases={"root": "not an address"})
    assert cp.returncode == 78 and b"[aliases] root" in cp.stderr, cp.stderr
    cp = run(relayq, r, ["x@example.org"], b"x\n",
             extra={"account example.se": {"password": "p"}})
    assert cp.returncode == 78 and b"[account example.se] user" in cp.stderr, cp.stderr
    cp = run(relayq, r, ["x@example.org"], b"x\n", sender={"address": "noreply"})
    assert cp.returncode == 78 and b"[sender] address" in cp.stderr, cp.stderr


def test_alias_from_environment(relayq, relay):
    r = relay()
    cp = relayq(["root"], b"Subject: env\n\nx\n", relay=r,
                env={"RELAYQ_ALIASES_ROOT": "envroot@example.com"},
                config={"sender": SENDER})
    assert cp.returncode == 0, cp.stderr
    assert one(r)["rcpt_tos"] == ["envroot@example.com"]


def test_utf8_address_refused_with_a_clear_error(relayq, relay):
    r = relay()
    cp = run(relayq, r, ["j\xc3\xb6rg@example.org".encode("latin-1").decode("utf-8")],
             b"Subject: u\n\nx\n")
    assert cp.returncode == 65 and b"SMTPUTF8" in cp.stderr, cp.stderr
    assert relayq.queued_ids() == [] and r.connections == 0


def test_dsn_for_rewritten_sender_goes_to_admin(relayq, relay):
    # The sender became noreply@ (nobody reads it): the DSN goes to root's alias.
    r = relay(rcpt_replies={"gone@example.org": (550, "5.1.1 No such user")})
    cp = run(relayq, r, ["-odq", "ok@example.org", "gone@example.org"], b"Subject: d\n\nx\n")
    assert cp.returncode == 0, cp.stderr
    cp = relayq(["-q"], relay=r, write=False)
    assert cp.returncode == 0, cp.stderr
    msgs = r.wait_for_messages(2)
    dsn = [m for m in msgs if m["mail_from"] == ""]
    assert len(dsn) == 1 and dsn[0]["rcpt_tos"] == ["admin@example.com"], msgs
    parsed = email.message_from_bytes(dsn[0]["data"])
    assert parsed.get_content_type() == "multipart/report"
