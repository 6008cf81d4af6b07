"""Fault catalog R1-R18 (shared/notes/reliability.md section 5): what relayq
does when the relay misbehaves.  One test per catalog case, named after it,
asserting the catalog's expectation: exit status, message kept or not,
delivered exactly once, a DSN or none.

Well-behaved faults use FakeRelay's knobs (fakerelay.py); raw protocol abuse
(greetings that stall, replies of 1 MB, NUL, bare LF, mismatched codes) uses
hostile.py.  Messages are queued with -odq and sent with -q where the case is
about the queue (a foreground caller whose message is refused for everyone
gets 67/69 instead of a DSN).
"""

import os
import time

import pytest

from conftest import (RELAY_USER, SECRET, assert_crlf_only,
                      faketime, fmt, header_values)
from hostile import (HostileServer, check_log_sane, check_state_file,
                     closed_port, dsn_failed, hosts_wrap, server_ctx, stall,
                     trickle)

RCPT = "rcpt@example.com"
SENDER = "sender@example.com"



# ---- helpers ---------------------------------------------------------------------

def configure(relayq, port, queue=None, relay_cfg=None):
    relayq.port = port
    cfg = {}
    if queue:
        cfg["queue"] = dict(queue)
    if relay_cfg:
        cfg["relay"] = dict(relay_cfg)
    relayq.write_config(cfg)


def run(relayq, args, stdin=b"", **kw):
    kw.setdefault("write", False)
    return relayq(args, stdin, **kw)


def msg(tag, rcpt=RCPT, body=None):
    return ("From: Sender <%s>\nTo: %s\nSubject: %s\nMessage-ID: <%s@example.com>\n\n%s"
            % (SENDER, rcpt, tag, tag, body or "body of %s\n" % tag)).encode()


def mid_of(m):
    v = header_values(m["data"], "message-id")
    assert len(v) == 1, m["data"][:500]
    return v[0].strip().decode()


def originals(msgs):
    return [m for m in msgs if m["mail_from"] != ""]


def dsns(msgs):
    return [m for m in msgs if m["mail_from"] == ""]


def settle(r, seconds=0.5):
    time.sleep(seconds)
    return r.messages


def entry(relayq, qid):
    for e in relayq.queue_list():
        if e["id"] == qid:
            return e
    raise AssertionError("%s not listed: %r" % (qid, relayq.queue_list()))


def queue_one(relayq, args, stdin):
    """-odq: exactly one message queued; returns its id."""
    before = set(relayq.queued_ids())
    cp = run(relayq, ["-odq", *args], stdin)
    assert cp.returncode == 0, fmt(cp)
    new = set(relayq.queued_ids()) - before
    assert len(new) == 1, (new, fmt(cp))
    return new.pop()


def assert_kept(relayq, qid, cp=None):
    """Still in queue/, not failed, every undelivered recipient pending."""
    diag = fmt(cp) if cp is not None else ""
    assert qid in relayq.queued_ids(), "not kept: queue/=%r failed/=%r\n%s" % (
        relayq.queue_files(), relayq.failed_ids(), diag)
    assert qid not in relayq.failed_ids(), diag
    e = entry(relayq, qid)
    assert e["queue"] == "queued", e
    assert all(x["status"] in ("pending", "done") for x in e["recipients"]), e
    assert any(x["status"] == "pending" for x in e["recipients"]), e
    return e


def assert_no_dsn_queued(relayq, keep):
    """Nothing in queue/ but the ids in keep: no DSN was queued."""
    assert sorted(relayq.queued_ids()) == sorted(keep), relayq.queue_list()


def assert_failed_with_one_dsn(relayq, r, qid, failed_rcpts, sender=SENDER):
    """The message is out of queue/ (in failed/), and exactly one DSN, to the
    sender, names exactly failed_rcpts."""
    assert qid not in relayq.queued_ids(), relayq.queue_list()
    assert qid in relayq.failed_ids(), relayq.queue_list()
    ds = dsns(r.messages)
    assert len(ds) == 1, "%d DSNs: %r" % (len(ds), [d["rcpt_tos"] for d in ds])
    d = ds[0]
    assert d["rcpt_tos"] == [sender], d["rcpt_tos"]
    assert sorted(dsn_failed(d["data"])) == sorted(failed_rcpts)
    assert relayq.queue_files() == [], relayq.queue_files()     # DSN sent too
    return d


