"""Self-check of the fake relay and the test certificates, with smtplib only
(no relayq involved): if these fail, the relayq results mean nothing."""

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
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


# ---- fault injection for the queue tests (fakerelay additions) ---------------

def _session(r, certs):
    s = smtplib.SMTP("127.0.0.1", r.port, timeout=10)
    s.starttls(context=client_ctx(certs))
    s.login(RELAY_USER, SECRET)
    return s


def _msg(n):
    return (b"From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <m%d@example.com>"
            b"\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n, n))


def test_greeting_reply_then_normal(relay, certs):
    r = relay(greeting_reply=(421, "4.3.2 try later"))
    with pytest.raises(smtplib.SMTPConnectError) as ei:
        smtplib.SMTP("127.0.0.1", r.port, timeout=10)
    assert ei.value.smtp_code == 421 and ei.value.smtp_error == b"4.3.2 try later"
    assert r.connections == 1 and r.verbs() == [] and r.tls_handshakes == 0
    r.greeting_reply = None
    with _session(r, certs) as s:
        s.sendmail("a@example.com", ["b@example.com"], _msg(1))
    assert r.connections == 2 and r.messages[0]["conn"] == 2
    assert r.errors == []


def test_reply_lists_consumed_per_command(relay, certs):
    r = relay(data_replies=[(451, "4.3.0 later"), (554, "5.6.0 no")],
              rcpt_replies={"B@example.com": [(451, "4.2.1 busy"), (550, "5.1.1 gone")],
                            "fixed@example.com": (550, "5.1.1 always")},
              mail_replies=[(451, "4.3.5 not now"), None])
    with _session(r, certs) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as ei:   # MAIL item 1
            s.sendmail("a@example.com", ["c@example.com"], _msg(0))
        assert ei.value.smtp_code == 451
        with pytest.raises(smtplib.SMTPDataError) as ei:       # DATA item 1
            s.sendmail("a@example.com", ["b@example.com", "c@example.com"], _msg(1))
        assert (ei.value.smtp_code, ei.value.smtp_error) == (451, b"4.3.0 later")
        with pytest.raises(smtplib.SMTPDataError) as ei:       # DATA item 2
            s.sendmail("a@example.com", ["b@example.com", "c@example.com",
                                         "fixed@example.com"], _msg(2))
        assert ei.value.smtp_code == 554
        # every list is used up: b gets 250, fixed keeps its fixed reply,
        # DATA falls back to data_reply (None: accepted)
        refused = s.sendmail("a@example.com", ["b@example.com", "fixed@example.com"],
                             _msg(3))
        assert refused == {"fixed@example.com": (550, b"5.1.1 always")}
    assert [x["reply"] for x in r.rejected] == ["451 4.3.0 later", "554 5.6.0 no"]
    # the RCPT list of b was consumed: 451 (message 1), 550 (message 2)
    assert [x["rcpt_tos"] for x in r.rejected] == [["c@example.com"], ["c@example.com"]]
    msgs = r.messages
    assert [m["rcpt_tos"] for m in msgs] == [["b@example.com"]]
    assert msgs[0]["data"] == _msg(3) and msgs[0]["conn"] == 1
    assert r.rcpt_replies["B@example.com"] == [] and r.mail_replies == []
    assert r.data_replies == []
    r.data_reply = (452, "4.3.1 full")       # fallback once the list is empty
    with _session(r, certs) as s:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("a@example.com", ["c@example.com"], _msg(4))
        assert ei.value.smtp_code == 452
    assert r.errors == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_drop_after_data(relay, certs, mode):
    r = relay(mode=mode, drop_after_data=1)

    def session():
        if mode == "tls":
            s = smtplib.SMTP_SSL("127.0.0.1", r.port, timeout=10,
                                 context=client_ctx(certs))
            s.login(RELAY_USER, SECRET)
            return s
        return _session(r, certs)

    s = session()
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.sendmail("a@example.com", ["b@example.com"], _msg(1))
    finally:
        s.close()
    drop = r.dropped
    assert len(drop) == 1 and drop[0]["data"] == _msg(1) and drop[0]["conn"] == 1
    assert drop[0]["rcpt_tos"] == ["b@example.com"]
    assert r.messages == [] and r.rejected == [] and r.drop_after_data == 0
    with session() as s:                     # only the next N messages
        assert s.sendmail("a@example.com", ["b@example.com"], _msg(1)) == {}
        assert s.sendmail("a@example.com", ["b@example.com"], _msg(2)) == {}
    assert [(m["data"], m["conn"]) for m in r.messages] == [(_msg(1), 2), (_msg(2), 2)]
    assert r.per_connection() == {2: 2}
    assert len(r.dropped) == 1 and r.connections == 2 and r.auth_successes == 2
    time.sleep(0.2)
    assert r.errors == []


def test_reply_delay_and_arrival_time(relay, certs):
    r = relay(reply_delay=0.6)
    with _session(r, certs) as s:
        t0 = time.time()
        s.sendmail("a@example.com", ["b@example.com"], _msg(1))
        t1 = time.time()
        r.reply_delay = 0
        s.sendmail("a@example.com", ["b@example.com"], _msg(2))
        t2 = time.time()
    assert t1 - t0 >= 0.6
    assert t2 - t1 < 0.5
    m1, m2 = r.messages
    # time = arrival of the final dot, i.e. before the delayed reply
    assert t0 <= m1["time"] <= t1 - 0.5
    assert t1 <= m2["time"] <= t2


def test_auth_fail_and_counters(relay, certs):
    r = relay(auth_fail=True)
    s = smtplib.SMTP("127.0.0.1", r.port, timeout=10)
    s.starttls(context=client_ctx(certs))
    s.ehlo()
    s.user, s.password = RELAY_USER, SECRET
    with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
        s.auth("PLAIN", s.auth_plain)
    assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8")
    code, _ = s.docmd("MAIL FROM:<a@example.com>")
    assert code == 530
    s.quit()
    assert r.auth_successes == 0
    assert [(a["success"], a["conn"]) for a in r.auth_attempts] == [(False, 1)]
    r.auth_fail = False
    for n in range(2):
        with _session(r, certs) as s:
            for k in range(n + 1):
                s.sendmail("a@example.com", ["b@example.com"], _msg(10 * n + k))
    assert r.connections == 3 and r.tls_handshakes == 3 and r.auth_successes == 2
    assert r.per_connection() == {2: 1, 3: 2}
    assert [m["conn"] for m in r.messages] == [2, 3, 3]


def test_concurrent_sessions_recorded_per_connection(relay, certs):
    r = relay()
    errors = []

    def worker(n):
        try:
            with _session(r, certs) as s:
                for k in range(5):
                    s.sendmail("a@example.com", ["b@example.com"], _msg(100 * n + k))
        except Exception as e:       # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    msgs = r.wait_for_messages(40)
    assert len(msgs) == 40 and r.connections == 8
    assert sorted(r.per_connection().values()) == [5] * 8
    by_conn = {}
    for m in msgs:
        by_conn.setdefault(m["conn"], set()).add(int(m["data"].split(b"body ")[1]) // 100)
    assert all(len(v) == 1 for v in by_conn.values()), by_conn
    times = [m["time"] for m in msgs]
    assert times == sorted(times)
