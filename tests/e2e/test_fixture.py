"""Self-check of the fake relay and the test certificates, with smtplib only
(no relayq involved): if these fail, the relayq results mean nothing."""

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest

from conftest import HERE, RELAY_USER, SECRET

MSG = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: t\r\n\r\n"
       b"line\r\n.\r\n..two dots\r\n.x\r\nend\r\n")


def client_ctx(certs, **kw):
    ctx = ssl.create_default_context(cafile=certs.ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_starttls_auth_send(relay, certs, version):
    r = relay()
    ctx = client_ctx(certs)
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "AUTH must not be offered before TLS"
        code, _ = s.docmd("MAIL FROM:<a@example.com>")
        assert code == 530
        s.starttls(context=ctx)
        assert s.sock.version() == version.replace("_", ".")
        s.ehlo("client.test")
        assert s.has_extn("auth")
        code, text = s.docmd("MAIL FROM:<a@example.com>")
        assert (code, text[:5]) == (530, b"5.7.0")
        s.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            s.login(RELAY_USER, "wrong-password")
        assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8")
        s.login(RELAY_USER, SECRET)
        refused = s.sendmail("a@example.com", ["b@example.com", "c@example.com"], MSG)
        assert refused == {}
        # the connection keeps working after the tickets were sent
        assert s.noop()[0] == 250
    msgs = r.wait_for_messages(1, timeout=5)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["mail_from"] == "a@example.com"
    assert m["rcpt_tos"] == ["b@example.com", "c@example.com"]
    assert m["data"] == MSG          # smtplib stuffed, the server unstuffed
    assert m["tls"] is True and m["auth_login"] == RELAY_USER
    assert r.connections == 1
    assert r.tls_handshakes == 1
    att = r.auth_attempts
    # smtplib tries PLAIN, then LOGIN with the wrong password, then succeeds
    assert [(a["mechanism"], a["login"], a["success"], a["tls"]) for a in att] == [
        ("PLAIN", RELAY_USER, False, True), ("LOGIN", RELAY_USER, False, True),
        ("PLAIN", RELAY_USER, True, True)]
    assert SECRET not in repr(att) and "wrong-password" not in repr(att)
    assert SECRET not in repr(r.commands)
    verbs = r.commands
    assert verbs[:3] == [("EHLO", False), ("MAIL", False), ("STARTTLS", False)]
    assert ("EHLO", True) in verbs and ("AUTH", True) in verbs
    assert ("AUTH", False) not in verbs
    assert [v for v, t in verbs if v in ("MAIL", "RCPT", "DATA") and t] == [
        "MAIL", "MAIL", "RCPT", "RCPT", "DATA"]


def test_auth_login_and_plain_mechanisms(relay, certs):
    r = relay()
    for mech in ("LOGIN", "PLAIN"):
        with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
            s.starttls(context=client_ctx(certs))
            s.ehlo()
            s.user, s.password = RELAY_USER, SECRET
            code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()))
            assert code == 235
    assert [(a["mechanism"], a["success"]) for a in r.auth_attempts] == [
        ("LOGIN", True), ("PLAIN", True)]
    assert r.connections == 2 and r.tls_handshakes == 2


def test_implicit_tls(relay, certs):
    r = relay(mode="tls")
    ctx = client_ctx(certs)
    with smtplib.SMTP_SSL("127.0.0.1", r.port, timeout=10, context=ctx) as s:
        assert s.sock.version() == "TLSv1.3"
        s.ehlo()
        assert not s.has_extn("starttls")
        s.login(RELAY_USER, SECRET)
        s.sendmail("a@example.com", ["b@example.com"], MSG)
    m = r.wait_for_messages(1)[0]
    assert m["tls"] and m["data"] == MSG
    assert r.tls_handshakes == 1 and r.connections == 1
    assert all(t for _, t in r.commands)


def test_plain_no_starttls_advertises_auth_in_clear(relay):
    r = relay(mode="plain-no-starttls")
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.has_extn("auth")
    assert r.verbs() == ["EHLO", "QUIT"]
    assert r.tls_handshakes == 0