# ---- R1-R4: the relay cannot be used --------------------------------------------

def test_R1_port_closed_kept_with_backoff(relayq):
    configure(relayq, closed_port(),
              {"retry_min": "1m", "retry_max": "1h", "lifetime": "5d",
               "min_attempts": 3, "rate": 0})
    t = time.time()
    cp = run(relayq, ["-f", SENDER, RCPT], msg("r1"))
    assert cp.returncode == 0, fmt(cp)               # spooled: success
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    (qid,) = relayq.queued_ids()
    e = assert_kept(relayq, qid, cp)
    assert e["attempts"] == 1, e
    assert 55 <= e["next_try"] - t <= 65, e["next_try"] - t
    # each further failed attempt doubles the wait
    for n, wait in ((2, 120), (3, 240)):
        t = time.time()
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
        e = assert_kept(relayq, qid, cp)
        assert e["attempts"] == n, e
        assert wait - 5 <= e["next_try"] - t <= wait + 5, (n, e["next_try"] - t)
    # four days on, with enough attempts: still no DSN before the lifetime
    wrap, env = faketime("+4d")
    cp = run(relayq, ["-q"], wrap=wrap, env=env)
    assert cp.returncode == 0, fmt(cp)
    assert_kept(relayq, qid, cp)
    assert_no_dsn_queued(relayq, [qid])
    assert relayq.failed_ids() == []
    # past the lifetime: it expires, and only now is a DSN queued
    wrap, env = faketime("+6d")
    cp = run(relayq, ["-q"], wrap=wrap, env=env)
    assert cp.returncode == 0, fmt(cp)
    assert relayq.failed_ids() == [qid], fmt(cp)
    queued = relayq.queue_list()
    assert [(x["sender"], [y["address"] for y in x["recipients"]]) for x in queued
            if x["queue"] == "queued"] == [("", [SENDER])], queued


def test_R2_unresolvable_host_kept_no_busy_loop(relayq, tmp_path):
    wrap = hosts_wrap(tmp_path / "ns", [])  # relay.invalid: in no hosts file
    configure(relayq, 587, {"retry_min": "1m", "rate": 0},
              {"host": "relay.invalid"})
    t0 = time.monotonic()
    cp = run(relayq, ["-f", SENDER, RCPT], msg("r2"), wrap=wrap)
    assert time.monotonic() - t0 < 10, "name lookup took %.1fs" % (time.monotonic() - t0)
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    assert b"relay.invalid" in cp.stderr, "the failing name is not logged\n" + fmt(cp)
    (qid,) = relayq.queued_ids()
    assert assert_kept(relayq, qid, cp)["attempts"] == 1
    # the daemon does not hammer the resolver: the message waits for its
    # retry time (1 minute), the process sleeps
    d = relayq.popen(["-q1s"], write=False, wrap=wrap)
    time.sleep(3.5)
    with open("/proc/%d/stat" % d.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    assert d.proc.poll() is None, d.stderr()
    d.proc.send_signal(15)
    cp = d.finish(10)
    assert cp.returncode == 0, fmt(cp)
    assert cpu < 1.0, "daemon used %.2fs of CPU in 3.5s" % cpu
    assert entry(relayq, qid)["attempts"] == 1, "retried before its time"
    assert cp.stderr.count(b"status=deferred") == 0, fmt(cp)


def _greeting_refused(relayq, greeting, tag):
    srv = HostileServer(greeting=greeting).start()
    try:
        configure(relayq, srv.port, {"rate": 0})
        cp = run(relayq, ["-f", SENDER, RCPT], msg(tag))
        assert cp.returncode == 0, fmt(cp)          # never 69: not the message's fault
        assert b"deferred" in cp.stderr.lower(), fmt(cp)
        (qid,) = relayq.queued_ids()
        assert_kept(relayq, qid, cp)
        assert srv.verbs() == ["QUIT"], "after a %r greeting the client sent %r" % (
            greeting[:3], srv.verbs())
        for _ in range(2):                          # and it stays so
            cp = run(relayq, ["-q"])
            assert cp.returncode == 0, fmt(cp)
            assert_kept(relayq, qid, cp)
        assert_no_dsn_queued(relayq, [qid])
        assert relayq.failed_ids() == [] and srv.messages == []
        assert srv.connections == 3
        assert set(srv.verbs()) == {"QUIT"}, srv.commands
    finally:
        srv.stop()


def test_R3_greeting_421_quit_and_kept(relayq):
    _greeting_refused(relayq, b"421 4.3.2 Service not available, closing channel\r\n", "r3")


def test_R4_greeting_554_kept_not_bounced(relayq):
    _greeting_refused(relayq, b"554 5.3.2 No SMTP service here\r\n", "r4")


# ---- R5-R11: refusals and temporary failures in the transaction ----------------------

def test_R5_mail_451_kept_whole_message_retried(relayq, relay):
    r = relay(mail_replies=[(451, "4.3.0 Temporary local problem")])
    configure(relayq, r.port, {"rate": 0})
    qid = queue_one(relayq, ["-f", SENDER, "a@example.com", "b@example.com"], msg("r5"))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    e = assert_kept(relayq, qid, cp)
    assert [x["status"] for x in e["recipients"]] == ["pending"] * 2, e
    assert "451 4.3.0" in e["last_reply"], e
    assert r.messages == [] and r.verbs().count("RCPT") == 0
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    msgs = settle(r)
    assert [(mid_of(m), sorted(m["rcpt_tos"])) for m in msgs] == [
        ("<r5@example.com>", ["a@example.com", "b@example.com"])]
    assert relayq.queue_files() == [] and relayq.failed_ids() == []


def test_R6_mail_550_dsn_removed_no_retry(relayq, relay):
    r = relay(mail_replies=[(550, "5.7.1 Sender address rejected: not owned by user")])
    configure(relayq, r.port, {"rate": 0})
    qid = queue_one(relayq, ["-f", SENDER, "a@example.com", "b@example.com"], msg("r6"))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1, timeout=5)
    d = assert_failed_with_one_dsn(relayq, r, qid, ["a@example.com", "b@example.com"])
    assert b"not owned by user" in d["data"]
    assert originals(r.messages) == []
    mails = r.verbs().count("MAIL")
    assert mails == 2, r.commands                   # the message, then its DSN
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert r.verbs().count("MAIL") == mails, "retried after a 550 to MAIL"
    assert len(settle(r)) == 1


def test_R7_one_rcpt_550_dsn_only_for_rejected(relayq, relay):
    r = relay(rcpt_replies={"bad@example.com": (550, "5.1.1 <bad@example.com>: User unknown")})
    configure(relayq, r.port, {"rate": 0})
    qid = queue_one(relayq, ["-f", SENDER, "good@example.com", "bad@example.com"], msg("r7"))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(2, timeout=5)
    assert_failed_with_one_dsn(relayq, r, qid, ["bad@example.com"])
    orig = originals(r.messages)
    assert [(mid_of(m), m["rcpt_tos"]) for m in orig] == [
        ("<r7@example.com>", ["good@example.com"])]
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert len(settle(r)) == 2, "sent again"


def test_R8_452_after_100_rcpts_rest_in_later_transaction(relayq, relay):
    r = relay(rcpt_limit=100)
    configure(relayq, r.port, {"rate": 0})
    rcpts = ["r%03d@example.com" % i for i in range(150)]
    qid = queue_one(relayq, ["-f", SENDER, *rcpts], msg("r8"))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    first = r.wait_for_messages(1, timeout=10)
    assert len(first) >= 1 and len(first[0]["rcpt_tos"]) == 100, \
        [len(m["rcpt_tos"]) for m in first]
    if relayq.queued_ids():
        # not in the same run: the other 50 wait, pending (452), no DSN
        e = assert_kept(relayq, qid, cp)
        st = [(x["status"], x["code"]) for x in e["recipients"]]
        assert st.count(("done", 250)) == 100 and st.count(("pending", 452)) == 50, st
        assert relayq.failed_ids() == []
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
    msgs = settle(r)
    assert dsns(msgs) == [], "a DSN for a 452"
    assert [len(m["rcpt_tos"]) for m in msgs] == [100, 50], [len(m["rcpt_tos"]) for m in msgs]
    got = [a for m in msgs for a in m["rcpt_tos"]]
    assert sorted(got) == sorted(rcpts), "lost or duplicated recipients"
    assert all(mid_of(m) == "<r8@example.com>" for m in msgs)
    assert relayq.queue_files() == [] and relayq.failed_ids() == []