def test_none_mode_without_user(relay):
    r = relay(mode="none", user=None, password=None)
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("auth") and not s.has_extn("starttls")
        s.sendmail("", ["b@example.com"], MSG)
    m = r.wait_for_messages(1)[0]
    assert m["mail_from"] == "" and m["tls"] is False and m["auth_login"] is None


def test_fault_injection(relay, certs):
    r = relay(rcpt_replies={"Bad@Example.com": (550, "5.1.1 <bad@example.com>: User unknown")})
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.starttls(context=client_ctx(certs))
        s.login(RELAY_USER, SECRET)
        refused = s.sendmail("a@example.com", ["bad@example.com", "ok@example.com"], MSG)
        assert refused == {"bad@example.com": (550, b"5.1.1 <bad@example.com>: User unknown")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@example.com", ["bad@example.com"], MSG)
        r.mail_reply = (550, "5.7.1 Sender not allowed")
        with pytest.raises(smtplib.SMTPSenderRefused) as ei:
            s.sendmail("a@example.com", ["ok@example.com"], MSG)
        assert ei.value.smtp_code == 550
        r.mail_reply = None
        r.data_reply = (554, "5.6.0 Message rejected")
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("a@example.com", ["ok@example.com"], MSG)
        assert ei.value.smtp_code == 554
        r.data_reply = (451, "4.3.0 Try again later")
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("a@example.com", ["ok@example.com"], MSG)
        assert ei.value.smtp_code == 451
    assert [m["rcpt_tos"] for m in r.messages] == [["ok@example.com"]]
    assert [x["reply"][:3] for x in r.rejected] == ["554", "451"]


def test_wait_for_messages_times_out(relay):
    r = relay()
    t = time.monotonic()
    with pytest.raises(AssertionError):
        r.wait_for_messages(1, timeout=0.3)
    assert time.monotonic() - t < 2


def test_free_ports_and_stop(relay):
    a, b = relay(), relay()
    assert a.port != b.port and a.port > 0
    port = a.port
    a.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_test_certificates(certs, relay):
    """The evil and wrong-name certificates fail verification the way the
    relayq tests expect; the good one passes for 127.0.0.1 and localhost."""
    for cert, name, ok in [("good", "127.0.0.1", True), ("good", "localhost", True),
                           ("evil", "127.0.0.1", False), ("evil", "localhost", False),
                           ("wrong", "127.0.0.1", False), ("wrong", "localhost", False)]:
        r = relay(mode="tls", cert=cert)
        ctx = client_ctx(certs)
        sock = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        try:
            if ok:
                ctx.wrap_socket(sock, server_hostname=name).close()
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    ctx.wrap_socket(sock, server_hostname=name)
        finally:
            sock.close()


def test_cli(tmp_path, certs):
    pwfile = tmp_path / "pw"
    pwfile.write_text(SECRET + "\n")
    portfile = tmp_path / "port"
    maildir = tmp_path / "mail"
    p = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fakerelay.py"), "--cert", certs.server_cert,
         "--key", certs.server_key, "--user", RELAY_USER, "--password-file", str(pwfile),
         "--port-file", str(portfile), "--maildir", str(maildir), "--mode", "starttls"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not portfile.exists():
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        port = int(portfile.read_text())
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.starttls(context=client_ctx(certs))
            s.login(RELAY_USER, SECRET)
            s.sendmail("a@example.com", ["b@example.com"], MSG)
        deadline = time.monotonic() + 10
        while not list(maildir.glob("*.eml")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0
    assert err == b"", err
    lines = out.decode().splitlines()
    assert lines[0].startswith("fakerelay: listening on 127.0.0.1:%d" % port)
    assert len(lines) == 2 and "from=<a@example.com>" in lines[1] and "to=<b@example.com>" in lines[1]
    files = list(maildir.glob("*.eml"))
    assert len(files) == 1
    content = files[0].read_bytes()
    assert content.startswith(b"X-FakeRelay-Mail-From: <a@example.com>\r\n")
    assert content.endswith(MSG)
    assert SECRET.encode() not in out + content