@pytest.mark.parametrize("where,code", [("data", 451), ("data", 452),
                                        ("dot", 451), ("dot", 452)],
                         ids=["data-cmd-451", "data-cmd-452", "final-dot-451",
                              "final-dot-452"])
def test_R9_4xx_at_data_or_after_dot_kept_single_delivery(relayq, relay, where, code):
    reply = (code, "4.3.%d Try again later" % (code - 450))
    r = relay(**({"data_cmd_replies": [reply]} if where == "data"
                 else {"data_replies": [reply]}))
    configure(relayq, r.port, {"rate": 0})
    qid = queue_one(relayq, ["-f", SENDER, RCPT], msg("r9"))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    e = assert_kept(relayq, qid, cp)
    assert [(x["status"], x["code"]) for x in e["recipients"]] == [("pending", code)], e
    assert r.messages == []
    assert len(r.rejected) == (1 if where == "dot" else 0)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert [mid_of(m) for m in settle(r)] == ["<r9@example.com>"]
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
    assert dsns(r.messages) == []


def _refused_after_dot(relayq, relay, reply, tag):
    r = relay(data_replies=[reply])
    configure(relayq, r.port, {"rate": 0})
    qid = queue_one(relayq, ["-f", SENDER, "a@example.com", "b@example.com"], msg(tag))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1, timeout=5)
    d = assert_failed_with_one_dsn(relayq, r, qid, ["a@example.com", "b@example.com"])
    assert reply[1].encode() in d["data"].replace(b"\r\n ", b" ")
    assert originals(r.messages) == [] and len(r.rejected) == 1
    for _ in range(2):
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
    assert len(settle(r)) == 1 and len(r.rejected) == 1, "sent again or second DSN"
    assert relayq.failed_ids() == [qid]


def test_R10_552_after_dot_dsn_once_removed(relayq, relay):
    _refused_after_dot(relayq, relay, (552, "5.3.4 Message size exceeds fixed limit"), "r10")


def test_R11_554_after_dot_dsn_once(relayq, relay):
    _refused_after_dot(relayq, relay, (554, "5.6.0 Message content rejected"), "r11")


# ---- R12-R14: connections lost, slow and stalled --------------------------------------

def test_R12_drop_after_dot_possible_duplicate_same_message_id(relayq, relay):
    r = relay(drop_after_data=1)
    configure(relayq, r.port, {"rate": 0})
    qid = queue_one(relayq, ["-f", SENDER, RCPT], msg("r12"))
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert b"possible duplicate" in cp.stderr, fmt(cp)
    assert_kept(relayq, qid, cp)
    assert relayq.failed_ids() == []
    (dropped,) = r.dropped
    assert r.messages == []
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    (m,) = settle(r)
    assert mid_of(m) == mid_of(dropped) == "<r12@example.com>"
    assert m["data"] == dropped["data"], "the retry is not the same message"
    assert relayq.queue_files() == [] and dsns(r.messages) == []


def test_R13_slow_final_dot_reply_waited_for_once(relayq, relay):
    # [relay] timeout 5 s, reply to the final dot after 15 s: the client
    # waits (at least 10 minutes there), so one delivery, no deferral.
    r = relay(reply_delay=15)
    configure(relayq, r.port, {"rate": 0}, {"timeout": 5})
    t0 = time.monotonic()
    cp = run(relayq, ["-f", SENDER, RCPT], msg("r13"), timeout=90)
    elapsed = time.monotonic() - t0
    assert cp.returncode == 0, fmt(cp)
    assert elapsed >= 14.5, "returned after %.1fs, before the reply" % elapsed
    assert b"deferred" not in cp.stderr.lower(), fmt(cp)
    assert b"possible duplicate" not in cp.stderr, fmt(cp)
    assert b"status=sent" in cp.stderr, fmt(cp)
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
    r.reply_delay = 0
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert [mid_of(m) for m in settle(r)] == ["<r13@example.com>"]
    assert r.connections == 1


def test_R14_greeting_stall_times_out_runner_not_wedged(relayq, certs):
    # The first connection gets half a greeting and then nothing; later
    # ones a working relay.  [relay] timeout = 3.
    srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET,
                        per_conn=[{"greeting": stall(b"220-relay.example ESMTP")}]).start()
    try:
        configure(relayq, srv.port, {"rate": 0}, {"timeout": 3})
        qid = queue_one(relayq, ["-f", SENDER, RCPT], msg("r14"))
        t0 = time.monotonic()
        cp = run(relayq, ["-q"], timeout=60)
        elapsed = time.monotonic() - t0
        assert cp.returncode == 0, fmt(cp)
        assert 2.5 <= elapsed <= 12, "gave up after %.1fs with timeout 3" % elapsed
        assert b"deferred" in cp.stderr.lower(), fmt(cp)
        assert_kept(relayq, qid, cp)
        assert srv.messages == [] and 1 in srv.closed_at
        # the runner lock is free again, and the next run delivers
        t0 = time.monotonic()
        cp = run(relayq, ["-q"], timeout=60)
        assert cp.returncode == 0, fmt(cp)
        assert time.monotonic() - t0 < 8
        assert [m["conn"] for m in srv.messages] == [2]
        assert relayq.queue_files() == [] and relayq.failed_ids() == []
        assert srv.errors == [], srv.errors
    finally:
        srv.stop()


def test_R14_greeting_trickle_bounded_by_timeout(relayq, certs):
    # A relay that never stops but never finishes: one byte of the greeting
    # every 0.5 s (12.5 s in all).  [relay] timeout = 3 is per SMTP phase
    # (relayq.ini(5): "the time allowed ... for each SMTP phase"), so the
    # greeting phase must end in about 3 s, not when the relay pleases.
    srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET,
                        greeting=trickle(b"220 relay.example ESMTP\r\n", 0.5)).start()
    try:
        configure(relayq, srv.port, {"rate": 0}, {"timeout": 3})
        qid = queue_one(relayq, ["-f", SENDER, RCPT], msg("r14t"))
        t0 = time.monotonic()
        cp = run(relayq, ["-q"], timeout=90)
        elapsed = time.monotonic() - t0
        assert cp.returncode == 0, fmt(cp)
        assert elapsed <= 9, "greeting phase took %.1fs with timeout 3\n%s" % (elapsed, fmt(cp))
        assert_kept(relayq, qid, cp)
        assert srv.messages == []
    finally:
        srv.stop()


def test_R14_short_stall_mid_greeting_tolerated(relayq, certs):
    # The greeting arrives in two pieces ("22", a second later "0 ..."),
    # well within the timeout: a normal session, nothing to log, and the
    # queue run goes on to the next session (session_max = 1).
    srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET,
                        per_conn=[{"greeting": stall(b"22", then=(1.0, b"0 relay.example ESMTP\r\n"))}]
                        ).start()
    try:
        configure(relayq, srv.port, {"rate": 0, "session_max": 1}, {"timeout": 3})
        q1 = queue_one(relayq, ["-f", SENDER, RCPT], msg("r14s-1"))
        q2 = queue_one(relayq, ["-f", SENDER, RCPT], msg("r14s-2"))
        cp = run(relayq, ["-q"], timeout=60)
        assert cp.returncode == 0, fmt(cp)
        assert sorted(mid_of(m) for m in srv.messages) == [
            "<r14s-1@example.com>", "<r14s-2@example.com>"], \
            "queue/=%r\n%s" % (relayq.queue_files(), fmt(cp))
        assert relayq.queue_files() == [], fmt(cp)
        assert b"greeted with" not in cp.stderr, "a good greeting logged as a failure\n" + fmt(cp)
        assert q1 != q2
    finally:
        srv.stop()


# ---- R15-R16: hostile and malformed replies -------------------------------------------

VICTIM = "victim@example.com"

R15_PAYLOADS = {
    "1mb-line": lambda c, x: b"%d %s " % (c, x) + b"A" * (1 << 20) + b"\r\n",
    "10k-lines": lambda c, x: b"".join(b"%d-%s line %05d\r\n" % (c, x, i)
                                       for i in range(10000)) + b"%d %s end\r\n" % (c, x),
    "nul": lambda c, x: b"%d %s <victim@example.com> no such user\x00INJECTED\r\n" % (c, x),
    "bare-lf": lambda c, x: (b"%d-%s first\nX-Injected: yes\r\n"
                             b"%d %s no such user\nrelayq[1]: INJECTED fake log line\r\n"
                             % (c, x, c, x)),
    "control": lambda c, x: b"%d %s \x1b[31mred\x1b[0m\x07\x08 \xff\xfe\r\n" % (c, x),
}


def _maxrss_wrap(path):
    return ["/usr/bin/time", "-f", "%M", "-o", str(path)]


def _check_spool_intact(relayq, qid, spooled):
    """The message file is unchanged, in queue/ or failed/, and its state
    file holds nothing the relay said but sanitised text."""
    for sub in ("queue", "failed"):
        p = os.path.join(relayq.spool, sub, qid)
        if os.path.exists(p):
            with open(p, "rb") as f:
                assert f.read() == spooled, "message file changed"
            if os.path.exists(p + ".state"):
                check_state_file(p + ".state")
            return sub
    raise AssertionError("message %s lost: queue/=%r failed/=%r" % (
        qid, relayq.queue_files(), relayq.failed_ids()))


@pytest.mark.parametrize("phase", ["greeting", "rcpt"])
@pytest.mark.parametrize("payload", list(R15_PAYLOADS))
def test_R15_hostile_reply_bounded_sanitised(relayq, certs, tmp_path, phase, payload):
    if phase == "greeting":
        srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                            user=RELAY_USER, password=SECRET,
                            greeting=R15_PAYLOADS[payload](554, b"5.3.2"))
    else:
        srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                            user=RELAY_USER, password=SECRET,
                            replies={"rcpt": {VICTIM: R15_PAYLOADS[payload](550, b"5.1.1")}})
    srv.start()
    try:
        configure(relayq, srv.port, {"rate": 0})
        qid = queue_one(relayq, ["-f", SENDER, VICTIM], msg("r15", VICTIM))
        spooled = relayq.read_queued(qid)
        rss = tmp_path / "maxrss"
        cp = run(relayq, ["-q"], wrap=_maxrss_wrap(rss), timeout=60)
        assert cp.returncode == 0, fmt(cp)
        assert b"AddressSanitizer" not in cp.stderr and b"runtime error" not in cp.stderr
        maxrss_kb = int(rss.read_text().split()[-1])
        assert maxrss_kb < 256 * 1024, "max RSS %d kB" % maxrss_kb
        check_log_sane(cp.stderr)
        where = _check_spool_intact(relayq, qid, spooled)
        e = entry(relayq, qid)
        for x in [e["last_reply"]] + [y["reply"] for y in e["recipients"]]:
            assert len(x) <= 4096 and all(0x20 <= ord(ch) < 0x7f for ch in x), x[:300]
        if phase == "greeting":
            assert where == "queue", "refused at the greeting, yet failed"
        for d in dsns(srv.messages):
            data = d["data"]
            assert_crlf_only(data)
            assert b"\0" not in data and b"\x1b" not in data, data[:2000]
            assert len(data) < 256 * 1024, len(data)
            for line in data.split(b"\r\n"):
                assert not line.startswith((b"X-Injected", b"relayq[1]")), line
        assert srv.errors == [], srv.errors
        # the next run works as usual
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
        check_log_sane(cp.stderr)
    finally:
        srv.stop()


def test_R15_ehlo_keyword_at_read_boundary(relayq, certs):
    # A post-TLS EHLO reply of more than 2048 octets (libESMTP's read
    # buffer) whose "250-8BITMIME" line ends exactly at the end of the
    # first read, without its CRLF: the reply scanner must not read past
    # the data it was given (caught by ASan as a heap-buffer-overflow).
    pads = ["X" + "A" * (n - 7) for n in (500, 500, 500, 518)]
    caps = pads + ["8BITMIME", "AUTH PLAIN LOGIN"]
    srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET, caps_post=caps).start()
    try:
        lines = ["hostile.test"] + caps
        reply = "".join("250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", x)
                        for i, x in enumerate(lines))
        assert reply.index("250-8BITMIME") + 12 == 2048
        configure(relayq, srv.port, {"rate": 0})
        cp = run(relayq, ["-f", SENDER, RCPT], msg("r15e"))
        assert b"AddressSanitizer" not in cp.stderr, fmt(cp)
        assert cp.returncode == 0, fmt(cp)
        check_log_sane(cp.stderr)
        assert [mid_of(m) for m in srv.messages] == ["<r15e@example.com>"]
        assert relayq.queue_files() == []
    finally:
        srv.stop()


R16_REPLIES = {
    # RCPT: a 5xx first line whose continuation says otherwise, and back
    "rcpt-mismatch-5xx-2xx": ("rcpt", b"550-5.1.1 first line\r\n250 2.1.5 second line\r\n"),
    "rcpt-mismatch-2xx-5xx": ("rcpt", b"250-2.1.5 first line\r\n550 5.1.1 second line\r\n"),
    "rcpt-2-digit": ("rcpt", b"55 5.1.1 two digits\r\n"),
    "rcpt-4-digit": ("rcpt", b"5500 5.1.1 four digits\r\n"),
    "rcpt-letters": ("rcpt", b"5x0 5.1.1 not a number\r\n"),
    "rcpt-garbage": ("rcpt", b"hello there\r\n"),
    "rcpt-empty-line": ("rcpt", b"\r\n"),
    "mail-mismatch": ("mail", b"550-5.7.1 first line\r\n451 4.3.0 second line\r\n"),
    "mail-4-digit": ("mail", b"5500 5.7.1 four digits\r\n"),
    "dot-mismatch": ("dot", b"550-5.6.0 first line\r\n250 2.0.0 second line\r\n"),
    "dot-garbage": ("dot", b"ok thanks\r\n"),
}


@pytest.mark.parametrize("variant", list(R16_REPLIES))
def test_R16_malformed_reply_protocol_error_kept(relayq, certs, variant):
    phase, raw = R16_REPLIES[variant]
    over = {VICTIM: [raw]} if phase == "rcpt" else [raw]
    srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET, replies={phase: over}).start()
    try:
        configure(relayq, srv.port, {"rate": 0})
        qid = queue_one(relayq, ["-f", SENDER, VICTIM], msg("r16", VICTIM))
        spooled = relayq.read_queued(qid)
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
        check_log_sane(cp.stderr)
        assert _check_spool_intact(relayq, qid, spooled) == "queue", \
            "a malformed reply failed the message\n%s\n%r" % (fmt(cp), entry(relayq, qid))
        assert_kept(relayq, qid, cp)
        assert dsns(srv.messages) == [], "DSN for a malformed reply"
        assert relayq.failed_ids() == []
        # kept means retried: the relay answers properly now, one delivery
        # (after the final dot the first copy may have counted: at most two)
        cp = run(relayq, ["-q"])
        assert cp.returncode == 0, fmt(cp)
        assert relayq.queue_files() == [] and relayq.failed_ids() == [], fmt(cp)
        got = [m for m in srv.messages if m["mail_from"] == SENDER]
        assert 1 <= len(got) <= (2 if phase == "dot" else 1), len(got)
        assert dsns(srv.messages) == []
        assert srv.errors == [], srv.errors
    finally:
        srv.stop()


# ---- R17-R18: SIZE and rate ------------------------------------------------------------

def test_R17_size_exceeded_dsn_before_data(relayq, relay):
    r = relay(size_limit=1000000)
    configure(relayq, r.port, {"rate": 0})
    body = ("x" * 76 + "\n") * (5 * 1024 * 1024 // 77)
    qid = queue_one(relayq, ["-f", SENDER, RCPT], msg("r17", body=body))
    cp = run(relayq, ["-q"], timeout=120)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1, timeout=10)
    assert_failed_with_one_dsn(relayq, r, qid, [RCPT])
    # before DATA: the only DATA command was the DSN's, no 5 MB went out
    assert r.verbs().count("DATA") == 1, r.commands
    assert r.rejected == [] and originals(r.messages) == []
    mails = r.verbs().count("MAIL")
    cp = run(relayq, ["-q"], timeout=120)
    assert cp.returncode == 0, fmt(cp)
    assert r.verbs().count("MAIL") == mails, "retried"


def assert_rate(times, rate):
    """No window [t, t + 1) holds more than rate arrivals."""
    ts = sorted(times)
    best, at, j = 0, 0, 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= 1.0:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, j
    assert best <= rate, "%d arrivals within one second (rate %d): %s" % (
        best, rate, ["%.3f" % (t - ts[at]) for t in ts[at:at + best]])


def test_R18_200_queued_rate_sliding_window_one_connection(relayq, relay):
    r = relay()
    configure(relayq, r.port, {"rate": 10, "session_max": 200})
    sent = relayq.queue_messages(200)
    t0 = time.monotonic()
    cp = run(relayq, ["-q"], timeout=120)
    elapsed = time.monotonic() - t0
    assert cp.returncode == 0, fmt(cp)
    got = [mid_of(m) for m in r.messages]
    assert sorted(got) == sorted(sent) and len(set(got)) == 200, "not exactly once"
    times = sorted(m["time"] for m in r.messages)
    assert_rate(times, 10)
    assert r.connections == 1 and r.auth_successes == 1, \
        "%d connections for one batch" % r.connections
    # 200 at 10 per second: at least 19 s from first to last, and the rate
    # used fully
    assert times[-1] - times[0] >= 19.0, times[-1] - times[0]
    assert elapsed <= 200 / 10 + 4, "rate not used fully: %.1fs" % elapsed
    assert relayq.queue_files() == []


# ---- the hostile server itself ------------------------------------------------------------

def test_hostile_fixture_selfcheck(certs):
    """hostile.HostileServer speaks enough SMTP for smtplib, and its knobs
    do what the tests above rely on (else their results mean nothing)."""
    import smtplib
    import socket
    import ssl
    srv = HostileServer(tls_ctx=server_ctx(certs.server_cert, certs.server_key),
                        user=RELAY_USER, password=SECRET,
                        replies={"rcpt": {"bad@example.com": b"550 5.1.1 no\r\n"}}).start()
    try:
        ctx = ssl.create_default_context(cafile=certs.ca)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.ehlo()
            assert s.has_extn("starttls") and not s.has_extn("auth")
            assert s.docmd("MAIL FROM:<a@example.com>")[0] == 530
            s.starttls(context=ctx)
            s.ehlo()
            assert s.has_extn("auth")
            s.login(RELAY_USER, SECRET)
            refused = s.sendmail("a@example.com", ["b@example.com", "bad@example.com"],
                                 b"Subject: x\r\n\r\n.dot\r\nbody\r\n")
            assert refused == {"bad@example.com": (550, b"5.1.1 no")}
        (m,) = srv.messages
        assert m["rcpt_tos"] == ["b@example.com"] and m["tls"]
        assert m["data"] == b"Subject: x\r\n\r\n.dot\r\nbody\r\n"
        assert [(a["success"], a["tls"]) for a in srv.auth][-1] == (True, True)
        assert ("STARTTLS", False, 1) in srv.commands and ("AUTH", True, 1) in srv.commands
        assert srv.tls_handshakes == 1 and srv.errors == []
    finally:
        srv.stop()
    # a greeting that stalls: the server sees the client close
    srv = HostileServer(greeting=stall(b"220-wait")).start()
    try:
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        assert c.recv(100) == b"220-wait"
        c.close()
        deadline = time.monotonic() + 5
        while 1 not in srv.closed_at and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 1 in srv.closed_at
    finally:
        srv.stop()
